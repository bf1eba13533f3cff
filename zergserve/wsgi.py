"""PEP 3333: the environ, wsgi.input, start_response and response writing, for both protocols.

The protocol drivers in connection.py build the environ from parsed requests and hand `run()` a
sink that knows how to put a response on their wire; everything the app can get wrong (bad status,
bad header bytes, wrong Content-Length, exceptions before or after the head) is handled here, once.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Final, Protocol

from zergserve import proxy
from zergserve.log import traceback_text
from zergserve.protocols.http import Request, protocol_name
from zergserve.protocols.uwsgi import RESERVED_PREFIXES
from zergserve.vocabulary import (AppError, CheckedFields, ClientDisconnected, RequestError, RequestTimeout,
                                  RequestTooLarge, check_field, printable, reason, unquote)

__all__ = ["AppError", "ClientDisconnected", "RequestError", "RequestTimeout", "RequestTooLarge", "check_field",
           "printable", "reason", "run", "Input", "NO_BODY", "FileWrapper", "http_environ", "uwsgi_environ", "base_environ"]

_STATUS = re.compile(r"([1-5][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\Z")
_ERROR_BODY = b"Internal Server Error\n"


class Sink(Protocol):
    """What a protocol driver offers `run()` to put a response on its wire."""

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                  last: bool) -> None: ...
    def send_body(self, data: bytes, last: bool) -> None: ...
    def sendfile(self, file: Any, count: int | None) -> int | None: ...
    def finish(self, flush: bool) -> None: ...
    def abort(self) -> None: ...


class FileWrapper:
    """wsgi.file_wrapper: lets the driver use os.sendfile when the file has a real descriptor."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> "FileWrapper":
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def fileno(self) -> int | None:
        try:
            return self.filelike.fileno()
        except (AttributeError, OSError, ValueError):
            return None


class Input:
    """wsgi.input: reads never go past the body; `pull(n)` returns up to n body bytes, b'' at its end."""

    __slots__ = ("_pull", "_buf", "_done")

    def __init__(self, pull: Callable[[int], bytes] | None) -> None:
        self._pull = pull
        self._buf = bytearray()
        self._done = pull is None

    def _fill(self, want: int) -> bool:
        if self._done or self._pull is None:
            return False
        try:
            chunk = self._pull(max(want, 8192))
        except ClientDisconnected:
            raise
        except OSError as exc:  # the socket failed while the app read: the client is gone
            raise ClientDisconnected(f"reading the body: {exc}") from exc
        if not chunk:
            self._done = True
            return False
        self._buf += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill(65536):
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        while len(self._buf) < size and self._fill(size - len(self._buf)):
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        start = 0
        while True:
            idx = self._buf.find(b"\n", start)
            if idx >= 0:
                end = idx + 1
                break
            if limit is not None and len(self._buf) >= limit:
                end = limit
                break
            start = len(self._buf)
            if not self._fill(8192):
                end = len(self._buf)
                break
        if limit is not None:
            end = min(end, limit)
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> "Input":
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drained(self) -> bool:
        """True when the whole body has been read (nothing left on the wire for this request)."""
        return self._done


NO_BODY: Final = Input(None)  # wsgi.input of every request without a body: it holds no state


def base_environ(server_name: str, server_port: str) -> dict[str, Any]:
    """The per-listener part of the environ, built once and copied per request."""
    return {
        "SCRIPT_NAME": "",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


def http_environ(base: dict[str, Any], request: Request, peer: Any, body: Input) -> dict[str, Any]:
    """Environ for a parsed HTTP request (protocols.http.Request)."""
    env = base.copy()
    path = request.path
    env["REQUEST_METHOD"] = request.method
    env["PATH_INFO"] = unquote(path).decode("latin-1") if "%" in path else path
    env["QUERY_STRING"] = request.query
    env["REQUEST_URI"] = env["RAW_URI"] = request.target
    env["SERVER_PROTOCOL"] = protocol_name(request.http_version)
    if peer:
        env["REMOTE_ADDR"] = peer[0]
        env["REMOTE_PORT"] = str(peer[1])
    else:
        env["REMOTE_ADDR"] = ""
    for name, value in request.headers:
        key = _CGI_NAMES.get(name)
        if key is None:
            if "_" in name:
                continue  # would collide with '-' after the CGI mapping (reliability rule 3)
            key = "HTTP_" + name.upper().replace("-", "_")
            if len(_CGI_NAMES) < _CACHE_SIZE:
                _CGI_NAMES[name] = key
        if key in env:
            if key == "CONTENT_LENGTH" or key == "CONTENT_TYPE":
                env[key] = value
                continue
            env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            env[key] = value
    env["wsgi.input"] = body
    for key in _FORWARDED_KEYS:
        if key in env:
            proxy.apply_environ(env, peer)
            break
    return env


_CGI_NAMES: Final = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}  # header name → environ key
_FORWARDED_KEYS: Final = tuple(proxy.FORWARDED_KEYS)  # three keys, looked up in the environ


def uwsgi_environ(base: dict[str, Any], variables: dict[str, str], body: Input,
                  reserved: bool = True) -> dict[str, Any]:
    """Environ for a uwsgi packet: its vars are already CGI variables (nginx's uwsgi_params).

    uWSGI's magic `UWSGI_*` vars (which load code in uWSGI) are dropped, and a var named like a
    `wsgi.*` key cannot replace the server's; `reserved=False` says there are none of either
    (Packet.reserved). The environ starts as a copy of the vars, which the codec made with room
    for the keys added here."""
    env: dict[str, Any] = variables.copy()
    if reserved:
        for key in variables:
            if key.startswith(RESERVED_PREFIXES):
                del env[key]
    env.update(base)
    for key in _PACKET_WINS:
        value = variables.get(key)
        if value is not None:
            env[key] = value
    scheme = (variables.get("UWSGI_SCHEME") if reserved else None) or variables.get("REQUEST_SCHEME")
    https = variables.get("HTTPS")
    if scheme == "https" or (https and https.lower() in ("on", "1")):
        env["wsgi.url_scheme"] = "https"
    # What a uwsgi environ holds even when the packet lacks it (nginx's uwsgi_params send them all).
    env.setdefault("REQUEST_METHOD", "GET")
    env.setdefault("PATH_INFO", "")
    env.setdefault("QUERY_STRING", "")
    env.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    env["wsgi.input"] = body
    return env


# The CGI keys of the listener's base environ that a packet's vars of the same name replace.
_PACKET_WINS: Final = ("SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT")
_CACHE_SIZE: Final = 256  # distinct statuses and header names remembered as already checked


def parse_status(status: Any) -> tuple[int, bytes]:
    """(code, reason bytes) of a WSGI status line; an app uses a handful, so each is checked once."""
    cached = _STATUSES.get(status) if type(status) is str else None
    if cached is not None:
        return cached
    parsed = _parse_status(status)
    if len(_STATUSES) < _CACHE_SIZE:
        _STATUSES[status] = parsed
    return parsed


_STATUSES: Final[dict[str, tuple[int, bytes]]] = {}


def _parse_status(status: Any) -> tuple[int, bytes]:
    if not isinstance(status, str):
        raise AppError(f"status must be a str, got {type(status).__name__}")
    match = _STATUS.match(status)
    if not match:
        raise AppError(f"invalid status {status!r}")
    code = int(match.group(1))
    phrase = match.group(2)
    return code, phrase.encode("latin-1") if phrase else reason(code)


def _content_length(value: bytes) -> int:
    """The number in an app's Content-Length (plain ASCII digits, or AppError); a short one is read
    here, cheaper than int() on bytes."""
    if not value.isdigit():
        raise AppError(f"invalid Content-Length {value!r}")
    if len(value) > 9:
        return int(value)
    number = 0
    for digit in value:
        number = number * 10 + digit - 48
    return number


def encode_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Validate the app's headers; CR, LF, NUL or a bad name would let it split the response."""
    if not isinstance(headers, list):
        raise AppError(f"headers must be a list, got {type(headers).__name__}")
    return _FIELDS.encode(headers)


def _encode_field(item: Any) -> tuple[bytes, bytes]:
    if not isinstance(item, tuple) or len(item) != 2:
        raise AppError(f"header {item!r} is not a (name, value) tuple")
    name, value = item
    if not isinstance(name, str) or not isinstance(value, str):
        raise AppError(f"header {item!r}: name and value must be str")
    try:
        bname, bvalue = name.encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise AppError(f"header {item!r} is not latin-1") from None
    check_field(bname, bvalue, name, value)
    return bname, bvalue


_FIELDS: Final = CheckedFields(_encode_field)


class Response:
    """start_response, write() and the bookkeeping of one response."""

    __slots__ = ("sink", "status", "reason", "headers", "head_sent", "sent", "length", "truncated")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.head_sent = False
        self.sent = 0
        self.length: int | None = None
        self.truncated = False

    def start_response(self, status: Any, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333's start_response; what the app passes is checked here (parse_status,
        encode_headers: AppError naming the fault), so the parameters say Any, which mypyc does not check."""
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.headers is not None:
            raise AppError("start_response called twice without exc_info")
        self.status, self.reason = parse_status(status)
        self.headers = encode_headers(headers)
        self.length = None
        for name, value in self.headers:
            # (the length first: no lower() for other names, nor for the usual spelling)
            if len(name) == 14 and (name == b"Content-Length" or name.lower() == b"content-length"):
                self.length = _content_length(value)
        return self.write

    def write(self, data: Any) -> None:
        """The app's write(); a chunk that is no bytes-like object is the app's error (AppError)."""
        if self.headers is None:
            raise AppError("write() before start_response()")
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):  # (a subclass of bytes too)
                raise AppError(f"body chunks must be bytes, got {type(data).__name__}")
            data = bytes(data)
        last = False  # these bytes complete the declared Content-Length: the sink may send them with the close
        if self.length is not None:
            if self.sent + len(data) > self.length:
                self.truncated = True
                data = data[: max(0, self.length - self.sent)]
            last = self.sent + len(data) == self.length
        try:
            if not self.head_sent:
                self.sink.send_head(self.status, self.reason, self.headers, data, last)
                self.head_sent = True  # after: a head the codec refused leaves room for a 500
            elif data:
                self.sink.send_body(data, last)
        except ClientDisconnected:
            raise
        except OSError as exc:  # the socket failed: the client, not the app
            raise ClientDisconnected(str(exc)) from exc
        self.sent += len(data)


# What an app may raise that must cost it one 500, not the worker: sys.exit() in a view would
# otherwise end the process with the code it passed, which the master could read as a boot failure.
_APP_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


def run(app: Callable, environ: dict[str, Any], sink: Sink, log_error: Callable[[str], None],
        log_client: Callable[[str], None] | None = None) -> Response:
    """Call the app and write its response; never raises for anything the app does. What the
    client did (left, sent a bad body) goes to `log_client`: its access line carries the status."""
    log_client = log_client or log_error
    response = Response(sink)
    result: Any = None
    try:
        result = app(environ, response.start_response)
        if response.headers is None and isinstance(result, list) and not result:
            raise AppError("app returned without calling start_response()")
        if isinstance(result, (list, tuple)) and len(result) == 1 and not response.head_sent:
            _send_single(response, result[0])
        elif isinstance(result, FileWrapper) and response.headers is not None and not response.head_sent:
            _send_file(response, result)
        else:
            for chunk in result:
                if chunk:
                    response.write(chunk)
            if not response.head_sent:
                response.write(b"")
        if response.truncated:
            log_error(f"app sent more than its Content-Length ({response.length}) for {_where(environ)}: "
                      "truncated, connection closed")
        if (response.length is not None and response.sent != response.length
                and environ.get("REQUEST_METHOD") != "HEAD" and response.status not in (204, 304)):
            log_error(f"app sent {response.sent} of its Content-Length {response.length} bytes for {_where(environ)}: "
                      "connection closed")
            sink.abort()
        else:
            try:
                sink.finish(type(result) is not list)  # (an iterable's close() runs next: see _Sink.finish)
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
    except ClientDisconnected as exc:  # raised by the sink or wsgi.input only: the app's own OSErrors are its errors
        response.status = response.status or 499
        log_client(f"client gone during {_where(environ)}: {exc}")
        sink.abort()
    except RequestError as exc:
        log_client(f"bad request body for {_where(environ)}: {exc}")
        _error_response(response, sink, exc.status, reason(exc.status) + b"\n")
    except _APP_FAILURES as exc:
        log_error(f"error in app for {_where(environ)}:\n"
                  + traceback_text(exc))
        _error_response(response, sink, 500, _ERROR_BODY)
    finally:
        # A list (what most apps return) has no close(): getattr would make and drop an AttributeError.
        close = None if type(result) is list else getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except _APP_FAILURES as exc:
                log_error("error in app's close():\n" + traceback_text(exc))
    return response


def _where(environ: dict[str, Any]) -> str:
    """The request, for an error line (built only when one is written)."""
    return f"{printable(str(environ.get('REQUEST_METHOD')))} {environ.get('PATH_INFO')!r}"


def _send_single(response: Response, chunk: Any) -> None:
    """The common one-chunk body: add a Content-Length so the head and body go in one write."""
    if response.headers is None:
        raise AppError("app returned without calling start_response()")
    if not isinstance(chunk, (bytes, bytearray)):
        raise AppError(f"body chunks must be bytes, got {type(chunk).__name__}")
    if response.length is None:
        response.length = len(chunk)
        response.headers.append((b"Content-Length", str(len(chunk)).encode()))
    response.write(chunk)


def _send_file(response: Response, wrapper: FileWrapper) -> None:
    """Serve a FileWrapper with os.sendfile where the sink and file allow it, else by reading."""
    if response.headers is None:
        raise AppError("app returned without calling start_response()")
    fd = wrapper.fileno()
    if fd is not None and response.length is None:
        try:
            size = os.fstat(fd).st_size - os.lseek(fd, 0, os.SEEK_CUR)
            response.length = size
            response.headers.append((b"Content-Length", str(size).encode()))
        except OSError:
            fd = None
    if fd is not None:
        response.write(b"")
        sent = response.sink.sendfile(wrapper.filelike, response.length)
        if sent is not None:
            response.sent += sent
            return
    for chunk in wrapper:
        response.write(chunk)
    if not response.head_sent:
        response.write(b"")


def _error_response(response: Response, sink: Sink, status: int, body: bytes) -> None:
    response.status = status
    if response.head_sent:
        sink.abort()
        return
    response.head_sent = True
    headers = [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(body)).encode())]
    try:
        sink.send_head(status, reason(status), headers, body, True)
        response.sent = len(body)
        sink.finish(False)
    except OSError:
        sink.abort()
