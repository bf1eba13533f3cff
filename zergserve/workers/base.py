"""What every worker class shares: boot in the forked child, signals, the scoreboard row, limits.

A worker class only adds `serve_forever()`: how it waits for connections and how many it serves at
once. The master forks, then calls `run()`, which never returns: the process exits with a code the
master understands (0: done, respawn me; 3: cannot boot; 4: cannot load the app — stop, don't
respawn).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import _thread
import sys
import time
from typing import Any, Callable

from zergserve import app as app_loader
from zergserve import accesslog, config, exchange, parent_death, proctitle, proxy
from zergserve.config.options import BY_NAME
from zergserve.exitcodes import APP_LOAD_ERROR as EXIT_APP_LOAD_ERROR, BOOT_ERROR as EXIT_BOOT_ERROR, OK as EXIT_OK
from zergserve.log import logger, traceback_text
from zergserve.wakeup import drain, wakeup_pipe
from zergserve.protocols.http import Limits
from zergserve.scoreboard import IDLE, PAUSED, STOPPING, Scoreboard
from zergserve.sockets import Listener
from zergserve.workers import load_app

_DRAIN_SECONDS = 2.0  # how long a stopping worker serves what the kernel already queued
_ACCEPT_BACKOFF = 0.1  # out of descriptors or memory: wait before the next accept()
_ACCEPT_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN)  # that connection is gone or taken
_ACCEPT_SHORT = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Balance of kept connections (Worker.over_share): how far above the least-loaded sibling a worker may
# be before it leaves the next connection to it, and how long it leaves it at most (nginx's workers
# wait accept_mutex_delay, 500 ms, for their turn).
_SHARE_SLACK = 2
DEFER_STEP = 0.002
DEFER_MOST = 0.05
_POLL = select.poll  # as imported by the master: gevent's patch in a worker replaces select.poll with a waiting one
WORKER_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGUSR1}


class QuickStop(BaseException):
    """A quick stop (QUIT, or INT on an instance) unwinding the worker's main thread to run(), which
    exits at once. Raised by the worker's loop when it sees the stop recorded, and by the handler
    itself only while the main thread is inside the app (no loop would look before the app
    returns). A BaseException that is no SystemExit: the adapters turn an app's SystemExit into a
    500, an app's `except Exception` does not catch it, and the connection's cleanups still run."""


class Worker:
    """Base worker; subclasses implement serve_forever()."""

    keep_alive = False

    def __init__(self, wid: int, cfg: config.Config, listeners: list[Listener], app: Callable | None,
                 scoreboard: Scoreboard, close_fds: list[int]) -> None:
        self.wid = wid
        self.cfg = cfg
        self.listeners = listeners
        self.app = app
        self.row = scoreboard.writer(wid)
        self.scoreboard = scoreboard
        self.close_fds = close_fds
        self.alive = True
        self.paused = False  # as recorded by TSTP; the loop applies it when it wakes
        self.pause_applied: bool | None = None  # as the loop applied it (None: not yet): what a finished request shows
        self.quitting = False  # QUIT (INT on an instance): leave now, whatever is in hand
        self.in_app = False  # the main thread runs the app's code (boot, a sync worker's request): see QuickStop
        self.recycling = False  # leaving on its own (max-requests, SIGHUP): the others serve the queue
        self.leaving = False  # INT on a zerg: finish the request in hand, leave the queue to the others
        self.zerg = any(listener.attached for listener in listeners)
        self.max_requests = (cfg.max_requests + (wid - 1) * cfg.max_requests_delta
                             + _jitter(cfg.max_requests_jitter)) if cfg.max_requests else 0
        self.wake_r = self.wake_w = -1
        self.ready_fd = -1  # the master's "a worker is ready" pipe, set by the master after the fork
        self.lifeline_fd = -1  # read end of the pipe whose closing says the master died (lifeline.py)
        self.orphan = False
        self.orphan_lock = _thread.allocate_lock()  # the lifeline's watcher and the loop's getppid() check
        self.ppid = os.getppid()  # forked by the master: this is its pid
        self.on_exit: Callable[[], None] | None = None  # set by the master: hooks for a worker that leaves

    @classmethod
    def start_warnings(cls, listeners: list[Listener]) -> list[str]:
        """What the master says once at start about serving these listeners with this class."""
        return []

    def run(self) -> None:
        """Boot and serve; always ends the process."""
        code = EXIT_OK
        try:
            self.enter_app()  # a lazy app's import may take long: a quick stop need not wait for it
            self.boot()
            self.in_app = False
        except QuickStop:
            os._exit(EXIT_OK)
        except app_loader.AppLoadError as exc:
            logger.error("worker %d: cannot load the app: %s", self.wid, exc)
            if exc.__cause__ is not None:
                logger.error("%s", traceback_text(exc.__cause__))
            os._exit(EXIT_APP_LOAD_ERROR)
        except Exception:
            logger.error("worker %d: boot failed:\n%s", self.wid, traceback_text())
            os._exit(EXIT_BOOT_ERROR)
        try:
            self.row.set_status(PAUSED if self.paused else IDLE)  # respawned while the master is paused
            self.announce_ready()
            self.serve_forever()
        except QuickStop:
            self.row.set_status(STOPPING)
            os._exit(EXIT_OK)  # no exit hooks, no flush: what the master asked for is gone at once
        except Exception:
            logger.error("worker %d: crashed:\n%s", self.wid, traceback_text())
            code = 1
        finally:
            self.row.set_status(STOPPING)
        if self.on_exit is not None:
            self.on_exit()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def boot(self) -> None:
        for fd in self.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        proctitle.set_title(self.cfg, f"worker {self.wid}")
        self.install_signals()
        proxy.configure(self.cfg.forwarded_allow_ips)
        if self.lifeline_fd >= 0:
            parent_death.watch(self.lifeline_fd, self._master_died)
        if self.app is None:
            self.app = load_app(self.cfg)
        cfg = self.cfg
        self.ctx = exchange.Context(
            app=self.app,
            row=self.row,
            wid=self.wid,
            log_error=self.log_error,
            access_log=None,
            limits=head_limits(cfg),
            http_timeout=cfg.http_timeout,
            socket_timeout=cfg.socket_timeout,
            keepalive_timeout=cfg.keep_alive,
            limit_post=cfg.limit_post,
            buffer_size=cfg.buffer_size,
            max_vars=cfg.max_vars * 2,
            keep_alive=self.keep_alive,
            body_timeout=cfg.body_timeout,
            body_min_rate=cfg.body_min_rate,
            send_min_rate=cfg.send_min_rate,
            log_refusal=lambda message: logger.info("worker %d: %s", self.wid, message),
        )
        self.ctx.access_log = accesslog.from_config(cfg, self.ctx)

    def announce_ready(self) -> None:
        """Wake the master now (it would otherwise see the IDLE row only at its next cycle): the
        emperor's "accepting" byte, which ends a broodlord reinforcement, waits for it."""
        if self.ready_fd < 0:
            return
        try:
            os.write(self.ready_fd, b"r")
        except OSError:
            pass
        os.close(self.ready_fd)
        self.ready_fd = -1

    def log_error(self, message: str) -> None:
        logger.error("worker %d: %s", self.wid, message)

    def install_signals(self) -> None:
        """Handlers only record what was asked (flags); the wake-up pipe interrupts whatever the loop
        waits on, and the loop acts. The one exception is QuickStop, see `_quit`."""
        self.wake_r, self.wake_w = wakeup_pipe()
        signal.signal(signal.SIGTERM, self._graceful_stop)
        signal.signal(signal.SIGHUP, self._recycle)
        signal.signal(signal.SIGINT, self._interrupt)
        signal.signal(signal.SIGQUIT, self._quit)
        signal.signal(signal.SIGTSTP, self._toggle_pause)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)  # blocked by the master around fork

    def _graceful_stop(self, signum: int, frame: Any) -> None:
        self.alive = False

    def _recycle(self, signum: int, frame: Any) -> None:
        """The master replaces this worker (reload-on-rss, max-worker-lifetime, touch-workers-reload):
        finish the request in hand and leave the queue to the others, as max-requests does."""
        self.recycling = True
        self.alive = False

    def _quit(self, signum: int, frame: Any) -> None:
        """Quick stop: recorded for the loop (done() raises QuickStop); raised here only while the
        main thread is inside the app, which may not return for minutes (gunicorn's workers raise
        SystemExit in their QUIT handler; the master's SIGKILL after a mercy stays the last resort)."""
        self.quitting = True
        self.alive = False
        if self.inside_app():
            raise QuickStop

    def enter_app(self) -> None:
        """The main thread is about to run the app's code, or wait on it: a QUIT from now on
        raises QuickStop where it lands (_quit), and one that came before, while the loop was on
        its way here, raises now instead of waiting for the app."""
        self.in_app = True
        if self.quitting:  # check_quit(), without a second call for every request
            raise QuickStop

    def check_quit(self) -> None:
        """For the loops, whenever they wake: raise QuickStop once a quick stop was recorded."""
        if self.quitting:
            raise QuickStop

    def inside_app(self) -> bool:
        """Whether the main thread, where handlers run, is running the app's code rather than this
        worker's loop (an event-loop worker says whether its loop is waiting)."""
        return self.in_app

    def _interrupt(self, signum: int, frame: Any) -> None:
        """Quick on an instance; on a zerg the server still holds the sockets, so the request in
        hand can finish while the queue waits for the server's other workers."""
        if not self.zerg:
            self._quit(signum, frame)
            return
        self.leaving = True
        self.alive = False

    def _toggle_pause(self, signum: int, frame: Any) -> None:
        """Recorded only: each loop stops or resumes accepting and writes the row's status."""
        self.paused = not self.paused

    def pause_changed(self) -> bool:
        """For the loops, whenever they wake: True when TSTP changed `paused` since the loop last
        applied it (and on its first turn), which it now applies: stop or resume accepting, write
        the row's status."""
        if self.pause_applied is self.paused:
            return False
        self.pause_applied = self.paused
        return True

    def drain_wakeups(self) -> None:
        drain(self.wake_r)

    def _master_died(self) -> None:
        """From the lifeline's watcher (parent_death.watch): the master is gone, even if this
        worker's main thread is inside a request; the loop wakes to leave."""
        self._orphaned()
        try:
            os.write(self.wake_w, b"o")
        except OSError:
            pass  # full: the loop is being woken already

    def orphaned(self) -> bool:
        """True once the master is gone (even SIGKILLed): a worker never outlives it."""
        if os.getppid() != self.ppid:
            self._orphaned()
            return True
        return self.orphan

    def _orphaned(self) -> None:
        """Stop accepting and give up the listening sockets now, so that a new master can bind
        them; finish what is in hand within --worker-reload-mercy (then SIGALRM, whose default
        action ends the process: no handler needed)."""
        with self.orphan_lock:
            if self.orphan:
                return
            self.orphan = True
        logger.error("worker %d: master %d is gone, exiting", self.wid, self.ppid)
        self.alive = False
        self.paused = True  # nobody will answer the queue's clients: leave at once
        signal.alarm(max(1, self.cfg.worker_reload_mercy))
        self.release_listeners()

    def release_listeners(self) -> None:
        """Close the listening sockets (a worker class whose loop holds them closes them itself)."""
        for listener in self.listeners:
            listener.sock.close()

    def done(self) -> bool:
        """True when the worker should leave its loop: told to stop, max-requests reached, or orphaned.
        Raises QuickStop after a quick stop: the loop leaves everything in hand."""
        self.check_quit()
        if self.alive and self.orphaned():
            return True
        if self.max_requests and self.row.requests >= self.max_requests:
            if self.alive:
                logger.info("worker %d: max-requests (%d) reached, recycling", self.wid, self.max_requests)
                self.recycling = True
            self.alive = False
        return not self.alive

    def serve_forever(self) -> None:
        raise NotImplementedError

    def close_idle(self) -> None:
        """On a stop: end the wait of every kept-alive connection between requests (its read sees
        EOF and it closes), instead of holding the stop for --keep-alive seconds."""
        for ex, conn in list(self.ctx.kept.items()):
            if ex.idle:
                try:
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def accept_error(self, exc: OSError, listener: Listener) -> float:
        """What a failed accept() means for every worker class: seconds to back off (out of
        descriptors or memory, logged), 0 to go on (that connection is gone or another worker took
        it); anything else is raised."""
        if exc.errno in _ACCEPT_SHORT:
            logger.error("worker %d: accept on %s: %s", self.wid, listener.name, exc.strerror)
            return _ACCEPT_BACKOFF
        if exc.errno in _ACCEPT_GONE or isinstance(exc, InterruptedError):
            return 0.0
        raise exc

    def over_share(self, mine: int) -> bool:
        """Whether this worker, holding `mine` open connections, should leave the next one in the
        queue to a sibling that holds fewer (by more than _SHARE_SLACK and an eighth of `mine`).

        Every worker sleeping on a shared listener is woken by a new connection, and the first to
        run takes it: one busy worker can take a whole burst of connections before the others wake,
        and with keep-alive it then serves all their requests while the others idle (one worker
        held 50 of wrk's 50 connections in a measured run, at 0.7 of the throughput and ten times
        the p99). Each worker that keeps connections writes its count to its scoreboard row; one
        over its share waits up to DEFER_MOST for an idle or busy sibling with a live heartbeat to
        take the connection, then takes it itself (the sibling may be stuck)."""
        if mine <= _SHARE_SLACK:
            return False
        fewest = self.scoreboard.fewest_connections(self.wid, time.monotonic() - 3 * tick_interval(self.cfg))
        return fewest is not None and mine > fewest + _SHARE_SLACK + mine // 8

    def drain_queue(self, take: Callable[[socket.socket, Any, Listener], None]) -> None:
        """On the way out of a stop or reload, hand `take` what the kernel already queued: a client
        whose connection it accepted must get an answer, not a reset when the last holder of the
        socket closes it. Not when recycling, paused or leaving a zerg server: the others serve it."""
        if self.paused or self.recycling or self.leaving:
            return
        deadline = time.monotonic() + _DRAIN_SECONDS
        budget = self.cfg.listen
        pending = list(self.listeners)
        while pending and budget > 0 and time.monotonic() < deadline and not self.leaving:
            self.check_quit()
            for listener in list(pending):
                try:
                    conn, peer = listener.sock.accept()  # under gevent, the patched socket class
                except OSError:
                    pending.remove(listener)
                    continue
                budget -= 1
                self.enter_app()  # a sync or gthread worker serves it here, in the main thread
                try:
                    take(conn, peer, listener)
                finally:
                    self.in_app = False


def queued(fd: int) -> bool:
    """Whether a listening socket has a connection queued, looked at without waiting."""
    poller = _POLL()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def head_limits(cfg: config.Config) -> Limits:
    """The HTTP head limits (0: none). uWSGI reads a whole HTTP head into --buffer-size, so its users
    raise that for long URLs and big cookies: a buffer-size above its default raises the line and
    field limits with it, as in uWSGI; it never lowers them."""
    raised = cfg.buffer_size if cfg.buffer_size > BY_NAME["buffer-size"].default else 0

    def limit(value: int) -> int:
        return max(value, raised) if value else 1 << 30
    return Limits(limit(cfg.limit_request_line), cfg.limit_request_fields or 1 << 30,
                  limit(cfg.limit_request_field_size), max(Limits().head, raised))


def tick_interval(cfg: config.Config) -> float:
    """How often an event loop ticks its heartbeat: often enough that --harakiri sees a live loop."""
    return min(1.0, cfg.harakiri / 4) if cfg.harakiri else 1.0


def _jitter(most: int) -> int:
    """A random number in 0..most (--max-requests-jitter); `random` is imported only when asked."""
    if not most:
        return 0
    import random
    return random.randint(0, most)
