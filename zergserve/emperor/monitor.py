"""Imperial monitors: which vassal config files exist, and a descriptor that wakes the emperor
when they change.

`dir://DIR` (or an existing directory) lists the directory; vassal names are bare file names and
vassals start with DIR as their cwd. `glob://PATTERN` (or anything else) matches a pattern; names
are the paths as matched and vassals start in the emperor's cwd. uWSGI polls every --emperor-freq
seconds; zergserve also asks the kernel (inotify, through ctypes) to wake it on any change, so a new,
touched or removed file is acted on at once.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import stat

from zergserve.inotify import Inotify

from zergserve.log import logger, printable

VALID_EXTENSIONS = (".ini", ".json", ".js", ".toml") + (
    (".yml", ".yaml") if importlib.util.find_spec("yaml") is not None else ())
_IGNORED_SUFFIXES = (".skel", "~", ".swp", ".swx", ".tmp", ".bak")


class Monitor:
    """One --emperor argument."""

    def __init__(self, arg: str, extra_extensions: list[str], nofollow: bool) -> None:
        self.arg = arg
        self.extensions = VALID_EXTENSIONS + tuple(ext if ext.startswith(".") else "." + ext
                                                    for ext in extra_extensions)
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


def noise(events: list[tuple[int, str]], monitors: list[Monitor]) -> bool:
    """Whether the events are only writes to files that are no vassal config (a log kept in the
    vassals dir): those need no scan. Anything else might (a .skel template a vassal links to is
    touched, closed after writing, or renamed, never merely written to), and so is scanned."""
    return bool(events) and all(mask == Inotify.MODIFY and name and not any(m.valid(name) for m in monitors)
                                for mask, name in events)
