"""A short locust run of the broodlord deployment: at least one zerg, zero failed requests."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from nginx import requires_nginx

locust = pytest.importorskip("locust", reason="pip install -e '.[loadtest]'")
pytest.importorskip("matplotlib", reason="pip install -e '.[loadtest]'")


@requires_nginx
@pytest.mark.timeout(150)
def test_short_locust_run_reinforces_and_fails_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "loadtest", "--peak", "30", "--ramp", "2", "--hold", "6",
                           "--fall", "1", "--zerg-idle", "2", "--broodlord", "2", "--wait-gone", "30",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert summary["failures"] == 0 and summary["requests"] > 100
    assert 1 <= summary["peak_zergs"] <= 2
    assert summary["sos_to_zerg_accepting_s"] and min(summary["sos_to_zerg_accepting_s"]) < 2
    assert summary["last_zerg_gone_after_load_end_s"] is not None
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert {"t", "users", "rps", "p95_ms", "backlog", "zergs"} <= set(rows[0])
    assert (tmp_path / "broodlord.png").stat().st_size > 10_000
