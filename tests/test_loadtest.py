"""Short open-loop spikes against the broodlord vassal of loadtest/: the shape, not the exact times."""

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
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert {"t", "backlog", "zergs"} <= set(rows[0])
    assert (tmp_path / "spike.png").stat().st_size > 10_000
