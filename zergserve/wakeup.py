"""Signals as loop wake-ups: handlers only record the signal, and the pipe named by
signal.set_wakeup_fd makes whatever the loop waits on (select, epoll) return at once. Helper threads
start with signals blocked, so that they reach the main thread."""

from __future__ import annotations

import _thread
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


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


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Threads started meanwhile have every signal blocked (a thread inherits the mask it starts
    with), so that the kernel delivers signals to the main thread: a handler that must interrupt
    the main thread's wait (a sleep in the app, a join) runs there, not in a thread that would
    swallow it."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def start_thread(target: Callable[..., object], *args: object) -> None:
    """Start a helper thread with every signal blocked (signals_blocked). A bare _thread one: for
    the one watcher thread of a worker, the threading module would cost every process about
    0.2 MB. It does not keep the process alive, as a daemon thread would not."""
    with signals_blocked():
        _thread.start_new_thread(target, args)
