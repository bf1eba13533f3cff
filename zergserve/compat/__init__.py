"""uWSGI's Python API for apps written for uWSGI, where uWSGI itself is absent.

Under uWSGI, `import uwsgi` gives the server's embedded module and `uwsgidecorators` (shipped with
uWSGI) builds on it. zergserve puts its own `uwsgi` module (compat/uwsgi.py) into sys.modules before
it loads the app, unless a real one is importable, so such apps run unchanged; outside zergserve
`import uwsgi` still fails, as apps that probe for it expect. `uwsgidecorators` is uWSGI's own when it
is installed (pip install uwsgi ships it; it runs on this module), else compat/uwsgidecorators.py.
"""

from __future__ import annotations

import importlib.util
import sys

from zergserve.config import Config


def install(cfg: Config) -> bool:
    """Make `import uwsgi` (and `import uwsgidecorators`) work for the app; False if a real uwsgi
    module is importable and was left alone. Call after --chdir/--pythonpath, before the app loads."""
    if "uwsgi" in sys.modules or importlib.util.find_spec("uwsgi") is not None:
        return False
    from zergserve.compat import uwsgi
    uwsgi.configure(cfg)
    sys.modules["uwsgi"] = uwsgi
    if importlib.util.find_spec("uwsgidecorators") is None:
        from zergserve.compat import uwsgidecorators
        sys.modules["uwsgidecorators"] = uwsgidecorators
    return True


def forked(wid: int, lock_fd: int) -> None:
    """In a new worker, before it serves: `uwsgi.worker_id()` answers `wid`, and the app's
    `uwsgi.post_fork_hook` (uwsgidecorators' @postfork functions) runs, as uWSGI runs it after each
    fork (with --lazy-apps before the app loads, so functions registered by its import do not).
    `lock_fd` is open in every worker (the scoreboard's): uwsgi.lock() takes POSIX locks on it."""
    module = sys.modules.get("uwsgi")
    if module is None or getattr(module, "__name__", "") != "zergserve.compat.uwsgi":
        return
    module.worker_started(wid, lock_fd)


def exiting() -> None:
    """In a worker that leaves: the app's `uwsgi.atexit`, as uWSGI calls it."""
    module = sys.modules.get("uwsgi")
    if module is not None and getattr(module, "__name__", "") == "zergserve.compat.uwsgi":
        module.worker_exiting()
