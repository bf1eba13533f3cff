"""The master: binds the sockets, forks the workers and supervises them.

Signal handlers only queue the signal; `run()` handles the queue between housekeeping turns
(reap, respawn, harakiri, reload progress). Signals:

    HUP         graceful reload: re-exec this master in place (same pid, same listening sockets,
                re-read config, reload the app), start new workers, and only when they are ready
                let the old ones finish their requests and exit. A check of the new config and
                app, of what the new master binds and creates, and a trial worker that must boot
                and answer --reload-check-url (trial.py) run first (killed after
                worker-reload-mercy); if it fails the old master and workers go on serving. If the
                new workers still cannot boot after the re-exec, the reload is rolled back: the
                old generation keeps serving (see roll_back) until a later HUP succeeds.
    TERM        graceful shutdown: workers stop accepting, finish what they have, exit.
    INT, QUIT   quick shutdown: workers exit at once. On a zerg (an instance with attached sockets)
                INT leaves instead: workers finish the request in hand and exit without serving the
                queue, which the zerg server or pool still holds for its other workers; QUIT is
                still quick there.
    TTIN, TTOU  one worker more, one fewer.
    USR1        log a line per worker.
    USR2        logged and ignored (gunicorn's binary upgrade; HUP is the in-place upgrade here).
    TSTP        pause / resume accepting in every worker (a zerg can take the traffic meanwhile).

Plugins (zerg server, emperor link, idle watch, cheaper, recycling, reloader) see the master as
`plugin.Host`, the Protocol that lists what they may use: they plug in through `add_reader()`,
`add_housekeeping()`, `add_timer()`, `add_ready_task()`, `add_wake_task()`, `add_stats()`,
`add_handover()` and `add_cleanup()`, read through `rows()`, `live_rows()`, `queue_lengths()`,
`worker_procs()`, `worker_count()`, `is_cheap()` and `is_stopping()`, and act through
`add_worker()`, `retire_worker()`, `recycle()`, `kill_worker()`, `go_cheap()`, `handle_hup()`,
`begin_stop()` and `set_worker_count()`, instead of growing this loop or reaching into its
attributes. Housekeeping runs
once per --check-interval, however many events (stats reads, zerg attaches, emperor bytes) wake the
loop, so checks that talk to the emperor happen once per cycle, as in uWSGI; a timer sets its own
pace (the SOS backlog watch looks every 0.1 s while loaded). A worker that becomes
ready writes a byte to a pipe the master watches: whoever waits for that (the emperor's
"accepting") hears it at once instead of at the next cycle.
"""

from __future__ import annotations

import math
import os
import selectors
import signal
import sys
import time
from typing import Any, Callable

from zergserve import __version__, compat, compiled, exitcodes, handover, metrics, proctitle, sockets
from zergserve.config import Config
from zergserve.exitcodes import StartError
from zergserve.hooks import Hooks, WorkerInfo
from zergserve.sdnotify import Notifier
from zergserve.log import logger
from zergserve.wakeup import drain, record_signals, wakeup_pipe
from zergserve.scoreboard import STARTING, Core, Row, Scoreboard, wall
from zergserve.stats import StatsServer
from zergserve.supervision import Supervisor
from zergserve.workers import LOOP_TICKS, cores
from zergserve.workers.base import WORKER_SIGNALS, Worker

_HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
            signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTSTP, signal.SIGCHLD)
_QUICK_MERCY = 3.0
_BOOT_GRACE = 30.0


_EARLY: list[int] = []  # signals that came before the master's loop was ready, see hold_signals()


def hold_signals() -> None:
    """Remember the master's signals instead of dying of them, from before the sockets listen
    until the loop runs: a HUP sent as soon as the port answers is then a reload, not a kill."""
    record_signals(_HANDLED, _EARLY)


class WorkerProc:
    """The master's record of one live worker process."""

    def __init__(self, wid: int, pid: int, spawned: float) -> None:
        self.wid = wid
        self.pid = pid
        self.spawned = spawned
        self.harakiri_count = 0
        self.respawns = 0
        self.recycle_deadline: float | None = None  # told to recycle: killed if still running then

    def rss(self) -> int:
        """Its resident set size in bytes (0 if it is gone)."""
        return _memory(self.pid)[0]


class Retiring:
    """A worker told to stop (old generation, TTOU, shutdown): killed if it outlives its deadline."""

    def __init__(self, pid: int, deadline: float | None, wid: int = 0) -> None:
        self.pid = pid
        self.deadline = deadline  # None: not told yet (old generation waiting for the new one)
        self.wid = wid  # 0: a worker of the previous image (its id is not handed over)


class Master(Supervisor):
    """Supervises a pool of workers of one class over a set of listeners."""

    def __init__(self, cfg: Config, listeners: list[sockets.Listener], app: Any, worker_class: type[Worker],
                 argv: list[str], start_cwd: str | None = None, notify: Notifier | None = None,
                 hooks: Hooks | None = None, inherited: dict[str, Any] | None = None) -> None:
        """`inherited`: what the previous image handed over (handover.take), None on a fresh start."""
        self.cfg = cfg
        self.hooks = hooks or Hooks()
        self.log = logger  # gunicorn's server.log, for hooks
        inherited = inherited or {}
        self.reexecuted = "workers" in inherited  # by a HUP: on_reload instead of on_starting
        self.notify = notify or Notifier()
        self.notified_ready = False  # READY=1 once per image: at start, or at the end of a reload
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
        self.selector: selectors.DefaultSelector = selectors.DefaultSelector()  # its fd: master_fds()
        self.housekeeping: list[Callable[[], None]] = []
        self.timers: list[list[Any]] = []  # [when due (monotonic), task returning seconds to its next turn]
        self.cleanups: list[Callable[[], None]] = []
        self._wake_tasks: list[Callable[[], None]] = []
        self._ready_tasks: list[Callable[[], None]] = []
        self.stats_extras: list[Callable[[], dict[str, Any]]] = []
        self.handovers: dict[str, Callable[[], Any]] = {}
        self.stopping: str | None = None  # graceful | leave | quick
        self._next_cycle = 0.0  # when the --check-interval checks run next
        self.zerg = any(listener.attached for listener in listeners)
        self.cheap = False
        self.stop_deadline = 0.0
        self.paused = bool(inherited.get("paused"))  # TSTP holds across a reload
        self.reload_check_pid: int | None = None
        self.reload_check_deadline = 0.0
        self.reload_check_killed = False
        self.pidfile_written: str | None = None  # the path, for --vacuum
        self.exit_code = 0
        self.started = time.monotonic()
        self.scoreboard = Scoreboard(max(self.num_workers, 1), cores=cores(cfg))
        self.stats: StatsServer | None = None
        self.metrics: metrics.MetricsServer | None = None
        self.rolled_back: str | None = None  # why this image's workers could not boot after a reload
        self.added_listeners: list[sockets.Listener] = []  # bound by this image, unknown to the previous
        self.rollback_code = 0
        self._adopt_old_workers(inherited.get("workers", []))
        for pid, fd in inherited.get("lifelines", {}).items():  # the old workers' lifelines stay with us
            os.set_inheritable(fd, False)
            self.lifelines[int(pid)] = fd
        self.add_stats(self._rollback_stats)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until told to stop; return the process exit code."""
        self.hooks.call("on_reload" if self.reexecuted else "on_starting", self)
        try:
            self._setup()
        except StartError as exc:
            logger.error("%s", exc)
            self.exit_code = exitcodes.USAGE
            self._cleanup()
            return self.exit_code
        if not self.reexecuted:
            self.hooks.call("when_ready", self)
        if self.cfg.cheap:
            self.go_cheap()
            self._notify_ready()
        elif not self.rolled_back:
            for wid in range(1, self.num_workers + 1):
                self.spawn(wid)
        self._next_cycle = time.monotonic()
        self.supervise()
        self._cleanup()
        return self.exit_code

    def _due(self) -> float:
        return min([self._next_cycle] + [timer[0] for timer in self.timers])

    def _tick(self) -> None:
        """Workers replaced and timers run at every pass; the checks once a --check-interval."""
        self._retire_old_generation()
        self._respawn_missing()
        self._run_timers()
        if time.monotonic() < self._next_cycle:
            return
        self._next_cycle = time.monotonic() + self.cfg.check_interval
        self._harakiri()
        self._kill_overdue()
        self._watch_reload_check()
        for task in self.housekeeping:
            task()

    @property
    def pid(self) -> int:
        """gunicorn's server.pid, for hooks."""
        return os.getpid()

    def add_reader(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Call `callback` from the loop whenever `fileobj` is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def remove_reader(self, fileobj: Any) -> None:
        """Stop watching `fileobj` (it may not be watched any more)."""
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def add_ready_task(self, task: Callable[[], None]) -> None:
        """Call `task` as soon as a worker says it is ready (a byte on the ready pipe)."""
        self._ready_tasks.append(task)

    def add_wake_task(self, task: Callable[[], None]) -> None:
        """Call `task` when a connection ends cheap mode and the workers are respawned."""
        self._wake_tasks.append(task)

    def rows(self) -> list[Row]:
        """The scoreboard rows of worker ids 1..num_workers (live or not)."""
        return self.scoreboard.rows()[: self.num_workers]

    def live_rows(self) -> list[Row]:
        """The rows of the workers that run now (a row whose pid is a live worker of this master)."""
        return [row for row in self.rows() if row.wid in self.workers and self.workers[row.wid].pid == row.pid]

    def worker_procs(self) -> list[WorkerProc]:
        """The live workers' records (pid, when spawned, recycle deadline)."""
        return list(self.workers.values())

    def worker_count(self) -> int:
        """How many workers to keep now (TTIN/TTOU and the cheaper subsystem change it)."""
        return self.num_workers

    def is_cheap(self) -> bool:
        """Whether the workers are stopped and this loop waits on the sockets (--idle, --cheap)."""
        return self.cheap

    def is_stopping(self) -> bool:
        return self.stopping is not None

    def queue_lengths(self) -> list[tuple[int, str]]:
        """(connections waiting in the backlog, address) of every listening socket."""
        return [(sockets.queue_length(listener)[0], listener.name) for listener in self.listeners]

    def set_worker_count(self, count: int) -> None:
        """How many workers to keep (the cheaper subsystem's start, before the first spawn)."""
        self.num_workers = count

    def kill_worker(self, wid: int) -> None:
        """SIGKILL worker `wid` now (no second kill: it is being reaped, then respawned)."""
        proc = self.workers.get(wid)
        if proc is not None:
            proc.recycle_deadline = math.inf
            _kill(proc.pid, signal.SIGKILL)

    def add_housekeeping(self, task: Callable[[], None]) -> None:
        """Call `task` once per master cycle (at least every --check-interval seconds)."""
        self.housekeeping.append(task)

    def add_timer(self, task: Callable[[], float]) -> None:
        """Call `task` from the loop now and then whenever it is due again: it returns the seconds until
        then (a watch that must look more often than --check-interval at times: the SOS backlog watch)."""
        self.timers.append([time.monotonic(), task])

    def _run_timers(self) -> None:
        for timer in self.timers:
            if time.monotonic() >= timer[0]:
                timer[0] = time.monotonic() + timer[1]()

    def add_cleanup(self, task: Callable[[], None]) -> None:
        """Call `task` when the master exits (not when it re-executes for a reload)."""
        self.cleanups.append(task)

    def add_stats(self, provider: Callable[[], dict[str, Any]]) -> None:
        """Merge `provider()`'s keys into every stats document."""
        self.stats_extras.append(provider)

    def add_handover(self, key: str, provider: Callable[[], Any]) -> None:
        """Hand `provider()` (JSON-able) to the master's next image as `key` of its inherited state
        (see handover.py): state that must outlive a reload."""
        self.handovers[key] = provider

    def _setup(self) -> None:
        cfg = self.cfg
        proctitle.set_title(cfg, "master", master=True)
        wake_r, wake_w = wakeup_pipe()
        self._wake = (wake_r, wake_w)
        record_signals(_HANDLED, self.signals)
        self.signals.extend(_EARLY)
        _EARLY.clear()
        self.add_reader(wake_r, lambda: drain(wake_r))
        ready_r, ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ready_w = ready_w
        self.add_reader(ready_r, lambda: self._worker_ready(ready_r))
        if cfg.stats:
            self.stats = open_stats(cfg.stats, cfg, self.stats_document)
            self.add_reader(self.stats, self.stats.serve_one)
            logger.info("stats server enabled on %s", cfg.stats)
        if cfg.metrics:
            self.metrics = open_metrics(cfg.metrics, cfg, self.metrics_text)
            self.add_reader(self.metrics, self.metrics.serve_one)
            logger.info("metrics server enabled on %s (GET /metrics)", cfg.metrics)
        if cfg.pidfile:
            write_pidfile(cfg.pidfile)
            self.pidfile_written = cfg.pidfile
        for listener in self.listeners:
            logger.info("%s socket %s (%s, fd %d)", listener.proto, listener.name, listener.origin,
                        listener.fileno())
        for warning in self.worker_class.start_warnings(self.listeners):
            logger.warning("%s", warning)
        logger.info("zergserve %s master %d: %d %s worker(s), request path %s", __version__, os.getpid(),
                    self.num_workers, cfg.worker, compiled.STATUS)

    def _worker_ready(self, ready_r: int) -> None:
        drain(ready_r)
        self._notify_ready()
        for task in self._ready_tasks:
            task()

    def _notify_ready(self) -> None:
        """READY=1 (systemd) once every worker of this image accepts: the start is done, or the
        reload that re-executed this image is."""
        if self.notified_ready or self.stopping:
            return
        if not self.cheap and (len(self.workers) < self.num_workers or
                               any(self.scoreboard.row(wid).status == STARTING for wid in self.workers)):
            return
        self.notified_ready = True
        self.notify.ready(f"serving on {', '.join(item.name for item in self.listeners)} with "
                          f"{self.num_workers} {self.cfg.worker} worker(s)")

    def master_fds(self) -> list[int]:
        """Descriptors a forked worker must close: they belong to the master's loop."""
        fds = [key.fd for key in self.selector.get_map().values()]
        return fds + [self._wake[1], self.selector.fileno(), *self.lifelines.values()]

    # --- workers ----------------------------------------------------------------------------

    def spawn(self, wid: int) -> None:
        if wid > self.scoreboard.size:
            self.scoreboard.grow(wid)
        self.scoreboard.reset(wid, 0)
        self.hooks.call("pre_fork", self, WorkerInfo(wid, None))

        def child_setup() -> None:
            compat.forked(wid, self.scoreboard.fd)
            self.hooks.call("post_fork", self, WorkerInfo(wid, os.getpid()))

        life_r, life_w = os.pipe()  # the worker's lifeline: its closing says the master died
        try:
            pid = fork_worker(self.worker_class, wid, self.cfg, self.listeners, self.app, self.scoreboard,
                              self.master_fds() + [life_w], self._ready_w, self.paused, child_setup,
                              on_exit=lambda: self._worker_exit(WorkerInfo(wid, os.getpid())), lifeline_fd=life_r)
        except OSError:
            os.close(life_w)
            raise
        finally:
            os.close(life_r)
        self.lifelines[pid] = life_w
        self.scoreboard.set_pid(wid, pid)
        previous = self.history.get(wid)
        proc = WorkerProc(wid, pid, time.monotonic())
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
            if pid == self.reload_check_pid:
                self._reload_check_done(code)
                continue
            item = self.retiring.pop(pid, None)
            if item is not None:
                self.hooks.call("child_exit", self, WorkerInfo(item.wid, pid))
                if item.deadline is None and self.rolled_back:
                    logger.error("worker pid %d of the previous generation exited (code %d) and cannot be "
                                 "replaced until a reload succeeds; %d left", pid, code, len(self._previous()))
                continue
            for wid, proc in list(self.workers.items()):
                if proc.pid == pid:
                    del self.workers[wid]
                    self.hooks.call("child_exit", self, WorkerInfo(wid, pid))
                    self._worker_died(proc, code)
                    break

    def _worker_exit(self, info: WorkerInfo) -> None:
        """In a worker that leaves its loop: the app's uwsgi.atexit, then the worker_exit hook."""
        compat.exiting()
        self.hooks.call("worker_exit", self, info)

    def _worker_died(self, proc: WorkerProc, code: int) -> None:
        if self.stopping:
            return
        if self._previous() and not self._booted(proc):  # a reload's new worker, the old ones wait
            what = {exitcodes.APP_LOAD_ERROR: "could not load the app", exitcodes.BOOT_ERROR: "could not boot"}
            detail = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            self.roll_back(f"new worker {proc.wid} (pid {proc.pid}) {what.get(code, 'died before it was ready')} "
                           f"({detail})", code if code in what else exitcodes.BOOT_ERROR)
            return
        if code in (exitcodes.APP_LOAD_ERROR, exitcodes.BOOT_ERROR) and not self._booted(proc):
            failed = "load the app" if code == exitcodes.APP_LOAD_ERROR else "boot"
            logger.error("worker %d (pid %d) could not %s; stopping the master instead of respawning it",
                         proc.wid, proc.pid, failed)
            self.exit_code = code
            self.begin_stop("quick")
            return
        if code < 0:
            logger.error("worker %d (pid %d) killed by signal %d", proc.wid, proc.pid, -code)
        elif code != 0:
            logger.error("worker %d (pid %d) exited with code %d", proc.wid, proc.pid, code)
        if proc.wid > self.num_workers:
            return
        lived = time.monotonic() - proc.spawned
        delay = 0.0 if lived > 1.0 or code == 0 else min(0.1 * 2 ** min(proc.respawns, 6), 5.0)
        self.respawn_at[proc.wid] = time.monotonic() + delay

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
            self._retire(proc.pid, self.cfg.worker_reload_mercy, proc.wid)
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
        for task in self._wake_tasks:
            task()

    def _respawn_missing(self) -> None:
        if self.cheap or self.rolled_back:
            return
        now = time.monotonic()
        for wid in range(1, self.num_workers + 1):
            if wid not in self.workers and self.respawn_at.get(wid, 0.0) <= now:
                self.respawn_at.pop(wid, None)
                self.spawn(wid)

    def _harakiri(self) -> None:
        """Kill a worker stuck for more than --harakiri seconds: a sync worker on one request, an
        event-loop worker (workers.LOOP_TICKS) whose loop has not ticked its heartbeat while busy."""
        limit = self.cfg.harakiri
        if not limit:
            return
        now = time.monotonic()
        ticks = self.cfg.worker in LOOP_TICKS
        for wid, proc in self.workers.items():
            row = self.scoreboard.row(wid)
            if not row.request_start:  # with threads: the oldest request in flight
                continue
            since = max(row.heartbeat, row.request_start) if ticks else row.request_start
            if now - since > limit:
                proc.harakiri_count += 1
                what = "event loop stuck" if ticks else "running"
                logger.error("*** HARAKIRI ON WORKER %d (pid %d, request %r, %s for %.1fs) ***",
                             wid, proc.pid, row.request, what, now - since)
                _kill(proc.pid, signal.SIGKILL)

    def recycle(self, wid: int, reason: str) -> None:
        """Replace a worker after the request in hand (SIGHUP: the worker leaves the queue to the
        others, as max-requests does); respawned when it exits, killed past worker-reload-mercy."""
        proc = self.workers.get(wid)
        if proc is None or proc.recycle_deadline is not None:
            return
        logger.info("worker %d (pid %d): %s, recycling it after the request in hand", wid, proc.pid, reason)
        proc.recycle_deadline = time.monotonic() + self.cfg.worker_reload_mercy
        _kill(proc.pid, signal.SIGHUP)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for proc in self.workers.values():
            if proc.recycle_deadline is not None and now > proc.recycle_deadline:
                logger.error("worker %d (pid %d) still running after worker-reload-mercy: killing it",
                             proc.wid, proc.pid)
                _kill(proc.pid, signal.SIGKILL)
                proc.recycle_deadline = math.inf
        for pid, item in self.retiring.items():
            if item.deadline is not None and now > item.deadline:
                logger.error("worker pid %d still running after worker-reload-mercy: killing it", pid)
                _kill(pid, signal.SIGKILL)
                item.deadline = math.inf

    def _retire(self, pid: int, mercy: float, wid: int = 0) -> None:
        self.retiring[pid] = Retiring(pid, time.monotonic() + mercy, wid)
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
        if self.reload_check_pid is not None:
            logger.info("reload already in progress")
            return
        logger.info("graceful reload requested: checking the new configuration and app")
        self.notify.reloading("reloading: checking the new configuration and app")
        args = [sys.executable, "-m", "zergserve", *self.argv, "--check-config"]
        # The check binds what the new master would bind, except what this one holds and passes on.
        env = handover.environ_with({
            "listeners": handover.listener_records(self.listeners),
            "reload_check": [sockets.canonical_name(addr) for addr in (self.cfg.stats, self.cfg.metrics) if addr]})
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
                os._exit(exitcodes.EXEC_FAILED)
        self.reload_check_pid = pid
        self.reload_check_deadline = time.monotonic() + self.cfg.worker_reload_mercy
        self.reload_check_killed = False

    def _watch_reload_check(self) -> None:
        """A check stuck in the new app's import would answer every later HUP with "reload already
        in progress": past worker-reload-mercy it is killed and the reload abandoned."""
        if self.reload_check_pid is None or self.reload_check_killed or time.monotonic() < self.reload_check_deadline:
            return
        logger.error("reload aborted: the check of the new configuration and app (pid %d) took more than "
                     "%ds (worker-reload-mercy); killed it; old workers keep serving",
                     self.reload_check_pid, self.cfg.worker_reload_mercy)
        _kill(self.reload_check_pid, signal.SIGKILL)
        # The slot is free at once: a HUP right after this line starts a new check instead of meeting
        # "reload already in progress" until the killed one is reaped (as nobody's child, then).
        self.reload_check_pid = None
        self.notify.ready("reload aborted (the check took too long); old workers keep serving")

    def _reload_check_done(self, code: int) -> None:
        self.reload_check_pid = None
        if self.reload_check_killed:
            return
        if code != 0:
            logger.error("reload aborted: the new configuration or app failed its check (exit %d); "
                         "old workers keep serving", code)
            self.notify.ready(f"reload aborted (check exit {code}); old workers keep serving")
            return
        self.reexec()

    def reexec(self) -> None:
        """Replace this master's image with a fresh one: same pid, so the workers stay its children."""
        logger.info("re-executing the master (pid %d) for a graceful reload", os.getpid())
        for fd in self.lifelines.values():
            os.set_inheritable(fd, True)
        state = {"listeners": handover.listener_records(self.listeners),
                 "workers": [*(w.pid for w in self.workers.values()), *self.retiring], "paused": self.paused,
                 "lifelines": {str(pid): fd for pid, fd in self.lifelines.items()}}
        state.update({key: provider() for key, provider in self.handovers.items()})
        for server in (self.stats, self.metrics):
            if server is not None:
                server.close(vacuum=False)
        handover.exec_self(self.argv, state, self.listeners, cwd=self.start_cwd, extra_env=self.notify.handover())

    def _adopt_old_workers(self, pids: list[int]) -> None:
        """After a re-exec: the previous image's workers are still our children; retire them later."""
        for pid in pids:
            self.retiring[int(pid)] = Retiring(int(pid), None)

    def _previous(self) -> list[int]:
        """The previous image's workers that still serve: adopted, not told to stop yet."""
        return [pid for pid, item in self.retiring.items() if item.deadline is None]

    def roll_back(self, reason: str, code: int) -> None:
        """The new generation cannot boot after a reload: stop it and spawn no more of it; the
        previous generation, still running the old code, keeps serving until a later HUP
        succeeds. Only when the last of it is gone does the master stop."""
        self.rolled_back, self.rollback_code = reason, code
        logger.error("reload rolled back: %s; the %d worker(s) of the previous generation keep serving; "
                     "fix the app or configuration and send HUP again", reason, len(self._previous()))
        for proc in self.workers.values():
            self._retire(proc.pid, self.cfg.worker_reload_mercy)
        self.workers.clear()
        self.respawn_at.clear()
        for listener in self.added_listeners:  # a refused connection, not one left waiting in a backlog
            self.listeners.remove(listener)
            sockets.close_listener(listener, vacuum=True)
            logger.error("closed %s: the rolled-back configuration added it; the previous workers do not "
                         "serve it", listener.name)
        self.added_listeners = []
        self.notified_ready = True
        self.notify.ready(f"reload rolled back ({reason}); the previous workers keep serving")

    def _rollback_stats(self) -> dict[str, Any]:
        if not self.rolled_back:
            return {}
        return {"reload_rolled_back": self.rolled_back, "previous_workers": self._previous()}

    def _retire_old_generation(self) -> None:
        """Tell the old generation to stop once every new worker is ready; roll the reload back if
        they are not within the boot grace. After a rollback, stop the master once the old
        generation is gone."""
        waiting = [item for item in self.retiring.values() if item.deadline is None]
        if self.rolled_back:
            if not waiting:
                logger.error("no worker left: the previous generation is gone and the new one cannot boot "
                             "(%s); stopping the master", self.rolled_back)
                self.exit_code = self.rollback_code
                self.begin_stop("quick")
            return
        if not waiting:
            return
        ready = all(self.scoreboard.row(wid).status != STARTING for wid in self.workers)
        grace = max(_BOOT_GRACE, self.cfg.worker_reload_mercy)  # the check's trial worker booted within mercy
        if not ready and time.monotonic() - self.started > grace:
            self.roll_back(f"new workers not ready after {grace:g}s", exitcodes.BOOT_ERROR)
            return
        if ready:
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
        self.add_worker("TTIN")

    def handle_ttou(self) -> None:
        self.retire_worker("TTOU")

    def add_worker(self, reason: str) -> None:
        """One worker more (TTIN, the cheaper subsystem)."""
        if self.rolled_back:
            logger.info("%s ignored: the reload was rolled back, the new app cannot boot", reason)
            return
        self.num_workers += 1
        logger.info("%s: now %d workers", reason, self.num_workers)
        if self.cheap:
            # Not now: the listening sockets sit in the master's loop, so a worker forked now would
            # close them as master fds. The wake-up spawns every worker, this one included.
            self.scoreboard.grow(self.num_workers)
            return
        self.spawn(self.num_workers)

    def retire_worker(self, reason: str) -> None:
        """One worker fewer, the highest id (TTOU, the cheaper subsystem): it stops accepting,
        finishes the request in hand and exits; killed past worker-reload-mercy."""
        if self.num_workers <= 1:
            logger.info("%s: keeping the last worker", reason)
            return
        wid = self.num_workers
        self.num_workers -= 1
        self.respawn_at.pop(wid, None)
        proc = self.workers.pop(wid, None)
        if proc is not None:
            self._retire(proc.pid, self.cfg.worker_reload_mercy, wid)
        logger.info("%s: now %d workers", reason, self.num_workers)

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
        for pid in [*(proc.pid for proc in self.workers.values()), *self._previous()]:
            _kill(pid, signal.SIGTSTP)  # the previous generation too: it serves during a reload or rollback

    # --- stopping ---------------------------------------------------------------------------

    def begin_stop(self, how: str, exit_code: int | None = None) -> None:
        """Start a shutdown: 'graceful' lets requests finish and serves the queue, 'leave' (a zerg's
        INT) lets requests finish, both within worker-reload-mercy; 'quick' exits at once.
        `exit_code`: what the master then exits with (FAILURE when the emperor is gone)."""
        if exit_code is not None:
            self.exit_code = exit_code
        if self.stopping == "quick" or self.stopping == how:
            return
        self.stopping = how
        if self.reload_check_pid is not None and not self.reload_check_killed:
            _kill(self.reload_check_pid, signal.SIGKILL)  # no reload after a stop
            self.reload_check_killed = True
        if how == "graceful":
            mercy, signum = float(self.cfg.worker_reload_mercy), signal.SIGTERM
        elif how == "leave":
            mercy, signum = float(self.cfg.worker_reload_mercy), signal.SIGINT
        else:
            mercy, signum = _QUICK_MERCY, signal.SIGQUIT
        logger.info("%s shutdown: stopping %d worker(s)", how, len(self.workers) + len(self.retiring))
        self.notify.stopping(f"{how} shutdown")
        self.stop_deadline = time.monotonic() + mercy
        for pid in [proc.pid for proc in self.workers.values()] + list(self.retiring):
            _kill(pid, signum)

    def _stop_progress(self) -> bool:
        """True once every worker is gone (killing those past the deadline)."""
        if not self.workers and not self.retiring:
            return True
        if time.monotonic() > self.stop_deadline:
            for pid in [proc.pid for proc in self.workers.values()] + list(self.retiring):
                logger.error("worker pid %d did not stop in time: killing it", pid)
                _kill(pid, signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5.0
        return False

    def _cleanup(self) -> None:
        vacuum = self.cfg.vacuum
        self.hooks.call("on_exit", self)
        for task in self.cleanups:
            task()
        for listener in self.listeners:
            sockets.close_listener(listener, vacuum)
        for server in (self.stats, self.metrics):
            if server is not None:
                server.close(vacuum)
        if vacuum and self.pidfile_written is not None:
            try:
                os.unlink(self.pidfile_written)
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
        workers: list[dict[str, Any]] = []  # JSON objects
        # Up to --processes: workers stopped by TTOU or the cheaper subsystem show as "cheap", as in uWSGI.
        for row in self.scoreboard.rows()[: max(self.num_workers, self.cfg.processes)]:
            proc = self.workers.get(row.wid)
            alive = proc is not None and proc.pid == row.pid
            total = self.scoreboard.lifetime(row.wid)
            rss, vsz = _memory(row.pid) if alive else (0, 0)
            workers.append({
                "id": row.wid,
                "pid": row.pid if alive else 0,
                "accepting": int(alive and row.status in (1, 2)),
                "requests": total.requests,
                "delta_requests": row.requests,
                "exceptions": total.exceptions,
                "harakiri_count": proc.harakiri_count if proc else 0,
                "signals": 0,
                "signal_queue": 0,
                "status": row.status_name if alive else ("cheap" if self.cheap or row.wid > self.num_workers
                                                           else "dead"),
                "rss": rss,
                "vsz": vsz,
                "running_time": total.running_time,
                "last_spawn": int(row.spawned),
                "respawn_count": proc.respawns if proc else 0,
                "tx": total.tx,
                "avg_rt": int(row.avg_rt),
                "request_start": wall(row.request_start),
                "cores": self._cores(row),
                "websockets": row.websockets if alive else 0,
                "connections": row.connections if alive else 0,
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
            "websockets": sum(worker["websockets"] for worker in workers),
        }
        for provider in self.stats_extras:
            doc.update(provider())
        return doc

    def _cores(self, row: Row) -> list[dict[str, Any]]:
        """uWSGI's cores of a worker: its request threads (gthread), else the one the row stands for."""
        cores = self.scoreboard.core_list(row.wid) or [Core(row.requests, row.request_start)]
        return [{"id": i, "requests": requests, "static_requests": 0, "routed_requests": 0,
                 "offloaded_requests": 0, "write_errors": 0, "read_errors": 0, "in_request": int(bool(start)),
                 "vars": [], "req_info": {"request_start": wall(start)} if start else {}}
                for i, (requests, start) in enumerate(cores)]

    def metrics_text(self) -> str:
        """The Prometheus exposition of `stats_document()` and the workers' response times."""
        totals = [self.scoreboard.lifetime(wid) for wid in range(1, self.num_workers + 1)]
        return metrics.render(metrics.instance(self.stats_document(), totals))


def fork_worker(worker_class: type[Worker], wid: int, cfg: Config, listeners: list[sockets.Listener], app: Any,
                scoreboard: Scoreboard, close_fds: list[int], ready_w: int, paused: bool = False,
                child_setup: Callable[[], None] | None = None,
                on_exit: Callable[[], None] | None = None, lifeline_fd: int = -1) -> int:
    """Fork worker `wid` and return its pid; the child becomes the worker and never returns. The
    master's workers and the reload check's trial worker are born the same way."""
    sys.stdout.flush()
    sys.stderr.flush()
    # Signals sent to a new worker before it installs its handlers wait, instead of landing in
    # the master's handlers it inherited (a TTOU right after a TTIN would be lost).
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
        raise
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            for signum in _HANDLED:
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # as the master: see handle_usr2
            if child_setup is not None:
                child_setup()
            worker = worker_class(wid, cfg, listeners, app, scoreboard, close_fds)
            worker.on_exit = on_exit
            worker.lifeline_fd = lifeline_fd
            worker.paused = paused
            worker.ready_fd = ready_w
            worker.run()
        finally:
            os._exit(exitcodes.BOOT_ERROR)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
    return pid


def open_stats(address: str, cfg: Config, document: Callable[[], dict[str, Any]]) -> StatsServer:
    try:
        return StatsServer(address, document, http=cfg.stats_http, minified=cfg.stats_minified,
                           chmod=cfg.chmod_socket)
    except sockets.AddressError as exc:
        raise StartError(f"stats server: {exc}") from None


def open_metrics(address: str, cfg: Config, document: Callable[[], str]) -> metrics.MetricsServer:
    try:
        return metrics.MetricsServer(address, document, chmod=cfg.chmod_socket)
    except sockets.AddressError as exc:
        raise StartError(f"metrics server: {exc}") from None


def write_pidfile(path: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise StartError(f"cannot write pidfile {path}: {exc.strerror or exc}") from None


def check_start(cfg: Config, held_names: list[str]) -> None:
    """For the reload check: raise StartError unless a new master could create its stats and metrics
    sockets and pidfile. The addresses the running master holds (`held_names`, canonical) are
    not probed: the master closes them just before its re-exec."""
    if cfg.stats and sockets.canonical_name(cfg.stats) not in held_names:
        open_stats(cfg.stats, cfg, dict).close(vacuum=True)
    if cfg.metrics and sockets.canonical_name(cfg.metrics) not in held_names:
        open_metrics(cfg.metrics, cfg, str).close(vacuum=True)
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


def _memory(pid: int) -> tuple[int, int]:
    """Resident set size and virtual size in bytes, from /proc (0, 0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            fields = fh.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[1]) * page, int(fields[0]) * page
    except (OSError, IndexError, ValueError):
        return 0, 0
