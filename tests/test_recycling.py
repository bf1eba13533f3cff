"""--reload-on-rss, --evil-reload-on-rss, --max-worker-lifetime(-delta) with real processes and an app
whose memory grows on request."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import http_request, wait_for

CHECK = ("--check-interval", "0.2")


def pid_of(addr: str, path: str = "/") -> int:
    status, _, body = http_request(addr, "GET", path, timeout=30)
    assert status == 200, body
    return int(body)


def in_background(addr: str, path: str) -> tuple[threading.Thread, list]:
    """A request that runs while the test goes on; its (status, body) lands in the list."""
    result: list = []

    def run() -> None:
        try:
            status, _, body = http_request(addr, "GET", path, timeout=30)
            result.append((status, body))
        except OSError as exc:
            result.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("worker", ["sync", "gevent"])
def test_reload_on_rss_lets_the_request_in_hand_finish(spawn, workdir, worker):
    if worker == "gevent":
        pytest.importorskip("gevent")
    sock = str(workdir / "app.sock")
    release = workdir / "release"
    server = spawn("--module", "memory:application", "--http", sock, "-p", "1", "--worker", worker,
                   "--reload-on-rss", "120", *CHECK, wait=sock)
    first = pid_of(sock)
    thread, result = in_background(sock, f"/grow?mb=200&wait={release}")
    server.wait_log(f"worker 1 (pid {first}): reload-on-rss: RSS")
    release.touch()
    thread.join(30)
    assert result == [(200, str(first).encode())]  # the request in hand finished, in the old worker
    wait_for(lambda: pid_of(sock) != first, message="a fresh worker")
    assert "killed by signal" not in server.log()


def test_evil_reload_on_rss_kills_mid_request(spawn, workdir):
    sock = str(workdir / "app.sock")
    server = spawn("--module", "memory:application", "--http", sock, "-p", "1", "--evil-reload-on-rss", "120",
                   *CHECK, wait=sock)
    first = pid_of(sock)
    thread, result = in_background(sock, f"/grow?mb=200&wait={workdir / 'never'}")
    server.wait_log(f"EVIL RELOAD ON WORKER 1 (pid {first})")
    thread.join(30)
    assert result and isinstance(result[0], OSError)  # cut off, as uWSGI's evil reload does
    second = wait_for(lambda: pid_of(sock) != first and pid_of(sock), message="respawned worker")
    assert second != first


def test_max_worker_lifetime_with_delta(spawn, workdir):
    sock = str(workdir / "app.sock")
    server = spawn("--module", "memory:application", "--http", sock, "-p", "2", "--max-worker-lifetime", "1",
                   "--max-worker-lifetime-delta", "3", *CHECK, wait=sock)
    log = server.wait_log("(limit 4)")
    # worker 1 (limit 1 s) was recycled before worker 2 (limit 4 s) ever was: they do not go together
    assert "worker 1 (pid" in log[:log.index("(limit 4)")] and "(limit 1)" in log[:log.index("(limit 4)")]
    wait_for(lambda: pid_of(sock), message="still serving")


def test_max_worker_lifetime_waits_for_the_request_in_hand(spawn, workdir):
    sock = str(workdir / "app.sock")
    release = workdir / "release"
    server = spawn("--module", "memory:application", "--http", sock, "-p", "1", "--max-worker-lifetime", "1",
                   *CHECK, wait=sock)
    thread, result = in_background(sock, f"/grow?mb=1&wait={release}")
    held = Path(f"{release}.held")
    holder = int(wait_for(lambda: held.exists() and held.read_text(), message="request in hand"))
    server.wait_log(f"worker 1 (pid {holder}): max-worker-lifetime")
    release.touch()
    thread.join(30)
    assert result == [(200, str(holder).encode())]
    wait_for(lambda: pid_of(sock) != holder, message="a fresh worker")
