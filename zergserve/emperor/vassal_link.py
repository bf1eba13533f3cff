"""The vassal's side of the emperor protocol, plugged into a master.

When UWSGI_EMPEROR_FD is set the master tells its emperor: 1 once it has started (not after its own
reloads), 5 when worker 1 is ready to accept, 17 after the first request (loyal), 26 every
--heartbeat seconds while its workers make progress. It obeys 0 (stop), 1 (graceful reload) and
2 (graceful stop); EOF means the emperor is gone, and the vassal shuts down. After the vassal asked
to die (22, --die-on-idle) a 0 is obeyed gracefully too: a request that arrived meanwhile is served.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from zergserve import exitcodes
from zergserve.emperor import protocol
from zergserve.log import logger
from zergserve.scoreboard import BUSY, IDLE


class EmperorLink:
    def __init__(self, fd: int, master: Any, first_start: bool) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        os.set_inheritable(fd, True)  # kept across the master's re-exec on reload
        self.master = master
        self.first_start = first_start
        self.loyal = False
        self.asked_to_die = False
        self.accepting_pid = 0
        self.last_heartbeat = 0.0
        self.last_requests = -1
        master.add_reader(self.sock, self.receive)
        master.add_housekeeping(self.housekeeping)
        master.on_ready.append(self._check_accepting)
        logger.info("*** has_emperor mode detected (fd: %d) ***", fd)
        if first_start:
            self.send(protocol.SPAWNED)

    def send(self, byte: int, count: int = 1) -> None:
        try:
            protocol.send(self.sock, byte, count=count)
        except TimeoutError as exc:
            logger.error("emperor not reading: %s", exc)
        except OSError:
            self.lost()

    def receive(self) -> None:
        try:
            data = self.sock.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.lost()
            return
        for byte in data:
            logger.info("received message %d from emperor", byte)
            if byte == protocol.STOP:
                self.master.begin_stop("graceful" if self.asked_to_die else "quick")
            elif byte == protocol.STOP_GRACEFULLY:
                self.master.begin_stop("graceful")
            elif byte == protocol.RELOAD:
                self.master.handle_hup()

    def ask_to_die(self) -> None:
        """Byte 22: the emperor answers with a stop, which this vassal will then obey gracefully."""
        self.asked_to_die = True
        self.send(protocol.VOLUNTARY_SHUTDOWN)

    def lost(self) -> None:
        if self.master.stopping:
            return
        logger.error("lost connection with my emperor !!!")
        self.master.exit_code = exitcodes.FAILURE
        self.master.begin_stop("quick")
        try:
            self.master.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass

    def _check_accepting(self) -> None:
        """Byte 5 once per (re)spawn of worker 1, as soon as it is ready (called on the master's
        worker-ready wake-up, and each cycle in case a wake-up was missed)."""
        master = self.master
        if not master.num_workers:
            return
        row = master.scoreboard.row(1)
        if row.status in (IDLE, BUSY) and row.pid and row.pid != self.accepting_pid:
            self.accepting_pid = row.pid
            self.send(protocol.ACCEPTING)

    def housekeeping(self) -> None:
        master = self.master
        self._check_accepting()
        rows = master.scoreboard.rows()[: master.num_workers]
        requests = sum(row.requests for row in rows)
        if not self.loyal and requests > 0:
            self.loyal = True
            self.send(protocol.LOYAL)
        every = master.cfg.heartbeat
        now = time.time()
        if every and now - self.last_heartbeat >= every:
            fresh = any(now - row.heartbeat < 2 * every + 1 for row in rows)
            if fresh or requests != self.last_requests:
                self.last_heartbeat = now
                self.send(protocol.HEARTBEAT)
            self.last_requests = requests
