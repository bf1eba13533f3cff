"""The event loop the asyncio worker runs on (`--loop`, uvicorn's name): asyncio's own or uvloop.

`auto` picks uvloop when it is installed (the zergserve[uvloop] extra). Asking for uvloop where it
is not installed is a start error, found by the master before it forks (`check`)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class LoopError(Exception):
    """The configured loop cannot be had here."""


def _has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(name: str) -> str:
    """The loop `name` means here: auto becomes uvloop or asyncio."""
    if name == "auto":
        return "uvloop" if _has_uvloop() else "asyncio"
    return name


def check(name: str) -> None:
    """Raise LoopError when `name` asks for a loop that is not installed."""
    if name == "uvloop" and not _has_uvloop():
        raise LoopError("--loop uvloop: uvloop is not installed (pip install 'zergserve[uvloop]'), "
                        "or use --loop asyncio")


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind `name` (auto, asyncio, uvloop) says. asyncio is imported
    here, not by the module: the cli imports this one, and a sync worker has no use for asyncio's
    memory."""
    if resolve(name) == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    import asyncio
    return asyncio.new_event_loop()
