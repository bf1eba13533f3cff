"""The loop of a process that supervises children: one shape for the master and the emperor.

Each pass waits for whichever comes first: a signal (through the wake-up pipe), a readable
descriptor registered on the selector, the role's next due time, or the systemd watchdog's next
ping. It then acts on the signals recorded meanwhile and reaps the children that exited, in that
order, so a stop asked for by a signal is seen in the same pass. What follows is the role's: a
stop moved on (looked at every `STOP_POLL` seconds, as children exit on their own clock) or the
role's periodic work.
"""

from __future__ import annotations

import selectors
import time

from zergserve.sdnotify import Notifier

STOP_POLL = 0.2  # seconds between looks at a stop in progress


class Supervisor:
    """A role that supervises children; subclasses fill in the steps and call supervise()."""

    notify: Notifier
    selector: selectors.BaseSelector

    def supervise(self) -> None:
        """Run passes until a stop has finished."""
        while True:
            timeout = STOP_POLL if self.is_stopping() else max(0.0, self._due() - time.monotonic())
            self.notify.wait(self.selector, timeout)
            self._handle_signals()
            self._reap()
            if self.is_stopping():
                if self._stop_progress():
                    return
                continue
            self._tick()

    # The steps, each the role's own: whether a stop is in progress; the monotonic time by which
    # the next pass must run even if nothing wakes it; acting on the signals the handlers recorded;
    # collecting the children that exited; moving a stop on (True once it is finished); the work of
    # a pass while not stopping.
    def is_stopping(self) -> bool: raise NotImplementedError
    def _due(self) -> float: raise NotImplementedError
    def _handle_signals(self) -> None: raise NotImplementedError
    def _reap(self) -> None: raise NotImplementedError
    def _stop_progress(self) -> bool: raise NotImplementedError
    def _tick(self) -> None: raise NotImplementedError
