"""The vassal's side of the emperor protocol: `VassalLink` (the socket, the bytes both ways), used by
the zergpool as it is, and plugged into a master by `EmperorLink`.

When UWSGI_EMPEROR_FD is set the master tells its emperor: 1 once it has started (not after its own
reloads), 5 when worker 1 is ready to accept, 17 after the first request (loyal), 26 every
--heartbeat seconds while its workers make progress. It obeys 0 (stop), 1 (graceful reload) and
2 (graceful stop); EOF means the emperor is gone, and the vassal shuts down. After the vassal asked
to die (22, --die-on-idle) a 0 is obeyed gracefully too: a request that arrived meanwhile is served.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Callable

from zergserve import exitcodes
from zergserve.emperor import protocol
from zergserve.log import logger
from zergserve.plugin import Host
from zergserve.scoreboard import BUSY, IDLE


class VassalLink:
    """The vassal's end of UWSGI_EMPEROR_FD: sends bytes, reads the emperor's and calls back
    `on_stop(graceful)` for 0 and 2, `on_reload()` for 1 and `on_lost()` at EOF or a broken socket."""

    def __init__(self, fd: int, on_stop: Callable[[bool], None], on_reload: Callable[[], None],
                 on_lost: Callable[[], None]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        os.set_inheritable(fd, True)  # kept across the vassal's re-exec on reload
        self.on_stop, self.on_reload, self.on_lost = on_stop, on_reload, on_lost
        self.last_heartbeat = -math.inf  # time.monotonic() of the last byte 26
        logger.info("*** has_emperor mode detected (fd: %d) ***", fd)

    def send(self, byte: int, count: int = 1) -> None:
        try:
            protocol.send(self.sock, byte, count=count)
        except TimeoutError as exc:
            logger.error("emperor not reading: %s", exc)
        except OSError:
            self.on_lost()

    def receive(self) -> None:
        try:
            data = self.sock.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.on_lost()
            return
        for byte in data:
            logger.info("received message %d from emperor", byte)
            if byte in (protocol.STOP, protocol.STOP_GRACEFULLY):
                self.on_stop(byte == protocol.STOP_GRACEFULLY)
            elif byte == protocol.RELOAD:
                self.on_reload()

    def heartbeat_due(self, every: float) -> bool:
        """Whether byte 26 is due (every `every` seconds; 0: never)."""
        return bool(every) and time.monotonic() - self.last_heartbeat >= every

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        self.send(protocol.HEARTBEAT)


class EmperorLink:
    """A master as a vassal: started, accepting, loyal and heartbeat bytes from its workers' rows."""

    def __init__(self, fd: int, master: Host, first_start: bool) -> None:
        self.link = VassalLink(fd, self._stop, master.handle_hup, self.lost)
        self.master = master
        self.first_start = first_start
        self.loyal = False
        self.asked_to_die = False
        self.accepting_pid = 0
        self.last_requests = -1
        master.add_reader(self.link.sock, self.link.receive)
        master.add_housekeeping(self.housekeeping)
        master.add_ready_task(self._check_accepting)
        if first_start:
            self.send(protocol.SPAWNED)

    def send(self, byte: int, count: int = 1) -> None:
        self.link.send(byte, count)

    def _stop(self, graceful: bool) -> None:
        self.master.begin_stop("graceful" if graceful or self.asked_to_die else "quick")

    def ask_to_die(self) -> None:
        """Byte 22: the emperor answers with a stop, which this vassal will then obey gracefully."""
        self.asked_to_die = True
        self.send(protocol.VOLUNTARY_SHUTDOWN)

    def lost(self) -> None:
        if self.master.is_stopping():
            return
        logger.error("lost connection with my emperor !!!")
        self.master.begin_stop("quick", exit_code=exitcodes.FAILURE)
        self.master.remove_reader(self.link.sock)

    def _check_accepting(self) -> None:
        """Byte 5 once per (re)spawn of worker 1, as soon as it is ready (called on the master's
        worker-ready wake-up, and each cycle in case a wake-up was missed)."""
        master = self.master
        if not master.worker_count():
            return
        row = master.rows()[0]
        if row.status in (IDLE, BUSY) and row.pid and row.pid != self.accepting_pid:
            self.accepting_pid = row.pid
            self.send(protocol.ACCEPTING)

    def housekeeping(self) -> None:
        master = self.master
        self._check_accepting()
        rows = master.rows()
        requests = sum(row.requests for row in rows)
        if not self.loyal and requests > 0:
            self.loyal = True
            self.send(protocol.LOYAL)
        every = master.cfg.heartbeat
        if self.link.heartbeat_due(every):
            now = time.monotonic()  # as the rows' heartbeats
            if any(now - row.heartbeat < 2 * every + 1 for row in rows) or requests != self.last_requests:
                self.link.heartbeat()
            self.last_requests = requests
