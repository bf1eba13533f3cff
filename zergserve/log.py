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

import fcntl
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


logto_file: LogFile | None = None  # this process's --logto, for the master's loop to check


def setup(logto: str | None = None, maxsize: int = 0, touch: tuple[str, ...] = ()) -> LogFile | None:
    """Point stdout and stderr (fds 1 and 2) at --logto if given; the log writes to fd 2. The file
    returned follows its path: the master checks it every cycle (LogFile.check)."""
    global logto_file
    if not logto:
        return None
    try:
        logto_file = LogFile(logto, maxsize, touch, stdio=True, adopt=False)
    except OSError as exc:
        raise SystemExit(f"zergserve: logto: cannot open {logto}: {exc.strerror}") from None
    return logto_file


class LogFile:
    """An append-only log file that follows its path, as uWSGI's logto and req-logger do: reopened
    when moved or deleted (logrotate's create mode) or when a `--touch-logreopen` file changes,
    renamed to PATH.<unix time> past `maxsize` bytes (uWSGI's --log-maxsize) and reopened. Checked
    at most once a second, on the next line written (or by the master's loop).

    With `stdio` the file is fds 1 and 2 (--logto: the app's prints go there too); a worker adopts
    the fds the master opened. Every process holding the file may notice a rotation: the rename is
    done under an flock of the file's own inode, by the first to get it."""

    def __init__(self, path: str, maxsize: int = 0, touch: tuple[str, ...] = (), stdio: bool = False,
                 adopt: bool = True) -> None:
        self.path = path
        self.maxsize = maxsize
        self.stdio = stdio
        self.touched = {name: _mtime(name) for name in touch}
        self.next_check = 0.0
        self.fd = -1
        if stdio and adopt:
            self.fd = _FD
            self.ino = os.fstat(_FD).st_ino
        else:
            self.open()

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        if self.stdio:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fd, 1)
            os.dup2(fd, _FD)
            os.close(fd)
            fd = _FD
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.ino = os.fstat(fd).st_ino

    def write(self, data: bytes, now: float) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass
        if now >= self.next_check:
            self.next_check = now + 1.0
            self.check()

    def check(self) -> None:
        """Reopen or rotate if the file says so; a directory gone keeps the file in hand."""
        try:
            for name, seen in self.touched.items():
                mtime = _mtime(name)
                if mtime != seen:
                    self.touched[name] = mtime
                    self.open()
                    return
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self.open()
                return
            if st.st_ino != self.ino:
                self.open()
            elif self.maxsize and st.st_size >= self.maxsize:
                self._rotate()
        except OSError:
            pass

    def _rotate(self) -> None:
        lock = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)  # its own description: flock excludes
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = os.stat(self.path)
            if os.fstat(lock).st_ino == st.st_ino == self.ino and st.st_size >= self.maxsize:
                backup = f"{self.path}.{int(time.time())}"
                while os.path.exists(backup):
                    backup += "_"
                os.rename(self.path, backup)
        finally:
            os.close(lock)
        self.open()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def traceback_text(exc: BaseException | None = None) -> str:
    """The traceback of `exc` (by default, of the exception being handled) as log text.
    `traceback` is imported here, on the first error: with linecache, tokenize, textwrap and
    contextlib it is a third of a megabyte that a worker which never fails need not hold."""
    import traceback
    if exc is None:
        return traceback.format_exc().rstrip()
    return "".join(traceback.format_exception(exc)).rstrip()
