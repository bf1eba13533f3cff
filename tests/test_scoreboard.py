"""The scoreboard's rows as the master reads them after a worker's writes (RowWriter writes
through typed views of the shared table, the master reads it with structs)."""

from __future__ import annotations

from zergserve.scoreboard import BUCKETS, BUSY, IDLE, PAUSED, Scoreboard


def test_a_row_reads_back_what_its_worker_wrote():
    board = Scoreboard(2, cores=2)
    board.reset(1, 4321)
    row, other = board.writer(1), board.writer(2)
    row.begin(b"GET /a", 100.0)
    seen = board.row(1)
    assert (seen.pid, seen.status, seen.request_start, seen.request) == (4321, BUSY, 100.0, "GET /a")
    row.end(150, 0.002, failed=True)
    row.begin(b"POST /b", 101.0)
    row.end(50, 0.3, failed=False, busy_since=99.5)  # a shared row: still busy since another request
    seen = board.row(1)
    assert (seen.requests, seen.exceptions, seen.tx, seen.status, seen.request_start) == (2, 1, 200, BUSY, 99.5)
    assert seen.running_time == 302000 and seen.avg_rt == 2000 + (300000 - 2000) / 16
    assert seen.buckets[0] == 1 and seen.buckets[BUCKETS.index(0.5)] == 1 and sum(seen.buckets) == 2
    row.set_status(PAUSED)
    row.set_websockets(3)
    seen = board.row(1)
    assert (seen.status, seen.websockets) == (PAUSED, 3) and seen.heartbeat > 0
    assert board.row(2).requests == 0 and other.requests == 0  # the neighbour's row is untouched


def test_the_request_line_is_cut_and_a_shorter_one_leaves_no_tail():
    board = Scoreboard(1)
    row = board.writer(1)
    row.begin(b"GET /" + b"x" * 300, 1.0)
    assert board.row(1).request == "GET /" + "x" * (119 - 5)
    row.show(b"GET /y")
    assert board.row(1).request == "GET /y"
    row.end(10, 0.001, failed=False)
    assert board.row(1).status == IDLE


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
