"""Serving one accepted connection over a blocking socket: read, parse, run the app, write.

The sans-I/O codecs (protocols/) decide what bytes mean; this module owns the socket, the
deadlines and the logging around them. Blocking sockets with timeouts serve the sync worker as
they are and a gevent worker unchanged (its sockets are cooperative), one greenlet per connection.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
import time
from typing import Any, Callable

from zergserve import wsgi
from zergserve.pacing import BodyClock, BodyTimeout, SendPace
from zergserve.protocols import http as h1
from zergserve.protocols import uwsgi
from zergserve.scoreboard import RowWriter
from zergserve.sockets import Listener

_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20
_RECV = 65536


class Context:
    """Everything a connection needs from its worker, fixed for the worker's life."""

    def __init__(self, app: Callable, row: RowWriter, wid: int, log_error: Callable[[str], None],
                 access_log: Callable[[str], None] | None, limits: h1.Limits, http_timeout: float = 4.0,
                 socket_timeout: float = 4.0, keepalive_timeout: float = 0.0, limit_post: int = 0,
                 buffer_size: int = 4096, max_vars: int = 128, keep_alive: bool = False,
                 body_timeout: float = 20.0, body_min_rate: float = 500.0, send_min_rate: float = 500.0) -> None:
        self.app = app
        self.row = row
        self.wid = wid
        self.log_error = log_error
        self.access_log = access_log
        self.limits = limits
        self.http_timeout = http_timeout
        self.socket_timeout = socket_timeout
        self.keepalive_timeout = keepalive_timeout
        self.limit_post = limit_post
        self.buffer_size = buffer_size
        self.max_vars = max_vars
        self.keep_alive = keep_alive
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.send_min_rate = send_min_rate
        self.draining = False  # set by a worker that is stopping: answer what is in hand, keep nothing alive
        self.environs: dict[int, dict[str, Any]] = {}

    def pace(self) -> SendPace:
        """The bound on one response's sending (pacing.py)."""
        return SendPace(self.socket_timeout, self.send_min_rate)

    def body_clock(self) -> BodyClock:
        """The bound on one request body's arrival (pacing.py), started at its first wait."""
        return BodyClock(self.body_timeout, self.body_min_rate)

    def base_environ(self, listener: Listener) -> dict[str, Any]:
        key = listener.fileno()
        env = self.environs.get(key)
        if env is None:
            env = self.environs[key] = wsgi.base_environ(*listener.server_name_port())
        return env


def serve(conn: socket.socket, peer: Any, listener: Listener, ctx: Context) -> None:
    """Serve one connection until it is done; never raises for anything a client sends.

    The socket starts non-blocking: the request is usually already there and the response fits
    the send buffer, so the common case costs one recv and one send; timeouts (and their extra
    syscalls) are set only when the socket makes us wait.
    """
    try:
        conn.setblocking(False)
        if listener.proto == "http":
            _serve_http(conn, peer, listener, ctx)
        else:
            _serve_uwsgi(conn, peer, listener, ctx)
    except OSError:
        pass
    finally:
        conn.close()


class _Timeout(Exception):
    """The request head did not arrive before its deadline."""


def _recv_before(conn: socket.socket, deadline: float) -> bytes:
    """recv() bounded by an absolute deadline, so a byte-a-second trickle cannot hold the worker."""
    if conn.gettimeout() == 0.0:
        try:
            return conn.recv(_RECV)
        except BlockingIOError:
            pass
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout
    conn.settimeout(left)
    try:
        return conn.recv(_RECV)
    except (socket.timeout, TimeoutError):
        raise _Timeout from None


def _recv(conn: socket.socket, size: int, timeout: float) -> bytes:
    """recv() that waits at most `timeout` seconds for data (socket.timeout past it)."""
    if conn.gettimeout() == 0.0:
        try:
            return conn.recv(size)
        except BlockingIOError:
            conn.settimeout(timeout)
    return conn.recv(size)


def recv_body(conn: socket.socket, clock: BodyClock, stall: float, size: int = _RECV) -> bytes:
    """One read of a request body, within its clock and at most `stall` seconds of silence:
    wsgi.RequestTimeout (a 408) past the clock, ClientDisconnected for a client gone quiet."""
    try:
        return _recv(conn, size, min(stall, clock.left()))
    except (socket.timeout, TimeoutError):
        try:
            clock.left()
        except BodyTimeout as exc:
            raise wsgi.RequestTimeout(str(exc)) from None
        raise wsgi.ClientDisconnected(f"request body stalled for {stall:g}s") from None
    except BodyTimeout as exc:
        raise wsgi.RequestTimeout(str(exc)) from None


def send_all(conn: socket.socket, data: bytes, pace: SendPace) -> None:
    """Send everything, or raise TimeoutError once the client reads slower than `pace` allows.

    Python's sendall() bounds the whole transfer, which would cut a slow but live download of a
    large body, and a timeout per write would let a client taking one byte at a time hold the
    worker forever; the pace (pacing.py) asks for a minimum rate while we wait. The first send is
    tried without waiting: it usually takes the whole response.
    """
    if conn.gettimeout() != 0.0:
        conn.setblocking(False)
    view = memoryview(data)
    while view:
        try:
            sent = conn.send(view)
        except BlockingIOError:
            sent = 0
        if sent:
            pace.sent(sent)
            view = view[sent:]
        else:
            wait_writable(conn, pace)


def wait_writable(conn: socket.socket, pace: SendPace) -> None:
    """Wait until the socket takes more bytes or the pace's window ends (SendTimeout if the client
    took too little in it). The kernel says writable only once a third of a large send buffer is
    free, so progress is read from the send queue's length, not from wake-ups."""
    poller = select.poll()
    poller.register(conn, select.POLLOUT)
    started = time.monotonic()
    poller.poll(pace.wait(unsent(conn)) * 1000)
    pace.waited(time.monotonic() - started, unsent(conn))


def unsent(conn: socket.socket) -> int:
    """Bytes still waiting in the socket's send queue (SIOCOUTQ), -1 if the kernel will not say."""
    try:
        return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return -1


def _linger_close(conn: socket.socket) -> None:
    """Half-close and discard what the client is still sending, so our reply is not lost to a RST."""
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_SECONDS
        total = 0
        while total < _LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            data = conn.recv(_RECV)
            if not data:
                break
            total += len(data)
    except OSError:
        pass


def access(ctx: Context, peer: Any, method: str, target: str, proto: str, status: int, sent: int,
            started: float) -> None:
    if ctx.access_log is None:
        return
    addr = wsgi.printable(peer[0]) if peer else "-"
    ms = (time.time() - started) * 1000
    ctx.access_log(f'{addr} "{wsgi.printable(method)} {wsgi.printable(target)} {wsgi.printable(proto)}" {status} {sent} '
                   f"{ms:.1f}ms w{ctx.wid}")


# --- uwsgi -------------------------------------------------------------------------------------

class _RawSink:
    """Writes a raw HTTP response on a uwsgi connection, as uWSGI does: status line, the app's
    headers verbatim, body; the connection closes after it."""

    __slots__ = ("conn", "protocol", "pace")

    def __init__(self, conn: socket.socket, protocol: str, pace: SendPace) -> None:
        self.conn = conn
        self.protocol = protocol.encode("latin-1")
        self.pace = pace

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        parts = [b"%s %d %s\r\n" % (self.protocol, status, reason)]
        parts.extend(b"%s: %s\r\n" % header for header in headers)
        parts.append(b"\r\n")
        parts.append(body)
        send_all(self.conn, b"".join(parts), self.pace)

    def send_body(self, data: bytes) -> None:
        send_all(self.conn, data, self.pace)

    def sendfile(self, file: Any, count: int | None) -> int | None:
        return _sendfile(self.conn, file, count, self.pace)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _sendfile(conn: socket.socket, file: Any, count: int | None, pace: SendPace) -> int | None:
    """os.sendfile() of `count` bytes from the file's position, paced as send_all(); None if the
    file has no descriptor (the caller then reads it)."""
    try:
        fd = file.fileno()
        offset = file.tell()
    except (OSError, ValueError, AttributeError):
        return None
    if count is None:
        count = os.fstat(fd).st_size - offset
    conn.setblocking(False)
    total = 0
    try:
        while total < count:
            try:
                sent = os.sendfile(conn.fileno(), fd, offset + total, min(count - total, 1 << 20))
            except BlockingIOError:
                wait_writable(conn, pace)
                continue
            if not sent:
                break
            total += sent
            pace.sent(sent)
    except OSError as exc:
        raise wsgi.ClientDisconnected(str(exc)) from exc
    file.seek(offset + total)
    return total


def _serve_uwsgi(conn: socket.socket, peer: Any, listener: Listener, ctx: Context) -> None:
    deadline = time.monotonic() + ctx.socket_timeout
    parser = uwsgi.PacketParser(ctx.buffer_size, ctx.max_vars)
    try:
        packet = None
        while packet is None:
            parser.receive_data(_recv_before(conn, deadline))
            packet = parser.next_packet()
    except uwsgi.EmptyConnection:
        return
    except uwsgi.UwsgiError as exc:
        ctx.log_error(f"uwsgi: {exc} (peer {peer_text(peer, listener)})")
        return
    except _Timeout:
        if parser.started:  # an idle connection (a health check's connect) is no error
            ctx.log_error(f"uwsgi: no complete packet within {ctx.socket_timeout:g}s "
                          f"(peer {peer_text(peer, listener)})")
        return
    if packet.modifier1 == uwsgi.MODIFIER_PING:
        send_all(conn, uwsgi.PONG, ctx.pace())
        return
    started = time.time()
    variables = packet.vars
    method, target, protocol, length, refused = uwsgi_head(variables, ctx, peer, listener)
    if refused:
        send_all(conn, raw_error(protocol, refused), ctx.pace())
        if refused == 413:
            _linger_close(conn)
        return
    body = wsgi.Input(_uwsgi_body(conn, parser.trailing, length, ctx) if length else None)
    environ = wsgi.uwsgi_environ(ctx.base_environ(listener), variables, body)
    ctx.row.begin(f"{method} {target}".encode("latin-1", "replace"), started)
    response = wsgi.run(ctx.app, environ, _RawSink(conn, protocol, ctx.pace()), ctx.log_error)
    ctx.row.end(response.sent, time.time() - started, response.status >= 500)
    access(ctx, peer or (variables.get("REMOTE_ADDR", "-"),), method, target, protocol, response.status,
            response.sent, started)
    if not body.drained():
        _linger_close(conn)


def _uwsgi_body(conn: socket.socket, first: bytes, length: int, ctx: Context) -> Callable[[int], bytes]:
    """A pull function over exactly `length` body bytes: the ones read with the packet, then the socket."""
    state: dict[str, Any] = {"left": length, "first": first[:length], "clock": None}

    def pull(size: int) -> bytes:
        left = state["left"]
        if left <= 0:
            return b""
        head = state["first"]
        if head:
            state["first"] = b""
            state["left"] = left - len(head)
            return head
        clock = state["clock"] = state["clock"] or ctx.body_clock()
        data = recv_body(conn, clock, ctx.socket_timeout, min(size, left, _RECV))
        if not data:
            raise wsgi.ClientDisconnected(f"client closed with {left} of {length} body bytes unsent")
        clock.received(len(data))
        state["left"] = left - len(data)
        return data

    return pull


def uwsgi_head(variables: dict[str, str], ctx: Context, peer: Any,
               listener: Listener) -> tuple[str, str, str, int, int]:
    """Method, target, protocol and body length of a uwsgi request, and the status to refuse it
    with (400 for a bad CONTENT_LENGTH, 413 over --limit-post; 0 to serve it), logged here once
    for every worker class."""
    method = variables.get("REQUEST_METHOD", "GET")
    target = variables.get("REQUEST_URI") or variables.get("PATH_INFO", "")
    protocol = variables.get("SERVER_PROTOCOL") or "HTTP/1.0"
    try:
        length = uwsgi.content_length(variables)
    except uwsgi.BadContentLength as exc:
        ctx.log_error(f"uwsgi: {exc} (peer {peer_text(peer, listener)})")
        return method, target, protocol, 0, 400
    if ctx.limit_post and length > ctx.limit_post:
        ctx.log_error(f"uwsgi: body of {length} bytes over limit-post {ctx.limit_post}")
        return method, target, protocol, length, 413
    return method, target, protocol, length, 0


def raw_error(protocol: str, status: int) -> bytes:
    """A whole plain-text error response in the request's protocol, as uWSGI writes one."""
    text = wsgi.reason(status)
    body = text + b"\n"
    return (b"%s %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (protocol.encode("latin-1"), status, text, len(body), body))


def peer_text(peer: Any, listener: Listener) -> str:
    return f"{peer[0]}:{peer[1]}" if peer else listener.name


# --- HTTP --------------------------------------------------------------------------------------

class _HTTPSink:
    """Writes the response through the h11 connection, which frames it (chunked, HEAD, close)."""

    __slots__ = ("conn", "h", "raw", "pace")

    def __init__(self, conn: socket.socket, h: h1.HTTPConnection, pace: SendPace) -> None:
        self.conn = conn
        self.h = h
        self.raw = False
        self.pace = pace

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        data = self.h.send_response(status, reason, headers)
        if body:
            data += self.h.send_data(body)
        send_all(self.conn, data, self.pace)

    def send_body(self, data: bytes) -> None:
        send_all(self.conn, self.h.send_data(data), self.pace)

    def sendfile(self, file: Any, count: int | None) -> int | None:
        if self.h.must_close and count is not None:
            self.raw = True  # the codec no longer frames this response; the connection closes after it
            return _sendfile(self.conn, file, count, self.pace)
        return None

    def finish(self) -> None:
        if not self.raw:
            end = self.h.send_end()
            if end:
                send_all(self.conn, end, self.pace)

    def abort(self) -> None:
        self.raw = True


def _serve_http(conn: socket.socket, peer: Any, listener: Listener, ctx: Context) -> None:
    h = h1.HTTPConnection(ctx.limits, keep_alive=ctx.keep_alive)
    deadline = time.monotonic() + ctx.http_timeout
    received_any = False
    while True:
        try:
            event = h.next_event()
            while event is h1.NEED_DATA:
                data = _recv_before(conn, deadline)
                received_any = received_any or bool(data)
                h.receive_data(data)
                event = h.next_event()
        except h1.HTTPError as exc:
            ctx.log_error(f"http: {exc.status} {exc.reason} (peer {peer_text(peer, listener)})")
            send_all(conn, h.error_response(exc), ctx.pace())
            _linger_close(conn)
            return
        except _Timeout:
            if received_any:
                ctx.log_error(f"http: request head not complete within {ctx.http_timeout:g}s "
                              f"(peer {peer_text(peer, listener)})")
                send_all(conn, h.error_response(h1.HTTPError(408, "request head timeout")), ctx.pace())
            return
        if not isinstance(event, h1.Request):
            return  # ConnectionClosed, or PAUSED with nothing more to do
        if not _serve_request(conn, peer, listener, ctx, h, event):
            return
        if ctx.draining or not h.start_next_cycle():
            return
        deadline = time.monotonic() + (ctx.keepalive_timeout or ctx.http_timeout)
        received_any = False


def _serve_request(conn: socket.socket, peer: Any, listener: Listener, ctx: Context,
                   h: h1.HTTPConnection, request: Any) -> bool:
    """Run the app for one request; False when the connection must close afterwards."""
    started = time.time()
    if ctx.limit_post and request.content_length is not None and request.content_length > ctx.limit_post:
        ctx.log_error(f"http: body of {request.content_length} bytes over limit-post {ctx.limit_post}")
        send_all(conn, h.error_response(h1.HTTPError(413, "body over limit-post")), ctx.pace())
        _linger_close(conn)
        return False
    if ctx.draining:
        h.keep_alive = False  # this response says Connection: close
    has_body = request.chunked or bool(request.content_length)
    body = wsgi.Input(_http_body(conn, h, ctx) if has_body else None)
    environ = wsgi.http_environ(ctx.base_environ(listener), request, peer, body)
    ctx.row.begin(f"{request.method} {request.target}".encode("latin-1", "replace"), started)
    sink = _HTTPSink(conn, h, ctx.pace())
    try:
        response = wsgi.run(ctx.app, environ, sink, ctx.log_error)
    except h1.HTTPError as exc:  # the codec refused what the app produced
        ctx.log_error(f"http: cannot send response: {exc.reason}")
        ctx.row.end(0, time.time() - started, True)
        return False
    ctx.row.end(response.sent, time.time() - started, response.status >= 500)
    access(ctx, peer, request.method, request.target, "HTTP/" + request.http_version, response.status,
            response.sent, started)
    if sink.raw:
        if not body.drained():
            _linger_close(conn)
        return False
    if not body.drained():
        if h.must_close or not _drain(body):
            _linger_close(conn)
            return False
    return not h.must_close


def _drain(body: wsgi.Input, cap: int = 65536) -> bool:
    """Read what the app left of the body so the next request can be parsed; give up past `cap`."""
    total = 0
    try:
        while chunk := body.read(8192):
            total += len(chunk)
            if total > cap:
                return False
    except (OSError, wsgi.RequestError, h1.HTTPError):
        return False
    return True


def _http_body(conn: socket.socket, h: h1.HTTPConnection, ctx: Context) -> Callable[[int], bytes]:
    """A pull function that feeds h11 from the socket until the body's EndOfMessage."""
    state: dict[str, Any] = {"read": 0, "continued": False, "clock": None}

    def pull(size: int) -> bytes:
        if not state["continued"]:
            state["continued"] = True
            interim = h.send_continue()
            if interim:
                send_all(conn, interim, ctx.pace())
        while True:
            try:
                event = h.next_event()
            except h1.HTTPError as exc:
                raise wsgi.RequestError(exc.reason) from None
            if event is h1.NEED_DATA:
                clock = state["clock"] = state["clock"] or ctx.body_clock()
                data = recv_body(conn, clock, ctx.socket_timeout)
                clock.received(len(data))
                h.receive_data(data)
                continue
            if isinstance(event, h1.Data):
                state["read"] += len(event.data)
                if ctx.limit_post and state["read"] > ctx.limit_post:
                    raise wsgi.RequestTooLarge(ctx.limit_post)
                return bytes(event.data)
            return b""

    return pull


def log_writer(fd: int) -> Callable[[str], None]:
    """A line writer straight to a descriptor: the access log is on the hot path, logging is not."""
    def write(line: str) -> None:
        try:
            os.write(fd, (time.strftime("[%Y-%m-%d %H:%M:%S] ") + line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
    return write
