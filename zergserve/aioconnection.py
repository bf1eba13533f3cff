"""The event-loop driver: one accepted connection as an asyncio Protocol, moved by an Exchange.

The twin of connection.py (the blocking driver) for the asyncio worker. The transport calls
buffer_updated / eof_received / connection_lost; those feed the exchange (exchange.py) and act on
what it says, with no task, future or timer of their own. Only the app call runs as a task, one
per request. What the exchange did not ask for yet (a body the app has not read, a pipelined
request) waits in a buffer, and reading pauses while that buffer is over `_HIGH_WATER`; writes
wait while the transport's buffer is over its high-water mark (pause_writing / resume_writing),
paced as every driver's (pacing.py). One timer per connection serves every deadline and is moved
only when it fires early, so a kept-alive request costs no timer call. Reads go into one buffer
the worker's connections share (a BufferedProtocol), not a fresh 256 KiB bytes object per read,
whose allocation is an mmap, mremap and munmap once it is above malloc's mmap threshold.
"""

from __future__ import annotations

import asyncio
from math import inf
from typing import Any, Final

from zergserve import asgi, websocket
from zergserve.connection import HOLD_MOST, unsent
from zergserve.exchange import DRAIN, DRAIN_CAP, KEEP, LINGER, RECEIVE, Exchange, Reply
from zergserve.log import traceback_text
from zergserve.pacing import SendPace, monotonic
from zergserve.protocols.http import is_websocket_upgrade
from zergserve.vocabulary import RequestError

_HIGH_WATER = 65536  # bytes read ahead of the exchange before reading pauses
_READ_SIZE = 65536  # the most one read takes
_read_buffer = memoryview(bytearray(_READ_SIZE))  # every connection's reads land here, copied out at once
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20

# Where a connection stands: waiting for a request head, in a request (the app's task runs),
# discarding what the client still sends before closing, closed (flushing, or gone).
HEAD, REQUEST, LINGERING, CLOSED = range(4)


class HttpProtocol(asyncio.Protocol):
    """One HTTP or uwsgi connection of the asyncio worker.

    `hub` is the worker: ctx, app, lifespan, ws_options, websockets, server_of(listener),
    connection_done(protocol), log_error."""

    def __init__(self, hub: Any, listener: Any, peer: Any, slotted: bool) -> None:
        self.hub = hub
        self.loop = hub.loop
        self.listener = listener
        self.peer = peer
        self.slotted = slotted  # holds one of the --worker-connections slots
        self.transport: Any = None
        self.sock: Any = None
        self.ex: Exchange = Exchange(hub.ctx, listener, peer)
        self.state = HEAD
        self.inbuf = b""  # bytes read that the exchange has not asked for yet
        self.eof = False  # the client closed its side (or the connection is lost)
        self.eof_fed = False
        self.lost = False
        self.finished = False  # connection_done() was called
        self.read_paused = False
        self.write_paused = False
        self.written = 0  # bytes handed to the transport, for the send pace
        self.held = b""  # the end of a response, written when the worker's round is over (hold)
        self.pace: SendPace | None = None  # this response's, made at its first wait
        self.lingered = 0
        self.task: asyncio.Task | None = None
        self.read_waiter: asyncio.Future | None = None
        self.write_waiter: asyncio.Future | None = None
        self.gone_waiter: asyncio.Future | None = None
        self.read_until = inf  # monotonic deadlines; the timer fires at the earliest
        self.write_until = inf
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = inf

    # --- the transport's calls -----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        self.read_until = self.ex.deadline
        self._arm(self.read_until)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == HEAD:
            try:
                self.ex.receive_data(data)
            except Exception:
                self._failed()
                return
            self._advance()
        elif state == REQUEST:
            self.inbuf = self.inbuf + data if self.inbuf else data
            if len(self.inbuf) > _HIGH_WATER and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            self._wake_reader()
        elif state == LINGERING:
            self.lingered += len(data)
            if self.lingered >= _LINGER_BYTES:
                self._close()

    def eof_received(self) -> bool:
        self.eof = True
        if self.state == HEAD:
            self.eof_fed = True
            try:
                self.ex.receive_data(b"")
            except Exception:
                self._failed()
                return True
            self._advance()
        elif self.state == LINGERING:
            self._close()
        else:
            self._wake_reader()
            self._wake_gone()
        return True  # keep the transport open: the response may still have to go out

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = self.eof = True
        self.state = CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake_reader()
        self._wake_writer()
        self._wake_gone()
        if self.task is None:
            self._done()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # --- what the worker asks ------------------------------------------------------------------

    def close_idle(self) -> None:
        """A stop: a kept-alive connection waiting for its next request ends now."""
        if self.state == HEAD and self.ex.idle:
            self.eof_received()

    def drop(self) -> None:
        """The stop's mercy is over: drop the connection and the request in hand."""
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None:
            self.task.cancel()

    # --- the exchange's steps ------------------------------------------------------------------

    def _advance(self) -> None:
        """Do what the exchange says until it needs bytes that have not come, or a request runs."""
        ex = self.ex
        try:
            while True:
                action = ex.next_action()
                if action is RECEIVE:
                    if self.inbuf:
                        data, self.inbuf = self.inbuf, b""
                        ex.receive_data(data)
                        continue
                    if self.eof:
                        if self.eof_fed:
                            self._close()
                            return
                        self.eof_fed = True
                        ex.receive_data(b"")
                        continue
                    self.state = HEAD
                    if self.read_paused:
                        self.read_paused = False
                        self.transport.resume_reading()
                    self.read_until = ex.deadline
                    self._arm(ex.deadline)
                    return
                if type(action) is Reply:
                    self.release()
                    self.transport.write(action.data)
                    if action.linger:
                        self._linger()
                    else:
                        self._close()
                    return
                self.state = REQUEST
                self.read_until = inf
                self.task = self.loop.create_task(self._request())
                return
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.hub.log_error("connection failed:\n" + traceback_text())
        self._close()

    async def _request(self) -> None:
        """The task of one request: run the app, then go on with the connection as the exchange says."""
        ex, hub = self.ex, self.hub
        after = None
        try:
            server = hub.server_of(self.listener)
            state = hub.lifespan.state
            request = ex.request
            if ex.http and request is not None and request.upgrade and is_websocket_upgrade(request):
                await self._serve_websocket(websocket.scope(request, ex.peer, server, state))
            else:
                self.pace = None
                if ex.http:
                    scope = asgi.http_scope(ex.request, ex.peer, server, state)
                else:
                    scope = asgi.uwsgi_scope(ex.variables, server, state)
                ctx = ex.ctx
                response = await asgi.run(hub.app, scope, self._pull if ex.has_body else None, self,
                                          ctx.log_error, ctx.log_refusal)
                after = ex.after_response(response.status, response.sent)
                if after == DRAIN:
                    after = KEEP if await self._drain_body() else LINGER
        except asyncio.CancelledError:
            pass
        except Exception:
            hub.log_error("connection failed:\n" + traceback_text())
        finally:
            self.task = None
        if self.lost:
            self._done()
        elif after == KEEP and ex.next_request():
            self._advance()
        elif after == LINGER:
            self._linger()
        else:
            self._close()

    async def _serve_websocket(self, scope: dict[str, Any]) -> None:
        """One WebSocket session on this connection, which closes after it (websocket.py)."""
        ex, hub = self.ex, self.hub
        session = websocket.Session(hub.app, scope, _WebSocketIO(self), hub.ws_options, hub.log_error)
        hub.websockets.add(session)
        hub.row.set_websockets(len(hub.websockets))
        status = 0
        try:
            status = await session.run(websocket.request_head(ex.request) + ex.h.trailing())
        finally:
            hub.websockets.discard(session)
            hub.row.set_websockets(len(hub.websockets))
            ex.after_response(status or 499, session.sent)

    def _linger(self) -> None:
        """Half-close and discard what the client still sends, so our reply is not lost to a RST."""
        if self.lost:
            return
        if self.eof:
            self._close()
            return
        self.state = LINGERING
        self.lingered = len(self.inbuf)
        self.inbuf = b""
        self.release()
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self._close()
            return
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.read_until = monotonic() + _LINGER_SECONDS
        self._arm(self.read_until)

    def _close(self) -> None:
        """Close once what was written is out; a client that takes none of it within
        --socket-timeout is dropped."""
        if self.state == CLOSED:
            return
        self.release()
        self.state = CLOSED
        self.read_until = inf
        self.transport.close()
        if not self.lost and self.transport.get_write_buffer_size():
            self.write_until = monotonic() + self.hub.ctx.socket_timeout
            self._arm(self.write_until)

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self.hub.connection_done(self)

    # --- reading for the app -------------------------------------------------------------------

    async def _pull(self) -> bytes:
        """The next piece of the request body (asgi.Pull)."""
        ex = self.ex
        interim = ex.interim()
        if interim:
            await self._write(interim)
        while True:
            piece = ex.body_next()
            if isinstance(piece, bytes):
                return piece
            if self.inbuf:
                data, self.inbuf = self.inbuf, b""
                self._resume_reading()
                ex.body_data(data)
            elif self.eof:
                ex.body_data(b"")
            elif not await self._wait_read(piece):
                ex.body_stalled()

    async def _drain_body(self) -> bool:
        """Read what the app left of the body so the next request can be parsed; give up past the cap."""
        total = 0
        try:
            while chunk := await self._pull():
                total += len(chunk)
                if total > DRAIN_CAP:
                    return False
        except (OSError, RequestError):
            return False
        return True

    async def _recv(self) -> bytes:
        """Whatever came next (b'' at EOF): a WebSocket's bytes."""
        while not self.inbuf:
            if self.eof:
                return b""
            await self._wait_read(inf)
        data, self.inbuf = self.inbuf, b""
        self._resume_reading()
        return data

    def _resume_reading(self) -> None:
        if self.read_paused and not self.lost:
            self.read_paused = False
            self.transport.resume_reading()

    async def _wait_read(self, seconds: float) -> bool:
        """Wait for bytes or EOF; False when `seconds` passed first."""
        waiter = self.read_waiter = self.loop.create_future()
        if seconds != inf:
            self.read_until = monotonic() + seconds
            self._arm(self.read_until)
        try:
            return await waiter
        finally:
            self.read_waiter = None
            self.read_until = inf

    def _wake_reader(self, value: bool = True) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    # --- writing (asgi.Sink) -------------------------------------------------------------------

    def _put(self, data: bytes, last: bool = False) -> bool:
        """Hand `data` to the transport; True when the writer must wait (drain) before more.

        The last bytes of a response on a connection kept alive, up to HOLD_MOST, are held until
        the loop has run what was ready (the worker's hold), as the gevent worker's Outbox holds
        them (connection.py says why); anything else written on the connection goes after them.
        Not while the transport is full: that response is written and waited for (drain), so a
        client that pipelines requests and reads none meets the send pace."""
        if self.lost:
            raise ConnectionResetError("client gone")
        self.written += len(data)
        if last and not self.write_paused and len(self.held) + len(data) <= HOLD_MOST and not self.ex.closes_after():
            if not self.held:
                self.hub.hold(self)
            self.held += data
            return False
        self.release()
        self.transport.write(data)
        return self.write_paused

    def release(self) -> None:
        """Write what is held for this connection now."""
        held = self.held
        if held:
            self.held = b""
            if not self.lost:
                self.transport.write(held)

    async def _write(self, data: bytes) -> None:
        if self._put(data):
            await self.drain()

    async def drain(self) -> None:
        """Wait until the transport takes more, or raise once the client reads slower than the pace."""
        pace = self.pace
        if pace is None:
            pace = self.pace = self.hub.ctx.pace()
        transport = self.transport
        while self.write_paused and not self.lost:
            pace.accepted = self.written - transport.get_write_buffer_size()
            started = monotonic()
            await self._wait_write(pace.wait(unsent(self.sock)))
            pace.accepted = self.written - transport.get_write_buffer_size()
            pace.waited(monotonic() - started, unsent(self.sock))
        if self.lost:
            raise ConnectionResetError("client gone")

    async def _wait_write(self, seconds: float) -> None:
        waiter = self.write_waiter
        if waiter is None or waiter.done():
            waiter = self.write_waiter = self.loop.create_future()
        deadline = monotonic() + seconds
        if deadline < self.write_until:
            self.write_until = deadline
            self._arm(deadline)
        await waiter

    def _wake_writer(self) -> None:
        waiter = self.write_waiter
        if waiter is not None:
            self.write_waiter = None
            self.write_until = inf
            if not waiter.done():
                waiter.set_result(None)

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes, last: bool) -> bool:
        return self._put(self.ex.head(status, reason, headers, body, last), last)

    def body(self, data: bytes, last: bool) -> bool:
        framed = self.ex.data(data, last)
        return self._put(framed, last) if framed else False

    def abort(self) -> None:
        self.ex.abort()

    async def closed(self) -> None:
        """Return once the client left: EOF with nothing pipelined before it, or a lost connection.
        A pipelined request means the client is there, waiting for this response."""
        while not (self.lost or (self.eof and not self.inbuf)):
            waiter = self.gone_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.gone_waiter = None

    def unwatch(self) -> None:
        waiter = self.gone_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def _wake_gone(self) -> None:
        waiter = self.gone_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the one timer -------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        """Make the timer fire no later than `deadline` (monotonic)."""
        if deadline < self.timer_at or self.timer is None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = self.loop.call_later(max(deadline - monotonic(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = inf
        now = monotonic()
        if self.read_until <= now:
            self.read_until = inf
            self._read_expired()
        if self.write_until <= now:
            self.write_until = inf
            self._write_expired()
        self._rearm()

    def _rearm(self) -> None:
        """After the timer fired: armed again for the deadlines left, unless what the timer did
        armed it. (A method of its own: in _on_timer, mypy would take `self.timer` for the None it
        set there, and mypyc would check that it still is.)"""
        soonest = min(self.read_until, self.write_until)
        if soonest != inf and self.timer is None:
            self._arm(soonest)

    def _read_expired(self) -> None:
        state = self.state
        if state == HEAD:
            self.ex.timed_out()
            self._advance()
        elif state == LINGERING:
            self._close()
        else:
            self._wake_reader(False)

    def _write_expired(self) -> None:
        if self.state == CLOSED:
            self.transport.abort()  # the last bytes never left: --socket-timeout
        else:
            self._wake_writer()


class BufferedHttpProtocol(HttpProtocol, asyncio.BufferedProtocol):
    """HttpProtocol reading into the shared buffer: asyncio's own loop allocates a fresh bytes
    object of 256 KiB per read for a plain Protocol. uvloop reads into a buffer of its own, and
    calling two methods per read instead of one costs more there, so it gets the plain one."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_read_buffer[:nbytes]))


class _WebSocketIO:
    """A WebSocket session's reads and writes on the connection (websocket.Transport)."""

    __slots__ = ("conn",)

    def __init__(self, conn: HttpProtocol) -> None:
        self.conn = conn

    async def recv(self) -> bytes:
        return await self.conn._recv()

    async def send(self, data: bytes) -> None:
        await self.conn._write(data)
