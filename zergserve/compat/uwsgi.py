"""The `uwsgi` module as apps see it under zergserve (see compat/__init__.py for when it is used).

What apps written for uWSGI commonly touch, with uWSGI's meanings: `worker_id()` (0 in the master),
`numproc`, `masterpid()`, `opt` (the options set, bytes values as uWSGI's Python 3 plugin gives
them, True for the flags that are on, custom `--set` placeholders), `reload()` (graceful, HUP), `stop()` (QUIT), `setprocname()`,
`log()`, `mem()`, `lock()`/`unlock()` (shared by every worker), `post_fork_hook` and `atexit`.
uWSGI subsystems zergserve has not (spooler, mules, signals, timers, caches, RPC) are absent: their
functions raise AttributeError, which is how code that works with or without them tells.
"""

from __future__ import annotations

import _thread
import fcntl
import os
import signal
import socket
import time
from typing import Any, Callable

from zergserve import __version__, config, proctitle
from zergserve.log import logger, traceback_text

version = __version__.encode()
version_info = tuple(int(part) if part.isdigit() else part for part in __version__.split("."))
hostname = socket.gethostname().encode()
started_on = int(time.time())
numproc = 1
cores = 1
buffer_size = 4096
opt: dict[str, Any] = {}
SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

post_fork_hook: Callable[[], Any] | None = None  # set by the app (uwsgidecorators does), called after fork
atexit: Callable[[], Any] | None = None  # set by the app, called when a worker leaves
spooler: Callable[..., Any] | None = None  # uwsgidecorators sets it; zergserve has no spooler to call it

_worker_id = 0
_master_pid = os.getpid()
_lock_fd = -1
_thread_locks: dict[int, _thread.LockType] = {}
_mule_hook: Callable[[bytes], Any] | None = None
_cfg: config.Config | None = None  # for setprocname's --procname-prefix and --procname-append


def configure(cfg: config.Config) -> None:
    """Fill in what the configuration says (the master, before any fork)."""
    global numproc, buffer_size, _master_pid, _cfg
    numproc = cfg.processes
    buffer_size = cfg.buffer_size
    _master_pid = os.getpid()
    _cfg = cfg
    opt.clear()
    for option in config.OPTIONS:  # what zergserve always does (enable-threads, master...) is on
        if option.flag and getattr(cfg, option.attr):
            opt[option.name] = True
    for arg in cfg.as_args():
        name, eq, value = arg[2:].partition("=")
        item: Any = value.encode() if eq else True
        if name in opt and opt[name] is not True:
            previous = opt[name]
            opt[name] = [*previous, item] if isinstance(previous, list) else [previous, item]
        else:
            opt[name] = item
    for name, value in cfg.placeholders.items():
        opt.setdefault(name, value.encode())


def worker_started(wid: int, lock_fd: int) -> None:
    """`lock_fd`: a file every worker of the instance has open, for lock(); its byte N is lock N."""
    global _worker_id, _lock_fd
    _worker_id = wid
    _lock_fd = lock_fd
    _call("post_fork_hook", post_fork_hook)


def worker_exiting() -> None:
    _call("atexit", atexit)


def _call(name: str, hook: Callable[[], Any] | None) -> None:
    if hook is None:
        return
    try:
        hook()
    except Exception:
        logger.error("worker %d: uwsgi.%s raised:\n%s", _worker_id, name, traceback_text())


def worker_id() -> int:
    return _worker_id


def masterpid() -> int:
    return _master_pid


def mule_id() -> int:
    return 0


def i_am_the_spooler() -> bool:
    return False


def reload() -> bool:
    """A graceful reload of the whole instance, as HUP to the master."""
    return _signal_master(signal.SIGHUP)


def stop() -> bool:
    """Stop the instance at once, as uWSGI's uwsgi.stop() (QUIT to the master)."""
    return _signal_master(signal.SIGQUIT)


def _signal_master(signum: int) -> bool:
    try:
        os.kill(_master_pid, signum)
    except OSError:
        return False
    return True


def setprocname(name: str) -> None:
    """The title, between --procname-prefix(-spaced) and --procname-append, as uWSGI sets it."""
    proctitle.setproctitle(proctitle.framed(_cfg, name) if _cfg is not None else name)


def log(message: str) -> bool:
    logger.info("%s", message)
    return True


def mem() -> tuple[int, int]:
    """(rss, vsz) of this process in bytes."""
    with open("/proc/self/statm", "rb") as fh:
        fields = fh.read().split()
    page = os.sysconf("SC_PAGE_SIZE")
    return int(fields[1]) * page, int(fields[0]) * page


def lock(num: int = 0) -> None:
    """Take lock `num`, shared by every worker of the instance (and the threads of each)."""
    if num < 0:
        raise ValueError("lock number must be >= 0")
    _thread_locks.setdefault(num, _thread.allocate_lock()).acquire()
    if _lock_fd >= 0:  # in a worker (the master, loading the app, has no other process to exclude)
        fcntl.lockf(_lock_fd, fcntl.LOCK_EX, 1, num)


def unlock(num: int = 0) -> None:
    if _lock_fd >= 0:
        fcntl.lockf(_lock_fd, fcntl.LOCK_UN, 1, num)
    _thread_locks[num].release()


def signal_registered(num: int) -> bool:
    """No uWSGI signal is ever registered here (there is no signal framework to register with)."""
    return False


def install_mule_msg_hook(hook: Callable[[bytes], Any]) -> None:
    """Kept for uwsgidecorators' import; there are no mules, so no message ever comes."""
    global _mule_hook
    _mule_hook = hook
