"""The gthread worker: --threads requests at once per process, each on a thread of a fixed pool.

gunicorn's gthread model: the main thread waits in epoll on the listening sockets (while a thread
is free, with EPOLLEXCLUSIVE as the sync worker) and on the kept-alive connections between their
requests; a connection that is accepted, or kept alive and readable again, goes to the pool, whose
thread serves it through connection.serve()/resume() exactly as the sync worker does, and hands it
back (park) when it waits for its next request. So an idle keep-alive connection holds no thread.

The scoreboard row stands for the process: busy only when every thread is in a request (what the
cheaper, idle and SOS watches count), its request start that of the oldest request in flight, so
--harakiri kills the worker when any one request runs too long. Each thread has its core entry
(uWSGI's `cores` in the stats).
"""

from __future__ import annotations

import collections
import os
import queue
import select
import socket
import threading
import time
from functools import partial
from typing import Any, Callable

from zergserve import connection, wsgi
from zergserve.exchange import Exchange
from zergserve.log import logger
from zergserve.scoreboard import BUSY, IDLE, PAUSED, CoreWriter, RowWriter
from zergserve.sockets import Listener
from zergserve.workers.base import Worker
from zergserve.workers.sync import _ACCEPT_EVENTS

_Task = Callable[[], None]


class ThreadsWorker(Worker):
    """Up to --threads requests at once per process; kept-alive connections wait in epoll."""

    keep_alive = True

    def __init__(self, wid: int, cfg: Any, listeners: list[Listener], app: Callable | None,
                 scoreboard: Any, close_fds: list[int]) -> None:
        super().__init__(wid, cfg, listeners, app, scoreboard, close_fds)
        self.core_writers = scoreboard.core_writers(wid)

    def boot(self) -> None:
        if self.cfg.threads_stacksize:
            threading.stack_size(self.cfg.threads_stacksize * 1024)
        super().boot()
        self.rows = CoreRows(self.row, self.core_writers, self)
        self.ctx.row = self.rows
        for listener in self.listeners:  # the environ every request copies says threads may run the app
            env = wsgi.base_environ(*listener.server_name_port())
            env["wsgi.multithread"] = True
            self.ctx.environs[listener.fileno()] = env

    def serve_forever(self) -> None:
        threads = self.cfg.threads
        self.tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self.returned: collections.deque[tuple[socket.socket, Exchange] | None] = collections.deque()
        self.done_r, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        pool = [threading.Thread(target=self._thread, args=(i,), name=f"core {i}", daemon=True)
                for i in range(threads)]
        for thread in pool:
            thread.start()
        self.poller = select.epoll()
        self.poller.register(self.wake_r, select.EPOLLIN)
        self.poller.register(self.done_r, select.EPOLLIN)
        self.parked: collections.OrderedDict[int, tuple[socket.socket, Exchange]] = collections.OrderedDict()
        self.inflight = 0  # connections given to the pool and not handed back yet
        by_fd = {listener.fileno(): listener for listener in self.listeners}
        accepting = False
        while not self.done():
            want = not self.paused and self.inflight < threads
            if want != accepting:
                for fd in by_fd:
                    if want:
                        self.poller.register(fd, _ACCEPT_EVENTS)
                    else:
                        self._forget(fd)
                accepting = want
                if self.paused:
                    self.row.set_status(PAUSED)
                elif not self.rows.inflight:
                    self.row.set_status(IDLE)
            timeout = 1.0
            if self.parked:
                first = next(iter(self.parked.values()))[1]
                timeout = min(timeout, max(0.0, first.deadline - time.monotonic()))
            events = self.poller.poll(timeout)
            if not events:
                self.row.heartbeat()
            for fd, _ in events:
                if fd == self.wake_r:
                    self.drain_wakeups()
                elif fd == self.done_r:
                    self._collect()
                elif fd in self.parked:
                    self._forget(fd)
                    conn, ex = self.parked.pop(fd)
                    self._submit(partial(connection.resume, conn, ex, self._park))
                elif accepting and fd in by_fd:
                    self._accept(by_fd[fd], threads)
            self._expire()
        for fd in by_fd:
            self._forget(fd)
        if self.orphan:
            super().release_listeners()
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        for fd in list(self.parked):
            self._forget(fd)
            self.parked.pop(fd)[0].close()
        self.drain_queue(lambda conn, peer, listener: self._submit(
            partial(connection.serve, conn, peer, listener, self.ctx, self._park)))
        for _ in pool:
            self.tasks.put(None)
        deadline = time.monotonic() + self.cfg.worker_reload_mercy
        for thread in pool:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in pool):
            logger.error("worker %d: requests still running after %ds, leaving them",
                         self.wid, self.cfg.worker_reload_mercy)
        for item in self.returned:
            if item is not None:
                item[0].close()

    def release_listeners(self) -> None:
        """Done by serve_forever once the listeners are out of its poller."""

    def _thread(self, core: int) -> None:
        """One request thread: run what the main thread hands over until told to stop."""
        self.rows.local.core = core
        while (task := self.tasks.get()) is not None:
            try:
                task()
            except Exception as exc:  # serve() raises for nothing a client sends: this is our bug
                self.log_error(f"request thread {core}: {exc!r}")
            self.returned.append(None)
            try:
                os.write(self.done_w, b".")
            except BlockingIOError:
                pass  # the main thread has bytes to read already

    def _submit(self, task: _Task) -> None:
        self.inflight += 1
        self.tasks.put(task)

    def _park(self, conn: socket.socket, ex: Exchange) -> None:
        """A thread's connection waits for its next request: back to the main thread's poller."""
        self.returned.append((conn, ex))

    def _collect(self) -> None:
        """Take back what the threads finished: the connections they parked, the slots they free."""
        try:
            os.read(self.done_r, 4096)
        except BlockingIOError:
            pass
        while self.returned:
            item = self.returned.popleft()
            if item is None:
                self.inflight -= 1
                continue
            conn, ex = item
            if self.ctx.draining:
                conn.close()
                continue
            fd = conn.fileno()
            self.parked[fd] = item
            self.poller.register(fd, select.EPOLLIN)

    def _expire(self) -> None:
        """Close kept-alive connections whose --keep-alive wait is over (parked in deadline order)."""
        now = time.monotonic()
        while self.parked:
            fd, (conn, ex) = next(iter(self.parked.items()))
            if ex.deadline > now:
                return
            self._forget(fd)
            del self.parked[fd]
            conn.close()

    def _accept(self, listener: Listener, threads: int) -> None:
        """Accept while a thread is free; the rest stays in the backlog for the other workers."""
        while self.inflight < threads and not self.done() and not self.paused:
            try:
                conn, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.orphan:
                    return
                backoff = self.accept_error(exc, listener)
                if backoff:
                    time.sleep(backoff)
                    return
                continue
            self._submit(partial(connection.serve, conn, peer, listener, self.ctx, self._park))

    def _forget(self, fd: int) -> None:
        try:
            self.poller.unregister(fd)
        except (OSError, ValueError):
            pass


class CoreRows:
    """The scoreboard as the exchange sees it from any thread: the calling thread's core entry, and
    the process's row (busy when every thread is; the oldest request in flight for harakiri)."""

    def __init__(self, row: RowWriter, cores: list[CoreWriter], worker: Worker) -> None:
        self.row = row
        self.cores = cores
        self.worker = worker
        self.threads = worker.cfg.threads
        self.local = threading.local()
        self.lock = threading.Lock()
        self.started: dict[int, tuple[float, bytes]] = {}  # core → start, request line
        self.inflight = 0

    def begin(self, request_line: bytes, now: float) -> None:
        core = self.local.core
        if core < len(self.cores):
            self.cores[core].begin(now)
        with self.lock:
            self.started[core] = (now, request_line)
            self.inflight = len(self.started)
            if self.inflight == 1:
                self.row.begin(request_line, now)
            self._status()

    def end(self, sent: int, elapsed: float, failed: bool) -> None:
        core = self.local.core
        if core < len(self.cores):
            self.cores[core].end()
        with self.lock:
            self.started.pop(core, None)
            self.inflight = len(self.started)
            self.row.end(sent, elapsed, failed)  # writes idle and no request start
            if self.started:
                start, line = min(self.started.values())
                self.row.begin(line, start)
            self._status()

    def _status(self) -> None:
        """Busy only when every thread is; the row's request start stays the oldest in flight."""
        if self.worker.paused:
            self.row.set_status(PAUSED)
        else:
            self.row.set_status(BUSY if self.inflight >= self.threads else IDLE)

    @property
    def requests(self) -> int:
        return self.row.requests
