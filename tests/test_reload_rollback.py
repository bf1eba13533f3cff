"""Reloads that cannot take the service down: a new generation whose workers fail to boot after the
master re-executed is rolled back (the old workers keep serving, a later HUP can try again), and the
reload check boots a trial worker that must answer --reload-check-url before the master commits."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from conftest import bound, fetch, http_request, wait_for

WSGI = '''
import os, time
{boot}
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(os.path.join({dir!r}, "inflight"), "w").close()
        while not os.path.exists(os.path.join({dir!r}, "release")):
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version} %d" % os.getpid()]
'''

ASGI = '''
import asyncio, os
async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:  # as Starlette: a failing startup handler is reported, then raised
                    {boot}
                except Exception as exc:
                    await send({{"type": "lifespan.startup.failed", "message": repr(exc)}})
                    raise
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["path"] == "/slow":
        open(os.path.join({dir!r}, "inflight"), "w").close()
        while not os.path.exists(os.path.join({dir!r}, "release")):
            await asyncio.sleep(0.01)
    body = b"{version} %d" % os.getpid()
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''

# Passes its first boot (the reload check's trial worker), fails every later one: a database that
# accepted the check's connection and refuses the workers', say.
FAIL_AFTER_FIRST_BOOT = ("boots = os.path.join({dir!r}, 'boots-{version}')\n"
                         "{indent}with open(boots, 'a') as fh: fh.write('x')\n"
                         "{indent}if os.path.getsize(boots) > 1: {failure}")
REFUSED = "raise RuntimeError('database refused the {version} worker')"
CRASH = "os.kill(os.getpid(), 9)"  # a C extension crashing the process, say


ALWAYS_FAIL = "raise RuntimeError('database refused every {version} worker')"


def write_app(workdir: Path, worker: str, version: str, fail_after_first_boot: bool = False,
              fail_always: bool = False, crash: bool = False) -> None:
    template, indent = (ASGI, " " * 20) if worker == "asyncio" else (WSGI, "")
    boot = "pass"
    if fail_after_first_boot or crash:
        failure = (CRASH if crash else REFUSED).format(version=version)
        boot = FAIL_AFTER_FIRST_BOOT.format(dir=str(workdir), version=version, indent=indent, failure=failure)
    elif fail_always:
        boot = ALWAYS_FAIL.format(version=version)
    (workdir / "rollapp.py").write_text(template.format(boot=boot, dir=str(workdir), version=version))


def start(spawn, workdir: Path, worker: str, *extra: str):
    listener = bound()
    addr = listener.addr
    stats = str(workdir / "stats.sock")
    # WSGI apps load after the fork (--lazy-apps): a failure in their import is a post-fork failure.
    lazy = [] if worker == "asyncio" else ["--lazy-apps"]
    server = spawn("--chdir", str(workdir), "--module", "rollapp:application", "--worker", worker,
                   "--http", listener.arg,
                   "-p", "2", "--stats", stats, "--worker-reload-mercy", "10", *lazy, *extra, wait=addr)
    server.addr, server.stats = addr, stats
    wait_for(lambda: len(serving(server)) == 2, message="2 idle workers")
    return server


def serving(server) -> set[int]:
    return {w["pid"] for w in fetch(server.stats)["workers"] if w["pid"] and w["status"] in ("idle", "busy")}


def answer(server) -> tuple[str, int]:
    status, _, body = http_request(server.addr)
    assert status == 200, body
    version, pid = body.decode().split()
    return version, int(pid)


def hup_to(server, workdir: Path, worker: str, version: str, outcome: str, **failure: bool) -> str:
    """Write `version` of the app, HUP, wait for the `outcome` log line; the log."""
    write_app(workdir, worker, version, **failure)
    server.signal(signal.SIGHUP)
    return server.wait_log(outcome, timeout=20)


def hup_to_fixed(server, workdir: Path, worker: str) -> None:
    write_app(workdir, worker, "v3")
    server.signal(signal.SIGHUP)
    wait_for(lambda: answer(server)[0] == "v3", timeout=20, message="the fixed app served")


@pytest.mark.parametrize("worker", ["sync", "gevent", "asyncio"])
def test_new_workers_failing_at_boot_roll_back(spawn, workdir, worker):
    write_app(workdir, worker, "v1")
    server = start(spawn, workdir, worker)
    old = serving(server)
    result: dict[str, tuple] = {}
    slow = threading.Thread(target=lambda: result.update(slow=http_request(server.addr, "GET", "/slow", timeout=30)))
    slow.start()
    wait_for(lambda: (workdir / "inflight").exists(), message="the slow request is in the app")

    log = hup_to(server, workdir, worker, "v2", "reload rolled back: new worker", fail_after_first_boot=True)
    assert "database refused the v2 worker" in log
    assert "the 2 worker(s) of the previous generation keep serving" in log
    for _ in range(6):  # new connections: the old code, in the old workers
        version, pid = answer(server)
        assert version == "v1" and pid in old
    assert fetch(server.stats)["previous_workers"] and server.proc.poll() is None

    (workdir / "release").touch()
    slow.join(30)
    status, _, body = result["slow"]
    assert status == 200 and body.startswith(b"v1 ")

    hup_to_fixed(server, workdir, worker)
    wait_for(lambda: len(serving(server)) == 2 and not serving(server) & old, timeout=20,
             message="the old generation retired")
    assert "reload_rolled_back" not in fetch(server.stats)
    assert server.proc.poll() is None


@pytest.mark.parametrize("worker", ["sync", "gevent", "asyncio"])
def test_a_new_app_that_cannot_boot_is_refused_by_the_check(spawn, workdir, worker):
    """The common case never re-executes at all: the check's trial worker fails its boot (the ASGI
    lifespan startup, a post-fork import), so the old master image and workers go on untouched."""
    write_app(workdir, worker, "v1")
    server = start(spawn, workdir, worker)
    old = serving(server)
    log = hup_to(server, workdir, worker, "v2", "reload aborted", fail_always=True)
    assert "reload check: the trial worker could not load the app (exit 4)" in log
    assert "database refused every v2 worker" in log
    assert "re-executing" not in log
    assert answer(server)[0] == "v1" and serving(server) == old
    hup_to_fixed(server, workdir, worker)


def test_master_failing_to_load_the_new_app_rolls_back(spawn, workdir):
    """The re-executed master itself cannot load the app (it passed the check): same rollback. A
    socket the new configuration added is closed again: the old workers do not accept on it."""
    app = workdir / "twice.py"
    app.write_text("import os\ndef application(e, s):\n    s('200 OK', [])\n    return [b'v1 %d' % os.getpid()]\n")
    listener = bound()
    addr = listener.addr
    ini = workdir / "twice.ini"
    ini.write_text(f"[uwsgi]\nchdir = {workdir}\nmodule = twice:application\nhttp = {listener.arg}\nprocesses = 2\n")
    server = spawn("--ini", str(ini), wait=addr, pass_fds=(listener.fd,))
    wait_for(lambda: len(server.worker_pids()) == 2, message="2 workers")
    old = set(server.worker_pids())
    app.write_text("import os\n"
                   f"if os.getpid() == {server.pid}:  # the master's pid: its re-executed image, not the check\n"
                   "    raise RuntimeError('fails only in the re-executed master')\n"
                   "def application(e, s):\n    s('200 OK', [])\n    return [b'v2 %d' % os.getpid()]\n")
    added = workdir / "added.sock"
    ini.write_text(ini.read_text() + f"http = {added}\n")
    server.signal(signal.SIGHUP)
    server.wait_log("reload rolled back: the new app could not be loaded by the master", timeout=20)
    assert "fails only in the re-executed master" in server.log()
    server.wait_log(f"closed {added}: the rolled-back configuration added it")  # logged once it is closed
    assert not added.exists()
    for _ in range(4):
        body = http_request(addr)[2].split()
        assert body[0] == b"v1" and int(body[1]) in old
    app.write_text("import os\ndef application(e, s):\n    s('200 OK', [])\n    return [b'v3 %d' % os.getpid()]\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: http_request(addr)[2].startswith(b"v3"), timeout=20, message="the fixed app served")
    assert http_request(str(added))[2].startswith(b"v3")


def test_new_workers_crashing_at_boot_roll_back(spawn, workdir):
    write_app(workdir, "sync", "v1")
    server = start(spawn, workdir, "sync")
    old = serving(server)
    hup_to(server, workdir, "sync", "v2", "reload rolled back", crash=True)
    assert "died before it was ready (killed by signal 9)" in server.log()
    assert answer(server)[1] in old
    hup_to_fixed(server, workdir, "sync")


def test_master_stops_once_the_previous_generation_is_gone(spawn, workdir):
    """Nothing can serve any more (the rolled-back old workers are gone): only then the master exits."""
    write_app(workdir, "sync", "v1")
    server = start(spawn, workdir, "sync")
    old = serving(server)
    hup_to(server, workdir, "sync", "v2", "reload rolled back", fail_after_first_boot=True)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    assert server.wait_exit(15) == 4
    assert "no worker left: the previous generation is gone and the new one cannot boot" in server.log()


LAZY_VIEWS = '''
import importlib
def application(environ, start_response):
    views = importlib.import_module("views")  # as Django: URLconf and views load on the first request
    status, body = views.page(environ["PATH_INFO"])
    start_response(status, [("Content-Type", "text/plain")])
    return [body]
'''


@pytest.mark.parametrize("worker", ["sync", "asyncio"])
def test_check_url_refuses_a_reload_whose_view_fails(spawn, workdir, worker):
    if worker == "asyncio":
        (workdir / "shop.py").write_text(
            "import importlib\n"
            "async def application(scope, receive, send):\n"
            "    if scope['type'] != 'http':\n"
            "        return\n"
            "    views = importlib.import_module('views')\n"
            "    status, body = views.page(scope['path'])\n"
            "    await send({'type': 'http.response.start', 'status': int(status.split()[0]), 'headers': []})\n"
            "    await send({'type': 'http.response.body', 'body': body})\n")
    else:
        (workdir / "shop.py").write_text(LAZY_VIEWS)
    views = workdir / "views.py"
    views.write_text("def page(path):\n    return '200 OK', b'v1'\n")
    listener = bound()
    addr = listener.addr
    server = spawn("--chdir", str(workdir), "--module", "shop:application", "--worker", worker, "--http", listener.arg,
                   "--reload-check-url", "/", "--reload-check-url", "http://shop.example/health?full=1",
                   wait=addr)
    assert http_request(addr)[2] == b"v1"
    views.write_text("def page(path):\n    return '200 OK', b'v2'\n  syntax error here\n")
    server.signal(signal.SIGHUP)
    server.wait_log("reload aborted", timeout=20)
    log = server.log()
    assert "reload check: GET / answered 500, not 2xx or 3xx" in log
    assert "SyntaxError" in log or "IndentationError" in log
    assert "re-executing" not in log
    assert http_request(addr)[2] == b"v1"

    views.write_text("def page(path):\n    if path == '/health': return '302 Found', b''\n"
                     "    return '200 OK', b'v3'\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: http_request(addr)[2] == b"v3", timeout=20, message="the fixed views served")
    log = server.log()
    assert "reload check: GET / answered 200" in log
    assert "reload check: GET http://shop.example/health?full=1 answered 302" in log


def test_emperor_vassal_reload_goes_through_the_check_urls(spawn, workdir):
    """Byte 1 (the vassal's config file touched) runs the same check as HUP."""
    apps = workdir / "apps"
    apps.mkdir()
    (apps / "shop.py").write_text(LAZY_VIEWS)
    views = apps / "views.py"
    views.write_text("def page(path):\n    return '200 OK', b'v1'\n")
    vassals = workdir / "vassals"
    vassals.mkdir()
    addr = str(workdir / "shop.sock")  # the vassal binds it itself: no port number to race for
    ini = vassals / "shop.ini"
    ini.write_text(f"[uwsgi]\nchdir = {apps}\nmodule = shop:application\nhttp = {addr}\nreload-check-url = /\n")
    emperor = spawn("--emperor", str(vassals), "--emperor-freq", "1")
    wait_for(lambda: http_request(addr)[2] == b"v1", timeout=15, message="vassal serving")
    views.write_text("def page(path):\n    return '200 OK', b'v2'\n  syntax error here\n")
    later = ini.stat().st_mtime + 2
    os.utime(ini, (later, later))
    emperor.wait_log("reload aborted", timeout=20)
    assert "reload check: GET / answered 500" in emperor.log()
    assert http_request(addr)[2] == b"v1"
