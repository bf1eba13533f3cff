"""The bytes between emperor and vassal, uWSGI's (research/uwsgi-internals.md §3.4).

One byte per message over a socketpair whose vassal end is named by UWSGI_EMPEROR_FD. EOF on
either side means the other one is gone.

SOS with a depth: a vassal that needs N zergs sends N SOS bytes in one write. This is no new byte:
uWSGI's emperor already answers every 30 with one zerg (up to --emperor-broodlord, no dedupe), so a
real uWSGI emperor spawns the N zergs asked for (it does not count those still booting: a second
call during their boot adds more, up to its cap), and a real uWSGI vassal, which sends one 30 per
cycle, asks for one at a time. zergserve's emperor reads the 30s that arrive together as one call
for N zergs and starts as many at once as are not already booting (emperor/broodlord.py).
"""

from __future__ import annotations

import os
import select
import socket
import stat
import time
from collections.abc import Mapping

# vassal → emperor
SPAWNED = 1
CONFIG_REQUEST = 2
ACCEPTING = 5
LOYAL = 17
VOLUNTARY_SHUTDOWN = 22
HEARTBEAT = 26
SOS = 30

# emperor → vassal
STOP = 0
RELOAD = 1
STOP_GRACEFULLY = 2

ENV_FD = "UWSGI_EMPEROR_FD"
ENV_BROODLORD_NUM = "UWSGI_BROODLORD_NUM"
SEND_TIMEOUT = 1.0  # seconds a vassal waits for room on a full socket before giving up on a byte
EXILE_CODE = 26  # a vassal that could not even exec: do not respawn it

NAMES = {SPAWNED: "spawned", CONFIG_REQUEST: "config request", ACCEPTING: "accepting", LOYAL: "loyal",
         VOLUNTARY_SHUTDOWN: "voluntary shutdown", HEARTBEAT: "heartbeat", SOS: "SOS"}


def vassal_fd(environ: Mapping[str, str]) -> int | None:
    """The emperor's socket named by UWSGI_EMPEROR_FD, None when it is unset; ValueError, with a
    message for the log, when it names no open socket (a typo, or an fd its parent did not pass)."""
    value = environ.get(ENV_FD)
    if value is None or value == "":
        return None
    try:
        fd = int(value)
        mode = os.fstat(fd).st_mode if fd >= 0 else 0
    except ValueError:
        raise ValueError(f"{ENV_FD}={value!r}: not a file descriptor number") from None
    except OSError as exc:
        raise ValueError(f"{ENV_FD}={value}: {exc.strerror} (the emperor's socket was not passed)") from None
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{ENV_FD}={value}: not a socket")
    return fd


def send(sock: socket.socket, byte: int, timeout: float = SEND_TIMEOUT, count: int = 1) -> None:
    """Send one message (`count` times, in one write) on a non-blocking socket, waiting up to `timeout`
    s for room rather than dropping it (a lost 17 would keep a vassal blacklisted). TimeoutError when
    the peer reads nothing for that long; another OSError when it is gone."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    data = bytes([byte]) * count
    while True:
        try:
            data = data[sock.send(data):]
            if not data:
                return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"message {byte}: no room on the emperor socket for {timeout:g}s") from None
            poller.poll(remaining * 1000)
