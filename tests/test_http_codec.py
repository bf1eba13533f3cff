"""The HTTP/1.1 codec alone: the gate in front of h11 with the bytes of research reliability.md §1.1,
§1.2, §1.7 and checks C03–C17, each fed whole and byte at a time, and fuzzed; every test on the
compiled head gate and on the pure-Python one."""

from __future__ import annotations

import time
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve.protocols import http
from zergserve.protocols.http import (NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, HTTPConnection,
                                      HTTPError, Limits, Request)

SMUGGLE = b"GET /smug HTTP/1.1\r\nHost: h\r\n\r\n"
CHUNKED = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(scope="module", params=["c", "python"], autouse=True)
def head_gate(request):
    """The head gate every test here goes through; module scope, so hypothesis sees no per-test fixture."""
    compiled = http._load_accelerator()
    if request.param == "c" and compiled is None:
        pytest.skip("the C accelerator is not built (or ZERGSERVE_PURE_PYTHON is set)")
    saved, http._fast_head = http._fast_head, compiled if request.param == "c" else None
    yield request.param
    http._fast_head = saved


def events(data: bytes, split: bool = False, keep_alive: bool = True, eof: bool = True) -> list[Any]:
    """All events for `data`, answering each request with an empty 200 and cycling through
    pipelined requests; an HTTPError is the last item."""
    conn = HTTPConnection(Limits(), keep_alive=keep_alive)
    chunks = [data[i:i + 1] for i in range(len(data))] if split else [data]
    if eof:
        chunks.append(b"")
    out: list[Any] = []
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    conn.send_response(200, b"OK", [(b"Content-Length", b"0")])
                    conn.send_end()
                    if not conn.start_next_cycle():
                        return out
                    continue
                out.append(event)
                if isinstance(event, ConnectionClosed):
                    return out
    except HTTPError as exc:
        out.append(exc)
    return out


def both(data: bytes, **kwargs: Any) -> list[Any]:
    """Events for `data` fed whole; byte at a time must give the same requests, bodies and ending."""
    whole = events(data, **kwargs)
    assert summary(events(data, split=True, **kwargs)) == summary(whole)
    return whole


def summary(result: list[Any]) -> list[Any]:
    """Requests with their joined bodies, and the ending: what must not depend on how bytes arrive."""
    out: list[Any] = []
    for event in result:
        if isinstance(event, Request):
            out.append([event, b""])
        elif isinstance(event, Data):
            out[-1][1] += event.data
        elif isinstance(event, HTTPError):
            out = [item[0] if isinstance(item, list) else item for item in out]  # a body cut by an error may differ
            out.append(event.status)
    return out


def body(result: list[Any]) -> bytes:
    return b"".join(e.data for e in result if isinstance(e, Data))


def paths(result: list[Any]) -> list[str]:
    return [e.path for e in result if isinstance(e, Request)]


def only_error(data: bytes) -> int:
    """The status of the error the request must end in, checked whole and byte at a time; no
    smuggled request reaches the app."""
    statuses = []
    for split in (False, True):
        result = events(data, split)
        assert isinstance(result[-1], HTTPError), result
        assert "/smug" not in paths(result)
        statuses.append(result[-1].status)
    assert statuses[0] == statuses[1]
    return statuses[0]


def served(conn: HTTPConnection, data: bytes, split: bool = False) -> Request:
    """Feed `data` whole or byte at a time (asking for events after each byte until the request
    head is out); the request."""
    pieces = [data[i:i + 1] for i in range(len(data))] if split else [data]
    request = None
    for piece in pieces:
        conn.receive_data(piece)
        if request is None:
            event = conn.next_event()
            if event is not NEED_DATA:
                request = event
    assert isinstance(request, Request), request
    return request


# --- valid requests ---------------------------------------------------------------------------

def test_get():
    result = both(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A:  b \r\nX-A: \tc\r\n\r\n")
    request = result[0]
    assert (request.method, request.target, request.path, request.query) == ("GET", "/a%20b?x=1", "/a%20b", "x=1")
    assert request.http_version == "1.1"
    assert request.headers == [("host", "h"), ("x-a", "b"), ("x-a", "c")]
    assert request.keep_alive and request.content_length is None and not request.chunked
    assert not request.expect_continue
    assert isinstance(result[1], EndOfMessage) and isinstance(result[2], ConnectionClosed)


def test_post_content_length():
    result = both(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert result[0].content_length == 5 and not result[0].chunked
    assert body(result) == b"hello"
    assert isinstance(result[-1], ConnectionClosed)


def test_chunked_with_extensions_and_trailers_dropped():
    """C11: trailers never reach the app."""
    result = both(CHUNKED + b"5\r\nhello\r\n1;ext=1;q=\"a b\"\r\n!\r\n0\r\nX-Checksum: evil\r\nX-N: 99\r\n\r\n")
    assert result[0].chunked and result[0].content_length is None
    assert body(result) == b"hello!"
    assert not any("evil" in repr(e) or "99" in repr(e) for e in result)
    assert isinstance(result[-1], ConnectionClosed)


@pytest.mark.parametrize("field", [b"Host", b"content-length", b"Transfer-Encoding", b"Content-Type", b"Trailer",
                                   b"Authorization", b"Cookie"])
def test_trailer_fields_that_rfc9110_forbids_are_refused(field):
    """RFC 9110 §6.5.1: framing, routing, modifiers, authentication and content fields are no trailers."""
    assert only_error(CHUNKED + b"5\r\nhello\r\n0\r\n" + field + b": x\r\n\r\n") == 400


def test_tiny_chunks_cost_bounded_framing():
    """A million one-byte chunks are refused after their framing outgrows the data by 64 KiB (the
    bytes fed before the refusal bound the work; no clock needed)."""
    data = CHUNKED + b"1\r\nx\r\n" * 1_000_000 + b"0\r\n\r\n"
    conn = HTTPConnection()
    served(conn, CHUNKED)
    fed = len(CHUNKED)
    with pytest.raises(HTTPError) as info:
        while fed < len(data):
            conn.receive_data(data[fed:fed + 65536])
            fed += 65536
            while conn.next_event() is not NEED_DATA:
                pass
    assert info.value.status == 400 and "chunk framing" in info.value.reason
    assert fed < 200_000
    tiny = b"1\r\nx\r\n" * 17000 + b"0\r\n\r\n"  # 68,000 bytes of framing over 17,000 of data
    assert only_error(CHUNKED + tiny) == 400
    large = both(CHUNKED + b"1000\r\n" + b"a" * 4096 + b"\r\n" + tiny)
    assert len(body(large)) == 4096 + 17000  # after a large chunk, tiny ones ride on its credit


def test_duplicated_content_type_is_refused():
    assert only_error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n") == 400


def test_absolute_form_authority_wins_over_host():
    (request, *_) = both(b"GET http://real.example:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert request.path == "/p/q" and request.query == "x=1"
    assert ("host", "real.example:8080") in request.headers and ("host", "other") not in request.headers
    (request, *_) = both(b"GET https://real.example HTTP/1.1\r\nHost: other\r\n\r\n")
    assert request.path == "/"
    assert only_error(b"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n") == 400


def test_field_size_limit_counts_the_whole_line_with_its_crlf():
    """As gunicorn counts --limit-request-field-size: name, colon, value and CRLF."""
    limits = Limits(field_size=10)
    for line, ok in ((b"X: 12345", True), (b"X: 123456", False)):  # 10 and 11 bytes with the CRLF
        for split in (False, True):
            conn = HTTPConnection(limits)
            data = b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n"
            pieces = [data[i:i + 1] for i in range(len(data))] if split else [data]
            try:
                for piece in pieces:
                    conn.receive_data(piece)
                    event = conn.next_event()
                assert ok and isinstance(event, Request), (line, split)
            except HTTPError as exc:
                assert not ok and exc.status == 431, (line, split)


def test_chunk_size_with_trailing_whitespace_is_the_documented_residual():
    assert body(both(CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n")) == b"hello"


def test_pipelined_three_requests_each_pass_the_gate():
    """C12: three requests in one write, answered in order."""
    data = (b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
            + CHUNKED.replace(b"/", b"/2", 1) + b"3\r\ndef\r\n0\r\n\r\n")
    result = both(data)
    assert paths(result) == ["/0", "/1", "/2"]
    assert body(result) == b"abcdef"
    assert isinstance(result[-1], ConnectionClosed)


@pytest.mark.parametrize("split", [False, True])
def test_keep_alive_cycle(split):
    conn = HTTPConnection()
    for i in range(3):
        request = served(conn, b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i, split)
        assert request.path == f"/{i}"
        assert isinstance(conn.next_event(), EndOfMessage)
        assert conn.next_event() is PAUSED
        head = conn.send_response(200, b"OK", [(b"Content-Length", b"2")])
        assert b"Connection" not in head and conn.response_started
        assert conn.send_data(b"ok") == b"ok" and conn.send_end() == b""
        assert not conn.must_close and conn.start_next_cycle()
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_leading_empty_lines_are_ignored():
    """RFC 9112 §2.2: a server SHOULD ignore at least one CRLF before a request line."""
    assert paths(both(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")) == ["/"]
    assert isinstance(both(b"\r\n")[-1], ConnectionClosed)


@pytest.mark.parametrize("split", [False, True])
def test_head_response_has_no_body_and_keeps_alive(split):
    """C14: HEAD, 204 and 304 carry no body bytes and keep the connection."""
    for method, status in ((b"HEAD", 200), (b"GET", 204), (b"GET", 304)):
        conn = HTTPConnection()
        assert served(conn, method + b" / HTTP/1.1\r\nHost: h\r\n\r\n", split).method == method.decode()
        assert isinstance(conn.next_event(), EndOfMessage)
        head = conn.send_response(status, b"X", [(b"Content-Length", b"3")])
        assert b"Transfer-Encoding" not in head
        assert conn.send_data(b"abc") == b"" and conn.send_end() == b""
        assert conn.start_next_cycle()


@pytest.mark.parametrize("split", [False, True])
def test_expect_continue_once(split):
    conn = HTTPConnection()
    request = served(conn, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n", split)
    assert request.expect_continue
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b""
    conn.receive_data(b"x")
    assert conn.next_event() == Data(b"x")
    assert isinstance(conn.next_event(), EndOfMessage)


def test_expect_continue_not_after_response_nor_on_http_1_0():
    conn = HTTPConnection()
    served(conn, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    conn.send_response(413, b"Too Large", [(b"Content-Length", b"0")])
    assert conn.send_continue() == b""
    conn = HTTPConnection()
    request = served(conn, b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    assert not request.expect_continue and conn.send_continue() == b""


@pytest.mark.parametrize("line", [b"OPTIONS * HTTP/1.1", b"GET http://example.com/a?b HTTP/1.1",
                                  b"GET HTTPS://example.com HTTP/1.1"])
def test_options_star_and_absolute_form(line):
    """C09: the target forms a server must accept."""
    request = both(line + b"\r\nHost: h\r\n\r\n")[0]
    assert isinstance(request, Request) and request.target == line.split(b" ")[1].decode()


def test_underscore_names_kept_for_the_wsgi_layer_to_drop():
    """C10 is the WSGI layer's: the codec keeps `_` names, the environ drops them."""
    request = both(b"GET / HTTP/1.1\r\nHost: h\r\nContent_Length: 5\r\nX_Forwarded_For: 1\r\n\r\n")[0]
    assert ("x_forwarded_for", "1") in request.headers and ("content_length", "5") in request.headers
    assert request.content_length is None


def test_obs_text_in_values_is_kept_as_latin1():
    request = both(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n")[0]
    assert ("x", "caf\xe9") in request.headers


def test_connection_header_tokens():
    def keep(head: bytes) -> bool:
        return both(head + b"\r\n\r\n")[0].keep_alive
    assert not keep(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, Close")
    assert keep(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed")
    assert not keep(b"GET / HTTP/1.0")
    assert keep(b"GET / HTTP/1.0\r\nConnection: keep-alive")


def test_http_1_0_keep_alive_response():
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.next_event()
    assert b"Connection: keep-alive\r\n" in conn.send_response(200, b"OK", [(b"Content-Length", b"0")])
    conn.send_end()
    assert conn.start_next_cycle()


# --- invalid requests -------------------------------------------------------------------------

@pytest.mark.parametrize("data,status", [
    # C03: CL + TE with a pipelined request behind (h11 alone serves /smug)
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + SMUGGLE, 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + SMUGGLE, 400),
    # C05: TE semantics (waitress CVE-2019-16786/16789, gunicorn CVE-2024-1135/6827)
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked, identity, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ((b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
      b"5\r\nhello\r\n0\r\n\r\n"), 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x85chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 501),
    # C06: chunk framing (CVE-2025-43859 footer, http-garden #1, waitress CVE-2022-24761)
    (CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5_0\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"1" * 21 + b"\r\n", 400),
    (CHUNKED + b"1" * 17 + b"\r\n", 400),
    (CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400),
    (CHUNKED + b"5\r\nhello\n0\r\n\r\n", 400),
    (CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5;a\x01b\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5;a\x7f\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"0_2e\r\n\r\n" + SMUGGLE, 400),
    (CHUNKED + b"0\r\n", 400),  # cut before the final CRLF (gunicorn 26.1)
    (CHUNKED + b"5\r\nhel", 400),
    # C11: trailers that are a request (gevent CVE-2023-41419 shape), or framed by bare LF
    (CHUNKED + b"0\r\n" + SMUGGLE, 400),
    (CHUNKED + b"0\r\nX: y\n\r\n" + SMUGGLE, 400),
    (CHUNKED + b"0\r\nX: y\r\n\n" + SMUGGLE, 400),
    (CHUNKED + b"0\r\nX: a\rb\r\n\r\n" + SMUGGLE, 400),
    (CHUNKED + b"0\r\nX: a\r\n b\r\n\r\n" + SMUGGLE, 400),
    # C07: head hygiene (waitress CVE-2019-16785, http-garden #2/#18–#20, §1.1 CTL row)
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\nX-Header: x\nContent-Length: 0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nX: y\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nHeader: v\x00\ralue\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nFoo: bar\r\n Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x07b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: X\x01Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX(y): z\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nUseless\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length\x85: 10\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nUseless:\n\nGET / HTTP/1.1\r\n\r\n", 400),
    # C08: Content-Length forms (waitress CVE-2019-16792)
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \xd9\xa3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
    # C09: version and target (RFC 9112 §2.3, §3.2)
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"PUT s://]ufd/: HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /a\xffb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    (b"G T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"G\xe9T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS sent to the HTTP port
    # Host rules (h11's, kept)
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    # C12: a valid request then garbage: served, then the error
    # truncated head at EOF
    (b"GET / HTTP/1.1\r\nHost: h\r\n", 400),
    (b"GET / HTT", 400),
])
def test_invalid_requests(data, status):
    assert only_error(data) == status


def test_valid_then_garbage_is_served_then_refused():
    """C12 (uvicorn/http-garden bug 45): the first response is not lost."""
    for split in (False, True):
        result = events(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n", split)
        assert paths(result) == ["/"] and isinstance(result[1], EndOfMessage)
        assert isinstance(result[-1], HTTPError) and result[-1].status == 400


def test_connection_close_then_pipelined_request_is_not_served():
    """C12: after `Connection: close` the pipelined request is never parsed."""
    assert paths(both(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + SMUGGLE)) == ["/"]
    assert paths(both(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLE, keep_alive=False)) == ["/"]


def test_truncated_body_is_an_error_not_an_end():
    """C26 at codec level: EOF inside a body never reads as a complete body."""
    for data in (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello", CHUNKED + b"5\r\nhel"):
        result = both(data)
        assert not any(isinstance(e, EndOfMessage) for e in result)
        assert isinstance(result[-1], HTTPError) and result[-1].status == 400
        assert "truncated" in result[-1].reason


def test_truncated_head_reason():
    result = events(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert "truncated" in result[-1].reason


def test_nothing_parsed_after_an_error():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
    with pytest.raises(HTTPError) as first:
        conn.next_event()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    for _ in range(2):
        with pytest.raises(HTTPError) as again:
            conn.next_event()
        assert again.value is first.value
    assert conn.must_close and not conn.start_next_cycle()
    response = conn.error_response(first.value)
    assert response.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n")
    assert b"Connection: close\r\n" in response and response.endswith(b"\r\n\r\n505 HTTP Version Not Supported\n")
    assert conn.error_response(first.value) == b""


def test_error_in_a_chunk_line_stops_before_h11_sees_it():
    conn = HTTPConnection()
    request = served(conn, CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLE)
    assert request.chunked
    with pytest.raises(HTTPError):
        conn.next_event()
    assert conn.must_close


# --- limits (C16, C17) ------------------------------------------------------------------------

def test_limits():
    assert only_error(b"GET /" + b"a" * 4081 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414  # 4095 B line
    assert isinstance(both(b"GET /" + b"a" * 4080 + b" HTTP/1.1\r\nHost: h\r\n\r\n")[0], Request)  # 4094 B
    assert only_error(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 8186 + b"\r\n\r\n") == 431  # 8191 B with CRLF
    assert isinstance(both(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 8185 + b"\r\n\r\n")[0], Request)
    assert only_error(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 100 + b"\r\n") == 431  # 101 fields
    assert isinstance(both(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 99 + b"\r\n")[0], Request)
    big = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"Y%d: %s\r\n" % (i, b"b" * 7000) for i in range(15)) + b"\r\n"
    assert only_error(big) == 431  # a 100 KB head in one write: raw h11 accepts it


def test_custom_limits():
    conn = HTTPConnection(Limits(request_line=20, fields=2, field_size=10, head=100))
    conn.receive_data(b"GET /" + b"a" * 20)
    with pytest.raises(HTTPError) as info:
        conn.next_event()
    assert info.value.status == 414
    conn = HTTPConnection(Limits(request_line=20, fields=2, field_size=10, head=100))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n")
    with pytest.raises(HTTPError) as info:
        conn.next_event()
    assert info.value.status == 431


def test_incomplete_head_bounded_before_it_ends():
    for data, status in ((b"GET /" + b"a" * 5000, 414), (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, 431),
                         (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101, 431),
                         (b"GET / HTTP/1.1\r\n" + (b"X: " + b"a" * 8000 + b"\r\n") * 9, 431),
                         (b"GET / HTTP/1.1\nHost: h\n", 400)):
        for split in (False, True):
            result = events(data, split, eof=False)
            assert isinstance(result[-1], HTTPError) and result[-1].status == status, (data[:40], split)


def test_byte_at_a_time_head_is_scanned_once():
    """A 60 KB head trickled one byte per read costs linear time (no re-scan, no quadratic copy)."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X%d: %s\r\n" % (i, b"v" * 700) for i in range(85)) + b"\r\n"
    conn = HTTPConnection()
    started = time.process_time()  # this process's CPU: what a loaded host's other processes do not add to
    for i in range(len(head) - 1):
        conn.receive_data(head[i:i + 1])
        assert conn.next_event() is NEED_DATA
    conn.receive_data(head[-1:])
    assert isinstance(conn.next_event(), Request)
    assert time.process_time() - started < 2.0


def test_control_byte_after_long_value_is_linear():
    """waitress CVE-2020-5236: a long value ending in a CTL is refused at once."""
    data = b"GET / HTTP/1.1\r\nHost: h\r\nfoo: " + b"x" * 8000 + b"\x10\r\n\r\n"
    started = time.process_time()  # this process's CPU: what a loaded host's other processes do not add to
    assert only_error(data) == 400
    conn = HTTPConnection(Limits(field_size=1 << 20, head=1 << 20))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nfoo: " + b"x" * 65536 + b"\x10\r\n\r\n")
    with pytest.raises(HTTPError):
        conn.next_event()
    assert time.process_time() - started < 2.0


@pytest.mark.parametrize("piece", [1024, 1 << 20])
def test_chunk_extension_amplification_bounded(piece):
    """C17: `1;` + 1 MiB of extension without CRLF is refused after at most 16 KiB buffered."""
    conn = HTTPConnection()
    served(conn, CHUNKED)
    data = b"1;" + b"e" * (1 << 20)
    fed = 0
    with pytest.raises(HTTPError) as info:
        while fed < len(data):
            conn.receive_data(data[fed:fed + piece])
            fed += piece
            while conn.next_event() is not NEED_DATA:
                pass
    assert info.value.status == 400
    if piece < 16384:
        assert fed <= 16384


def test_trailers_bounded():
    conn = HTTPConnection()
    served(conn, CHUNKED + b"0\r\n")
    with pytest.raises(HTTPError) as info:
        for _ in range(100):
            conn.receive_data(b"X: " + b"a" * 1000 + b"\r\n")
            while conn.next_event() is not NEED_DATA:
                pass
    assert info.value.status == 431


def test_many_small_chunks():
    """C17: 100,000 eight-byte chunks are read in well under 2 s of CPU (one-byte ones are refused
    before that many: test_tiny_chunks_cost_bounded_framing)."""
    conn = HTTPConnection()
    served(conn, CHUNKED)
    data = b"8\r\nxxxxxxxx\r\n" * 100_000 + b"0\r\n\r\n"
    started = time.process_time()
    total = 0
    for i in range(0, len(data), 65536):
        conn.receive_data(data[i:i + 65536])
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Data):
                total += len(event.data)
            if isinstance(event, EndOfMessage):
                break
    assert total == 800_000 and isinstance(event, EndOfMessage)
    assert time.process_time() - started < 2.0


# --- responses (C14 at codec level) ------------------------------------------------------------

def test_response_framing():
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = conn.send_response(200, b"OK", [(b"X", b"y")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX: y\r\nDate: ") and b"Transfer-Encoding: chunked" in head
    assert b"\r\nServer: zergserve\r\n" in head and head.endswith(b"\r\n\r\n")
    assert conn.response_started
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n" and conn.send_data(b"") == b""
    assert conn.send_end() == b"0\r\n\r\n"
    conn = HTTPConnection(server=b"me")
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = conn.send_response(200, b"OK", [(b"Server", b"app"), (b"Date", b"d"), (b"Transfer-Encoding", b"gzip"),
                                           (b"Content-Length", b"1")])
    assert head.count(b"Server:") == 1 and head.count(b"Date:") == 1 and b"Transfer-Encoding" not in head
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.0\r\n\r\n")
    head = conn.send_response(200, b"OK", [])
    assert b"Connection: close" in head and conn.send_data(b"abc") == b"abc" and conn.must_close


def test_keep_alive_off_never_cycles():
    conn = HTTPConnection(keep_alive=False)
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLE)
    head = conn.send_response(200, b"OK", [(b"Content-Length", b"2")])
    assert b"Connection: close\r\n" in head
    conn.send_data(b"ok")
    conn.send_end()
    assert conn.must_close and not conn.start_next_cycle()


def test_app_connection_close_header_closes():
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = conn.send_response(200, b"OK", [(b"Connection", b"close"), (b"Content-Length", b"0")])
    assert head.count(b"Connection:") == 1 and conn.must_close


def test_response_shorter_or_longer_than_its_content_length_closes():
    """C14: declared 10, sent 5 → no reuse; declared 5, given 10 → 5 bytes, then close."""
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event()
    conn.send_response(200, b"OK", [(b"Content-Length", b"10")])
    conn.send_data(b"12345")
    conn.send_end()
    assert conn.must_close and not conn.start_next_cycle()
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event()
    conn.send_response(200, b"OK", [(b"Content-Length", b"5")])
    assert conn.send_data(b"1234567890") == b"12345" and conn.send_data(b"x") == b""
    conn.send_end()
    assert conn.must_close


def test_bytes_after_a_closing_request_wait():
    """h11 refuses data after an HTTP/1.0 body; the codec holds it until the caller closes."""
    conn = HTTPConnection()
    served(conn, b"POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nx" + SMUGGLE)
    assert conn.next_event() == Data(b"x")
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.next_event() is PAUSED and conn.next_event() is PAUSED
    conn.send_response(200, b"OK", [(b"Content-Length", b"0")])
    conn.send_end()
    assert conn.must_close and not conn.start_next_cycle()


def test_unread_body_blocks_the_next_cycle():
    conn = HTTPConnection()
    served(conn, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
    conn.send_response(200, b"OK", [(b"Content-Length", b"0")])
    conn.send_end()
    assert not conn.start_next_cycle()


@pytest.mark.parametrize("status,headers", [(200, [(b"Content-Length", b"x")]),
                                            (200, [(b"Content-Length", b"-1")]),
                                            (200, [(b"Content-Length", b"1"), (b"Content-Length", b"2")]),
                                            (100, []), (1000, [])])
def test_unframeable_response_is_an_http_error_500(status, headers):
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(HTTPError) as info:
        conn.send_response(status, b"X", headers)
    assert info.value.status == 500
    assert not conn.response_started
    assert conn.error_response(HTTPError(500, "x")).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_send_response_twice_or_before_a_request():
    conn = HTTPConnection()
    with pytest.raises(HTTPError):
        conn.send_response(200, b"OK", [])
    assert conn.error_response(HTTPError(400, "bad")).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.send_response(200, b"OK", [])
    with pytest.raises(HTTPError):
        conn.send_response(200, b"OK", [])
    assert conn.error_response(HTTPError(500, "late")) == b""


# --- fuzzing ----------------------------------------------------------------------------------

VALID = [b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
         CHUNKED + b"3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
         b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_http_errors(data):
    both(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_valid_requests_only_raise_http_errors(data):
    """Random byte changes, insertions and deletions; whole and byte at a time agree."""
    raw = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        byte = data.draw(st.sampled_from([0, 9, 10, 13, 32, 44, 58, 59, 127, 133, 255]) | st.integers(0, 255))
        if action == "set":
            raw[pos] = byte
        elif action == "insert":
            raw.insert(pos, byte)
        else:
            del raw[pos]
    both(bytes(raw))


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    """A request the gate must accept: CL, chunked (extensions, trailers) or no body; 1.1 or 1.0."""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    line = b"%s %s %s\r\n" % (draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS"])),
                               draw(st.sampled_from([b"/", b"/a?b=1", b"/%20x", b"http://h/x"])), version)
    headers = [b"Host: h"] if version == b"HTTP/1.1" or draw(st.booleans()) else []
    headers += draw(st.lists(st.sampled_from([b"X: y", b"X-Z:  a b ", b"Connection: keep-alive", b"A_B: c", b"Q:"]),
                             max_size=3))
    data = draw(st.binary(max_size=20))
    form = draw(st.sampled_from(["none", "length", "chunked"] if version == b"HTTP/1.1" else ["none", "length"]))
    payload = b""
    if form == "length":
        headers.append(b"Content-Length: %d" % len(data))
        payload = data
    elif form == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        i = 0
        while i < len(data):
            n = draw(st.integers(1, len(data) - i))
            ext = draw(st.sampled_from([b"", b";a=1", b';a="q r"', b";x"]))
            payload += b"%x%s\r\n%s\r\n" % (n, ext, data[i:i + n])
            i += n
        payload += b"0\r\n" + b"".join(draw(st.lists(st.sampled_from([b"T: 1\r\n", b"X-Evil: 1\r\n"]), max_size=2)))
        payload += b"\r\n"
    return line + b"".join(h + b"\r\n" for h in draw(st.permutations(headers))) + b"\r\n" + payload


def h11_reading(data: bytes) -> tuple[list[list[Any]], bool]:
    """Targets and bodies as raw h11 reads `data`, and whether h11 stopped at a closing request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list[list[Any]] = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            out.append([event.target.decode(), b""])
        elif isinstance(event, h11.Data):
            out[-1][1] += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return out, True
            conn.start_next_cycle()
        else:
            return out, False


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_request(), min_size=1, max_size=3), st.booleans())
def test_valid_requests_read_as_h11_reads_them(requests, split):
    """The gate refuses nothing valid and frames bodies exactly as h11 does (h11 alone stops after
    an HTTP/1.0 request, which the codec may keep alive)."""
    data = b"".join(requests)
    result = events(data, split)
    assert not any(isinstance(e, HTTPError) for e in result), result
    ours = [[item[0].target, item[1]] for item in summary(result)]
    theirs, closed = h11_reading(data)
    n = min(len(ours), len(theirs))
    assert ours[:n] == theirs[:n] and (closed or ours == theirs)


def test_websocket_upgrade_and_the_bytes_after_its_head():
    from zergserve.protocols.http import is_websocket_upgrade
    h = HTTPConnection()
    h.receive_data(b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\x81\x80abcd")
    request = h.next_event()
    assert is_websocket_upgrade(request) and h.trailing() == b"\x81\x80abcd"
    h = HTTPConnection()
    h.receive_data(b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")  # no Connection: upgrade
    assert not is_websocket_upgrade(h.next_event())


def test_status_lines_are_made_once_and_their_table_is_bounded():
    """An app may make up reason phrases: each still gets its own status line, and the table of
    lines made once holds one per status code, whatever the reasons."""
    for i in range(1000):
        conn = HTTPConnection()
        served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", False)
        head = conn.send_response(200 + i % 300, b"Made Up %d" % (i % 450), [(b"Content-Length", b"0")])
        assert head.startswith(b"HTTP/1.1 %d Made Up %d\r\n" % (200 + i % 300, i % 450))
    assert len([code for code in http._STATUS_LINES if 200 <= code < 500]) == 300
    made = http._STATUS_LINES[200][1]
    conn = HTTPConnection()
    served(conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", False)
    reason = http._STATUS_LINES[200][0]
    assert conn.send_response(200, reason, [(b"Content-Length", b"0")]).startswith(made)
    assert http._STATUS_LINES[200][1] is made  # the same reason again: the line made before
