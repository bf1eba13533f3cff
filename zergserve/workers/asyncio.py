"""The asyncio worker: ASGI apps on one event loop per process, many connections at once.

It speaks both protocols through the same sans-I/O exchange as the other workers (HTTP/1.1 with
keep-alive and pipelining, or one uwsgi packet per connection); only the reads and writes are
coroutines here. The app's lifespan startup runs before the worker says it is ready, its
shutdown after the last connection closed. Signals only set the base worker's flags; the wake-up
pipe, watched by the loop, makes it look at them at once (a quick stop while a coroutine blocks
the loop is raised where it runs: base.QuickStop). The scoreboard row is shared by the
requests in flight, as in the gevent worker (base.SharedRow).
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
import traceback
from typing import Any

from zergserve import app as app_loader
from zergserve import asgi, connection, websocket
from zergserve.exchange import DRAIN, DRAIN_CAP, KEEP, LINGER, RECV, RECEIVE, Exchange, Reply
from zergserve.log import logger
from zergserve.pacing import SendPace
from zergserve.scoreboard import IDLE, PAUSED
from zergserve.protocols.http import is_websocket_upgrade
from zergserve.sockets import Listener
from zergserve.workers.base import SharedRow, Worker, tick_interval
from zergserve.wsgi import RequestError

_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20


class AsyncioWorker(Worker):
    """Up to --worker-connections connections at once per process, for ASGI apps."""

    keep_alive = True

    def boot(self) -> None:
        super().boot()
        self.ctx.row = SharedRow(self.row, self)
        cfg = self.cfg
        self.ctx.websocket_refusal = "--ws none" if cfg.ws == "none" else websocket.available()
        if self.ctx.websocket_refusal and cfg.ws == "wsproto":
            raise app_loader.AppLoadError(f"--ws wsproto: {self.ctx.websocket_refusal}")
        self.ws_options = websocket.Options(cfg.ws_max_size, cfg.ws_ping_interval, cfg.ws_ping_timeout,
                                            cfg.ws_per_message_deflate)
        self.websockets: set[websocket.Session] = set()  # open ones, for the stats and a stop's 1001
        self.selector = _WatchedSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)  # type: ignore[arg-type]
        asyncio.set_event_loop(self.loop)
        self.lifespan = asgi.Lifespan(self.app, lambda text: logger.info("worker %d: %s", self.wid, text),
                                      self.log_error, self.cfg.lifespan, self.cfg.lifespan_timeout)
        try:
            self.loop.run_until_complete(self.lifespan.startup())
        except asgi.LifespanFailed as exc:
            raise app_loader.AppLoadError(f"ASGI lifespan startup failed: {exc}") from None
        self.active = 0  # connections holding one of the --worker-connections slots
        self.room = asyncio.Event()  # set while active < --worker-connections
        self.room.set()
        self.tasks: set[asyncio.Task] = set()
        self.woke = asyncio.Event()

    def inside_app(self) -> bool:
        """The loop runs the app's code unless it waits in its selector: an app that blocks the
        loop (a sync call in a coroutine) would not let it see the wake-up pipe."""
        return self.in_app or not self.selector.waiting

    def serve_forever(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        loop = self.loop
        loop.add_reader(self.wake_r, self._on_wakeup)
        self._tick()
        acceptors: list[asyncio.Task] = []
        while not self.done():
            if self.pause_changed():
                if self.pause_applied:
                    _cancel(acceptors)
                    acceptors = []
                    self.row.set_status(PAUSED)
                else:
                    acceptors = [loop.create_task(self._accept_forever(listener)) for listener in self.listeners]
                    if not self.ctx.row.inflight:
                        self.row.set_status(IDLE)
            try:
                await asyncio.wait_for(self.woke.wait(), 1.0)  # done() also looks at orphaning, max-requests
            except TimeoutError:
                pass
            self.woke.clear()
        _cancel(acceptors)
        await asyncio.sleep(0)  # let the acceptors unregister from the loop
        if self.orphan:
            super().release_listeners()
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        self.close_idle()
        for session in list(self.websockets):
            session.going_away()
        self.drain_queue(lambda conn, peer, listener: self._spawn(conn, peer, listener, slotted=False))
        pending = await self._join(self.cfg.worker_reload_mercy)
        if pending:
            logger.error("worker %d: %d connections still open after %ds, closing them",
                         self.wid, len(pending), self.cfg.worker_reload_mercy)
            _cancel(pending)
        loop.remove_reader(self.wake_r)
        await self.lifespan.shutdown()

    async def _join(self, seconds: float) -> set[asyncio.Task]:
        """Wait up to `seconds` for the connections' tasks; a quick stop meanwhile leaves at once
        (check_quit raises). Returns the tasks still running."""
        deadline = time.monotonic() + seconds
        while self.tasks and (left := deadline - time.monotonic()) > 0:
            self.woke.clear()
            woke = self.loop.create_task(self.woke.wait())
            await asyncio.wait({*self.tasks, woke}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            woke.cancel()
            self.check_quit()
        return set(self.tasks)

    def _tick(self) -> None:
        """The loop's heartbeat, from a timer: it stops only when the loop itself is stuck, which
        is what --harakiri measures for this worker (workers.LOOP_TICKS)."""
        self.row.heartbeat()
        self.loop.call_later(tick_interval(self.cfg), self._tick)

    def _on_wakeup(self) -> None:
        self.drain_wakeups()
        self.woke.set()

    def release_listeners(self) -> None:
        """Done by _serve once the acceptors stopped watching the sockets."""

    async def _accept_forever(self, listener: Listener) -> None:
        """Accept on one listener while a connection slot is free; a task per connection.

        A slot is taken only together with a connection (no await between the check and the
        accept): an acceptor waiting on a quiet listener holds none, and above the cap the excess
        stays in the kernel's backlog, where another worker may take it.
        """
        sock = listener.sock
        while True:
            await self.room.wait()
            await self._readable(sock)
            if self.active >= self.cfg.worker_connections:
                continue  # another listener's acceptor took the last slot meanwhile
            try:
                conn, peer = sock.accept()
            except OSError as exc:
                backoff = self.accept_error(exc, listener)
                if backoff:
                    await asyncio.sleep(backoff)
                continue
            self._spawn(conn, peer, listener)

    async def _readable(self, sock: socket.socket) -> None:
        ready = self.loop.create_future()
        self.loop.add_reader(sock, ready.set_result, None)
        try:
            await ready
        finally:
            self.loop.remove_reader(sock)

    def _spawn(self, conn: socket.socket, peer: Any, listener: Listener, slotted: bool = True) -> None:
        """A task for the connection; `slotted` when it takes one of the --worker-connections slots."""
        task = self.loop.create_task(self._serve_connection(conn, peer, listener))
        self.tasks.add(task)
        if slotted:
            self.active += 1
            if self.active >= self.cfg.worker_connections:
                self.room.clear()
        task.add_done_callback(self._connection_done if slotted else self.tasks.discard)

    def _connection_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.active -= 1
        self.room.set()

    async def _serve_connection(self, conn: socket.socket, peer: Any, listener: Listener) -> None:
        """Serve one connection until it is done, as the exchange says; never raises for anything
        a client sends (the blocking twin is connection.serve)."""
        ctx = self.ctx
        try:
            conn.setblocking(False)
            ex = Exchange(ctx, listener, peer, conn)
            while True:
                action = ex.next_action()
                if action is RECEIVE:
                    try:
                        data = await self._recv(conn, RECV, ex.deadline)
                    except TimeoutError:
                        ex.timed_out()
                    else:
                        ex.receive_data(data)
                elif isinstance(action, Reply):
                    await self._send_all(conn, action.data, ctx.pace())
                    if action.linger:
                        await self._linger_close(conn)
                    return
                elif not await self._serve_request(conn, listener, ex):
                    return
        except (OSError, asyncio.CancelledError):
            pass
        except Exception:
            self.log_error("connection failed:\n" + traceback.format_exc().rstrip())
        finally:
            conn.close()

    async def _serve_request(self, conn: socket.socket, listener: Listener, ex: Exchange) -> bool:
        """Run the app for one request; False when the connection must close afterwards."""
        server, state = listener.server_name_port(), self.lifespan.state
        if ex.http and is_websocket_upgrade(ex.request):
            await self._serve_websocket(conn, ex, websocket.scope(ex.request, ex.peer, server, state))
            return False
        body = _Body(self, conn, ex)
        if ex.http:
            scope = asgi.http_scope(ex.request, ex.peer, server, state)
        else:
            scope = asgi.uwsgi_scope(ex.variables, server, state)
        response = await asgi.run(self.app, scope, body.pull if ex.has_body else None, _Sink(self, conn, ex),
                                  self.ctx.log_error, self.ctx.log_refusal)
        after = ex.after_response(response.status, response.sent)
        if after == DRAIN:
            after = KEEP if await body.drain() else LINGER
        if after == LINGER:
            await self._linger_close(conn)
        return after == KEEP and ex.next_request()

    async def _serve_websocket(self, conn: socket.socket, ex: Exchange, scope: dict[str, Any]) -> None:
        """One WebSocket session on this connection, which closes after it (websocket.py)."""
        transport = _Transport(self, conn, ex)
        session = websocket.Session(self.app, scope, transport, self.ws_options, self.log_error)
        self.websockets.add(session)
        self.row.set_websockets(len(self.websockets))
        status = 0
        try:
            status = await session.run(websocket.request_head(ex.request) + ex.h.trailing())
        finally:
            transport.close()
            self.websockets.discard(session)
            self.row.set_websockets(len(self.websockets))
            ex.after_response(status or 499, session.sent)

    # --- socket calls --------------------------------------------------------------------------

    async def _recv(self, conn: socket.socket, size: int, deadline: float) -> bytes:
        """recv() bounded by an absolute deadline (TimeoutError past it)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return await asyncio.wait_for(self.loop.sock_recv(conn, size), left)

    async def _send_all(self, conn: socket.socket, data: bytes, pace: SendPace) -> None:
        """Send everything, or raise TimeoutError once the client reads slower than the pace
        allows (connection.sending says when to wait and for how long)."""
        for wait in connection.sending(conn, data, pace):
            ready = self.loop.create_future()
            self.loop.add_writer(conn, ready.set_result, None)
            try:
                await asyncio.wait_for(ready, wait)
            except TimeoutError:
                pass
            finally:
                self.loop.remove_writer(conn)

    async def _linger_close(self, conn: socket.socket) -> None:
        """Half-close and discard what the client still sends, so our reply is not lost to a RST."""
        try:
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            total = 0
            while total < _LINGER_BYTES:
                data = await self._recv(conn, RECV, deadline)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass


class _WatchedSelector:
    """The loop's selector (the default one, wrapped), saying whether the loop waits in it: what a
    signal handler interrupts then is the loop's own wait, not the app."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.waiting = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.waiting = True
        try:
            return self.selector.select(timeout)
        finally:
            self.waiting = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.selector, name)


class _Body:
    """The request body as the ASGI adapter pulls it: the exchange's pieces, read as it asks."""

    __slots__ = ("worker", "conn", "ex")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, ex: Exchange) -> None:
        self.worker = worker
        self.conn = conn
        self.ex = ex

    async def pull(self) -> bytes:
        ex = self.ex
        interim = ex.interim()
        if interim:
            await self.worker._send_all(self.conn, interim, ex.ctx.pace())
        while True:
            piece = ex.body_next()
            if type(piece) is bytes:
                return piece
            try:
                data = await self.worker._recv(self.conn, ex.want, time.monotonic() + piece)
            except TimeoutError:
                ex.body_stalled()
            ex.body_data(data)

    async def drain(self) -> bool:
        """Read what the app left of the body so the next request can be parsed; give up past the cap."""
        total = 0
        try:
            while chunk := await self.pull():
                total += len(chunk)
                if total > DRAIN_CAP:
                    return False
        except (OSError, RequestError):
            return False
        return True


class _Sink:
    """Puts the exchange's response bytes on the socket (asgi.Sink). Each write waits until the
    kernel took the bytes, so an app that streams to a slow reader waits with it (flow control)."""

    __slots__ = ("worker", "conn", "ex", "pace", "watch")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, ex: Exchange) -> None:
        self.worker = worker
        self.conn = conn
        self.ex = ex
        self.pace = ex.ctx.pace()
        self.watch: asyncio.Future | None = None  # closed()'s wait for the socket to be readable

    async def closed(self) -> None:
        """Return at the client's EOF (or a reset). Bytes that arrive first are a pipelined request,
        left for the exchange: the client is there, and this waits until cancelled."""
        loop = self.worker.loop
        while True:
            self.watch = watch = loop.create_future()
            loop.add_reader(self.conn, _wake, watch)
            try:
                await watch
            finally:
                if self.watch is watch:
                    self.unwatch()
            try:
                data = self.conn.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            await loop.create_future()

    def unwatch(self) -> None:
        if self.watch is not None:
            self.worker.loop.remove_reader(self.conn)
            self.watch.cancel()
            self.watch = None

    async def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await self.worker._send_all(self.conn, self.ex.head(status, reason, headers, body), self.pace)

    async def send_body(self, data: bytes) -> None:
        framed = self.ex.data(data)
        if framed:
            await self.worker._send_all(self.conn, framed, self.pace)

    async def finish(self) -> None:
        end = self.ex.end()
        if end:
            await self.worker._send_all(self.conn, end, self.pace)

    def abort(self) -> None:
        self.ex.abort()


class _Transport:
    """A WebSocket session's reads and writes on the socket (websocket.Transport).

    The socket stays registered with the loop between reads (loop.sock_recv registers and
    unregisters it for each wait, two epoll_ctl calls per message); it is unregistered only when
    it turns readable while nobody reads, so a session that pauses (a full inbox) costs no wake-ups."""

    __slots__ = ("worker", "conn", "pace", "waiter", "registered")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, ex: Exchange) -> None:
        self.worker = worker
        self.conn = conn
        self.pace = ex.ctx.pace()
        self.waiter: asyncio.Future | None = None
        self.registered = False

    async def recv(self) -> bytes:
        while True:
            try:
                return self.conn.recv(RECV)
            except (BlockingIOError, InterruptedError):
                pass
            if not self.registered:
                self.worker.loop.add_reader(self.conn, self._readable)
                self.registered = True
            self.waiter = self.worker.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _readable(self) -> None:
        if self.waiter is None:
            self.close()
        elif not self.waiter.done():
            self.waiter.set_result(None)

    def close(self) -> None:
        if self.registered:
            self.worker.loop.remove_reader(self.conn)
            self.registered = False

    async def send(self, data: bytes) -> None:
        await self.worker._send_all(self.conn, data, self.pace)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _cancel(tasks: Any) -> None:
    for task in list(tasks):
        task.cancel()
