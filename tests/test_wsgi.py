"""The WSGI adapter alone: start_response checks (cached or not), the uwsgi environ's filtering."""

from __future__ import annotations

from typing import Any

import pytest

from zergserve import wsgi


class Sink:
    """Collects what wsgi.run() would put on the wire."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.finished = self.aborted = False
        self.lasts: list[bool] = []  # each send's `last`

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                  last: bool) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.lasts.append(last)

    def send_body(self, data: bytes, last: bool) -> None:
        self.body += data
        self.lasts.append(last)

    def sendfile(self, file: Any, count: int | None) -> int | None:
        return None

    def finish(self, flush: bool) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


def serve(status: Any, headers: Any) -> tuple[Sink, list[str]]:
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]
    sink, errors = Sink(), []
    wsgi.run(app, {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, sink, errors.append)
    return sink, errors


@pytest.mark.parametrize("headers", [
    [("X-Ok", "1"), ("Set-Cookie", "a=1\r\nX-Injected: 1")],
    [("Bad Name", "1")],
    [("X", "nul\0byte")],
    [("X", ["not", "hashable"])],
    [("X", "1", "extra")],
    [["X", "1"]],
    [("X", "\u20ac")],
])
def test_bad_headers_are_a_500_every_time(headers):
    """The field cache remembers only fields that passed: a bad one fails on every response."""
    for _ in range(3):
        sink, errors = serve("200 OK", headers)
        assert sink.status == 500 and b"Injected" not in b"".join(v for _, v in sink.headers)
        assert errors and "error in app" in errors[0]


def test_good_headers_are_encoded_and_remembered():
    headers = [("Content-Type", "text/plain"), ("X-A", "caf\xe9")]
    for _ in range(2):
        sink, errors = serve("201 Created", headers)
        assert errors == [] and sink.status == 201
        assert sink.headers[:2] == [(b"Content-Type", b"text/plain"), (b"X-A", b"caf\xe9")]
        assert (b"Content-Length", b"4") in sink.headers and sink.body == b"body"


@pytest.mark.parametrize("headers, chunks, lasts", [
    ([], [b"body"], [True]),  # one chunk: its Content-Length is added, so the head and body are last
    ([("Content-Length", "6")], [b"ab", b"cd", b"ef"], [False, False, True]),
    ([("Content-Length", "3")], [b"ab", b"cdef", b"gh"], [False, True]),  # cut at 3, the rest dropped
    ([("Content-Length", "0")], [], [True]),
    ([], [b"ab", b"cd"], [False, False]),  # no length: only the end (finish) closes the body
])
def test_the_write_that_completes_the_content_length_is_last(headers, chunks, lasts):
    """The sink learns which bytes end the response, so that a connection closing after it can send
    them with its FIN (connection._Sink)."""
    def app(environ, start_response):
        start_response("200 OK", headers)
        return chunks
    sink, errors = Sink(), []
    wsgi.run(app, {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, sink, errors.append)
    assert sink.lasts == lasts and sink.finished


@pytest.mark.parametrize("status", ["2000 OK", "200  OK\n", b"200 OK", 200, "099 Low"])
def test_bad_status_is_a_500_every_time(status):
    for _ in range(2):
        assert serve(status, [])[0].status == 500


@pytest.mark.parametrize("extra, dropped, kept", [
    ({}, [], []),
    ({"UWSGI_SCRIPT": "evil"}, ["UWSGI_SCRIPT"], []),
    ({"wsgi.evil": "1"}, ["wsgi.evil"], []),
    ({"HTTP_X_UWSGI_": "1", "X_wsgi.y": "2"}, [], ["HTTP_X_UWSGI_", "X_wsgi.y"]),  # inside a name: no prefix
    ({"X_wsgi.y": "2", "UWSGI_APPID": "a"}, ["UWSGI_APPID"], ["X_wsgi.y"]),
])
def test_uwsgi_environ_finds_magic_vars_only_as_prefixes(extra, dropped, kept):
    base = wsgi.base_environ("host", "80")
    variables = {"REQUEST_METHOD": "GET", "PATH_INFO": "/wsgi.py", "QUERY_STRING": "UWSGI_FILE=x", **extra}
    env = wsgi.uwsgi_environ(base, variables, wsgi.Input(None))
    assert not any(name in env for name in dropped) and all(env[name] == extra[name] for name in kept)
    assert env["PATH_INFO"] == "/wsgi.py" and env["QUERY_STRING"] == "UWSGI_FILE=x"


def test_status_with_unknown_or_no_reason():
    assert serve("299 Custom Thing", [])[0].status == 299
    assert serve("204", [])[0].status == 204


def test_uwsgi_environ_drops_magic_vars_and_keeps_the_servers_wsgi_keys():
    base = wsgi.base_environ("host", "80")
    body = wsgi.Input(None)
    env = wsgi.uwsgi_environ(base, {"REQUEST_METHOD": "POST", "PATH_INFO": "/p", "UWSGI_FILE": "/tmp/evil.py",
                                    "wsgi.url_scheme": "javascript", "wsgi.errors": "x", "wsgi.evil": "1",
                                    "SERVER_NAME": "from-nginx"}, body)
    assert "UWSGI_FILE" not in env and "wsgi.evil" not in env
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.errors"] is base["wsgi.errors"]
    assert env["wsgi.input"] is body and env["SERVER_NAME"] == "from-nginx"
    assert env["REQUEST_METHOD"] == "POST" and env["QUERY_STRING"] == "" and env["SERVER_PROTOCOL"] == "HTTP/1.0"
    https = wsgi.uwsgi_environ(base, {"HTTPS": "on"}, body)
    assert https["wsgi.url_scheme"] == "https" and base["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("value, length", [
    (b"0", 0), (b"13", 13), (b"999999999", 999999999), (b"000000000013", 13),
    (b"123456789012345678901234", 123456789012345678901234),
    (b"", None), (b"1a", None), (b"+1", None), (b"-1", None), (b" 1", None), (b"1 ", None), (b"\xb2", None),
])
def test_content_length_from_the_app_is_plain_digits(value, length):
    if length is None:
        with pytest.raises(wsgi.AppError):
            wsgi._content_length(value)
    else:
        assert wsgi._content_length(value) == length
