"""A real zergserve instance over HTTP: requests, bodies, framing, the WSGI contract, bad input."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import bound, connect, http_request, raw, recv_all, start


@pytest.fixture
def instance(spawn, workdir):
    """One instance with an HTTP socket on TCP and one on a UNIX path, 2 workers."""
    unix = bound(workdir / "http.sock")
    server = start(spawn, workdir, "--http", unix.arg, "--http-timeout", "2", "--limit-post", "100000",
                   workers=2, stats=False, mercy=None)
    server.tcp, server.unix = server.http, unix.addr
    return server


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def test_get_over_tcp_and_unix(instance):
    for addr in (instance.tcp, instance.unix):
        status, headers, body = http_request(addr, "GET", "/")
        assert (status, body) == (200, b"hello")
        assert headers["Connection"] == "close"
        assert headers["Server"] == "zergserve"
        assert "Date" in headers


def test_post_body_and_environ(instance):
    status, _, body = http_request(instance.tcp, "POST", "/echo", body=b"x=1&y=2",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    data = json.loads(body)
    assert status == 200
    assert data["body"] == "x=1&y=2" and data["content_length"] == "7"
    assert data["content_type"] == "application/x-www-form-urlencoded"
    status, _, body = http_request(instance.tcp, "GET", "/env?a=b%20c&d", headers={"X-Custom": "v"})
    env = json.loads(body)
    assert env["QUERY_STRING"] == "a=b%20c&d"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["SCRIPT_NAME"] == ""


def test_percent_decoded_path_info(instance):
    reply = raw(instance.tcp, b"GET /%65nv HTTP/1.1\r\nHost: a\r\n\r\n")
    env = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert env["PATH_INFO"] == "/env" and env["REQUEST_URI"] == "/%65nv"


def test_chunked_request_body(instance):
    reply = raw(instance.tcp, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert status_of(reply) == 200
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["body"] == "hello world"


def test_readline_iteration_never_reads_past_body(instance):
    payload = b"one\ntwo\nthree"
    reply = raw(instance.tcp, b"POST /lines HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%sEXTRA"
                % (len(payload), payload))
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["lines"] == ["one\n", "two\n", "three"]


def test_chunked_response_and_write_callable(instance):
    status, headers, body = http_request(instance.tcp, "GET", "/chunks?n=4")
    assert status == 200 and body == b"chunk0;chunk1;chunk2;chunk3;"
    assert headers.get("Transfer-Encoding") == "chunked"
    _, _, body = http_request(instance.tcp, "GET", "/write")
    assert body == b"via-write;via-iter"


def test_head_has_no_body(instance):
    reply = raw(instance.tcp, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\n")


def test_expect_100_continue(instance):
    with connect(instance.tcp) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"data")
        reply = recv_all(sock)
    assert status_of(reply) == 200 and b'"body": "data"' in reply


def test_file_wrapper_and_large_response(instance):
    status, headers, body = http_request(instance.tcp, "GET", "/file?size=300000")
    assert status == 200 and len(body) == 300000 and headers["Content-Length"] == "300000"
    status, _, body = http_request(instance.tcp, "GET", "/big?size=2000000")
    assert status == 200 and len(body) == 2000000


def test_app_exception_is_500_and_worker_survives(instance):
    pids = set()
    for _ in range(4):
        status, _, body = http_request(instance.tcp, "GET", "/crash")
        assert status == 500 and b"boom" not in body
    for _ in range(10):
        pids.add(http_request(instance.tcp, "GET", "/pid")[2])
    assert len(pids) <= 2
    assert "RuntimeError: boom from the test app" in instance.log()


def test_exception_after_head_closes_connection(instance):
    reply = raw(instance.tcp, b"GET /crash-late HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(reply) == 200 and b"partial" in reply and not reply.endswith(b"0\r\n\r\n")
    assert "late boom" in instance.log()


@pytest.mark.parametrize("kind", ["crlf", "lf", "nul", "space", "colon"])
def test_bad_response_headers_become_500(instance, kind):
    reply = raw(instance.tcp, f"GET /badheader?kind={kind} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert status_of(reply) == 500
    assert b"Set-Cookie" not in reply and b"should not be sent" not in reply


def test_content_length_mismatch(instance):
    reply = raw(instance.tcp, b"GET /cl-short HTTP/1.1\r\nHost: a\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n12345")
    reply = raw(instance.tcp, b"GET /cl-long HTTP/1.1\r\nHost: a\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n12345")
    assert "Content-Length" in instance.log()


@pytest.mark.parametrize("payload,expected", [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     b"GET /smug HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x07b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
])
def test_invalid_requests_get_one_error_and_close(instance, payload, expected):
    reply = raw(instance.tcp, payload)
    assert status_of(reply) == expected, reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1
    assert b"/smug" not in reply
    assert http_request(instance.tcp, "GET", "/")[0] == 200


def test_underscore_headers_never_reach_environ(instance):
    reply = raw(instance.tcp, b"GET /env HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\n"
                              b"X-Forwarded-For: 1.2.3.4\r\n\r\n")
    env = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


def test_limit_post_413_before_reading_body(instance):
    with connect(instance.tcp) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" + b"z" * 1000)
        reply = recv_all(sock)
    assert status_of(reply) == 413


def test_header_deadline_is_absolute(instance):
    """A client trickling its head is cut at --http-timeout (2 s) however often it sends a byte: it
    is cut while still sending a byte every 0.4 s (a deadline that each byte extended never would)."""
    with connect(instance.tcp, timeout=6) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        cut, reply = False, b""
        for _ in range(50):  # 20 s of trickling
            try:
                sock.sendall(b"X")
                sock.settimeout(0.4)  # the trickle's pace: a byte, then 0.4 s listening for the cut
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                pass
            cut = True
            break
        assert cut, "the trickling client was never cut"
        reply += recv_all(sock, timeout=6)
    assert status_of(reply) in (0, 408)
    assert http_request(instance.tcp, "GET", "/")[0] == 200


def test_silent_connection_does_not_block_other_clients_forever(spawn):
    """One sync worker held by a silent head: --http-timeout 1 frees it for the next client. With
    --socket-timeout 30 nothing else could free it before the client's 20-s timeout."""
    listener = bound()
    addr = listener.addr
    spawn("--module", "echo:application", "--http", listener.arg, "-p", "1", "--http-timeout", "1",
          "--socket-timeout", "30", wait=addr)
    with connect(addr) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        status, _, _ = http_request(addr, "GET", "/", timeout=20)
        assert status == 200
        assert status_of(recv_all(idle, timeout=5)) in (0, 408)  # it was cut, not served


def test_slow_reader_of_a_large_body_is_served(instance):
    """The send timeout bounds each wait, not the whole transfer: a slow, live download completes."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.settimeout(20)
        sock.connect(("127.0.0.1", int(instance.tcp.rsplit(":", 1)[1])))
        sock.sendall(b"GET /big?size=30000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        received = 0
        started = time.monotonic()
        while chunk := sock.recv(65536):
            received += len(chunk)
            if time.monotonic() - started < 6:
                time.sleep(0.01)  # read slowly for longer than the 4 s socket-timeout
    assert received > 30_000_000


def test_reader_that_never_reads_frees_the_worker(spawn):
    """One sync worker, a client that never reads a 50-MB body: only the send timeout can free the
    worker for the next client (the stuck one stays open until after it is answered)."""
    listener = bound()
    addr = listener.addr
    spawn("--module", "echo:application", "--http", listener.arg, "-p", "1", "--socket-timeout", "1", wait=addr)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", listener.port))
    stuck.sendall(b"GET /big?size=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert http_request(addr, "GET", "/", timeout=30)[0] == 200
    stuck.close()


def test_body_stall_raises_in_the_app_and_frees_the_worker(spawn):
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "echo:application", "--http", listener.arg, "-p", "1", "--socket-timeout", "1",
                   wait=addr)
    with connect(addr, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        reply = recv_all(sock, timeout=10)
    assert not reply.startswith(b"HTTP/1.1 200")
    server.wait_log("stalled")
    assert http_request(addr)[0] == 200
