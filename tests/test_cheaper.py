"""The cheaper subsystem with real processes: a burst of held requests makes the worker count grow up
to -p, the quiet after it shrinks the count to --cheaper, one worker at a time, and no request fails
either way (a steady trickle of short requests runs throughout). Counts are read from the stats."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import pytest

from conftest import fetch, http_request, wait_for

CHECK = ("--check-interval", "0.2")


def running(stats: str) -> list[dict]:
    return [w for w in fetch(stats)["workers"] if w["pid"] and w["status"] != "cheap"]


def gone(pid: int) -> bool:
    """Exited: reaped, or a zombie (whose cmdline reads empty)."""
    try:
        return not Path(f"/proc/{pid}/cmdline").read_text()
    except FileNotFoundError:
        return True


def cheap(stats: str) -> list[int]:
    return [w["id"] for w in fetch(stats)["workers"] if w["status"] == "cheap" and not w["pid"]]


class Traffic:
    """Requests from threads until stopped: `held` ones that wait for the release file, and a steady
    trickle of short ones; every outcome is kept, so a lost request fails the test."""

    def __init__(self, addr: str, release: Path) -> None:
        self.addr, self.release = addr, release
        self.results: list = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _one(self, path: str) -> None:
        try:
            self.results.append(http_request(self.addr, "GET", path, timeout=40)[0])
        except OSError as exc:
            self.results.append(exc)

    def hold(self, count: int) -> None:
        for _ in range(count):
            self._start(lambda: self._one(f"/grow?mb=0&wait={self.release}"))

    def trickle(self) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                self._one("/grow?mb=0")
        self._start(loop)

    def _start(self, target) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> list:
        self.release.touch()
        self.stop.set()
        for thread in self.threads:
            thread.join(40)
        return self.results


def start(spawn, workdir: Path, *args: str, name: str = "app"):
    sock, stats = str(workdir / f"{name}.sock"), str(workdir / f"{name}-stats.sock")
    server = spawn("--module", "memory:application", "--http", sock, "--stats", stats, *CHECK, *args, wait=sock)
    wait_for(lambda: fetch(stats), message="the stats socket")  # opened just after the sockets answer
    return server, sock, stats


def grow_and_shrink(server, sock: str, stats: str, workdir: Path, held: int, most: int, least: int) -> None:
    assert len(running(stats)) == least
    traffic = Traffic(sock, workdir / "release")
    traffic.trickle()
    traffic.hold(held)
    wait_for(lambda: len(running(stats)) == most, timeout=30, message=f"{most} workers under load")
    results = traffic.finish()
    assert results and all(status == 200 for status in results), results
    traffic = Traffic(sock, workdir / "release")
    traffic.trickle()
    wait_for(lambda: len(running(stats)) == least, timeout=30, message=f"back to {least} worker(s)")
    results = traffic.finish()
    assert results and all(status == 200 for status in results), results
    assert cheap(stats) == list(range(least + 1, most + 1))
    assert "killed by signal" not in server.log() and "killing it" not in server.log()


def test_spare_grows_to_processes_and_shrinks_to_cheaper(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-overload", "1")
    assert cheap(stats) == [2, 3]  # uWSGI's stats: pid 0, status "cheap"
    grow_and_shrink(server, sock, stats, workdir, held=4, most=3, least=1)
    log = server.log()
    assert "cheaper (spare): all 1 worker(s) busy for 1s: now 2 workers" in log
    assert "cheaper (spare): idle worker(s) for 1s, stopping a worker: now 1 workers" in log


def test_cheaper_initial_and_step(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "5", "--cheaper", "1", "--cheaper-initial", "3",
                                "--cheaper-step", "2", "--cheaper-overload", "1")
    server.wait_log("cheaper mode: spare algorithm, 1 to 5 workers, 3 at start")
    server.wait_log("spawned worker 3")
    wait_for(lambda: len(running(stats)) == 1, timeout=30, message="cheaped down to --cheaper")
    traffic = Traffic(sock, workdir / "release")
    traffic.hold(1)
    log = server.wait_log("busy for 1s: now 3 workers", timeout=30)
    # one step of two, in one turn: nothing else happens between the two
    assert re.search(r"busy for 1s: now 2 workers\n.*spawned worker 2 .*\n.*busy for 1s: now 3 workers", log), log
    assert all(status == 200 for status in traffic.finish())


def test_backlog_retires_gracefully_while_requests_are_in_hand(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "4", "--cheaper", "1", "--cheaper-algo", "backlog",
                                "--cheaper-overload", "1")
    traffic = Traffic(sock, workdir / "release")
    traffic.hold(6)
    # 4 held in the workers, 2 queued: no longer above the overload, nor below it
    wait_for(lambda: len(running(stats)) == 4, timeout=30, message="4 workers for the backlog")
    assert "connection(s) queued (above 1)" in server.log()
    holders = {w["pid"] for w in running(stats)}
    results = traffic.finish()
    assert results.count(200) == 6, results
    wait_for(lambda: len(running(stats)) == 1, timeout=30, message="back to 1 worker")
    assert "connection(s) queued (below 1), stopping a worker" in server.log()
    assert len(holders) == 4 and "killed by signal" not in server.log()


def test_the_leaving_worker_finishes_the_request_in_hand(spawn, workdir):
    """Spare stops the highest worker once one is idle, busy or not: worker 2, holding request B
    while worker 1 is idle, must still answer B before it goes."""
    server, sock, stats = start(spawn, workdir, "-p", "2", "--cheaper", "1", "--cheaper-overload", "1")
    first, second = Traffic(sock, workdir / "a"), Traffic(sock, workdir / "b")
    first.hold(1)
    holder_a = int(wait_for(lambda: Path(f"{workdir}/a.held").read_text(), message="request A in hand"))
    second.hold(1)
    holder_b = int(wait_for(lambda: Path(f"{workdir}/b.held").read_text(), timeout=30, message="worker 2 for B"))
    assert holder_b != holder_a and [w["pid"] for w in running(stats)] == [holder_a, holder_b]
    assert first.finish() == [200]  # worker 1 is idle now, worker 2 still holds B
    server.wait_log("idle worker(s) for 1s, stopping a worker: now 1 workers", timeout=30)
    assert Path(f"/proc/{holder_b}").exists() and cheap(stats) == [2]
    assert second.finish() == [200]
    wait_for(lambda: gone(holder_b), message="worker 2 gone")
    assert "killed by signal" not in server.log() and "killing it" not in server.log()


def test_busyness_grows_with_busy_workers_and_shrinks_when_quiet(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-algo", "busyness",
                                "--cheaper-overload", "1", "--cheaper-busyness-multiplier", "1",
                                "--cheaper-busyness-backlog-alert", "0", "--cheaper-busyness-verbose")
    grow_and_shrink(server, sock, stats, workdir, held=4, most=3, least=1)
    log = server.log()
    assert re.search(r"average busyness \d+% above 50%: now 2 workers", log)
    assert "below 25%, stopping a worker" in log
    assert "[busyness] 1s average busyness of" in log


def test_busyness_backlog_alert_spawns_emergency_workers(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "4", "--cheaper", "1", "--cheaper-algo", "busyness",
                                "--cheaper-overload", "30", "--cheaper-busyness-backlog-alert", "2",
                                "--cheaper-busyness-backlog-step", "2")
    traffic = Traffic(sock, workdir / "release")
    traffic.hold(5)  # 1 held, 4 queued > 2: emergency workers long before the 30 s busyness check
    server.wait_log("emergency worker(s): now 3 workers", timeout=30)
    assert all(status == 200 for status in traffic.finish())


@pytest.mark.parametrize("args, message", [
    (("-p", "2", "--cheaper", "2"), "--cheaper 2 must be lower than --processes 2"),
    (("-p", "4", "--cheaper", "1", "--cheaper-initial", "5"), "--cheaper-initial 5 must lie between --cheaper 1 "
                                                               "and --processes 4"),
    (("-p", "4", "--cheaper", "1", "--cheaper-algo", "busyness", "--cheaper-busyness-min", "60"),
     "--cheaper-busyness-min 60 must be lower than --cheaper-busyness-max 50"),
])
def test_invalid_combinations_are_start_errors(spawn, workdir, args, message):
    server = spawn("--module", "memory:application", "--http", str(workdir / "app.sock"), *args)
    assert server.wait_exit() == 2
    assert message in server.log()
    assert not (workdir / "app.sock").exists()


def test_uwsgi_ini_with_the_cheaper_options_runs_unchanged(spawn, workdir):
    """The cheaper block of uWSGI's docs, as a uWSGI ini carries it."""
    sock, stats = str(workdir / "app.sock"), str(workdir / "stats.sock")
    (workdir / "app.ini").write_text(f"""\
[uwsgi]
http-socket = {sock}
stats = {stats}
module = memory:application
master = true
cheaper-algo = spare
cheaper = 1
cheaper-initial = 2
workers = 3
cheaper-step = 1
cheaper-overload = 1
check-interval = 0.2
""")
    server = spawn("--ini", str(workdir / "app.ini"), wait=sock)
    wait_for(lambda: fetch(stats), message="the stats socket")
    server.wait_log("cheaper mode: spare algorithm, 1 to 3 workers, 2 at start")
    wait_for(lambda: len(running(stats)) == 1, timeout=30, message="cheaped down to 1")
    assert cheap(stats) == [2, 3]


def test_reload_starts_cheaper_initial_again(spawn, workdir):
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-initial", "2",
                                "--cheaper-overload", "1")
    wait_for(lambda: len(running(stats)) == 1, timeout=30, message="cheaped down to 1")
    server.signal(signal.SIGHUP)
    server.wait_log("new workers ready", timeout=30)
    assert server.log().count("cheaper mode: spare algorithm, 1 to 3 workers, 2 at start") == 2
    wait_for(lambda: len(running(stats)) == 1, timeout=30, message="cheaped down to 1 after the reload")
    assert http_request(sock, "GET", "/grow?mb=0")[0] == 200


def test_rss_limits(spawn, workdir):
    """Limits of one byte: the soft one vetoes every addition, the hard one stops workers down to
    --cheaper although the algorithm (spare, overload 600 s) would keep them."""
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-initial", "3",
                                "--cheaper-overload", "600", "--cheaper-rss-limit-hard", "1")
    server.wait_log("above --cheaper-rss-limit-hard 1, stopping a worker: now 1 workers", timeout=30)
    assert cheap(stats) == [2, 3]
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-overload", "0",
                                "--cheaper-rss-limit-soft", "1", name="soft")
    traffic = Traffic(sock, workdir / "release")
    traffic.hold(2)
    server.wait_log("above --cheaper-rss-limit-soft 1: no worker added", timeout=30)
    assert "now 2 workers" not in server.log()
    assert traffic.finish() == [200, 200]


def test_metrics_and_stats_show_the_target_and_each_change(spawn, workdir):
    from test_metrics import scrape, total
    metrics = str(workdir / "metrics.sock")
    server, sock, stats = start(spawn, workdir, "-p", "3", "--cheaper", "1", "--cheaper-overload", "1",
                                "--metrics", metrics)
    server.wait_log("metrics server enabled")
    first = scrape(metrics)
    assert total(first, "zergserve_workers_target") == 1
    assert total(first, "zergserve_cheaper_workers", bound="min") == 1
    assert total(first, "zergserve_cheaper_workers", bound="max") == 3
    assert total(first, "zergserve_cheaper_changes_total", direction="up") == 0
    traffic = Traffic(sock, workdir / "release")
    traffic.hold(4)
    wait_for(lambda: total(scrape(metrics), "zergserve_workers_target") == 3, timeout=30, message="target 3")
    assert total(scrape(metrics), "zergserve_cheaper_changes_total", direction="up") == 2
    assert all(status == 200 for status in traffic.finish())
    wait_for(lambda: total(scrape(metrics), "zergserve_workers_target") == 1, timeout=30, message="target 1")
    last = scrape(metrics)
    assert total(last, "zergserve_cheaper_changes_total", direction="up") == 2
    assert total(last, "zergserve_cheaper_changes_total", direction="down") == 2
    assert fetch(stats)["cheaper"] == {"algo": "spare", "min": 1, "max": 3, "target": 1, "added": 2, "stopped": 2}
