"""Noticing a dead parent at once.

Vassals use PR_SET_PDEATHSIG, so no vassal outlives a SIGKILLed emperor. Workers do not: ctypes
would cost every worker a megabyte, and a worker must finish what it holds rather than die. Each
worker gets a pipe of its own instead, whose write end only the master holds: when the master dies,
even by SIGKILL, the kernel closes it, and a thread of the worker waiting on the read end acts at
once, even while the worker's main thread is in a request. A thread, not a signal handler (SIGIO):
what it does (close the listening sockets, log) is no work for a handler, and a sync worker's main
thread may stay in the app for minutes.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
from typing import Callable

from zergserve.wakeup import start_thread

from zergserve import exitcodes

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies; exit now if it already has."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(exitcodes.FAILURE)


def watch(fd: int, on_death: Callable[[], None]) -> None:
    """Call `on_death()` from a daemon thread of its own once the other end of the pipe `fd` is
    closed (at once if it already is). Under gevent's monkey patching the thread is a greenlet and
    its select cooperative: the loop it shares is the one that acts on it anyway."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)

    def wait() -> None:
        poller = select.poll()  # no fd limit, unlike select(); gevent's is cooperative
        poller.register(fd, select.POLLIN)
        while not cut(fd):
            poller.poll()
        on_death()

    start_thread(wait)


def cut(fd: int) -> bool:
    """Whether the write end of the pipe `fd` (non-blocking, never written to) is closed."""
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False
