"""systemd's notify protocol (sd_notify(3)), for `Type=notify` units: READY=1 once workers accept,
RELOADING=1 and READY=1 around a reload, STOPPING=1, STATUS= lines and WATCHDOG=1 pings.

Standard library only: one datagram per message to $NOTIFY_SOCKET (a path, or `@name` in the
abstract namespace). The variables are taken out of the environment at start so that workers,
the app, the reload check and vassals never see them (a vassal's READY=1 would be refused by
systemd with a warning, NotifyAccess=main); the master hands them to its own re-exec.
"""

from __future__ import annotations

import math
import os
import selectors
import socket
import time
from collections.abc import MutableMapping

from zergserve.log import logger

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Messages to the service manager; every method is a no-op when systemd did not ask for them."""

    def __init__(self, address: str | None = None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.interval = watchdog_usec / 2e6  # systemd's advice: ping at half the timeout
        self.next_ping = time.monotonic()
        self._failed = False

    @classmethod
    def take(cls, environ: MutableMapping[str, str]) -> "Notifier":
        """The notifier $NOTIFY_SOCKET asks for, removing the variables from `environ`."""
        address = environ.pop(NOTIFY_SOCKET, "") or None
        usec = environ.pop(WATCHDOG_USEC, "")
        pid = environ.pop(WATCHDOG_PID, "")
        watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
        return cls(address, watchdog)

    def handover(self) -> dict[str, str]:
        """The variables again, for the master's re-exec (same pid): the new image notifies too."""
        if not self.address:
            return {}
        env = {NOTIFY_SOCKET: self.address}
        if self.watchdog_usec:
            env[WATCHDOG_USEC] = str(self.watchdog_usec)
            env[WATCHDOG_PID] = str(os.getpid())
        return env

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog_in(self) -> float:
        """Seconds until the next WATCHDOG=1 is due (infinity without a watchdog)."""
        if not (self.address and self.watchdog_usec):
            return math.inf
        return max(0.0, self.next_ping - time.monotonic())

    def wait(self, selector: selectors.BaseSelector, timeout: float) -> None:
        """One turn of a supervising loop (master, emperor, zergpool): wait in `selector` up to
        `timeout` seconds, never past the next watchdog ping, call back what is ready (each key's
        data), then ping if due. The ping comes from the loop, so a stuck loop stops it."""
        for key, _ in selector.select(min(timeout, self.watchdog_in())):
            key.data()
        self.tick()

    def tick(self) -> None:
        """Ping the watchdog if due: called from the loop, so a stuck loop stops the pings."""
        if self.watchdog_in() > 0:
            return
        self.next_ping = time.monotonic() + self.interval
        self.send("WATCHDOG=1")

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:  # a socket per message, as libsystemd's sd_notify: no descriptor for workers to inherit
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._failed:  # once: systemd gone or a wrong path must not flood the log
                logger.error("sd_notify to %s failed: %s", self.address, exc.strerror or exc)
            self._failed = True
