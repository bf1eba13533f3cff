"""The asyncio worker with an ASGI app, real processes: both protocols, keep-alive and pipelining,
concurrency on one loop, app errors, graceful stop and lifespan."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import pytest

from conftest import (APPS, ROOT, bound, connect, fetch, http_request, recv_all, responses, sent_requests, status_of,
                      wait_for)
from conftest import start as start_instance
from test_master import Load
from zergserve import asgi
from zergserve.protocols.http import HTTPConnection
from zergserve.wsgi import AppError


def start(spawn, workdir, *extra: str, module: str = "asgi_app:application", backlog: int = 100):
    """The asyncio worker on a TCP --http and a UNIX --socket (usock), every worker idle."""
    return start_instance(spawn, workdir, *extra, module=module, workers=None, worker="asyncio", uwsgi="unix",
                          backlog=backlog)


def test_get_post_and_chunked_body_over_http(spawn, workdir):
    server = start(spawn, workdir)
    assert http_request(server.addr)[::2] == (200, b"hello")
    status, _, body = http_request(server.addr, "POST", "/echo?x=1", body=b"a" * 100000,
                                   headers={"Content-Type": "text/plain"})
    reply = json.loads(body)
    assert status == 200 and reply["length"] == 100000 and reply["method"] == "POST"
    assert reply["query"] == "x=1" and reply["headers"]["content-type"] == "text/plain"
    chunked = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" \
              b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    with connect(server.addr) as sock:
        sock.sendall(chunked)
        reply_bytes = recv_all(sock)
    assert reply_bytes.startswith(b"HTTP/1.1 200 ") and b'"body": "abcdefg"' in reply_bytes


def test_streaming_response_with_more_body(spawn, workdir):
    server = start(spawn, workdir)
    with connect(server.addr) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        reply = recv_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


def test_app_exception_and_bad_header_are_500_and_the_worker_lives_on(spawn, workdir):
    server = start(spawn, workdir)
    pid = http_request(server.addr, "GET", "/pid")[2]
    assert http_request(server.addr, "GET", "/error")[::2] == (500, b"Internal Server Error\n")
    status, headers, body = http_request(server.addr, "GET", "/badheader")
    assert status == 500 and "Injected" not in headers and body == b"Internal Server Error\n"
    assert http_request(server.addr, "GET", "/pid")[::2] == (200, pid)
    log = server.log()
    assert "RuntimeError: boom from the ASGI app" in log and "invalid header value for b'x-bad'" in log


def test_client_leaving_a_stream_ends_it_and_the_worker_serves_on(spawn, workdir):
    server = start(spawn, workdir)
    with connect(server.addr) as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: h\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    server.wait_log("client gone during GET '/forever'")
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="stream ended")
    assert http_request(server.addr)[::2] == (200, b"hello")


def test_body_over_limit_post_is_413(spawn, workdir):
    server = start(spawn, workdir, "--limit-post", "1000")
    assert http_request(server.addr, "POST", "/echo", body=b"a" * 2000)[0] == 413
    chunked = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" \
              + b"%x\r\n%s\r\n" % (1500, b"b" * 1500) + b"0\r\n\r\n"
    with connect(server.addr) as sock:
        sock.sendall(chunked)
        assert recv_all(sock).startswith(b"HTTP/1.1 413 ")
    assert http_request(server.addr, "POST", "/echo", body=b"a" * 10)[0] == 200


def test_term_finishes_in_flight_requests(spawn, workdir):
    server = start(spawn, workdir)
    clients = sent_requests(server.addr, "/sleep?s=1", 5)
    with connect(server.addr) as idle:  # a kept-alive connection between requests closes at once
        idle.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n")
        responses(idle, 1)
        wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "busy", message="requests in flight")
        server.signal(signal.SIGTERM)
        assert recv_all(idle, timeout=5) == b""
    assert [status_of(client) for client in clients] == [200] * 5
    assert server.wait_exit() == 0


def test_lifespan_startup_ran_before_the_first_request(spawn, workdir):
    listener = bound()
    addr = listener.addr
    spawn("--module", "asgi_app:application", "--worker", "asyncio", "--http", listener.arg, wait=addr)
    # the master listens before the worker booted: this request waits in the backlog for startup
    reply = json.loads(http_request(addr, "GET", "/lifespan")[2])
    assert reply["state"] is True and 0 < reply["started_at"] <= reply["now"]


def test_lifespan_shutdown_runs_on_stop(spawn, workdir):
    marker = workdir / "shutdown.txt"
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "asgi_app:application", "--worker", "asyncio", "--http", listener.arg,
                   env={"ASGI_SHUTDOWN_FILE": str(marker)}, wait=addr)
    pid = http_request(addr, "GET", "/pid")[2].decode()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert marker.read_text() == f"shutdown {pid}\n"


def test_reload_under_load_loses_nothing(spawn, workdir):
    server = start(spawn, workdir, "-p", "2")
    old = {w["pid"] for w in fetch(server.stats)["workers"]}
    load = Load(server.addr)
    wait_for(lambda: load.ok > 30, message="load running")
    server.signal(signal.SIGHUP)
    wait_for(lambda: not old & {w["pid"] for w in fetch(server.stats)["workers"]}, timeout=20,
             message="new workers")
    count = load.ok
    wait_for(lambda: load.ok > count + 30, message="load continues")
    load.stop()
    assert load.failures == []


def test_app_without_lifespan_is_served(spawn, workdir):
    server = start(spawn, workdir, module="asgi_app:no_lifespan")
    assert http_request(server.addr)[::2] == (200, b"plain")
    assert "does not support ASGI lifespan" in server.log()


def test_lifespan_startup_failure_stops_the_master(spawn, workdir):
    server = spawn("--module", "asgi_app:failing_startup", "--worker", "asyncio", "--http", bound().arg)
    assert server.wait_exit(timeout=10) != 0
    assert "ASGI lifespan startup failed: no database" in server.log()


def test_harakiri_kills_a_blocked_loop(spawn, workdir):
    server = start(spawn, workdir, "--harakiri", "2")
    pid = fetch(server.stats)["workers"][0]["pid"]
    with connect(server.addr) as stuck:
        stuck.sendall(b"GET /spin?s=30 HTTP/1.1\r\nHost: h\r\n\r\n")
        server.wait_log("HARAKIRI", timeout=10)
        assert recv_all(stuck, timeout=5) == b""
    wait_for(lambda: fetch(server.stats)["workers"][0]["pid"] not in (0, pid), message="worker respawned")
    assert http_request(server.addr)[::2] == (200, b"hello")


def test_http_scope_from_a_parsed_request():
    h = HTTPConnection()
    h.receive_data(b"GET /a%20b/%C3%A9?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n")
    state = {"k": 1}
    scope = asgi.http_scope(h.next_event(), ("10.0.0.1", 5000), ("localhost", "8000"), state)
    assert (scope["type"], scope["method"], scope["http_version"]) == ("http", "GET", "1.1")
    assert scope["path"] == "/a b/\u00e9" and scope["raw_path"] == b"/a%20b/%C3%A9"
    assert scope["query_string"] == b"x=1" and scope["headers"] == [(b"host", b"h"), (b"x-a", b"1")]
    assert scope["client"] == ("10.0.0.1", 5000) and scope["server"] == ("localhost", 8000)
    assert scope["state"] == state and scope["state"] is not state


def test_uwsgi_scope_from_vars():
    scope = asgi.uwsgi_scope({"REQUEST_METHOD": "PUT", "PATH_INFO": "/caf\u00c3\u00a9", "REQUEST_URI": "/caf%C3%A9?a=b",
                              "QUERY_STRING": "a=b", "SERVER_PROTOCOL": "HTTP/1.0", "HTTPS": "on",
                              "CONTENT_LENGTH": "3", "HTTP_X_FORWARDED_FOR": "1.1.1.1", "SCRIPT_NAME": "/app",
                              "REMOTE_ADDR": "10.0.0.2", "REMOTE_PORT": "41000"}, ("/tmp/s", ""), {})
    assert (scope["method"], scope["http_version"], scope["scheme"]) == ("PUT", "1.0", "https")
    assert scope["path"] == "/caf\u00e9" and scope["raw_path"] == b"/caf%C3%A9" and scope["root_path"] == "/app"
    assert set(scope["headers"]) == {(b"content-length", b"3"), (b"x-forwarded-for", b"1.1.1.1")}
    assert scope["client"] == ("10.0.0.2", 41000)


@pytest.mark.parametrize("headers", [[(b"x", "text")], [(b"bad name", b"v")], [(b"x", b"a\nb")], [(b"x",)], 5])
def test_bad_response_headers_are_refused(headers):
    with pytest.raises(AppError):
        asgi.encode_headers(headers)


def test_response_headers_as_lists_and_bytearrays_are_taken():
    """ASGI allows any iterable pair and bytes-like values; the cache of checked fields keeps only
    what it can hash, and answers the same the second time."""
    for _ in range(2):
        assert asgi.encode_headers([[b"x", b"y"], (b"a", bytearray(b"b")), (b"c", b"d")]) == \
            [(b"x", b"y"), (b"a", b"b"), (b"c", b"d")]


class _Sink:
    def __init__(self) -> None:
        self.heads: list[tuple[int, bytes]] = []
        self.sent = b""
        self.aborted = False

    def head(self, status, reason, headers, body, last):
        self.heads.append((status, body))
        return False

    def body(self, data, last):
        self.sent += data
        return False

    async def drain(self):
        pass

    def abort(self):
        self.aborted = True

    async def closed(self):
        await asyncio.Event().wait()  # the client never leaves

    def unwatch(self):
        pass


def _run(app, pull=None):
    sink, errors = _Sink(), []
    scope = {"method": "GET", "path": "/"}
    response = asyncio.run(asgi.run(app, scope, pull, sink, errors.append))
    return response, sink, errors


def test_contract_breaks_before_the_head_are_500s():
    async def started_twice(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.start", "status": 200})

    async def no_body(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})

    async def bad_status(scope, receive, send):
        await send({"type": "http.response.start", "status": "200"})

    for app in (started_twice, no_body, bad_status):
        response, sink, errors = _run(app)
        assert response.status == 500 and sink.heads == [(500, b"Internal Server Error\n")] and errors


def test_exception_after_the_head_cuts_the_response():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("late")

    response, sink, errors = _run(app)
    assert sink.heads == [(200, b"part")] and sink.aborted and "ValueError: late" in errors[0]


def test_receive_yields_the_body_then_disconnect():
    chunks = [b"ab", b"cd", b""]
    seen = []

    async def pull():
        return chunks.pop(0)

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})
        seen.append(await receive())

    response, _, errors = _run(app, pull)
    assert response.status == 204 and not errors
    assert [m.get("body") for m in seen[:3]] == [b"ab", b"cd", b""] and seen[3] == {"type": "http.disconnect"}


def test_harakiri_spares_a_request_that_awaits_longer_than_the_limit(spawn, workdir):
    """--harakiri on an event loop measures a loop that stopped ticking, not a long await."""
    server = start(spawn, workdir, "--harakiri", "1")
    pid = fetch(server.stats)["workers"][0]["pid"]
    assert http_request(server.addr, "GET", "/sleep?s=3", timeout=10)[::2] == (200, b"slept")
    assert "HARAKIRI" not in server.log() and fetch(server.stats)["workers"][0]["pid"] == pid


def test_receive_says_disconnect_when_the_client_leaves_a_stream(spawn, workdir):
    """After the body, receive() reports http.disconnect as soon as the client closes, while the
    response streams, not only when a write fails."""
    server = start(spawn, workdir)
    record = workdir / "sse.txt"
    with connect(server.addr) as sock:
        sock.sendall(f"GET /sse?record={record} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        wait_for(lambda: b"data: hello" in sock.recv(4096), message="the first event")
    wait_for(lambda: record.exists() and record.read_text() == "http.disconnect\n", timeout=10,
             message="the app told of the disconnect")
    assert http_request(server.addr)[::2] == (200, b"hello")


def test_a_client_that_does_not_read_holds_the_app_back(spawn, workdir):
    """Flow control: send() returns only once the kernel took the bytes, so an app streaming to a
    client that reads slowly keeps pace with it instead of filling the worker's memory."""
    server = start(spawn, workdir)
    record = workdir / "flood.txt"
    with connect(server.addr) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /flood?record={record} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        wait_for(lambda: record.exists() and record.read_text(), message="the first sends")
        total = 0
        while total < 16 * 1048576:
            total += len(sock.recv(65536))
            sent = int(record.read_text() or 0)
            assert sent <= total // 1048576 + 32, (sent, total)  # the kernel's buffers, not 1000 MB
        wait_for(lambda: int(record.read_text() or 0) >= 16, message="the app to go on")


def peak_rss(pid: int) -> int:
    """The most memory process `pid` ever held resident, in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_that_never_reads_does_not_grow_the_worker(loop, spawn, workdir):
    """Flow control against a client that takes nothing of a 500 MB stream: the app's sends wait
    while the transport's buffer is over its mark (pause_writing), so the worker's peak memory
    stays near where it was, until the send pace drops the client. Without it the app would put
    the whole stream into the buffer before the first check."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server = start(spawn, workdir, "--loop", loop, "--socket-timeout", "1")
    pid = fetch(server.stats)["workers"][0]["pid"]
    before = peak_rss(pid)
    with connect(server.addr, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /bigstream?size=500000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        server.wait_log("client took", timeout=20)
    assert peak_rss(pid) - before < 64 * 1048576, (before, peak_rss(pid))
    assert http_request(server.addr)[::2] == (200, b"hello")


def hidden_uvloop(workdir) -> dict[str, str]:
    """An environment in which `import uvloop` fails, as where it is not installed."""
    hide = workdir / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(hide), str(ROOT), str(APPS)])}


def test_loop_uvloop_without_uvloop_is_a_start_error(spawn, workdir):
    server = spawn("--module", "asgi_app:application", "--worker", "asyncio", "--loop", "uvloop", "--http",
                   bound().arg, env=hidden_uvloop(workdir))
    assert server.wait_exit(15) == 2
    assert "--loop uvloop: uvloop is not installed" in server.log()


def test_loop_auto_without_uvloop_serves_on_asyncio(spawn, workdir):
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "asgi_app:application", "--worker", "asyncio", "--http", listener.arg,
                   env=hidden_uvloop(workdir), wait=addr)
    assert http_request(addr)[::2] == (200, b"hello")
    assert "uvloop" not in server.log()
