"""The exchange with byte scripts and no sockets: fed whole, byte by byte and in random pieces, it
must say the same things; trailing data, timeouts, refusals and the after-response decision."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve import wsgi
from zergserve.accesslog import AccessLog, compile_format
from zergserve.exchange import CLOSE, DRAIN, KEEP, LINGER, RECEIVE, SERVE, Context, Exchange, Reply
from zergserve.protocols import http as h1
from zergserve.protocols.uwsgi import encode_packet


class Row:
    """The scoreboard row, and where make_ctx() puts the context's error and access lines."""

    def __init__(self) -> None:
        self.begun: list[bytes] = []
        self.ended: list[int] = []
        self.errors: list[str] = []
        self.lines: list[str] = []

    def begin(self, line: bytes, now: float) -> None:
        self.begun.append(line)

    def end(self, sent: int, elapsed: float, failed: bool) -> None:
        self.ended.append(sent)


class Listener:
    def __init__(self, proto: str) -> None:
        self.proto = proto
        self.name = f"{proto}.sock"


def make_ctx(**options: Any) -> Context:
    """A context whose error lines and access lines land in its row's `errors` and `lines`."""
    row = Row()
    ctx = Context(app=None, row=row, wid=1, log_error=row.errors.append, access_log=None, limits=h1.Limits(),
                  keep_alive=True, **options)
    ctx.access_log = AccessLog(compile_format("zergserve", ctx), lambda line, now: row.lines.append(line))
    return ctx


def drive(chunks: list[bytes], proto: str = "http", read_body: bool = True, **options: Any) -> list[Any]:
    """Play a connection that sends `chunks` (then EOF): requests are answered 200 with their body
    echoed; the transcript of what the exchange asked for, minus the Date header."""
    ctx = make_ctx(**options)
    ex = Exchange(ctx, Listener(proto), ("10.0.0.1", 4000))
    feed = iter(chunks)
    out: list[Any] = []
    while True:
        action = ex.next_action()
        if action is RECEIVE:
            ex.receive_data(next(feed, b""))
        elif isinstance(action, Reply):
            out.append(("reply", _dateless(action.data), action.linger))
            return out
        else:
            assert action is SERVE
            body = b""
            try:
                while read_body:
                    piece = ex.body_next()
                    if type(piece) is bytes:
                        if not piece:
                            break
                        body += piece
                    else:
                        ex.body_data(next(feed, b""))
            except (wsgi.RequestError, wsgi.ClientDisconnected) as exc:
                out.append(("body error", type(exc).__name__))
                ex.abort()
            else:
                wire = ex.head(200, b"OK", [(b"Content-Length", b"%d" % len(body))], body) + ex.end()
                out.append(("response", ex.method, ex.target, body, _dateless(wire)))
            after = ex.after_response(200, len(body))
            if after == DRAIN:
                while (piece := ex.body_next()) != b"":
                    if type(piece) is not bytes:
                        ex.body_data(next(feed, b""))
                after = KEEP
            if after != KEEP or not ex.next_request():
                out.append(("after", after))
                return out


def _dateless(wire: bytes) -> bytes:
    return b"\r\n".join(line for line in wire.split(b"\r\n") if not line.startswith(b"Date: "))


def whole_and_bytewise(data: bytes, **kwargs: Any) -> list[Any]:
    whole = drive([data], **kwargs)
    assert drive([data[i:i + 1] for i in range(len(data))], **kwargs) == whole
    return whole


GET = b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n"
POST_CL = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
UWSGI_POST = encode_packet({"REQUEST_METHOD": "POST", "REQUEST_URI": "/u", "CONTENT_LENGTH": "5",
                            "SERVER_PROTOCOL": "HTTP/1.1"}) + b"hello"
SCRIPTS = [
    (GET % 1 + GET % 2 + POST_CL + POST_CHUNKED, "http"),
    (b"\r\n" + POST_CHUNKED + GET % 3, "http"),
    (UWSGI_POST, "uwsgi"),
    (UWSGI_POST + b"trailing bytes are never a request", "uwsgi"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", "http"),
]


@pytest.mark.parametrize("data,proto", SCRIPTS)
def test_whole_and_byte_by_byte_say_the_same(data, proto):
    whole_and_bytewise(data, proto=proto)


def test_pipelined_requests_then_eof():
    result = whole_and_bytewise(GET % 1 + POST_CL + POST_CHUNKED)
    assert [(item[1], item[2], item[3]) for item in result if item[0] == "response"] == [
        ("GET", "/1", b""), ("POST", "/p", b"hello"), ("POST", "/c", b"abcde")]
    assert result[-1] == ("reply", b"", False)  # EOF between requests: a quiet close


def test_uwsgi_body_stops_at_content_length_and_the_connection_closes():
    result = whole_and_bytewise(UWSGI_POST + b"EXTRA", proto="uwsgi")
    assert result[0][3] == b"hello" and result[0][4].startswith(b"HTTP/1.1 200 OK\r\n")
    assert result[-1] == ("after", "closed")


def test_refusals_are_replies():
    assert whole_and_bytewise(b"GET / HTTP/1.1\r\n\r\n")[-1][0:3:2] == ("reply", True)  # no Host: 400, linger
    (reply,) = whole_and_bytewise(POST_CL, limit_post=3)
    assert reply[1].startswith(b"HTTP/1.1 413 Content Too Large\r\n") and reply[2]
    (reply,) = drive([encode_packet({"CONTENT_LENGTH": "10"})], proto="uwsgi", limit_post=3)
    assert reply[1].startswith(b"HTTP/1.0 413 Content Too Large\r\n")
    assert drive([encode_packet({}, modifier1=100)], proto="uwsgi") == [("reply", b"\x64\x00\x00\x01", False)]
    assert drive([b""], proto="uwsgi") == [("reply", b"", False)]  # a bare connect: no log line


def test_timeouts_408_only_when_bytes_arrived():
    ctx = make_ctx()
    ex = Exchange(ctx, Listener("http"), None)
    assert ex.next_action() is RECEIVE
    ex.timed_out()
    assert ex.next_action() is CLOSE and ctx.row.errors == []
    ex = Exchange(ctx, Listener("http"), None)
    ex.receive_data(b"GET / HT")
    assert ex.next_action() is RECEIVE
    ex.timed_out()
    action = ex.next_action()
    assert action.data.startswith(b"HTTP/1.1 408 ") and "request head not complete" in ctx.row.errors[0]


def test_a_body_the_app_left_is_drained_then_the_next_request():
    result = whole_and_bytewise(POST_CL + GET % 9, read_body=False)
    assert [item[2] for item in result if item[0] == "response"] == ["/p", "/9"]


def test_a_stalled_body_past_its_clock_is_a_408_and_a_quiet_one_a_disconnect():
    for timeout, error in ((1e-9, wsgi.RequestTimeout), (60.0, wsgi.ClientDisconnected)):
        ex = Exchange(make_ctx(body_timeout=timeout), Listener("http"), None)
        ex.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n")
        assert ex.next_action() is SERVE
        try:
            wait = ex.body_next()
            assert isinstance(wait, float)
            ex.body_stalled()
        except wsgi.RequestError as exc:
            assert isinstance(exc, error)
        except wsgi.ClientDisconnected as exc:
            assert isinstance(exc, error)
        assert ex.after_response(408, 0) == LINGER


def test_expect_continue_once_and_access_line_escaped():
    ctx = make_ctx()
    ex = Exchange(ctx, Listener("uwsgi"), None)
    ex.receive_data(encode_packet({"REQUEST_URI": "/x\n", "REMOTE_ADDR": "1.2.3.4\nforged"}))
    assert ex.next_action() is SERVE
    ex.after_response(200, 0)
    assert ctx.row.lines[0].startswith('1.2.3.4\\nforged "GET /x\\n HTTP/1.0" 200 0 ')
    ex = Exchange(ctx, Listener("http"), None)
    ex.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    ex.next_action()
    assert ex.interim() == b"HTTP/1.1 100 Continue\r\n\r\n" and ex.interim() == b""


@settings(max_examples=150, deadline=None)
@given(script=st.sampled_from(SCRIPTS), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_split_says_the_same(script, cuts):
    data, proto = script
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]
    assert drive(pieces, proto=proto) == drive([data], proto=proto)


def test_uwsgi_refusal_over_a_unix_socket_names_the_listener():
    """Behind nginx on a UNIX socket there is no peer address: error lines name the socket, the
    access line nginx's REMOTE_ADDR."""
    ctx = make_ctx()
    ex = Exchange(ctx, Listener("uwsgi"), "")
    ex.receive_data(encode_packet({"CONTENT_LENGTH": "-1", "REMOTE_ADDR": "1.2.3.4"}))
    action = ex.next_action()
    assert action.data.startswith(b"HTTP/1.0 400 Bad Request\r\n") and "(peer uwsgi.sock)" in ctx.row.errors[0]
    ex = Exchange(ctx, Listener("uwsgi"), "")
    ex.receive_data(encode_packet({"REMOTE_ADDR": "1.2.3.4"}))
    assert ex.next_action() is SERVE
    ex.after_response(200, 0)
    assert ctx.row.lines[-1].startswith('1.2.3.4 "GET  HTTP/1.0" 200 0 ')
