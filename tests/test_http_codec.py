"""The HTTP/1.1 codec alone: the gate in front of h11, fed whole and byte at a time, and fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve.protocols.http import (NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, HTTPConnection,
                                      HTTPError, Limits, Request)


def events(data: bytes, split: bool = False, keep_alive: bool = True, eof: bool = True) -> list:
    """All events for `data`, cycling through pipelined requests; an HTTPError is the last item."""
    conn = HTTPConnection(Limits(), keep_alive=keep_alive)
    chunks = [data[i:i + 1] for i in range(len(data))] if split else [data]
    if eof:
        chunks.append(b"")
    out: list = []
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


def only_error(data: bytes) -> int:
    """The status of the error the request must end in, checked whole and byte at a time."""
    statuses = []
    for split in (False, True):
        result = events(data, split)
        assert isinstance(result[-1], HTTPError), result
        assert not any(isinstance(e, Request) and e.path == "/smug" for e in result)
        statuses.append(result[-1].status)
    assert statuses[0] == statuses[1]
    return statuses[0]


@pytest.mark.parametrize("split", [False, True])
def test_get(split):
    result = events(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: b \r\n\r\n", split)
    request = result[0]
    assert isinstance(request, Request)
    assert (request.method, request.target, request.path, request.query) == ("GET", "/a%20b?x=1", "/a%20b", "x=1")
    assert request.headers == [("host", "h"), ("x-a", "b")]
    assert request.keep_alive and request.content_length is None and not request.chunked
    assert isinstance(result[1], EndOfMessage)


@pytest.mark.parametrize("split", [False, True])
def test_post_content_length(split):
    result = events(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", split)
    assert result[0].content_length == 5
    assert b"".join(e.data for e in result if isinstance(e, Data)) == b"hello"
    assert isinstance(result[-1], (EndOfMessage, ConnectionClosed))


@pytest.mark.parametrize("split", [False, True])
def test_chunked_and_trailers_dropped(split):
    result = events(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nHost: evil\r\n\r\n", split)
    assert result[0].chunked
    assert b"".join(e.data for e in result if isinstance(e, Data)) == b"hello!"
    assert not any("evil" in repr(e) for e in result)


def test_pipelined_requests_each_pass_the_gate():
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
    result = events(data)
    assert [e.path for e in result if isinstance(e, Request)] == ["/0", "/1", "/2"]
    result = events(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n")
    assert isinstance(result[0], Request) and isinstance(result[-1], HTTPError)


def test_keep_alive_off_never_cycles():
    conn = HTTPConnection(keep_alive=False)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    head = conn.send_response(200, b"OK", [(b"Content-Length", b"2")])
    assert b"Connection: close\r\n" in head
    conn.send_data(b"ok")
    conn.send_end()
    assert conn.must_close and not conn.start_next_cycle()


def test_response_framing():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event()
    head = conn.send_response(200, b"OK", [(b"X", b"y")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX: y\r\nDate: ") and b"Transfer-Encoding: chunked" in head
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n" and conn.send_end() == b"0\r\n\r\n"
    conn = HTTPConnection()
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event()
    conn.send_response(200, b"OK", [(b"Content-Length", b"3")])
    assert conn.send_data(b"abc") == b""
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    conn.next_event()
    head = conn.send_response(200, b"OK", [])
    assert b"Connection: close" in head and conn.send_data(b"abc") == b"abc" and conn.must_close


def test_expect_continue_once():
    conn = HTTPConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    assert conn.next_event().expect_continue
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b""


@pytest.mark.parametrize("target", [b"*", b"http://example.com/a?b"])
def test_options_star_and_absolute_form(target):
    method = b"OPTIONS" if target == b"*" else b"GET"
    result = events(method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(result[0], Request)


SMUGGLE = b"GET /smug HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("data,status", [
    # C03: CL + TE with a pipelined request behind
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + SMUGGLE, 400),
    # C05: TE semantics
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x85chunked\r\n\r\n", 501),
    # C06: chunk framing
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5_0\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 21 + b"\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0_2e\r\n\r\n" + SMUGGLE, 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 400),  # cut before final CRLF
    # C07: head hygiene
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x07b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX(y): z\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: X\x01Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n", 400),
    # C08: Content-Length forms
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
    # C09: version and target
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    (b"G T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"G\xe9T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    # Host rules (h11's, kept)
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    # truncated head at EOF
    (b"GET / HTTP/1.1\r\nHost: h\r\n", 400),
])
def test_invalid_requests(data, status):
    assert only_error(data) == status


def test_limits():
    assert only_error(b"GET /" + b"a" * 4095 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414
    assert only_error(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 8190 + b"\r\n\r\n") == 431
    assert only_error(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 100 + b"\r\n") == 431
    assert only_error(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Long: " + b"a" * 8000 + b"\r\n" * 1
                      + b"".join(b"Y%d: %s\r\n" % (i, b"b" * 7000) for i in range(12)) + b"\r\n") == 431
    fine = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 8000 + b"\r\n" + b"Y: a\r\n" * 98 + b"\r\n"
    assert isinstance(events(fine)[0], Request)


def test_incomplete_head_bounded_before_it_ends():
    conn = HTTPConnection()
    conn.receive_data(b"GET /" + b"a" * 5000)
    with pytest.raises(HTTPError) as info:
        conn.next_event()
    assert info.value.status == 414
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 9000)
    with pytest.raises(HTTPError) as info:
        conn.next_event()
    assert info.value.status == 431


def test_chunk_extension_amplification_bounded():
    """C17: `1;` + 1 MiB of extension without CRLF is refused after bounded buffering."""
    conn = HTTPConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    with pytest.raises(HTTPError):
        for _ in range(64):
            conn.receive_data(b"1;" + b"e" * 16384)
            while conn.next_event() is not NEED_DATA:
                pass


def test_nothing_parsed_after_an_error():
    conn = HTTPConnection()
    conn.receive_data(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
    with pytest.raises(HTTPError):
        conn.next_event()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(HTTPError):
        conn.next_event()
    assert conn.error_response(HTTPError(400, "x")).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_underscore_names_kept_for_the_wsgi_layer_to_drop():
    request = events(b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1\r\n\r\n")[0]
    assert ("x_forwarded_for", "1") in request.headers


VALID = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_http_errors(data):
    events(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_requests_only_raise_http_errors(data):
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    events(bytes(raw), split=data.draw(st.booleans()))
