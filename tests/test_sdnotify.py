"""systemd's notify protocol (issue 12, item 3): real datagrams read from a real AF_UNIX SOCK_DGRAM
socket given as NOTIFY_SOCKET (a path, and the abstract namespace), with the sender's pid from
SCM_CREDENTIALS: only the master (or the emperor) speaks, READY=1 once per start or reload."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import pytest

from conftest import APPS, http_request, wait_for


class NotifySocket:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.address = address

    def next(self, timeout: float = 15.0) -> tuple[int, dict[str, str]]:
        """The next datagram: (sender pid, its fields)."""
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return pid, dict(line.split("=", 1) for line in data.decode().splitlines())

    def until(self, key: str, timeout: float = 15.0) -> list[tuple[int, dict[str, str]]]:
        """Every datagram up to and including the first one that carries `key`."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            seen.append(self.next(max(0.1, deadline - time.monotonic())))
            if key in seen[-1][1]:
                return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(workdir):
    sock = NotifySocket(str(workdir / "notify.sock"))
    yield sock
    sock.close()


def test_ready_reload_stopping_from_the_master(spawn, workdir, notify):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr, "-p", "2",
                   env={"NOTIFY_SOCKET": notify.address})
    (pid, ready), = notify.until("READY")
    assert pid == server.pid and ready["READY"] == "1" and "2 sync worker(s)" in ready["STATUS"]
    assert http_request(addr, timeout=2)[0] == 200  # workers accept once READY=1 is out
    assert "NOTIFY_SOCKET" not in http_request(addr, "GET", "/osenv")[2].decode()  # the app never sees it

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    server.signal(signal.SIGHUP)
    messages = notify.until("READY", timeout=30)
    assert [list(fields)[0] for _, fields in messages] == ["RELOADING", "READY"], messages
    assert {pid for pid, _ in messages} == {server.pid}  # same pid across the re-exec; no worker, no check
    assert int(messages[0][1]["MONOTONIC_USEC"]) >= before
    server.wait_log("new workers ready")
    assert http_request(addr)[0] == 200

    server.signal(signal.SIGTERM)
    messages = notify.until("STOPPING")
    assert [list(fields)[0] for _, fields in messages] == ["STOPPING"], messages  # no second READY
    assert server.wait_exit() == 0


def test_failed_reload_is_ready_again_at_once(spawn, workdir, notify):
    (workdir / "shop.py").write_text((APPS / "echo.py").read_text())
    addr = str(workdir / "h.sock")
    server = spawn("--module", "shop:application", "--http", addr, env={"NOTIFY_SOCKET": notify.address})
    notify.until("READY")
    (workdir / "shop.py").write_text("def broken(:\n")
    server.signal(signal.SIGHUP)
    messages = notify.until("READY", timeout=30)
    assert [list(fields)[0] for _, fields in messages] == ["RELOADING", "READY"], messages
    assert "reload aborted" in messages[-1][1]["STATUS"]


def test_abstract_socket_and_watchdog(spawn, workdir):
    notify = NotifySocket(f"@zergserve-test-{os.getpid()}-{workdir.name}")
    try:
        addr = str(workdir / "h.sock")
        server = spawn("--module", "echo:application", "--http", addr,
                       env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"})
        notify.until("READY")
        pings = [notify.until("WATCHDOG")[-1] for _ in range(3)]
        assert all(pid == server.pid and fields == {"WATCHDOG": "1"} for pid, fields in pings)
        server.signal(signal.SIGHUP)  # the re-executed master goes on pinging
        notify.until("READY", timeout=30)
        assert notify.until("WATCHDOG")[-1][0] == server.pid
    finally:
        notify.close()


def test_watchdog_for_another_pid_is_ignored(spawn, workdir, notify):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr,
                   env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    notify.until("READY")
    server.signal(signal.SIGTERM)
    assert [list(fields)[0] for _, fields in notify.until("STOPPING")] == ["STOPPING"]


def test_emperor_notifies_and_vassals_do_not(spawn, workdir, notify):
    vassals = workdir / "vassals"
    vassals.mkdir()
    addr = str(workdir / "v.sock")
    (vassals / "shop.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n")
    emperor = spawn("--emperor", str(vassals), "--emperor-freq", "1", env={"NOTIFY_SOCKET": notify.address})
    (pid, ready), = notify.until("READY")
    assert pid == emperor.pid and ready["STATUS"].startswith("1 vassal(s)")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=20, message="the vassal answering")
    assert "NOTIFY_SOCKET" not in http_request(addr, "GET", "/osenv")[2].decode()
    emperor.signal(signal.SIGTERM)
    messages = notify.until("STOPPING")
    assert {pid for pid, _ in messages} == {emperor.pid}


def test_zergpool_notifies(spawn, workdir, notify):
    pool = spawn("--zergpool", f"{workdir / 'pool.sock'}:{workdir / 'p.sock'}", env={"NOTIFY_SOCKET": notify.address})
    (pid, ready), = notify.until("READY")
    assert pid == pool.pid and "1 socket(s)" in ready["STATUS"]
    pool.signal(signal.SIGTERM)
    assert [(pid, list(fields)[0]) for pid, fields in notify.until("STOPPING")] == [(pool.pid, "STOPPING")]


def test_missing_notify_socket_is_logged_once_and_serving_goes_on(spawn, workdir):
    addr = str(workdir / "h.sock")
    server = spawn("--module", "echo:application", "--http", addr,
                   env={"NOTIFY_SOCKET": str(workdir / "gone.sock"), "WATCHDOG_USEC": "100000"}, wait=addr)
    server.wait_log("sd_notify to ")
    assert http_request(addr)[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert server.log().count("sd_notify to ") == 1
