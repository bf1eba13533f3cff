"""How long a slow client may hold a connection's worker while a body moves, sans-I/O.

A per-read or per-write timeout bounds nothing: a client that sends (or reads) one byte just
inside it holds the worker forever. Both directions here get a bound that grows only with progress:

* a request body, as Apache's mod_reqtimeout `body=20,MinRate=500`: `--body-timeout` seconds, plus
  one second for every `--body-min-rate` bytes received (`BodyClock`);
* a response, measured only while the worker waits on the client: in every `--socket-timeout`
  seconds of waiting the client must take `--send-min-rate` bytes a second (`SendPace`).

The drivers (connection.py for blocking sockets, the asyncio worker) ask how long they may wait
and report what happened; these classes do no I/O and read only the monotonic clock.
"""

from __future__ import annotations

import time
from typing import Final

from zergserve.oserrors import SendTimeout

# time.monotonic, held by the compiled build rather than looked up in the time module at each
# call; the drivers and the exchange read the clock through it too.
monotonic: Final = time.monotonic


class BodyTimeout(Exception):
    """The request body came slower than its bound: answer 408."""


class BodyClock:
    """An absolute deadline for one request body that moves on 1/rate seconds per byte received."""

    __slots__ = ("deadline", "rate", "timeout")

    def __init__(self, timeout: float, rate: float) -> None:
        self.timeout = timeout
        self.rate = rate
        self.deadline = monotonic() + timeout if timeout > 0 else float("inf")

    def received(self, count: int) -> None:
        if self.rate > 0:
            self.deadline += count / self.rate

    def left(self) -> float:
        """Seconds the driver may wait for the next bytes; raises BodyTimeout when none are left."""
        left = self.deadline - monotonic()
        if left <= 0:
            raise BodyTimeout(f"request body slower than {self.rate:g} bytes/s after {self.timeout:g}s")
        return left


class SendPace:
    """Windows of `window` seconds spent waiting on the client; each must see it take at least
    max(1, rate * window) bytes. Time the app spends between writes does not count. Made once per
    response, so it costs nothing until the socket makes the driver wait."""

    __slots__ = ("window", "rate", "spent", "accepted", "mark")

    def __init__(self, window: float, rate: float) -> None:
        self.window = window
        self.rate = rate
        self.spent = 0.0
        self.accepted = 0  # bytes the kernel took from us
        self.mark = 0  # bytes delivered when the current window opened

    def wait(self, unsent: int) -> float:
        """Seconds the driver may wait for the socket to take more now; `unsent` is the socket's
        send queue (-1 if unknown). A window opens here, so bytes that only filled the kernel's
        buffers before the first wait are not counted as the client reading."""
        if self.spent == 0.0:
            self.mark = self._delivered(unsent)
        return max(self.window - self.spent, 0.0)

    def _delivered(self, unsent: int) -> int:
        return self.accepted - unsent if unsent >= 0 else self.accepted

    def waited(self, seconds: float, unsent: int) -> None:
        """Account a wait; `unsent` is the socket's send queue (-1 if unknown). Raises SendTimeout
        when a whole window passed with too few bytes delivered."""
        self.spent += seconds
        if self.spent < self.window:
            return
        delivered = self._delivered(unsent)
        need = max(1, int(self.rate * self.window))
        if delivered - self.mark < need:
            raise SendTimeout(f"client took {delivered - self.mark} bytes in {self.window:g}s (needs {need})")
        self.mark = delivered
        self.spent = 0.0
