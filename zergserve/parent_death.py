"""Noticing a dead parent at once.

Vassals use PR_SET_PDEATHSIG, so no vassal outlives a SIGKILLed emperor. Workers do not: ctypes
would cost every worker a megabyte, and a worker must finish what it holds rather than die. Each
worker gets a pipe of its own instead, whose write end only the master holds: when the master dies,
even by SIGKILL, the kernel closes it and signals the worker's read end (SIGIO, by O_ASYNC), even
while the worker is blocked in a request.
"""

from __future__ import annotations

import fcntl
import os
import signal
from typing import Any, Callable

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


def watch(fd: int, on_death: Callable[[int, Any], None]) -> None:
    """Call `on_death` (as a signal handler) once the other end of the pipe `fd` is closed; at once
    if it already is."""
    signal.signal(signal.SIGIO, on_death)
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC | os.O_NONBLOCK)
    if cut(fd):  # the master died before O_ASYNC was set
        on_death(signal.SIGIO, None)


def cut(fd: int) -> bool:
    """Whether the write end of the pipe `fd` (non-blocking, never written to) is closed. A plain
    read: select and poll may be gevent's, which must not run in a signal handler."""
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False
