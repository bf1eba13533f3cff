"""Signals as loop wake-ups: handlers only record the signal, and the pipe named by
signal.set_wakeup_fd makes whatever the loop waits on (select, epoll) return at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable


def wakeup_pipe() -> tuple[int, int]:
    """A non-blocking pipe that every signal writes a byte to; returns (read end, write end)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return read_end, write_end


def record_signals(signums: Iterable[int], sink: list[int]) -> None:
    """Handle `signums` by appending the number to `sink`, nothing more: the loop acts on it."""
    for signum in signums:
        signal.signal(signum, lambda num, frame: sink.append(num))


def drain(fd: int) -> None:
    """Read a non-blocking descriptor empty (its bytes only say 'wake up')."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
