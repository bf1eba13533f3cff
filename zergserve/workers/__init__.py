"""Worker classes by the name `--worker` takes; each is one module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from zergserve import app as app_loader
from zergserve.config import Config

if TYPE_CHECKING:  # base imports this package (load_app)
    from zergserve.workers.base import Worker

CLASSES = {
    "sync": "zergserve.workers.sync:SyncWorker",
    "gthread": "zergserve.workers.threads:ThreadsWorker",
    "gevent": "zergserve.workers.gevent:GeventWorker",
    "asyncio": "zergserve.workers.asyncio:AsyncioWorker",
}
SERVES = {"sync": "wsgi", "gthread": "wsgi", "gevent": "wsgi", "asyncio": "asgi"}  # the interface each class calls
# Classes whose event loop ticks the scoreboard row's heartbeat (base.tick_interval): their --harakiri measures
# a loop that stopped ticking (CPU-bound code, a blocking call), not one request that awaits long.
LOOP_TICKS = {"gevent", "asyncio"}


def load_app(cfg: Config) -> Callable[..., Any]:
    """The configured app, refused (AppLoadError) if the configured worker class cannot call it."""
    return app_loader.load(cfg.module, cfg.wsgi_file, cfg.callable, SERVES[cfg.worker], cfg.worker)


def get(name: str) -> type[Worker]:
    module, _, attr = CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def cores(cfg: Config) -> int:
    """Scoreboard cores per worker row: one per request thread of the gthread worker, else none."""
    return cfg.threads if cfg.worker == "gthread" else 0
