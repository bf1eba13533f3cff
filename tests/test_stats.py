"""The stats server's exposure: it serves uids, pids, the cwd and socket paths to whoever connects."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import APPS, ROOT, connect, fetch, http_request, recv_all, wait_for

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


def test_connect_and_read_prints_the_stats_document(spawn, workdir):
    addr, stats = str(workdir / "app.sock"), str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", addr, "--stats", stats, wait=addr)
    server.wait_log("stats server enabled")  # listening: the file alone exists from bind() on
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "zergserve", "--connect-and-read", stats], capture_output=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] == server.pid
    missing = subprocess.run([sys.executable, "-m", "zergserve", "--connect-and-read", str(workdir / "none.sock")],
                             capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 1 and "connect-and-read" in missing.stderr and "Traceback" not in missing.stderr


def test_stats_http_answers_a_client_that_sent_a_request(spawn, workdir):
    """A client that sends a request head (curl, a browser) gets the whole reply, not a reset: the
    server reads what it sent before closing."""
    addr, stats = str(workdir / "app.sock"), str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", addr, "--stats", stats, "--stats-http", wait=addr)
    server.wait_log("stats server enabled")  # listening: the file alone exists from bind() on
    for _ in range(20):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(stats)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\nAccept: */*\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):  # a reset would raise ConnectionResetError here
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK") and json.loads(body)["pid"] == server.pid
    # What a loaded host does to curl: its request arrives after the reply went out (here, after the
    # client read it to the server's end of sending). The server still takes it: no EPIPE, no reset.
    with connect(stats) as sock:
        reply = recv_all(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\nAccept: */*\r\n\r\n")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["pid"] == server.pid
