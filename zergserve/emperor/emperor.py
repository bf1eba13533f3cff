"""The emperor's loop: scan the monitors, spawn, reload, stop and respawn vassals, and keep them honest.

    new file            spawn a vassal (unless blacklisted and still throttled, or over the global
                        spawn budget of throttle.py: new and healthy vassals first, failing ones last)
    newer mtime         reload it (byte 1)
    file removed        stop it (byte 0, or 2 with --emperor-graceful-shutdown)
    vassal died         respawn it at once; if it died before it was loyal (served a request) it is
                        blacklisted and each later start waits longer, up to --emperor-max-throttle:
                        --emperor-throttle ms after the second death, twice that after the third...
                        The loop wakes when the wait is over, whatever --emperor-freq says
    cannot start        (exec failed: a missing --binary-path, say) blacklisted the same way
    no heartbeat        SIGKILL and respawn (for vassals that send heartbeats)
    vassal asks to die  (byte 22, --die-on-idle) stop it gracefully (byte 2): it may hold a request

Broodlord (zergs spawned on a vassal's SOS, and their boot): emperor/broodlord.py.

Signals: HUP reloads every vassal, USR1 logs a line per vassal, URG clears the blacklist, INT, TERM and
QUIT stop every vassal, wait --reload-mercy seconds, then kill the rest.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from typing import Any

from zergserve import __version__, metrics, proctitle, sockets
from zergserve.config import Config
from zergserve.emperor import protocol, tyrant
from zergserve.emperor.broodlord import Broodlord
from zergserve.emperor.monitor import Inotify, Monitor, build_monitor, only_non_vassal_writes
from zergserve.emperor.throttle import Throttle
from zergserve.emperor.vassal import RUNNING, STOPPING, Vassal
from zergserve.exitcodes import StartError
from zergserve.log import logger, printable
from zergserve.sdnotify import Notifier
from zergserve.wakeup import drain, record_signals, wakeup_pipe
from zergserve.stats import StatsServer
from zergserve.supervision import Supervisor

_SETTLE = 0.1
_BOOTED = (protocol.SPAWNED, protocol.ACCEPTING, protocol.LOYAL)  # a vassal saying it started: its slot frees
_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGURG,
            signal.SIGCHLD, signal.SIGWINCH)


class Emperor(Supervisor):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.notify = Notifier.take(os.environ)  # taken out first: vassals inherit the environment
        self.notified_vassals = -1
        self.monitors = [build_monitor(arg, cfg) for arg in cfg.emperor]
        self.vassals: dict[int, Vassal] = {}  # by id(): zergs share their vassal's name
        self.throttle = Throttle(cfg.emperor_spawn_burst, cfg.emperor_throttle, cfg.emperor_max_throttle)
        self.signals: list[int] = []
        self.selector = selectors.DefaultSelector()
        self.inotify = Inotify()
        self.stats: StatsServer | None = None
        self.metrics: metrics.MetricsServer | None = None
        self.stop_all_deadline = 0.0
        self.scan_now = True
        self.last_scan = 0.0
        self.scans = 0
        self.retry_at = 0.0  # when the next scan is due before --emperor-freq: a budget or throttle expires
        self.held = False  # a start was refused for want of a slot: scan again when one frees
        self.broodlord_num = 0
        self.refused: dict[str, str] = {}  # files (tyrant checks) and zergs refused, with the reason last logged
        self.broodlord = Broodlord(self)

    def start(self) -> None:
        """Create the stats and metrics sockets and the pidfile; StartError names what cannot be made."""
        cfg = self.cfg
        what = "stats"
        try:
            if cfg.emperor_stats:
                self.stats = StatsServer(cfg.emperor_stats, self.stats_document, http=cfg.stats_http)
                self.selector.register(self.stats, selectors.EVENT_READ, self.stats.serve_one)
            what = "metrics"
            if cfg.emperor_metrics:
                self.metrics = metrics.MetricsServer(cfg.emperor_metrics, self.metrics_text)
                self.selector.register(self.metrics, selectors.EVENT_READ, self.metrics.serve_one)
        except sockets.AddressError as exc:
            self.close_servers()
            raise StartError(f"emperor {what} server: {exc}") from None
        if cfg.emperor_pidfile:
            try:
                with open(cfg.emperor_pidfile, "w") as fh:
                    fh.write(f"{os.getpid()}\n")
            except OSError as exc:
                self.close_servers()
                raise StartError(f"cannot write emperor pidfile {cfg.emperor_pidfile}: "
                                 f"{exc.strerror or exc}") from None

    def close_servers(self) -> None:
        for server in (self.stats, self.metrics):
            if server is not None:
                server.close(vacuum=True)
        self.stats = self.metrics = None

    def run(self) -> int:
        proctitle.set_title(self.cfg, "emperor", master=True)
        wake_r, _ = wakeup_pipe()
        record_signals(_SIGNALS, self.signals)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.selector.register(wake_r, selectors.EVENT_READ, lambda: drain(wake_r))
        if self.inotify.fileno() >= 0:
            for monitor in self.monitors:
                for path in monitor.watch_dirs():
                    self.inotify.watch(path)
            self.selector.register(self.inotify, selectors.EVENT_READ, self._changed)
        for monitor in self.monitors:
            monitor.attach(self.selector, self._wake_at)
        logger.info("*** starting zergserve %s emperor (pid %d) on %s ***", __version__, os.getpid(),
                    ", ".join(m.name for m in self.monitors))
        self.supervise()
        logger.info("The Emperor is buried.")
        self.close_servers()
        if self.cfg.emperor_pidfile:
            _remove_pidfile(self.cfg.emperor_pidfile)
        return 0

    def is_stopping(self) -> bool:
        return bool(self.stop_all_deadline)

    def _next_scan(self) -> float:
        """When the monitors are scanned next: every --emperor-freq, sooner after a change."""
        next_scan = self.last_scan + self.cfg.emperor_freq
        return min(next_scan, self.retry_at) if self.retry_at else next_scan

    def _due(self) -> float:
        """The next scan, and at least a pass a second for heartbeats, zergs' boots and stops."""
        now = time.monotonic()
        return now if self.scan_now else min(self._next_scan(), now + 1.0)

    def _tick(self) -> None:
        if self.scan_now or time.monotonic() >= self._next_scan():
            self.scan_now = False
            self.retry_at = 0.0
            self.last_scan = time.monotonic()
            self.scan()
            self._notify_vassals()
        self._check_heartbeats()
        self.broodlord.check_boots()
        self._kill_overdue_stops()

    # --- scanning ---------------------------------------------------------------------------

    def _changed(self) -> None:
        """A file changed: scan shortly, once the writer is likely done (create + write coalesce)."""
        if only_non_vassal_writes(self.inotify.changes(), self.monitors):
            return
        soon = time.monotonic() + _SETTLE
        self.retry_at = min(self.retry_at, soon) if self.retry_at else soon

    def scan(self) -> None:
        self.scans += 1
        self.held = False
        absent: list[tuple[str, Monitor, float]] = []
        for monitor in self.monitors:
            found = monitor.scan()
            known = {v.name: v for v in self.vassals.values() if v.monitor is monitor and not v.zerg}
            for name, mtime in sorted(found.items()):
                vassal = known.get(name)
                if vassal is None:
                    absent.append((name, monitor, mtime))
                elif self.cfg.emperor_tyrant and vassal.status == RUNNING and self._tyrant_changed(vassal):
                    vassal.stop(self.cfg.emperor_graceful_shutdown)
                elif mtime > vassal.last_mod and vassal.status == RUNNING:
                    vassal.last_mod = mtime
                    vassal.reload()
            for vassal in list(self.vassals.values()):
                if vassal.monitor is not monitor or vassal.status != RUNNING:
                    continue
                if vassal.file not in found:
                    vassal.stop(self.cfg.emperor_graceful_shutdown)
        # new and healthy vassals first, in file order; then the failing ones, the earliest due first.
        # The slots are counted as of the scan's start: a spawn is slow on a loaded host, and a slot
        # that expires meanwhile must not let one scan start every vassal (and keep the loop away)
        blacklist = self.throttle.blacklist
        absent.sort(key=lambda item: (item[0] in blacklist, blacklist[item[0]].due() if item[0] in blacklist else 0))
        started = time.monotonic()
        for name, monitor, mtime in absent:
            self.add(name, monitor, mtime, at=started)

    def add(self, file: str, monitor: Monitor, mtime: float, zerg: bool = False, at: float = 0.0) -> Vassal | None:
        """Start a vassal from `file` (its [zerg] section for a zerg), unless it must wait; the
        global budget is counted as of `at` (time.monotonic(); 0: now)."""
        name = file + ":zerg" if zerg else file
        backoff = self.throttle.backoff(name)
        if backoff:
            self._wake_at(time.monotonic() + backoff)
            return None
        checked = None
        if self.cfg.emperor_tyrant:
            checked = self._tyrant_check(file, monitor)
            if checked is None:
                return None
        try:
            failing = self.throttle.failing(name)
            wait = self.throttle.allow(failing, *self._starting(at or time.monotonic()))
            if wait:
                self.held = True
                self._wake_at(time.monotonic() + wait)
                return None
            vassal = Vassal(file, monitor, mtime, zerg)
            vassal.failing = failing
            if checked is not None:
                vassal.uid, vassal.gid, vassal.ident = checked.uid, checked.gid, checked.ident
            if zerg:
                self.broodlord_num += 1
            try:
                sock = vassal.spawn(self.cfg, self.broodlord_num, checked.fd if checked is not None else -1)
            except OSError as exc:
                logger.error("[emperor] %s", exc)  # names escaped by Vassal.spawn
                if zerg:
                    self.broodlord.boot_failed(vassal, "cannot start")
                elif not self.cfg.emperor_no_blacklist:
                    self.throttle.failed(name)
                if self.throttle.failing(name):
                    self._wake_at(time.monotonic() + self.throttle.backoff(name))
                return None
        finally:
            if checked is not None:
                checked.close()
        self.vassals[id(vassal)] = vassal
        self.selector.register(sock, selectors.EVENT_READ, lambda v=vassal: self._message(v))
        return vassal

    def _tyrant_check(self, file: str, monitor: Monitor) -> tyrant.CheckedConfig | None:
        """Tyrant mode: the checked, open file a vassal runs from (the caller closes it), or None
        (logged once per reason) if it may not run."""
        try:
            checked = monitor.open_checked(file, self.cfg.emperor_tyrant_nofollow)
        except tyrant.TyrantError as exc:
            if self.refused.get(file) != str(exc):
                self.refused[file] = str(exc)
                logger.error("[emperor-tyrant] %s", printable(str(exc)))
            return None
        self.refused.pop(file, None)
        return checked

    def _tyrant_changed(self, vassal: Vassal) -> bool:
        """Whether a running vassal's file changed owner, or was replaced by another file (the
        vassal read the old one through its descriptor): either way it must be checked and run anew."""
        checked = self._tyrant_check(vassal.file, vassal.monitor)
        if checked is not None:
            checked.close()
        if checked is None or (checked.uid, checked.gid) != (vassal.uid, vassal.gid):
            logger.error("[emperor] !!! permissions of file %s changed. stopping the instance... !!!", vassal.label)
            return True
        if checked.ident != vassal.ident:
            logger.info("[emperor-tyrant] file %s was replaced: restarting its vassal from the new file", vassal.label)
            return True
        return False

    def _wake_at(self, when: float) -> None:
        """Scan at `when` (time.monotonic()) if that is sooner than already planned."""
        self.retry_at = min(self.retry_at, when) if self.retry_at else when

    def _starting(self, now: float) -> tuple[int, int, float]:
        """How many vassals are starting at `now`, how many of those are failing ones, and in how
        many seconds the first of them stops counting as starting, whatever it does (a vassal
        spawned after `now` counts as starting)."""
        allowance = self.cfg.emperor_throttle / 1000
        starting = [v for v in self.vassals.values() if v.starting(now, allowance)]
        slot_in = min((v.spawned_at + allowance - now for v in starting), default=0.0)
        return len(starting), sum(v.failing for v in starting), max(slot_in, 0.001)

    # --- messages from vassals --------------------------------------------------------------

    def _message(self, vassal: Vassal) -> None:
        try:
            data = vassal.sock.recv(64) if vassal.sock is not None else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if vassal.sock is not None:
                self.selector.unregister(vassal.sock)
                vassal.close()
            if vassal.status == RUNNING:
                logger.info("[emperor] curse the vassal %s (pid %d)", vassal.label, vassal.pid)
            vassal.set_stopping()
            return
        now = time.time()
        sos = 0
        if self.held and not vassal.booted and any(b in _BOOTED for b in data):
            self.scan_now = True  # its slot is free: a start that was refused may go now
        for byte in data:
            if byte in _BOOTED:
                vassal.booted = True
            if byte == protocol.SPAWNED:
                vassal.ready, vassal.last_ready = True, now
                logger.info("[emperor] vassal %s has been spawned", vassal.label)
            elif byte == protocol.ACCEPTING:
                vassal.accepting, vassal.last_accepting = True, now
                logger.info("[emperor] vassal %s is ready to accept requests", vassal.label)
                if vassal.zerg:
                    self.broodlord.accepting(vassal)
            elif byte == protocol.LOYAL:
                if not vassal.loyal:
                    logger.info("[emperor] vassal %s is now loyal", vassal.label)
                vassal.loyal, vassal.last_loyal = True, now
                self.throttle.forgive(vassal.name)
            elif byte == protocol.HEARTBEAT:
                vassal.last_heartbeat, vassal.heard_at = now, time.monotonic()
            elif byte == protocol.VOLUNTARY_SHUTDOWN:
                logger.info("[emperor] vassal %s asks to shut down", vassal.label)
                vassal.stop(graceful=True)
            elif byte == protocol.SOS:
                vassal.sos += 1
                sos += 1
        if sos:
            self.broodlord.sos(vassal, sos)  # SOS bytes that arrive together ask for that many zergs

    # --- children ---------------------------------------------------------------------------

    def _reap(self) -> None:
        for key, vassal in list(self.vassals.items()):
            if vassal.proc is None:
                continue
            code = vassal.proc.poll()
            if code is None:
                continue
            if vassal.sock is not None:
                self.selector.unregister(vassal.sock)
                vassal.close()
            del self.vassals[key]
            logger.info("[emperor] removed vassal %s (pid %d, exit %s)", vassal.label, vassal.pid, code)
            if code == protocol.EXILE_CODE:
                logger.error("[emperor] vassal %s could not start its program (exit %d)", vassal.label, code)
            if not (vassal.loyal or vassal.zerg or vassal.stopped or self.cfg.emperor_no_blacklist):
                self.throttle.failed(vassal.name)
            elif vassal.zerg:
                self.broodlord.exited(vassal, code)
            self.scan_now = True  # respawn a vassal whose file is still there without waiting a period

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        for vassal in self.vassals.values():
            if vassal.status == RUNNING and vassal.heard_at and \
                    now - vassal.heard_at > self.cfg.emperor_required_heartbeat:
                logger.error("[emperor] vassal %s sent no heartbeat in the last %d seconds, respawning it",
                             vassal.label, self.cfg.emperor_required_heartbeat)
                vassal.last_heartbeat = vassal.heard_at = 0.0
                vassal.set_stopping()
                vassal.kill()

    def _kill_overdue_stops(self) -> None:
        now = time.monotonic()
        for vassal in self.vassals.values():
            if vassal.status == STOPPING and now - vassal.stopping_since > self.cfg.emperor_curse_tolerance:
                logger.error("[emperor] vassal %s did not stop within %ds: killing it", vassal.label,
                             self.cfg.emperor_curse_tolerance)
                vassal.kill()
                vassal.stopping_since = now

    def _notify_vassals(self) -> None:
        """READY=1 (systemd) after the first scan has started the vassals; a STATUS= line whenever
        their number changes."""
        count = len(self.vassals)
        if count == self.notified_vassals:
            return
        status = f"{count} vassal(s) on {', '.join(m.name for m in self.monitors)}"
        if self.notified_vassals < 0:
            self.notify.ready(status)
        else:
            self.notify.status(status)
        self.notified_vassals = count

    # --- signals ----------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                self.stop_all()
            elif signum == signal.SIGHUP:
                for vassal in self.vassals.values():
                    vassal.reload()
            elif signum == signal.SIGUSR1:
                for vassal in self.vassals.values():
                    logger.info("vassal %s pid %d (last modified %d) status %d loyal %d zerg %d", vassal.label,
                                vassal.pid, vassal.last_mod, vassal.status, vassal.loyal, vassal.zerg)
            elif signum == signal.SIGURG:
                logger.info("[emperor] cleaning up the blacklist")
                self.throttle.clear()
                self.scan_now = True
            elif signum == signal.SIGWINCH:
                self.scan_now = True

    def stop_all(self) -> None:
        if self.stop_all_deadline:
            logger.info("RAGNAROK ALREADY EVOKED (mercyless in %d seconds)",
                        max(0, self.stop_all_deadline - time.monotonic()))
            return
        logger.info("*** RAGNAROK EVOKED ***")
        self.notify.stopping(f"stopping {len(self.vassals)} vassal(s)")
        self.stop_all_deadline = time.monotonic() + self.cfg.reload_mercy
        for vassal in self.vassals.values():
            vassal.stop(self.cfg.emperor_graceful_shutdown)

    def _stop_progress(self) -> bool:
        if not self.vassals:
            return True
        if time.monotonic() > self.stop_all_deadline:
            for vassal in self.vassals.values():
                logger.error("NO MERCY for vassal %s", vassal.label)
                vassal.kill()
            self.stop_all_deadline = time.monotonic() + 5.0
        return False

    # --- stats ------------------------------------------------------------------------------

    def stats_document(self) -> dict[str, Any]:
        return {
            "version": __version__, "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "cwd": os.getcwd(), "emperor": [m.name for m in self.monitors],
            "monitors": [m.stats() for m in self.monitors],
            "emperor_tyrant": int(self.cfg.emperor_tyrant),
            "throttle_level": round(self.throttle.tokens, 2), "scans": self.scans,
            "vassals": [v.stats() for v in self.vassals.values()],
            "blacklist": [{"id": name, "throttle_level": entry.throttle_ms, "attempt": entry.attempt,
                           "first_attempt": int(entry.first_attempt), "last_attempt": int(entry.last_attempt)}
                          for name, entry in self.throttle.blacklist.items()],
        }


    def metrics_text(self) -> str:
        return metrics.render(metrics.emperor(self.stats_document()))

def _remove_pidfile(path: str) -> None:
    """Remove the pidfile if it still names this process (another emperor may have taken it over)."""
    try:
        with open(path) as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(path)
    except (OSError, ValueError):
        pass
