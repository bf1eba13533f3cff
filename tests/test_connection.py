"""connection.serve() in process over a socketpair: keep-alive cycles (for workers that keep
connections, like a later gevent worker) and what an app's exceptions turn into."""

from __future__ import annotations

import select
import socket
import sys
import threading
from typing import Any, Callable

import pytest

from conftest import fill_send_buffer
from zergserve import connection
from zergserve.protocols import http as h1
from zergserve.protocols.uwsgi import encode_packet
from zergserve.scoreboard import Scoreboard

pytestmark = pytest.mark.timeout(20)


class FakeListener:
    name = "test"

    def __init__(self, proto: str) -> None:
        self.proto = proto

    def fileno(self) -> int:
        return -1 if self.proto == "http" else -2

    def server_name_port(self) -> tuple[str, str]:
        return "host", "80"


def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/read":
        body = environ["wsgi.input"].read()
    elif path == "/exit":
        sys.exit(3)
    elif path == "/interrupt":
        raise KeyboardInterrupt
    elif path == "/timeout":
        raise TimeoutError("the database did not answer")
    elif path == "/reset":
        raise ConnectionResetError("the backend reset us")
    elif path == "/head-no-body":
        start_response("200 OK", [("Content-Length", "100")])
        return []
    else:
        body = b""
    start_response("200 OK", [])
    return [path.encode() + b":" + body]


def exchange(data: bytes, proto: str = "http", keep_alive: bool = True,
             timeout: float | None = None) -> tuple[bytes, list[str]]:
    """Serve one connection that sends `data` then half-closes; everything it answered, and the
    errors logged. The server's end comes in blocking mode, as accept() makes it, or with
    `timeout` (what socket.setdefaulttimeout() in an app gives every new socket)."""
    errors: list[str] = []
    ctx = connection.Context(app=app, row=Scoreboard(1).writer(1), wid=1, log_error=errors.append,
                             access_log=None, limits=h1.Limits(), http_timeout=2, socket_timeout=2,
                             keep_alive=keep_alive)
    client, server = socket.socketpair()
    server.settimeout(timeout)
    with client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        thread = threading.Thread(target=connection.serve, args=(server, None, FakeListener(proto), ctx))
        thread.start()
        out = b""
        while chunk := client.recv(65536):
            out += chunk
        thread.join()
    return out, errors


def bodies(out: bytes) -> list[bytes]:
    return [part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0] for part in out.split(b"HTTP/1.1 200 OK")[1:]]


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_socket_in_blocking_mode_or_with_a_timeout_is_served(timeout):
    post = b"POST /read HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
    out, errors = exchange(get("/a") + post + get("/b"), timeout=timeout)
    assert bodies(out) == [b"/a:", b"/read:xyz", b"/b:"] and not errors


def test_pipelined_requests_without_bodies_each_get_an_answer():
    out, errors = exchange(get("/1") + get("/2") + get("/3", "Connection: close\r\n") + get("/4"))
    assert bodies(out) == [b"/1:", b"/2:", b"/3:"] and errors == []


def test_body_read_or_left_then_the_next_request():
    out, _ = exchange(b"POST /read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                      + get("/after"))
    assert bodies(out) == [b"/read:hello", b"/after:"]
    out, _ = exchange(b"POST /left HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" + get("/after"))
    assert bodies(out) == [b"/left:", b"/after:"]


def test_http_1_0_keeps_alive_only_when_asked():
    out, _ = exchange(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n")
    assert out.count(b" 200 OK") == 2


def test_sync_worker_closes_after_one_response():
    out, _ = exchange(get("/1") + get("/2"), keep_alive=False)
    assert bodies(out) == [b"/1:"] and b"Connection: close" in out


@pytest.mark.parametrize("path", ["/exit", "/interrupt"])
@pytest.mark.parametrize("proto", ["http", "uwsgi"])
def test_sys_exit_or_interrupt_in_the_app_is_a_500(path, proto):
    """sys.exit() in a view must cost one 500, never the worker (nor the master, that would read exit code 3)."""
    data = get(path) if proto == "http" else encode_packet({"REQUEST_METHOD": "GET", "PATH_INFO": path})
    out, errors = exchange(data, proto)
    assert b" 500 " in out.split(b"\r\n")[0]
    assert errors and "error in app" in errors[0]


@pytest.mark.parametrize("path", ["/timeout", "/reset"])
def test_an_apps_own_socket_errors_are_app_errors(path):
    """A backend's TimeoutError is the app's failure: a 500 and a traceback, not a silent 'client gone'."""
    out, errors = exchange(get(path))
    assert out.startswith(b"HTTP/1.1 500 ")
    assert "error in app" in errors[0] and "Traceback" in errors[0]


def test_head_with_content_length_and_no_body_is_complete():
    out, errors = exchange(b"HEAD /head-no-body HTTP/1.1\r\nHost: h\r\n\r\n" + get("/after"))
    assert errors == [] and out.count(b"HTTP/1.1 200 OK") == 2 and b"Content-Length: 100" in out


def _recvs() -> list[Callable[[socket.socket, int, int], bytes | None]]:
    """The Python recv that does not wait, and the C one (_nowait.c) when it is built."""
    try:
        from zergserve._nowait import recv
    except ImportError:
        return [connection._python_recv_nowait]
    return [connection._python_recv_nowait, recv]


@pytest.mark.parametrize("recv", _recvs())
def test_a_recv_that_does_not_wait_says_none_for_nothing_yet(recv):
    """None while nothing is there, the bytes (at most `size`, left in place by a peek) once they
    are, b'' at EOF, and an OSError of the errno's own class for a socket that cannot be read."""
    a, b = socket.socketpair()
    try:
        assert recv(a, 65536, 0) is None
        assert recv(a, 1, connection._PEEK) is None
        b.sendall(b"GET / HTTP/1.1\r\n")
        assert recv(a, 1, connection._PEEK) == b"G"
        assert recv(a, 3, 0) == b"GET"
        assert recv(a, 1 << 20, 0) == b" / HTTP/1.1\r\n"  # (more than the C buffer: a stream may return less)
        assert recv(a, 65536, 0) is None
        b.close()
        assert recv(a, 65536, 0) == b""
        a.close()
        with pytest.raises(OSError):
            recv(a, 65536, 0)
        with pytest.raises(ValueError):
            recv(socket.socket(), -1, 0)
    finally:
        a.close()
        b.close()


def test_the_c_recv_is_used_unless_pure_python():
    """The drivers take the C recv whenever it is built, as the codecs take theirs."""
    import os
    pure = os.environ.get("ZERGSERVE_PURE_PYTHON", "") not in ("", "0")
    expected = connection._python_recv_nowait if pure or len(_recvs()) == 1 else _recvs()[1]
    assert connection._recv_nowait is expected


# --- the Outbox: kept-alive responses held to leave together (the gevent worker's) ---------------

class Later:
    """The loop's run_callback: what the outbox asks to run after the round, run when the test says."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def __call__(self, function: Callable[[], None]) -> None:
        self.due.append(function)

    def run(self) -> None:
        due, self.due = self.due, []
        for function in due:
            function()


def spawn_thread(function: Callable[..., None], *args: Any) -> threading.Thread:
    """The outbox's spawn, with a thread for a greenlet (the waits are poll()'s out of gevent)."""
    thread = threading.Thread(target=function, args=args, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def outbox():
    """An Outbox made this process's, its Later, what it logged, and a socketpair (server, client)."""
    later, logged = Later(), []
    box = connection.Outbox(later, spawn_thread, logged.append)
    server, client = socket.socketpair()
    connection.use_outbox(box)
    try:
        yield box, later, logged, server, client
    finally:
        connection.use_outbox(None)
        server.close()
        client.close()


def pace(window: float = 5.0) -> Any:
    from zergserve.pacing import SendPace
    return SendPace(window, 1000)


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"EOF after {len(data)} of {count} bytes"
        data += chunk
    return data


def fill(sock: socket.socket) -> int:
    """Fill `sock`'s send buffer with b"f": how many bytes it took. (Blocking again after: the
    outbox's sends pass MSG_DONTWAIT.)"""
    filled = fill_send_buffer(sock)
    sock.setblocking(True)
    return filled


def test_held_responses_leave_together_at_the_flush(outbox):
    box, later, logged, server, client = outbox
    box.hold(server, b"one", pace())
    box.hold(server, b"two", pace())
    assert not readable(client) and len(later.due) == 1  # one flush for the round
    later.run()
    assert read_exactly(client, 6) == b"onetwo" and not readable(client)
    later.run()
    assert not readable(client) and not logged


def test_any_other_send_on_the_connection_releases_what_is_held_first(outbox):
    box, later, logged, server, client = outbox
    box.hold(server, b"first,", pace())
    connection.send_all(server, b"second", pace())
    assert read_exactly(client, 12) == b"first,second"
    later.run()
    assert not readable(client)


def test_no_more_than_a_socket_buffer_is_held_for_a_connection(outbox):
    """A client pipelining requests meets the socket's limits, not the worker's memory."""
    box, later, logged, server, client = outbox
    box.hold(server, b"x" * 10_000, pace())
    box.hold(server, b"y" * 10_000, pace())  # 20,000 > HOLD_MOST: both go now, in order
    assert read_exactly(client, 20_000) == b"x" * 10_000 + b"y" * 10_000
    assert not box.held


def test_what_the_buffer_did_not_take_is_finished_after_the_flush(outbox):
    box, later, logged, server, client = outbox
    filled = fill(server)
    box.hold(server, b"tail", pace())
    later.run()
    assert server in box.finishing  # the connection's own greenlet would go on meanwhile
    data = read_exactly(client, filled + 4)
    assert data.endswith(b"ftail") and data.count(b"f") == filled
    box.release(server)  # waits for the finishing greenlet
    assert not box.finishing and not logged


def test_a_client_that_takes_nothing_of_the_rest_is_logged_and_cut_off(outbox):
    box, later, logged, server, client = outbox
    filled = fill(server)
    box.hold(server, b"tail", pace(window=0.2))
    later.run()
    box.release(server)  # returns once the pace gave up on the client
    assert len(logged) == 1 and logged[0].startswith("client gone during the end of a response: client took ")
    assert read_exactly(client, filled) == b"f" * filled
    assert client.recv(10) == b""  # shut down: the connection's wait for the next request ends
