"""The server's own log lines never depend on the app's logging configuration (issue 12, item 1).

The apps configure logging as Flask's and Django's documentation show (`dictConfig` without
`disable_existing_loggers: False`, which disables every logger that exists already), in every mode:
preloaded, --lazy-apps, each worker class, a vassal under the emperor, a zerg."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from conftest import APPS, http_request, wait_for

MODES = {
    "preloaded-flask": ("flask_logging:application",),
    "lazy-django": ("django_logging:application", "--lazy-apps"),
    "gevent-flask": ("flask_logging:application", "--worker", "gevent"),
    "asyncio-django": ("django_logging:asgi", "--worker", "asyncio"),
}


def ask(addr: str, path: str) -> int:
    try:
        return http_request(addr, "GET", path, timeout=10)[0]
    except (OSError, ConnectionError):
        return 0  # the worker died under the request (harakiri, kill -9)


@pytest.mark.parametrize("mode", MODES)
def test_server_lines_survive_the_apps_logging_config(spawn, workdir, mode):
    module, *extra = MODES[mode]
    addr = str(workdir / "http.sock")
    server = spawn("--module", module, "--http", addr, "-p", "2", "--harakiri", "1", *extra, wait=addr)
    server.wait_log("spawned worker 2")
    server.wait_log("zergserve ")  # the startup line naming the version, the pid and the workers
    assert ask(addr, "/") == 200
    server.wait_log("app logging still works")  # the app's own logging does as it was told
    assert ask(addr, "/crash") == 500
    server.wait_log("boom from the logging app")  # a worker's error line
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(f"(pid {victim}) killed by signal 9")
    wait_for(lambda: len(server.worker_pids()) == 2, message="respawned worker")
    with socket.socket(socket.AF_UNIX) as sock:  # a stuck request, left in flight
        sock.connect(addr)
        sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_log("HARAKIRI ON WORKER", timeout=15)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    log = server.log()
    assert "graceful shutdown" in log and "exiting (code 0)" in log, log


def test_reload_aborted_is_logged_after_the_app_configured_logging(spawn, workdir):
    """A HUP into a syntax error: the log says the reload was aborted (it used to be empty)."""
    (workdir / "shop.py").write_text((APPS / "flask_logging.py").read_text())
    addr = str(workdir / "http.sock")
    server = spawn("--module", "shop:application", "--http", addr, wait=addr)
    # The socket listens before the app is imported: break the file only once the app serves.
    wait_for(lambda: ask(addr, "/") == 200, message="the app serving")
    (workdir / "shop.py").write_text("def broken(:\n")
    server.signal(signal.SIGHUP)
    server.wait_log("reload aborted")
    assert ask(addr, "/") == 200  # the old workers keep serving


def test_vassal_lines_survive_the_apps_logging_config(spawn, workdir):
    vassals = workdir / "vassals"
    vassals.mkdir()
    addr = str(workdir / "v.sock")
    (vassals / "shop.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = django_logging:application\n"
                                      f"http = {addr}\n")
    server = spawn("--emperor", str(vassals), "--emperor-freq", "1")
    wait_for(lambda: ask(addr, "/") == 200, timeout=20, message="the vassal answering")
    victim = int(http_request(addr, "GET", "/")[2])
    os.kill(victim, signal.SIGKILL)
    server.wait_log(f"(pid {victim}) killed by signal 9")


def test_zerg_lines_survive_the_apps_logging_config(spawn, workdir):
    addr = str(workdir / "http.sock")
    zsock = str(workdir / "zerg.sock")
    spawn("--module", "echo:application", "--http", addr, "--zerg-server", zsock, wait=addr)
    zerg = spawn("--module", "flask_logging:application", "--zerg", zsock)
    zerg.wait_log("spawned worker 1")
    (worker,) = wait_for(lambda: zerg.worker_pids(), message="the zerg's worker")
    os.kill(worker, signal.SIGKILL)
    zerg.wait_log(f"(pid {worker}) killed by signal 9")
