"""HTTP/1.1 server connection, sans-I/O, strict enough for a public server, reading each byte once.

What a front proxy may read differently is refused (research reliability.md §1.1): Content-Length
with Transfer-Encoding, TE on HTTP/1.0, obs-fold, bare LF or CR, control bytes, HTTP/2.0 request
lines, heads of any size. Each request head is held until it is complete, checked with a few linear
bytes operations (no regex with nested quantifiers, CVE-2020-5236) and parsed here; an unfinished
head is bounded as it grows, and each byte of it is scanned a constant number of times, however it
is split into reads. A complete head that passes goes through C when the optional accelerator is
built (_speedups.c); whatever it does not take, the Python below reads and names.

Request bodies are framed here too, in the same pass (Content-Length, or chunked: size lines,
chunk footers, trailers, EOF). A chunk line or a trailer line must end in CRLF, hold no bare CR or
control byte and stay under a bound; trailers are checked (a token name, no field RFC 9110 §6.5.1
forbids) and never exposed; chunk framing may outgrow the data it carries by a bounded amount.
Residual, documented: whitespace after a chunk size (`5 \\r\\n`) is accepted, as h11 0.14+ does.
h11 stays in the tests as the oracle these rules are checked against.

Any error kills the connection: next_event keeps raising it and nothing more is parsed.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable, Final, NamedTuple

_time: Final = time.time  # held by the compiled build, not looked up in the time module per call


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")
PAUSED: Final = _Sentinel("PAUSED")


class Data(NamedTuple):
    """A piece of the request body."""

    data: bytes


class EndOfMessage:
    """The request body is complete (trailers, if any, are dropped)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EndOfMessage()"


class ConnectionClosed:
    """The client closed the connection between requests."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ConnectionClosed()"


_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # every CTL but HTAB, CR and LF (counted apart)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_HEX = re.compile(rb"[0-9A-Fa-f]*")
# The same rules over the head decoded as latin-1 text: a whole request line in one match, a field
# name with its colon in another (tchar excludes ':', so this is the name up to the first colon).
_CTL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])")
# A whole head that breaks no syntax rule, in one match (then _FIELD splits its field block): a
# request line, then field lines of a token name, a colon and a value of no CTL but HTAB, each
# ending in CRLF. No two parts can take the same character, so the match is linear.
_HEAD: Final = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])\r\n"
                   r"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n")
_FIELD: Final = re.compile(r"([^:]+):([^\r]*)\r\n")
# Response fields send_response() reads or replaces: Content-Length, hop-by-hop, Connection, Date, Server.
_RESPONSE_FIELDS = {b"content-length": 0, b"transfer-encoding": 1, b"keep-alive": 1, b"connection": 2,
                    b"date": 3, b"server": 4}
# Fields the head gate reads, by lowercase name: framing, Host, Content-Type, Expect, Connection, Upgrade.
_SPECIAL: Final = {"content-length": 0, "transfer-encoding": 1, "host": 2, "content-type": 3, "expect": 4,
            "connection": 5, "upgrade": 6}
_MAX_CHUNK_LINE = 8190  # a chunk-size line with its extensions; fixed, so '0 = unlimited' field sizes keep it
# The registered status codes' reason phrases, as RFC 9110 and the IANA registry name them, for every
# response (the worker's and the apps' that give a bare code). A table rather than http.HTTPStatus:
# that enum (and HTTPMethod) cost every worker about 60 kB.
REASONS: Final[dict[int, str]] = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
    205: "Reset Content", 206: "Partial Content", 207: "Multi-Status", 208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a Teapot", 421: "Misdirected Request", 422: "Unprocessable Content",
    423: "Locked", 424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
    428: "Precondition Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported", 506: "Variant Also Negotiates",
    507: "Insufficient Storage", 508: "Loop Detected", 510: "Not Extended", 511: "Network Authentication Required"}
# Fields a trailer must not carry (RFC 9110 §6.5.1): framing, routing, request modifiers, auth, content.
_NOT_IN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host", b"trailer", b"te", b"connection",
                              b"expect", b"range", b"if-match", b"if-none-match", b"if-modified-since",
                              b"if-unmodified-since", b"if-range", b"max-forwards", b"cache-control",
                              b"authorization", b"proxy-authorization", b"cookie", b"content-type",
                              b"content-encoding", b"content-range", b"keep-alive", b"upgrade"))
# Chunk framing (size lines, CRLFs) may cost this much beyond the data it carries: a body of a
# million one-byte chunks is refused after a few thousand, not parsed for seconds.
_FRAMING_ALLOWANCE = 65536

# Response framings.
_NONE: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_CLOSE: Final = 3
# Where a chunked body's parser is.
_C_LINE: Final = 0
_C_DATA: Final = 1
_C_CRLF: Final = 2
_C_TRAILER: Final = 3
_C_DONE: Final = 4
# Request body framings.
_B_NONE: Final = 0
_B_LENGTH: Final = 1
_B_CHUNKED: Final = 2
_CHUNK_EXT = re.compile(rb"(?:;[^\r\n]*)?[ \t]*")  # what may follow a chunk size, as h11 reads it


class HTTPError(Exception):
    """A request the server refuses (or a response it cannot send): answer `status`, log `reason`, close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Limits(NamedTuple):
    """Request head limits in bytes (the request line without its CRLF, a field line with it, as
    gunicorn counts) and header count."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    head: int = 65536


DEFAULT_LIMITS = Limits()
_PROTOCOL_NAMES: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def protocol_name(http_version: str) -> str:
    """SERVER_PROTOCOL for a request's version ('1.1' -> 'HTTP/1.1'), without a new string for
    the usual ones."""
    return _PROTOCOL_NAMES.get(http_version) or "HTTP/" + http_version


SERVER: Final = b"zergserve"  # the Server header's value
_SERVER_LINE: Final = b"Server: zergserve\r\n"
# Status lines by code, made once: formatting one costs more than the rest of the head. One per
# code (200..999, send_response's range), so an app that makes up reason phrases cannot grow it.
_STATUS_LINES: Final[dict[int, tuple[bytes, bytes]]] = {}  # status → (the reason it was made with, its line)


def _status_line(status: int, reason: bytes) -> bytes:
    """`HTTP/1.1 <status> <reason>\r\n`, made once per status (again when its reason differs)."""
    known = _STATUS_LINES.get(status)
    if known is not None and known[0] == reason:
        return known[1]
    line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    _STATUS_LINES[status] = (reason, line)  # (the statuses are 200..999: the dict stays small)
    return line


class Request(NamedTuple):
    """A request head that passed the gate."""

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
    upgrade: bool = False  # an Upgrade header is present (is_websocket_upgrade() looks further only then)


_new_request: Final = tuple.__new__  # Request(...) without the Python-level __new__ a NamedTuple adds


def _load_accelerator(name: str = "fast_head") -> Callable[..., tuple | None] | None:
    """A function of the compiled accelerator (fast_head: the head gate's common case, an
    origin-form head that passes; fast_fields: the response's usual header fields), unless it is
    absent (no compiler at install) or ZERGSERVE_PURE_PYTHON=1; whatever it returns None for, the
    Python reads."""
    if os.environ.get("ZERGSERVE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from zergserve.protocols import _speedups
    except ImportError:
        return None
    return getattr(_speedups, name)


_fast_head = _load_accelerator()
_fast_fields: Final = _load_accelerator("fast_fields")
_fast_request = _load_accelerator("fast_request")  # fast_head of the head at the buffer's position, found there
ACCELERATED = _fast_head is not None

Event = Request | Data | EndOfMessage | ConnectionClosed | _Sentinel  # NEED_DATA and PAUSED are _Sentinels


class _DateCache:
    """The Date header changes once a second; format it (and its field line) once a second."""

    def __init__(self) -> None:
        self.stamp = 0
        self.value = b""
        self.line = b""

    def get(self) -> bytes:
        now = int(_time())
        if now != self.stamp:
            self.stamp = now
            self.value = _http_date(now)
            self.line = b"Date: %s\r\n" % self.value
        return self.value

    def get_line(self) -> bytes:
        """`Date: <now>\r\n`."""
        if int(_time()) != self.stamp:
            self.get()
        return self.line


_date: Final = _DateCache()

_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def _http_date(stamp: float) -> bytes:
    """IMF-fixdate (RFC 9110 §5.6.7), without importing email.utils and what it pulls in."""
    t = time.gmtime(stamp)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1],
                                                     t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def _response_fields(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, int | None, bool, bool, bool]:
    """The app's header fields as send_response writes them, and what it reads of them: (the block
    of field lines, the Content-Length or None, whether Connection says close, whether Date and
    Server are there). Content-Length is written once, Transfer-Encoding, Keep-Alive and Connection
    never (the framing is ours to choose). The compiled fast_fields does the same for the usual
    headers and leaves the others (a bad or conflicting Content-Length) to this."""
    length = None
    have_date = have_server = close = False
    lines = []
    for name, value in headers:
        kind = _RESPONSE_FIELDS.get(name.lower())
        if kind is not None:
            if kind == 0:
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise HTTPError(500, f"invalid Content-Length {value!r} in response")
                if length is not None:
                    continue
                length = int(value)
            elif kind == 1:
                continue  # hop-by-hop: the framing is ours to choose
            elif kind == 2:
                close = close or b"close" in value.lower()
                continue
            elif kind == 3:
                have_date = True
            else:
                have_server = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines), length, close, have_date, have_server


class HTTPConnection:
    """One server-side HTTP/1.1 connection.

    Its state starts from the class's defaults (every change is an assignment to the instance),
    so a new connection costs only its three settings."""

    _bmode = _B_NONE  # how the current request's body is framed
    _left = 0  # Content-Length bytes, or the current chunk's data bytes, still to come
    _body_done = False
    # Head input: _buf[_pos:] is unparsed. Absolute indexes into _buf remember how far the
    # unfinished head was checked, so a head split into many reads is scanned once.
    _buf: bytes | bytearray = b""
    _pos = 0
    _scanned = 0
    _line_start = 0
    _lines = 0
    _eof = False
    _in_head = True
    _error: HTTPError | None = None
    _request: Request | None = None
    # The chunked body parser.
    _cstate = _C_DONE
    _trailer_bytes = 0
    _framing_bytes = 0  # chunk framing (size lines and CRLFs) minus the data it carried
    # Response state.
    _continue_sent = False
    _started = False
    _finished = False
    _close_after = False
    _framing = _NONE
    _out_left = 0

    def __init__(self, limits: Limits = DEFAULT_LIMITS, keep_alive: bool = True, server: bytes = SERVER) -> None:
        self.limits = limits
        self.keep_alive = keep_alive
        self.server = server

    # --- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; b'' means the client closed its side."""
        if self._error is not None:
            return
        if not data:
            self._eof = True
            return
        buf, pos = self._buf, self._pos
        if pos:  # forget what was parsed; the indexes follow
            buf = buf[pos:]
            self._scanned -= pos
            self._line_start -= pos
            self._pos = 0
        if not buf:
            self._buf = data
        else:
            if type(buf) is bytes:
                buf = bytearray(buf)  # appends to a bytearray are amortised O(1), bytes concatenation is not
            buf += data
            self._buf = buf

    def next_event(self) -> Event:
        """The next Request, Data, EndOfMessage, NEED_DATA, PAUSED or ConnectionClosed; raises HTTPError."""
        if self._error is not None:
            raise self._error
        if self._in_head:
            return self._next_head()
        if self._body_done:  # until start_next_cycle: bytes after the request wait there
            return PAUSED
        if self._bmode == _B_NONE:  # a request without a body: it ended with its head
            self._body_done = True
            return EndOfMessage()
        return self._next_length() if self._bmode == _B_LENGTH else self._next_chunked()

    def _next_length(self) -> Event:
        if not self._left:
            self._body_done = True
            return EndOfMessage()
        data = self._take(self._left)
        if data:
            self._left -= len(data)
            return Data(data)
        if self._eof:
            raise self._fail(400, f"truncated request body (peer closed with {self._left} of "
                                  f"{self._request.content_length} bytes unsent)")  # type: ignore[union-attr]
        return NEED_DATA

    def _take(self, most: int) -> bytes:
        """Up to `most` buffered body bytes (no copy when they are the whole buffer)."""
        buf, pos = self._buf, self._pos
        end = min(len(buf), pos + most)
        if end == pos:
            return b""
        self._pos = end
        if pos == 0 and end == len(buf) and type(buf) is bytes:
            return buf
        return bytes(buf[pos:end])

    def _next_chunked(self) -> Event:
        """The next Data or EndOfMessage of a chunked body, checking what h11 is lenient about
        (§1.1) as it goes; every byte is looked at once."""
        while True:
            state = self._cstate
            if state == _C_DATA:
                data = self._take(self._left)
                if not data:
                    break
                self._left -= len(data)
                self._framing_bytes -= len(data)
                if not self._left:
                    self._cstate = _C_CRLF
                return Data(data)
            buf, pos = self._buf, self._pos
            if state == _C_CRLF:
                footer = bytes(buf[pos:pos + 2])
                if footer != b"\r\n"[:len(footer)]:
                    raise self._fail(400, f"malformed chunk footer {footer!r} (expected CRLF)")
                if len(footer) < 2:
                    break
                self._pos = pos + 2
                self._cstate = _C_LINE
                continue
            trailer = state == _C_TRAILER
            bound = min(self.limits.field_size, self.limits.head) if trailer else _MAX_CHUNK_LINE
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > bound + 1:
                    raise self._fail(400, f"chunk or trailer line longer than {bound} bytes")
                break
            line = bytes(buf[pos:nl])
            self._pos = nl + 1
            if len(line) > bound + 1:
                raise self._fail(400, f"chunk or trailer line longer than {bound} bytes")
            if line[-1:] != b"\r" or line.count(b"\r") != 1 or _CTL.search(line):
                raise self._fail(400, "bare CR or LF, or control character, in a chunk or trailer line")
            if trailer:
                if len(line) == 1:
                    self._cstate = _C_DONE
                    self._body_done = True
                    return EndOfMessage()  # trailers never reach the app
                self._check_trailer(line[:-1])
                continue
            size = _HEX.match(line).group()  # type: ignore[union-attr]
            if not size or len(size) > 16 or not _CHUNK_EXT.fullmatch(line, len(size), len(line) - 1):
                raise self._fail(400, f"invalid chunk size line {line[:20]!r}")
            self._framing_bytes += len(line) + 3  # the size line and the CRLF after the data
            if self._framing_bytes > _FRAMING_ALLOWANCE:
                raise self._fail(400, "chunk framing larger than the data it carries (too many tiny chunks)")
            self._left = int(size, 16)
            self._cstate = _C_DATA if self._left else _C_TRAILER
        if self._eof:
            raise self._fail(400, "truncated request body (peer closed in a chunked body)")
        return NEED_DATA

    def _colon(self, line: bytes, what: str) -> int:
        """Where a header or trailer line's name ends; no obs-fold, and the name is a token."""
        if line[:1] in (b" ", b"\t"):
            raise self._fail(400, f"obsolete line folding in {what}")
        colon = line.find(b":")
        if colon <= 0 or not _TOKEN.fullmatch(line, 0, colon):
            raise self._fail(400, f"invalid {what} name {line[:colon if colon > 0 else 40]!r}")
        return colon

    def _check_trailer(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self.limits.head:
            raise self._fail(431, f"trailers larger than {self.limits.head} bytes")
        name = line[:self._colon(line, "trailer")].lower()
        if name in _NOT_IN_TRAILERS:
            raise self._fail(400, f"{name.decode('latin-1')} is not allowed in a trailer")

    def _fail(self, status: int, reason: str) -> HTTPError:
        self._error = HTTPError(status, reason)
        return self._error

    def _next_head(self) -> Event:
        buf, pos = self._buf, self._pos
        if pos >= len(buf) and not self._eof:
            return NEED_DATA  # a kept-alive connection between requests: nothing to look at
        if _fast_request is not None and type(buf) is bytes:
            fast = _fast_request(buf, pos, self.limits, Request)
            if fast is not None:
                return self._took_head(fast[0], fast[1])
        while buf[pos:pos + 2] == b"\r\n":  # RFC 9112 §2.2: ignore empty lines before a request line
            pos += 2
        if pos != self._pos:
            self._pos = pos
            self._scanned = max(self._scanned, pos)
            self._line_start = max(self._line_start, pos)
        scanned = self._scanned
        end = buf.find(b"\r\n\r\n", max(pos, scanned - 3))
        if end < 0:
            self._check_incomplete(buf, pos, max(pos, scanned))
            self._scanned = len(buf)
            if self._eof:
                if buf[pos:].strip(b"\r\n"):
                    raise self._fail(400, "truncated request head (connection closed)")
                return ConnectionClosed()
            return NEED_DATA
        pos = end + 4
        # Usually the whole buffer is the head, as it came: then it is not copied.
        head = buf if pos == len(buf) and type(buf) is bytes and not self._pos else bytes(buf[self._pos:pos])
        self._pos = self._scanned = self._line_start = pos
        self._lines = 0
        return self._took_head(self._parse_head(head), pos)

    def _took_head(self, request: Request, end: int) -> Request:
        """A head was read, up to `end` in the buffer: the body's framing follows from it."""
        self._pos = self._scanned = self._line_start = end
        self._lines = 0
        self._in_head = False
        self._request = request
        if request.chunked:
            self._bmode, self._cstate, self._trailer_bytes, self._framing_bytes = _B_CHUNKED, _C_LINE, 0, 0
        elif request.content_length:
            self._bmode, self._left = _B_LENGTH, request.content_length
        return request

    def _check_incomplete(self, buf: bytes | bytearray, pos: int, start: int) -> None:
        """Bound what an unfinished head may cost, looking only at the bytes from `start` on:
        total size, line count, the current line's length, and bare LFs (a head that uses them
        would otherwise wait for its timeout)."""
        limits = self.limits
        new_lines = buf.count(b"\n", start)
        if new_lines:
            if new_lines != buf.count(b"\r\n", max(pos, start - 1)):
                raise self._fail(400, "bare LF in request head")
            if not self._lines:
                first = buf.find(b"\n", start)
                if first - 1 - pos > limits.request_line:
                    raise self._fail(414, f"request line longer than {limits.request_line} bytes")
            self._lines += new_lines
            if self._lines > limits.fields + 1:
                raise self._fail(431, f"more than {limits.fields} header fields")
            self._line_start = buf.rfind(b"\n", start) + 1
        if not self._lines:
            if len(buf) - pos > limits.request_line + 1:
                raise self._fail(414, f"request line longer than {limits.request_line} bytes")
        elif len(buf) - self._line_start + 1 > limits.field_size:  # the line with its CRLF, as gunicorn
            raise self._fail(431, f"header line longer than {limits.field_size} bytes")
        if len(buf) - pos > limits.head:
            raise self._fail(431, f"request head larger than {limits.head} bytes")

    def _parse_head(self, head: bytes) -> Request:
        """Check and parse a complete head: linear operations only, every rule of RFC 9112
        §2–§7 that h11 is lenient about, and the limits. The head is decoded once (latin-1 keeps
        every byte) and its syntax checked by one match (_HEAD); a head it refuses goes to
        _refuse_head(), which names the first fault. The compiled _fast_head, when there, reads
        the common valid head in one pass and leaves every other head to the Python below."""
        limits = self.limits
        if _fast_head is not None:
            fast = _fast_head(head, limits, Request)
            if fast is not None:
                return fast  # type: ignore[return-value]  # (made a Request by the C code)
        if len(head) > limits.head:
            raise self._fail(431, f"request head larger than {limits.head} bytes")
        text = str(head, "latin-1")
        match = _HEAD.fullmatch(text)
        if match is None:
            raise self._refuse_head(text)
        method, target, minor, block = match.groups()
        if match.end(3) > limits.request_line:
            raise self._fail(414, f"request line longer than {limits.request_line} bytes")
        fields = _FIELD.findall(block)
        if len(fields) > limits.fields:
            raise self._fail(431, f"more than {limits.fields} header fields")
        self._check_target(method, target)
        if len(block) > limits.field_size - 2:  # one of the fields may be too long
            for name, value in fields:
                if len(name) + len(value) + 3 > limits.field_size:  # with its colon and CRLF, as gunicorn counts
                    raise self._fail(431, f"header line longer than {limits.field_size} bytes")
        http_version = "1.1" if minor == "1" else "1.0"
        headers = []
        lengths, codings, hosts, types = [], [], 0, 0
        expect = close = keep = upgrade = False
        for name, value in fields:
            name = name.lower()
            value = value.strip(" \t")
            special = _SPECIAL.get(name)
            if special is not None:
                if special == 0:
                    lengths.append(value)
                elif special == 1:
                    codings.append(value)
                elif special == 2:
                    hosts += 1
                elif special == 3:
                    types += 1
                elif special == 4:
                    expect = value.lower() == "100-continue"
                elif special == 5:
                    low = value.lower()
                    if "," in low:
                        tokens = [token.strip(" \t") for token in low.split(",")]
                        close = close or "close" in tokens
                        keep = keep or "keep-alive" in tokens
                    else:  # one token, already stripped
                        close = close or low == "close"
                        keep = keep or low == "keep-alive"
                else:
                    upgrade = True
            headers.append((name, value))
        if http_version == "1.1" and hosts != 1:
            raise self._fail(400, "HTTP/1.1 needs exactly one Host header")
        if hosts > 1:
            raise self._fail(400, "more than one Host header")
        if types > 1:
            raise self._fail(400, "more than one Content-Type header")
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
        path, _, query = target.partition("?")
        if path[:1] != "/" and path != "*":
            # absolute-form: its authority wins over Host (RFC 9112 §3.2.2), its path is the path
            authority, slash, rest = path.split("://", 1)[1].partition("/")
            if not authority or "@" in authority:
                raise self._fail(400, "absolute-form target without a plain host")
            path = slash + rest or "/"
            headers = [(name, value) for name, value in headers if name != "host"]
            headers.append(("host", authority))
        return _new_request(Request, (method, target, path, query, http_version, headers, length, bool(codings),
                                      expect and http_version == "1.1",
                                      not close if http_version == "1.1" else keep and not close, upgrade))

    def _check_target(self, method: str, target: str) -> None:
        """What the request line's syntax lets through but the server refuses: CONNECT, and a
        target in neither origin-form nor absolute-form (nor `*` for OPTIONS)."""
        if method == "CONNECT":
            raise self._fail(405, "CONNECT is not served")
        if target[0] != "/":
            if target == "*":
                if method != "OPTIONS":
                    raise self._fail(400, "'*' target is only for OPTIONS")
            elif not target.lower().startswith(("http://", "https://")):
                raise self._fail(400, "request target must be origin-form or absolute-form")

    def _refuse_head(self, text: str) -> HTTPError:
        """The error for a head that _HEAD refused: each rule checked in turn, the first broken
        one named (with the limits checked before the syntax, in the order of a valid head)."""
        limits = self.limits
        if _CTL_TEXT.search(text):
            return self._fail(400, "control character in request head")
        crlf = text.count("\r\n")
        if text.count("\n") != crlf or text.count("\r") != crlf:
            return self._fail(400, "bare CR or LF in request head")
        lines = text[:-4].split("\r\n")
        line = lines[0]
        if len(line) > limits.request_line:
            return self._fail(414, f"request line longer than {limits.request_line} bytes")
        if len(lines) - 1 > limits.fields:
            return self._fail(431, f"more than {limits.fields} header fields")
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            return self._refuse_request_line(line.encode("latin-1"))
        self._check_target(match.group(1), match.group(2))
        for field in lines[1:]:
            if len(field) + 2 > limits.field_size:  # the whole field line with its CRLF, as gunicorn counts
                return self._fail(431, f"header line longer than {limits.field_size} bytes")
            self._colon(field.encode("latin-1"), "header")
        return self._fail(400, "malformed request head")  # unreachable: _HEAD takes what passes the rules

    def _refuse_request_line(self, line: bytes) -> HTTPError:
        """The error for a request line that _REQUEST_LINE refused, checked part by part."""
        parts = line.split(b" ")
        if len(parts) != 3:
            return self._fail(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            return self._fail(400, "invalid method")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if _VERSION.fullmatch(version):
                return self._fail(505, f"unsupported version {version.decode('latin-1')}")
            return self._fail(400, "malformed HTTP version")
        if not _TARGET.fullmatch(target):
            return self._fail(400, "invalid request target")
        raise AssertionError("the request line pattern refused a valid line")  # pragma: no cover

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
        headers' bytes (wsgi.encode_headers): they are written as they are. Raises HTTPError(500)
        for what cannot be framed, before anything is written."""
        if self._started or self._request is None:
            raise HTTPError(500, "response already started or no request")
        if not 200 <= status <= 999:
            raise HTTPError(500, f"cannot send status {status} as a final response")
        request = self._request
        fields = _fast_fields(headers) if _fast_fields is not None else None
        block, length, close, have_date, have_server = fields if fields is not None else _response_fields(headers)
        lines = [_status_line(status, reason), block]
        if not have_date:
            lines.append(_date.get_line())
        if not have_server:
            lines.append(_SERVER_LINE if self.server is SERVER else b"Server: %s\r\n" % self.server)
        self._started = True
        self._close_after = close
        if request.method == "HEAD" or status in (204, 304):
            self._framing = _NONE
        elif length is not None:
            self._framing = _LENGTH
            self._out_left = length
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
        """Body bytes framed for the wire; bytes past a declared Content-Length are cut and the
        connection will close (its framing could no longer be trusted)."""
        framing = self._framing
        if not data or framing == _NONE or self._finished:
            return b""
        if framing == _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data)
        if framing == _LENGTH:
            if len(data) > self._out_left:
                self._close_after = True
                data = data[:self._out_left]
            self._out_left -= len(data)
        return data

    def send_end(self) -> bytes:
        """The end of the response body (the last chunk for chunked framing). A body shorter than
        its Content-Length leaves the connection to be closed: the client is still waiting."""
        if self._finished:
            return b""
        self._finished = True
        if self._framing == _LENGTH and self._out_left:
            self._close_after = True
        return b"0\r\n\r\n" if self._framing == _CHUNKED else b""

    def error_response(self, err: HTTPError) -> bytes:
        """A complete error response that closes the connection; b'' if a response has started."""
        if self._started:
            return b""
        self._started = self._finished = self._close_after = True
        reason = REASONS.get(err.status, "Error")
        body = f"{err.status} {reason}\n".encode()
        return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n"
                b"Date: %s\r\nServer: %s\r\n\r\n%s"
                % (err.status, reason.encode(), len(body), _date.get(), self.server, body))

    def start_next_cycle(self) -> bool:
        """Get ready for the next request; False when the connection must close instead. A request
        without a body is done with its head, whether or not its EndOfMessage was asked for."""
        if self.must_close or not self._finished or (self._bmode != _B_NONE and not self._body_done):
            return False
        self._scanned = self._line_start = self._pos  # what follows the request is the next head
        self._lines = 0
        self._bmode = _B_NONE
        self._body_done = False
        self._in_head = True
        self._request = None
        self._continue_sent = self._started = self._finished = False
        self._framing = _NONE
        self._cstate = _C_DONE
        return True

    def has_input(self) -> bool:
        """Whether bytes not parsed yet, or the client's EOF, wait for next_event()."""
        return self._pos < len(self._buf) or self._eof

    def trailing(self) -> bytes:
        """The bytes received after the request head: on a protocol switch (a WebSocket's 101),
        the first bytes of the new protocol."""
        return bytes(self._buf[self._pos:])

    @property
    def response_started(self) -> bool:
        return self._started

    @property
    def must_close(self) -> bool:
        """True once this connection cannot carry another request."""
        return not self.keep_alive or self._close_after or self._error is not None


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def is_websocket_upgrade(request: Request) -> bool:
    """Whether a request head asks to become a WebSocket (RFC 6455 §4.1: Upgrade and Connection)."""
    if not request.upgrade:
        return False
    upgrade = connection = ""
    for name, value in request.headers:
        low = name.lower()
        if low == "upgrade":
            upgrade += "," + value
        elif low == "connection":
            connection += "," + value
    return "websocket" in _tokens(upgrade) and "upgrade" in _tokens(connection)
