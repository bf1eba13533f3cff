"""The bytes between emperor and vassal, uWSGI's (research/uwsgi-internals.md §3.4).

One byte per message over a socketpair whose vassal end is named by UWSGI_EMPEROR_FD. EOF on
either side means the other one is gone.
"""

from __future__ import annotations

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
EXILE_CODE = 26  # a vassal that could not even exec: do not respawn it

NAMES = {SPAWNED: "spawned", CONFIG_REQUEST: "config request", ACCEPTING: "accepting", LOYAL: "loyal",
         VOLUNTARY_SHUTDOWN: "voluntary shutdown", HEARTBEAT: "heartbeat", SOS: "SOS"}
