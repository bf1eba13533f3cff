"""The scoreboard's rows as the master reads them after a worker's writes (RowWriter writes
through typed views of the shared table, the master reads it with structs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve import scoreboard
from zergserve.scoreboard import BUCKETS, BUSY, IDLE, PAUSED, RowWriter, Scoreboard


def test_a_row_reads_back_what_its_worker_wrote():
    board = Scoreboard(2, cores=2)
    board.reset(1, 4321)
    row, other = board.writer(1), board.writer(2)
    row.begin(b"GET /a", 100.0)
    seen = board.row(1)
    assert (seen.pid, seen.status, seen.request_start, seen.request) == (4321, BUSY, 100.0, "GET /a")
    row.end(150, 0.002, True)
    row.begin(b"POST /b", 101.0)
    row.end(50, 0.3, False, 99.5)  # a shared row: still busy since another request (at 99.5)
    seen = board.row(1)
    assert (seen.requests, seen.exceptions, seen.tx, seen.status, seen.request_start) == (2, 1, 200, BUSY, 99.5)
    assert seen.running_time == 302000 and seen.avg_rt == 2000 + (300000 - 2000) / 16
    assert seen.buckets[0] == 1 and seen.buckets[BUCKETS.index(0.5)] == 1 and sum(seen.buckets) == 2
    row.set_status(PAUSED)
    row.set_websockets(3)
    row.set_connections(7)
    seen = board.row(1)
    assert (seen.status, seen.websockets, seen.connections) == (PAUSED, 3, 7) and seen.heartbeat > 0
    assert board.row(2).requests == 0 and other.requests == 0  # the neighbour's row is untouched


def test_the_request_line_is_cut_and_a_shorter_one_leaves_no_tail():
    board = Scoreboard(1)
    row = board.writer(1)
    row.begin(b"GET /" + b"x" * 300, 1.0)
    assert board.row(1).request == "GET /" + "x" * (119 - 5)
    row.show(b"GET /y")
    assert board.row(1).request == "GET /y"
    row.end(10, 0.001, False)
    assert board.row(1).status == IDLE


def test_the_fewest_connections_are_those_of_a_live_accepting_worker():
    """What Worker.over_share compares with: the other workers that accept (idle or busy) and whose
    heartbeat is recent, never the asking worker itself."""
    board = Scoreboard(4)
    now = time.monotonic()
    for wid, status, connections in ((1, BUSY, 9), (2, IDLE, 5), (3, PAUSED, 0), (4, BUSY, 7)):
        board.reset(wid, 100 + wid)
        row = board.writer(wid)
        row.set_status(status)
        row.set_connections(connections)
    assert board.fewest_connections(1, now - 10) == 5  # not 3's: paused
    assert board.fewest_connections(2, now - 10) == 7
    assert board.fewest_connections(2, time.monotonic() + 1) is None  # every heartbeat older than that
    assert Scoreboard(1).fewest_connections(1, now - 10) is None  # no other worker


def test_cores_count_their_requests():
    board = Scoreboard(1, cores=2)
    first, second = board.core_writers(1)
    first.begin(5.0)
    assert board.core_list(1)[0].request_start == 5.0
    first.end()
    second.begin(6.0)
    second.end()
    second.begin(7.0)
    assert [(core.requests, core.request_start) for core in board.core_list(1)] == [(1, 0.0), (1, 7.0)]


def test_the_master_grows_the_table_after_setting_pids():
    """The master sets pids without a writer: a writer's views would keep grow() from closing the
    mapping."""
    board = Scoreboard(1)
    board.reset(1, 11)
    board.set_pid(1, 12)
    board.grow(3)
    assert board.row(1).pid == 12 and board.row(3).pid == 0


_C_WRITER = scoreboard._C_WRITER
_needs_c = pytest.mark.skipif(_C_WRITER is None, reason="the C row writer is not built (or ZERGSERVE_PURE_PYTHON is set)")

_lines = st.binary(max_size=200)
_ops = st.lists(st.one_of(
    st.tuples(st.just("begin"), _lines, st.floats(0, 1e6)),
    st.tuples(st.just("end"), st.integers(0, 1 << 40), st.floats(0, 20), st.booleans()),
    st.tuples(st.just("end"), st.integers(0, 1 << 40), st.floats(0, 20), st.booleans(), st.floats(0, 1e6)),
    st.tuples(st.just("show"), _lines),
    st.tuples(st.just("write_status"), st.integers(0, 6)),
    st.tuples(st.just("set_websockets"), st.integers(0, 1 << 20)),
    st.tuples(st.just("set_connections"), st.integers(0, 1 << 20)),
), max_size=40)


@_needs_c
@settings(max_examples=300, deadline=None)
@given(_ops)
def test_the_c_and_python_row_writers_leave_the_same_bytes(ops):
    """Scoreboard.writer() hands out the C writer when it is built: after the same calls, both
    leave the same row, byte for byte, and say the same counts."""
    boards = Scoreboard(1), Scoreboard(1)
    writers = RowWriter(boards[0].mem, boards[0].row_size), _C_WRITER(boards[1].mem, boards[1].row_size)
    for name, *args in ops:
        for writer in writers:
            getattr(writer, name)(*args)
    python, c = writers
    assert bytes(boards[0].mem) == bytes(boards[1].mem)
    assert (python.requests, python.exceptions, python.tx, python.running, python.avg_rt, python.buckets) == (
        c.requests, c.exceptions, c.tx, c.running, c.avg_rt, c.buckets)


@_needs_c
def test_the_c_row_writer_stamps_the_heartbeat_from_the_monotonic_clock():
    board = Scoreboard(1)
    writer = _C_WRITER(board.mem, board.row_size)
    before = time.monotonic()
    writer.set_status(PAUSED)
    assert board.row(1).status == PAUSED and before <= board.row(1).heartbeat <= time.monotonic()
    writer.heartbeat()
    assert board.row(1).heartbeat >= before
    with pytest.raises(ValueError):
        _C_WRITER(board.mem, board.row_size + 8)  # past the table's end
    with pytest.raises(TypeError):
        writer.begin("GET /", 1.0)  # a str, not bytes


def test_workers_get_the_c_writer_unless_pure_python():
    """Scoreboard.writer() hands out the C writer whenever it is built and pure Python is not asked."""
    built = any((Path(scoreboard.__file__).parent).glob("_rowwriter.*.so"))
    pure = os.environ.get("ZERGSERVE_PURE_PYTHON", "") not in ("", "0")
    assert (_C_WRITER is not None) == (built and not pure)
    assert type(Scoreboard(1).writer(1)) is (_C_WRITER or RowWriter)
