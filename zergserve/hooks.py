"""Server hooks from a Python file (`--hooks FILE`), named and called as gunicorn calls them.

A gunicorn.conf.py works as it is: its functions of these names are the hooks, everything else in
it is ignored (options come from zergserve's own sources); gunicorn's other hooks (post_worker_init,
worker_int, worker_abort, pre_exec, pre_request, post_request, nworkers_changed) get a warning. A hook that raises is logged with its
traceback and the server goes on; a file that cannot be loaded stops the start (and a reload's check).

    on_starting(server)         the master, before it creates its stats socket and forks workers
    on_reload(server)           the master, after a HUP re-executed it with the new code and config
    when_ready(server)          the master, once its sockets are ready, before the first worker
    pre_fork(server, worker)    the master, just before it forks a worker (worker.pid is None)
    post_fork(server, worker)   the new worker, just after the fork, before it serves
    worker_exit(server, worker) the worker, when it leaves (not when it is killed)
    child_exit(server, worker)  the master, when it has reaped a worker
    on_exit(server)             the master, just before it exits

`server` is the master (`server.pid`, `server.cfg`, `server.num_workers`, `server.log`); `worker`
has `wid` (uWSGI's worker id), `age` (gunicorn's name for the same), `pid` and `log`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from zergserve.log import ServerLog, logger, traceback_text

NAMES = ("on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "worker_exit", "child_exit",
         "on_exit")
_NOT_CALLED = ("post_worker_init", "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request",
               "nworkers_changed", "ssl_context")  # gunicorn's other hooks: a file defining one is told


class HooksError(Exception):
    """The hooks file cannot be read or run, or a hook is not callable."""


class WorkerInfo:
    """What a hook sees of a worker."""

    def __init__(self, wid: int, pid: int | None) -> None:
        self.wid = self.age = wid
        self.pid = pid
        self.log: ServerLog = logger

    def __repr__(self) -> str:
        return f"<worker {self.wid} pid {self.pid}>"


class Hooks:
    """The hooks a file defines; calling one it does not define does nothing."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.functions: dict[str, Callable[..., Any]] = {}
        if path:
            self.functions = _load(path)
            if self.functions:
                logger.info("hooks from %s: %s", path, ", ".join(self.functions))

    def __bool__(self) -> bool:
        return bool(self.functions)

    def call(self, name: str, *args: Any) -> None:
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*args)
        except Exception:
            logger.error("hook %s (%s) raised:\n%s", name, self.path, traceback_text())


def _load(path: str) -> dict[str, Callable[..., Any]]:
    if not os.path.isfile(path):
        raise HooksError(f"hooks file {path!r} not found")
    import runpy  # here: only an instance given --hooks needs it
    try:
        namespace = runpy.run_path(path, run_name="__zergserve_hooks__")
    except Exception as exc:
        raise HooksError(f"hooks file {path!r} failed: {exc!r}\n{traceback_text()}") from None
    functions = {}
    for name in NAMES:
        if name in namespace:
            if not callable(namespace[name]):
                raise HooksError(f"hooks file {path!r}: {name} is not callable")
            functions[name] = namespace[name]
    for name in _NOT_CALLED:
        if callable(namespace.get(name)):
            logger.warning("hooks file %s: gunicorn's %s hook is not called by zergserve", path, name)
    return functions
