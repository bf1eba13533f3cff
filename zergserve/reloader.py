"""Reload on change: --touch-reload, --touch-workers-reload, --fs-reload and --py-autoreload (--reload).

Every trigger ends in what the master already does: the checked graceful reload of HUP (the new
configuration and app are loaded in a check process first; if that fails, the running workers go
on and the next change tries again), or, for --touch-workers-reload, recycling each worker after
the request in hand. A change is a different modification time (or, for a directory, a different
set of entries and their times), never the mere arrival of an event: an editor's swap file or a
.pyc write reloads nothing.

    --touch-reload FILE        checked once per master cycle, as uWSGI does
    --touch-workers-reload FILE
    --fs-reload PATH           a file, or the entries directly in a directory; inotify wakes the
                               master at once, else checked once per cycle
    --py-autoreload N          the source files of the modules the master imported (with the app
                               loaded in the master, the app's; with --lazy-apps a throwaway child
                               imports the app to list them); inotify on their directories wakes
                               the master at once, else checked every N seconds

After the reload the new master takes the times it finds as its new reference.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from zergserve import exitcodes
from zergserve.config import Config
from zergserve.inotify import Inotify
from zergserve.log import logger

Stamp = Any  # what `_stamp` returns: comparable, None when the path is missing


class Reloader:
    def __init__(self, master: Any) -> None:
        self.master = master
        cfg = master.cfg
        self.touch = {path: _stamp(path) for path in cfg.touch_reload}
        self.touch_workers = {path: _stamp(path) for path in cfg.touch_workers_reload}
        self.fs = {path: _stamp(path) for path in cfg.fs_reload}
        files = module_files() if cfg.py_autoreload else []
        if cfg.py_autoreload and cfg.lazy_apps:
            files = sorted({*files, *lazy_app_files(cfg)})
        self.modules = {path: _stamp(path) for path in files}
        self.every = cfg.py_autoreload
        self.next_module_check = time.monotonic() + self.every
        self.inotify: Inotify | None = None
        # Event names worth a look (the watched directories hold other files too: logs, sockets).
        self.names = {os.path.basename(path) for path in [*self.fs, *self.modules] if not os.path.isdir(path)}
        self.any_name = any(os.path.isdir(path) for path in self.fs)
        if self.fs or self.modules:
            self._watch()
        master.add_housekeeping(self.housekeeping)
        if cfg.py_autoreload:
            logger.info("py-autoreload: watching %d module files%s", len(self.modules),
                        " (inotify)" if self.inotify else f", every {self.every}s")

    def _watch(self) -> None:
        inotify = Inotify()
        if inotify.fileno() < 0:
            return
        for directory in {path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
                          for path in [*self.fs, *self.modules]}:
            inotify.watch(directory)
        self.inotify = inotify
        self.master.add_reader(inotify, self._changed)
        self.master.add_cleanup(inotify.close)

    def _changed(self) -> None:
        assert self.inotify is not None
        events = self.inotify.changes()
        if not self.any_name and not any(not name or name in self.names for _, name in events):
            return
        self._check(self.fs, "fs-reload", self.master.handle_hup)
        self._check(self.modules, "py-autoreload", self.master.handle_hup)

    def housekeeping(self) -> None:
        self._check(self.touch, "touch-reload", self.master.handle_hup)
        self._check(self.touch_workers, "touch-workers-reload", self._recycle_workers)
        if self.inotify is None:
            self._check(self.fs, "fs-reload", self.master.handle_hup)
        if self.modules and self.inotify is None and time.monotonic() >= self.next_module_check:
            self.next_module_check = time.monotonic() + self.every
            self._check(self.modules, "py-autoreload", self.master.handle_hup)

    def _check(self, watched: dict[str, Stamp], option: str, act: Callable[[], None]) -> None:
        changed = []
        for path, before in watched.items():
            now = _stamp(path)
            if now != before:
                watched[path] = now
                changed.append(path)
        if changed:
            logger.info("%s: %s changed", option, ", ".join(changed))
            act()

    def _recycle_workers(self) -> None:
        for wid in [proc.wid for proc in self.master.worker_procs()]:
            self.master.recycle(wid, "touch-workers-reload")


def module_files() -> list[str]:
    """The source file of every imported module that has one (built-ins and zipped ones have none)."""
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and os.path.isfile(path):
            files.add(os.path.abspath(path))
    return sorted(files)


def lazy_app_files(cfg: Config) -> list[str]:
    """With --lazy-apps the master never imports the app: a throwaway child imports it and
    reports the module files it then has (development mode only; the master stays clean)."""
    from zergserve import app as app_loader
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                app_loader.load(cfg.module, cfg.wsgi_file, cfg.callable)
            except Exception:  # noqa: BLE001 - the workers report a broken app; watch what was imported
                pass
            with os.fdopen(write_end, "w") as out:
                out.write("\n".join(module_files()))
        finally:
            os._exit(exitcodes.OK)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        files = pipe.read().split("\n")
    os.waitpid(pid, 0)
    return [path for path in files if path]


def _stamp(path: str) -> Stamp:
    """The modification time of a file; for a directory also each entry's name and time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return st.st_mtime_ns
    entries = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    entries.append((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns))
                except OSError:
                    continue
    except OSError:
        pass
    return st.st_mtime_ns, frozenset(entries)
