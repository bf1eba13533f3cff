"""Where zergserve's lines go: stderr, or --logto FILE (which, as in uWSGI, also takes the app's
stdout and stderr). Error lines go through `logging`; access lines are written straight to fd 2."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("zergserve")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        return f"[{stamp}] [{record.process}] {record.levelname}: {record.getMessage()}"


def printable(text: str) -> str:
    """Escape control characters (and undecodable bytes) so an untrusted string - a request path,
    a vassal's file name - cannot forge or colour log lines."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def setup(logto: str | None = None) -> None:
    """Send everything to stderr, after pointing stdout and stderr at --logto if given."""
    if logto:
        try:
            fd = os.open(logto, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SystemExit(f"zergserve: logto: cannot open {logto}: {exc.strerror}") from None
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
