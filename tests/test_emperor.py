"""The emperor with real processes: vassals from files, the byte protocol, throttling, heartbeats, stats."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import APPS, free_port, http_request, wait_for
from zergserve.stats import fetch

FAKE_VASSAL = '''\
import os, socket, sys, time
sock = socket.socket(fileno=int(os.environ["UWSGI_EMPEROR_FD"]))
log = open(os.environ["FAKE_LOG"], "a")
log.write(f"start {os.getpid()} {' '.join(sys.argv[1:])} {os.environ.get('UWSGI_SOCKET', '')}\\n"); log.flush()
for byte in map(int, os.environ.get("FAKE_SEND", "1,5,17").split(",")):
    sock.send(bytes([byte]))
while True:
    data = sock.recv(1)
    log.write(f"got {data[0] if data else 'EOF'}\\n"); log.flush()
    if not data or data[0] in (0, 2):
        sys.exit(0)
'''


def fake_vassal(workdir: Path) -> tuple[Path, Path]:
    """A program (not zergserve) that speaks the vassal side of the protocol and logs what it gets."""
    script = workdir / "fake.py"
    script.write_text(FAKE_VASSAL)
    wrapper = workdir / "fake-vassal"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    log = workdir / "fake.log"
    log.touch()
    return wrapper, log


class Emperor:
    def __init__(self, spawn, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.dir = workdir / "vassals"
        self.dir.mkdir(exist_ok=True)
        self.stats = str(workdir / "emperor.stats")
        self.server = spawn("--emperor", str(self.dir), "--emperor-stats", self.stats, "--emperor-freq", "1",
                            *extra, env=env)
        wait_for(lambda: os.path.exists(self.stats), message="emperor stats socket")

    def doc(self) -> dict:
        return fetch(self.stats)

    def vassal(self, name: str) -> dict | None:
        for item in self.doc()["vassals"]:
            if item["id"] == name:
                return item
        return None

    def write(self, name: str, port: int, extra: str = "") -> str:
        path = self.dir / name
        path.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = 127.0.0.1:{port}\n{extra}")
        return f"127.0.0.1:{port}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_spawn_reload_stop(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    addr = emperor.write("app.ini", free_port())
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")
    first = emperor.vassal("app.ini")
    assert first["pid"] > 0 and first["ready"] == 1
    wait_for(lambda: emperor.vassal("app.ini")["accepting"] == 1, message="accepting")
    old_workers = set(children(first["pid"]))
    time.sleep(0.01)
    os.utime(emperor.dir / "app.ini")  # touch: graceful reload
    wait_for(lambda: emperor.vassal("app.ini")["respawns"] == 1, message="reload sent")
    wait_for(lambda: children(first["pid"]) and not set(children(first["pid"])) & old_workers, timeout=20,
             message="new workers in the same master")
    assert emperor.vassal("app.ini")["pid"] == first["pid"]
    assert http_request(addr)[0] == 200
    wait_for(lambda: emperor.vassal("app.ini")["loyal"] == 1, message="loyal")
    (emperor.dir / "app.ini").unlink()
    wait_for(lambda: emperor.vassal("app.ini") is None, message="vassal stopped")
    assert not alive(first["pid"])


def test_dead_vassal_is_respawned(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    addr = emperor.write("app.ini", free_port())
    wait_for(lambda: http_request(addr)[0] == 200)
    wait_for(lambda: emperor.vassal("app.ini")["loyal"] == 1)
    pid = emperor.vassal("app.ini")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (emperor.vassal("app.ini") or {}).get("pid", pid) not in (pid, -1), message="respawned")
    wait_for(lambda: http_request(addr)[0] == 200, message="serving again")
    assert emperor.doc()["blacklist"] == []  # it was loyal: no throttling


def test_crashing_vassal_is_throttled_more_each_time(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-throttle", "300")
    (emperor.dir / "bad.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = broken:application\n"
                                         f"http = 127.0.0.1:{free_port()}\n")
    wait_for(lambda: any(e["id"] == "bad.ini" and e["attempt"] >= 3 for e in emperor.doc()["blacklist"]),
             timeout=20, message="three throttled attempts")
    log = emperor.server.log()
    starts = [line for line in log.splitlines() if "vassal bad.ini spawned" in line]
    assert 4 <= len(starts) <= 6
    entry = next(e for e in emperor.doc()["blacklist"] if e["id"] == "bad.ini")
    assert entry["throttle_level"] >= 900
    assert "unloyal bad behaving vassal found: bad.ini" in log
    emperor.server.signal(signal.SIGURG)
    emperor.server.wait_log("cleaning up the blacklist")


def test_bad_config_is_logged_and_others_go_on(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    (emperor.dir / "typo.ini").write_text("[uwsgi]\nprocessess = 2\n")
    addr = emperor.write("good.ini", free_port())
    wait_for(lambda: http_request(addr)[0] == 200)
    emperor.server.wait_log("typo.ini:2: unknown option 'processess'")
    wait_for(lambda: any(e["id"] == "typo.ini" for e in emperor.doc()["blacklist"]), message="blacklisted")
    assert emperor.server.proc.poll() is None


def test_fake_vassal_speaks_the_bytes(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--vassal-set", "processes=3",
                      env={"FAKE_LOG": str(log), "UWSGI_VASSAL_SOCKET": "/tmp/x.sock"})
    (emperor.dir / "f.ini").write_text("[uwsgi]\n")
    wait_for(lambda: (emperor.vassal("f.ini") or {}).get("loyal") == 1, message="loyal fake vassal")
    vassal = emperor.vassal("f.ini")
    assert vassal["ready"] == 1 and vassal["accepting"] == 1
    assert "--set processes=3 --ini f.ini /tmp/x.sock" in log.read_text()
    emperor.server.signal(signal.SIGHUP)
    wait_for(lambda: "got 1" in log.read_text(), message="reload byte")
    (emperor.dir / "f.ini").unlink()
    wait_for(lambda: "got 0" in log.read_text(), message="stop byte")
    wait_for(lambda: emperor.vassal("f.ini") is None)


def test_heartbeat_timeout_kills_and_respawns(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-required-heartbeat", "2",
                      env={"FAKE_LOG": str(log), "FAKE_SEND": "1,5,17,26"})
    (emperor.dir / "h.ini").write_text("[uwsgi]\n")
    wait_for(lambda: log.read_text().count("start ") >= 2, timeout=15, message="killed and respawned")
    assert "sent no heartbeat" in emperor.server.log()


def test_real_vassal_heartbeats_keep_it_alive(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-required-heartbeat", "2")
    addr = emperor.write("hb.ini", free_port(), "heartbeat = 1\n")
    wait_for(lambda: http_request(addr)[0] == 200)
    pid = emperor.vassal("hb.ini")["pid"]
    wait_for(lambda: emperor.vassal("hb.ini")["last_heartbeat"] > 0, message="heartbeats arrive")
    time.sleep(3.5)  # not a sync point: the assertion is that nothing happens in 3.5 s
    assert emperor.vassal("hb.ini")["pid"] == pid
    assert "sent no heartbeat" not in emperor.server.log()


def test_term_leaves_nothing_behind(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    addrs = [emperor.write(f"v{i}.ini", free_port()) for i in range(2)]
    for addr in addrs:
        wait_for(lambda: http_request(addr)[0] == 200)
    pids = [v["pid"] for v in emperor.doc()["vassals"]]
    workers = [w for pid in pids for w in children(pid)]
    emperor.server.signal(signal.SIGTERM)
    assert emperor.server.wait_exit(20) == 0
    assert "The Emperor is buried" in emperor.server.log()
    for pid in pids + workers:
        wait_for(lambda: not alive(pid), message=f"pid {pid} gone")


def test_kill_9_emperor_takes_vassals_along(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    addr = emperor.write("v.ini", free_port())
    wait_for(lambda: http_request(addr)[0] == 200)
    vassal = emperor.vassal("v.ini")["pid"]
    workers = children(vassal)
    os.kill(emperor.server.pid, signal.SIGKILL)
    for pid in [vassal] + workers:
        wait_for(lambda: not alive(pid), timeout=5, message=f"pid {pid} died with the emperor")


def test_vassals_include_placeholders_and_env_rewrite(spawn, workdir):
    port = free_port()
    include = workdir / "common.ini"
    include.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = 127.0.0.1:%(myport)\n")
    emperor = Emperor(spawn, workdir, "--vassals-include", str(include),
                      env={"UWSGI_VASSAL_PROCESSES": "2"})
    (emperor.dir / "inc.ini").write_text(f"[uwsgi]\nmyport = {port}\nprocname-prefix = %n-\n")
    addr = f"127.0.0.1:{port}"
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal from include")
    pid = emperor.vassal("inc.ini")["pid"]
    wait_for(lambda: len(children(pid)) == 2, message="UWSGI_VASSAL_PROCESSES became --processes 2")
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"inc-zergserve master")


def test_skel_symlinks_with_nofollow(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-nofollow")
    skel = emperor.dir / "app.skel"
    skel.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {workdir}/%n.sock\n")
    for name in ("app1", "app2"):
        os.symlink("app.skel", emperor.dir / f"{name}.ini")
    for name in ("app1", "app2"):  # %n resolves per vassal file: one socket each from one skeleton
        wait_for(lambda: http_request(str(workdir / f"{name}.sock"))[0] == 200, message=f"{name} serving")
    assert sorted(v["id"] for v in emperor.doc()["vassals"]) == ["app1.ini", "app2.ini"]
    time.sleep(0.01)
    os.utime(emperor.dir / "app1.ini", follow_symlinks=False)  # touch --no-dereference
    wait_for(lambda: emperor.vassal("app1.ini")["respawns"] == 1, message="app1 reloaded")
    assert emperor.vassal("app2.ini")["respawns"] == 0


def test_global_spawn_throttle(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    vassals = workdir / "vassals"
    vassals.mkdir()
    for i in range(8):
        (vassals / f"n{i}.ini").write_text("[uwsgi]\n")
    started = time.monotonic()
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-spawn-burst", "3",
                      "--emperor-throttle", "250", env={"FAKE_LOG": str(log)})
    wait_for(lambda: len(emperor.doc()["vassals"]) == 8, timeout=15, message="all eight spawned")
    assert time.monotonic() - started >= 5 * 0.25 * 0.8
    assert "global spawn throttle" in emperor.server.log()


def test_stats_layout(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    emperor.write("s.ini", free_port())
    wait_for(lambda: emperor.vassal("s.ini") is not None)
    doc = emperor.doc()
    for key in ("version", "pid", "uid", "gid", "cwd", "emperor", "emperor_tyrant", "throttle_level",
                "vassals", "blacklist"):
        assert key in doc
    assert doc["emperor"] == [str(Path(emperor.dir).resolve())]
    for key in ("id", "pid", "born", "last_mod", "last_heartbeat", "loyal", "ready", "accepting", "first_run",
                "last_run", "cursed", "zerg", "uid", "gid", "monitor", "respawns"):
        assert key in doc["vassals"][0]


@pytest.mark.parametrize("scheme", ["glob", "dir"])
def test_monitor_schemes(spawn, workdir, scheme):
    vassals = workdir / "vassals"
    vassals.mkdir()
    port = free_port()
    (vassals / "g.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = 127.0.0.1:{port}\n")
    (vassals / "ignored.ini~").write_text("[uwsgi]\n")
    (vassals / ".hidden.ini").write_text("[uwsgi]\n")
    arg = f"glob://{vassals}/*.ini" if scheme == "glob" else f"dir://{vassals}"
    stats = str(workdir / "e.stats")
    spawn("--emperor", arg, "--emperor-stats", stats)
    wait_for(lambda: http_request(f"127.0.0.1:{port}")[0] == 200)
    ids = [v["id"] for v in fetch(stats)["vassals"]]
    assert ids == ([f"{vassals}/g.ini"] if scheme == "glob" else ["g.ini"])


def test_binary_patch_vassal_runs_another_program(spawn, workdir):
    """uWSGI's docs run nginx as a vassal this way; a shell stands in for it here."""
    out = workdir / "patched.out"
    emperor = Emperor(spawn, workdir)
    (emperor.dir / "other.ini").write_text(
        "[uwsgi]\n"
        f"unprivileged-binary-patch-arg = /bin/sh -c 'echo fd=$UWSGI_EMPEROR_FD > {out}; exec sleep 30'\n")
    wait_for(lambda: out.exists() and out.read_text().startswith("fd="), message="the patched program ran")
    pid = emperor.vassal("other.ini")["pid"]
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep")


def test_yaml_vassal(spawn, workdir):
    pytest.importorskip("yaml")
    emperor = Emperor(spawn, workdir)
    port = free_port()
    (emperor.dir / "y.yaml").write_text(f"uwsgi:\n  chdir: {APPS}\n  module: echo:application\n"
                                        f"  http: 127.0.0.1:{port}\n")
    wait_for(lambda: http_request(f"127.0.0.1:{port}")[0] == 200, message="yaml vassal serving")
