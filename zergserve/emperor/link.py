"""The vassal's side of the emperor protocol, plugged into a master.

When UWSGI_EMPEROR_FD is set the master tells its emperor: 1 once it has started (not after its own
reloads), 5 when worker 1 is ready to accept, 17 after the first request (loyal), 26 every
--heartbeat seconds while its workers make progress. It obeys 0 (stop), 1 (graceful reload) and
2 (graceful stop); EOF means the emperor is gone, and the vassal shuts down.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

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
        self.accepting_pid = 0
        self.last_heartbeat = 0.0
        self.last_requests = -1
        master.add_reader(self.sock, self.receive)
        master.add_housekeeping(self.housekeeping)
        logger.info("*** has_emperor mode detected (fd: %d) ***", fd)
        if first_start:
            self.send(protocol.SPAWNED)

    def send(self, byte: int) -> None:
        try:
            protocol.send(self.sock, byte)
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
                self.master.begin_stop("quick")
            elif byte == protocol.STOP_GRACEFULLY:
                self.master.begin_stop("graceful")
            elif byte == protocol.RELOAD:
                self.master.handle_hup()

    def lost(self) -> None:
        if self.master.stopping:
            return
        logger.error("lost connection with my emperor !!!")
        self.master.exit_code = 1
        self.master.begin_stop("quick")
        try:
            self.master.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass

    def housekeeping(self) -> None:
        master = self.master
        rows = master.scoreboard.rows()[: master.num_workers]
        if rows and rows[0].status in (IDLE, BUSY) and rows[0].pid and rows[0].pid != self.accepting_pid:
            self.accepting_pid = rows[0].pid
            self.send(protocol.ACCEPTING)
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
