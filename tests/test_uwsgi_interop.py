"""Mixing with real uWSGI (skipped without a uwsgi binary: `pip install uwsgi`, or bench/run.py's venv).

Both directions of zerg mode and a uWSGI vassal under the zergserve emperor.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import APPS, ROOT, bound, fetch, free_port, http_request, wait_for
from test_broodlord import block_worker
from test_emperor import Emperor, touch
from test_instance_uwsgi import nginx_vars, request, split

UWSGI = shutil.which("uwsgi") or next((str(p) for p in [ROOT / "bench" / ".peers" / "bin" / "uwsgi"] if p.exists()),
                                      None)
pytestmark = pytest.mark.skipif(UWSGI is None, reason="no uwsgi binary (pip install uwsgi)")


@pytest.fixture
def uwsgi(workdir):
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = open(workdir / f"uwsgi-{len(started)}.log", "wb")
        proc = subprocess.Popen([UWSGI, "--chdir", str(APPS), "--module", "echo:application", *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def pid_of(addr: str) -> bytes:
    return split(request(addr, nginx_vars("GET", "/pid")))[1]


def test_uwsgi_zerg_attaches_to_zergserve_server(spawn, workdir, uwsgi):
    listener = bound()
    addr = listener.addr
    zsock = str(workdir / "z.sock")
    stats = str(workdir / "s.sock")
    main = spawn("--module", "echo:application", "--socket", listener.arg, "--zerg-server", zsock, "--stats", stats,
                 wait=addr)
    main.wait_log("zerg server enabled")
    zerg = uwsgi("--master", "-p", "1", "--zerg", zsock)
    main.signal(signal.SIGTSTP)
    wait_for(lambda: fetch(stats)["workers"][0]["status"] == "pause")
    ours = {str(w["pid"]).encode() for w in fetch(stats)["workers"]}
    answered = wait_for(lambda: pid_of(addr), timeout=15, message="the uWSGI zerg answering")
    assert answered not in ours
    assert zerg.poll() is None


def test_zergserve_zerg_attaches_to_uwsgi_server(spawn, workdir, uwsgi):
    addr = str(workdir / "u.sock")  # uWSGI binds it: a UNIX socket, no port number to race for
    zsock = str(workdir / "uz.sock")
    server = uwsgi("--master", "-p", "1", "--socket", addr, "--zerg-server", zsock)
    wait_for(lambda: os.path.exists(zsock), message="uWSGI zerg server")
    stats = str(workdir / "zs.sock")
    spawn("--module", "echo:application", "-p", "1", "--zerg", zsock, "--stats", stats)
    wait_for(lambda: os.path.exists(stats) and fetch(stats)["workers"][0]["status"] == "idle")
    doc = fetch(stats)
    assert doc["sockets"][0]["name"] == addr and doc["sockets"][0]["proto"] == "uwsgi"
    os.kill(server.pid, signal.SIGTSTP)  # uWSGI's own "zerg as tester" pause
    ours = str(doc["workers"][0]["pid"]).encode()
    wait_for(lambda: pid_of(addr) == ours, timeout=15, message="our zerg answering for uWSGI")


def test_uwsgi_vassal_under_zergserve_emperor(spawn, workdir):
    addr = str(workdir / "u.sock")  # the uWSGI vassal binds it: a UNIX socket, no port number to race for
    emperor = Emperor(spawn, workdir, "--binary-path", UWSGI)
    (emperor.dir / "u.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\n"
                                       f"http-socket = {addr}\nprocesses = 1\n")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=20, message="uWSGI vassal serving")
    wait_for(lambda: (emperor.vassal("u.ini") or {}).get("loyal") == 1, message="uWSGI vassal loyal")
    assert emperor.vassal("u.ini")["ready"] == 1
    pid = emperor.vassal("u.ini")["pid"]
    touch(emperor.dir / "u.ini")
    wait_for(lambda: emperor.vassal("u.ini")["respawns"] == 1, message="reload sent to uWSGI")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=20)
    assert emperor.vassal("u.ini")["pid"] == pid
    (emperor.dir / "u.ini").unlink()
    wait_for(lambda: emperor.vassal("u.ini") is None, timeout=20, message="uWSGI vassal stopped")


def test_uwsgi_emperor_spawns_as_many_zergs_as_a_zergserve_vassal_asks_for(workdir, uwsgi):
    """A zergserve SOS for several zergs is several 30s: uWSGI's emperor answers each with a zerg."""
    wrapper = workdir / "zergserve-vassal"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m zergserve \"$@\"\n")
    wrapper.chmod(0o755)
    vassals = workdir / "vassals"
    vassals.mkdir()
    addr = str(workdir / "brood-http.sock")  # the vassal binds it itself: no port number to race for
    zsock = workdir / "brood.zerg"
    (vassals / "brood.ini").write_text(
        f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\nprocesses = 1\n"
        f"zerg-server = {zsock}\nvassal-sos-backlog = 2\n"
        f"[zerg]\nchdir = {APPS}\nmodule = echo:application\nzerg = {zsock}\nprocesses = 1\nidle = 60\n")
    stats = str(workdir / "emperor.stats")
    emperor = subprocess.Popen([UWSGI, "--emperor", str(vassals), "--emperor-broodlord", "3", "--binary-path",
                                str(wrapper), "--emperor-stats", stats], stdout=open(workdir / "uwsgi.log", "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    try:
        wait_for(lambda: http_request(addr)[0] == 200, timeout=20, message="zergserve vassal of uWSGI serving")
        block_worker(addr, 4, 12)
        wait_for(lambda: "zerg(s) wanted" in (workdir / "uwsgi.log").read_text(), timeout=15, message="SOS")
        wait_for(lambda: len([v for v in fetch(stats)["vassals"] if v["zerg"] and v["accepting"]]) == 3,
                 timeout=20, message="uWSGI's emperor running three zergs")
        calls = re.split(r"\d+ zerg\(s\) wanted", (workdir / "uwsgi.log").read_text())
        wanted = int(re.search(r"(\d+) zerg\(s\) wanted", (workdir / "uwsgi.log").read_text()).group(1))
        assert wanted >= 2 and calls[1].count("going in broodlord mode") >= min(wanted, 3), calls[1]
    finally:
        os.killpg(emperor.pid, signal.SIGINT)
        emperor.wait(30)


def test_uwsgi_vassal_sos_gets_one_zerg_at_a_time_from_zergserve_emperor(spawn, workdir):
    """A uWSGI vassal sends one 30 per cycle: zergserve's emperor starts one zerg per call, never more."""
    # TCP, bound by the vassal itself: uWSGI reads no listen queue of a UNIX socket, so would never call
    port = free_port()
    addr = f"127.0.0.1:{port}"
    emperor = Emperor(spawn, workdir, "--binary-path", UWSGI, "--emperor-broodlord", "2")
    zsock = workdir / "u.zerg"
    (emperor.dir / "u.ini").write_text(
        f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp-socket = {addr}\nprocesses = 1\n"
        f"zerg-server = {zsock}\nvassal-sos-backlog = 2\n"
        f"[zerg]\nchdir = {APPS}\nmodule = echo:application\nzerg = {zsock}\nprocesses = 1\nprotocol = http\n")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=20, message="uWSGI vassal serving")
    block_worker(addr, 4, 12)
    wait_for(lambda: [z["accepting"] for z in emperor.doc()["vassals"] if z["zerg"]] == [1, 1], timeout=20,
             message="two uWSGI zergs serving")
    calls = re.findall(r"sent SOS for (\d+) zerg\(s\): spawning (\d+)", emperor.server.log())
    assert calls and all(wanted == spawned == "1" for wanted, spawned in calls), calls
