"""The asyncio worker: ASGI apps on one event loop per process, many connections at once.

It speaks both protocols through the same sans-I/O exchange as the other workers (HTTP/1.1 with
keep-alive and pipelining, or one uwsgi packet per connection); each connection is an asyncio
Protocol (aioconnection.py) fed by its transport, and only the app call runs as a task. The loop is
asyncio's or uvloop's (`--loop`, loops.py). Accepting is this worker's own (a reader on each
listening socket, one connection per wake-up), so it stops at --worker-connections and while
paused, leaving the excess in the kernel's backlog for the other workers. The app's lifespan
startup runs before the worker says it is ready, its shutdown after the last connection closed.
Signals only set the base worker's flags and write the wake-up pipe, which the loop watches. The
scoreboard row is shared by the requests in flight, as in the gevent worker (scoreboard.SharedRow).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any, Callable

from zergserve import app as app_loader
from zergserve import asgi, loops, websocket
from zergserve.aioconnection import BufferedHttpProtocol, HttpProtocol
from zergserve.log import logger
from zergserve.scoreboard import IDLE, PAUSED, SharedRow
from zergserve.sockets import Listener
from zergserve.workers.base import DEFER_MOST, DEFER_STEP, WORKER_SIGNALS, Worker, queued, tick_interval


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
        self.loop = loops.new_loop(cfg.loop)
        self.protocol = HttpProtocol if loops.resolve(cfg.loop) == "uvloop" else BufferedHttpProtocol
        asyncio.set_event_loop(self.loop)
        self._wake_on_signals()
        self.loop.run_until_complete(self._first_stream())
        self.lifespan = asgi.Lifespan(self.ctx.app, lambda text: logger.info("worker %d: %s", self.wid, text),
                                      self.log_error, self.cfg.lifespan, self.cfg.lifespan_timeout)
        try:
            self.loop.run_until_complete(self.lifespan.startup())
        except asgi.LifespanFailed as exc:
            raise app_loader.AppLoadError(f"ASGI lifespan startup failed: {exc}") from None
        self.active = 0  # connections holding one of the --worker-connections slots
        self.connections: set[HttpProtocol] = set()  # every open one, slotted or drained on a stop
        self.held: list[HttpProtocol] = []  # connections holding the end of a response (hold)
        self.accepting = False  # readers are on the listening sockets
        self.serving = False  # accepting is wanted (neither paused nor stopping)
        self.backoff = False  # out of descriptors or memory: accepting waits a moment
        self.deferring = False  # over its share of connections: accepting waits for the others (over_share)
        self.emptied: asyncio.Future | None = None  # a stop's wait for the last connection
        self.servers: dict[int, tuple[str, str]] = {}  # per listener, its name and port for scopes
        self.woke = asyncio.Event()

    def _wake_on_signals(self) -> None:
        """uvloop points signal.set_wakeup_fd at its own socket while it runs, so the handlers
        write the worker's wake-up pipe themselves (on asyncio's loop that is one byte more)."""
        for signum in (*WORKER_SIGNALS, signal.SIGIO):
            handler = signal.getsignal(signum)
            if callable(handler):
                signal.signal(signum, self._waking(handler))

    async def _first_stream(self) -> None:
        """Open and close one transport before serving: libuv (uvloop) reserves a descriptor at
        its first stream, for its EMFILE recovery, and it belongs to the worker's steady count of
        descriptors from the start, not to the first client's."""
        ours, theirs = socket.socketpair()
        with theirs:
            transport, _ = await self.loop.connect_accepted_socket(asyncio.Protocol, ours)
            transport.close()
            await asyncio.sleep(0)

    def _waking(self, handler: Callable) -> Callable:
        def wrapped(signum: int, frame: Any) -> None:
            try:
                os.write(self.wake_w, b"\0")  # first: a quick stop's handler may raise
            except OSError:
                pass
            handler(signum, frame)
        return wrapped

    def inside_app(self) -> bool:
        """With a request in flight the main thread may be in the app's code, which can block the
        loop (a sync call in a coroutine): a quick stop is raised where it runs. Where that is the
        loop's own code, the loop logs it and the wake-up byte written first ends it (done())."""
        return self.in_app or bool(self.ctx.row.inflight)

    def serve_forever(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        loop = self.loop
        loop.add_reader(self.wake_r, self._on_wakeup)
        self._tick()
        while not self.done():
            changed = self.pause_changed()
            self.serving = not self.pause_applied
            self._watch_listeners()  # before the row says paused: no accept after that
            if changed:
                if self.pause_applied:
                    self.row.set_status(PAUSED)
                elif not self.ctx.row.inflight:
                    self.row.set_status(IDLE)
            try:
                await asyncio.wait_for(self.woke.wait(), 1.0)  # done() also looks at orphaning, max-requests
            except TimeoutError:
                pass
            self.woke.clear()
        self.serving = False
        self._watch_listeners()
        if self.orphan:
            super().release_listeners()
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        self.close_idle()
        for session in list(self.websockets):
            session.going_away()
        self.drain_queue(lambda conn, peer, listener: self._spawn(conn, peer, listener, slotted=False))
        if self.connections:
            self.emptied = loop.create_future()
            if not await self._join(self.emptied, self.cfg.worker_reload_mercy):
                logger.error("worker %d: %d connections still open after %ds, closing them",
                             self.wid, len(self.connections), self.cfg.worker_reload_mercy)
                for conn in list(self.connections):
                    conn.drop()
                await asyncio.sleep(0)  # let the cancelled requests unwind
        loop.remove_reader(self.wake_r)
        await self.lifespan.shutdown()

    async def _join(self, emptied: asyncio.Future, seconds: float) -> bool:
        """Wait up to `seconds` for the last connection to close; a quick stop meanwhile leaves at
        once (check_quit raises). True when they all closed."""
        deadline = time.monotonic() + seconds
        while not emptied.done() and (left := deadline - time.monotonic()) > 0:
            self.woke.clear()
            woke = self.loop.create_task(self.woke.wait())
            await asyncio.wait({emptied, woke}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            woke.cancel()
            self.check_quit()
        return emptied.done()

    def _tick(self) -> None:
        """The loop's heartbeat, from a timer: it stops only when the loop itself is stuck, which
        is what --harakiri measures for this worker (workers.LOOP_TICKS)."""
        self.row.heartbeat()
        self.loop.call_later(tick_interval(self.cfg), self._tick)

    def _on_wakeup(self) -> None:
        self.drain_wakeups()
        self.woke.set()

    def release_listeners(self) -> None:
        """Done by _serve once the loop stopped watching the sockets."""

    def close_idle(self) -> None:
        """On a stop: every kept-alive connection between requests closes now (each knows whether
        it is one: a set of them kept up to date would cost every request)."""
        for conn in list(self.connections):
            conn.close_idle()

    # --- accepting -----------------------------------------------------------------------------

    def _watch_listeners(self) -> None:
        """Readers on the listening sockets while serving with a slot free, none otherwise."""
        want = (self.serving and not self.backoff and not self.deferring
                and self.active < self.cfg.worker_connections)
        if want == self.accepting:
            return
        self.accepting = want
        for listener in self.listeners:
            if want:
                self.loop.add_reader(listener.sock, self._accept, listener)
            else:
                self.loop.remove_reader(listener.sock)

    def _accept(self, listener: Listener, deadline: float = 0.0) -> None:
        """One connection per wake-up: a queue of many is shared with the other workers. A worker
        over its share leaves it to them, looking again every DEFER_STEP until DEFER_MOST has passed
        (`deadline`) or it is taken."""
        if self.over_share(self.active):
            now = time.monotonic()
            deadline = deadline or now + DEFER_MOST
            if now < deadline:
                self.deferring = True
                self._watch_listeners()
                self.loop.call_later(DEFER_STEP, self._after_deferring, listener, deadline)
                return
        try:
            conn, peer = listener.sock.accept()
        except OSError as exc:
            backoff = self.accept_error(exc, listener)
            if backoff:
                self.backoff = True
                self._watch_listeners()
                self.loop.call_later(backoff, self._end_backoff)
            return
        self._spawn(conn, peer, listener)

    def _after_deferring(self, listener: Listener, deadline: float) -> None:
        """A look after DEFER_STEP: the readers back on if the worker may accept, and what is still
        queued taken or left again, within the same `deadline`."""
        self.deferring = False
        self._watch_listeners()
        if self.accepting and queued(listener.fileno()):
            self._accept(listener, deadline)

    def _end_backoff(self) -> None:
        self.backoff = False
        self._watch_listeners()

    def _spawn(self, conn: socket.socket, peer: Any, listener: Listener, slotted: bool = True) -> None:
        """Hand the socket to the loop as a transport with its protocol; `slotted` when it takes
        one of the --worker-connections slots."""
        protocol = self.protocol(self, listener, peer, slotted)
        self.connections.add(protocol)
        if slotted:
            self.active += 1
            self.row.set_connections(self.active)
            self._watch_listeners()
        self.loop.create_task(self._attach(protocol, conn))

    async def _attach(self, protocol: HttpProtocol, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()
            self.connection_done(protocol)

    def connection_done(self, protocol: HttpProtocol) -> None:
        """A connection closed and its request, if any, ended: its slot is free."""
        self.connections.discard(protocol)
        if protocol.slotted:
            self.active -= 1
            self.row.set_connections(self.active)
            self._watch_listeners()
        if not self.connections and self.emptied is not None and not self.emptied.done():
            self.emptied.set_result(None)

    def hold(self, protocol: HttpProtocol) -> None:
        """`protocol` holds the end of a response: write it, and every other connection's, once
        the loop has run what is ready now (call_soon runs in its next round)."""
        self.held.append(protocol)
        if len(self.held) == 1:
            self.loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        held, self.held = self.held, []
        for protocol in held:
            protocol.release()

    def server_of(self, listener: Listener) -> tuple[str, str]:
        """The listener's name and port for the scope, asked of the kernel once."""
        server = self.servers.get(id(listener))
        if server is None:
            server = self.servers[id(listener)] = listener.server_name_port()
        return server
