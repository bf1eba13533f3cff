"""The master as its plugins see it: every operation a plugin may use, and nothing of its state.

Plugins (the cheaper subsystem, the elastic watches, recycling, the reloader, the emperor link)
receive the master annotated as `Host` and use only these named operations, so the master's
attributes stay its own: a plugin that needs to read something more asks for a method here first.
`Master` satisfies this Protocol structurally (mypy checks it where cli.py plugs them in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from zergserve.config import Config
from zergserve.scoreboard import Row


class WorkerRecord(Protocol):
    """What a plugin reads of one live worker (the master's WorkerProc)."""

    @property
    def wid(self) -> int: ...

    @property
    def pid(self) -> int: ...

    @property
    def spawned(self) -> float:
        """When it was forked (time.monotonic())."""

    @property
    def recycle_deadline(self) -> float | None:
        """Set once it was told to recycle (killed if still running then)."""

    def rss(self) -> int: ...


class Host(Protocol):
    """The master's plugin interface: hooks into its loop, reads, and actions."""

    @property
    def cfg(self) -> Config:
        """The instance's configuration (read only)."""

    # --- hooking into the loop -------------------------------------------------------------

    def add_reader(self, fileobj: Any, callback: Callable[[], None]) -> None: ...

    def remove_reader(self, fileobj: Any) -> None: ...

    def add_housekeeping(self, task: Callable[[], None]) -> None: ...

    def add_timer(self, task: Callable[[], float]) -> None: ...

    def add_ready_task(self, task: Callable[[], None]) -> None: ...

    def add_wake_task(self, task: Callable[[], None]) -> None: ...

    def add_stats(self, provider: Callable[[], dict[str, Any]]) -> None: ...

    def add_handover(self, key: str, provider: Callable[[], Any]) -> None: ...

    def add_cleanup(self, task: Callable[[], None]) -> None: ...

    # --- reading ---------------------------------------------------------------------------

    def rows(self) -> list[Row]: ...

    def live_rows(self) -> list[Row]: ...

    def worker_procs(self) -> Sequence[WorkerRecord]: ...

    def queue_lengths(self) -> list[tuple[int, str]]: ...

    def worker_count(self) -> int:
        """How many workers the master keeps now (TTIN/TTOU and the cheaper subsystem change it)."""

    def is_cheap(self) -> bool:
        """Whether the workers are stopped and the master waits on the sockets (--idle, --cheap)."""

    def is_stopping(self) -> bool: ...

    # --- acting ----------------------------------------------------------------------------

    def set_worker_count(self, count: int) -> None: ...

    def add_worker(self, reason: str) -> None: ...

    def retire_worker(self, reason: str) -> None: ...

    def recycle(self, wid: int, reason: str) -> None: ...

    def kill_worker(self, wid: int) -> None: ...

    def go_cheap(self) -> None: ...

    def handle_hup(self) -> None: ...

    def begin_stop(self, how: str, exit_code: int | None = None) -> None: ...
