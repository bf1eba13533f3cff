"""The emperor with real processes: vassals from files, the byte protocol, throttling, heartbeats, stats."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import APPS, ROOT, bound, connect, fetch, fill_send_buffer, free_port, http_request, wait_for

FAKE_VASSAL = '''\
import os, socket, sys, time
sock = socket.socket(fileno=int(os.environ["UWSGI_EMPEROR_FD"]))
path = os.environ["FAKE_LOG"]
starts = open(path).read().count("start ")
log = open(path, "a")
log.write(f"start {os.getpid()} {' '.join(sys.argv[1:])} {os.environ.get('UWSGI_SOCKET', '')}\\n")
names = filter(None, os.environ.get("FAKE_ENV", "").split(","))
log.write(f"at {time.time():.4f} " + " ".join(f"{n}={os.environ.get(n, '')}" for n in names) + "\\n"); log.flush()
if starts < int(os.environ.get("FAKE_CRASHES", "0")):  # die before loyal, this many times
    sock.send(bytes([1]))
    sys.exit(1)
for byte in map(int, filter(None, os.environ.get("FAKE_SEND", "1,5,17").split(","))):
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
        wait_for(self.doc, message="emperor stats socket answering")  # its file exists before it listens

    def doc(self) -> dict:
        return fetch(self.stats)

    def vassal(self, name: str) -> dict | None:
        for item in self.doc()["vassals"]:
            if item["id"] == name:
                return item
        return None

    def write(self, name: str, port: int | None = None, extra: str = "") -> str:
        """A vassal serving HTTP; the address for clients. The vassal binds it itself (the emperor
        passes it no sockets): a UNIX socket in the workdir unless a `port` is given."""
        path = self.dir / name
        addr = f"127.0.0.1:{port}" if port is not None else str(self.dir.parent / f"{path.stem}.sock")
        path.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n{extra}")
        return addr


def touch(path: Path, follow_symlinks: bool = True) -> None:
    """A modification the emperor must see: the mtime moved a whole second on, whatever the clock did."""
    mtime = os.stat(path, follow_symlinks=follow_symlinks).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(mtime, mtime), follow_symlinks=follow_symlinks)


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
    addr = emperor.write("app.ini")
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")
    first = emperor.vassal("app.ini")
    assert first["pid"] > 0 and first["ready"] == 1
    wait_for(lambda: emperor.vassal("app.ini")["accepting"] == 1, message="accepting")
    old_workers = set(children(first["pid"]))
    touch(emperor.dir / "app.ini")  # graceful reload
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
    addr = emperor.write("app.ini")
    wait_for(lambda: http_request(addr)[0] == 200)
    wait_for(lambda: emperor.vassal("app.ini")["loyal"] == 1)
    pid = emperor.vassal("app.ini")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (emperor.vassal("app.ini") or {}).get("pid", pid) not in (pid, -1), message="respawned")
    wait_for(lambda: http_request(addr)[0] == 200, message="serving again")
    assert emperor.doc()["blacklist"] == []  # it was loyal: no throttling


def start_times(log: Path) -> list[float]:
    """When each start of the fake vassal happened, by its own clock."""
    return [float(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("at ")]


def test_crashing_vassal_is_throttled_more_each_time(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    # --emperor-freq 60: a respawn that waited for the next scan would take a minute, so the upper
    # bounds below may be generous for a loaded host and still show the emperor wakes for the throttle
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-throttle", "600",
                      "--emperor-freq", "60", env={"FAKE_LOG": str(log), "FAKE_CRASHES": "100"})
    (emperor.dir / "bad.ini").write_text("[uwsgi]\n")
    wait_for(lambda: len(start_times(log)) >= 5, timeout=20, message="five starts")
    starts = start_times(log)[:5]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    print("gaps between starts:", [round(g, 3) for g in gaps])
    # the first respawn is at once (within less than one step, the 600-ms step leaving room for a
    # vassal's start on a loaded host); then each waits one more --emperor-throttle step, growing
    assert gaps[0] < 0.6
    for level, gap in enumerate(gaps[1:], start=1):
        assert 0.6 * level <= gap < 0.6 * level + 3, gaps
    entry = next(e for e in emperor.doc()["blacklist"] if e["id"] == "bad.ini")
    assert entry["throttle_level"] >= 1800
    assert "unloyal bad behaving vassal found: bad.ini" in emperor.server.log()


def test_sigurg_clears_the_blacklist_and_respawns_at_once(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-throttle", "20000",
                      env={"FAKE_LOG": str(log), "FAKE_CRASHES": "2"})
    (emperor.dir / "bad.ini").write_text("[uwsgi]\n")
    wait_for(lambda: any(e["id"] == "bad.ini" and e["throttle_level"] == 20000 for e in emperor.doc()["blacklist"]),
             message="throttled for 20 s")
    assert len(start_times(log)) == 2
    signalled = time.time()
    emperor.server.signal(signal.SIGURG)
    # the time is the point: at once, not when the 20-s throttle ends; 10 s leaves a loaded host room
    wait_for(lambda: len(start_times(log)) == 3, timeout=10, message="respawn after SIGURG")
    assert start_times(log)[2] - signalled < 10.0
    assert "cleaning up the blacklist" in emperor.server.log()
    wait_for(lambda: (emperor.vassal("bad.ini") or {}).get("loyal") == 1, message="loyal third start")
    assert emperor.doc()["blacklist"] == []


def test_loyalty_clears_a_blacklist_entry(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-throttle", "100",
                      env={"FAKE_LOG": str(log), "FAKE_CRASHES": "3"})
    (emperor.dir / "l.ini").write_text("[uwsgi]\n")
    emperor.server.wait_log("unloyal bad behaving vassal found: l.ini")  # three deaths: attempt 2
    wait_for(lambda: (emperor.vassal("l.ini") or {}).get("loyal") == 1, message="loyal fourth start")
    assert emperor.doc()["blacklist"] == []
    assert len(start_times(log)) == 4


def test_unstartable_vassal_is_throttled_and_others_go_on(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    # --emperor-freq 60: see test_crashing_vassal_is_throttled_more_each_time
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-throttle", "300",
                      "--emperor-freq", "60", env={"FAKE_LOG": str(log)})
    (emperor.dir / "good.ini").write_text("[uwsgi]\n")
    wait_for(lambda: (emperor.vassal("good.ini") or {}).get("loyal") == 1, message="good vassal")
    good = emperor.vassal("good.ini")["pid"]
    hidden = workdir / "fake-vassal.away"
    wrapper.rename(hidden)  # the binary is gone: spawning fails in Popen
    (emperor.dir / "bad.ini").write_text("[uwsgi]\n")
    failures: list[float] = []

    def count() -> bool:
        seen = emperor.server.log().count("cannot start vassal bad.ini")
        failures.extend([time.monotonic()] * (seen - len(failures)))
        return seen >= 5
    wait_for(count, timeout=20, interval=0.01, message="five failed starts")
    gaps = [b - a for a, b in zip(failures, failures[1:])]
    print("gaps between failed starts:", [round(g, 3) for g in gaps])
    for level, gap in enumerate(gaps[1:4], start=1):  # 0.3, 0.6, 0.9 s: growing, not every scan
        assert 0.3 * level - 0.05 <= gap < 0.3 * level + 3, gaps
    assert f"with {wrapper}: No such file or directory" in emperor.server.log()
    assert emperor.server.proc.poll() is None
    assert emperor.vassal("good.ini")["pid"] == good and alive(good)
    emperor.server.signal(signal.SIGHUP)
    wait_for(lambda: "got 1" in log.read_text(), message="the good vassal still obeys")
    hidden.rename(wrapper)
    emperor.server.signal(signal.SIGURG)
    wait_for(lambda: (emperor.vassal("bad.ini") or {}).get("loyal") == 1, message="bad.ini starts once it can")


def test_bad_config_is_logged_and_others_go_on(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    (emperor.dir / "typo.ini").write_text("[uwsgi]\nprocessess = 2\n")
    addr = emperor.write("good.ini")
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
    addr = emperor.write("hb.ini", extra="heartbeat = 1\n")
    wait_for(lambda: http_request(addr)[0] == 200)
    pid = emperor.vassal("hb.ini")["pid"]
    beats: set[int] = set()

    def beating() -> bool:
        vassal = emperor.vassal("hb.ini")
        assert vassal["pid"] == pid, "the vassal was killed"
        if vassal["last_heartbeat"] > 0:
            beats.add(vassal["last_heartbeat"])
        return len(beats) >= 4  # four distinct seconds: longer than the 2 s the emperor requires
    wait_for(beating, timeout=20, message="heartbeats over 3 s")
    assert emperor.vassal("hb.ini")["pid"] == pid
    assert "sent no heartbeat" not in emperor.server.log()


def test_term_leaves_nothing_behind(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    addrs = [emperor.write(f"v{i}.ini") for i in range(2)]
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
    addr = emperor.write("v.ini")
    wait_for(lambda: http_request(addr)[0] == 200)
    vassal = emperor.vassal("v.ini")["pid"]
    workers = children(vassal)
    os.kill(emperor.server.pid, signal.SIGKILL)
    for pid in [vassal] + workers:
        wait_for(lambda: not alive(pid), timeout=5, message=f"pid {pid} died with the emperor")


def test_vassals_include_placeholders_and_env_rewrite(spawn, workdir):
    include = workdir / "common.ini"
    include.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {workdir}/%(mysock)\n")
    emperor = Emperor(spawn, workdir, "--vassals-include", str(include),
                      env={"UWSGI_VASSAL_PROCESSES": "2"})
    (emperor.dir / "inc.ini").write_text("[uwsgi]\nmysock = inc.sock\nprocname-prefix = %n-\n")
    addr = str(workdir / "inc.sock")
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
    touch(emperor.dir / "app1.ini", follow_symlinks=False)  # touch --no-dereference
    wait_for(lambda: emperor.vassal("app1.ini")["respawns"] == 1, message="app1 reloaded")
    assert emperor.vassal("app2.ini")["respawns"] == 0


def fake_vassals(spawn, workdir: Path, count: int, burst: int, throttle_ms: int, send: str,
                 crashes: int = 0) -> Emperor:
    """`count` fake vassals n0.ini... in the dir when the emperor starts; each sends `send` at start
    (the first `crashes` starts, of all of them together, send 1 and exit instead)."""
    wrapper, log = fake_vassal(workdir)
    vassals = workdir / "vassals"
    vassals.mkdir()
    for i in range(count):
        (vassals / f"n{i}.ini").write_text("[uwsgi]\n")
    return Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-spawn-burst", str(burst),
                   "--emperor-throttle", str(throttle_ms),
                   env={"FAKE_LOG": str(log), "FAKE_SEND": send, "FAKE_CRASHES": str(crashes)})


def test_global_spawn_throttle(spawn, workdir):
    """At most --emperor-spawn-burst vassals start at once: the next one waits for a slot."""
    emperor = fake_vassals(spawn, workdir, 5, burst=3, throttle_ms=60000, send="")
    emperor.server.wait_log("global spawn throttle: waiting before the next vassal")
    scans = emperor.doc()["scans"]
    emperor.server.signal(signal.SIGWINCH)
    wait_for(lambda: emperor.doc()["scans"] >= scans + 2, message="two more scans")
    assert sorted(v["id"] for v in emperor.doc()["vassals"]) == ["n0.ini", "n1.ini", "n2.ini"]
    (emperor.dir / "n0.ini").unlink()  # stopped: its slot is free
    wait_for(lambda: emperor.vassal("n3.ini"), message="the next vassal in the freed slot")
    assert emperor.vassal("n4.ini") is None


def test_a_silent_vassal_holds_its_slot_for_one_throttle_step(spawn, workdir):
    emperor = fake_vassals(spawn, workdir, 4, burst=1, throttle_ms=300, send="")
    wait_for(lambda: len(emperor.doc()["vassals"]) == 4, message="all four, one per step")
    assert "global spawn throttle" in emperor.server.log()


def test_failing_vassals_share_one_budget(spawn, workdir):
    """Eight crash-looping vassals, each on its own back-off (0, 0.2, 0.4 s...), would respawn eight
    at once, then eight more: together they respawn at most --emperor-spawn-burst at once, then one
    per --emperor-throttle ms, so that many failing vassals cannot fork-bomb the host."""
    crasher = workdir / "crasher"
    log = workdir / "starts.log"
    crasher.write_text(f"#!/bin/sh\necho \"at $(date +%s.%N)\" >> {log}\nexit 1\n")
    crasher.chmod(0o755)
    vassals = workdir / "vassals"
    vassals.mkdir()
    for i in range(8):
        (vassals / f"n{i}.ini").write_text("[uwsgi]\n")
    emperor = Emperor(spawn, workdir, "--binary-path", str(crasher), "--emperor-spawn-burst", "2",
                      "--emperor-throttle", "200")
    wait_for(lambda: log.exists() and len(start_times(log)) >= 20, timeout=20, message="twelve respawns")
    starts = sorted(start_times(log))
    respawns = starts[8:]
    assert len(respawns) <= 2 + (respawns[-1] - starts[0]) / 0.2 + 1, [round(t - starts[0], 2) for t in starts]
    assert emperor.doc()["throttle_level"] < 2


def test_a_vassal_that_says_it_started_frees_its_slot_at_once(spawn, workdir):
    emperor = fake_vassals(spawn, workdir, 8, burst=2, throttle_ms=60000, send="1")
    wait_for(lambda: len(emperor.doc()["vassals"]) == 8, timeout=15, message="all eight spawned, not one a minute")


def test_stats_layout(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    emperor.write("s.ini")
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
    addr = str(workdir / "g.sock")
    (vassals / "g.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n")
    (vassals / "ignored.ini~").write_text("[uwsgi]\n")
    (vassals / ".hidden.ini").write_text("[uwsgi]\n")
    arg = f"glob://{vassals}/*.ini" if scheme == "glob" else f"dir://{vassals}"
    stats = str(workdir / "e.stats")
    spawn("--emperor", arg, "--emperor-stats", stats)
    wait_for(lambda: http_request(addr)[0] == 200)
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
    addr = str(workdir / "y.sock")
    (emperor.dir / "y.yaml").write_text(f"uwsgi:\n  chdir: {APPS}\n  module: echo:application\n"
                                        f"  http: {addr}\n")
    wait_for(lambda: http_request(addr)[0] == 200, message="yaml vassal serving")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


@pytest.mark.parametrize("variable", ["ZERGSERVE_EMPEROR", "UWSGI_EMPEROR", "UWSGI_INI"])
def test_emperor_configured_by_env_runs_instances_not_emperors(spawn, workdir, variable):
    vassals = workdir / "vassals"
    vassals.mkdir()
    value = str(vassals)
    if variable == "UWSGI_INI":
        value = str(workdir / "emperor.ini")
        Path(value).write_text(f"[uwsgi]\nemperor = {vassals}\n")
    stats = str(workdir / "e.stats")
    server = spawn("--emperor-stats", stats, "--emperor-freq", "1", env={variable: value})
    addr = str(workdir / "app.sock")
    (vassals / "app.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n")
    wait_for(lambda: http_request(addr)[0] == 200, message="the vassal serves")
    vassal = fetch(stats)["vassals"][0]["pid"]
    assert cmdline(vassal).startswith("zergserve master")
    emperors = [pid for pid in [server.pid, *descendants(server.pid)] if "emperor" in cmdline(pid)]
    assert emperors == [server.pid]
    assert "refusing to run an emperor" not in server.log()


def test_vassal_refuses_to_be_an_emperor(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    (workdir / "sub").mkdir()
    (emperor.dir / "sub.ini").write_text(f"[uwsgi]\nemperor = {workdir / 'sub'}\n")
    emperor.server.wait_log("refusing to run an emperor as a vassal (UWSGI_EMPEROR_FD is set)")
    wait_for(lambda: any(e["id"] == "sub.ini" for e in emperor.doc()["blacklist"]), message="blacklisted")
    assert [pid for pid in descendants(emperor.server.pid) if "emperor" in cmdline(pid)] == []


def test_graceful_shutdown_sends_byte_2(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-graceful-shutdown",
                      env={"FAKE_LOG": str(log)})
    (emperor.dir / "g.ini").write_text("[uwsgi]\n")
    wait_for(lambda: (emperor.vassal("g.ini") or {}).get("loyal") == 1, message="loyal")
    (emperor.dir / "g.ini").unlink()
    wait_for(lambda: "got 2" in log.read_text(), message="byte 2")
    wait_for(lambda: emperor.vassal("g.ini") is None, message="vassal gone")
    assert "got 0" not in log.read_text()


def test_usr1_logs_a_line_per_vassal(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), env={"FAKE_LOG": str(log)})
    for name in ("a.ini", "b.ini"):
        (emperor.dir / name).write_text("[uwsgi]\n")
    wait_for(lambda: len(emperor.doc()["vassals"]) == 2, message="two vassals")
    pids = {v["id"]: v["pid"] for v in emperor.doc()["vassals"]}
    emperor.server.signal(signal.SIGUSR1)
    for name, pid in pids.items():
        emperor.server.wait_log(f"vassal {name} pid {pid} (last modified")


def test_sigint_stops_every_vassal(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), env={"FAKE_LOG": str(log)})
    for name in ("a.ini", "b.ini"):
        (emperor.dir / name).write_text("[uwsgi]\n")
    wait_for(lambda: len(emperor.doc()["vassals"]) == 2, message="two vassals")
    pids = [v["pid"] for v in emperor.doc()["vassals"]]
    emperor.server.signal(signal.SIGINT)
    assert emperor.server.wait_exit(10) == 0
    assert log.read_text().count("got 0") == 2  # each was asked to stop; none needed killing
    assert "NO MERCY" not in emperor.server.log()
    for pid in pids:
        wait_for(lambda: not alive(pid), message=f"vassal {pid} gone")


def test_include_before_and_zergserve_vassal_env(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    before, after = workdir / "before.ini", workdir / "after.ini"
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--vassals-include-before", str(before),
                      "--vassals-include", str(after), "--vassal-set", "a=1",
                      env={"FAKE_LOG": str(log), "ZERGSERVE_VASSAL_PROCESSES": "2", "ZERGSERVE_EMPEROR_FREQ": "1",
                           "FAKE_ENV": "ZERGSERVE_PROCESSES,ZERGSERVE_EMPEROR_FREQ,ZERGSERVE_VASSAL_PROCESSES"})
    (emperor.dir / "x.ini").write_text("[uwsgi]\n")
    wait_for(lambda: "start " in log.read_text(), message="vassal started")
    text = log.read_text()
    assert f"--ini {before} --set a=1 --ini x.ini --ini {after}" in text
    # the documented rewrite, and none of the emperor's own options
    assert "ZERGSERVE_PROCESSES=2 ZERGSERVE_EMPEROR_FREQ= ZERGSERVE_VASSAL_PROCESSES=" in text


def test_inotify_acts_in_well_under_a_second(spawn, workdir):
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), "--emperor-freq", "60",
                      env={"FAKE_LOG": str(log)})
    emperor.doc()
    scans = emperor.doc()["scans"]  # served after the first scan: the file below is news to it
    tmp = workdir / "new.ini"
    tmp.write_text("[uwsgi]\n")
    started = time.monotonic()
    tmp.rename(emperor.dir / "new.ini")
    # the time is the point: the periodic scan comes every 60 s; 20 s is a bound a loaded host passes
    wait_for(lambda: emperor.vassal("new.ini") is not None, timeout=20, interval=0.005, message="spawned via inotify")
    elapsed = time.monotonic() - started
    print(f"inotify: vassal spawned {elapsed * 1000:.0f} ms after its file appeared (--emperor-freq 60)")
    assert emperor.doc()["scans"] == scans + 1


def test_writes_to_other_files_cause_no_scan(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-freq", "60")
    emperor.doc()
    scans = emperor.doc()["scans"]
    with open(emperor.dir / "emperor.log", "w") as fh:
        for i in range(20):
            fh.write(f"line {i}\n")
            fh.flush()
            time.sleep(0.02)  # pacing the writes, not a sync point
    (emperor.dir / "ready.ini").write_text("[uwsgi]\nunknown-key = 1\n")  # a relevant event, scanned
    wait_for(lambda: emperor.doc()["scans"] > scans, message="the config file's scan")
    assert emperor.doc()["scans"] <= scans + 2  # created + closed may take two; the 20 writes none


def test_emperor_removes_its_stats_socket_and_pidfile(spawn, workdir):
    pidfile = workdir / "emperor.pid"
    emperor = Emperor(spawn, workdir, "--emperor-pidfile", str(pidfile))
    wait_for(pidfile.exists, message="pidfile")
    emperor.server.signal(signal.SIGTERM)
    assert emperor.server.wait_exit(10) == 0
    assert not pidfile.exists() and not os.path.exists(emperor.stats)


def test_zergpool_as_a_vassal(spawn, workdir):
    emperor = Emperor(spawn, workdir)
    pooled = workdir / "pooled.sock"  # the vassal binds it: a UNIX socket, no port to race for
    pool = emperor.dir / "pool.ini"
    pool.write_text(f"[uwsgi]\nzergpool = {workdir}/pool.sock:{pooled}\n")
    wait_for(lambda: (emperor.vassal("pool.ini") or {}).get("loyal") == 1, message="loyal zergpool")
    vassal = emperor.vassal("pool.ini")
    assert vassal["ready"] == 1 and vassal["accepting"] == 1
    queued = connect(str(pooled))  # waits in the pool's backlog across the reload
    touch(pool)
    wait_for(lambda: emperor.vassal("pool.ini")["respawns"] == 1, message="reload sent")
    emperor.server.wait_log("zergpool reloading")
    wait_for(lambda: emperor.vassal("pool.ini")["accepting"] == 1, message="accepting again after the re-exec")
    assert emperor.vassal("pool.ini")["pid"] == vassal["pid"]
    attached = zerg_attach(f"{workdir}/pool.sock")
    accepted, _ = attached.accept()  # the connection made before the reload is still queued
    accepted.close()
    attached.close()
    queued.close()
    pool.unlink()
    wait_for(lambda: emperor.vassal("pool.ini") is None, message="stopped by byte 0")
    assert not alive(vassal["pid"])


def zerg_attach(path: str):
    """The pool's first listening socket, as a zerg receives it."""
    from zergserve import zerg
    listener = zerg.attach(path)[0].sock
    listener.settimeout(5)
    return listener


def run_vassal(workdir: Path, args: list[str], emperor_end, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]), PYTHONUNBUFFERED="1",
               UWSGI_EMPEROR_FD=str(emperor_end.fileno()))
    out = open(workdir / "vassal.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "zergserve", *args], cwd=workdir, env=env, stdout=out,
                            stderr=subprocess.STDOUT, pass_fds=[emperor_end.fileno(), *pass_fds],
                            start_new_session=True)


def test_eof_on_the_emperor_socket_stops_the_vassal(workdir):
    ours, theirs = socket.socketpair()
    listener = bound()
    proc = run_vassal(workdir, ["--chdir", str(APPS), "--module", "echo:application", "--http",
                                listener.arg, "-p", "2"], theirs, pass_fds=(listener.fd,))
    theirs.close()
    listener.close()
    try:
        ours.settimeout(10)
        assert ours.recv(1) == bytes([1])
        wait_for(lambda: len(children(proc.pid)) == 2, message="two workers")
        workers = children(proc.pid)
        ours.close()  # the emperor is gone
        assert proc.wait(10) == 1
        for pid in workers:
            wait_for(lambda: not alive(pid), message=f"worker {pid} gone")
        assert "lost connection with my emperor" in (workdir / "vassal.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("value", ["abc", "99"])
def test_bad_emperor_fd_is_a_clear_error(spawn, workdir, value):
    server = spawn("--chdir", str(APPS), "--module", "echo:application", "--http", bound().arg,
                   env={"UWSGI_EMPEROR_FD": value})
    assert server.wait_exit(10) == 2
    log = server.log()
    assert f"UWSGI_EMPEROR_FD={value!r}: not a file descriptor number" in log if value == "abc" else \
        "UWSGI_EMPEROR_FD=99: Bad file descriptor" in log
    assert "Traceback" not in log


def test_vassal_send_waits_for_room_instead_of_dropping(workdir):
    from zergserve.emperor import protocol
    vassal, emperor = socket.socketpair()
    filled = fill_send_buffer(vassal, b"\x1a" * 4096)
    with pytest.raises(TimeoutError):
        protocol.send(vassal, protocol.LOYAL, timeout=0.1)
    received = bytearray()
    sender = threading.Thread(target=protocol.send, args=(vassal, protocol.LOYAL))
    sender.start()
    sender.join(0.2)
    assert sender.is_alive(), "the send returned with no room for its byte"  # waiting: the emperor reads late
    emperor.settimeout(5)
    while len(received) < filled + 1:
        received.extend(emperor.recv(65536))
    sender.join(10)
    assert not sender.is_alive()
    assert received[-1] == protocol.LOYAL and len(received) == filled + 1


def test_deploy_layout_runs_as_shipped(spawn, workdir):
    """deploy/emperor copied as is (addresses aside): vassals, their sockets and logs under the root,
    and nginx as a vassal in front of them when nginx is installed."""
    root = workdir / "deploy" / "emperor"
    shutil.copytree(ROOT / "deploy" / "emperor", root, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n != ".gitignore" and Path(d).name in ("logs", "sockets")])
    (workdir / "examples").symlink_to(ROOT / "examples")
    http_addr = str(workdir / "demo-http.sock")  # the demo vassal binds it: a UNIX socket, no port race
    nginx_port = free_port()  # nginx, a vassal, binds its own listen port: only a number can be written down
    demo = root / "apps-available" / "demo.ini"
    demo.write_text(demo.read_text().replace("127.0.0.1:8001", http_addr))
    template = root / "nginx" / "nginx.conf.in"
    template.write_text(template.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{nginx_port}"))
    with_nginx = shutil.which("nginx") is not None and shutil.which("setpriv") is not None
    if with_nginx:
        (root / "apps-enabled" / "nginx.ini").symlink_to("../apps-available/nginx.ini")
    server = spawn("--ini", str(root / "emperor.ini"))
    stats = str(root / "sockets" / "emperor.stats")
    wait_for(lambda: http_request(http_addr)[1] is not None, timeout=15, message="demo serves")
    for name in ("demo", "demo2"):
        wait_for((root / "sockets" / f"{name}.sock").exists, message=f"{name}'s socket in sockets/")
        assert (root / "logs" / f"{name}.log").exists()
    assert (root / "sockets" / "emperor.pid").read_text().strip() == str(server.pid)
    if with_nginx:
        status, _, body = wait_for(lambda: (r := http_request(f"127.0.0.1:{nginx_port}", path="/via-nginx"))[0] == 200 and r,
                                   timeout=15, message="nginx in front of demo")
        assert b"GET /via-nginx" in body
        nginx = next(v for v in fetch(stats)["vassals"] if v["id"] == "nginx.ini")
        assert nginx["loyal"] == 1
        tree = [nginx["pid"], *descendants(nginx["pid"])]
        (root / "apps-enabled" / "nginx.ini").unlink()  # byte 0: vassal.sh stops nginx gracefully
        for pid in tree:
            wait_for(lambda: not alive(pid), message=f"nginx vassal process {pid} gone")
        assert "did not stop within" not in server.log()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    assert not (root / "sockets" / "emperor.stats").exists() and not (root / "sockets" / "demo.sock").exists()


def test_crash_looping_vassals_do_not_starve_a_healthy_one(spawn, workdir):
    """Issue 8 item 2: fifty vassals that die as they start and one healthy vassal sorted last. At a
    cold start every file has its first start before any crasher its second. Then, among the fifty
    crash-looping, the emperor respawns the healthy one within 5 s of a `kill -9` of its master, and
    starts a new one within 5 s of its file appearing; each serves once its own boot is over (about
    0.3 s on an idle host, more on a loaded one: that part is the host's, and gets a longer deadline).
    The crashers exit 1 from a shell before any Python starts: the emperor's part (a start, a death
    before loyal, the throttle) is the same as a crash at import, without fifty Python boots of CPU
    (the host's part, which on a loaded host took longer than the deadlines that are the point)."""
    vassals = workdir / "vassals"
    vassals.mkdir()
    binary = workdir / "vassal-binary"
    binary.write_text(f'#!/bin/sh\ncase "$*" in *crash*) exit 1;; esac\nexec {sys.executable} -m zergserve "$@"\n')
    binary.chmod(0o755)
    for i in range(50):
        (vassals / f"crash{i:02d}.ini").write_text(
            f"[uwsgi]\nchdir = {APPS}\nmodule = broken:application\nsocket = {workdir}/crash{i:02d}.sock\n")
    healthy = str(workdir / "healthy.sock")
    config = f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {healthy}\nprocesses = 1\n"
    (vassals / "zz-healthy.ini").write_text(config)
    emperor = Emperor(spawn, workdir, "--binary-path", str(binary))
    wait_for(lambda: http_request(healthy)[0] == 200, timeout=30, message="the healthy vassal serving")
    spawned = re.findall(r"\[emperor\] vassal (\S+) spawned \(pid", emperor.server.log())
    first_respawn = next((i for i, name in enumerate(spawned) if name in spawned[:i]), len(spawned))
    assert spawned.index("zz-healthy.ini") < first_respawn, spawned
    wait_for(lambda: emperor.vassal("zz-healthy.ini")["loyal"] == 1, message="loyal")
    wait_for(lambda: len(emperor.doc()["blacklist"]) == 50, timeout=30, message="every crasher failing")

    # The 5-s deadlines are on the emperor's spawn decision, read from its log line (cheap to poll:
    # its stats socket waits on the very loop that is busy respawning crashers).
    spawn_line = "[emperor] vassal zz-healthy.ini spawned (pid"

    def healthy_spawns() -> int:
        return emperor.server.log().count(spawn_line)

    pid = emperor.vassal("zz-healthy.ini")["pid"]
    spawns = healthy_spawns()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: healthy_spawns() > spawns, timeout=max(0.1, killed + 5 - time.monotonic()),
             message="the healthy vassal respawned within 5 s")
    wait_for(lambda: emperor.vassal("zz-healthy.ini")["pid"] not in (pid, -1)
             and emperor.vassal("zz-healthy.ini")["accepting"] and http_request(healthy)[0] == 200,
             timeout=30, message="the respawned vassal serving")

    (vassals / "zz-healthy.ini").unlink()
    wait_for(lambda: emperor.vassal("zz-healthy.ini") is None, message="the healthy vassal stopped")
    spawns = healthy_spawns()
    (workdir / "healthy.tmp").write_text(config)
    (workdir / "healthy.tmp").rename(vassals / "zz-healthy.ini")
    added = time.monotonic()
    wait_for(lambda: healthy_spawns() > spawns, timeout=max(0.1, added + 5 - time.monotonic()),
             message="a new vassal started within 5 s among fifty crash-looping ones")
    wait_for(lambda: http_request(healthy)[0] == 200, timeout=30, message="the new vassal serving")
    blacklist = emperor.doc()["blacklist"]
    assert len(blacklist) == 50 and all(e["id"] != "zz-healthy.ini" for e in blacklist)


def test_a_newline_in_a_vassal_name_cannot_forge_log_lines(spawn, workdir):
    """Issue 8 item 6: vassal file names go into the emperor's log lines escaped."""
    wrapper, log = fake_vassal(workdir)
    emperor = Emperor(spawn, workdir, "--binary-path", str(wrapper), env={"FAKE_LOG": str(log)})
    forged = "[2026-01-01 00.00.00] [1] INFO [emperor] FORGED"  # no ':' (refused, and logged escaped too)
    (emperor.dir / f"evil\n{forged}\x1b[31m.ini").write_text("[uwsgi]\n")
    emperor.server.wait_log("is now loyal")
    text = emperor.server.log()
    assert "vassal evil\\n[2026-01-01 00.00.00] [1] INFO [emperor] FORGED\\x1b[31m.ini spawned" in text
    assert not any(line.startswith(forged) for line in text.splitlines()) and "\x1b" not in text


@pytest.mark.parametrize("option,value", [
    ("--emperor-pidfile", "{dir}/no/such/dir/emperor.pid"),
    ("--emperor-stats", "{dir}/no/such/dir/stats.sock"),
    ("--emperor-metrics", "{dir}/no/such/dir/metrics.sock"),
])
def test_emperor_start_error_is_one_line_and_exit_2(spawn, workdir, option, value):
    (workdir / "vassals").mkdir()
    server = spawn("--emperor", str(workdir / "vassals"), option, value.format(dir=workdir))
    assert server.wait_exit() == 2
    log = server.log()
    assert "Traceback" not in log, log
    assert any("no/such/dir" in line for line in log.splitlines()), log
