"""Imperial monitors: which vassal config files exist, and a descriptor that wakes the emperor
when they change.

`dir://DIR` (or an existing directory) lists the directory; vassal names are bare file names and
vassals start with DIR as their cwd. `glob://PATTERN` (or anything without a scheme) matches a
pattern; names are the paths as matched and vassals start in the emperor's cwd. uWSGI polls every
--emperor-freq seconds; zergserve also asks the kernel (inotify, through ctypes) to wake it on any
change, so a new, touched or removed file is acted on at once. `pg://` reads rows of a database
(zergserve/emperor/pg.py); any other scheme is an error.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import selectors
import stat
from typing import Any, Callable

from zergserve.config import Config, files
from zergserve.inotify import Inotify

from zergserve.emperor import tyrant
from zergserve.log import logger, printable

# The kinds of config file a vassal may be (yaml only where PyYAML is installed to read it).
VALID_EXTENSIONS = files.extensions(files.READ if importlib.util.find_spec("yaml") is not None
                                    else tuple(kind for kind in files.READ if kind != "yaml"))
_IGNORED_SUFFIXES = (".skel", "~", ".swp", ".swx", ".tmp", ".bak")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def build_monitor(arg: str, cfg: Config) -> Monitor:
    """The monitor for one --emperor argument; ValueError for an unknown scheme or a bad argument."""
    scheme = _SCHEME.match(arg)
    if scheme is None or scheme.group(1) in ("dir", "glob"):
        return Monitor(arg, cfg.emperor_extra_extension, cfg.emperor_nofollow)
    if scheme.group(1) == "pg":
        from zergserve.emperor.pg import PgMonitor  # psycopg is imported only when used
        return PgMonitor(arg, cfg)
    raise ValueError(f"emperor: {arg}: unknown imperial monitor scheme {scheme.group(1)}:// "
                     "(known: dir://, glob://, pg://)")


def extensions(extra: list[str]) -> tuple[str, ...]:
    """The file name endings of vassal configs: the known kinds and --emperor-extra-extension."""
    return VALID_EXTENSIONS + tuple(ext if ext.startswith(".") else "." + ext for ext in extra)


class Monitor:
    """One dir:// or glob:// --emperor argument. Its methods are what the emperor asks of every
    monitor (pg.PgMonitor answers the same questions from database rows)."""

    def __init__(self, arg: str, extra_extensions: list[str], nofollow: bool) -> None:
        self.arg = arg
        self.extensions = extensions(extra_extensions)
        self.nofollow = nofollow
        self.start_cwd = os.getcwd()
        if arg.startswith("dir://"):
            self.kind, target = "dir", arg[len("dir://"):]
        elif arg.startswith("glob://"):
            self.kind, target = "glob", arg[len("glob://"):]
        elif os.path.isdir(arg):
            self.kind, target = "dir", arg
        else:
            self.kind, target = "glob", arg
        if self.kind == "dir":
            if not os.path.isdir(target):
                raise ValueError(f"emperor: {arg}: not a directory")
            self.target = os.path.realpath(target)
        else:
            self.target = target
        self.name = self.target
        self.refused: set[str] = set()  # names with ':' seen at the last scan, logged once each

    def attach(self, selector: selectors.BaseSelector, wake: Callable[[float], None]) -> None:
        """Hook into the emperor's loop: a monitor with its own descriptors registers them with
        `selector`, and calls `wake(when)` (time.monotonic()) to have the emperor scan then.
        Files need neither: inotify is the emperor's."""

    def config_fd(self, name: str) -> int:
        """A descriptor, the caller's to close, the vassal reads its config from (ZERGSERVE_CONFIG_FD);
        -1: the vassal opens its file by name."""
        return -1

    def identity(self, name: str) -> tuple[int | None, int | None]:
        """The uid and gid the vassal runs as outside tyrant mode; None: the emperor's own."""
        return None, None

    def open_checked(self, name: str, nofollow: bool) -> tyrant.CheckedConfig:
        """Tyrant mode: whom the vassal runs as, and its config open (TyrantError if refused)."""
        return tyrant.open_checked(self.path_of(name), nofollow)

    def log_of(self, name: str) -> str | None:
        """Where a vassal that runs as another user writes its output (never the emperor's log):
        FILE.log next to its file; None for /dev/null."""
        return tyrant.log_path(self.path_of(name))

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def cwd(self) -> str:
        """Where this monitor's vassals start."""
        return self.target if self.kind == "dir" else self.start_cwd

    def path_of(self, name: str) -> str:
        """The file a vassal name is, exactly: a name is never parsed for a section."""
        return os.path.join(self.cwd(), name)

    def valid(self, filename: str) -> bool:
        base = os.path.basename(filename)
        if base.startswith(".") or base.endswith(_IGNORED_SUFFIXES) or len(base) > 254:
            return False
        return base.endswith(self.extensions)

    def scan(self) -> dict[str, float]:
        """name → mtime of every valid vassal config now present."""
        if self.kind == "dir":
            try:
                names = os.listdir(self.target)
            except OSError:
                return {}
        else:
            names = glob.glob(self.target if os.path.isabs(self.target)
                              else os.path.join(self.start_cwd, self.target))
            names = [os.path.relpath(n, self.start_cwd) if not os.path.isabs(self.target) else n for n in names]
        found = {}
        refused = set()
        for name in names:
            if not self.valid(name):
                continue
            if ":" in os.path.basename(name):
                refused.add(name)
                if name not in self.refused:
                    logger.error("[emperor] %s: refused: a vassal name may not contain ':' (FILE:section "
                                 "syntax would read another file)", printable(name))
                continue
            mtime = self.mtime(name)
            if mtime is not None:
                found[name] = mtime
        self.refused = refused
        return found

    def mtime(self, name: str) -> float | None:
        """The file's mtime, or None when it is gone or not a regular file (or a link with nofollow)."""
        path = self.path_of(name)
        try:
            st = os.lstat(path) if self.nofollow else os.stat(path)
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode) or (self.nofollow and stat.S_ISLNK(st.st_mode)):
            return st.st_mtime
        return None

    def watch_dirs(self) -> list[str]:
        if self.kind == "dir":
            return [self.target]
        pattern = self.target if os.path.isabs(self.target) else os.path.join(self.start_cwd, self.target)
        return sorted({d for d in glob.glob(os.path.dirname(pattern)) if os.path.isdir(d)})


def only_non_vassal_writes(events: list[tuple[int, str]], monitors: list[Monitor]) -> bool:
    """Whether the events are only writes to files that are no vassal config (a log kept in the
    vassals dir): those need no scan. Anything else might (a .skel template a vassal links to is
    touched, closed after writing, or renamed, never merely written to), and so is scanned."""
    return bool(events) and all(mask == Inotify.MODIFY and name and not any(m.valid(name) for m in monitors)
                                for mask, name in events)
