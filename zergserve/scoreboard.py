"""A shared-memory table with one row per worker: the master's only view into its workers.

Each worker writes its own row (a few bytes per request, no locks: one writer per row); the
master reads every row each cycle for harakiri, max-requests, idle/cheap, the SOS watch and stats.
The table lives in a memfd so that it can be handed across the master's re-exec on reload.
"""

from __future__ import annotations

from bisect import bisect_left
import mmap
import os
import struct
import time
from _thread import allocate_lock  # (threading's Lock, without importing threading into every worker)
from typing import Any, Final, NamedTuple, Protocol

from zergserve import compiled
from zergserve.pacing import monotonic

# Upper bounds (seconds) of the response-time histogram: Prometheus' default buckets. Each row counts
# the requests that fell in each bucket (not cumulative); the last, +Inf, is `requests` itself.
BUCKETS: Final[tuple[float, ...]] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_LAST_BUCKET: Final = len(BUCKETS)
_FIRST_BOUND: Final = 0.005  # BUCKETS[0]: most responses fall in the first bucket, found without a search

# pid, status, requests, exceptions, tx bytes, request start, avg response time (µs), time spent in
# requests (µs, uWSGI's running_time), last heartbeat, spawn time, the histogram's buckets, then the
# request line being served (method and path, for the harakiri log). Request start and heartbeat are
# time.monotonic() (CLOCK_MONOTONIC is one clock for every process of the host), for harakiri and the
# busyness measures; the stats show them as timestamps (`wall`). The spawn time is a timestamp.
_ROW: Final = struct.Struct("=iiQQQddQdd")
_HIST: Final = struct.Struct(f"={len(BUCKETS)}Q")
_REQ_INFO: Final = 120
ROW_SIZE: Final = 384
_STATUS: Final = struct.Struct("=i")
_TIME: Final = struct.Struct("=d")
_I: Final = struct.Struct("=I")  # after the request line: the open WebSockets (asyncio worker), then connections
assert _ROW.size + _HIST.size + _REQ_INFO + 2 * _I.size <= ROW_SIZE

# (Final: the compiled build reads them as constants, not from the module's dict, on every request.)
STARTING: Final = 0
IDLE: Final = 1
BUSY: Final = 2
STOPPING: Final = 3
PAUSED: Final = 4
CHEAP: Final = 5
DEAD: Final = 6
STATUS_NAMES: Final = {STARTING: "starting", IDLE: "idle", BUSY: "busy", STOPPING: "stopping",
                       PAUSED: "pause", CHEAP: "cheap", DEAD: "dead"}

_OFF_PID: Final = 0
_OFF_HIST: Final = _ROW.size
_OFF_INFO: Final = _OFF_HIST + _HIST.size
_OFF_WS: Final = _OFF_INFO + _REQ_INFO
_OFF_CONNS: Final = _OFF_WS + _I.size  # the open connections of a gevent or asyncio worker (Worker.over_share)
# A worker's cores (uWSGI's name for its request threads), after its row: requests, request start.
_CORE: Final = struct.Struct("=Qd")
assert _CORE.size == 16
# The worker writes its row through typed views of it (RowWriter), a field at a time: indexes of
# its 4-byte fields, 8-byte counters and 8-byte times.
_I_STATUS: Final = 1
_I_WS: Final = _OFF_WS // 4
_I_CONNS: Final = _OFF_CONNS // 4
_W_REQUESTS: Final = 1
_W_EXCEPTIONS: Final = 2
_W_TX: Final = 3
_W_RUNNING: Final = 6
_W_HIST: Final = _OFF_HIST // 8
_F_START: Final = 4
_F_AVG: Final = 5
_F_HEARTBEAT: Final = 7
_INFO_MAX: Final = _REQ_INFO - 1  # the request line is cut there: the last byte stays 0
assert [struct.calcsize("=" + _ROW.format[1:n]) for n in (2, 3, 4, 5, 6, 7, 8, 9)] == [
    4 * _I_STATUS, 8 * _W_REQUESTS, 8 * _W_EXCEPTIONS, 8 * _W_TX, 8 * _F_START, 8 * _F_AVG, 8 * _W_RUNNING,
    8 * _F_HEARTBEAT]
assert _OFF_HIST % 8 == 0 and _OFF_WS % 4 == 0 and ROW_SIZE % 8 == 0


class Row(NamedTuple):
    """A snapshot of one worker's row."""

    wid: int
    pid: int
    status: int
    requests: int
    exceptions: int
    tx: int
    request_start: float
    heartbeat: float
    avg_rt: float
    spawned: float
    running_time: int
    buckets: tuple[int, ...]
    request: str
    websockets: int = 0
    connections: int = 0

    def busy_until(self, now: float) -> float:
        """Seconds spent in requests up to `now` (time.monotonic()), the one in hand included: the
        cheaper subsystem's busyness."""
        running = now - self.request_start if self.request_start else 0.0
        return self.running_time / 1e6 + max(running, 0.0)

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "unknown")


def wall(monotonic: float) -> float:
    """A row's time.monotonic() value as a timestamp, for the stats (0 stays 0: none)."""
    return time.time() - (time.monotonic() - monotonic) if monotonic else 0.0


class Core(NamedTuple):
    """A snapshot of one request thread of a worker (uWSGI's core)."""

    requests: int
    request_start: float


class Scoreboard:
    """Rows 1..size (worker ids start at 1, as in uWSGI); row 0 is unused. A row is followed by
    `cores` core entries (the gthread worker's threads; none for the other classes)."""

    def __init__(self, size: int, fd: int | None = None, cores: int = 0) -> None:
        self.size = size
        self.cores = cores
        self.row_size = ROW_SIZE + cores * _CORE.size
        self.carried: dict[int, Totals] = {}
        length = self.row_size * (size + 1)
        if fd is None:
            fd = os.memfd_create("zergserve-scoreboard", os.MFD_CLOEXEC)
            os.ftruncate(fd, length)
        self.fd = fd
        self.mem = mmap.mmap(fd, length)

    def close(self) -> None:
        self.mem.close()
        os.close(self.fd)

    def grow(self, size: int) -> None:
        """Make room for more workers (TTIN); existing rows keep their place."""
        if size <= self.size:
            return
        self.mem.close()
        os.ftruncate(self.fd, self.row_size * (size + 1))
        self.mem = mmap.mmap(self.fd, self.row_size * (size + 1))
        self.size = size

    def reset(self, wid: int, pid: int) -> None:
        """Called by the master when it forks worker `wid` (before the child writes anything). The
        counters of the process that had the row so far are carried into `lifetime()`."""
        if wid <= self.size:
            self.carried[wid] = self.lifetime(wid)
        base = wid * self.row_size
        self.mem[base:base + self.row_size] = bytes(self.row_size)
        _ROW.pack_into(self.mem, base, pid, STARTING, 0, 0, 0, 0.0, 0.0, 0, time.monotonic(), time.time())

    def row(self, wid: int) -> Row:
        """The row of worker `wid`'s current process: its counters start at 0 with each spawn."""
        base = wid * self.row_size
        (pid, status, requests, exceptions, tx, request_start, avg_rt, running_time, heartbeat,
         spawned) = _ROW.unpack_from(self.mem, base)
        buckets = _HIST.unpack_from(self.mem, base + _OFF_HIST)
        raw = self.mem[base + _OFF_INFO:base + _OFF_INFO + _REQ_INFO]
        return Row(wid, pid, status, requests, exceptions, tx, request_start, heartbeat, avg_rt, spawned,
                   running_time, buckets, raw.split(b"\0", 1)[0].decode("latin-1"),
                   _I.unpack_from(self.mem, base + _OFF_WS)[0], _I.unpack_from(self.mem, base + _OFF_CONNS)[0])

    def lifetime(self, wid: int) -> "Totals":
        """Worker `wid`'s counters over every process that held the row since the master started:
        uWSGI keeps requests, exceptions, tx and running_time across a worker's respawns."""
        return self.carried.get(wid, _ZERO).plus(self.row(wid))

    def rows(self) -> list[Row]:
        return [self.row(wid) for wid in range(1, self.size + 1)]

    def writer(self, wid: int) -> "RowHandle":
        """Worker `wid`'s writer, for the worker itself: its views of the table would keep the
        master from growing it (grow() closes the mapping). The C one when it is built."""
        writer: RowHandle = _WRITER(self.mem, wid * self.row_size)
        return writer

    def set_pid(self, wid: int, pid: int) -> None:
        struct.pack_into("=i", self.mem, wid * self.row_size + _OFF_PID, pid)

    def fewest_connections(self, wid: int, alive_since: float) -> int | None:
        """The fewest open connections that another worker holds among those accepting (idle or busy)
        whose heartbeat is newer than `alive_since`; None when there is no such worker."""
        fewest = None
        for other in range(1, self.size + 1):
            base = other * self.row_size
            if other == wid or _STATUS.unpack_from(self.mem, base + 4 * _I_STATUS)[0] not in (IDLE, BUSY):
                continue
            if _TIME.unpack_from(self.mem, base + 8 * _F_HEARTBEAT)[0] <= alive_since:
                continue
            count = _I.unpack_from(self.mem, base + _OFF_CONNS)[0]
            fewest = count if fewest is None else min(fewest, count)
        return fewest

    def core_list(self, wid: int) -> list[Core]:
        base = wid * self.row_size + ROW_SIZE
        return [Core(*_CORE.unpack_from(self.mem, base + i * _CORE.size)) for i in range(self.cores)]

    def core_writers(self, wid: int) -> list["CoreWriter"]:
        base = wid * self.row_size + ROW_SIZE
        return [CoreWriter(self.mem, base + i * _CORE.size) for i in range(self.cores)]


class CoreWriter:
    """One request thread's entry: written by that thread only (as RowWriter writes, through typed
    views: the requests served, the request start)."""

    __slots__ = ("words", "floats", "requests")

    def __init__(self, mem: mmap.mmap, base: int) -> None:
        entry = memoryview(mem)[base:base + _CORE.size]
        self.words = entry.cast("Q")
        self.floats = entry.cast("d")
        self.requests = 0

    def begin(self, now: float) -> None:
        self.floats[1] = now

    def end(self) -> None:
        self.requests += 1
        self.words[0] = self.requests
        self.floats[1] = 0.0


class RowWriter:
    """The worker's handle on its own row: each write is an item assignment to a typed view of the
    row (a struct's pack_into per write cost the request path about 4k instructions)."""

    __slots__ = ("ints", "words", "floats", "info", "requests", "exceptions", "tx", "avg_rt", "running", "buckets")

    def __init__(self, mem: mmap.mmap, base: int) -> None:
        row = memoryview(mem)[base:base + ROW_SIZE]
        self.ints = row.cast("i")
        self.words = row.cast("Q")
        self.floats = row.cast("d")
        self.info = row[_OFF_INFO:_OFF_INFO + _INFO_MAX]
        self.requests = 0
        self.exceptions = 0
        self.tx = 0
        self.avg_rt = 0.0
        self.running = 0
        self.buckets = [0] * len(BUCKETS)

    def set_status(self, status: int, /) -> None:
        """The status, and the heartbeat with it."""
        self.ints[_I_STATUS] = status
        self.floats[_F_HEARTBEAT] = monotonic()

    def write_status(self, status: int, /) -> None:
        """The status alone."""
        self.ints[_I_STATUS] = status

    def heartbeat(self) -> None:
        self.floats[_F_HEARTBEAT] = monotonic()

    def set_websockets(self, count: int, /) -> None:
        self.ints[_I_WS] = count

    def set_connections(self, count: int, /) -> None:
        self.ints[_I_CONNS] = count

    def begin(self, request_line: bytes, now: float, /) -> None:
        """A request has started (`now`: time.monotonic()): its request line for harakiri logs, its
        start, busy (in that order: a master that sees busy sees the rest)."""
        self.show(request_line)
        self.floats[_F_START] = now
        self.ints[_I_STATUS] = BUSY

    def show(self, request_line: bytes, /) -> None:
        """The request line alone (cut, NUL-terminated), also for a shared row whose oldest request
        changed."""
        size = len(request_line)
        if size < _INFO_MAX:
            self.info[:size] = request_line
            self.info[size] = 0
        else:
            self.info[:] = request_line[:_INFO_MAX]

    def end(self, sent: int, elapsed: float, failed: bool, busy_since: float = 0.0, /) -> None:
        """A request has ended: counters, time in requests, the response-time histogram, moving
        average of the response time, back to idle, or still busy since `busy_since` (a row that
        others' requests share: SharedRow). `sent` is what the stats call tx: uWSGI counts the
        response head in it as well as the body."""
        words, floats = self.words, self.floats
        self.requests += 1
        words[_W_REQUESTS] = self.requests
        self.tx += sent
        words[_W_TX] = self.tx
        if failed:
            self.exceptions += 1
            words[_W_EXCEPTIONS] = self.exceptions
        micros = elapsed * 1e6
        self.avg_rt = micros if self.requests == 1 else self.avg_rt + (micros - self.avg_rt) / 16
        floats[_F_AVG] = self.avg_rt
        self.running += int(micros)
        words[_W_RUNNING] = self.running
        bucket = 0 if elapsed <= _FIRST_BOUND else bisect_left(BUCKETS, elapsed)
        if bucket < _LAST_BUCKET:
            count = self.buckets[bucket] = self.buckets[bucket] + 1
            words[_W_HIST + bucket] = count
        floats[_F_START] = busy_since
        self.ints[_I_STATUS] = BUSY if busy_since else IDLE


class RowHandle(Protocol):
    """What a worker writes its row through: RowWriter, or the same class in C (_rowwriter.c),
    which Scoreboard.writer() hands out when it is built."""

    @property
    def requests(self) -> int: ...

    def set_status(self, status: int, /) -> None: ...

    def write_status(self, status: int, /) -> None: ...

    def heartbeat(self) -> None: ...

    def set_websockets(self, count: int, /) -> None: ...

    def set_connections(self, count: int, /) -> None: ...

    def begin(self, request_line: bytes, now: float, /) -> None: ...

    def show(self, request_line: bytes, /) -> None: ...

    def end(self, sent: int, elapsed: float, failed: bool, busy_since: float = 0.0, /) -> None: ...


_C_WRITER: Final = compiled.accelerator("zergserve._rowwriter", "RowWriter")
_WRITER: Final = _C_WRITER or RowWriter


class SharedRow:
    """The worker's scoreboard row as many concurrent requests see it (gevent and asyncio workers).

    It is busy while any request is in flight, and its request start moves on each time one
    finishes: --harakiri then kills a worker that finished nothing for N seconds while busy, not
    one whose long request runs among others that finish."""

    __slots__ = ("row", "worker", "inflight", "line", "shown")

    def __init__(self, row: RowHandle, worker: PauseState) -> None:
        self.row = row
        self.worker = worker
        self.inflight = 0
        self.line = b""  # the request line of the latest request begun
        self.shown = b""  # the one the row holds

    def begin(self, request_line: bytes, now: float, /) -> None:
        self.inflight += 1
        self.line = request_line
        if self.inflight == 1:
            self.row.begin(request_line, now)
            self.shown = request_line

    def end(self, sent: int, elapsed: float, failed: bool) -> None:
        self.inflight -= 1
        if self.inflight:
            if self.line != self.shown:
                self.row.show(self.line)
                self.shown = self.line
            self.row.end(sent, elapsed, failed, monotonic())  # (busy since now)
        else:
            self.row.end(sent, elapsed, failed)
            if self.worker.pause_applied:  # not `paused`: a TSTP and its undo before the loop woke show nothing
                self.row.set_status(PAUSED)

    @property
    def requests(self) -> int:
        return self.row.requests


NO_CORE: Final = 1 << 30  # the core of a thread without an entry (a gthread worker's main thread at a stop)


class CoreRows:
    """The scoreboard as the exchange sees it from any of a gthread worker's threads: the calling
    thread's core entry (`local.core`, a threading.local's), and the process's row, busy when every
    thread is, its request start the oldest in flight (for harakiri). Compiled with the request
    path, which calls it twice per request."""

    __slots__ = ("row", "cores", "worker", "local", "threads", "max_requests", "wake_w", "lock", "started",
                 "inflight")

    def __init__(self, row: RowHandle, cores: list[CoreWriter], worker: PauseState, local: Any, threads: int,
                 max_requests: int, wake_w: int) -> None:
        self.row = row
        self.cores = cores
        self.worker = worker
        self.local = local
        self.threads = threads
        self.max_requests = max_requests
        self.wake_w = wake_w
        self.lock = allocate_lock()
        self.started: dict[int, tuple[float, bytes]] = {}  # core → start, request line
        self.inflight = 0

    def begin(self, request_line: bytes, now: float, /) -> None:
        core: int = self.local.core
        if core < len(self.cores):
            self.cores[core].begin(now)
        with self.lock:
            self.started[core] = (now, request_line)
            self.inflight = len(self.started)
            if self.inflight == 1:
                self.row.begin(request_line, now)
            self._status()

    def end(self, sent: int, elapsed: float, failed: bool) -> None:
        core: int = self.local.core
        if core < len(self.cores):
            self.cores[core].end()
        with self.lock:
            self.started.pop(core, None)
            self.inflight = len(self.started)
            self.row.end(sent, elapsed, failed)  # writes idle and no request start
            if self.started:
                start, line = min(self.started.values())
                self.row.begin(line, start)
            self._status()
        if self.max_requests and self.row.requests >= self.max_requests:
            try:
                os.write(self.wake_w, b"m")  # the main thread's done() sees it now, not at its next heartbeat
            except OSError:
                pass  # the pipe is full: the main thread is being woken already

    @property
    def full(self) -> bool:
        return self.inflight >= self.threads

    def _status(self) -> None:
        """Busy only when every thread is; the row's request start stays the oldest in flight. (The
        status alone: the worker's main thread writes the heartbeat.)"""
        self.row.write_status(PAUSED if self.worker.pause_applied else BUSY if self.full else IDLE)

    @property
    def requests(self) -> int:
        return self.row.requests


class PauseState(Protocol):
    """What SharedRow reads of its worker: whether the loop has applied a pause (TSTP; None: the
    loop has not run yet)."""

    @property
    def pause_applied(self) -> bool | None: ...


class Totals(NamedTuple):
    """A worker's counters summed over its processes (see Scoreboard.lifetime)."""

    requests: int = 0
    exceptions: int = 0
    tx: int = 0
    running_time: int = 0
    buckets: tuple[int, ...] = (0,) * len(BUCKETS)

    def plus(self, row: Row) -> "Totals":
        return Totals(self.requests + row.requests, self.exceptions + row.exceptions, self.tx + row.tx,
                      self.running_time + row.running_time,
                      tuple(a + b for a, b in zip(self.buckets, row.buckets)))


_ZERO = Totals()
