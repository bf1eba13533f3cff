"""--metrics and --emperor-metrics read by prometheus_client's parser; the stats fields uWSGI's tools
read (running_time, delta_requests, vsz, counters kept across respawns); uwsgitop on a real pty."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import APPS, fetch, http_request, raw, wait_for
from test_broodlord import block_worker, broodlord_vassal, zergs
from test_emperor import Emperor
from test_supervision import uwsgi_packet


def scrape(addr: str) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics, keyed by (sample name, sorted labels)."""
    status, headers, body = http_request(addr, path="/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4"), (status, headers)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(value for (sample, pairs), value in samples.items()
               if sample == name and set(labels.items()) <= set(pairs))


def start(spawn, workdir, *extra: str):
    sock = str(workdir / "app.sock")
    server = spawn("--module", "echo:application", "--http", sock, "--stats", str(workdir / "stats.sock"),
                   "--metrics", str(workdir / "metrics.sock"), *extra, wait=sock)
    server.wait_log("metrics server enabled")  # listening (made after --http's): the file alone exists from bind() on
    return server, sock, str(workdir / "stats.sock"), str(workdir / "metrics.sock")


def test_metrics_count_requests_errors_harakiri_and_respawns_across_the_killed_worker(spawn, workdir):
    server, sock, stats, metrics = start(spawn, workdir, "-p", "1", "--harakiri", "1")
    for _ in range(3):
        assert http_request(sock)[0] == 200
    assert http_request(sock, path="/crash")[0] == 500
    assert http_request(sock, path="/sleep?s=0.3")[0] == 200
    # A worker counts a request once its response is out: the client may read it first.
    wait_for(lambda: total(scrape(metrics), "zergserve_requests_total") == 5, message="5 requests counted")
    before = scrape(metrics)
    assert total(before, "zergserve_requests_total") == 5
    assert total(before, "zergserve_exceptions_total") == 1
    assert total(before, "zergserve_request_duration_seconds_count") == 5
    assert total(before, "zergserve_request_duration_seconds_bucket", le="0.25") == 4  # all but the sleep
    assert total(before, "zergserve_request_duration_seconds_bucket", le="+Inf") == 5
    assert total(before, "zergserve_request_duration_seconds_sum") >= 0.3
    assert total(before, "zergserve_workers", status="idle") == 1
    assert total(before, "zergserve_worker_vsz_bytes") > total(before, "zergserve_worker_rss_bytes") > 0
    assert total(before, "zergserve_listen_queue_max", socket=sock) == 100
    pid = fetch(stats)["workers"][0]["pid"]
    stuck = threading.Thread(target=lambda: _ignore(lambda: http_request(sock, path="/sleep?s=30", timeout=30)),
                             daemon=True)
    stuck.start()
    wait_for(lambda: total(scrape(metrics), "zergserve_workers", status="busy") == 1, message="worker busy")
    wait_for(lambda: fetch(stats)["workers"][0]["pid"] not in (0, pid), timeout=15, message="respawned")
    after = scrape(metrics)
    assert total(after, "zergserve_harakiri_total") == 1
    assert total(after, "zergserve_respawns_total") == 1
    # The killed worker's counts stay: a counter never goes back (uWSGI keeps them across respawns too).
    assert total(after, "zergserve_requests_total") == 5
    assert total(after, "zergserve_request_duration_seconds_count") == 5
    assert http_request(sock)[0] == 200
    wait_for(lambda: total(scrape(metrics), "zergserve_requests_total") == 6, message="6 requests counted")


def _ignore(call) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - the request is killed on purpose
        pass


def test_stats_fields_mean_what_uwsgi_means(spawn, workdir):
    """running_time: µs spent in requests; delta_requests: since the worker's spawn; requests, tx and
    running_time go on across a respawn; vsz: the virtual size."""
    server, sock, stats, metrics = start(spawn, workdir, "-p", "1")
    assert http_request(sock, path="/sleep?s=0.2")[0] == 200
    assert http_request(sock)[0] == 200
    wait_for(lambda: fetch(stats)["workers"][0]["requests"] == 2, message="2 requests counted")
    worker = fetch(stats)["workers"][0]
    assert worker["requests"] == worker["delta_requests"] == 2
    assert 200_000 <= worker["running_time"]
    assert worker["vsz"] > worker["rss"] > 0
    assert worker["tx"] >= len(b"hello")
    _ignore(lambda: http_request(sock, path="/exit"))
    wait_for(lambda: fetch(stats)["workers"][0]["pid"] not in (0, worker["pid"]), message="respawned")
    wait_for(lambda: fetch(stats)["workers"][0]["status"] == "idle", message="respawned worker idle")
    again = fetch(stats)["workers"][0]
    assert again["requests"] == 2 and again["delta_requests"] == 0 and again["respawn_count"] == 1
    assert again["running_time"] == worker["running_time"] and again["tx"] == worker["tx"]


def test_metrics_answer_only_get_on_metrics_and_survive_a_reload(spawn, workdir):
    server, sock, stats, metrics = start(spawn, workdir)
    assert http_request(metrics, path="/")[0] == 404
    assert http_request(metrics, method="POST", path="/metrics", body=b"x")[0] == 405
    status, headers, body = http_request(metrics, method="HEAD", path="/metrics")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    server.signal(signal.SIGHUP)
    server.wait_log("new workers ready", timeout=20)
    assert "reload aborted" not in server.log()
    wait_for(lambda: total(scrape(metrics), "zergserve_workers", status="idle") == 1, message="metrics after HUP")


def test_emperor_metrics_vassals_throttles_and_broodlord_zergs(spawn, workdir):
    metrics = str(workdir / "emperor-metrics.sock")
    emperor = Emperor(spawn, workdir, "--emperor-metrics", metrics, "--emperor-broodlord", "1")
    wait_for(lambda: os.path.exists(metrics), message="emperor metrics socket")
    addr = broodlord_vassal(emperor, str(workdir / "brood.zerg"), idle=60)
    (emperor.dir / "broken.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = broken:application\n"
                                            f"socket = {workdir}/broken.sock\n")
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")
    wait_for(lambda: total(scrape(metrics), "zergserve_emperor_throttled_vassals") == 1, timeout=20,
             message="the broken vassal blacklisted")
    block_worker(addr, 3, 4)
    wait_for(lambda: zergs(emperor), timeout=15, message="a zerg")
    samples = scrape(metrics)
    assert total(samples, "zergserve_emperor_broodlord_zergs", vassal="brood.ini") == 1
    assert total(samples, "zergserve_emperor_sos_total", vassal="brood.ini") >= 1
    assert total(samples, "zergserve_emperor_vassals", state="accepting") >= 1
    # The first respawn is at once (throttle 0); each later death adds a step.
    wait_for(lambda: total(scrape(metrics), "zergserve_emperor_throttle_seconds", vassal="broken.ini") > 0,
             timeout=20, message="the broken vassal throttled")
    assert total(samples, "zergserve_emperor_vassal_respawns_total", vassal="brood.ini") == 0
    assert total(samples, "zergserve_emperor_scans_total") >= 1


@pytest.mark.skipif(shutil.which("uwsgitop") is None, reason="uwsgitop is not installed (pip install uwsgitop)")
def test_uwsgitop_shows_the_counters(spawn, workdir):
    """The real uwsgitop on a pseudo-terminal: its header line sums requests and tx over the workers."""
    server, sock, stats, metrics = start(spawn, workdir, "-p", "2")
    for _ in range(4):
        assert http_request(sock)[0] == 200
    wait_for(lambda: sum(w["requests"] for w in fetch(stats)["workers"]) == 4, message="4 requests counted")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="xterm", COLUMNS="200", LINES="40")
        os.execvp("uwsgitop", ["uwsgitop", stats])
    try:
        screen = _read_until(fd, re.compile(rb"req: 4 - RPS: \d+ - lq: 0 - tx: \d+.*ReSpwn", re.S))
        assert b"Traceback" not in screen
        os.write(fd, b"q")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        _kill(pid)
        os.close(fd)


def _read_until(fd: int, pattern: re.Pattern, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    screen = b""
    while not pattern.search(screen):
        left = deadline - time.monotonic()
        assert left > 0, f"uwsgitop never showed {pattern.pattern!r}: {screen[-2000:]!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                screen += os.read(fd, 65536)
            except OSError:
                break
    return screen


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@pytest.mark.parametrize("worker, app, proto", [("sync", "echo", "http"), ("sync", "echo", "uwsgi"),
                                                 ("asyncio", "asgi_app", "http"), ("asyncio", "asgi_app", "uwsgi")])
def test_tx_counts_every_byte_of_the_response_head_included(spawn, workdir, worker, app, proto):
    """uWSGI's tx is the body and the head: the bytes the client received."""
    sock = str(workdir / "app.sock")
    stats = str(workdir / "stats.sock")
    spawn("--module", f"{app}:application", "--worker", worker, "--http" if proto == "http" else "--socket", sock,
          "--stats", stats, wait=sock)
    if proto == "http":
        reply = raw(sock, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    else:
        reply = raw(sock, uwsgi_packet({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REQUEST_URI": "/",
                                        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "x",
                                        "SERVER_PORT": "80"}))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello"), reply
    wait_for(lambda: os.path.exists(stats) and fetch(stats)["workers"][0]["requests"] == 1, message="counted")
    assert fetch(stats)["workers"][0]["tx"] == len(reply)
