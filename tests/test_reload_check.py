"""The HUP check: a new configuration the new master could not start with is refused while the old
workers go on serving; a check that hangs is killed. (A new generation that fails after the check:
test_reload_rollback.py.)"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from conftest import bound, fetch, http_request, wait_for


def start_from_ini(spawn, workdir: Path, *lines: str):
    """An instance configured by an ini file the test edits before sending HUP; its HTTP socket is
    handed in (`http = fd://N` in the file, `server.http_name`), `server.addr` is its address."""
    listener = bound()
    stats = str(workdir / "stats.sock")
    ini = workdir / "app.ini"
    ini.write_text("\n".join(["[uwsgi]", "module = echo:application", f"http = {listener.arg}", "processes = 2",
                              f"stats = {stats}", "worker-reload-mercy = 5", *lines]) + "\n")
    server = spawn("--ini", str(ini), wait=listener.addr, pass_fds=(listener.fd,))
    server.addr, server.http_name, server.stats, server.ini = listener.addr, listener.arg, stats, ini
    wait_for(lambda: len(idle_pids(server)) == 2, message="2 idle workers")
    return server


def idle_pids(server) -> set[int]:
    return {w["pid"] for w in fetch(server.stats)["workers"] if w["pid"] and w["status"] == "idle"}


def hup_refused(server, reason: str) -> None:
    """HUP; the check names `reason`, the reload is aborted, the same master and workers serve."""
    before = idle_pids(server)
    server.signal(signal.SIGHUP)
    server.wait_log("reload aborted")
    assert reason in server.log()
    assert "Traceback" not in server.log()
    pids = {int(http_request(server.addr, "GET", "/pid")[2]) for _ in range(6)}
    assert pids <= before
    wait_for(lambda: idle_pids(server) == before, message="the same workers, idle again")  # the last may still be writing its row
    assert fetch(server.stats)["pid"] == server.pid and server.proc.poll() is None


def hup_reloads(server) -> None:
    before = idle_pids(server)
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(idle_pids(server)) == 2 and not idle_pids(server) & before, timeout=15,
             message="workers replaced")


def test_hup_refuses_an_address_in_use(spawn, workdir):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = f"127.0.0.1:{blocker.getsockname()[1]}"
        server = start_from_ini(spawn, workdir)
        original = server.ini.read_text()
        server.ini.write_text(original + f"http = {taken}\n")
        hup_refused(server, f"reload check: cannot bind {taken}: Address already in use")
    server.ini.write_text(original)
    hup_reloads(server)  # the refused check left nothing behind that blocks the next reload
    assert http_request(server.addr)[0] == 200


def test_hup_adds_a_unix_socket_and_keeps_the_held_one(spawn, workdir):
    """The check binds a new UNIX socket and removes its file again; the socket the master holds is
    passed over, not rebound or unlinked."""
    held = workdir / "held.sock"
    server = start_from_ini(spawn, workdir, f"socket = {held}")
    held_inode = held.stat().st_ino
    added = workdir / "added.sock"
    server.ini.write_text(server.ini.read_text() + f"http = {added}\n")
    hup_reloads(server)
    assert held.stat().st_ino == held_inode
    assert http_request(str(added))[0] == 200
    names = sorted(s["name"] for s in fetch(server.stats)["sockets"])
    assert names == sorted([server.http_name, str(held), str(added)])


def test_hup_takes_over_a_held_address_spelled_differently(spawn, workdir):
    server = start_from_ini(spawn, workdir)
    port = server.addr.rpartition(":")[2]
    server.ini.write_text(server.ini.read_text().replace(f"http = {server.http_name}", f"http = localhost:{port}"))
    hup_reloads(server)
    assert http_request(server.addr)[0] == 200
    assert [s["name"] for s in fetch(server.stats)["sockets"]] == [f"localhost:{port}"]


@pytest.mark.parametrize("line,reason", [
    ("pidfile = {workdir}/missing/zs.pid", "reload check: cannot write pidfile {workdir}/missing/zs.pid: "
                                           "No such file or directory"),
    ("stats = {taken}", "reload check: stats server: cannot bind {taken}: Address already in use"),
], ids=["pidfile-dir-missing", "stats-in-use"])
def test_hup_refuses_unusable_pidfile_or_stats(spawn, workdir, line, reason):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = f"127.0.0.1:{blocker.getsockname()[1]}"
        server = start_from_ini(spawn, workdir)
        server.ini.write_text(server.ini.read_text() + line.format(workdir=workdir, taken=taken) + "\n")
        hup_refused(server, reason.format(workdir=workdir, taken=taken))


def test_hup_keeps_held_stats_and_pidfile(spawn, workdir):
    pidfile = workdir / "zs.pid"
    server = start_from_ini(spawn, workdir, f"pidfile = {pidfile}")
    hup_reloads(server)
    hup_reloads(server)
    assert int(pidfile.read_text()) == server.pid


def test_hung_check_is_killed_and_the_next_hup_reloads(spawn, workdir):
    app = workdir / "flip.py"
    app.write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'v1']\n")
    listener = bound()
    addr = listener.addr
    server = spawn("--chdir", str(workdir), "--module", "flip:application", "--http", listener.arg,
                   "--worker-reload-mercy", "6", wait=addr)
    assert http_request(addr)[2] == b"v1"  # the master is past its setup: HUP is handled now
    # a mercy a loaded host's trial worker boot fits in, the hang still a hundred times longer
    app.write_text("import time\ntime.sleep(600)\n")
    server.signal(signal.SIGHUP)
    server.wait_log("took more than 6s (worker-reload-mercy); killed it", timeout=30)
    assert http_request(addr)[2] == b"v1"
    app.write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'v2']\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: http_request(addr)[2] == b"v2", timeout=15, message="new code served")
    assert "reload already in progress" not in server.log()
