"""Process titles name the role and the app (issue 12, item 6): read from /proc/PID/cmdline of real
processes: an instance from the command line and from an ini file, a vassal, a zerg, the emperor,
a zergpool, and uWSGI's --procname, --procname-master, --procname-append, --auto-procname."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import APPS, http_request, wait_for


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def worker_titles(server, count: int) -> list[str]:
    return wait_for(lambda: len(server.worker_pids()) == count
                    and all("worker" in cmdline(pid) for pid in server.worker_pids())
                    and sorted(cmdline(pid) for pid in server.worker_pids()), message="worker titles")


def test_titles_name_the_module(spawn, workdir):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr, "-p", "2", wait=addr)
    assert worker_titles(server, 2) == ["zergserve worker 1 [echo]", "zergserve worker 2 [echo]"]
    assert cmdline(server.pid) == "zergserve master [echo]"


def test_titles_name_the_ini_and_survive_a_reload(spawn, workdir):
    addr = str(workdir / "h.sock")
    (workdir / "shop.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n"
                                      "procname-prefix-spaced = acme\n")
    server = spawn(str(workdir / "shop.ini"), wait=addr)
    assert worker_titles(server, 1) == ["acme zergserve worker 1 [shop.ini]"]
    assert cmdline(server.pid) == "acme zergserve master [shop.ini]"
    old = server.worker_pids()
    server.signal(signal.SIGHUP)
    server.wait_log("new workers ready")
    wait_for(lambda: server.worker_pids() and not set(old) & set(server.worker_pids()), message="new generation")
    assert worker_titles(server, 1) == ["acme zergserve worker 1 [shop.ini]"]
    assert cmdline(server.pid) == "acme zergserve master [shop.ini]"


def test_procname_options(spawn, workdir):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr, "--procname", "shop-w",
                   "--procname-master", "shop-m", "--procname-prefix", "x-", "--procname-append", " (prod)",
                   wait=addr)
    wait_for(lambda: [cmdline(pid) for pid in server.worker_pids()] == ["x-shop-w (prod)"], message="worker")
    assert cmdline(server.pid) == "x-shop-m (prod)"


def test_the_apps_own_title_is_framed_too(spawn, workdir):
    """uwsgi.setprocname() gets the prefix (the spaced one here) and the append, as uWSGI's does."""
    addr = str(workdir / "h.sock")
    server = spawn("--module", "uwsgi_api:application", "--http", addr, "--procname-prefix-spaced", "acme",
                   "--procname-append", " (prod)", wait=addr)
    status, _, body = http_request(addr, path="/procname")
    assert status == 200 and json.loads(body)["title"] == "acme uwsgi-app-title (prod)"
    assert cmdline(server.pid) == "acme zergserve master [uwsgi_api] (prod)"


def test_auto_procname_false_keeps_the_command_line(spawn, workdir):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr, "--auto-procname=false", wait=addr)
    assert http_request(addr)[0] == 200
    assert "-m zergserve --module echo:application" in cmdline(server.pid)
    assert all("-m zergserve" in cmdline(pid) for pid in server.worker_pids())


def test_vassal_emperor_zergpool_and_zerg_titles(spawn, workdir):
    vassals = workdir / "vassals"
    vassals.mkdir()
    addr = str(workdir / "v.sock")
    (vassals / "shop.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n")
    emperor = spawn("--emperor", str(vassals), "--emperor-freq", "1")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=20, message="the vassal answering")
    assert cmdline(emperor.pid) == f"zergserve emperor [{vassals}]"
    (vassal,) = children(emperor.pid)
    assert cmdline(vassal) == "zergserve master [shop.ini]"
    assert [cmdline(pid) for pid in children(vassal)] == ["zergserve worker 1 [shop.ini]"]

    pool_sock = str(workdir / "pool.sock")
    pool = spawn("--zergpool", f"{pool_sock}:{workdir / 'p.sock'}")
    wait_for(lambda: cmdline(pool.pid).startswith("zergserve zergpool"), message="pool title")
    assert cmdline(pool.pid) == f"zergserve zergpool [{pool_sock}]"
    zerg = spawn("--module", "echo:application", "--zerg", pool_sock, "--socket", str(workdir / "p.sock"))
    assert worker_titles(zerg, 1) == ["zergserve worker 1 [echo]"]
    assert cmdline(zerg.pid) == "zergserve master [echo]"
