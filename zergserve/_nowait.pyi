"""The types of the drivers' optional C recv (_nowait.c), which mypy cannot read."""

from typing import Any

def recv(sock: Any, size: int, flags: int, /) -> bytes | None: ...
