"""Real nginx `uwsgi_pass` in front of real zergserve, over a UNIX socket and over TCP."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from conftest import bound, http_request, raw
from nginx import nginx, requires_nginx  # noqa: F401 - the fixture is used by name

pytestmark = [requires_nginx, pytest.mark.nginx]


@pytest.fixture(params=["unix", "tcp"])
def stack(request, spawn, workdir, nginx):  # noqa: F811
    if request.param == "unix":
        upstream = upstream_arg = str(workdir / "app.sock")
        target = f"unix:{upstream}"
    else:
        listener = bound()
        upstream = target = listener.addr
        upstream_arg = listener.arg
    spawn("--module", "echo:application", "--socket", upstream_arg, "-p", "2", "--buffer-size", "32768",
          wait=upstream)
    server, addr = nginx(f"""
        location / {{
            include {workdir}/nginx/uwsgi_params;
            uwsgi_pass {target};
        }}""")
    return server, addr


def test_get_and_post(stack):
    _, addr = stack
    status, headers, body = http_request(addr, "GET", "/")
    assert (status, body) == (200, b"hello")
    status, _, body = http_request(addr, "POST", "/echo", body=b"a" * 1_000_000,
                                   headers={"Content-Type": "application/octet-stream"})
    data = json.loads(body)
    assert status == 200 and data["length"] == 1_000_000 and data["method"] == "POST"


def test_chunked_client_body_is_dechunked_by_nginx(stack):
    _, addr = stack
    reply = raw(addr, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert b" 200 " in reply.split(b"\r\n", 1)[0]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["body"] == "hello world"


def test_many_headers_and_big_cookie(stack):
    _, addr = stack
    headers = {f"X-Test-{i}": f"value-{i}" for i in range(60)}
    headers["Cookie"] = "c=" + "x" * 3000
    status, _, body = http_request(addr, "GET", "/env", headers=headers)
    env = json.loads(body)
    assert status == 200
    assert env["HTTP_X_TEST_59"] == "value-59" and env["HTTP_COOKIE"] == headers["Cookie"]
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REQUEST_METHOD"] == "GET"


def test_head_over_buffer_size_is_refused_with_a_hint(spawn, workdir, nginx):  # noqa: F811
    upstream = str(workdir / "small.sock")
    server = spawn("--module", "echo:application", "--socket", upstream, wait=upstream)
    _, addr = nginx(f"""
        location / {{
            include {workdir}/nginx/uwsgi_params;
            uwsgi_pass unix:{upstream};
        }}""")
    status, _, _ = http_request(addr, "GET", "/", headers={"Cookie": "c=" + "x" * 5000})
    assert status == 502
    server.wait_log("raise --buffer-size")
    assert http_request(addr, "GET", "/")[0] == 200


def test_keepalive_client_through_nginx(stack):
    _, addr = stack
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for _ in range(5):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"hello"
    conn.close()


def test_chunked_response_and_crash(stack):
    server, addr = stack
    status, _, body = http_request(addr, "GET", "/chunks?n=5")
    assert status == 200 and body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
    assert http_request(addr, "GET", "/crash")[0] == 500
    assert http_request(addr, "GET", "/")[0] == 200


def test_worker_killed_mid_request_gives_502(stack):
    server, addr = stack
    assert http_request(addr, "GET", "/exit")[0] == 502
    assert "upstream prematurely closed" in server.error_log()
    assert http_request(addr, "GET", "/")[0] == 200


def test_percent_encoded_path_through_nginx(stack):
    _, addr = stack
    with _conn(addr) as sock:
        sock.sendall(b"GET /%65nv?q=%20 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    env = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert env["PATH_INFO"] == "/env" and env["QUERY_STRING"] == "q=%20"


def _conn(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)
