"""--touch-reload, --touch-workers-reload, --fs-reload and --py-autoreload (gunicorn's --reload): each
waits on log lines and new worker pids, never on time."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import http_request, wait_for

APP_V1 = '''
import os

def application(environ, start_response):
    body = ("v1 %d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def get(addr: str) -> str:
    status, _, body = http_request(addr, "GET", "/")
    assert status == 200, body
    return body.decode()


def bump(path: Path) -> None:
    """A new modification time, whatever the file system's timestamp granularity."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def start(spawn, workdir: Path, *extra: str):
    (workdir / "liveapp.py").write_text(APP_V1)
    sock = str(workdir / "app.sock")
    server = spawn("--module", "liveapp:application", "--http", sock, "-p", "2", "--check-interval", "0.2",
                   *extra, wait=sock)
    server.wait_log(" worker(s)")  # the master's loop runs: what it watches has its reference times
    # Both forked (the line above comes first): the tests compare later generations with these pids.
    wait_for(lambda: len(server.worker_pids()) == 2, message="both workers forked")
    return server, sock


def test_touch_reload_is_the_checked_graceful_reload(spawn, workdir):
    first, second = workdir / "a.trigger", workdir / "b.trigger"
    first.touch()
    second.touch()
    server, sock = start(spawn, workdir, "--touch-reload", str(first), "--touch-reload", str(second))
    old = set(server.worker_pids())
    bump(second)
    server.wait_log(f"touch-reload: {second} changed")
    server.wait_log("re-executing the master")
    server.wait_log("new workers ready")  # the re-executed master has loaded the app: it may change now
    wait_for(lambda: old.isdisjoint(server.worker_pids()) and len(server.worker_pids()) == 2,
             message="a new generation of workers")
    assert get(sock).startswith("v1 ")
    # a broken app is refused by the check: the old workers keep serving
    (workdir / "liveapp.py").write_text("raise RuntimeError('broken on purpose')\n")
    current = set(server.worker_pids())
    bump(first)
    server.wait_log("reload aborted")
    assert get(sock).startswith("v1 ") and set(server.worker_pids()) == current


def test_touch_workers_reload_recycles_workers_only(spawn, workdir):
    trigger = workdir / "workers.trigger"
    trigger.touch()
    server, sock = start(spawn, workdir, "--touch-workers-reload", str(trigger))
    old = set(server.worker_pids())
    bump(trigger)
    server.wait_log("touch-workers-reload, recycling it")
    wait_for(lambda: old.isdisjoint(server.worker_pids()) and len(server.worker_pids()) == 2,
             message="every worker replaced")
    assert "re-executing the master" not in server.log()
    assert get(sock).startswith("v1 ")


def test_fs_reload_on_a_directory(spawn, workdir):
    watched = workdir / "conf.d"
    watched.mkdir()
    (watched / "existing").write_text("1")
    server, sock = start(spawn, workdir, "--fs-reload", str(watched))
    (watched / "existing").write_text("2")
    server.wait_log(f"fs-reload: {watched} changed")
    server.wait_log("re-executing the master")
    get(sock)


def edit_and_see_v2(server, sock, workdir):
    """Once py-autoreload watches, an edit of the app's file reloads it: v1 serving, then v2."""
    server.wait_log("py-autoreload: watching")
    assert get(sock).startswith("v1 ")
    app = workdir / "liveapp.py"
    app.write_text(APP_V1.replace("v1", "v2"))
    bump(app)
    server.wait_log(f"py-autoreload: {app} changed")
    wait_for(lambda: get(sock).startswith("v2 "), message="the edited app serving")
    return app


def test_py_autoreload_reloads_on_an_edit_of_the_app(spawn, workdir):
    server, sock = start(spawn, workdir, "--reload")  # gunicorn's spelling: --py-autoreload 1
    app = edit_and_see_v2(server, sock, workdir)
    # a syntax error is refused by the check: v2 keeps serving, and fixing it reloads again
    app.write_text("def application(:\n")
    bump(app)
    server.wait_log("reload aborted")
    assert get(sock).startswith("v2 ")
    app.write_text(APP_V1.replace("v1", "v3"))
    bump(app)
    wait_for(lambda: get(sock).startswith("v3 "), message="the fixed app serving")


def test_py_autoreload_with_lazy_apps_watches_the_app_the_workers_import(spawn, workdir):
    server, sock = start(spawn, workdir, "--py-autoreload", "1", "--lazy-apps")
    edit_and_see_v2(server, sock, workdir)
