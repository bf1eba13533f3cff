"""Every exit code a zergserve process ends with, in one place, and the error that ends a role's start.

A master that sees a worker exit with BOOT_ERROR or APP_LOAD_ERROR stops respawning it; the reload
check reads the check process's code; the emperor logs its vassals' codes.
"""

from __future__ import annotations

OK = 0
FAILURE = 1  # lost the emperor, a zerg that cannot attach: something outside this process went away
USAGE = 2  # the configuration is wrong or names something unusable (a start error): nothing was started
BOOT_ERROR = 3  # a worker could not boot (not the app's fault): respawning it would fail the same way
APP_LOAD_ERROR = 4  # the app could not be imported or is not callable
CHECK_URL = 5  # the reload check: a --reload-check-url did not answer 2xx/3xx (or at all)
EXEC_FAILED = 127  # a re-exec or a vassal's exec did not happen, as a shell's "command not found"


class StartError(Exception):
    """Something a role creates besides its sockets (stats or metrics socket, pidfile) cannot be
    created: the role logs the message as one line and exits USAGE."""
