"""The sync worker: one connection at a time, accepting on every listening socket.

It waits in epoll with EPOLLEXCLUSIVE, so a new connection wakes one idle worker rather than
all of them, and it answers every HTTP request with `Connection: close`: a blocking worker that
kept a connection open would leave every other client waiting in the backlog.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import select
import time

from zergserve import connection, sockets
from zergserve.scoreboard import IDLE, PAUSED
from zergserve.sockets import Listener
from zergserve.workers.base import Worker

_ACCEPT_EVENTS = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)


class SyncWorker(Worker):
    """One request at a time per process."""

    keep_alive = False

    @classmethod
    def start_warnings(cls, listeners: list[Listener]) -> list[str]:
        """A sync worker is held whole by each slow client: reached directly, a few hundred slow
        connections take every worker out of service (README, security notes)."""
        public = [listener.name for listener in listeners
                  if listener.is_tcp and is_public(listener.sock.getsockname())]
        if not public:
            return []
        return [f"sync workers listen on {', '.join(public)}, beyond loopback: each slow client holds a whole "
                "worker (up to --http-timeout, --body-timeout); put nginx in front or use --worker gevent/asyncio"]

    def serve_forever(self) -> None:
        poller = select.epoll()
        by_fd = {listener.fileno(): listener for listener in self.listeners}
        accepts = {fd: _Accept(listener) for fd, listener in by_fd.items()}
        poller.register(self.wake_r, select.EPOLLIN)
        registered = False
        while not self.done():
            if self.pause_changed():
                for fd in by_fd:
                    if not self.pause_applied:
                        poller.register(fd, _ACCEPT_EVENTS)
                    elif registered:
                        with contextlib.suppress(OSError):  # closed by the lifeline's watcher meanwhile
                            poller.unregister(fd)
                registered = not self.pause_applied
                self.row.set_status(PAUSED if self.pause_applied else IDLE)  # a request that ended meanwhile said idle
            events = poller.poll(1.0)
            if not events:
                self.row.heartbeat()
                continue
            for fd, _ in events:
                if fd == self.wake_r:
                    self.drain_wakeups()
                elif registered:
                    self._accept_all(accepts[fd])
        poller.close()
        self.drain_queue(lambda conn, peer, listener: connection.serve(conn, peer, listener, self.ctx))

    def _accept_all(self, accept: "_Accept") -> None:
        """Serve connections from this listener until its queue is empty or we must stop. The first
        is served even if we must stop: EPOLLEXCLUSIVE woke no other worker for it."""
        listener, raw_accept, family, kind = accept.listener, accept.raw, accept.family, accept.kind
        ctx = self.ctx
        while True:
            try:
                fd, peer = raw_accept()
                conn = _socket.socket(family, kind, 0, fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.EBADF and self.orphan:
                    return  # the listener was closed under us: the master died
                backoff = self.accept_error(exc, listener)
                if backoff:
                    time.sleep(backoff)
                    return
            else:
                try:
                    self.enter_app()  # a QUIT now cannot wait for the loop: see Worker._quit
                    connection.serve(conn, peer, listener, ctx)
                finally:
                    self.in_app = False
            if not self.alive or self.paused or (self.max_requests and self.row.requests >= self.max_requests):
                return  # serve_forever's done() says why (and looks for a dead master, a syscall)


class _Accept:
    """What accepting on one listener needs, read once: socket.accept() re-reads the listener's
    family and type through IntEnum properties and wraps each connection in socket.py's Python
    class (about 4 µs of a 40 µs request); the raw `_accept` and the C socket class skip both.
    Nothing on the request path needs socket.py's additions (makefile, sendfile)."""

    __slots__ = ("listener", "raw", "family", "kind")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.raw = listener.sock._accept  # type: ignore[attr-defined]  # (typeshed lists accept() only)
        self.family, self.kind = int(listener.sock.family), int(listener.sock.type)


def is_public(sockname: tuple) -> bool:
    """Whether a TCP socket bound to `sockname` can be reached from beyond this host's loopback."""
    return not sockets.is_loopback(sockname[0])
