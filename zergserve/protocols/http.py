"""HTTP/1.1 server connection, sans-I/O: h11 behind a gate that makes it safe for a public server.

h11 parses requests and frames their bodies; on its own it accepts what a front proxy may read differently (research
reliability.md §1.1): Content-Length with Transfer-Encoding, TE on HTTP/1.0, obs-fold, bare LF,
control bytes, HTTP/2.0 request lines, and heads of any size when they arrive in one piece. The
gate here holds each request head until it is complete, checks it with a few linear bytes
operations (no regex with nested quantifiers), enforces the limits, and only then lets h11 see it.
Any error kills the connection: nothing more is parsed on it.

Responses are framed here rather than by h11: their headers were validated once by the WSGI layer,
and h11's second validation cost more than the rest of a request. Each request cycle gets a fresh
h11 connection whose input starts at the next head, so pipelined
heads pass the same gate. Residual, documented: a bare CR inside a chunk extension is accepted
(h11 takes `;.*`); nginx in front rejects it.
"""

from __future__ import annotations

import re
import time
from typing import Any, NamedTuple

h11: Any = None  # imported on the first request with a body; most workers never need it


def _import_h11() -> Any:
    global h11
    if h11 is None:
        import h11 as module
        h11 = module
    return h11


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")


class Data(NamedTuple):
    """A piece of the request body."""

    data: bytes


class EndOfMessage:
    """The request body is complete (trailers, if any, are dropped)."""

    __slots__ = ()


class ConnectionClosed:
    """The client closed the connection between requests."""

    __slots__ = ()

_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
            414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 505: "HTTP Version Not Supported"}


_NONE, _LENGTH, _CHUNKED, _CLOSE = "none", "length", "chunked", "close"


class HTTPError(Exception):
    """A request the server refuses: answer `status`, log `reason`, close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Limits(NamedTuple):
    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    head: int = 65536


DEFAULT_LIMITS = Limits()


class Request(NamedTuple):
    method: str
    target: str
    path: str
    query: str
    http_version: str
    headers: list[tuple[str, str]]
    content_length: int | None
    chunked: bool
    expect_continue: bool
    keep_alive: bool


class _DateCache:
    """The Date header changes once a second; format it once a second."""

    stamp = 0
    value = b""

    @classmethod
    def get(cls) -> bytes:
        now = int(time.time())
        if now != cls.stamp:
            cls.stamp = now
            cls.value = _http_date(now)
        return cls.value


_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def _http_date(stamp: float) -> bytes:
    """IMF-fixdate (RFC 9110 §5.6.7), without importing email.utils and what it pulls in."""
    t = time.gmtime(stamp)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1],
                                                     t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


class HTTPConnection:
    """One server-side HTTP/1.1 connection."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS, keep_alive: bool = True, server: bytes = b"zergserve") -> None:
        self.limits = limits
        self.keep_alive = keep_alive
        self.server = server
        self._h: Any = None  # an h11.Connection, only while a request body is being read
        self._body_done = False
        self._buf = b""
        self._eof = False
        self._in_head = True
        self._scanned = 0
        self._error: HTTPError | None = None
        self._request: Request | None = None
        self._continue_sent = False
        self._started = False
        self._finished = False
        self._close_after = False
        self._framing = _NONE

    # --- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; b'' means the client closed its side."""
        if self._error is not None:
            return
        if self._in_head or self._h is None:
            if data:
                self._buf += data
            else:
                self._eof = True
        else:
            self._h.receive_data(data)

    def next_event(self):
        """The next Request, Data, EndOfMessage, NEED_DATA, PAUSED or ConnectionClosed."""
        if self._error is not None:
            raise self._error
        if self._in_head:
            return self._next_head()
        if self._h is None:  # a request without a body: it ended with its head
            if self._body_done:
                return PAUSED
            self._body_done = True
            return EndOfMessage()
        try:
            event = self._h.next_event()
        except h11.RemoteProtocolError as exc:
            raise self._fail(exc.error_status_hint, str(exc)) from None
        kind = type(event)
        if kind is h11.Data:
            return Data(bytes(event.data))
        if kind is h11.EndOfMessage:
            self._body_done = True
            return EndOfMessage()  # trailers never reach the app
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        return ConnectionClosed()

    def _fail(self, status: int, reason: str) -> HTTPError:
        self._error = HTTPError(status, reason)
        return self._error

    def _next_head(self):
        buf = self._buf
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._check_incomplete(buf)
            self._scanned = len(buf)
            if self._eof:
                if buf.strip(b"\r\n"):
                    raise self._fail(400, "connection closed in the middle of the request head")
                return ConnectionClosed()
            return NEED_DATA
        head = buf[: end + 4]
        rest = buf[end + 4:]
        self._scanned = 0
        request = self._parse_head(head)
        self._in_head = False
        self._request = request
        if request.chunked or request.content_length:
            # h11 frames the body; it re-reads the head we checked so its state machine agrees
            self._buf = b""
            _import_h11()
            self._h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.head + 1)
            self._h.receive_data(head)
            try:
                event = self._h.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._fail(exc.error_status_hint, str(exc)) from None
            if not isinstance(event, h11.Request):
                raise self._fail(400, "malformed request head")
            if rest:
                self._h.receive_data(rest)
            if self._eof:
                self._h.receive_data(b"")
        else:
            self._h = None
            self._buf = rest
        return request

    def _check_incomplete(self, buf: bytes) -> None:
        """Bound what an unfinished head may cost: line and total limits apply before it ends."""
        first = buf.find(b"\r\n")
        if first < 0:
            if len(buf) > self.limits.request_line + 2:
                raise self._fail(414, f"request line longer than {self.limits.request_line} bytes")
            if buf.find(b"\n") >= 0:
                raise self._fail(400, "bare LF in request line")
            return
        if len(buf) > self.limits.head:
            raise self._fail(431, f"request head larger than {self.limits.head} bytes")
        last = buf.rfind(b"\r\n")
        if len(buf) - last - 2 > self.limits.field_size:
            raise self._fail(431, f"header line longer than {self.limits.field_size} bytes")

    def _parse_head(self, head: bytes) -> Request:
        """Check and parse a complete head: linear bytes operations only, every rule of RFC 9112
        §2–§7 that h11 is lenient about, and the limits."""
        limits = self.limits
        if len(head) > limits.head:
            raise self._fail(431, f"request head larger than {limits.head} bytes")
        if _CTL.search(head):
            raise self._fail(400, "control character in request head")
        crlf = head.count(b"\r\n")
        if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
            raise self._fail(400, "bare CR or LF in request head")
        lines = head[:-4].split(b"\r\n")
        line = lines[0]
        if len(line) > limits.request_line:
            raise self._fail(414, f"request line longer than {limits.request_line} bytes")
        if len(lines) - 1 > limits.fields:
            raise self._fail(431, f"more than {limits.fields} header fields")
        parts = line.split(b" ")
        if len(parts) != 3:
            raise self._fail(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            raise self._fail(400, "invalid method")
        if version == b"HTTP/1.1":
            http_version = "1.1"
        elif version == b"HTTP/1.0":
            http_version = "1.0"
        elif _VERSION.fullmatch(version):
            raise self._fail(505, f"unsupported version {version.decode('latin-1')}")
        else:
            raise self._fail(400, "malformed HTTP version")
        if not _TARGET.fullmatch(target):
            raise self._fail(400, "invalid request target")
        if method == b"CONNECT":
            raise self._fail(405, "CONNECT is not served")
        if target[:1] != b"/":
            if target == b"*":
                if method != b"OPTIONS":
                    raise self._fail(400, "'*' target is only for OPTIONS")
            elif not target.lower().startswith((b"http://", b"https://")):
                raise self._fail(400, "request target must be origin-form or absolute-form")
        headers = []
        lengths, codings, hosts = [], [], 0
        expect = False
        close = keep = False
        for field in lines[1:]:
            if len(field) > limits.field_size:
                raise self._fail(431, f"header line longer than {limits.field_size} bytes")
            if field[:1] in (b" ", b"\t"):
                raise self._fail(400, "obsolete line folding in header")
            colon = field.find(b":")
            if colon <= 0 or not _TOKEN.fullmatch(field, 0, colon):
                raise self._fail(400, f"invalid header name {field[:colon if colon > 0 else 40]!r}")
            name = field[:colon].lower().decode("latin-1")
            value = field[colon + 1:].strip(b" \t").decode("latin-1")
            if name == "content-length":
                lengths.append(value)
            elif name == "transfer-encoding":
                codings.append(value)
            elif name == "host":
                hosts += 1
            elif name == "expect":
                expect = value.lower() == "100-continue"
            elif name == "connection":
                tokens = value.lower()
                close = close or "close" in tokens
                keep = keep or "keep-alive" in tokens
            headers.append((name, value))
        if http_version == "1.1" and hosts != 1:
            raise self._fail(400, "HTTP/1.1 needs exactly one Host header")
        if hosts > 1:
            raise self._fail(400, "more than one Host header")
        if codings:
            if lengths:
                raise self._fail(400, "both Content-Length and Transfer-Encoding")
            if http_version == "1.0":
                raise self._fail(400, "Transfer-Encoding on HTTP/1.0")
            if len(codings) > 1:
                raise self._fail(400, "more than one Transfer-Encoding header")
            if codings[0].lower() != "chunked":
                raise self._fail(501, f"unsupported Transfer-Encoding {codings[0]!r}")
        length = None
        if lengths:
            if len(lengths) > 1:
                raise self._fail(400, "more than one Content-Length header")
            value = lengths[0]
            if not (value.isascii() and value.isdigit()):
                raise self._fail(400, f"invalid Content-Length {value!r}")
            if len(value) > 18:
                raise self._fail(413, "Content-Length too large")
            length = int(value)
        target_s = target.decode("latin-1")
        path, _, query = target_s.partition("?")
        return Request(method=method.decode("latin-1"), target=target_s, path=path, query=query,
                       http_version=http_version, headers=headers, content_length=length,
                       chunked=bool(codings), expect_continue=expect,
                       keep_alive=not close if http_version == "1.1" else keep and not close)

    # --- output -----------------------------------------------------------------------------

    def send_continue(self) -> bytes:
        """'100 Continue' once, if the client asked for it and no response has started."""
        if self._continue_sent or self._started or self._request is None or not self._request.expect_continue:
            return b""
        self._continue_sent = True
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def send_response(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The response head, framed for this request (RFC 9112 §6): Content-Length as given,
        else chunked for HTTP/1.1 and close-delimited for HTTP/1.0; no body for HEAD, 1xx, 204
        and 304. Adds Date, Server and the Connection header. The caller has validated the
        headers' bytes (wsgi.encode_headers): they are written as they are."""
        if self._started or self._request is None:
            raise HTTPError(500, "response already started or no request")
        request = self._request
        self._started = True
        length = None
        have_date = have_server = False
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                length = int(value)
            elif low in (b"transfer-encoding", b"keep-alive"):
                continue  # hop-by-hop: the framing is ours to choose
            elif low == b"connection":
                if b"close" in value.lower():
                    self._close_after = True
                continue
            elif low == b"date":
                have_date = True
            elif low == b"server":
                have_server = True
            lines.append(b"%s: %s\r\n" % (name, value))
        if not have_date:
            lines.append(b"Date: %s\r\n" % _DateCache.get())
        if not have_server:
            lines.append(b"Server: %s\r\n" % self.server)
        bodiless = request.method == "HEAD" or status < 200 or status in (204, 304)
        if bodiless:
            self._framing = _NONE
        elif length is not None:
            self._framing = _LENGTH
        elif request.http_version == "1.1":
            self._framing = _CHUNKED
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self._framing = _CLOSE
            self._close_after = True
        if not (self.keep_alive and request.keep_alive) or self._error is not None:
            self._close_after = True
        if self._close_after:
            lines.append(b"Connection: close\r\n")
        elif request.http_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send_data(self, data: bytes) -> bytes:
        """Body bytes framed for the wire."""
        if not data or self._framing is _NONE:
            return b""
        if self._framing is _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def send_end(self) -> bytes:
        """The end of the response body (the last chunk for chunked framing)."""
        self._finished = True
        return b"0\r\n\r\n" if self._framing is _CHUNKED else b""

    def error_response(self, err: HTTPError) -> bytes:
        """A complete error response that closes the connection; b'' if a response has started."""
        if self._started:
            return b""
        self._started = self._finished = self._close_after = True
        reason = _REASONS.get(err.status, "Error")
        body = f"{err.status} {reason}\n".encode()
        return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n"
                b"Date: %s\r\nServer: %s\r\n\r\n%s"
                % (err.status, reason.encode(), len(body), _DateCache.get(), self.server, body))

    def start_next_cycle(self) -> bool:
        """Get ready for the next request; False when the connection must close instead."""
        if self.must_close or not self._finished or not self._body_done:
            return False
        if self._h is not None:
            data, closed = self._h.trailing_data
            self._buf, self._eof = bytes(data), closed
            self._h = None
        self._body_done = False
        self._in_head = True
        self._scanned = 0
        self._request = None
        self._continue_sent = self._started = self._finished = False
        self._framing = _NONE
        return True

    @property
    def response_started(self) -> bool:
        return self._started

    @property
    def must_close(self) -> bool:
        """True once this connection cannot carry another request."""
        return (not self.keep_alive or self._close_after or self._error is not None
                or (self._h is not None and self._h.their_state in (h11.MUST_CLOSE, h11.ERROR, h11.CLOSED)))
