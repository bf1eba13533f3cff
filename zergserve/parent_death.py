"""Die with the parent: PR_SET_PDEATHSIG, so no vassal outlives a SIGKILLed emperor.

Workers do not use it: ctypes would cost every worker a megabyte. They watch their parent pid
instead (see workers/base.py).
"""

from __future__ import annotations

import os
import signal

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
