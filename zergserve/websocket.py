"""ASGI WebSocket over wsproto: the websocket scope, the handshake, messages, pings and closes.

The asyncio worker hands a request whose head asks for an upgrade to `Session.run()` with a
Transport (its socket's reads and writes). wsproto, the WebSocket counterpart of h11, does the
handshake (subprotocols, permessage-deflate) and the framing; this module speaks ASGI to the app
(websocket.connect/accept/receive/send/close/disconnect and the denial response extension), bounds
what a client may send (`--ws-max-size`), pings it (`--ws-ping-interval`, `--ws-ping-timeout`) and
closes with 1001 when the worker stops. Without wsproto the asyncio worker refuses upgrades, as
the other workers do (exchange.py, with protocols/http.py's `is_websocket_upgrade()`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, NamedTuple, Protocol

try:
    from wsproto import ConnectionState, ConnectionType, WSConnection
    from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong, RejectConnection,
                                RejectData, Request, TextMessage)
    from wsproto.extensions import Extension, PerMessageDeflate
    from wsproto.utilities import RemoteProtocolError
    HAVE_WSPROTO = True
except ImportError:  # WebSocket is refused with 501 (available() says why)
    HAVE_WSPROTO = False

from zergserve import asgi
from zergserve.exchange import raw_error
from zergserve.log import traceback_text
from zergserve.vocabulary import AppError, ClientDisconnected, printable, reason

_QUEUE = 16  # messages read ahead of the app; reading pauses while the queue is full
_CLOSE_WAIT = 2.0  # seconds to wait for the client's answer to our close frame
CONNECTING, OPEN, CLOSING, CLOSED = range(4)


def available() -> str:
    """Why WebSocket cannot be served here ('' when it can): wsproto must be installed."""
    return "" if HAVE_WSPROTO else "wsproto is not installed (pip install 'zergserve[websocket]')"


def scope(request: Any, peer: Any, server: tuple[str, str], state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI websocket scope of an upgrade request: the HTTP scope's fields, ws/wss, subprotocols."""
    result = asgi.http_scope(request, peer, server, state)
    result["type"] = "websocket"
    result["scheme"] = "wss" if result["scheme"] == "https" else "ws"
    del result["method"]
    offered: list[str] = []
    for name, value in request.headers:
        if name.lower() == "sec-websocket-protocol":
            offered.extend(token.strip() for token in value.split(",") if token.strip())
    result["subprotocols"] = offered
    result["extensions"] = {"websocket.http.response": {}}
    return result


def request_head(request: Any) -> bytes:
    """The request head again as bytes, for wsproto's handshake (which parses with h11)."""
    lines = [f"GET {request.target} HTTP/{request.http_version}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in request.headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class Options(NamedTuple):
    max_size: int = 16777216
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    deflate: bool = True


class Transport(Protocol):
    """What the driver offers a session: its socket's reads (b'' at EOF) and whole writes."""

    async def recv(self) -> bytes: ...
    async def send(self, data: bytes) -> None: ...


class Session:
    """One WebSocket connection, from the upgrade request to the close."""

    def __init__(self, app: Callable, scope: dict[str, Any], transport: Transport, options: Options,
                 log_error: Callable[[str], None]) -> None:
        self.app = app
        self.scope = scope
        self.transport = transport
        self.options = options
        self.log_error = log_error
        self.ws = WSConnection(ConnectionType.SERVER)
        self.state = CONNECTING
        self.status = 0  # for the access log: 101, or the status of the refusal
        self.sent = 0  # message bytes (or denial body bytes) the app sent
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE)
        self.lock = asyncio.Lock()  # one frame on the wire at a time, in wsproto's order
        self.connected = False  # websocket.connect went to the app
        self.gone: dict[str, Any] | None = None  # the websocket.disconnect message, once there is one
        self.closed = asyncio.Event()  # the closing handshake is over (or the client left)
        self.pong = asyncio.Event()
        self.parts: list[Any] = []
        self.size = 0
        self.tasks: list[asyncio.Task] = []

    @property
    def where(self) -> str:
        return f"WebSocket {printable(self.scope['path'])!r}"

    async def run(self, head: bytes) -> int:
        """Handshake, run the app, close; returns the status for the access line."""
        try:
            self.ws.receive_data(head)
            handshake = [event for event in self.ws.events() if isinstance(event, Request)]
        except RemoteProtocolError as exc:
            handshake = []
            self.log_error(f"{self.where}: bad handshake: {exc}")
        if not handshake:
            self.status = 400
            await self.transport.send(raw_error("HTTP/1.1", 400))
            return self.status
        self.offered = handshake[0].extensions
        try:
            await self.app(self.scope, self.receive, self.send)
            if self.state == CONNECTING:
                self.log_error(f"{self.where}: the app returned without accepting or closing")
                await self._refuse(500)
        except ClientDisconnected:
            pass
        except asgi.APP_FAILURES as exc:
            self.log_error(f"error in app for {self.where}:\n" + traceback_text(exc))
            if self.state == CONNECTING:
                await self._refuse(500)
            else:
                await self._close(1011, "")
        else:
            await self._close(1000, "")
        finally:
            await self._finish()
        return self.status

    async def _finish(self) -> None:
        """Wait (bounded) for the client to answer our close, then stop reading and pinging."""
        if self.state == CLOSING:
            try:
                await asyncio.wait_for(self.closed.wait(), _CLOSE_WAIT)
            except TimeoutError:
                pass
        for task in self.tasks:
            task.cancel()
        self.state = CLOSED

    # --- the app's side ------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.gone is not None and self.inbox.empty():
            return self.gone
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "websocket.accept" and self.state == CONNECTING:
            await self._accept(message)
        elif kind == "websocket.close":  # once closed, a close is a no-op (apps close in their cleanup)
            if self.state == CONNECTING:
                await self._refuse(403)
            elif self.state == OPEN:
                await self._close(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.send" and self.state == OPEN:
            data, text = message.get("bytes"), message.get("text")
            event: TextMessage | BytesMessage
            if text is not None and data is None:
                event = TextMessage(data=text)
                self.sent += len(text.encode())
            elif data is not None and text is None:
                event = BytesMessage(data=bytes(data))
                self.sent += len(data)
            else:
                raise AppError("websocket.send needs exactly one of 'bytes' and 'text'")
            await self._write(event)
        elif kind == "websocket.http.response.start" and self.state == CONNECTING:
            await self._deny(message)
        elif kind == "websocket.http.response.body" and self.state == CLOSING and self.status != 101 and \
                not self.closed.is_set():
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            self.sent += len(body)
            await self._write(RejectData(data=body, body_finished=not more))
            if not more:
                self.closed.set()
        elif self.state in (CLOSING, CLOSED) and kind == "websocket.send":
            raise ClientDisconnected(f"{kind} after the WebSocket closed")
        else:
            raise AppError(f"unexpected ASGI message {kind!r} in WebSocket state {self.state}")

    async def _accept(self, message: dict[str, Any]) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
            raise AppError(f"subprotocol {subprotocol!r} was not offered by the client")
        headers = asgi.encode_headers(message.get("headers", []))
        offered = self.options.deflate and any("permessage-deflate" in str(ext) for ext in self.offered)
        extensions: list[Extension] = [PerMessageDeflate()] if offered else []
        self.state = OPEN
        self.status = 101
        await self._write(AcceptConnection(subprotocol=subprotocol, extensions=extensions, extra_headers=headers))
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._read()))
        if self.options.ping_interval > 0:
            self.tasks.append(loop.create_task(self._ping()))

    async def _refuse(self, status: int) -> None:
        """An HTTP refusal instead of the upgrade (a close before accept is a 403, as in uvicorn)."""
        self.status = status
        self.state = CLOSED
        body = b"%d %s\n" % (status, reason(status))
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        try:
            await self._write(RejectConnection(status_code=status, headers=headers, has_body=True))
            await self._write(RejectData(data=body))
        except OSError:
            pass

    async def _deny(self, message: dict[str, Any]) -> None:
        """The denial response extension: the app's own HTTP response instead of the upgrade."""
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 599:
            raise AppError(f"invalid status {status!r}")
        headers = asgi.encode_headers(message.get("headers", []))
        self.status = status
        self.state = CLOSING  # until the denial's body ends
        await self._write(RejectConnection(status_code=status, headers=headers, has_body=True))

    async def _close(self, code: int, reason: str) -> None:
        if self.state != OPEN:
            return
        self.state = CLOSING
        self._disconnect(code, reason)
        try:
            await self._write(CloseConnection(code=code, reason=reason))
        except OSError:
            self.closed.set()

    def going_away(self) -> None:
        """The worker stops: close with 1001 and tell the app."""
        if self.state == OPEN:
            asyncio.get_running_loop().create_task(self._close(1001, "server shutting down"))

    async def _write(self, event: Any) -> None:
        async with self.lock:
            data = self.ws.send(event)
            if data:
                await self.transport.send(data)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self.gone is None:
            self.gone = {"type": "websocket.disconnect", "code": code, "reason": reason}
            try:
                self.inbox.put_nowait(self.gone)
            except asyncio.QueueFull:
                pass  # receive() returns self.gone once the queue is empty

    # --- the client's side ---------------------------------------------------------------------

    async def _read(self) -> None:
        """Read frames until the close handshake or EOF; waits while the app's inbox is full."""
        try:
            while not self.closed.is_set():
                data = await self.transport.recv()
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, Message):
                        await self._message(event)
                    elif isinstance(event, Ping):
                        await self._write(event.response())
                    elif isinstance(event, Pong):
                        self.pong.set()
                    elif isinstance(event, CloseConnection):
                        if self.ws.state == ConnectionState.REMOTE_CLOSING:  # not at EOF, nor our close's answer
                            await self._write(event.response())
                        elif self.ws.state == ConnectionState.OPEN:  # wsproto found the client's frames bad
                            self.log_error(f"{self.where}: {event.reason} (closing, {event.code})")
                            await self._write(CloseConnection(code=event.code, reason=event.reason or ""))
                        self.state = CLOSED
                        self._disconnect(event.code, event.reason or "")
                        self.closed.set()
                if not data:
                    break
        except OSError:
            pass
        except Exception as exc:  # a protocol error wsproto raised: the client's fault
            self.log_error(f"{self.where}: {type(exc).__name__}: {exc}")
        self.state = CLOSED
        self._disconnect(1006)
        self.closed.set()

    async def _message(self, event: Any) -> None:
        self.parts.append(event.data)
        self.size += len(event.data)
        if self.size > self.options.max_size:
            self.log_error(f"{self.where}: message over --ws-max-size {self.options.max_size}, closing (1009)")
            await self._close(1009, "message too big")
            self.parts, self.size = [], 0
            return
        if not event.message_finished:
            return
        if isinstance(event, BytesMessage):
            message = {"type": "websocket.receive", "bytes": b"".join(self.parts)}
        else:
            message = {"type": "websocket.receive", "text": "".join(self.parts)}
        self.parts, self.size = [], 0
        if self.gone is None:
            await self.inbox.put(message)

    async def _ping(self) -> None:
        """Ping every --ws-ping-interval; close with 1011 when a pong is --ws-ping-timeout late."""
        options = self.options
        while self.state == OPEN:
            await asyncio.sleep(options.ping_interval)
            if self.state != OPEN:
                return
            self.pong.clear()
            try:
                await self._write(Ping(payload=os.urandom(4)))
            except OSError:
                return
            if not options.ping_timeout:
                continue
            try:
                await asyncio.wait_for(self.pong.wait(), options.ping_timeout)
            except TimeoutError:
                self.log_error(f"{self.where}: no pong within {options.ping_timeout:g}s (--ws-ping-timeout), "
                               "closing (1011)")
                await self._close(1011, "keepalive ping timeout")
                self.closed.set()
                return
