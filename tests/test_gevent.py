"""The gevent worker with real processes: many connections per process, keep-alive, slow clients,
graceful stop and reload, pause, and the uwsgi protocol."""

from __future__ import annotations

import signal
import threading

import pytest

from conftest import bound, connect, fetch, http_request, recv_all, sent_requests, status_of, wait_for
from conftest import start as start_instance
from test_master import Load

pytest.importorskip("gevent", reason="the gevent worker needs gevent (pip install zergserve[gevent])")


def start(spawn, workdir, *extra: str, workers: int = 1, backlog: int = 100):
    """The gevent worker on a TCP --http and a UNIX --socket (usock), every worker idle."""
    return start_instance(spawn, workdir, *extra, workers=workers, worker="gevent", uwsgi="unix", backlog=backlog)


def test_a_trickling_client_does_not_hold_the_worker(spawn, workdir):
    server = start(spawn, workdir)
    with connect(server.addr) as slow:
        slow.sendall(b"GET /pid HTTP/1.1\r\nHo")
        for _ in range(5):
            assert http_request(server.addr, "GET", "/pid", timeout=2)[0] == 200


def test_term_finishes_in_flight_requests(spawn, workdir):
    server = start(spawn, workdir)
    clients = sent_requests(server.addr, "/sleep?s=1", 5)
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "busy", message="requests in flight")
    server.signal(signal.SIGTERM)
    assert [status_of(client) for client in clients] == [200] * 5
    assert server.wait_exit() == 0


def test_reload_under_load_loses_nothing(spawn, workdir):
    server = start(spawn, workdir, workers=2)
    old = {w["pid"] for w in fetch(server.stats)["workers"]}
    load = Load(server.addr)
    wait_for(lambda: load.ok > 30, message="load running")
    server.signal(signal.SIGHUP)
    wait_for(lambda: not old & {w["pid"] for w in fetch(server.stats)["workers"]}, timeout=20,
             message="new workers")
    count = load.ok
    wait_for(lambda: load.ok > count + 30, message="load continues")
    load.stop()
    assert load.failures == []


def test_connections_one_after_another_on_the_same_fd_are_all_answered(spawn, workdir):
    """Short connections from a few clients at once: a closed connection's fd comes back at once for
    the next one, often in the same turn of the hub. The wait keeps a socket's watcher between its
    waits, and must not hand it to the next socket on that fd, which epoll has not heard of."""
    server = start(spawn, workdir)
    load = Load(server.addr, clients=6)
    try:
        wait_for(lambda: load.ok >= 600 or load.failures, timeout=60, message="600 requests")
    finally:
        load.stop()
    assert load.failures == []


def test_harakiri_kills_a_stuck_loop_not_a_long_request_among_others(spawn, workdir):
    listener = bound()
    addr = listener.addr
    stats = str(workdir / "stats.sock")
    server = spawn("--module", "spin:application", "--worker", "gevent", "--http", listener.arg, "--stats", stats,
                   "--harakiri", "2", wait=addr)
    pid = wait_for(lambda: (row := fetch(stats)["workers"][0])["status"] == "idle" and row["pid"],
                   message="the worker idle")
    with connect(addr) as stuck:
        stuck.sendall(b"GET /spin?s=30 HTTP/1.1\r\nHost: h\r\n\r\n")
        server.wait_log("HARAKIRI", timeout=10)
        assert recv_all(stuck, timeout=5) == b""
    wait_for(lambda: fetch(stats)["workers"][0]["pid"] not in (0, pid), message="worker respawned")
    assert http_request(addr, "GET", "/", timeout=5)[0] == 200


def test_harakiri_spares_a_long_request_while_others_finish(spawn, workdir):
    server = start(spawn, workdir, "--harakiri", "2")
    pid = fetch(server.stats)["workers"][0]["pid"]
    long: list[int] = []
    thread = threading.Thread(target=lambda: long.append(http_request(server.addr, "GET", "/sleep?s=3.5",
                                                                      timeout=10)[0]))
    thread.start()
    while thread.is_alive():
        assert http_request(server.addr, "GET", "/pid", timeout=5)[0] == 200
        thread.join(0.2)
    assert long == [200] and fetch(server.stats)["workers"][0]["pid"] == pid
    assert "HARAKIRI" not in server.log()


def test_harakiri_spares_a_lone_request_that_only_waits(spawn, workdir):
    """The hub ticks while the greenlet sleeps: --harakiri measures a stuck hub, not a long wait."""
    server = start(spawn, workdir, "--harakiri", "1")
    pid = fetch(server.stats)["workers"][0]["pid"]
    assert http_request(server.addr, "GET", "/sleep?s=3", timeout=10)[0] == 200
    assert "HARAKIRI" not in server.log() and fetch(server.stats)["workers"][0]["pid"] == pid
