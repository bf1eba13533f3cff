"""ASGI 3.0: the HTTP scope, receive and send, and the lifespan protocol, for both wire protocols.

The asyncio worker parses requests with the same sans-I/O codecs as the WSGI workers and hands
`run()` a scope, an async body source and an async sink that puts a response on its wire.
Everything the app can get wrong (bad messages, bad status or header bytes, an exception before
or after the head) is handled here, once, the way wsgi.run() does for WSGI: a 500 if nothing was
sent, else the connection is cut.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Protocol

from zergserve import proxy
from zergserve.log import traceback_text
from zergserve.vocabulary import (AppError, CheckedFields, ClientDisconnected, RequestError, check_field, printable,
                                  reason, unquote)

ASGI = {"version": "3.0", "spec_version": "2.3"}
_ERROR_BODY = b"Internal Server Error\n"

Pull = Callable[[], Awaitable[bytes]]  # the next body chunk, b'' at the end of the body


class Sink(Protocol):
    """What a protocol driver offers `run()` to put a response on its wire. Writing does not wait:
    `head` and `body` hand the bytes on (`last`: the response ends with them) and say whether the
    writer must wait (`drain`) before it writes more; most responses never do, so they cost no
    coroutine of the sink's."""

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes, last: bool) -> bool: ...
    def body(self, data: bytes, last: bool) -> bool: ...
    async def drain(self) -> None: ...
    def abort(self) -> None: ...
    async def closed(self) -> None:
        """Return once the client has closed the connection (EOF or an error on it)."""
    def unwatch(self) -> None:
        """Stop what closed() does at once: the driver reads the connection next."""


def http_scope(request: Any, peer: Any, server: tuple[str, str], state: dict[str, Any]) -> dict[str, Any]:
    """The scope of a parsed HTTP request (protocols.http.Request); `server` is the listener's
    (name, port), the same tuple for every request on it."""
    path = request.path
    raw_path = path.encode("latin-1")
    return proxy.apply_scope({
        "type": "http",
        "asgi": ASGI,
        "http_version": request.http_version,
        "method": request.method,
        "scheme": "http",
        "path": _decode_path(unquote(raw_path) if "%" in path else raw_path),
        "raw_path": raw_path,
        "query_string": request.query.encode("latin-1"),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers],
        "client": (peer[0], peer[1]) if peer else None,
        "server": _scope_server(server),
        "state": state.copy(),
    }, peer)


def uwsgi_scope(variables: dict[str, str], server: tuple[str, str], state: dict[str, Any]) -> dict[str, Any]:
    """The scope of a uwsgi packet: its vars are CGI variables (nginx's uwsgi_params)."""
    headers = []
    for key, value in variables.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
    scheme = variables.get("UWSGI_SCHEME") or variables.get("REQUEST_SCHEME") or "http"
    if variables.get("HTTPS", "").lower() in ("on", "1"):
        scheme = "https"
    uri = variables.get("REQUEST_URI", "")
    path = variables.get("PATH_INFO", "")
    addr, port = variables.get("REMOTE_ADDR"), variables.get("REMOTE_PORT", "0")
    protocol = variables.get("SERVER_PROTOCOL") or "HTTP/1.0"
    return {
        "type": "http",
        "asgi": ASGI,
        "http_version": protocol.partition("/")[2] or "1.0",
        "method": variables.get("REQUEST_METHOD", "GET"),
        "scheme": scheme,
        "path": _decode_path(path.encode("latin-1")),
        "raw_path": uri.partition("?")[0].encode("latin-1") if uri else path.encode("latin-1"),
        "query_string": variables.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": _decode_path(variables.get("SCRIPT_NAME", "").encode("latin-1")),
        "headers": headers,
        "client": (addr, int(port) if port.isdigit() else 0) if addr else None,
        "server": _server(variables.get("SERVER_NAME", server[0]), variables.get("SERVER_PORT", server[1])),
        "state": state.copy(),
    }


def _decode_path(raw: bytes) -> str:
    """ASGI paths are UTF-8 text; undecodable bytes survive as surrogates rather than failing the request."""
    return raw.decode("utf-8", "surrogateescape")


def _scope_server(server: tuple[str, str]) -> tuple[str, int | None] | None:
    """The scope's "server" for a listener's (name, port), made once per listener."""
    scoped = _SERVERS.get(server, _UNSET)
    if scoped is _UNSET:
        scoped = _SERVERS[server] = _server(*server)
    return scoped


_SERVERS: dict[tuple[str, str], Any] = {}
_UNSET = object()


def _server(name: str, port: str) -> tuple[str, int | None] | None:
    if not name:
        return None
    return (name, int(port) if port.isdigit() else None)


def encode_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Validate the app's headers: an iterable of (name, value) byte strings, checked like WSGI's."""
    try:
        items = list(headers)
    except TypeError:
        raise AppError(f"headers must be iterable, got {type(headers).__name__}") from None
    return _FIELDS.encode(items)


def _check_field(item: Any) -> tuple[bytes, bytes]:
    try:
        name, value = item
    except (TypeError, ValueError):
        raise AppError(f"header {item!r} is not a (name, value) pair") from None
    if type(name) is not bytes or type(value) is not bytes:
        if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
            raise AppError(f"header {item!r}: name and value must be bytes")
        name, value = bytes(name), bytes(value)
    check_field(name, value, name, value)
    return name, value


_FIELDS = CheckedFields(_check_field)


class Response:
    """What the app sent so far, for the access log, the scoreboard and the error path."""

    __slots__ = ("status", "headers", "head_sent", "sent", "finished", "gone", "done", "event")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.head_sent = False
        self.sent = 0
        self.finished = False
        self.gone = False  # the client left (a read or write failed): not the app's fault
        self.done = False  # the response ended or the client left: receive() says disconnect
        self.event: asyncio.Event | None = None  # made only for a receive() that waits for `done`

    def end(self) -> None:
        self.done = True
        if self.event is not None:
            self.event.set()


APP_FAILURES = (Exception, SystemExit, KeyboardInterrupt)  # one 500, never the worker


async def run(app: Callable, scope: dict[str, Any], pull: Pull | None, sink: Sink,
              log_error: Callable[[str], None], log_client: Callable[[str], None] | None = None) -> Response:
    """Call the app for one request and write its response; never raises for anything the app does."""
    response = Response()
    ended = False  # the last http.request (more_body False) went to the app

    async def receive() -> dict[str, Any]:
        nonlocal ended
        if response.done:
            return {"type": "http.disconnect"}
        if ended:  # the body was read: only a disconnect is left to report, once the client leaves
            await _until_gone(response, sink)
            return {"type": "http.disconnect"}
        if pull is None:
            ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        try:
            chunk = await pull()
        except ClientDisconnected:
            response.gone = True
            response.end()
            return {"type": "http.disconnect"}
        ended = not chunk
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    async def send(message: dict[str, Any]) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if response.gone:  # a body read failed (stall, EOF): whatever the app sends now is not for a
            raise ClientDisconnected("client gone")  # request it saw whole, so none of it goes out
        if response.finished:
            raise AppError(f"{kind!r} sent after the response completed")
        if kind == "http.response.start":
            if response.headers is not None:
                raise AppError("http.response.start sent twice")
            status = message.get("status")
            if type(status) is not int or not 100 <= status <= 599:
                raise AppError(f"invalid status {status!r}")
            response.headers = encode_headers(message.get("headers", []))
            response.status = status
        elif kind == "http.response.body":
            if response.headers is None:
                raise AppError("http.response.body before http.response.start")
            data = message.get("body", b"")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise AppError(f"body must be bytes, got {type(data).__name__}")
            if type(data) is not bytes:
                data = bytes(data)
            more = bool(message.get("more_body", False))
            try:
                if not response.head_sent:
                    wait = sink.head(response.status, reason(response.status), response.headers, data, not more)
                    response.head_sent = True  # after: a head the codec refused leaves room for a 500
                else:
                    wait = sink.body(data, not more) if data or not more else False
                response.sent += len(data)
                if not more:
                    response.finished = True
                    response.end()
                if wait:
                    await sink.drain()
            except OSError as exc:  # the socket failed: the client, not the app
                response.gone = True
                response.end()
                if isinstance(exc, ClientDisconnected):
                    raise
                raise ClientDisconnected(str(exc)) from exc
        else:
            raise AppError(f"unexpected ASGI message {kind!r}")

    try:
        await app(scope, receive, send)
        if not response.finished:
            if response.gone:
                raise ClientDisconnected("the app stopped once told")
            raise AppError("app returned without completing its response")
    except ClientDisconnected as exc:
        response.status = response.status or 499
        (log_client or log_error)(f"client gone during {printable(scope['method'])} {scope['path']!r}: {exc}")
        sink.abort()
    except RequestError as exc:
        (log_client or log_error)(f"bad request body for {printable(scope['method'])} {scope['path']!r}: {exc}")
        await _error_response(response, sink, exc.status, reason(exc.status) + b"\n")
    except APP_FAILURES as exc:
        log_error(f"error in app for {printable(scope['method'])} {scope['path']!r}:\n" + traceback_text(exc))
        await _error_response(response, sink, 500, _ERROR_BODY)
    finally:
        response.end()
        sink.unwatch()
    return response


async def _until_gone(response: Response, sink: Sink) -> None:
    """Wait until the response ends or the client closes the connection (then `response.gone`)."""
    if response.event is None:
        response.event = asyncio.Event()
    watch = asyncio.ensure_future(sink.closed())
    done = asyncio.ensure_future(response.event.wait())
    try:
        await asyncio.wait((watch, done), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        done.cancel()
    if watch.done() and not watch.cancelled() and not response.done:
        response.gone = True
        response.end()


async def _error_response(response: Response, sink: Sink, status: int, body: bytes) -> None:
    """A plain error if nothing went out yet; else cut the connection (the client sees a short reply)."""
    response.status = status
    if response.head_sent:
        sink.abort()
        return
    response.head_sent = response.finished = True
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    try:
        wait = sink.head(status, reason(status), headers, body, True)
        response.sent = len(body)
        if wait:
            await sink.drain()
    except OSError:
        sink.abort()


class LifespanFailed(Exception):
    """The app answered lifespan.startup.failed: the worker must not serve."""


class Lifespan:
    """The lifespan scope: startup before the worker accepts, shutdown once it stopped serving.

    `mode` is uvicorn's --lifespan: 'auto' serves an app that raises on the scope before its startup
    completes without lifespan (one that does not know it), 'on' fails the boot then, 'off' never
    sends the scope. Startup and shutdown each have `timeout` seconds."""

    def __init__(self, app: Callable, log_info: Callable[[str], None], log_error: Callable[[str], None],
                 mode: str = "auto", timeout: float = 60.0) -> None:
        self.app = app
        self.log_info = log_info
        self.log_error = log_error
        self.mode = mode
        self.timeout = timeout
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._started = False
        self._failed = False  # the app sent a *.failed message: it reported its error itself
        self._error: BaseException | None = None  # what the app raised on the scope, if it did

    async def startup(self) -> None:
        """Run the app's startup; raises LifespanFailed when the app says it failed (or, with
        mode 'on', raised), or takes longer than the timeout."""
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        try:
            message = await asyncio.wait_for(self._outbox.get(), self.timeout)
        except TimeoutError:
            self._task.cancel()
            raise LifespanFailed(f"not complete after {self.timeout:g}s (--lifespan-timeout)") from None
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(message.get("message") or "the app sent lifespan.startup.failed")
        if kind == "lifespan.startup.complete":
            self._started = True
        elif self._error is None:
            self.log_info("the app returned from the ASGI lifespan scope without starting up; serving "
                          "without lifespan")
        elif self.mode == "on":
            raise LifespanFailed("the app raised on the lifespan scope (--lifespan on):\n" +
                                 traceback_text(self._error))
        else:
            self.log_info(f"the app does not support ASGI lifespan ({type(self._error).__name__}: "
                          f"{self._error}); serving without it (--lifespan auto)")

    async def shutdown(self) -> None:
        """Run the app's shutdown, bounded in time; nothing to do if startup was not completed."""
        if not self._started or self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._outbox.get(), self.timeout)
        except TimeoutError:
            self.log_error(f"lifespan shutdown not complete after {self.timeout:g}s (--lifespan-timeout)")
            self._task.cancel()
            return
        if message["type"] == "lifespan.shutdown.failed":
            self.log_error(f"lifespan shutdown failed: {message.get('message', '')}")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except APP_FAILURES as exc:
            self._error = exc  # before startup completed, startup() says what it means
            if self._started and not self._failed:
                self.log_error("error in app's lifespan:\n" + traceback_text(exc))
        finally:
            self._outbox.put_nowait({"type": "lifespan.ended"})

    async def _send(self, message: dict[str, Any]) -> None:
        if str(message.get("type", "")).endswith(".failed"):
            self._failed = True
        await self._outbox.put(message)
