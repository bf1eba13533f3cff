"""What one image of a process hands the next across a re-exec, in one format.

The master's graceful reload, its reload check and the zergpool's reload all re-execute
`python -m zergserve ARGV` with the state to adopt in one environment variable, a JSON object:

    listeners     [{"fd", "proto", "origin", "name"}]: bound sockets kept open across the exec
    workers       [pid]: the previous image's workers (the master's reload), still our children
    paused        true when TSTP had paused the workers
    zerg_server   the zerg server's attach record (counters and the last zergs seen)
    reload_check  [address]: the stats and metrics addresses the running master holds (the check)

cli.py takes it out of the environment first thing (`take`), so that workers, vassals and apps never
inherit it, and hands each role what it adopts.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, NoReturn

from zergserve import sockets
from zergserve.log import logger

VARIABLE = "ZERGSERVE_REEXEC_STATE"


def take(environ: MutableMapping[str, str]) -> dict[str, Any] | None:
    """The previous image's state, removed from `environ`; None on a fresh start."""
    raw = environ.pop(VARIABLE, None)
    if raw is None:
        return None
    import json  # here, not at the top: a fresh start (every worker's master) needs no JSON
    try:
        state = json.loads(raw)
    except ValueError as exc:
        logger.error("re-exec state unreadable (%s): starting afresh", exc)
        return {}
    return state if isinstance(state, dict) else {}


def listener_records(listeners: Sequence[sockets.Listener]) -> list[dict[str, Any]]:
    """The listeners as `adopt_listeners` reads them back in the next image."""
    return [{"fd": listener.fileno(), "proto": listener.proto, "origin": listener.origin, "name": listener.name}
            for listener in listeners]


def adopt_listeners(state: dict[str, Any] | None) -> dict[str, sockets.Listener]:
    """The listeners handed over in `state`, by name, no longer inheritable."""
    adopted = {}
    for record in (state or {}).get("listeners", []):
        listener = sockets.from_fd(int(record["fd"]), record["proto"], name=record["name"], origin=record["origin"])
        os.set_inheritable(listener.fileno(), False)
        sockets.remember_path(listener)
        adopted[listener.name] = listener
    return adopted


def environ_with(state: dict[str, Any], environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment that hands `state` to the next image."""
    import json
    env = dict(os.environ if environ is None else environ)
    env[VARIABLE] = json.dumps(state)
    return env


def exec_self(argv: Sequence[str], state: dict[str, Any], listeners: Sequence[sockets.Listener],
              cwd: str | None = None, extra_env: dict[str, str] | None = None) -> NoReturn:
    """Become `python -m zergserve ARGV` (same pid), handing over `state` and keeping `listeners` open."""
    for listener in listeners:
        os.set_inheritable(listener.fileno(), True)
    env = environ_with(state)
    env.update(extra_env or {})
    signal.set_wakeup_fd(-1)
    sys.stdout.flush()
    sys.stderr.flush()
    if cwd is not None:
        os.chdir(cwd)
    os.execve(sys.executable, [sys.executable, "-m", "zergserve", *argv], env)
