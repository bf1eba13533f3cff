"""One connection's request lifecycle, sans-I/O, for both protocols and every worker class.

The exchange is fed bytes, timeouts and EOF and says what to do next: receive until a deadline,
send these bytes and close, call the app with this request, keep the connection for the next one.
It owns admission and limits (the codecs' 400/413/414/431, `--limit-post`, `Expect: 100-continue`,
a 408 only when bytes arrived), the body's accounting and bounds (Content-Length, chunked, uwsgi
CONTENT_LENGTH, `--body-timeout`), the response's framing, the keep/drain/linger/close decision
after it, refusal bytes, the access-log record and the scoreboard row. Drivers only move bytes:
connection.py over blocking sockets (sync and gevent workers), workers/asyncio.py on an event loop.
h11's `_connection.py` is the model, one level up.
"""

from __future__ import annotations

from typing import Any, Callable, Final, NamedTuple

from zergserve.accesslog import AccessLog
from zergserve.pacing import BodyClock, BodyTimeout, SendPace, monotonic
from zergserve.protocols import http as h1
from zergserve.protocols import uwsgi
from zergserve.vocabulary import (AppError, ClientDisconnected, RequestError, RequestTimeout, RequestTooLarge,
                                  printable, reason)

RECV: Final = 65536  # the most a driver reads at once
DRAIN_CAP: Final = 65536  # body bytes an app left unread that are read to keep the connection


class Context:
    """Everything a connection needs from its worker, fixed for the worker's life. The settings
    are keyword arguments named as the class attributes below, which are their defaults."""

    http_timeout: float = 4.0
    socket_timeout: float = 4.0
    keepalive_timeout: float = 0.0
    limit_post: int = 0
    buffer_size: int = 4096
    max_vars: int = 128
    keep_alive: bool = False
    body_timeout: float = 20.0
    body_min_rate: float = 500.0
    send_min_rate: float = 500.0
    draining: bool = False  # set by a worker that is stopping: answer what is in hand, keep nothing alive
    # Lets the worker's other ready connections run first (gevent.sleep(0)): a blocking driver calls
    # it when a kept-alive connection took several requests in a row without waiting for one.
    turn: Callable[[], None] | None = None

    def __init__(self, app: Callable, row: Any, wid: int, log_error: Callable[[str], None],
                 access_log: AccessLog | None, limits: h1.Limits,
                 log_refusal: Callable[[str], None] | None = None, **settings: Any) -> None:
        self.app, self.row, self.wid, self.limits = app, row, wid, limits
        self.log_error, self.access_log = log_error, access_log
        # Why a request was refused or a client left (its access line has the status).
        self.log_refusal = log_refusal or log_error
        for name, value in settings.items():
            if name.startswith("_") or not hasattr(Context, name) or callable(getattr(Context, name)):
                raise TypeError(f"Context has no setting {name!r}")
            setattr(self, name, value)
        # The blocking driver's kept-alive connections that wait in a read, by exchange (connection.py
        # adds each once, and removes it at its close): on a stop, Worker.close_idle() ends the wait
        # of those between requests.
        self.kept: dict[Exchange, Any] = {}
        self.environs: dict[Any, dict[str, Any]] = {}  # a WSGI driver's environ per listener, built once

    # Why a WebSocket upgrade is refused (501), '' where the worker serves it (workers/asyncio.py).
    websocket_refusal = "WebSocket needs --worker asyncio (an ASGI app)"

    def pace(self) -> SendPace:
        """The bound on one response's sending (pacing.py)."""
        return SendPace(self.socket_timeout, self.send_min_rate)


# --- what the exchange asks of its driver ------------------------------------------------------

class Reply(NamedTuple):
    """Send `data`, then close; when `linger`, first read and drop what the client still sends,
    so the reply is not lost to a reset."""

    data: bytes
    linger: bool


class _Step:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RECEIVE: Final = _Step("RECEIVE")  # read bytes for receive_data() until Exchange.deadline; past it, timed_out()
SERVE: Final = _Step("SERVE")  # call the app with Exchange.request (HTTP) or Exchange.variables (uwsgi)
CLOSE: Final = Reply(b"", False)  # close the connection now
Action = Reply | _Step
# What to do after a response (Exchange.after_response):
KEEP: Final = "keep"
DRAIN: Final = "drain"
LINGER: Final = "linger"
CLOSED: Final = "closed"
_NO_VARS: Final[dict[str, str]] = {}


class Exchange:
    """One accepted connection, from its first byte to its close.

    Per-request state starts from the class's defaults, and goes back to them after each request
    (next_request)."""

    received_any = False
    fed = False  # bytes or EOF came since the codec last had nothing to parse (new, or idle between requests)
    kept_alive = False  # a request was served before on this connection
    method = ""
    target = ""
    protocol = ""
    has_body = False
    length = 0  # uwsgi: body bytes still to read
    first = b""  # uwsgi: body bytes that came with the packet
    clock: BodyClock | None = None
    read = 0
    continued = False
    body_done = False
    body_failed = False
    raw = False  # the response is no longer framed: the connection closes after it
    head_sent = 0  # bytes of the response head: the stats' tx counts them, as uWSGI's does
    head_count = 0  # response headers, for the access log's %(headers)
    began = 0.0  # time.monotonic() at the request's start: the row's, the response time, the access log's
    request: h1.Request | None = None  # HTTP: the request head
    variables: dict[str, str] = _NO_VARS  # uwsgi: the packet's vars
    reserved_vars = False  # uwsgi: whether a var's name is reserved (uwsgi.RESERVED_PREFIXES)

    def __init__(self, ctx: Context, listener: Any, peer: Any) -> None:
        self.ctx = ctx
        self.listener = listener
        self.peer = peer
        # Decided by timed_out(), returned next. (Set here: mypyc leaves a class default of this
        # union type unset.)
        self.pending: Action | None = None
        self.http = listener.proto == "http"
        if self.http:
            self.h = h1.HTTPConnection(ctx.limits, keep_alive=ctx.keep_alive)
            self.deadline = monotonic() + ctx.http_timeout
        else:
            self.parser = uwsgi.PacketParser(ctx.buffer_size, ctx.max_vars)
            self.deadline = monotonic() + ctx.socket_timeout

    @property
    def where(self) -> str:
        """The peer (or the listener), for error lines."""
        return peer_text(self.peer, self.listener)

    # --- the request head ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes for the request head (b'' when the client closed its side)."""
        self.fed = True
        self.received_any = self.received_any or bool(data)
        if self.http:
            self.h.receive_data(data)
        else:
            self.parser.receive_data(data)

    def timed_out(self) -> None:
        """The RECEIVE deadline passed: a 408 if a head had begun, else a quiet close."""
        self.pending = CLOSE
        if self.http and self.received_any:
            self.ctx.log_refusal(f"http: request head not complete within {self.ctx.http_timeout:g}s "
                               f"(peer {self.where})")
            self.pending = self._refuse(408, self.h.error_response(h1.HTTPError(408, "request head timeout")), False)
        elif not self.http and self.parser.started:  # a bare connect (a health check) is no error
            self.ctx.log_refusal(f"uwsgi: no complete packet within {self.ctx.socket_timeout:g}s (peer {self.where})")

    def _refuse(self, status: int, data: bytes, linger: bool) -> Reply:
        """A refusal the server answers itself: an access line with its status, as any response."""
        if self.ctx.access_log is not None:
            self.head_sent = len(data)
            self.ctx.access_log.request(self, status, 0)
        return Reply(data, linger)

    def next_action(self) -> Action:
        """What the driver does next."""
        if self.pending is not None:
            action, self.pending = self.pending, None
            return action
        if not self.fed:
            return RECEIVE  # a new connection: nothing to parse yet
        return self._next_http() if self.http else self._next_uwsgi()

    @property
    def idle(self) -> bool:
        """Waiting for a kept-alive connection's next request, nothing of it arrived yet."""
        return self.kept_alive and not self.received_any

    def _next_http(self) -> Action:
        h = self.h
        try:
            event = h.next_event()
        except h1.HTTPError as exc:
            self.ctx.log_refusal(f"http: {exc.status} {exc.reason} (peer {self.where})")
            return self._refuse(exc.status, h.error_response(exc), True)
        if event is h1.NEED_DATA:
            if self.idle and self.ctx.draining:
                return CLOSE  # a stopping worker keeps nothing alive
            return RECEIVE
        if not isinstance(event, h1.Request):
            return CLOSE  # ConnectionClosed, or PAUSED with nothing more to do
        ctx = self.ctx
        if ctx.limit_post and event.content_length is not None and event.content_length > ctx.limit_post:
            ctx.log_refusal(f"http: body of {event.content_length} bytes over limit-post {ctx.limit_post}")
            return self._refuse(413, h.error_response(h1.HTTPError(413, "body over limit-post")), True)
        if ctx.websocket_refusal and event.upgrade and h1.is_websocket_upgrade(event):
            ctx.log_error(f"http: WebSocket upgrade for {printable(event.target)!r} refused with 501: "
                          f"{ctx.websocket_refusal} (peer {self.where})")
            return self._refuse(501, h.error_response(h1.HTTPError(501, "WebSocket not served")), True)
        if ctx.draining:
            h.keep_alive = False  # this response says Connection: close
        self.method, self.target, self.protocol = event.method, event.target, h1.protocol_name(event.http_version)
        self.has_body = event.chunked or bool(event.content_length)
        self._begin()
        self.request = event
        return SERVE

    def _next_uwsgi(self) -> Action:
        try:
            packet = self.parser.next_packet()
        except uwsgi.EmptyConnection:
            return CLOSE
        except uwsgi.UwsgiError as exc:
            self.ctx.log_refusal(f"uwsgi: {exc} (peer {self.where})")
            return CLOSE
        if packet is None:
            return RECEIVE
        if packet.modifier1 == uwsgi.MODIFIER_PING:
            return Reply(uwsgi.PONG, False)
        variables = packet.vars
        self.method = variables.get("REQUEST_METHOD", "GET")
        self.target = variables.get("REQUEST_URI") or variables.get("PATH_INFO", "")
        self.protocol = variables.get("SERVER_PROTOCOL") or "HTTP/1.0"
        self.variables = variables
        self.reserved_vars = packet.reserved
        try:
            length = uwsgi.content_length(variables)
        except uwsgi.BadContentLength as exc:
            self.ctx.log_refusal(f"uwsgi: {exc} (peer {self.where})")
            return self._refuse(400, raw_error(self.protocol, 400), False)
        if self.ctx.limit_post and length > self.ctx.limit_post:
            self.ctx.log_refusal(f"uwsgi: body of {length} bytes over limit-post {self.ctx.limit_post}")
            return self._refuse(413, raw_error(self.protocol, 413), True)
        self.length = length
        self.first = self.parser.trailing[:length]
        self.has_body = bool(length)
        self._begin()
        return SERVE

    def _begin(self) -> None:
        self.began = monotonic()
        self.ctx.row.begin(f"{self.method} {self.target}".encode("latin-1", "replace"), self.began)

    # --- the request body ----------------------------------------------------------------------

    def interim(self) -> bytes:
        """Bytes to send before the first body read: '100 Continue' if the client waits for it."""
        if self.continued or not self.http:
            return b""
        self.continued = True
        return self.h.send_continue()

    def body_next(self) -> bytes | float:
        """The next piece of the body (b'' at its end), or the seconds to wait for more bytes, which
        go to body_data() (body_stalled() if none came). Raises RequestError (400, 408, 413)."""
        if self.body_done or not self.has_body:
            return b""
        try:
            piece = self._http_piece() if self.http else self._uwsgi_piece()
        except RequestError:
            self.body_failed = True
            raise
        if isinstance(piece, float):
            try:
                return min(self.ctx.socket_timeout, self._clock().left())
            except BodyTimeout as exc:
                self.body_failed = True
                raise RequestTimeout(str(exc)) from None
        return piece

    def _http_piece(self) -> bytes | float:
        try:
            event = self.h.next_event()
        except h1.HTTPError as exc:
            raise RequestError(exc.reason) from None
        if event is h1.NEED_DATA:
            return 0.0
        if isinstance(event, h1.Data):
            self.read += len(event.data)
            if self.ctx.limit_post and self.read > self.ctx.limit_post:
                raise RequestTooLarge(self.ctx.limit_post)
            return event.data
        self.body_done = True
        return b""

    def _uwsgi_piece(self) -> bytes | float:
        if self.first:
            piece, self.first = self.first, b""
            self.length -= len(piece)
            self.body_done = not self.length
            return piece
        return 0.0 if self.length else b""

    @property
    def want(self) -> int:
        """How many bytes the next body read may take (a uwsgi body ends at CONTENT_LENGTH)."""
        return RECV if self.http else min(self.length, RECV)

    def _clock(self) -> BodyClock:
        if self.clock is None:
            self.clock = BodyClock(self.ctx.body_timeout, self.ctx.body_min_rate)
        return self.clock

    def body_data(self, data: bytes) -> None:
        """Bytes read for the body; b'' when the client closed (ClientDisconnected for uwsgi)."""
        self._clock().received(len(data))
        if self.http:
            self.h.receive_data(data)
        elif data:
            self.first = data[:self.length]  # bytes after a uwsgi body are never a request
        else:
            self.body_failed = True
            raise ClientDisconnected(f"client closed with {self.length} body bytes unsent")

    def body_stalled(self) -> None:
        """No body bytes came within body_next()'s wait: raise what that means."""
        self.body_failed = True
        try:
            self._clock().left()
        except BodyTimeout as exc:
            raise RequestTimeout(str(exc)) from None
        raise ClientDisconnected(f"request body stalled for {self.ctx.socket_timeout:g}s")

    # --- the response --------------------------------------------------------------------------

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
             last: bool = False) -> bytes:
        """The response head (and first body bytes) for the wire. HTTP: framed by the codec (which
        refuses what it cannot frame: AppError); uwsgi: a raw response as uWSGI writes it. With
        `last`, the body ends here too (end())."""
        self.head_count = len(headers)
        if not self.http:
            lines = [b"%s %d %s\r\n" % (self.protocol.encode("latin-1"), status, reason)]
            for name, value in headers:  # (unpacked: formatting a tuple as a whole takes bytes.__mod__)
                lines.append(b"%s: %s\r\n" % (name, value))
            lines.append(b"\r\n")
            data = b"".join(lines)
            self.head_sent = len(data)
            return data + body if body else data
        try:
            data = self.h.send_response(status, reason, headers)
        except h1.HTTPError as exc:
            raise AppError(f"cannot send the response: {exc.reason}") from None
        self.head_sent = len(data)
        if body:
            data += self.h.send_data(body)
        return data + self.end() if last else data

    def data(self, data: bytes, last: bool = False) -> bytes:
        """Body bytes for the wire (none on HTTP once the response is aborted or unframed); with
        `last`, the end of the body after them (end())."""
        if not self.http:
            return data
        framed = b"" if self.raw else self.h.send_data(data)
        return framed + self.end() if last else framed

    def end(self) -> bytes:
        """The end of the body (the last chunk for chunked framing)."""
        return self.h.send_end() if self.http and not self.raw else b""

    def closes_after(self) -> bool:
        """Whether the connection closes once the response is out: uwsgi always, HTTP when the
        response said Connection: close."""
        return not self.http or self.h.must_close

    def abort(self) -> None:
        """The response cannot complete (or goes out unframed): the connection closes after it."""
        self.raw = True

    def unframed_file(self, count: int | None) -> bool:
        """Whether a file of `count` bytes may go out by sendfile, past the codec's framing: on
        uwsgi always, on HTTP only when the connection closes after it anyway."""
        if not self.http:
            return True
        if self.h.must_close and count is not None:
            self.raw = True
            return True
        return False

    def after_response(self, status: int, sent: int) -> str:
        """End the request (scoreboard row, access line) and say what becomes of the connection:
        KEEP it for the next request, DRAIN the body the app left (then drained()), LINGER, CLOSE."""
        ctx = self.ctx
        ctx.row.end(self.head_sent + sent, monotonic() - self.began, status >= 500)
        if ctx.access_log is not None:
            ctx.access_log.request(self, status, sent)
        body_left = self.has_body and not self.body_done
        if self.raw or not self.http or self.h.must_close:
            return LINGER if body_left else CLOSED
        if body_left:
            return LINGER if self.body_failed else DRAIN
        return KEEP

    def next_request(self) -> bool:
        """Get ready for the next request on a kept-alive connection; False to close instead."""
        if self.ctx.draining or not self.h.start_next_cycle():
            return False
        self.deadline = monotonic() + (self.ctx.keepalive_timeout or self.ctx.http_timeout)
        self.kept_alive = True
        self.received_any = False
        self.method = self.target = self.protocol = ""
        self.has_body = self.continued = self.body_done = self.body_failed = self.raw = False
        self.clock = None
        self.read = self.head_sent = self.head_count = 0
        self.began = 0.0
        if not self.h.has_input():  # the usual case: next_action() says RECEIVE without asking the codec
            self.fed = False
        return True


def raw_error(protocol: str, status: int) -> bytes:
    """A whole plain-text error response in the request's protocol, as uWSGI writes one."""
    text = reason(status)
    body = text + b"\n"
    return (b"%s %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (protocol.encode("latin-1"), status, text, len(body), body))


def peer_text(peer: Any, listener: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if peer else listener.name
