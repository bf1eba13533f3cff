"""The master: binds the sockets, forks the workers and supervises them.

Signal handlers only queue the signal; `run()` handles the queue between housekeeping turns
(reap, respawn, harakiri, reload progress). Signals:

    HUP         graceful reload: re-exec this master in place (same pid, same listening sockets,
                re-read config, reload the app), start new workers, and only when they are ready
                let the old ones finish their requests and exit. A check of the new config and
                app, and of what the new master binds and creates, runs first (killed after
                worker-reload-mercy); if it fails the old master and workers go on serving.
    TERM        graceful shutdown: workers stop accepting, finish what they have, exit.
    INT, QUIT   quick shutdown: workers exit at once. On a zerg (an instance with attached sockets)
                INT leaves instead: workers finish the request in hand and exit without serving the
                queue, which the zerg server or pool still holds for its other workers; QUIT is
                still quick there.
    TTIN, TTOU  one worker more, one fewer.
    USR1        log a line per worker.
    USR2        logged and ignored (gunicorn's binary upgrade; HUP is the in-place upgrade here).
    TSTP        pause / resume accepting in every worker (a zerg can take the traffic meanwhile).

Other roles (zerg server, emperor link, idle watch) plug in through `add_reader()`,
`add_housekeeping()` and `on_ready` instead of growing this loop. Housekeeping runs once per
--check-interval, however many events (stats reads, zerg attaches, emperor bytes) wake the loop, so
checks that talk to the emperor (SOS) happen once per cycle, as in uWSGI. A worker that becomes
ready writes a byte to a pipe the master watches: whoever waits for that (the emperor's
"accepting") hears it at once instead of at the next cycle.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time
from typing import Any, Callable

from setproctitle import setproctitle

from zergserve import __version__, sockets
from zergserve.log import logger
from zergserve.wakeup import drain, wakeup_pipe
from zergserve.scoreboard import BUSY, STARTING, Scoreboard
from zergserve.stats import StatsServer
from zergserve.workers.base import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, WORKER_SIGNALS

REEXEC_LISTENERS = "ZERGSERVE_REEXEC_FDS"
REEXEC_WORKERS = "ZERGSERVE_REEXEC_WORKERS"
REEXEC_LIFELINES = "ZERGSERVE_REEXEC_LIFELINES"  # pid:fd of each old worker's lifeline write end
REEXEC_PAUSED = "ZERGSERVE_REEXEC_PAUSED"
RELOAD_CHECK = "ZERGSERVE_REEXEC_CHECK"  # set for the HUP check: the stats address the master holds
EXIT_START_ERROR = 2  # as the CLI's usage errors: the configuration names something unusable
_HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
            signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTSTP, signal.SIGCHLD)
_QUICK_MERCY = 3.0
_BOOT_GRACE = 30.0


_EARLY: list[int] = []  # signals that came before the master's loop was ready, see hold_signals()


def hold_signals() -> None:
    """Remember the master's signals instead of dying of them, from before the sockets listen
    until the loop runs: a HUP sent as soon as the port answers is then a reload, not a kill."""
    for signum in _HANDLED:
        signal.signal(signum, lambda signum, frame: _EARLY.append(signum))


class StartError(Exception):
    """Something the master creates besides its sockets (stats socket, pidfile) cannot be created."""


class WorkerProc:
    """The master's record of one live worker process."""

    def __init__(self, wid: int, pid: int, spawned: float) -> None:
        self.wid = wid
        self.pid = pid
        self.spawned = spawned
        self.harakiri_count = 0
        self.respawns = 0


class Retiring:
    """A worker told to stop (old generation, TTOU, shutdown): killed if it outlives its deadline."""

    def __init__(self, pid: int, deadline: float | None) -> None:
        self.pid = pid
        self.deadline = deadline  # None: not told yet (old generation waiting for the new one)


class Master:
    """Supervises a pool of workers of one class over a set of listeners."""

    def __init__(self, cfg: Any, listeners: list[sockets.Listener], app: Any, worker_class: type,
                 argv: list[str], start_cwd: str | None = None) -> None:
        self.cfg = cfg
        self.start_cwd = start_cwd or os.getcwd()
        self.listeners = listeners
        self.app = app
        self.worker_class = worker_class
        self.argv = argv
        self.num_workers = cfg.processes
        self.workers: dict[int, WorkerProc] = {}
        self.retiring: dict[int, Retiring] = {}
        self.lifelines: dict[int, int] = {}  # worker pid -> the write end of its lifeline pipe (lifeline.py)
        self.respawn_at: dict[int, float] = {}
        self.history: dict[int, WorkerProc] = {}
        self.signals: list[int] = []
        self.selector = selectors.DefaultSelector()
        self.housekeeping: list[Callable[[], None]] = []
        self.cleanups: list[Callable[[], None]] = []
        self.on_wake: list[Callable[[], None]] = []
        self.on_ready: list[Callable[[], None]] = []
        self.stats_extras: list[Callable[[], dict[str, Any]]] = []
        self.handovers: list[Callable[[], dict[str, str]]] = []
        self.stopping: str | None = None  # graceful | leave | quick
        self.zerg = any(listener.attached for listener in listeners)
        self.cheap = False
        self.stop_deadline = 0.0
        self.paused = os.environ.pop(REEXEC_PAUSED, "") == "1"  # TSTP holds across a reload
        self.canary: int | None = None
        self.canary_deadline = 0.0
        self.canary_timed_out = False
        self.pidfile_written = False
        self.exit_code = 0
        self.started = time.time()
        self.scoreboard = Scoreboard(max(self.num_workers, 1))
        self.stats: StatsServer | None = None
        self._adopt_old_workers()

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until told to stop; return the process exit code."""
        try:
            self._setup()
        except StartError as exc:
            logger.error("%s", exc)
            self.exit_code = EXIT_START_ERROR
            self._cleanup()
            return self.exit_code
        if self.cfg.cheap:
            self.go_cheap()
        else:
            for wid in range(1, self.num_workers + 1):
                self.spawn(wid)
        next_cycle = time.monotonic()
        while True:
            timeout = max(0.0, next_cycle - time.monotonic()) if not self.stopping else 0.2
            for key, _ in self.selector.select(timeout):
                key.data()
            self._handle_signals()
            self._reap()
            if self.stopping:
                if self._stop_progress():
                    break
                continue
            self._retire_old_generation()
            self._respawn_missing()
            if time.monotonic() < next_cycle:
                continue
            next_cycle = time.monotonic() + self.cfg.check_interval
            self._harakiri()
            self._kill_overdue()
            self._watch_canary()
            for task in self.housekeeping:
                task()
        self._cleanup()
        return self.exit_code

    def add_reader(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Call `callback` from the loop whenever `fileobj` is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def add_housekeeping(self, task: Callable[[], None]) -> None:
        """Call `task` once per master cycle (at least every --check-interval seconds)."""
        self.housekeeping.append(task)

    def add_cleanup(self, task: Callable[[], None]) -> None:
        """Call `task` when the master exits (not when it re-executes for a reload)."""
        self.cleanups.append(task)

    def add_stats(self, provider: Callable[[], dict[str, Any]]) -> None:
        """Merge `provider()`'s keys into every stats document."""
        self.stats_extras.append(provider)

    def add_handover(self, provider: Callable[[], dict[str, str]]) -> None:
        """Merge `provider()`'s entries into the environment of the master's re-exec: state that must
        outlive a reload (the next image pops them back)."""
        self.handovers.append(provider)

    def _setup(self) -> None:
        cfg = self.cfg
        prefix = cfg.procname_prefix or (cfg.procname_prefix_spaced + " " if cfg.procname_prefix_spaced else "")
        setproctitle(f"{prefix}zergserve master")
        wake_r, wake_w = wakeup_pipe()
        self._wake = (wake_r, wake_w)
        for signum in _HANDLED:
            signal.signal(signum, self._queue_signal)
        self.signals.extend(_EARLY)
        _EARLY.clear()
        self.add_reader(wake_r, lambda: drain(wake_r))
        ready_r, ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ready_w = ready_w
        self.add_reader(ready_r, lambda: self._worker_ready(ready_r))
        if cfg.stats:
            self.stats = open_stats(cfg, self.stats_document)
            self.add_reader(self.stats, self.stats.serve_one)
            logger.info("stats server enabled on %s", cfg.stats)
        if cfg.pidfile:
            write_pidfile(cfg.pidfile)
            self.pidfile_written = True
        for listener in self.listeners:
            logger.info("%s socket %s (%s, fd %d)", listener.proto, listener.name, listener.origin,
                        listener.fileno())
        for warning in self.worker_class.start_warnings(self.listeners):
            logger.warning("%s", warning)
        logger.info("zergserve %s master %d: %d %s worker(s)", __version__, os.getpid(), self.num_workers,
                    cfg.worker)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _worker_ready(self, ready_r: int) -> None:
        drain(ready_r)
        for task in self.on_ready:
            task()

    def master_fds(self) -> list[int]:
        """Descriptors a forked worker must close: they belong to the master's loop."""
        fds = [key.fd for key in self.selector.get_map().values()]
        return fds + [self._wake[1], self.selector.fileno(), *self.lifelines.values()]

    # --- workers ----------------------------------------------------------------------------

    def spawn(self, wid: int) -> None:
        if wid > self.scoreboard.size:
            self.scoreboard.grow(wid)
        self.scoreboard.reset(wid, 0)
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals sent to a new worker before it installs its handlers wait, instead of landing in
        # the master's handlers it inherited (a TTOU right after a TTIN would be lost).
        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        life_r, life_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
            os.close(life_r)
            os.close(life_w)
            raise
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for signum in _HANDLED:
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # as the master: see handle_usr2
                worker = self.worker_class(wid, self.cfg, self.listeners, self.app, self.scoreboard,
                                           self.master_fds() + [life_w])
                worker.paused = self.paused
                worker.ready_fd = self._ready_w
                worker.lifeline_fd = life_r
                worker.run()
            finally:
                os._exit(EXIT_BOOT_ERROR)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
        os.close(life_r)
        self.lifelines[pid] = life_w
        self.scoreboard.writer(wid).set_pid(pid)
        previous = self.history.get(wid)
        proc = WorkerProc(wid, pid, time.time())
        if previous is not None:
            proc.harakiri_count = previous.harakiri_count
            proc.respawns = previous.respawns + 1
        self.workers[wid] = proc
        self.history[wid] = proc
        logger.info("spawned worker %d (pid %d)", wid, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid in self.lifelines:
                os.close(self.lifelines.pop(pid))
            if pid == self.canary:
                self._canary_done(code)
                continue
            if self.retiring.pop(pid, None) is not None:
                continue
            for wid, proc in list(self.workers.items()):
                if proc.pid == pid:
                    del self.workers[wid]
                    self._worker_died(proc, code)
                    break

    def _worker_died(self, proc: WorkerProc, code: int) -> None:
        if self.stopping:
            return
        if code in (EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR) and not self._booted(proc):
            what = "load the app" if code == EXIT_APP_LOAD_ERROR else "boot"
            logger.error("worker %d (pid %d) could not %s; stopping the master instead of respawning it",
                         proc.wid, proc.pid, what)
            self.exit_code = code
            self.begin_stop("quick")
            return
        if code < 0:
            logger.error("worker %d (pid %d) killed by signal %d", proc.wid, proc.pid, -code)
        elif code != 0:
            logger.error("worker %d (pid %d) exited with code %d", proc.wid, proc.pid, code)
        if proc.wid > self.num_workers:
            return
        lived = time.time() - proc.spawned
        delay = 0.0 if lived > 1.0 or code == 0 else min(0.1 * 2 ** min(proc.respawns, 6), 5.0)
        self.respawn_at[proc.wid] = time.time() + delay

    def _booted(self, proc: WorkerProc) -> bool:
        """Whether the worker got past its boot (its row left STARTING): codes 3 and 4 from one that
        did come from the app (os._exit(3), an escaped SystemExit), not from a boot that will fail
        again, so it is respawned rather than stopping the master."""
        row = self.scoreboard.row(proc.wid)
        return row.pid == proc.pid and (row.status != STARTING or row.requests > 0)

    def go_cheap(self) -> None:
        """Stop every worker and wait on the sockets here; the first connection brings them back
        (and is served by them: it stays in the backlog meanwhile)."""
        if self.cheap or self.stopping:
            return
        self.cheap = True
        for proc in list(self.workers.values()):
            self._retire(proc.pid, self.cfg.worker_reload_mercy)
        self.workers.clear()
        self.respawn_at.clear()
        for listener in self.listeners:
            self.add_reader(listener.sock, self._wake_from_cheap)
        logger.info("cheap mode enabled: waiting for socket connection...")

    def _wake_from_cheap(self) -> None:
        if not self.cheap:
            return
        for listener in self.listeners:
            self.selector.unregister(listener.sock)
        self.cheap = False
        if self.stopping:
            return  # no new workers while stopping (a zerg's socket stays with its other holders)
        logger.info("cheap mode off: a connection arrived, respawning %d worker(s)", self.num_workers)
        self._respawn_missing()
        for task in self.on_wake:
            task()

    def _respawn_missing(self) -> None:
        if self.cheap:
            return
        now = time.time()
        for wid in range(1, self.num_workers + 1):
            if wid not in self.workers and self.respawn_at.get(wid, 0.0) <= now:
                self.respawn_at.pop(wid, None)
                self.spawn(wid)

    def _harakiri(self) -> None:
        limit = self.cfg.harakiri
        if not limit:
            return
        now = time.time()
        for wid, proc in self.workers.items():
            row = self.scoreboard.row(wid)
            if row.status == BUSY and row.request_start and now - row.request_start > limit:
                proc.harakiri_count += 1
                logger.error("*** HARAKIRI ON WORKER %d (pid %d, request %r running for %.1fs) ***",
                             wid, proc.pid, row.request, now - row.request_start)
                _kill(proc.pid, signal.SIGKILL)

    def _kill_overdue(self) -> None:
        now = time.time()
        for pid, item in self.retiring.items():
            if item.deadline is not None and now > item.deadline:
                logger.error("worker pid %d still running after worker-reload-mercy: killing it", pid)
                _kill(pid, signal.SIGKILL)
                item.deadline = None

    def _retire(self, pid: int, mercy: float) -> None:
        self.retiring[pid] = Retiring(pid, time.time() + mercy)
        _kill(pid, signal.SIGTERM)

    # --- signals ----------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            name = signal.Signals(signum).name
            handler = getattr(self, "handle_" + name[3:].lower(), None)
            if handler is not None:
                handler()

    def handle_hup(self) -> None:
        if self.stopping:
            return
        if self.canary is not None:
            logger.info("reload already in progress")
            return
        logger.info("graceful reload requested: checking the new configuration and app")
        args = [sys.executable, "-m", "zergserve", *self.argv, "--check-config"]
        env = {k: v for k, v in os.environ.items() if k not in (REEXEC_WORKERS, REEXEC_PAUSED)}
        # The check binds what the new master would bind, except what this one holds and passes on.
        env[REEXEC_LISTENERS] = self._listener_handover()
        env[RELOAD_CHECK] = sockets.canonical_name(self.cfg.stats) if self.cfg.stats else ""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                for listener in self.listeners:
                    os.set_inheritable(listener.fileno(), True)
                os.chdir(self.start_cwd)  # relative config paths mean what they meant at start
                os.execve(sys.executable, args, env)
            finally:
                os._exit(127)
        self.canary = pid
        self.canary_deadline = time.monotonic() + self.cfg.worker_reload_mercy
        self.canary_timed_out = False

    def _watch_canary(self) -> None:
        """A check stuck in the new app's import would answer every later HUP with "reload already
        in progress": past worker-reload-mercy it is killed and the reload abandoned."""
        if self.canary is None or self.canary_timed_out or time.monotonic() < self.canary_deadline:
            return
        logger.error("reload aborted: the check of the new configuration and app (pid %d) took more than "
                     "%ds (worker-reload-mercy); killed it; old workers keep serving",
                     self.canary, self.cfg.worker_reload_mercy)
        _kill(self.canary, signal.SIGKILL)
        self.canary_timed_out = True

    def _canary_done(self, code: int) -> None:
        self.canary = None
        if self.canary_timed_out:
            return
        if code != 0:
            logger.error("reload aborted: the new configuration or app failed its check (exit %d); "
                         "old workers keep serving", code)
            return
        self.reexec()

    def reexec(self) -> None:
        """Replace this master's image with a fresh one: same pid, so the workers stay its children."""
        logger.info("re-executing the master (pid %d) for a graceful reload", os.getpid())
        for listener in self.listeners:
            os.set_inheritable(listener.fileno(), True)
        for fd in self.lifelines.values():
            os.set_inheritable(fd, True)
        env = dict(os.environ)
        env[REEXEC_LISTENERS] = self._listener_handover()
        env[REEXEC_WORKERS] = ",".join(str(p) for p in [*(w.pid for w in self.workers.values()),
                                                         *self.retiring])
        env[REEXEC_LIFELINES] = ",".join(f"{pid}:{fd}" for pid, fd in self.lifelines.items())
        if self.paused:
            env[REEXEC_PAUSED] = "1"
        for provider in self.handovers:
            env.update(provider())
        if self.stats is not None:
            self.stats.close(vacuum=False)
        signal.set_wakeup_fd(-1)
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(self.start_cwd)
        os.execve(sys.executable, [sys.executable, "-m", "zergserve", *self.argv], env)

    def _listener_handover(self) -> str:
        """The listeners as `adopt_reexec_listeners` reads them back in the next image."""
        return "\n".join(":".join(_escape(field) for field in (str(listener.fileno()), listener.proto,
                                                               listener.origin, listener.name))
                         for listener in self.listeners)

    def _adopt_old_workers(self) -> None:
        """After a re-exec: the previous image's workers are still our children; retire them later."""
        pids = os.environ.pop(REEXEC_WORKERS, "")
        for item in filter(None, pids.split(",")):
            self.retiring[int(item)] = Retiring(int(item), None)
        for item in filter(None, os.environ.pop(REEXEC_LIFELINES, "").split(",")):
            pid, _, fd = item.partition(":")
            os.set_inheritable(int(fd), False)
            self.lifelines[int(pid)] = int(fd)

    def _retire_old_generation(self) -> None:
        """Tell the old generation to stop once every new worker is ready (or boot grace ran out)."""
        waiting = [item for item in self.retiring.values() if item.deadline is None]
        if not waiting:
            return
        ready = all(self.scoreboard.row(wid).status != STARTING for wid in self.workers)
        if ready or time.time() - self.started > _BOOT_GRACE:
            for item in waiting:
                self._retire(item.pid, self.cfg.worker_reload_mercy)
            logger.info("new workers ready; %d old worker(s) finishing their requests", len(waiting))

    def handle_term(self) -> None:
        self.begin_stop("graceful")

    def handle_int(self) -> None:
        self.begin_stop("leave" if self.zerg else "quick")

    def handle_quit(self) -> None:
        self.begin_stop("quick")

    def handle_ttin(self) -> None:
        self.num_workers += 1
        logger.info("TTIN: now %d workers", self.num_workers)
        if self.cheap:
            # Not now: the listening sockets sit in the master's loop, so a worker forked now would
            # close them as master fds. The wake-up spawns every worker, this one included.
            self.scoreboard.grow(self.num_workers)
            return
        self.spawn(self.num_workers)

    def handle_ttou(self) -> None:
        if self.num_workers <= 1:
            logger.info("TTOU: keeping the last worker")
            return
        wid = self.num_workers
        self.num_workers -= 1
        self.respawn_at.pop(wid, None)
        proc = self.workers.pop(wid, None)
        if proc is not None:
            self._retire(proc.pid, self.cfg.worker_reload_mercy)
        logger.info("TTOU: now %d workers", self.num_workers)

    def handle_usr1(self) -> None:
        for row in self.scoreboard.rows()[: self.num_workers]:
            logger.info("worker %d pid %d %s requests %d exceptions %d avg_rt %dus tx %d",
                        row.wid, row.pid, row.status_name, row.requests, row.exceptions, row.avg_rt, row.tx)

    def handle_usr2(self) -> None:
        """gunicorn's binary upgrade signal; its default action would kill the master silently."""
        logger.info("USR2 ignored: zergserve has no binary upgrade; HUP reloads code and configuration "
                    "in place")

    def handle_tstp(self) -> None:
        self.paused = not self.paused
        logger.info("%s accepting in all workers", "pausing" if self.paused else "resuming")
        for proc in self.workers.values():
            _kill(proc.pid, signal.SIGTSTP)

    # --- stopping ---------------------------------------------------------------------------

    def begin_stop(self, how: str) -> None:
        """Start a shutdown: 'graceful' lets requests finish and serves the queue, 'leave' (a zerg's
        INT) lets requests finish, both within worker-reload-mercy; 'quick' exits at once."""
        if self.stopping == "quick" or self.stopping == how:
            return
        self.stopping = how
        if self.canary is not None and not self.canary_timed_out:
            _kill(self.canary, signal.SIGKILL)  # no reload after a stop
            self.canary_timed_out = True
        if how == "graceful":
            mercy, signum = float(self.cfg.worker_reload_mercy), signal.SIGTERM
        elif how == "leave":
            mercy, signum = float(self.cfg.worker_reload_mercy), signal.SIGINT
        else:
            mercy, signum = _QUICK_MERCY, signal.SIGQUIT
        logger.info("%s shutdown: stopping %d worker(s)", how, len(self.workers) + len(self.retiring))
        self.stop_deadline = time.time() + mercy
        for pid in [proc.pid for proc in self.workers.values()] + list(self.retiring):
            _kill(pid, signum)

    def _stop_progress(self) -> bool:
        """True once every worker is gone (killing those past the deadline)."""
        if not self.workers and not self.retiring:
            return True
        if time.time() > self.stop_deadline:
            for pid in [proc.pid for proc in self.workers.values()] + list(self.retiring):
                logger.error("worker pid %d did not stop in time: killing it", pid)
                _kill(pid, signal.SIGKILL)
            self.stop_deadline = time.time() + 5.0
        return False

    def _cleanup(self) -> None:
        vacuum = self.cfg.vacuum
        for task in self.cleanups:
            task()
        for listener in self.listeners:
            sockets.close_listener(listener, vacuum)
        if self.stats is not None:
            self.stats.close(vacuum)
        if vacuum and self.pidfile_written:
            try:
                os.unlink(self.cfg.pidfile)
            except OSError:
                pass
        logger.info("master %d exiting (code %d)", os.getpid(), self.exit_code)

    # --- stats ------------------------------------------------------------------------------

    def stats_document(self) -> dict[str, Any]:
        """uWSGI's --stats layout (research §6.1), with the fields zergserve can fill truthfully."""
        socks = []
        total_queue = 0
        for listener in self.listeners:
            queue, max_queue = sockets.queue_length(listener)
            total_queue += queue
            socks.append({"name": listener.name, "proto": listener.proto, "queue": queue,
                          "max_queue": max_queue or self.cfg.listen, "shared": 0, "can_offload": 0})
        now = time.time()
        workers = []
        for row in self.scoreboard.rows()[: self.num_workers]:
            proc = self.workers.get(row.wid)
            alive = proc is not None and proc.pid == row.pid
            workers.append({
                "id": row.wid,
                "pid": row.pid if alive else 0,
                "accepting": int(alive and row.status in (1, 2)),
                "requests": row.requests,
                "delta_requests": 0,
                "exceptions": row.exceptions,
                "harakiri_count": proc.harakiri_count if proc else 0,
                "signals": 0,
                "signal_queue": 0,
                "status": row.status_name if alive else ("cheap" if self.cheap else "dead"),
                "rss": _rss(row.pid) if alive else 0,
                "vsz": 0,
                "running_time": int((now - row.spawned) * 1e6) if alive else 0,
                "last_spawn": int(row.spawned),
                "respawn_count": proc.respawns if proc else 0,
                "tx": row.tx,
                "avg_rt": int(row.avg_rt),
                "request_start": row.request_start,
                "apps": [],
            })
        doc = {
            "version": __version__,
            "listen_queue": total_queue,
            "listen_queue_errors": 0,
            "signal_queue": 0,
            "load": total_queue,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "cwd": os.getcwd(),
            "locks": [],
            "sockets": socks,
            "workers": workers,
        }
        for provider in self.stats_extras:
            doc.update(provider())
        return doc


def open_stats(cfg: Any, document: Callable[[], dict[str, Any]]) -> StatsServer:
    try:
        return StatsServer(cfg.stats, document, http=cfg.stats_http, minified=cfg.stats_minified,
                           chmod=cfg.chmod_socket)
    except sockets.AddressError as exc:
        raise StartError(f"stats server: {exc}") from None


def write_pidfile(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise StartError(f"cannot write pidfile {path}: {exc.strerror or exc}") from None


def check_start(cfg: Any, held_stats: str) -> None:
    """For the reload check: raise StartError unless a new master could create its stats socket and
    pidfile. The stats address the running master holds (`held_stats`, canonical) is not probed:
    the master closes it just before its re-exec."""
    if cfg.stats and sockets.canonical_name(cfg.stats) != held_stats:
        open_stats(cfg, dict).close(vacuum=True)
    if cfg.pidfile:
        existed = os.path.lexists(cfg.pidfile)
        try:
            os.close(os.open(cfg.pidfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
            if not existed:
                os.unlink(cfg.pidfile)
        except OSError as exc:
            raise StartError(f"cannot write pidfile {cfg.pidfile}: {exc.strerror or exc}") from None


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _rss(pid: int) -> int:
    """Resident set size in bytes, from /proc (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def adopt_reexec_listeners(environ: dict[str, str] | None = None) -> dict[str, sockets.Listener]:
    """Listeners handed over by the previous master image, by name (consumed from the environ)."""
    env = os.environ if environ is None else environ
    raw = env.pop(REEXEC_LISTENERS, "")
    adopted = {}
    for line in filter(None, raw.split("\n")):
        fd, proto, origin, name = (_unescape(field) for field in line.split(":"))
        listener = sockets.from_fd(int(fd), proto, name=name, origin=origin)
        os.set_inheritable(listener.fileno(), False)
        sockets.remember_path(listener)
        adopted[name] = listener
    return adopted


def _escape(field: str) -> str:
    """A listener field for the re-exec environment: origins and names hold ':' themselves
    ('zerg:/run/app.zerg', '127.0.0.1:3031')."""
    return field.replace("%", "%25").replace(":", "%3A").replace("\n", "%0A")


def _unescape(field: str) -> str:
    return field.replace("%0A", "\n").replace("%3A", ":").replace("%25", "%")
