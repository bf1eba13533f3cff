"""A real zergserve instance over the uwsgi protocol, as nginx `uwsgi_pass` speaks it."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import connect, recv_all, raw, start
from zergserve.protocols.uwsgi import encode_packet, encode_vars


def nginx_vars(method: str = "GET", path: str = "/", body: bytes = b"", **extra: str) -> dict[str, str]:
    """The stock uwsgi_params plus a Host header, as nginx sends them."""
    uri, _, query = path.partition("?")
    return {
        "QUERY_STRING": query, "REQUEST_METHOD": method, "CONTENT_TYPE": "",
        "CONTENT_LENGTH": str(len(body)) if body else "", "REQUEST_URI": path, "PATH_INFO": uri,
        "DOCUMENT_ROOT": "/srv", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "10.0.0.7", "REMOTE_PORT": "5555", "SERVER_PORT": "80",
        "SERVER_NAME": "example.com", "HTTP_HOST": "example.com", **extra,
    }


@pytest.fixture
def instance(spawn, workdir):
    """One instance with a uwsgi socket on a UNIX path (handed in bound), 2 workers."""
    return start(spawn, workdir, "--buffer-size", "4096", "--socket-timeout", "2", http=None, uwsgi="unix",
                 stats=False, mercy=None)


def request(addr: str, variables: dict[str, str], body: bytes = b"") -> bytes:
    return raw(addr, encode_packet(variables) + body)


def split(reply: bytes) -> tuple[bytes, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


def test_get_raw_http_response_with_request_protocol(instance):
    reply = request(instance.addr, nginx_vars())
    head, body = split(reply)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"
    assert b"Server:" not in head and b"Date:" not in head  # uWSGI adds none of its own
    reply = request(instance.addr, {"REQUEST_METHOD": "GET", "PATH_INFO": "/"})
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n")


def test_post_body_by_content_length(instance):
    reply = request(instance.addr, nginx_vars("POST", "/echo", b"hello"), b"hello")
    data = json.loads(split(reply)[1])
    assert data["body"] == "hello" and data["method"] == "POST"
    reply = request(instance.addr, nginx_vars("POST", "/echo", b"hel"), b"hello")
    assert json.loads(split(reply)[1])["body"] == "hel"


def test_environ_from_vars(instance):
    reply = request(instance.addr, nginx_vars("GET", "/env?x=1", HTTPS="on", HTTP_X_A="b"))
    env = json.loads(split(reply)[1])
    assert env["QUERY_STRING"] == "x=1" and env["REMOTE_ADDR"] == "10.0.0.7"
    assert env["wsgi.url_scheme"] == "https" and env["HTTP_X_A"] == "b"


def test_ping(instance):
    assert raw(instance.addr, b"\x64\x00\x00\x00") == b"\x64\x00\x00\x01"


@pytest.mark.parametrize("packet,logged", [
    (b"\x00\x10", "truncated"),
    (struct.pack("<BHB", 0, 100, 0) + b"\x05\x00abc", "truncated"),
    (struct.pack("<BHB", 0, 4097, 0) + b"x" * 4097, "4097"),
    (struct.pack("<BHB", 0, 6, 0) + b"\x00\x00\x02\x00ab", "null"),
    (struct.pack("<BHB", 0, 5, 0) + b"\xff\x00abc", "strsize"),
    (struct.pack("<BHB", 0, 0, 0), "empty"),
    (struct.pack("<BHB", 5, 4, 0) + b"\x00\x00\x00\x00", "modifier"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP"),
])
def test_malformed_packets_close_without_reply(instance, packet, logged):
    reply = raw(instance.addr, packet, half_close=True)
    assert not reply.startswith(b"HTTP/1.1 2")
    assert reply == b""
    instance.wait_log(logged)
    assert split(request(instance.addr, nginx_vars()))[1] == b"hello"


def test_too_many_vars_refused(instance):
    many = {f"K{i}": "v" for i in range(300)}
    assert request(instance.addr, many) == b""
    assert split(request(instance.addr, nginx_vars()))[1] == b"hello"


@pytest.mark.parametrize("value", ["+3", "3 ", "0x3", "-1"])
def test_bad_content_length_is_400(instance, value):
    reply = request(instance.addr, nginx_vars("POST", "/echo", CONTENT_LENGTH=value), b"abc")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_short_body_never_reaches_the_app_as_complete(instance):
    with connect(instance.addr) as sock:
        sock.sendall(encode_packet(nginx_vars("POST", "/echo", b"12345")) + b"123")
        sock.shutdown(1)
        reply = recv_all(sock)
    assert not reply.startswith(b"HTTP/1.1 200")


def test_magic_vars_are_ignored(instance, workdir):
    evil = workdir / "evil.py"
    marker = workdir / "pwned"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                    "def application(e, s):\n    s('200 OK', [])\n    return [b'evil']\n")
    variables = nginx_vars("GET", "/", UWSGI_FILE=str(evil), SCRIPT_NAME="", UWSGI_MODULE="evil",
                           UWSGI_CALLABLE="application", UWSGI_CHDIR="/", UWSGI_SETENV="X=1")
    assert split(request(instance.addr, variables))[1] == b"hello"
    assert not marker.exists()


def test_reserved_vars_never_reach_the_environ(instance):
    """The codec's flag for reserved names (UWSGI_*, wsgi.*) is what the environ builder trusts."""
    variables = nginx_vars("GET", "/env", UWSGI_FILE="/tmp/evil.py", UWSGI_SCHEME="https",
                           **{"wsgi.url_scheme": "javascript", "wsgi.evil": "1", "X_wsgi.kept": "2"})
    env = json.loads(split(request(instance.addr, variables))[1])
    assert "UWSGI_FILE" not in env and "UWSGI_SCHEME" not in env and "wsgi.evil" not in env
    assert env["wsgi.url_scheme"] == "https" and env["X_wsgi.kept"] == "2"
    plain = json.loads(split(request(instance.addr, nginx_vars("GET", "/env", SERVER_NAME="from-nginx")))[1])
    assert plain["wsgi.url_scheme"] == "http" and plain["SERVER_NAME"] == "from-nginx"


def test_one_packet_per_connection(instance):
    second = encode_packet(nginx_vars("GET", "/pid"))
    reply = raw(instance.addr, encode_packet(nginx_vars()) + second)
    assert reply.count(b"HTTP/1.1 ") == 1 and split(reply)[1] == b"hello"
    smuggled = encode_packet({"UWSGI_FILE": "/tmp/x.py", "REQUEST_METHOD": "GET", "PATH_INFO": "/"})
    reply = request(instance.addr, nginx_vars("POST", "/echo", smuggled), smuggled)
    assert reply.count(b"HTTP/1.1 ") == 1


def test_bad_response_header_on_uwsgi_socket(instance):
    reply = request(instance.addr, nginx_vars("GET", "/badheader?kind=crlf"))
    assert reply.startswith(b"HTTP/1.1 500 ") and b"Set-Cookie" not in reply


def test_large_vars_block_within_buffer_size(instance):
    variables = nginx_vars("GET", "/env", HTTP_COOKIE="c" * 3000)
    assert len(encode_vars(variables)) <= 4096
    env = json.loads(split(request(instance.addr, variables))[1])
    assert env["HTTP_COOKIE"] == "c" * 3000
