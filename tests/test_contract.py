"""Request behaviour every worker class owes its clients, one test run per class (sync, gevent,
asyncio), over both protocols where it applies. Real processes on UNIX sockets."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from conftest import connect, free_port, http_request, wait_for
from zergserve.protocols.uwsgi import encode_packet
from zergserve.stats import fetch

WORKERS = ("sync", "gevent", "asyncio")
BIG = {"sync": "/big?size=%d", "gevent": "/big?size=%d", "asyncio": "/bigstream?size=%d"}


def start(worker: str, spawn, workdir, *extra: str):
    """One worker of `worker`'s class serving HTTP and uwsgi on UNIX sockets."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    module = "asgi_app:application" if worker == "asyncio" else "echo:application"
    http, usock, stats = (str(workdir / name) for name in ("http.sock", "app.sock", "stats.sock"))
    server = spawn("--module", module, "--worker", worker, "--http", http, "--socket", usock, "-p", "1",
                   "--stats", stats, "--worker-reload-mercy", "5", *extra, wait=http)
    server.addr, server.usock, server.stats = http, usock, stats
    wait_for(lambda: all(w["status"] == "idle" for w in fetch(stats)["workers"]), message="workers idle")
    return server


def trickle_until_answered(sock: socket.socket, data: bytes, every: float) -> tuple[bytes, int]:
    """Send `data` one byte every `every` seconds until the server answers (or closes): the answer
    and how many bytes had been sent by then."""
    sock.setblocking(False)
    reply = b""
    for sent, byte in enumerate(data):
        try:
            sock.send(bytes((byte,)))
        except (BrokenPipeError, ConnectionResetError):
            return reply, sent
        deadline = time.monotonic() + every
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            except ConnectionResetError:
                return reply, sent
            if not chunk:
                return reply, sent
            reply += chunk
        if reply:
            return reply, sent
    return reply, len(data)


# --- item 3: a request body's duration is bounded -------------------------------------------------

@pytest.mark.parametrize("proto", ("http", "uwsgi"))
@pytest.mark.parametrize("worker", WORKERS)
def test_trickled_body_is_cut_with_a_408(worker, proto, spawn, workdir):
    """A body at 5 bytes/s against --body-timeout 1 and --body-min-rate 500: a 408 long before
    the 200 bytes are in, although no single read waits --socket-timeout."""
    server = start(worker, spawn, workdir, "--body-timeout", "1", "--body-min-rate", "500",
                   "--socket-timeout", "5")
    body = b"x" * 200
    with connect(server.addr if proto == "http" else server.usock, timeout=30) as sock:
        if proto == "http":
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n")
        else:
            sock.sendall(encode_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/echo", "REQUEST_URI": "/echo",
                                        "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "200"}))
        reply, sent = trickle_until_answered(sock, body, 0.2)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert sent < 100, sent  # cut near 1 s (5 bytes), not after the whole 40 s trickle
    server.wait_log('"POST /echo HTTP/1.1" 408 ')
    assert http_request(server.addr)[0] == 200  # the worker is free again


# --- item 3: a response to a client that reads slowly is bounded too ------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_client_that_never_reads_frees_the_worker(worker, spawn, workdir):
    server = start(worker, spawn, workdir, "--socket-timeout", "1")
    with connect(server.addr, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET " + (BIG[worker] % 50_000_000).encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        server.wait_log("client took", timeout=20)
        wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="worker idle")
        assert http_request(server.addr)[0] == 200


@pytest.mark.parametrize("worker", WORKERS)
def test_client_reading_below_send_min_rate_is_dropped(worker, spawn, workdir):
    """A client that takes 4 KB every 0.1 s (about 40 KB/s) against --send-min-rate 1000000."""
    server = start(worker, spawn, workdir, "--socket-timeout", "1", "--send-min-rate", "1000000")
    with connect(server.addr, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET " + (BIG[worker] % 50_000_000).encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        got = 0
        while "client took" not in server.log():
            data = sock.recv(4096)
            assert data, "connection closed without the log line"
            got += len(data)
            assert got < 40_000_000, "the whole body went out at a rate under --send-min-rate"
            time.sleep(0.1)
    assert http_request(server.addr)[0] == 200


# --- item 5: a worker notices a dead master at once ----------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_master_killed_while_a_worker_holds_a_request(worker, spawn, workdir):
    """kill -9 of the master: its worker, busy in a long request, gives up the listening socket
    at once (a new master binds the same address) and is gone within --worker-reload-mercy."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    module = "asgi_app:application" if worker == "asyncio" else "echo:application"
    addr = f"127.0.0.1:{free_port()}"
    args = ("--module", module, "--worker", worker, "--http", addr, "-p", "1", "--worker-reload-mercy", "6")
    stats = str(workdir / "stats.sock")
    server = spawn(*args, "--stats", stats, wait=addr)
    held = connect(addr, timeout=30)
    held.sendall(b"GET /sleep?s=60 HTTP/1.1\r\nHost: h\r\n\r\n")
    (row,) = wait_for(lambda: [w for w in fetch(stats)["workers"] if w["status"] == "busy"],
                      message="the worker busy with the request")
    pid = row["pid"]
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: not listening_fds(pid), timeout=5, message="the worker closed its listening socket")
    assert not _zombie(pid), "the worker closed its socket only by exiting"
    again = spawn(*args, wait=addr)
    assert http_request(addr)[0] == 200
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=15,
             message="the orphaned worker exited within its mercy")
    held.close()
    again.kill()


def listening_fds(pid: int) -> list[str]:
    """The worker's sockets that are in LISTEN state (TCP, from /proc/net/tcp); OSError once it is gone."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    inodes.add(fields[9])
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            found.append(fd)
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
