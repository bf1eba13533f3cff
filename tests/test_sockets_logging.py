"""Socket addresses (abstract, fd://, systemd, IPv6, chmod), logging, process titles and fd hygiene."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APPS, ROOT, bound, fetch, http_request, raw, wait_for
from zergserve import sockets
from zergserve.protocols.uwsgi import encode_packet


def test_parse_address_forms():
    assert sockets.parse_address(":3031") == (socket.AF_INET, ("0.0.0.0", 3031))
    assert sockets.parse_address("127.0.0.1:80") == (socket.AF_INET, ("127.0.0.1", 80))
    assert sockets.parse_address("[::1]:80") == (socket.AF_INET6, ("::1", 80, 0, 0))
    assert sockets.parse_address("/run/a.sock") == (socket.AF_UNIX, "/run/a.sock")
    assert sockets.parse_address("@zerg") == (socket.AF_UNIX, "\0zerg\0")  # uWSGI's trailing NUL
    for bad in ("", "127.0.0.1:http", "1.2.3.4:70000", "[::1]80", "@"):
        with pytest.raises(sockets.AddressError):
            sockets.parse_address(bad)


def test_abstract_socket_reachable_with_uwsgi_spelling(spawn):
    name = f"zs-test-{os.getpid()}-{time.monotonic_ns()}"
    server = spawn("--module", "echo:application", "--socket", f"@{name}")
    packet = encode_packet({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"})

    def ask() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect("\0" + name + "\0")
            sock.sendall(packet)
            return sock.recv(4096)

    assert wait_for(ask).startswith(b"HTTP/1.1 200 OK")
    assert server.proc.poll() is None


def test_ipv6_and_chmod_socket(spawn, workdir):
    sock_path = workdir / "m.sock"
    try:
        # zergserve binds both itself, that is what is tested (--chmod-socket on the file it creates,
        # IPV6_V6ONLY on [::1]): a port free on ::1 itself a moment ago, not on 127.0.0.1
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        has_v6 = True
    except OSError:
        has_v6 = False
    args = ["--module", "echo:application", "--http", str(sock_path), "--chmod-socket=660"]
    if has_v6:
        args += ["--http", f"[::1]:{port}"]
    server = spawn(*args, wait=str(sock_path))
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    if has_v6:
        server.wait_log(f"http socket [::1]:{port} ")  # bound after the UNIX one that answered
        with socket.create_connection(("::1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 200")


def test_tcp_sockets_defer_accept():
    """TCP_DEFER_ACCEPT on TCP listeners zergserve binds, one --socket-timeout long as in uWSGI;
    --no-defer-accept (0) leaves it off; a UNIX socket has no such option and is left alone."""
    assert sockets.defer_accept_seconds(4.0) == 4
    assert sockets.defer_accept_seconds(0.5) == 1
    assert sockets.defer_accept_seconds(4.0, enabled=False) == 0
    deferred = sockets.bind("127.0.0.1:0", "http", defer_accept=4)
    plain = sockets.bind("127.0.0.1:0", "http")
    try:
        assert deferred.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
        assert plain.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0
        sockets.set_defer_accept(deferred, 0)  # a reload with --no-defer-accept
        assert deferred.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0
    finally:
        deferred.sock.close()
        plain.sock.close()


def test_silent_tcp_client_does_not_hold_a_sync_worker(spawn, workdir):
    """One sync worker, a client that connects and says nothing, and a long --http-timeout: the
    kernel keeps the silent connection from accept(), so the next client is served meanwhile
    (without the defer, the worker would sit in its read for the whole minute)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = spawn("--module", "echo:application", "-p", "1", "--http-timeout", "60",
                   "--http", str(workdir / "up.sock"), "--http", f"127.0.0.1:{port}", wait=str(workdir / "up.sock"))
    server.wait_log(f"http socket 127.0.0.1:{port} ")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        assert http_request(f"127.0.0.1:{port}", timeout=20)[0] == 200


def test_fd_and_systemd_activation(workdir):
    """A listening socket passed as fd 3 with LISTEN_FDS/LISTEN_PID, as systemd does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(10)
    port = listener.getsockname()[1]
    code = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'zergserve', '--module', 'echo:application'])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(listener.fileno())], pass_fds=[listener.fileno()],
                            env=env, cwd=workdir, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    listener.close()
    try:
        assert wait_for(lambda: http_request(f"127.0.0.1:{port}")[0] == 200)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("flagged", [False, True], ids=["unflagged-http", "socket-fd-uwsgi"])
def test_systemd_socket_survives_hup(workdir, flagged):
    """After any number of HUPs an activated fd is still one listener with its protocol: the
    re-executed master takes it back from the previous image instead of closing it as unconfigured
    (unflagged) or wrapping it a second time as HTTP (`--socket fd://3`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(10)
    port = listener.getsockname()[1]
    http = bound()
    http_addr = http.addr
    stats = str(workdir / "stats.sock")
    extra = ["--socket", "fd://3", "--http", http.arg] if flagged else []
    argv = ["-m", "zergserve", "--module", "echo:application", "-p", "2", "--stats", stats,
            "--worker-reload-mercy", "5", *extra]
    code = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        f"os.execv(sys.executable, [sys.executable, *{argv!r}])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    log = workdir / "zs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(listener.fileno())],
                                pass_fds=[listener.fileno(), http.fd], env=env, cwd=workdir,
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    listener.close()
    http.close()
    packet = encode_packet({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"})

    def activated_answers() -> bool:
        if flagged:
            return raw(f"127.0.0.1:{port}", packet).startswith(b"HTTP/1.1 200 OK")
        return http_request(f"127.0.0.1:{port}")[0] == 200

    def pids() -> set[int]:
        return {w["pid"] for w in fetch(stats)["workers"] if w["pid"] and w["status"] == "idle"}

    expected = sorted([("fd://3", "uwsgi"), (http.arg, "http")] if flagged else [("fd://3", "http")])
    try:
        wait_for(activated_answers, message="activated socket answering")
        for _ in range(2):
            before = wait_for(lambda: len(pids()) == 2 and pids(), message="2 idle workers")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: len(pids()) == 2 and not pids() & before, timeout=15, message="workers replaced")
            for _ in range(4):
                assert activated_answers()
            if flagged:
                assert http_request(http_addr)[0] == 200
            doc = fetch(stats)
            assert sorted((s["name"], s["proto"]) for s in doc["sockets"]) == expected
            assert doc["pid"] == proc.pid
            assert not inheritable(proc.pid, 3)  # close-on-exec again once the new image adopted it
        assert "Traceback" not in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        print(log.read_text())


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_passed_fd_survives_hup(spawn, workdir, kind):
    """A listener handed in as fd://N, whose only holder is the server (the test's copy is closed),
    is the same socket after HUPs: each re-executed master image takes it back under its name, and
    its address answers after every reload."""
    listener = bound(workdir / "h.sock" if kind == "unix" else None)
    stats = str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", listener.arg, "-p", "2", "--stats", stats,
                   "--worker-reload-mercy", "5", wait=listener.addr)
    assert listener.sock.fileno() == -1  # handed over: nothing but zergserve holds it now

    def idle_pids() -> set[int]:
        return {w["pid"] for w in fetch(stats)["workers"] if w["pid"] and w["status"] == "idle"}

    socket_inode = os.readlink(f"/proc/{server.pid}/fd/{listener.fd}")
    assert socket_inode.startswith("socket:")
    for reload in (1, 2):
        before = wait_for(lambda: len(idle_pids()) == 2 and idle_pids(), message="2 idle workers")
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.log().count("re-executing the master") == reload, timeout=15,
                 message=f"re-exec {reload}")
        wait_for(lambda: len(idle_pids()) == 2 and not idle_pids() & before, timeout=15, message="workers replaced")
        assert http_request(listener.addr)[0] == 200
        assert os.readlink(f"/proc/{server.pid}/fd/{listener.fd}") == socket_inode
        doc = fetch(stats)
        assert [(s["name"], s["proto"]) for s in doc["sockets"]] == [(listener.arg, "http")]
        assert doc["pid"] == server.pid
    assert "Traceback" not in server.log()


def inheritable(pid: int, fd: int) -> bool:
    """Whether `fd` of `pid` lacks close-on-exec (a program that process execs would inherit it)."""
    flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
    return not int(flags, 8) & os.O_CLOEXEC


def test_passed_fd_is_close_on_exec_in_master_and_workers(spawn, workdir):
    """Like every other fd of the master and the workers (test_c35), a listener handed in is
    close-on-exec once adopted: the flag pass_fds set for the hand-over does not stay, in the first
    master image nor in the one a HUP re-executes (which needs it inheritable across its exec)."""
    listener = bound()
    stats = str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", listener.arg, "-p", "1", "--stats", stats,
                   wait=listener.addr)
    for reload in (0, 1):
        if reload:
            server.signal(signal.SIGHUP)
            wait_for(lambda: server.log().count("re-executing the master") == reload, timeout=15,
                     message="re-exec")
            wait_for(lambda: (row := fetch(stats)["workers"][0])["pid"] not in (0, *workers)
                     and row["status"] == "idle", timeout=15, message="the worker replaced")
        assert http_request(listener.addr)[0] == 200
        workers = [fetch(stats)["workers"][0]["pid"]]  # the serving worker: an old one may be leaving
        for pid in [server.pid, *workers]:
            assert not inheritable(pid, listener.fd), f"fd {listener.fd} of pid {pid} is inheritable"


def test_access_log_line_and_injection(spawn, workdir):
    listener = bound()
    addr = listener.addr
    logfile = workdir / "out.log"
    spawn("--module", "echo:application", "--http", listener.arg, "--logto", str(logfile), wait=addr)
    http_request(addr, "GET", "/?x=1")
    raw(addr, b"GET /%0d%0afake\x1b[31m HTTP/1.1\r\nHost: a\r\n\r\n")
    raw(addr, b"GET /a%0d%0aFAKE-LINE HTTP/1.1\r\nHost: a\r\n\r\n")
    http_request(addr, "GET", "/stderr")
    text = wait_for(lambda: "app says hello" in logfile.read_text() and logfile.read_text())
    lines = [line for line in text.splitlines() if '"GET ' in line]
    assert any('"GET /?x=1 HTTP/1.1" 200 5 ' in line and line.rstrip().endswith(("w1",)) for line in lines), lines
    assert not any(line.startswith("FAKE-LINE") for line in text.splitlines())
    assert "\x1b" not in text


def test_disable_logging(spawn, workdir):
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "echo:application", "--http", listener.arg, "--disable-logging", wait=addr)
    http_request(addr)
    http_request(addr, "GET", "/crash")
    server.wait_log("boom from the test app")  # errors are always logged
    assert '"GET / HTTP/1.1"' not in server.log()


def test_process_titles_and_usr1(spawn, workdir):
    listener = bound()
    server = spawn("--module", "echo:application", "--http", listener.arg, "-p", "2", "--procname-prefix", "demo-",
                   wait=listener.addr)
    wait_for(lambda: len(server.worker_pids()) == 2)
    title = Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    assert title.startswith(b"demo-zergserve master")
    def titles() -> list[bytes]:
        return sorted(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
                      for pid in server.worker_pids())

    wait_for(lambda: titles() == [b"demo-zergserve worker 1 [echo]", b"demo-zergserve worker 2 [echo]"],
             message="worker titles")
    server.signal(signal.SIGUSR1)
    server.wait_log("worker 2 pid")


def test_worker_holds_only_its_own_epoll(spawn, workdir):
    """The master's selector is closed in the forked worker, which waits on its own poller only."""
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "echo:application", "--http", listener.arg, "--stats", str(workdir / "s.sock"),
                   wait=addr)
    (worker,) = wait_for(lambda: len(server.worker_pids()) == 1 and server.worker_pids())

    def epolls() -> int:
        fds = Path(f"/proc/{worker}/fd")
        return sum(os.readlink(fds / fd) == "anon_inode:[eventpoll]" for fd in os.listdir(fds))

    assert http_request(addr)[0] == 200  # the worker is in its loop
    assert epolls() == 1


def test_no_fd_leak_across_reloads(spawn, workdir):
    listener = bound()
    addr = listener.addr
    stats = str(workdir / "s.sock")
    server = spawn("--module", "echo:application", "--http", listener.arg, "--stats", stats, wait=addr)

    def fds() -> list[str]:
        """What each of the master's descriptors is (sorted, numbers left out: a re-exec renumbers)."""
        inventory = []
        for fd in os.listdir(f"/proc/{server.pid}/fd"):
            try:
                inventory.append(re.sub(r"\[\d+\]", "[]", os.readlink(f"/proc/{server.pid}/fd/{fd}")))
            except FileNotFoundError:
                pass
        return sorted(inventory)

    # Settled first: the worker has reported ready (a forked child shows in /proc before the master is
    # done with what it set up for it).
    wait_for(lambda: [w["status"] for w in fetch(stats)["workers"]] == ["idle"], message="the worker idle")
    before = fds()
    for _ in range(3):
        old = set(server.worker_pids())
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.worker_pids() and not set(server.worker_pids()) & old, timeout=20)
        assert http_request(addr)[0] == 200
    try:
        wait_for(lambda: fds() == before, message="the master's descriptors as before")
    except AssertionError:
        assert fds() == before
