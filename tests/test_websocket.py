"""WebSocket on the asyncio worker, real processes and the `websockets` client: the ASGI websocket
messages, subprotocols, permessage-deflate, close codes, --ws-max-size, pings, the stats count, a
graceful stop's 1001, and the refusal on a worker class that cannot serve it."""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from conftest import bound, connect, http_request, wait_for, _answers
from nginx import Nginx, requires_nginx
from test_metrics import scrape
from test_nginx_examples import NGINX_USER, render
from conftest import fetch


def start(spawn, workdir, *extra: str, worker: str = "asyncio", module: str = "ws_app:application"):
    usock = str(workdir / "http.sock")
    stats = str(workdir / "stats.sock")
    server = spawn("--module", module, "--worker", worker, "--http", usock, "--stats", stats,
                   "--worker-reload-mercy", "10", *extra, wait=usock)
    server.usock, server.stats = usock, stats
    return server


def ws(server, path: str = "/echo", **kwargs):
    """A `websockets` client over the server's UNIX socket."""
    return ws_connect(f"ws://localhost{path}", sock=_unix(server.usock), open_timeout=10, **kwargs)


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def _echoes(client, *messages: str | bytes, scope: str) -> None:
    """Each message comes back as sent; 'scope' comes back as the app's scheme, path and query."""
    for message in messages:
        client.send(message)
        assert client.recv(timeout=5) == message
    client.send("scope")
    assert client.recv(timeout=5) == scope


def test_echo_text_and_bytes_with_subprotocol_and_deflate(spawn, workdir):
    server = start(spawn, workdir)
    with ws(server, "/echo?x=1", subprotocols=["chat", "superchat"]) as client:
        assert client.subprotocol == "chat"
        assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
        assert client.response.headers["X-Worker"].isdigit()
        _echoes(client, "héllo", b"\x00\x01" * 50000, scope="ws /echo x=1")
    assert http_request(server.usock)[::2] == (200, b"plain")  # plain HTTP on the same listener


def test_deflate_off_and_no_subprotocol(spawn, workdir):
    server = start(spawn, workdir, "--ws-per-message-deflate", "false")
    with ws(server) as client:
        assert client.subprotocol is None
        assert "Sec-WebSocket-Extensions" not in client.response.headers
        client.send("x")
        assert client.recv(timeout=5) == "x"


def test_close_before_accept_is_403_and_denial_response_and_app_error_500(spawn, workdir):
    server = start(spawn, workdir)
    for path, status in (("/deny", 403), ("/http-deny", 401), ("/error", 500)):
        with pytest.raises(InvalidStatus) as info:
            ws(server, path)
        assert info.value.response.status_code == status, path
    assert info.value.response.status_code == 500
    assert "boom before accept" in server.log()
    with ws(server) as client:  # the worker goes on
        client.send("still")
        assert client.recv(timeout=5) == "still"


def test_close_code_from_the_app_and_disconnect_code_to_it(spawn, workdir):
    server = start(spawn, workdir)
    with ws(server, "/close") as client:
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=5)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
    record = workdir / "record.txt"
    with ws(server, f"/echo?record={record}") as client:
        client.send("x")
        client.recv(timeout=5)
        client.close(code=4321)
    wait_for(lambda: "disconnect 4321" in record.read_text(), message="the app saw the close code")


def test_a_client_that_vanishes_is_a_disconnect(spawn, workdir):
    server = start(spawn, workdir)
    record = workdir / "record.txt"
    with ws(server, f"/echo?record={record}") as client:
        wait_for(lambda: record.exists() and "accepted" in record.read_text(), message="accepted")
        client.socket.shutdown(socket.SHUT_RDWR)  # no close frame: EOF
    wait_for(lambda: "disconnect 1006" in record.read_text(), message="the app saw the disconnect")
    with ws(server) as client:  # the worker goes on, with nothing to say about a client that left
        _echoes(client, "next", scope="ws /echo ")
    assert "Error" not in server.log() and "failed" not in server.log(), server.log()


def test_message_over_ws_max_size_closes_with_1009(spawn, workdir):
    server = start(spawn, workdir, "--ws-max-size", "1000")
    with ws(server) as client:
        client.send("a" * 1000)
        assert client.recv(timeout=5) == "a" * 1000
        client.send("a" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=5)
    assert info.value.rcvd.code == 1009
    server.wait_log("over --ws-max-size 1000")


def test_pings_answered_keep_the_connection_a_silent_client_is_closed_1011(spawn, workdir):
    server = start(spawn, workdir, "--ws-ping-interval", "0.1", "--ws-ping-timeout", "1")
    with connect(server.usock) as raw:
        reader = _handshake(raw)
        for _ in range(3):  # answered pings keep the connection open
            opcode, payload = _frame(reader)
            assert opcode == 0x9
            mask = os.urandom(4)
            raw.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while (frame := _frame(reader))[0] == 0x9:  # then it stops answering
            pass
    assert frame[0] == 0x8 and struct.unpack("!H", frame[1][:2])[0] == 1011
    server.wait_log("no pong within 1s (--ws-ping-timeout)")


def test_a_protocol_error_closes_with_1002_and_a_log_line(spawn, workdir):
    server = start(spawn, workdir, "--ws-ping-interval", "0")
    with connect(server.usock) as raw:
        reader = _handshake(raw)
        raw.sendall(b"\x81\x02hi")  # a client's frame must be masked
        opcode, payload = _frame(reader)
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    server.wait_log("server received unexpected unmasked frame (closing, 1002)")


def _handshake(raw: socket.socket):
    """Upgrade a raw connection to /echo; a reader positioned after the 101's head."""
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(f"GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    reader = raw.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 101 ")
    while reader.readline() != b"\r\n":
        pass
    return reader


def _frame(reader) -> tuple[int, bytes]:
    """One unmasked server frame: its opcode and payload."""
    first, second = reader.read(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", reader.read(2))[0]
    return first & 0x0F, reader.read(length)


def test_stats_count_open_websockets_and_a_stop_closes_them_with_1001(spawn, workdir):
    metrics = str(workdir / "metrics.sock")
    server = start(spawn, workdir, "--metrics", metrics)
    record = workdir / "record.txt"
    with ws(server, f"/echo?record={record}") as second:
        with ws(server, f"/echo?record={record}"):
            wait_for(lambda: fetch(server.stats)["websockets"] == 2, message="two open WebSockets")
            assert fetch(server.stats)["workers"][0]["websockets"] == 2
            assert scrape(metrics)[("zergserve_websockets", (("worker", "1"),))] == 2
        wait_for(lambda: fetch(server.stats)["websockets"] == 1, message="one open WebSocket")
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            second.recv(timeout=10)
    assert info.value.rcvd.code == 1001
    assert server.wait_exit() == 0
    assert "disconnect 1001" in record.read_text()


@pytest.mark.parametrize("worker", ["sync", "gevent"])
def test_upgrade_to_a_wsgi_worker_is_refused_with_501_and_a_log_line(spawn, workdir, worker):
    server = start(spawn, workdir, worker=worker, module="echo:application")
    with pytest.raises(InvalidStatus) as info:
        ws(server)
    assert info.value.response.status_code == 501
    server.wait_log("WebSocket upgrade for '/echo' refused with 501: WebSocket needs --worker asyncio")
    assert http_request(server.usock)[0] == 200


def test_ws_none_refuses_upgrades(spawn, workdir):
    server = start(spawn, workdir, "--ws", "none")
    with pytest.raises(InvalidStatus) as info:
        ws(server)
    assert info.value.response.status_code == 501
    server.wait_log("refused with 501: --ws none")


@requires_nginx
def test_through_nginx_proxy_pass_with_the_shipped_example(spawn, workdir):
    """nginx/websocket.conf as shipped (paths and port only), nginx's workers as www-data."""
    workdir.chmod(0o755)
    (workdir / "run").mkdir()
    front = bound()
    port = front.port
    usock = str(workdir / "run" / "http.sock")
    spawn("--module", "ws_app:application", "--worker", "asyncio", "--http", usock, "--chmod-socket", "666",
          "--forwarded-allow-ips", "*", wait=usock)
    proxy = Nginx(workdir, render("websocket.conf", workdir, port, []), (front,), user=NGINX_USER)
    try:
        wait_for(lambda: _answers(f"127.0.0.1:{port}"), message="nginx listening")
        with ws_connect(f"ws://127.0.0.1:{port}/echo?via=nginx", subprotocols=["chat"], open_timeout=10) as client:
            assert client.subprotocol == "chat"
            _echoes(client, "through nginx", b"\xff" * 100000, scope="ws /echo via=nginx")
        assert http_request(f"127.0.0.1:{port}")[::2] == (200, b"plain"), proxy.error_log()
    finally:
        proxy.stop()


def test_a_reload_closes_the_old_workers_websockets_with_1001_and_new_ones_open(spawn, workdir):
    server = start(spawn, workdir)
    old = wait_for(lambda: fetch(server.stats)["workers"][0]["pid"], message="stats")
    with ws(server) as client:
        _echoes(client, "before", scope="ws /echo ")
        server.signal(signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=30)
    assert info.value.rcvd.code == 1001
    wait_for(lambda: fetch(server.stats)["workers"][0]["pid"] not in (0, old), timeout=30, message="new worker")
    with ws(server) as client:
        _echoes(client, "after", scope="ws /echo ")
