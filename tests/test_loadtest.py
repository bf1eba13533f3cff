"""Short open-loop spikes against the broodlord vassal of loadtest/: the shape, not the exact times."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from nginx import requires_nginx

# Looked up, not imported: importing locust monkey-patches the whole test process with gevent (its
# threads, sockets and subprocesses); the load test runs in its own process.
pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(name) for name in ("locust", "matplotlib")),
                                reason="pip install -e '.[loadtest]'")


def loadtest(tmp_path, *args: str, timeout: float = 100) -> dict:
    proc = subprocess.run([sys.executable, "-m", "loadtest", "--zerg-idle", "2", "--wait-gone", "30",
                           "--out", str(tmp_path), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout[proc.stdout.index("{\n"):])


@requires_nginx
@pytest.mark.timeout(120)
def test_short_spike_is_absorbed_while_it_lasts_and_zergs_leave(tmp_path):
    summary = loadtest(tmp_path, "--before", "2", "--spike", "6", "--after", "2")
    assert summary["failures"] == 0 and summary["requests"] >= 150
    assert summary["peak_zergs"] >= 1 and summary["zergs_at_end"] == 0
    assert summary["absorbed_in_s"][0] is not None, "backlog still over the threshold when the spike ended"
    assert summary["p95_ms"]["after"] < summary["p95_ms"]["spike1"]
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert {"t", "backlog", "zergs"} <= set(rows[0])
    assert (tmp_path / "spike.png").stat().st_size > 10_000


@requires_nginx
@pytest.mark.timeout(150)
def test_three_waves_reuse_or_respawn_zergs_and_leak_nothing(tmp_path):
    summary = loadtest(tmp_path, "--waves", "--before", "1", "--spike", "5", "--gap", "2", "--after", "1",
                       timeout=140)
    assert summary["failures"] == 0 and summary["blacklisted"] == 0
    assert summary["peak_zergs"] >= 1 and summary["zergs_at_end"] == 0
    over = summary["over_threshold_s"]
    assert len(over) == 3 and all(seconds < 4.5 for seconds in over), f"backlog over the threshold for {over} s"
    before, after = summary["before_load"], summary["at_end"]
    for key in ("emperor_fds", "emperor_sockets", "vassal_fds", "vassal_sockets"):
        assert after[key] == before[key], f"{key}: {before[key]} before the load, {after[key]} after three waves"
    assert after["vassal_rss_kb"] - before["vassal_rss_kb"] < 4096


UWSGI = shutil.which("uwsgi")


@requires_nginx
@pytest.mark.skipif(UWSGI is None, reason="no uwsgi binary (pip install uwsgi)")
@pytest.mark.timeout(120)
def test_the_same_spike_against_uwsgi_broodlord(tmp_path):
    summary = loadtest(tmp_path, "--only", "uwsgi", "--before", "2", "--spike", "6", "--after", "2")
    assert summary["failures"] == 0 and summary["requests"] >= 150
    assert summary["peak_zergs"] >= 1 and summary["zergs_at_end"] == 0
    assert "asking Emperor for reinforcements" in (tmp_path / "emperor.log").read_text()


@requires_nginx
@pytest.mark.timeout(120)
def test_cheaper_workers_follow_the_spike_and_go_back_to_one(tmp_path):
    summary = loadtest(tmp_path, "--scenario", "cheaper", "--before", "2", "--spike", "6", "--after", "2")
    assert summary["failures"] == 0 and summary["requests"] >= 150
    assert summary["peak_workers"] > 1 and summary["workers_at_end"] == 1
    assert summary["workers_added"] >= 1 and summary["workers_stopped"] == summary["workers_added"]
    rows = [(float(row["t"]), int(row["workers"])) for row in csv.DictReader(open(tmp_path / "samples.csv"))]
    before = max(workers for t, workers in rows if t < 2)  # a burst of the base rate may add one
    during = max(workers for t, workers in rows if 2 <= t < 8)
    assert during >= 3 and during > before, f"{before} workers before the spike, {during} during it"
    assert rows[-1][1] == 1
    assert "cheaper (busyness)" in (tmp_path / "instance.log").read_text()
    assert (tmp_path / "spike.png").stat().st_size > 10_000
