"""The gevent worker: many connections per process, each served by a greenlet of its own.

For what a blocking worker cannot do: HTTP keep-alive and pipelining, slow clients, long polls,
streaming responses and apps that wait on the network. The connection code is the sync worker's,
on the same C sockets; only its waits go to the hub (connection.use_wait). `monkey.patch_all()` in
the forked worker makes the app's own sockets, sleeps and locks cooperative. The patch happens in
the worker only (the master never runs gevent), after the fork:
an app the master loaded before it (the default; --lazy-apps loads in each worker) keeps any
socket or lock it made at import unpatched, as with gunicorn's gevent worker.

One scoreboard row stands for many requests: it is busy while any request is in flight, and its
request start moves on each time one finishes. A greenlet ticks the row's heartbeat, and --harakiri
kills a worker whose hub has not ticked for N seconds while busy (stuck in CPU or in an unpatched
blocking call), never one whose requests only wait.
"""

from __future__ import annotations

import _socket
import os
import time
from typing import Any, Callable, Final

from zergserve import connection
from zergserve.log import logger
from zergserve.scoreboard import IDLE, PAUSED, SharedRow
from zergserve.sockets import Listener
from zergserve.workers.base import DEFER_MOST, DEFER_STEP, QuickStop, Worker, queued, tick_interval



class GeventWorker(Worker):
    """Up to --worker-connections connections at once per process."""

    keep_alive = True

    def boot(self) -> None:
        import gevent
        from gevent import monkey
        monkey.patch_all()
        super().boot()  # before the hub exists: gevent's os.close() defers closing fds it may watch
        self.hub = hub = gevent.get_hub()
        # QuickStop raised in a request's greenlet (see inside_app) goes to the main greenlet, which
        # leaves the loop, and is no error to print.
        hub.SYSTEM_ERROR = (*hub.SYSTEM_ERROR, QuickStop)
        hub.NOT_ERROR = (*hub.NOT_ERROR, QuickStop)
        self.ctx.row = SharedRow(self.row, self)
        self.connections = 0
        connection.use_wait(_hub_wait())
        # A recv that finds the bytes there does not yield: a fast client's connection would be
        # served again and again while the worker's other connections wait (connection.resume).
        self.ctx.turn = gevent.sleep
        connection.use_outbox(connection.Outbox(hub.loop.run_callback, gevent.spawn, self.ctx.log_refusal))

    def inside_app(self) -> bool:
        """Handlers run in whichever greenlet holds the main thread: a request's greenlet means the
        hub is not running (the app computes, or blocks in a call gevent did not patch), so the
        wake-up pipe would not be looked at before it yields."""
        import gevent
        return self.in_app or gevent.getcurrent() not in (self.hub, self.hub.parent)

    def serve_forever(self) -> None:
        import gevent
        from gevent.pool import Pool
        from gevent.socket import wait_read

        pool = Pool(self.cfg.worker_connections)
        acceptors: list[Any] = []
        ticker = gevent.spawn(self._tick)
        while not self.done():
            if self.pause_changed():
                if self.pause_applied:
                    gevent.killall(acceptors)
                    acceptors = []
                    self.row.set_status(PAUSED)
                else:
                    acceptors = [gevent.spawn(self._accept_forever, listener, pool) for listener in self.listeners]
                    if not self.ctx.row.inflight:
                        self.row.set_status(IDLE)
            try:
                wait_read(self.wake_r, timeout=1.0, timeout_exc=TimeoutError)  # done() also looks at orphaning, QUIT
                self.drain_wakeups()
            except TimeoutError:
                pass
        gevent.killall(acceptors)
        if self.orphan:
            super().release_listeners()
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        self.close_idle()
        self.drain_queue(lambda conn, peer, listener: pool.spawn(connection.serve, _c_socket(conn), peer, listener,
                                                                 self.ctx))
        if not self._join(pool, self.cfg.worker_reload_mercy):
            logger.error("worker %d: %d connections still open after %ds, closing them",
                         self.wid, len(pool), self.cfg.worker_reload_mercy)
        ticker.kill()

    def _join(self, pool: Any, seconds: float) -> bool:
        """Wait up to `seconds` for the pool's connections to end; a quick stop meanwhile leaves at
        once (the wake-up pipe wakes this wait, check_quit raises). True if they all ended."""
        import gevent
        from gevent.socket import wait_read

        def joined() -> None:
            pool.join()
            try:
                os.write(self.wake_w, b"j")
            except OSError:
                pass  # full: this wait is being woken already

        joiner = gevent.spawn(joined)
        deadline = time.monotonic() + seconds
        try:
            while not joiner.dead and (left := deadline - time.monotonic()) > 0:
                try:
                    wait_read(self.wake_r, timeout=left, timeout_exc=TimeoutError)
                except TimeoutError:
                    break
                self.drain_wakeups()
                self.check_quit()
        finally:
            joiner.kill()
        return not len(pool)

    def _tick(self) -> None:
        """The hub's heartbeat, from a greenlet: it stops only when the hub is stuck (CPU-bound code
        or an unpatched blocking call), which is what --harakiri measures here (workers.LOOP_TICKS)."""
        import gevent
        while True:
            self.row.heartbeat()
            gevent.sleep(tick_interval(self.cfg))

    def release_listeners(self) -> None:
        """Done by serve_forever once the acceptors (which hold duplicates) are killed."""

    def _accept_forever(self, listener: Listener, pool: Any) -> None:
        """Accept on one listener while there is room in the pool; a greenlet per connection.

        The pool is checked and the connection accepted and spawned with no switch between
        (the accept does not wait): an acceptor already waiting on its listener when another
        one took the last slot must not take one more, which it would then hold out of the
        backlog (where another worker could serve it) until a slot frees.
        """
        from gevent.socket import wait_read
        sock = listener.sock.dup()  # (the C calls only: a socket the patch did not touch)
        sock.setblocking(False)
        raw_accept, family, kind = sock._accept, int(sock.family), int(sock.type)  # type: ignore[attr-defined]
        try:
            while True:
                pool.wait_available()
                wait_read(sock.fileno())
                if pool.full() or (self.over_share(self.connections) and self._left_to_others(sock.fileno())):
                    continue
                try:
                    fd, peer = raw_accept()
                except BlockingIOError:
                    continue  # another worker took it
                except OSError as exc:
                    time.sleep(self.accept_error(exc, listener))
                    continue
                self._counted(1)
                pool.spawn(self._serve, _socket.socket(family, kind, 0, fd), peer, listener)
        finally:
            sock.close()

    def _serve(self, conn: _socket.socket, peer: Any, listener: Listener) -> None:
        try:
            connection.serve(conn, peer, listener, self.ctx)
        finally:
            self._counted(-1)

    def _counted(self, change: int) -> None:
        """The open connections, for the other workers' over_share() to read."""
        self.connections += change
        self.row.set_connections(self.connections)

    def _left_to_others(self, fd: int) -> bool:
        """Over its share: wait, up to DEFER_MOST, for another worker to take what is queued on `fd`
        (True), or take it after all (False) once the wait is over or the share allows it."""
        import gevent
        deadline = time.monotonic() + DEFER_MOST
        while time.monotonic() < deadline:
            gevent.sleep(DEFER_STEP)
            if not queued(fd):
                return True
            if not self.over_share(self.connections):
                return False
        return False


def _c_socket(conn: Any) -> _socket.socket:
    """The C socket under one of the patched class (what the base class's drain accepts)."""
    return _socket.socket(int(conn.family), int(conn.type), 0, conn.detach())


_SWEEP: Final = 0.25  # seconds between looks at the long waits' deadlines
_LONG: Final = 1.0  # a wait this long or longer has its deadline swept for, not a timer of its own


def _hub_wait() -> Callable[[_socket.socket, bool, float], bool]:
    """connection's wait in a gevent worker: the greenlet waits on the hub for the socket, as
    gevent's own sockets do, without their Python wrapper around every C call.

    A socket's io watcher is made on its first wait and kept for the next, as a gevent socket
    keeps its own: making one costs a microsecond and a syscall, starting and stopping it a
    quarter of that. Kept by fd, but remade for another socket on the same fd: a new watcher is
    what tells libev to register the fd with epoll anew (the kernel forgot the old one at its
    close), which the old watcher, started again, would not.

    The deadline: gevent's Timeout, which wait_read(fd, timeout) would make, costs some 24k
    instructions per wait, and a timer watcher of the hub's loop per wait still most of a
    microsecond, while a keep-alive connection waits once per request. So a long wait (the
    keep-alive and read timeouts, seconds) only notes its deadline, and one timer looks at the
    noted deadlines every _SWEEP seconds while there are any, waking those past theirs: such a
    wait ends at most _SWEEP late, as uWSGI's timeouts, checked once a second, end up to a
    second late. A short wait (a send paced to a slow reader's rate) keeps a timer of its own."""
    from gevent import get_hub
    from gevent.hub import Waiter

    hub = get_hub()
    loop = hub.loop
    watchers: dict[int, tuple[_socket.socket, Any]] = {}
    deadlines: dict[Any, float] = {}  # Waiter → the time.monotonic() it wakes with False at

    def sweep() -> None:
        now = time.monotonic()
        for waiter, deadline in list(deadlines.items()):
            if deadline <= now and deadlines.pop(waiter, None) is not None:
                waiter.switch(False)
        if not deadlines:
            sweeper.stop()

    sweeper = loop.timer(_SWEEP, _SWEEP, ref=False)

    def wait(conn: _socket.socket, writing: bool, seconds: float) -> bool:
        fd = conn.fileno()
        key = fd << 1 | writing
        kept = watchers.get(key)
        if kept is None or kept[0] is not conn:
            kept = watchers[key] = (conn, loop.io(fd, 2 if writing else 1))
        io = kept[1]
        waiter = Waiter(hub)
        io.start(waiter.switch, True)
        timer = None
        if seconds >= _LONG:
            deadlines[waiter] = time.monotonic() + seconds
            if not sweeper.active:
                sweeper.start(sweep)
        else:
            timer = loop.timer(max(seconds, 0.0))
            timer.start(waiter.switch, False, update=True)  # (from the loop's time now, not its last iteration's)
        try:
            return bool(waiter.get())
        finally:
            io.stop()
            if timer is None:
                deadlines.pop(waiter, None)
            else:
                timer.stop()

    return wait
