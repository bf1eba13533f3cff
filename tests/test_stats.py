"""The stats server's exposure: it serves uids, pids, the cwd and socket paths to whoever connects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import APPS, ROOT, fetch, http_request, wait_for

WARNING = "is reachable from other hosts"


def test_stats_on_loopback_or_a_unix_socket_warns_nothing(spawn, workdir):
    addr = str(workdir / "app.sock")
    unix_stats = str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", addr, "--stats", unix_stats, wait=addr)
    wait_for(lambda: fetch(unix_stats)["pid"] == server.pid, message="stats on the UNIX socket")
    other = spawn("--module", "echo:application", "--http", str(workdir / "b.sock"), "--stats", "127.0.0.1:0",
                  wait=str(workdir / "b.sock"))
    other.wait_log("spawned worker 1")
    assert WARNING not in server.log() + other.log()


def private_network() -> bool:
    """Whether this process may start one in a network namespace of its own (root, not every container)."""
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "--net", "true"],
                                                             capture_output=True).returncode == 0


@pytest.mark.skipif(not private_network(), reason="binds 0.0.0.0 and :: only inside a private network namespace")
@pytest.mark.parametrize("stats", ["0.0.0.0:0", "[::]:0"])
def test_stats_on_a_public_address_warns_at_start(workdir, stats):
    """Issue 8 item 8. The server runs in its own network namespace: the wildcard address it binds
    reaches no other host, but is not loopback all the same."""
    addr = str(workdir / "app.sock")
    log = workdir / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["unshare", "--net", sys.executable, "-m", "zergserve", "--module", "echo:application",
                                 "--http", addr, "--stats", stats], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=workdir)
    try:
        wait_for(lambda: http_request(addr)[0] == 200, message="serving")
        assert f"WARNING: stats: {stats[:-2]}:" in log.read_text() and WARNING in log.read_text(), log.read_text()
    finally:
        proc.kill()
        proc.wait(10)
