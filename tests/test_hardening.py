"""Reliability checks (research/reliability.md §5.2 C24–C27, §1.1/§1.5 smuggling) against the
many-connections-per-process workers, gevent (WSGI, echo app) and asyncio (ASGI, asgi_app), as
real processes attacked from the outside."""

from __future__ import annotations

import os
import selectors
import socket
import time

import pytest

from conftest import connect, fetch, http_request, recv_all, responses, wait_for
from zergserve.protocols.uwsgi import encode_packet

WORKERS = ("gevent", "asyncio")


def start(worker: str, spawn, workdir, *extra: str, backlog: int = 100):
    if worker == "gevent":
        pytest.importorskip("gevent")
        from test_gevent import start as start_gevent
        return start_gevent(spawn, workdir, *extra, backlog=backlog)
    from test_asgi import start as start_asgi
    return start_asgi(spawn, workdir, *extra, backlog=backlog)


def worker_pid(server) -> int:
    return fetch(server.stats)["workers"][0]["pid"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def tcp_connections(pid: int) -> set[str]:
    """The inodes of the TCP connections (not listeners) process `pid` holds."""
    with open("/proc/net/tcp") as table:
        open_ = {fields[9] for fields in map(str.split, table.readlines()[1:]) if fields[3] != "0A"}
    return socket_inodes(pid) & open_


def settled_fd_count(pid: int) -> int:
    """The worker's fd count once the connections of the start-up checks are gone."""
    wait_for(lambda: not tcp_connections(pid), message="start-up connections closed by the worker")
    return fd_count(pid)


def holds(pid: int, client: socket.socket) -> bool:
    """Whether process `pid` has the server end of the TCP connection `client` open."""
    ours = "%04X" % client.getsockname()[1]
    theirs = "%04X" % client.getpeername()[1]
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":" + theirs) and fields[2].endswith(":" + ours):
                inode = fields[9]
                break
        else:
            return False
    return inode in socket_inodes(pid)


def probe(addr: str) -> float:
    """A normal client, answered 200; when it was answered (compared with when the attack's
    connections were cut, that shows it did not wait for them)."""
    assert http_request(addr, "GET", "/", timeout=5)[0] == 200
    return time.monotonic()


def wait_closed(socks: list[socket.socket], until: float, addr: str,
                every: float = 0.25) -> tuple[dict[int, float], list[float]]:
    """Read every socket until EOF (or reset), probing `addr` meanwhile: index → monotonic close
    time, and when each probe was answered."""
    sel = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, index)
    closed: dict[int, float] = {}
    answered: list[float] = []
    next_probe = 0.0
    while len(closed) < len(socks) and time.monotonic() < until:
        if time.monotonic() >= next_probe:
            answered.append(probe(addr))
            next_probe = time.monotonic() + every
        for key, _ in sel.select(0.05):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[key.data] = time.monotonic()
                sel.unregister(key.fileobj)
    sel.close()
    return closed, answered


# --- C24: slowloris ------------------------------------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_slowloris_heads_are_cut_at_the_absolute_head_deadline(worker, spawn, workdir):
    deadline, count = 2.0, 200
    server = start(worker, spawn, workdir, "--http-timeout", str(deadline), backlog=1024)
    pid = worker_pid(server)
    baseline = settled_fd_count(pid)
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 100
    socks, opened = [], []
    for _ in range(count):
        sock = connect(server.addr)
        sock.sendall(head[:1])
        sock.setblocking(False)
        socks.append(sock)
        opened.append(time.monotonic())
    sel = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ, index)
    closed: dict[int, float] = {}
    pos, tick, answered = 1, time.monotonic(), []
    try:
        while len(closed) < count and time.monotonic() < opened[0] + deadline + 8:
            if time.monotonic() >= tick + 0.5:  # one more byte on every open connection
                tick = time.monotonic()
                for index, sock in enumerate(socks):
                    if index not in closed:
                        try:
                            sock.send(head[pos:pos + 1])
                        except OSError:
                            closed[index] = time.monotonic()
                            sel.unregister(sock)
                pos += 1
                answered.append(probe(server.addr))
            for key, _ in sel.select(0.05):
                try:
                    data = key.fileobj.recv(65536)  # a 408, then EOF
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed[key.data] = time.monotonic()
                    sel.unregister(key.fileobj)
        assert len(closed) == count, f"{count - len(closed)} trickling connections still open"
        # the first probe began after the last connection opened: answered before that one was cut
        assert answered and answered[0] < closed[count - 1], "a normal client waited for the attack to be cut"
        # Cut at the deadline, not before; the time is the point. A byte arrives every 0.5 s, so a
        # deadline that each byte extended would never cut while they trickle: the upper bound only
        # has to be finite, and is generous for a loaded host.
        held = [closed[i] - opened[i] for i in range(count)]
        assert min(held) > deadline - 0.3 and max(held) < deadline + 5, (min(held), max(held))
        probe(server.addr)
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    wait_for(lambda: fd_count(pid) <= baseline, timeout=5, message="worker fds back to baseline")
    assert worker_pid(server) == pid


@pytest.mark.parametrize("worker", WORKERS)
def test_trickles_after_keep_alive_and_on_the_uwsgi_socket_are_cut_at_their_deadline(worker, spawn, workdir):
    """The next head on a kept-alive connection has --keep-alive from the last response, and a
    uwsgi packet --socket-timeout from accept, both absolute: bytes trickling in do not extend them."""
    keep_alive, packet_deadline, count = 1.0, 1.5, 20
    server = start(worker, spawn, workdir, "--keep-alive", str(keep_alive), "--socket-timeout",
                   str(packet_deadline))
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 100
    packet = b"\x00\xff\x0f\x00" + b"\x00" * 200  # announces 4095 bytes of vars
    socks, since, limits = [], [], []
    for index in range(count):
        if index % 2:
            sock = connect(server.usock)
            since.append(time.monotonic())
            limits.append(packet_deadline)
        else:
            sock = connect(server.addr)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            responses(sock, 1)
            since.append(time.monotonic())
            limits.append(keep_alive)
        sock.setblocking(False)
        socks.append(sock)
    closed: dict[int, float] = {}
    try:
        for pos in range(int((packet_deadline + 5) / 0.1)):
            for index, sock in enumerate(socks):
                if index in closed:
                    continue
                try:
                    sock.send((packet if index % 2 else head)[pos:pos + 1])
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed[index] = time.monotonic()
            if len(closed) == count:
                break
            time.sleep(0.1)  # the trickle's pace, not a sync point
        assert len(closed) == count, f"{count - len(closed)} trickling connections still open"
        # Cut at the deadline, not before; a byte every 0.1 s would keep a per-read timeout from ever
        # firing, so the generous upper bound (for a loaded host) still shows the deadline absolute.
        for index in range(count):
            held = closed[index] - since[index]
            assert limits[index] - 0.3 < held < limits[index] + 3.5, (index, held)
        probe(server.addr)
    finally:
        for sock in socks:
            sock.close()


# --- C25: idle keep-alive flood and the connection cap -----------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_idle_keep_alive_flood_is_closed_after_keep_alive(worker, spawn, workdir):
    keep_alive, count = 1.0, 500
    # --socket-timeout 30: nothing but --keep-alive can close an idle connection within the bound below
    server = start(worker, spawn, workdir, "--keep-alive", str(keep_alive), "--socket-timeout", "30",
                   backlog=1024)
    pid = worker_pid(server)
    baseline = settled_fd_count(pid)
    socks, served = [], []
    try:
        for _ in range(count):
            sock = connect(server.addr)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            (reply,) = responses(sock, 1)
            assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in reply
            socks.append(sock)
            served.append(time.monotonic())
        closed, answered = wait_closed(socks, served[-1] + keep_alive + 8, server.addr)
        assert len(closed) == count, f"{count - len(closed)} idle connections still open"
        # the first probe began after the last connection was served: answered before that one closed
        assert answered and answered[0] < closed[count - 1], "a normal client waited for the idle ones"
        # closed after keep-alive, not before; the upper bound is generous for a loaded host
        idle = [closed[i] - served[i] for i in range(count)]
        assert min(idle) > keep_alive - 0.3 and max(idle) < keep_alive + 5, (min(idle), max(idle))
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: fd_count(pid) <= baseline, timeout=5, message="worker fds back to baseline")


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_connections_cap_leaves_the_excess_in_the_backlog(worker, spawn, workdir):
    server = start(worker, spawn, workdir, "--worker-connections", "50", "--keep-alive", "30",
                   "--http-timeout", "30", "--socket-timeout", "30")
    pid = worker_pid(server)
    held = []
    try:
        for _ in range(49):
            sock = connect(server.addr)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            responses(sock, 1)
            held.append(sock)
        # the 50th slot goes to the other listener (a uwsgi client yet to send its packet), while
        # the http listener's acceptor may already be waiting: it must not take one more
        before = fd_count(pid)
        held.append(connect(server.usock))
        wait_for(lambda: fd_count(pid) == before + 1, message="the uwsgi connection accepted")
        with connect(server.addr) as extra:  # the kernel completes the handshake: it waits in the backlog
            extra.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n")
            extra.settimeout(1.0)
            with pytest.raises(TimeoutError):
                extra.recv(100)
            assert not holds(pid, extra), "connection over --worker-connections accepted"
            held.pop().close()  # a slot frees: the waiting connection is accepted and served
            extra.settimeout(3.0)
            (reply,) = responses(extra, 1)
            assert reply.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


# --- C26: body stall -----------------------------------------------------------------------------

STALLED_BODIES = {
    "content-length": b"Content-Length: 1000\r\n\r\n" + b"x" * 10,
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 10,
    "uwsgi": b"",  # CONTENT_LENGTH 1000 in a uwsgi packet, 10 bytes
}


@pytest.mark.parametrize("framing", STALLED_BODIES)
@pytest.mark.parametrize("worker", WORKERS)
def test_body_stall_is_never_a_short_complete_body(worker, framing, spawn, workdir):
    server = start(worker, spawn, workdir, "--socket-timeout", "1")
    pid = worker_pid(server)
    if framing == "uwsgi":
        sock = connect(server.usock)
        sock.sendall(encode_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/bodycheck", "CONTENT_LENGTH": "1000",
                                    "SERVER_PROTOCOL": "HTTP/1.1"}) + b"x" * 10)
    else:
        sock = connect(server.addr)
        sock.sendall(b"POST /bodycheck HTTP/1.1\r\nHost: h\r\n" + STALLED_BODIES[framing])
    with sock:
        started = time.monotonic()
        reply = recv_all(sock, timeout=6)
        took = time.monotonic() - started
    assert 0.7 < took < 5.0, took  # --socket-timeout 1, with room for a loaded CI host
    assert not reply.startswith(b"HTTP/1.1 200 ") and b"got 10" not in reply, reply
    log = server.wait_log("BODYCHECK")
    assert "BODYCHECK complete" not in log
    expected = "BODYCHECK raised" if worker == "gevent" else "BODYCHECK disconnect 10"
    server.wait_log(expected, timeout=5)  # the app logs as it unwinds, maybe after the close
    assert http_request(server.addr, "GET", "/pid")[2] == str(pid).encode()
    assert worker_pid(server) == pid
    assert http_request(server.addr, "GET", "/")[0] == 200


# --- C27: slow reader ----------------------------------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_slow_reader_is_dropped_after_the_send_timeout(worker, spawn, workdir):
    size = 20_000_000
    server = start(worker, spawn, workdir, "--socket-timeout", "1")
    pid = worker_pid(server)
    path = "/big" if worker == "gevent" else "/bigstream"
    with connect(server.addr) as sock:
        sock.sendall(b"GET %s?size=%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % (path.encode(), size))
        started = time.monotonic()
        wait_for(lambda: holds(pid, sock), timeout=5, message="connection accepted")
        probes = 0
        while holds(pid, sock):  # the worker holds the connection while the client reads nothing
            # the time is the point: dropped after --socket-timeout 1, a generous bound for a loaded host
            assert time.monotonic() - started < 8, "connection of a reader that takes nothing never dropped"
            probe(server.addr)  # served meanwhile by the same worker
            probes += 1
            time.sleep(0.1)  # polling pace, not a sync point
        assert probes and time.monotonic() - started > 0.8
        data = recv_all(sock, timeout=5)  # what the kernels still held, then EOF
    assert len(data) < size
    assert worker_pid(server) == pid
    probe(server.addr)


# --- smuggling basics over each worker's driver --------------------------------------------------

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
BAD_REQUESTS = [
    ("cl+te", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
     + SMUGGLE, 400),
    ("te-not-chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n" + SMUGGLE, 501),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n" + SMUGGLE, 400),
    ("bare-lf", b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n" + SMUGGLE, 400),
    ("duplicate-cl", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 37\r\n\r\nabc"
     + SMUGGLE, 400),
    ("oversized-head", b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000 + b"\r\n\r\n" + SMUGGLE, 431),
    ("chunked-trailer-request", b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
     + SMUGGLE, 400),
]


@pytest.mark.parametrize("worker", WORKERS)
def test_framing_errors_get_one_error_and_a_close(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    for name, payload, status in BAD_REQUESTS:
        with connect(server.addr) as sock:
            sock.sendall(payload)
            reply = recv_all(sock, timeout=5)  # EOF: the connection is closed after the error
        assert reply.startswith(b"HTTP/1.1 %d " % status), (name, reply[:200])
        assert reply.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in reply, (name, reply)
    # a valid request with garbage behind it in one write: its full 200, then the 400 (uvicorn bug 45)
    with connect(server.addr) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n")
        reply = recv_all(sock, timeout=5)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"hello" in reply and b"HTTP/1.1 400 " in reply, reply
    # a body the app never reads (CL.0) holds a request: drained as body, never parsed as the next
    with connect(server.addr) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(SMUGGLE), SMUGGLE)
                     + b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        reply = recv_all(sock, timeout=5)
    assert reply.count(b"HTTP/1.1 200 ") == 2 and b"HTTP/1.1 404" not in reply, reply
    assert http_request(server.addr, "GET", "/")[0] == 200
    assert '"GET /smuggled' not in server.log()  # no access line: the app never saw it
