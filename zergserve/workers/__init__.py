"""Worker classes by the name `--worker` takes; each is one module."""

from __future__ import annotations

import importlib

CLASSES = {
    "sync": "zergserve.workers.sync:SyncWorker",
    "gevent": "zergserve.workers.gevent:GeventWorker",
    "asyncio": "zergserve.workers.asyncio:AsyncioWorker",
}


def get(name: str) -> type:
    module, _, attr = CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
