"""The reload check's trial worker: the new generation boots once, and answers, before a HUP commits.

The HUP check (cli's --check-config with the master's handover) loads the new configuration and
app and binds what the new master would bind. Then, here, it forks one real worker of the
configured class on a private UNIX socket, exactly as the master forks its workers: its boot
(--lazy-apps import, gevent patching, the ASGI lifespan startup) must succeed, and every
--reload-check-url must answer 2xx or 3xx. Only then does the master re-execute. What fails here
fails while the old master image and its workers still run untouched: the reload is refused and
nothing else changes. This catches what an import cannot, such as a Django URLconf or view module
that is imported on the first request.
"""

from __future__ import annotations

import http.client
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from zergserve import exitcodes, sockets
from zergserve.config import Config
from zergserve.parent_death import die_with_parent
from zergserve.log import logger
from zergserve.master import fork_worker
from zergserve.scoreboard import Scoreboard
from zergserve.workers import cores
from zergserve.workers.base import Worker


def run(cfg: Config, app: Any, worker_class: type[Worker]) -> int:
    """Boot the trial worker (on `app`, or loading it itself when None: --lazy-apps), ask it the
    check URLs, stop it; 0 when the reload may go on."""
    deadline = time.monotonic() + max(cfg.worker_reload_mercy, 1)
    tmp = tempfile.mkdtemp(prefix="zergserve-check-")
    listener = sockets.bind(os.path.join(tmp, "trial.sock"), "http", 16)
    scoreboard = Scoreboard(1, cores=cores(cfg))
    scoreboard.reset(1, 0)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    check_pid = os.getpid()
    pid = fork_worker(worker_class, 1, cfg, [listener], app, scoreboard, [ready_r],
                      ready_w, child_setup=lambda: die_with_parent(check_pid))
    os.close(ready_w)
    pidfd = os.pidfd_open(pid)
    logger.info("reload check: trial worker (pid %d) booting the new app on a private socket", pid)
    code: int | None = None
    try:
        code = _wait_ready(pid, ready_r, pidfd, deadline)
        if code is not None:
            what = {exitcodes.APP_LOAD_ERROR: "load the app", exitcodes.BOOT_ERROR: "boot"}.get(code, "start")
            logger.error("reload check: the trial worker could not %s (exit %d)", what, code)
            return code or exitcodes.BOOT_ERROR
        for url in cfg.reload_check_url:
            if not _answers(listener.name, url, deadline):
                return exitcodes.CHECK_URL
        return 0
    finally:
        if code is None:
            _stop(pid, pidfd, deadline)
        os.close(pidfd)
        os.close(ready_r)
        sockets.close_listener(listener, vacuum=True)
        scoreboard.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(pid: int, ready_r: int, pidfd: int, deadline: float) -> int | None:
    """None once the worker says it accepts; its exit code if it exits first (or 1 past the deadline)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            logger.error("reload check: the trial worker is not ready in time (worker-reload-mercy)")
            _kill_wait(pid)
            return 1
        readable, _, _ = select.select([ready_r, pidfd], [], [], left)
        if ready_r in readable and os.read(ready_r, 1):
            return None
        if readable:
            return _kill_wait(pid)


def _answers(path: str, url: str, deadline: float) -> bool:
    """GET `url` (a path, or http://HOST/PATH for its Host header) from the trial worker."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _UnixHTTPConnection(path, parts.netloc or "localhost", max(deadline - time.monotonic(), 0.1))
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        logger.error("reload check: GET %s failed: %s", url, exc)
        return False
    finally:
        conn.close()
    if 200 <= status < 400:
        logger.info("reload check: GET %s answered %d", url, status)
        return True
    logger.error("reload check: GET %s answered %d, not 2xx or 3xx", url, status)
    return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, host: str, timeout: float) -> None:
        super().__init__(host, timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _stop(pid: int, pidfd: int, deadline: float) -> None:
    """A graceful stop (the ASGI lifespan shutdown runs), killed if it outlives the deadline."""
    os.kill(pid, signal.SIGTERM)
    select.select([pidfd], [], [], max(deadline - time.monotonic(), 1.0))
    _kill_wait(pid)


def _kill_wait(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
