"""Where zergserve's lines go: stderr, or --logto FILE (which, as in uWSGI, also takes the app's
stdout and stderr).

The server's own lines (startup, HARAKIRI, a worker killed by a signal, reload aborted, shutdown)
are written straight to fd 2 by a logger of our own, not through the `logging` module: an app that
configures logging (Flask's and Django's documented `dictConfig`, which disables every logger it
does not name, `logging.disable`, a root handler of its own) or replaces `sys.stderr` can never
silence or reroute them. Access lines go straight to fd 2 as well, or to their own file
(accesslog.py). `--log-level` drops the server's lines below it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Hashable

_FD = 2
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_least = 20


class ServerLog:
    """The master's, workers', emperor's and zergs' log: `[date] [pid] LEVEL: message` lines on fd 2."""

    def info(self, msg: str, *args: object) -> None:
        self._write("INFO", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._write("WARNING", msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._write("ERROR", msg, args)

    def _write(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        if _LEVELS[level] < _least:
            return
        text = msg % args if args else msg
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] [{os.getpid()}] {level}: {text}\n"
        data = line.encode("utf-8", "replace")
        try:
            while data:
                data = data[os.write(_FD, data):]
        except OSError:
            pass  # nowhere left to say it (stderr closed): serving goes on


logger = ServerLog()


def printable(text: str) -> str:
    """Escape control characters (and undecodable bytes) so an untrusted string - a request path,
    a vassal's file name - cannot forge or colour log lines."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def quoted(text: str) -> str:
    """`text` with control bytes and double quotes escaped, for a log line whose fields are quoted:
    a request path or a uwsgi var cannot forge, split or colour an access line."""
    if text.isprintable() and '"' not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', "\\x22")


class Repeated:
    """Log lines an outsider can repeat at will (a refused connect): the first line of a key at
    once, the rest of that key for `interval` seconds counted, then said in one line. flush() (the
    master's housekeeping) says the counts of windows that are over; so does the next line of the key."""

    MAX_KEYS = 1024

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.windows: dict[Hashable, list[Any]] = {}  # key → [started (monotonic), held back, last line]

    def error(self, key: Hashable, msg: str, *args: Any) -> None:
        now = time.monotonic()
        window = self.windows.get(key)
        line = msg % args
        if window is not None and now - window[0] < self.interval:
            window[1] += 1
            window[2] = line
            return
        if window is not None:
            self._say(window)
        elif len(self.windows) >= self.MAX_KEYS:
            self.flush(everything=True)
        logger.error("%s", line)
        self.windows[key] = [now, 0, line]

    def flush(self, everything: bool = False) -> None:
        now = time.monotonic()
        for key, window in list(self.windows.items()):
            if everything or now - window[0] >= self.interval:
                self._say(window)
                del self.windows[key]

    def _say(self, window: list[Any]) -> None:
        if window[1]:
            logger.error("%d more like it held back in %gs, the last: %s", window[1], self.interval, window[2])


def set_level(name: str) -> None:
    """--log-level: the least severe line written (debug, info, warning, error, critical)."""
    global _least
    _least = _LEVELS[name.upper()]


def setup(logto: str | None = None) -> None:
    """Point stdout and stderr (fds 1 and 2) at --logto if given; the log writes to fd 2."""
    if not logto:
        return
    try:
        fd = os.open(logto, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError as exc:
        raise SystemExit(f"zergserve: logto: cannot open {logto}: {exc.strerror}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
