"""The gthread worker: --threads requests at once per process, each on a thread of a fixed pool.

gunicorn's gthread model, without its hand-offs: kept-alive connections wait for their next request
in the worker's epoll, not in a thread, so idle clients hold no thread. Every free thread waits in
that one epoll, on the listening sockets (EPOLLEXCLUSIVE, as the sync worker) and on the parked
connections (EPOLLONESHOT); the kernel wakes one free thread per event, which accepts or takes the
connection back and serves it through connection.serve()/resume() exactly as the sync worker
does, parking it again when it waits for its next request. A process whose threads are all busy
waits in no epoll_wait, so EPOLLEXCLUSIVE passes its connections to another process. The main
thread only handles signals, pause, --keep-alive expiry and the stop.

The scoreboard row stands for the process: busy only when every thread is in a request (what the
cheaper, idle and SOS watches count), its request start that of the oldest request in flight, so
--harakiri kills the worker when any one request runs too long. Each thread has its core entry
(uWSGI's `cores` in the stats).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from typing import Any, Callable

from zergserve import connection, wsgi
from zergserve.config import Config
from zergserve.exchange import Exchange
from zergserve.log import logger
from zergserve.scoreboard import BUSY, IDLE, NO_CORE, PAUSED, CoreRows
from zergserve.sockets import Listener
from zergserve.workers.base import Worker
from zergserve.wakeup import signals_blocked
from zergserve.workers.sync import _ACCEPT_EVENTS

_PARKED_EVENTS = select.EPOLLIN | select.EPOLLONESHOT


class ThreadsWorker(Worker):
    """Up to --threads requests at once per process; kept-alive connections wait in epoll."""

    keep_alive = True

    def __init__(self, wid: int, cfg: Config, listeners: list[Listener], app: Callable | None,
                 scoreboard: Any, close_fds: list[int]) -> None:
        super().__init__(wid, cfg, listeners, app, scoreboard, close_fds)
        self.core_writers = scoreboard.core_writers(wid)

    def boot(self) -> None:
        if self.cfg.threads_stacksize:
            threading.stack_size(self.cfg.threads_stacksize * 1024)
        super().boot()
        self.rows = CoreRows(self.row, self.core_writers, self, _Local(), self.cfg.threads, self.max_requests,
                             self.wake_w)
        self.ctx.row = self.rows
        for listener in self.listeners:  # the environ every request copies says threads may run the app
            env = wsgi.base_environ(*listener.server_name_port())
            env["wsgi.multithread"] = True
            self.ctx.environs[listener] = env

    def serve_forever(self) -> None:
        self.poller = select.epoll()
        self.by_fd = {listener.fileno(): listener for listener in self.listeners}
        self.parked: collections.OrderedDict[int, tuple[connection.Socket, Exchange]] = collections.OrderedDict()
        self.lock = threading.Lock()
        self.accepting_stopped = False
        self.stop_r, self.stop_w = os.pipe2(os.O_CLOEXEC)  # readable at the stop: every thread leaves
        self.poller.register(self.stop_r, select.EPOLLIN)
        pool = [threading.Thread(target=self._thread, args=(i,), name=f"core {i}", daemon=True)
                for i in range(self.cfg.threads)]
        with signals_blocked():
            for thread in pool:
                thread.start()
        while not self.done():
            if self.pause_changed():
                for fd in self.by_fd:
                    if self.pause_applied:
                        self._forget(fd)
                    else:
                        self.poller.register(fd, _ACCEPT_EVENTS)
                self.row.set_status(PAUSED if self.pause_applied else BUSY if self.rows.full else IDLE)
            ready, _, _ = select.select([self.wake_r], [], [], self._expire())
            if ready:
                self.drain_wakeups()
            else:
                self.row.heartbeat()
        for fd in self.by_fd:
            self._forget(fd)
        if self.orphan:
            super().release_listeners()
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        with self.lock:
            for conn, _ in self.parked.values():
                conn.close()
            self.parked.clear()
        self.drain_queue(lambda conn, peer, listener: connection.serve(conn, peer, listener, self.ctx))
        os.write(self.stop_w, b"x")
        self.enter_app()  # the main thread now waits on the app's requests: a QUIT cannot wait for them
        deadline = time.monotonic() + self.cfg.worker_reload_mercy
        for thread in pool:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in pool):
            logger.error("worker %d: requests still running after %ds, leaving them",
                         self.wid, self.cfg.worker_reload_mercy)

    def release_listeners(self) -> None:
        """Done by serve_forever once the listeners are out of its poller."""

    def _thread(self, core: int) -> None:
        """One request thread: take one event at a time from the shared epoll and serve it."""
        self.rows.local.core = core
        poll, by_fd, parked = self.poller.poll, self.by_fd, self.parked
        while True:
            try:
                events = poll(-1, 1)
            except InterruptedError:
                continue
            for fd, _ in events:
                try:
                    if fd == self.stop_r:
                        return
                    if fd in by_fd:
                        self._accept(by_fd[fd])
                        continue
                    with self.lock:
                        item = parked.pop(fd, None)
                    if item is not None:  # its one-shot registration is spent: parking re-arms it
                        connection.resume(item[0], item[1], self._park, readable=True)
                except Exception as exc:  # serve() raises for nothing a client sends: this is our bug
                    self.log_error(f"request thread {core}: {exc!r}")
                if self.max_requests and self.row.requests >= self.max_requests:
                    self._stop_accepting()

    def _stop_accepting(self) -> None:
        """--max-requests reached: no thread accepts another connection (they wait in the queue for
        the next worker), and the main thread, woken, leaves its loop to recycle the worker."""
        with self.lock:
            if self.accepting_stopped:
                return
            self.accepting_stopped = True
        for fd in self.by_fd:
            self._forget(fd)
        os.write(self.wake_w, b"m")

    def _accept(self, listener: Listener) -> None:
        try:
            conn, peer = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another thread or process took it
        except OSError as exc:
            if not self.orphan:
                time.sleep(self.accept_error(exc, listener))
            return
        connection.serve(conn, peer, listener, self.ctx, self._park)

    def _park(self, conn: connection.Socket, ex: Exchange) -> None:
        """A connection waits for its next request: into the epoll, no thread held."""
        fd = conn.fileno()
        with self.lock:
            if self.ctx.draining:
                conn.close()
                return
            self.parked[fd] = (conn, ex)
            try:  # re-armed, one syscall; closing the socket takes it out of the epoll
                self.poller.modify(fd, _PARKED_EVENTS)
            except FileNotFoundError:  # parked for the first time
                self.poller.register(fd, _PARKED_EVENTS)

    def _expire(self) -> float:
        """Close kept-alive connections whose --keep-alive wait is over (parked in deadline order);
        the seconds until the next one is due (at most 1, for the heartbeat)."""
        now = time.monotonic()
        with self.lock:
            while self.parked:
                fd, (conn, ex) = next(iter(self.parked.items()))
                if ex.deadline > now:
                    return min(1.0, ex.deadline - now)
                del self.parked[fd]
                self._forget(fd)
                conn.close()
        return 1.0

    def _forget(self, fd: int) -> None:
        try:
            self.poller.unregister(fd)
        except (OSError, ValueError):
            pass


class _Local(threading.local):
    core = NO_CORE  # the main thread, serving the queue on a stop, has no core entry of its own
