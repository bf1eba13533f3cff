"""`uwsgidecorators` where uWSGI's own is not installed: the decorators that need only what
zergserve has. `@postfork` (every worker, or `@postfork(2)` worker 2 only, after each fork),
`@thread` (a daemon thread per call) and `@lock` (under uwsgi.lock()). The decorators of uWSGI
subsystems zergserve has not (spool, mule, timer, cron, signal, rpc, filemon...) are absent, so an
app that needs them fails at its import with the decorator's name, not later.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from zergserve.compat import uwsgi  # the module apps import as `uwsgi` (compat.install() puts it there)

postfork_chain: list["postfork"] = []


def postfork_chain_hook() -> None:
    for item in postfork_chain:
        item()


uwsgi.post_fork_hook = postfork_chain_hook


class postfork:
    """Run the function in each worker after its fork; `@postfork(N)`: in worker N only."""

    def __init__(self, f: Callable[[], Any] | int) -> None:
        if callable(f):
            self.wid = 0
            self.f: Callable[[], Any] | None = f
        else:
            self.f = None
            self.wid = f
        postfork_chain.append(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.f:
            if self.wid > 0 and self.wid != uwsgi.worker_id():
                return None
            return self.f()
        self.f = args[0]
        return self


class thread:
    """Run each call of the function in a new daemon thread."""

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    def __call__(self, *args: Any) -> Callable[..., Any]:
        threading.Thread(target=self.f, args=args, daemon=True).start()
        return self.f


class lock:
    """Run the function holding uwsgi lock 0: one call at a time across every worker."""

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        uwsgi.lock()
        try:
            return self.f(*args, **kwargs)
        finally:
            uwsgi.unlock()
