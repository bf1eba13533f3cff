"""What makes an instance elastic: going cheap or dying when idle, and calling for help when loaded.

    --idle T          after more than T s with no request (and no busy worker) the master goes cheap:
                      workers stop, the master waits on the sockets, the first connection respawns them
    --die-on-idle     instead, exit: a vassal goes cheap first (it takes no new work, and a connection
                      that arrives anyway respawns workers that serve it), then asks its emperor
                      (byte 22); the stop that answers is graceful, so no request is cut off
    --vassal-sos-backlog N   a socket with N or more queued connections sends SOS (byte 30) at once,
                      asking for as many zergs as N-sized queues it expects 2 s ahead (what
                      waits now plus its growth over the last half second), sent as that many 30s
                      in one write (emperor/protocol.py). The queues are read every --check-interval,
                      and every 0.1 s while loaded (a worker was seen busy or a connection waiting in
                      the last 2 s), so the SOS leaves within 0.1 s of the crossing instead of at
                      the next 1 s tick as in uWSGI. It asks at most once per --check-interval (a
                      queue that hovers about N is one call per cycle, as in uWSGI), sooner only when
                      the queue grew by N more since it last asked. TCP queues come from TCP_INFO;
                      UNIX queues from sock_diag, which uWSGI does not read (it reports 0 and never
                      calls for help on UNIX sockets)
    --vassal-sos S    SOS when no worker has been seen idle for more than S s (back-to-back short
                      requests count, not only long ones), at most once every S s. With --cheaper it
                      waits, as uWSGI does, until the cheaper subsystem runs -p workers: until then more
                      workers of its own are the cheaper help. The backlog SOS does not wait (uWSGI's
                      does not either): a queue past N calls for zergs whatever cheaper may add

The idle watch and --vassal-sos run from the master's housekeeping, once per cycle; the backlog
watch on its own timer.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from typing import Callable, Protocol

from zergserve.emperor import protocol
from zergserve.log import logger
from zergserve.plugin import Host
from zergserve.scoreboard import BUSY, Row

LOADED_WATCH = 0.1  # seconds between looks at the queues while loaded (a connection waits, a worker is busy)
LOADED_FOR = 2.0  # seconds the watch stays quick after it last saw a load
GROWTH_WINDOW = 0.5  # seconds of queue lengths the growth rate is measured over
HORIZON = 2.0  # an SOS asks for the queue expected this many seconds ahead (a zerg's boot, then its drain)
MOST_ZERGS = 16  # per SOS; the emperor's --emperor-broodlord caps it further


class Send(Protocol):
    """Send a byte to the emperor, `count` times in one write (VassalLink.send)."""

    def __call__(self, byte: int, count: int = 1) -> None: ...


class Elastic:
    def __init__(self, master: Host, send: Send | None,
                 ask_to_die: Callable[[], None] | None = None) -> None:
        self.master = master
        self.cfg = master.cfg
        self.send = send
        self.ask_to_die = ask_to_die
        self.last_requests = -1
        self.last_activity = time.monotonic()
        self.asked_to_die = False
        self.last_idle_worker = time.monotonic()  # when a worker was last seen not busy (--vassal-sos)
        self.last_overload_sos = -math.inf
        self.queues: deque[tuple[float, int]] = deque()  # (monotonic, longest queue) while one waits
        self.asked_at = -math.inf  # when the backlog watch last sent SOS (monotonic)
        self.asked_queue = 0
        self.loaded_at = 0.0
        master.add_housekeeping(self.housekeeping)
        if send is not None and self.cfg.vassal_sos_backlog:
            master.add_timer(functools.partial(self._backlog_watch, send))
        master.add_wake_task(self._woken)

    def _woken(self) -> None:
        self.last_activity = time.monotonic()

    def housekeeping(self) -> None:
        master = self.master
        now = time.monotonic()
        rows = master.rows()
        live = master.live_rows()
        requests = sum(row.requests for row in rows)
        busy = [row for row in live if row.status == BUSY]  # with threads: every thread in a request
        if requests != self.last_requests or any(row.request_start for row in live):
            self.last_requests = requests
            self.last_activity = now
        if self.cfg.idle and not master.is_cheap() and now - self.last_activity > self.cfg.idle:
            self._idle(now)
        if self.send is None or master.is_cheap():
            return
        if self.cfg.vassal_sos:
            self._overload_sos(now, live, busy, self.send)

    def _backlog_watch(self, send: Send) -> float:
        """--vassal-sos-backlog: SOS for as many zergs as the queue calls for; returns when to look again."""
        master = self.master
        lengths = [] if master.is_cheap() else master.queue_lengths()
        if not lengths:
            self.queues.clear()
            return self.cfg.check_interval
        now = time.monotonic()
        queued, name = max(lengths)
        if queued or any(row.status == BUSY for row in master.rows()):
            self.loaded_at = now
        if not queued:
            self.queues.clear()
            return LOADED_WATCH if now - self.loaded_at < LOADED_FOR else self.cfg.check_interval
        self.queues.append((now, queued))
        while now - self.queues[0][0] > GROWTH_WINDOW:
            self.queues.popleft()
        threshold = self.cfg.vassal_sos_backlog
        if queued < threshold:
            return LOADED_WATCH
        if now - self.asked_at >= self.cfg.check_interval or queued >= self.asked_queue + threshold:
            since, before = self.queues[0]
            growth = max(0.0, (queued - before) / (now - since)) if now > since else 0.0
            zergs = min(MOST_ZERGS, max(1, math.ceil((queued + growth * HORIZON) / threshold)))
            logger.info("SOS: %d connections queued on %s (threshold %d, growing %.0f/s): %d zerg(s) wanted",
                        queued, name, threshold, growth, zergs)
            send(protocol.SOS, zergs)
            self.asked_at, self.asked_queue = now, queued
        return LOADED_WATCH

    def _overload_sos(self, now: float, live: list[Row], busy: list[Row], send: Send) -> None:
        """uWSGI counts a cycle as overloaded when every worker is busy and asks at most once per S;
        here the whole last S seconds must have been overloaded, too. As in uWSGI (busy workers against
        -p), an instance whose cheaper subsystem may still add workers is not overloaded yet."""
        limit = self.cfg.vassal_sos
        count = self.master.worker_count()
        room = self.cfg.cheaper and count < self.cfg.processes
        if room or not live or len(busy) < len(live) or len(live) < count:
            self.last_idle_worker = now
            return
        if now - self.last_idle_worker > limit and now - self.last_overload_sos > limit:
            self.last_overload_sos = now
            logger.info("SOS: no idle worker among %d for more than %ds", len(live), limit)
            send(protocol.SOS)

    def _idle(self, now: float) -> None:
        idle_for = int(now - self.last_activity)
        if self.cfg.die_on_idle:
            if self.asked_to_die:
                return
            self.asked_to_die = True
            logger.info("workers have been inactive for more than %d seconds (%d): dying", self.cfg.idle, idle_for)
            if self.ask_to_die is not None:
                self.master.go_cheap()  # no new work while the emperor decides; its stop will be graceful
                self.ask_to_die()
            else:
                self.master.begin_stop("graceful")
            return
        logger.info("workers have been inactive for more than %d seconds (%d)", self.cfg.idle, idle_for)
        self.master.go_cheap()
