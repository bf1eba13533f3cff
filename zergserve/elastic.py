"""What makes an instance elastic: going cheap or dying when idle, and calling for help when loaded.

    --idle T          after more than T s with no request (and no busy worker) the master goes cheap:
                      workers stop, the master waits on the sockets, the first connection respawns them
    --die-on-idle     instead, exit: a vassal goes cheap first (it takes no new work, and a connection
                      that arrives anyway respawns workers that serve it), then asks its emperor
                      (byte 22); the stop that answers is graceful, so no request is cut off
    --vassal-sos-backlog N   once per master cycle, a socket with N or more queued connections sends
                      SOS (byte 30). TCP queues come from TCP_INFO; UNIX queues from sock_diag, which
                      uWSGI does not read (it reports 0 and never calls for help on UNIX sockets)
    --vassal-sos S    SOS when no worker has been seen idle for more than S s (back-to-back short
                      requests count, not only long ones), at most once every S s

All of it runs from the master's housekeeping, once per cycle.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from zergserve import sockets
from zergserve.emperor import protocol
from zergserve.log import logger
from zergserve.scoreboard import BUSY


class Elastic:
    def __init__(self, master: Any, send: Callable[[int], None] | None,
                 ask_to_die: Callable[[], None] | None = None) -> None:
        self.master = master
        self.cfg = master.cfg
        self.send = send
        self.ask_to_die = ask_to_die
        self.last_requests = -1
        self.last_activity = time.time()
        self.asked_to_die = False
        self.last_idle_worker = time.time()  # when a worker was last seen not busy (--vassal-sos)
        self.last_overload_sos = 0.0
        master.add_housekeeping(self.housekeeping)
        master.on_wake.append(self._woken)

    def _woken(self) -> None:
        self.last_activity = time.time()

    def housekeeping(self) -> None:
        master = self.master
        now = time.time()
        rows = master.scoreboard.rows()[: master.num_workers]
        live = [row for row in rows if row.wid in master.workers and row.pid == master.workers[row.wid].pid]
        requests = sum(row.requests for row in rows)
        busy = [row for row in live if row.status == BUSY]
        if requests != self.last_requests or busy:
            self.last_requests = requests
            self.last_activity = now
        if self.cfg.idle and not master.cheap and now - self.last_activity > self.cfg.idle:
            self._idle(now)
        if self.send is None or master.cheap:
            return
        if self.cfg.vassal_sos_backlog:
            for listener in master.listeners:
                queued, _ = sockets.queue_length(listener)
                if queued >= self.cfg.vassal_sos_backlog:
                    logger.info("SOS: %d connections queued on %s (threshold %d)", queued, listener.name,
                                self.cfg.vassal_sos_backlog)
                    self.send(protocol.SOS)
                    break
        if self.cfg.vassal_sos:
            self._overload_sos(now, live, busy)

    def _overload_sos(self, now: float, live: list, busy: list) -> None:
        """uWSGI counts a cycle as overloaded when every worker is busy and asks at most once per S;
        here the whole last S seconds must have been overloaded, too."""
        limit = self.cfg.vassal_sos
        if not live or len(busy) < len(live) or len(live) < self.master.num_workers:
            self.last_idle_worker = now
            return
        if now - self.last_idle_worker > limit and now - self.last_overload_sos > limit:
            self.last_overload_sos = now
            logger.info("SOS: no idle worker among %d for more than %ds", len(live), limit)
            self.send(protocol.SOS)

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
