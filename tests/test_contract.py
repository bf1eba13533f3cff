"""Request behaviour every worker class owes its clients, one test run per class (sync, gthread,
gevent, asyncio), over both protocols where it applies. Real processes on UNIX sockets."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

import pytest

from conftest import at_once, bound, connect, fetch, free_port, http_request, raw, recv_all, responses, wait_for
from zergserve.protocols.uwsgi import encode_packet

WORKERS = ("sync", "gthread", "gevent", "asyncio", "asyncio-uvloop")  # the asyncio worker on each --loop


def asgi(worker: str) -> bool:
    return worker.startswith("asyncio")


def worker_args(worker: str) -> tuple[str, ...]:
    """The module and class options of `worker` (skipped where its library is not installed)."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    if worker == "asyncio-uvloop":
        pytest.importorskip("uvloop")
    if asgi(worker):
        loop = worker.partition("-")[2] or "asyncio"
        return ("--module", "asgi_app:application", "--worker", "asyncio", "--loop", loop)
    return ("--module", "echo:application", "--worker", worker)


def big(worker: str, size: int) -> bytes:
    return ("/bigstream?size=%d" if asgi(worker) else "/big?size=%d").encode() % size


def start(worker: str, spawn, workdir, *extra: str):
    """One worker of `worker`'s class serving HTTP and uwsgi on UNIX sockets."""
    http, usock, stats = (str(workdir / name) for name in ("http.sock", "app.sock", "stats.sock"))
    server = spawn(*worker_args(worker), "--http", http, "--socket", usock, "-p", "1",
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
        sock.sendall(b"GET " + big(worker, 50_000_000) + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        server.wait_log("client took", timeout=20)
        wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="worker idle")
        assert http_request(server.addr)[0] == 200


@pytest.mark.parametrize("worker", WORKERS)
def test_client_reading_below_send_min_rate_is_dropped(worker, spawn, workdir):
    """A client that takes 4 KB every 0.1 s (about 40 KB/s) against --send-min-rate 1000000."""
    server = start(worker, spawn, workdir, "--socket-timeout", "1", "--send-min-rate", "1000000")
    with connect(server.addr, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET " + big(worker, 50_000_000) + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        got = 0
        while "client took" not in server.log():
            data = sock.recv(4096)
            assert data, "connection closed without the log line"
            got += len(data)
            assert got < 40_000_000, "the whole body went out at a rate under --send-min-rate"
            time.sleep(0.1)
    assert http_request(server.addr)[0] == 200


# --- a response that ends its TCP connection goes out with the FIN ------------------------------

BLOCKING = ("sync", "gthread", "gevent")  # the blocking driver's classes (connection._Sink)


@pytest.mark.parametrize("proto, path, ending", [
    ("http", "/", b"hello"),  # a list: the close sends what MSG_MORE held
    ("http", "/chunks", b"0\r\n\r\n"),  # a generator: its chunked end, held and sent at once (shutdown)
    ("uwsgi", "/", b"hello"),
])
@pytest.mark.parametrize("worker", BLOCKING)
def test_last_response_shares_its_segment_with_the_fin(worker, proto, path, ending, spawn):
    """The client of a connection that closes after its response receives two segments without
    data, the SYN-ACK and the acknowledgement of its request: the FIN comes with the response's
    last bytes, not on its own (TCP_INFO's tcpi_segs_in less tcpi_data_segs_in counts them)."""
    listener = bound()
    spawn(*worker_args(worker), f"--{'http' if proto == 'http' else 'socket'}", listener.arg, "-p", "1")
    request = (b"GET %s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % path.encode() if proto == "http"
               else encode_packet({"REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path,
                                   "SERVER_PROTOCOL": "HTTP/1.1"}))
    wait_for(lambda: raw(listener.addr, request).endswith(ending), message="the worker answering")
    with connect(listener.addr, timeout=10) as sock:
        sock.sendall(request)
        answer = recv_all(sock, 10)
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    segments_in, data_segments_in = (int.from_bytes(info[at:at + 4], sys.byteorder) for at in (140, 152))
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(ending)
    assert segments_in - data_segments_in <= 2, f"{segments_in - data_segments_in} segments in without data"


@pytest.mark.parametrize("worker", BLOCKING)
def test_held_last_bytes_leave_before_the_apps_close(worker, spawn, workdir):
    """Bytes held for the FIN must not wait for the app's close() (a framework's may take long):
    the client reads the whole response, to its EOF, while close() is still held."""
    listener = bound()
    spawn(*worker_args(worker), "--http", listener.arg, "-p", "1")
    gate = workdir / "gate"
    wait_for(lambda: raw(listener.addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").endswith(b"hello"),
             message="the worker answering")
    try:
        answer = raw(listener.addr, b"GET /held-close?f=%s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                     % str(gate).encode(), timeout=10)
    finally:
        gate.touch()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\ndone")



# --- the responses a worker holds to send with others (connection.Outbox) --------------------------

KEPT_WSGI = ("gthread", "gevent")  # the WSGI classes that keep connections alive
KEPT = (*KEPT_WSGI, "asyncio", "asyncio-uvloop")


@pytest.mark.parametrize("worker", KEPT)
def test_pipelined_responses_of_every_size_arrive_whole_and_in_order(worker, spawn, workdir):
    """Small responses (which the gevent and asyncio workers hold until their loop has run every
    ready connection) and large ones and files (sent at once) back to back on one connection:
    each arrives whole, in the order asked, the small ones never overtaken."""
    server = start(worker, spawn, workdir)
    sizes = [10, 300_000, 5, 16_384, 16_385, 1, 70_000, 7]
    paths = [b"/big?size=%d" % n for n in sizes]
    if not asgi(worker):
        paths[6] = b"/file?size=70000"  # (a file wrapper's sendfile)
    with connect(server.addr, timeout=30) as sock:
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path for path in paths))
        replies = responses(sock, len(paths))
    assert [len(reply.partition(b"\r\n\r\n")[2]) for reply in replies] == sizes


@pytest.mark.parametrize("worker", KEPT_WSGI)
def test_kept_alive_response_leaves_before_the_apps_close(worker, spawn, workdir):
    """A held response must not wait for the app's close() (a framework's may wait on its
    database, in a call that holds the whole gevent worker): the client reads it while close()
    still waits for the gate, then asks again."""
    server = start(worker, spawn, workdir)
    gate = workdir / "gate"
    with connect(server.addr, timeout=10) as sock:
        try:
            sock.sendall(b"GET /held-close?block=1&f=%s HTTP/1.1\r\nHost: h\r\n\r\n" % str(gate).encode())
            (reply,) = responses(sock, 1)  # (the socket's timeout, 10 s, is shorter than close()'s 30)
        finally:
            gate.touch()
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"\r\n\r\ndone")
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n")
        assert responses(sock, 1)[0].startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("worker", KEPT)
def test_pipelining_client_that_never_reads_is_dropped(worker, spawn, workdir):
    """Small responses pile up in the buffers of a client that sends request after request and
    reads none: it is dropped within --socket-timeout of the buffers filling, as one that does not
    read a large response is, and the worker goes on."""
    server = start(worker, spawn, workdir, "--socket-timeout", "1")
    with connect(server.addr, timeout=30) as sock:
        sock.sendall(b"GET /big?size=10000 HTTP/1.1\r\nHost: h\r\n\r\n" * 200)  # 2 MB of answers
        server.wait_log("client took", timeout=20)
        wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="worker idle")
        assert http_request(server.addr)[0] == 200

# --- item 5: a worker notices a dead master at once ----------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_master_killed_while_a_worker_holds_a_request(worker, spawn, workdir):
    """kill -9 of the master: its worker, busy in a long request, gives up the listening socket
    at once (a new master binds the same address) and is gone within --worker-reload-mercy."""
    addr = f"127.0.0.1:{free_port()}"
    args = (*worker_args(worker), "--http", addr, "-p", "1", "--worker-reload-mercy", "6")
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


# --- item 7: HTTP details and log lines -----------------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_absolute_form_authority_wins_over_host(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    path = "/echo" if asgi(worker) else "/env"
    with connect(server.addr) as sock:
        sock.sendall(b"GET http://real.example%s HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"
                     % path.encode())
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]
    data = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    if asgi(worker):
        assert data["headers"]["host"] == "real.example"
    else:
        assert data["HTTP_HOST"] == "real.example" and data["PATH_INFO"] == "/env"


@pytest.mark.parametrize("worker", WORKERS)
def test_body_over_limit_post_while_read_is_one_413_with_a_reason(worker, spawn, workdir):
    server = start(worker, spawn, workdir, "--limit-post", "100")
    with connect(server.addr) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"40\r\n" + b"a" * 64 + b"\r\n" + b"40\r\n" + b"a" * 64 + b"\r\n0\r\n\r\n")
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), reply[:100]
    server.wait_log("bad request body for POST '/echo': body over limit-post (100 bytes)")
    with connect(server.addr) as sock:  # refused from its Content-Length alone, by the codec
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
        assert recv_all(sock).startswith(b"HTTP/1.1 413 Content Too Large\r\n")


@pytest.mark.parametrize("worker", WORKERS)
def test_idle_uwsgi_connection_is_no_error_line(worker, spawn, workdir):
    server = start(worker, spawn, workdir, "--socket-timeout", "0.5")
    with connect(server.usock) as idle:
        assert recv_all(idle, timeout=10) == b""  # closed by the server after --socket-timeout
    with connect(server.usock) as partial:
        partial.sendall(b"\x00\x10")
        assert recv_all(partial, timeout=10) == b""
    log = server.wait_log("no complete packet within 0.5s")
    assert log.count("no complete packet") == 1, log


@pytest.mark.parametrize("worker", WORKERS)
def test_uwsgi_vars_in_log_lines_are_escaped(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    forged = "1.2.3.4 \"GET / HTTP/1.1\" 200 0\n[2026-01-01 00:00:00] forged"
    with connect(server.usock) as sock:
        sock.sendall(encode_packet({"REQUEST_METHOD": "GET\x1b[31m", "PATH_INFO": "/", "REQUEST_URI": "/",
                                    "SERVER_PROTOCOL": "HTTP/1.1\r\nX", "REMOTE_ADDR": forged}))
        assert recv_all(sock).startswith(b"HTTP/1.1")
    log = server.wait_log("forged")
    assert "\n[2026-01-01 00:00:00] forged" not in log and "\x1b" not in log
    assert "1.2.3.4 \\x22GET / HTTP/1.1\\x22 200 0\\n[2026-01-01 00:00:00] forged" in log


# --- item 4: a sync worker reached directly says so -----------------------------------------------

def test_public_address_detection():
    from zergserve.workers.sync import is_public
    assert not any(map(is_public, [("127.0.0.1", 80), ("127.5.0.1", 80), ("::1", 80, 0, 0),
                                   ("::ffff:127.0.0.1", 80, 0, 0)]))
    assert all(map(is_public, [("0.0.0.0", 80), ("::", 80, 0, 0), ("192.0.2.1", 80), ("fe80::1%eth0", 80, 0, 2)]))
    from zergserve.workers import get

    class Public:
        is_tcp, name = True, "0.0.0.0:8000"
        sock = type("Sock", (), {"getsockname": lambda self: ("0.0.0.0", 8000)})()

    (line,) = get("sync").start_warnings([Public()])
    assert "0.0.0.0:8000" in line and "nginx" in line
    assert get("asyncio").start_warnings([Public()]) == []


@pytest.mark.parametrize("worker", WORKERS)
def test_no_exposure_warning_on_loopback_or_for_many_connection_workers(worker, spawn, workdir):
    """The warning itself needs a non-loopback bind, which tests never make (see the unit test)."""
    listener = bound()
    server = spawn(*worker_args(worker), "--http", listener.arg, wait=listener.addr)
    assert "beyond loopback" not in server.wait_log("spawned worker 1")


# --- one exchange: what the drivers used to do differently ----------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_idle_kept_alive_connection_ends_at_once_on_stop(worker, spawn, workdir):
    server = start(worker, spawn, workdir, "--keep-alive", "60")
    with connect(server.addr, timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        server.signal(signal.SIGTERM)
        sock.settimeout(15)  # not --keep-alive's 60 s
        assert recv_all(sock, timeout=15) == b""
    assert server.wait_exit(15) == 0


@pytest.mark.parametrize("worker", WORKERS)
def test_a_response_head_the_codec_refuses_is_a_500_app_error(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    status, _, body = http_request(server.addr, "GET", "/two-lengths")
    assert status == 500
    server.wait_log("error in app for GET '/two-lengths'")
    assert "cannot send the response: invalid Content-Length" in server.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_an_aborted_response_closes_the_connection(worker, spawn, workdir):
    """An app that fails after its head: the client gets the partial body and a close, never a
    framed end that would make the truncated body look whole, nor the pipelined next response."""
    server = start(worker, spawn, workdir)
    with connect(server.addr, timeout=10) as sock:
        sock.sendall(b"GET /crash-late HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        reply = recv_all(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"partial" in reply
    assert not reply.endswith(b"0\r\n\r\n") and reply.count(b"HTTP/1.1 ") == 1, reply


@pytest.mark.parametrize("worker", WORKERS)
def test_uwsgi_body_is_exactly_content_length(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    with connect(server.usock, timeout=10) as sock:
        sock.sendall(encode_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/echo", "REQUEST_URI": "/echo",
                                    "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "5"}))
        sock.sendall(b"hel")
        sock.sendall(b"loEXTRA")
        reply = recv_all(sock, timeout=10)
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["body"] == "hello"


# --- behaviour the per-worker test files each had a copy of ---------------------------------------

# the sync worker answers every HTTP request with Connection: close
KEEP_ALIVE = ("gevent", "asyncio", "asyncio-uvloop")


@pytest.mark.parametrize("worker", KEEP_ALIVE)
def test_keep_alive_and_pipelining(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    with connect(server.addr) as sock:
        for path in (b"/pid", b"/"):
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path)
            (reply,) = responses(sock, 1)
            assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in reply
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
                     + b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n" * 2
                     + b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        replies = responses(sock, 4)
        assert [r.split(b"\r\n")[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 4
        assert b'"body": "hi"' in replies[0] and b"Connection: close" in replies[3]
        assert recv_all(sock) == b""


@pytest.mark.parametrize("worker", KEEP_ALIVE)
def test_idle_kept_alive_connection_is_closed_after_keep_alive_seconds(worker, spawn, workdir):
    # --socket-timeout 30: nothing but --keep-alive 0.5 can close the idle connection within 20 s
    server = start(worker, spawn, workdir, "--keep-alive", "0.5", "--socket-timeout", "30")
    with connect(server.addr) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n")
        responses(sock, 1)
        assert recv_all(sock, timeout=20) == b""  # recv_all raises if nothing closes it


@pytest.mark.parametrize("worker", KEEP_ALIVE)
def test_one_worker_serves_many_slow_requests_at_once(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    statuses, seconds = at_once(server.addr, "/sleep?s=1", 40)
    # the time is the point: one at a time would take 40 s, all at once 1 s; 20 s leaves a loaded host room
    assert statuses == [200] * 40 and seconds < 20
    wait_for(lambda: fetch(server.stats)["workers"][0]["requests"] == 40, message="40 requests counted")


@pytest.mark.parametrize("worker", WORKERS)
def test_uwsgi_protocol(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    with connect(server.usock) as sock:
        sock.sendall(encode_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/echo", "QUERY_STRING": "q=2",
                                    "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "5"}) + b"hello")
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["body"] == "hello"


@pytest.mark.parametrize("worker", WORKERS)
def test_pause_stops_accepting(worker, spawn, workdir):
    server = start(worker, spawn, workdir)
    server.signal(signal.SIGTSTP)
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "pause", message="paused")
    with connect(server.addr) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        sock.settimeout(0.5)
        with pytest.raises((TimeoutError, socket.timeout)):
            sock.recv(100)
        server.signal(signal.SIGTSTP)
        assert recv_all(sock).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="resumed")


# --- signals: handlers record, the loop acts; a quick stop does not wait for the app -------------

# (module, path) of a request that holds the worker: "blocking" keeps the main thread in the app
# (time.sleep in a sync or gthread worker, CPU in a gevent greenlet or an asyncio coroutine),
# "waiting" lets an event loop run meanwhile.
HOLD = {
    ("sync", "blocking"): ("echo:application", "/sleep?s=60"),
    ("gthread", "blocking"): ("echo:application", "/sleep?s=60"),
    ("gevent", "blocking"): ("spin:application", "/spin?s=60"),
    ("gevent", "waiting"): ("echo:application", "/sleep?s=60"),
    ("asyncio", "blocking"): ("asgi_app:application", "/spin?s=60"),
    ("asyncio", "waiting"): ("asgi_app:application", "/sleep?s=60"),
    ("asyncio-uvloop", "blocking"): ("asgi_app:application", "/spin?s=60"),
    ("asyncio-uvloop", "waiting"): ("asgi_app:application", "/sleep?s=60"),
}


def hold_a_request(worker: str, hold: str, spawn, workdir, *extra: str):
    """A one-worker server of `worker`'s class, busy with a request as `hold` says (HOLD); returns
    the server and the client's socket."""
    module, path = HOLD[worker, hold]
    args = list(worker_args(worker))
    args[1] = module  # worker_args: --module, its app, then the class (and loop) options
    http, stats = str(workdir / "http.sock"), str(workdir / "stats.sock")
    server = spawn(*args, "--http", http, "-p", "1", "--stats", stats, *extra, wait=http)
    server.stats = stats
    wait_for(lambda: fetch(stats)["workers"][0]["status"] == "idle", message="worker idle")
    client = connect(http, timeout=30)
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    wait_for(lambda: fetch(stats)["workers"][0]["request_start"], message="the request running in the app")
    return server, client


def assert_stopped_by_itself(server, client) -> None:
    """The master exits once its worker did, and never had to SIGKILL it (after its mercy)."""
    assert server.wait_exit(timeout=20) == 0
    assert "did not stop in time" not in server.log()
    client.settimeout(5)
    assert recv_all(client) == b"", "the request held by the quick stop got an answer"
    client.close()


@pytest.mark.parametrize(("worker", "hold"), sorted(HOLD))
def test_quit_during_a_long_request_stops_the_worker_at_once(worker, hold, spawn, workdir):
    server, client = hold_a_request(worker, hold, spawn, workdir, "--worker-reload-mercy", "60")
    server.signal(signal.SIGQUIT)
    assert_stopped_by_itself(server, client)


@pytest.mark.parametrize("worker", WORKERS)
def test_int_during_a_long_request_stops_an_instance_at_once(worker, spawn, workdir):
    server, client = hold_a_request(worker, "blocking", spawn, workdir, "--worker-reload-mercy", "60")
    server.signal(signal.SIGINT)
    assert_stopped_by_itself(server, client)


@pytest.mark.parametrize(("worker", "hold"), sorted(HOLD))
def test_quit_ends_a_graceful_stop_at_once(worker, hold, spawn, workdir):
    """TERM waits for the request in hand (up to the mercy); a QUIT then does not."""
    server, client = hold_a_request(worker, hold, spawn, workdir, "--worker-reload-mercy", "60")
    server.signal(signal.SIGTERM)
    server.wait_log("graceful shutdown")
    wait_for(lambda: fetch(server.stats)["workers"][0]["request_start"], message="the request still running")
    server.signal(signal.SIGQUIT)
    assert_stopped_by_itself(server, client)


@pytest.mark.parametrize("worker", WORKERS)
def test_pause_during_a_request_lets_it_finish_then_pauses(worker, spawn, workdir):
    """TSTP is only recorded by the handler: the request in hand finishes, then the loop stops
    accepting and writes the row; a second TSTP resumes."""
    server = start(worker, spawn, workdir)
    gate = workdir / "gate"
    with connect(server.addr, timeout=30) as sock:
        sock.sendall(f"GET /gate?f={gate} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        wait_for(lambda: fetch(server.stats)["workers"][0]["request_start"], message="the request running")
        server.signal(signal.SIGTSTP)
        gate.touch()
        assert recv_all(sock).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "pause", message="paused after the request")
    server.signal(signal.SIGTSTP)
    wait_for(lambda: fetch(server.stats)["workers"][0]["status"] == "idle", message="resumed")
    assert http_request(server.addr)[0] == 200


def _sockets(pid: int) -> set[str]:
    """The sockets a process holds, as /proc names them ('socket:[inode]')."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            held.add(target)
    return held


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_holds_none_of_the_masters_sockets(worker, spawn, workdir):
    """Worker.boot closes what belongs to the master's loop, under every class: a worker holding
    the stats socket keeps it listening after the master closed it, and the master's re-exec
    cannot bind it again. (The gevent worker boots before its hub exists: gevent's os.close only
    defers the close to the hub's next turn, a race test_reload_rollback's gevent case shows.)"""
    server = start(worker, spawn, workdir)
    (stats,) = [f"socket:[{line.split()[6]}]" for line in open("/proc/net/unix") if line.rstrip().endswith(server.stats)]
    pid = fetch(server.stats)["workers"][0]["pid"]
    assert stats in _sockets(server.pid) and stats not in _sockets(pid)


@pytest.mark.parametrize("worker", [w for w in WORKERS if w not in ("sync", "gthread")])
def test_a_worker_over_its_share_of_connections_leaves_the_next_ones_to_another(worker, spawn, workdir):
    """The workers that keep connections share them out. Twenty kept-alive connections queued while
    both workers were stopped: the first to run takes three, then leaves the rest to the other (which
    holds none) for up to 50 ms each, instead of taking all twenty before the other wakes and serving
    all their requests alone (Worker.over_share)."""
    server = start(worker, spawn, workdir, "-p", "2")
    first, second = (w["pid"] for w in fetch(server.stats)["workers"])
    clients = []
    try:
        os.kill(first, signal.SIGSTOP)
        os.kill(second, signal.SIGSTOP)
        for _ in range(20):
            client = connect(server.addr)
            client.sendall(b"GET /pid HTTP/1.1\r\nHost: h\r\n\r\n")
            clients.append(client)
        os.kill(first, signal.SIGCONT)
        wait_for(lambda: len(select.select(clients, [], [], 0)[0]) >= 3, message="three answered by the first")
    finally:
        os.kill(first, signal.SIGCONT)
        os.kill(second, signal.SIGCONT)
    try:
        pids = [int(responses(client, 1)[0].rpartition(b"\r\n\r\n")[2]) for client in clients]
        assert set(pids) == {first, second} and pids.count(second) >= 5, pids
        assert [w["connections"] for w in fetch(server.stats)["workers"]] == [pids.count(first), pids.count(second)]
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: [w["connections"] for w in fetch(server.stats)["workers"]] == [0, 0],
             message="the closed connections no longer counted")
