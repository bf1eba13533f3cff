"""The cheaper subsystem (uWSGI's adaptive process spawning): the worker count follows the load.

    --cheaper N           at least N workers; -p/--processes is the most. --cheaper-initial start at boot
                          (default N). When the algorithm asks for more, --cheaper-step workers are added
                          (never above -p); when it asks for fewer, ONE worker, the highest id, stops: it
                          takes no new connection, finishes the request in hand and exits (the queue is
                          shared, so the others serve what waits). Stats show stopped workers as "cheap".

The algorithms, from uWSGI's core (spare, backlog) and cheaper_busyness plugin, checked once per
master cycle:

    spare      every worker busy for --cheaper-overload seconds: add workers; at least one idle worker
               for that long: stop one
    backlog    more than --cheaper-overload connections queued on the sockets: add workers; fewer:
               stop one. uWSGI reads TCP queues only; UNIX socket queues count here too (sockets.py)
    busyness   every --cheaper-overload seconds, the average share of that time the workers spent in
               requests: above --cheaper-busyness-max add workers; below --cheaper-busyness-min stop one,
               but only after --cheaper-busyness-multiplier such periods in a row (a stopped worker
               that had to come back within that wait raises the multiplier by the penalty). Between
               checks the queue is watched: above --cheaper-busyness-backlog-alert, or non-empty for
               --cheaper-busyness-backlog-nonzero seconds, emergency workers are added at once.

--cheaper-rss-limit-soft stops additions while the workers' total RSS is above it;
--cheaper-rss-limit-hard stops a worker (never below --cheaper) while it is above that.

It works through the master's add_worker()/retire_worker(), the operations TTIN and TTOU use, and is
idle while the instance is cheap (--idle, --cheap): the wake-up brings back the count it left. Stats
carry a "cheaper" object (algorithm, bounds, the worker count it aims at, workers it added and
stopped), which /metrics shows as zergserve_workers_target and zergserve_cheaper_changes_total.
"""

from __future__ import annotations

import time
from typing import Any

from zergserve.config import Config
from zergserve.log import logger
from zergserve.scoreboard import BUSY, Row


class CheaperError(ValueError):
    """A cheaper configuration that cannot work, for the start error."""


def check(cfg: Config) -> None:
    """Raise CheaperError naming the options that do not fit together."""
    if not cfg.cheaper:
        return
    if cfg.cheaper >= cfg.processes:
        raise CheaperError(f"--cheaper {cfg.cheaper} must be lower than --processes {cfg.processes}: -p is the "
                           f"most workers the cheaper subsystem may run, --cheaper the fewest")
    if cfg.cheaper_initial and not cfg.cheaper <= cfg.cheaper_initial <= cfg.processes:
        raise CheaperError(f"--cheaper-initial {cfg.cheaper_initial} must lie between --cheaper {cfg.cheaper} "
                           f"and --processes {cfg.processes}")
    if cfg.cheaper_algo == "busyness" and cfg.cheaper_busyness_min >= cfg.cheaper_busyness_max:
        raise CheaperError(f"--cheaper-busyness-min {cfg.cheaper_busyness_min} must be lower than "
                           f"--cheaper-busyness-max {cfg.cheaper_busyness_max}")
    soft, hard = cfg.cheaper_rss_limit_soft, cfg.cheaper_rss_limit_hard
    if soft and hard and soft > hard:
        raise CheaperError(f"--cheaper-rss-limit-soft {soft} must not be above --cheaper-rss-limit-hard {hard}")


class Cheaper:
    """Master housekeeping that asks its algorithm each cycle and adds or stops workers."""

    def __init__(self, master: Any) -> None:
        self.master = master
        self.cfg = cfg = master.cfg
        master.set_worker_count(cfg.cheaper_initial or cfg.cheaper)
        self.algo = _ALGOS[cfg.cheaper_algo](cfg)
        self.added = self.stopped = 0
        master.add_housekeeping(self.housekeeping)
        master.add_stats(self.stats)
        logger.info("cheaper mode: %s algorithm, %d to %d workers, %d at start", cfg.cheaper_algo, cfg.cheaper,
                    cfg.processes, master.num_workers)

    def stats(self) -> dict[str, Any]:
        return {"cheaper": {"algo": self.cfg.cheaper_algo, "min": self.cfg.cheaper, "max": self.cfg.processes,
                            "target": self.master.num_workers, "added": self.added, "stopped": self.stopped}}

    def housekeeping(self) -> None:
        """One decision; the change it made to the count goes to the stats' counters."""
        if self.master.cheap:
            return
        before = self.master.num_workers
        self._decide()
        change = self.master.num_workers - before
        self.added += max(0, change)
        self.stopped += max(0, -change)

    def _decide(self) -> None:
        master, cfg = self.master, self.cfg
        rows = master.live_rows()
        room = max(0, cfg.processes - master.num_workers)
        rss = sum(proc.rss() for proc in master.worker_procs()) \
            if cfg.cheaper_rss_limit_soft or cfg.cheaper_rss_limit_hard else 0
        if cfg.cheaper_rss_limit_hard and rss > cfg.cheaper_rss_limit_hard and master.num_workers > cfg.cheaper:
            self._retire(f"workers' RSS {rss} bytes above --cheaper-rss-limit-hard {cfg.cheaper_rss_limit_hard}")
            return
        queued = self._queued() if cfg.cheaper_algo != "spare" else 0
        wanted, reason = self.algo.decide(rows, room, queued, master.num_workers > cfg.cheaper)
        if wanted > 0 and room and cfg.cheaper_rss_limit_soft and rss > cfg.cheaper_rss_limit_soft:
            logger.info("cheaper (%s): %s, but the workers' RSS %d bytes is above --cheaper-rss-limit-soft %d: "
                        "no worker added", cfg.cheaper_algo, reason, rss, cfg.cheaper_rss_limit_soft)
        elif wanted > 0 and room:
            for _ in range(min(wanted, room)):
                master.add_worker(f"cheaper ({cfg.cheaper_algo}): {reason}")
        elif wanted < 0 and master.num_workers > cfg.cheaper:
            self._retire(reason)

    def _retire(self, reason: str) -> None:
        self.master.retire_worker(f"cheaper ({self.cfg.cheaper_algo}): {reason}, stopping a worker")

    def _queued(self) -> int:
        return sum(queued for queued, _ in self.master.queue_lengths())


class Spare:
    """uWSGI's default: count how long every worker has been busy, or at least one idle."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.overloaded_since: float | None = None
        self.idle_since: float | None = None

    def decide(self, rows: list[Row], room: int, queued: int, can_retire: bool) -> tuple[int, str]:
        now = time.monotonic()
        overload = self.cfg.cheaper_overload
        if not rows:  # every worker is being respawned: nothing to judge
            self.overloaded_since = self.idle_since = None
            return 0, ""
        if all(row.status == BUSY for row in rows):
            self.idle_since = None
            if self.overloaded_since is None:
                self.overloaded_since = now
            if room and now - self.overloaded_since >= overload:
                self.overloaded_since = None
                return self.cfg.cheaper_step, f"all {len(rows)} worker(s) busy for {overload}s"
            return 0, ""
        self.overloaded_since = None
        if self.idle_since is None:
            self.idle_since = now
        if can_retire and now - self.idle_since >= overload:
            self.idle_since = None
            return -1, f"idle worker(s) for {overload}s"
        return 0, ""


class Backlog:
    """The sockets' accept queues against --cheaper-overload, every cycle."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def decide(self, rows: list[Row], room: int, queued: int, can_retire: bool) -> tuple[int, str]:
        overload = self.cfg.cheaper_overload
        if room and queued > overload:
            return self.cfg.cheaper_step, f"{queued} connection(s) queued (above {overload})"
        if queued < overload:
            return -1, f"{queued} connection(s) queued (below {overload})"
        return 0, ""


class Busyness:
    """uWSGI's cheaper_busyness: the share of each period the workers spent in requests, with a
    cheaping delay that grows when workers are stopped too eagerly, and a watch on the queue."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.period = float(max(cfg.cheaper_overload, cfg.check_interval))
        self.multiplier = cfg.cheaper_busyness_multiplier
        self.last: dict[tuple[int, int], float] = {}  # (wid, pid) → seconds in requests at the last check
        self.emergency = 0
        self.backlog_since: float | None = None
        now = time.monotonic()
        self.checked = now
        self.last_cheaped: float | None = None
        self.next_cheap = now + self._cheap_delay()

    def _cheap_delay(self) -> float:
        """uWSGI's set_next_cheap_time: emergency workers go sooner, after the backlog multiplier."""
        multiplier = self.cfg.cheaper_busyness_backlog_multiplier if self.emergency else self.multiplier
        return self.period * multiplier

    def _log(self, message: str, *args: Any) -> None:
        if self.cfg.cheaper_busyness_verbose:
            logger.info("[busyness] " + message, *args)

    def decide(self, rows: list[Row], room: int, queued: int, can_retire: bool) -> tuple[int, str]:
        cfg = self.cfg
        now = time.monotonic()
        if now - self.checked >= self.period:
            return self._check(rows, room, can_retire, now)
        alert = cfg.cheaper_busyness_backlog_alert
        if alert and room and queued > alert:
            return self._emergency(room, f"{queued} connection(s) queued (above {alert})")
        if queued == 0:
            if self.backlog_since is not None:
                self._log("backlog is now empty")
            self.backlog_since = None
        elif self.backlog_since is None:
            self._log("backlog is starting to fill: %d", queued)
            self.backlog_since = now
        elif cfg.cheaper_busyness_backlog_nonzero and room and \
                now - self.backlog_since >= cfg.cheaper_busyness_backlog_nonzero:
            self.backlog_since = now
            return self._emergency(room, f"connections queued for {cfg.cheaper_busyness_backlog_nonzero}s")
        return 0, ""

    def _emergency(self, room: int, reason: str) -> tuple[int, str]:
        count = min(self.cfg.cheaper_busyness_backlog_step, room)
        self.emergency += count
        return count, f"{reason}: {count} emergency worker(s)"

    def _check(self, rows: list[Row], room: int, can_retire: bool, now: float) -> tuple[int, str]:
        cfg = self.cfg
        elapsed = now - self.checked
        self.checked = now
        wall = time.time()
        current = {(row.wid, row.pid): row.busy_until(wall) for row in rows}
        shares = [min(100.0, 100.0 * (busy - self.last.get(key, 0.0)) / elapsed) for key, busy in current.items()]
        self.last = current
        busyness = sum(shares) / len(shares) if shares else 0.0
        self._log("%.0fs average busyness of %d worker(s) is at %.0f%%", elapsed, len(shares), busyness)
        if busyness > cfg.cheaper_busyness_max:
            if not room:
                return 0, ""
            if self.last_cheaped is not None and now - self.last_cheaped <= self.period * self.multiplier:
                self.multiplier += cfg.cheaper_busyness_penalty
                logger.info("[busyness] worker(s) respawned too fast, cheaper multiplier now %d", self.multiplier)
            else:
                self._decrease_multiplier()
            self.next_cheap = now + self._cheap_delay()
            return cfg.cheaper_step, f"average busyness {busyness:.0f}% above {cfg.cheaper_busyness_max}%"
        if busyness < cfg.cheaper_busyness_min:
            if not can_retire:
                return 0, ""
            if now >= self.next_cheap:
                self.last_cheaped = now
                self.emergency = max(0, self.emergency - 1)
                self.next_cheap = now + self._cheap_delay()
                return -1, f"average busyness {busyness:.0f}% below {cfg.cheaper_busyness_min}%"
            self._log("need to wait %.0f more second(s) to cheap a worker", self.next_cheap - now)
            return 0, ""
        self._decrease_multiplier()
        self.next_cheap = now + self._cheap_delay()  # cheaping needs low busyness period after period
        return 0, ""

    def _decrease_multiplier(self) -> None:
        if self.multiplier > self.cfg.cheaper_busyness_multiplier:
            self.multiplier -= 1
            self._log("decreasing cheaper multiplier to %d", self.multiplier)


_ALGOS: dict[str, type[Spare | Backlog | Busyness]] = {"spare": Spare, "backlog": Backlog, "busyness": Busyness}
