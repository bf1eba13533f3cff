"""The compiled head gate against the Python one: the same Request or the same HTTPError (status and
reason) for any head, valid, cut, mutated or random, under any limits; and a server forced onto the
Python codecs (this gate, the uwsgi vars loop) with ZERGSERVE_PURE_PYTHON=1 still serves and refuses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import accelerated, raw, start
from test_http_codec import events
from zergserve.protocols import http, uwsgi
from zergserve.protocols.http import DEFAULT_LIMITS, HTTPConnection, HTTPError, Limits, Request

fast_c = http._load_accelerator()
fast_request = http._load_accelerator("fast_request")
needs_c = pytest.mark.skipif(fast_c is None, reason="the C accelerator is not built (or ZERGSERVE_PURE_PYTHON is set)")

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHARS = "".join(map(chr, range(0x21, 0x7f)))
SPECIAL = ["Host", "Content-Length", "Transfer-Encoding", "Content-Type", "Expect", "Connection", "Upgrade"]
# Names the C gate returns interned (any case), and near misses of them.
KNOWN = ["User-Agent", "Accept", "Accept-Encoding", "Cookie", "X-Real-IP", "TE", "DNT", "Hos", "Hostt", "User-Agenx"]
WORDS = [b"close", b"keep-alive", b"Keep-Alive", b"CLOSE", b"100-continue", b"100-Continue", b"chunked",
         b"Chunked", b"gzip", b"0", b"5", b"007", b"-1", b"1" * 18, b"1" * 19, b"\xb2", b" 5 ", b"\t12\t",
         b"close, keep-alive", b" keep-alive ,\tclose ", b",,", b"websocket", b"h", b""]
# Field values: the words the gate looks for, or bytes the syntax allows (blanks, VCHAR, obs-text),
# or, among the any parts, bytes with CTLs, a bare CR or LF.
GOOD_VALUE = st.sampled_from(WORDS) | st.lists(st.sampled_from(b" \t,\x80\xe9\xff") | st.integers(0x21, 0x7e),
                                               max_size=10).map(bytes)
ANY_VALUE = GOOD_VALUE | st.lists(st.sampled_from(b" \t\x00\x01\x0b\x7f\r\n") | st.integers(0x21, 0x7e),
                                  max_size=6).map(bytes)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A head from random parts: half of them from good parts only (which the gate mostly takes, or
    refuses for a rule across fields), the others from any parts, then maybe cut, extended or mutated."""
    good = draw(st.booleans())
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"get"]) if good else
                  st.sampled_from([b"GET", b"CONNECT", b""]) | st.text(TCHARS, min_size=1, max_size=8).map(str.encode))
    target = draw(st.text(VCHARS, max_size=12).map(lambda t: b"/" + t.encode())
                  | st.sampled_from([b"/", b"/a?b=1", b"/a?b?c", b"/?", b"*", b"http://h/x", b"HTTPS://h",
                                     b"http://u@h/", b"http:///x", b"x"] + ([] if good else [b"", b"/\xe9", b"/a b"])))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"] + ([] if good else [b"HTTP/2.0", b"HTTP/1.2", b"http/1.1"])))
    fields = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(SPECIAL + KNOWN) | st.text(TCHARS, min_size=1, max_size=6)
                    if good else st.text(TCHARS + ": ", max_size=6))
        name = draw(st.sampled_from([name, name.lower(), name.upper()]))
        fields.append(name.encode() + b":" + draw(GOOD_VALUE if good else ANY_VALUE))
    framing = draw(st.sampled_from([b"", b"Content-Length: 42", b"content-length:0", b"Transfer-Encoding: chunked",
                                    b"TRANSFER-ENCODING:\tChunked ", b"Expect: 100-continue"]))
    if framing:
        fields.insert(draw(st.integers(0, len(fields))), framing)
    if draw(st.integers(0, 3)) > (0 if good else 2):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: h")
    head = bytearray(b"%s %s %s\r\n" % (method, target, version) + b"".join(f + b"\r\n" for f in fields) + b"\r\n")
    kind = "valid" if good else draw(st.sampled_from(["valid", "cut", "extra", "mutated", "random"]))
    if kind == "cut":
        del head[draw(st.integers(0, len(head) - 1)):]
    elif kind == "extra":
        head += draw(st.binary(min_size=1, max_size=6))
    elif kind == "mutated":
        for _ in range(draw(st.integers(1, 3))):
            head[draw(st.integers(0, len(head) - 1))] = draw(st.sampled_from(b"\x00\t\n\r :,\x7f\x80") | st.integers(0, 255))
    elif kind == "random":
        head = bytearray(draw(st.binary(max_size=80)))
    return bytes(head)


# Mostly the defaults; else small limits that the heads above reach.
limits = st.sampled_from([True, True, True, False]).flatmap(
    lambda default: st.just(DEFAULT_LIMITS) if default else st.builds(
        Limits, st.integers(-1, 60), st.integers(-1, 7), st.integers(-1, 50), st.integers(-1, 300)))


def outcome(head: bytes, gate: object, limit: Limits) -> object:
    """What _parse_head makes of the head with `gate` as the compiled gate: the Request, or the error."""
    saved, http._fast_head = http._fast_head, gate
    try:
        return HTTPConnection(limit)._parse_head(head)
    except HTTPError as exc:
        return exc.status, exc.reason
    finally:
        http._fast_head = saved


@needs_c
@settings(max_examples=2000, deadline=None)
@given(heads(), limits)
@example(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.0\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: ,close,\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\nHost: h\r\nX: \xe9\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\n\r\n\r\n", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\nHost: h\r\n\r", DEFAULT_LIMITS)
@example(b"GET / HTTP/1.1\r\nHost:", DEFAULT_LIMITS)
@example(b"", DEFAULT_LIMITS)
def test_c_and_python_agree(head, limit):
    python = outcome(head, None, limit)
    assert outcome(head, fast_c, limit) == python
    compiled = fast_c(head, limit)
    assert compiled is None or compiled == tuple(python)
    request = fast_c(head, limit, Request)
    assert request == compiled and (request is None or type(request) is Request)


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(heads(), min_size=1, max_size=3), st.booleans())
def test_connections_fed_heads_agree(data, split):
    """A whole connection fed several heads, whole or byte at a time: the same events on both gates."""
    joined = b"".join(data)
    found = []
    for gate, finder in ((fast_c, fast_request), (None, None)):
        saved = http._fast_head, http._fast_request
        http._fast_head, http._fast_request = gate, finder
        try:
            found.append([(e.status, e.reason) if isinstance(e, HTTPError) else e if isinstance(e, tuple) else repr(e)
                          for e in events(joined, split)])  # EndOfMessage and ConnectionClosed by their repr
        finally:
            http._fast_head, http._fast_request = saved
    assert found[0] == found[1]


@needs_c
@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=8), heads(), st.binary(max_size=12), limits)
@example(b"", b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", b"", DEFAULT_LIMITS)
@example(b"xx", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /", DEFAULT_LIMITS)
def test_the_c_finder_reads_what_the_gate_would(before, head, after, limit):
    """fast_request finds the head that starts at the position and reads it as fast_head would,
    or says None; whatever follows the head (a pipelined request, a body) is left where it is."""
    buf = before + head + after
    found = fast_request(buf, len(before), limit, Request)
    end = buf.find(b"\r\n\r\n", len(before))
    if end < 0 or buf.startswith(b"\r\n", len(before)):
        assert found is None
        return
    expected = fast_c(buf[len(before):end + 4], limit, Request)
    assert found == (None if expected is None else (expected, end + 4))
    with pytest.raises(TypeError):
        fast_request(bytearray(buf), len(before), limit, Request)


@needs_c
def test_c_interns_common_names():
    """Common methods, versions and field names are the same str object on every request."""
    import sys

    head = b"POST /a?b HTTP/1.1\r\nHOST: h\r\nUser-agent: u\r\nX-Mine: m\r\nContent-Length: 0\r\n\r\n"
    method, target, path, query, version, headers = fast_c(head, DEFAULT_LIMITS)[:6]
    assert (method, target, path, query, version) == ("POST", "/a?b", "/a", "b", "1.1")
    assert headers == [("host", "h"), ("user-agent", "u"), ("x-mine", "m"), ("content-length", "0")]
    for known in (method, version, headers[0][0], headers[1][0], headers[3][0]):
        assert known is sys.intern(known)
    assert headers[2][0] is not fast_c(head, DEFAULT_LIMITS)[5][2][0]  # others are made anew
    request = fast_c(b"GET /a HTTP/1.0\r\n\r\n", DEFAULT_LIMITS)
    assert request[1] is request[2] and request[4] == "1.0"  # the path is the target when there is no query


@needs_c
@pytest.mark.parametrize("head", [b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", bytearray(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"),
                                  memoryview(b"..GET /x HTTP/1.1\r\nHost: h\r\n\r\n")[2:]])
def test_c_takes_any_bytes_like(head):
    assert fast_c(head, DEFAULT_LIMITS) == ("GET", "/x", "/x", "", "1.1", [("host", "h")], None, False, False,
                                            True, False)
    assert fast_c(head, Limits(10 ** 30, 10 ** 30, 10 ** 30, 10 ** 30)) is not None
    assert fast_c(head, Limits(-(10 ** 30), 1, 1, 1)) is None
    for odd in ((1, 2, 3), None, [4094, 100, 8190, 65536], (1, 2, 3, "4"), (4094.0, 100, 8190, 65536)):
        assert fast_c(head, odd) is None  # the Python judges them
    with pytest.raises(TypeError):
        fast_c("text", DEFAULT_LIMITS)


@needs_c
@pytest.mark.parametrize("codec", ["http", "uwsgi"])
def test_pure_python_env_forces_the_fallbacks(codec):
    assert accelerated(codec, {"ZERGSERVE_PURE_PYTHON": "1"}) == "False"
    assert accelerated(codec, {"ZERGSERVE_PURE_PYTHON": "0"}) == "True"


APP = """from zergserve import compiled
from zergserve.protocols import http, uwsgi
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    flags = f"{http.ACCELERATED} {uwsgi.ACCELERATED} {compiled.ACTIVE}"
    return [f"{environ['PATH_INFO']} {environ.get('HTTP_X_A')} {flags}".encode('latin-1')]
"""


def test_server_on_the_python_codecs(spawn, workdir, monkeypatch):
    """ZERGSERVE_PURE_PYTHON=1: both codecs on their Python paths (no C accelerator, no mypyc) in a
    real server serve, and refuse."""
    (workdir / "which.py").write_text(APP)
    monkeypatch.setenv("ZERGSERVE_PURE_PYTHON", "1")  # the server's environment is copied from ours
    server = start(spawn, workdir, "--socket-timeout", "2", module="which:application", workers=1, uwsgi="unix",
                   stats=False, mercy=None)
    reply = raw(server.http, b"GET /p HTTP/1.1\r\nHost: h\r\nX-A:  b \r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"/p b False False False")
    assert raw(server.http, b"GET /p HTTP/1.1\r\nHost: h\r\nX-A: \x01\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    reply = raw(server.usock, uwsgi.encode_packet({"REQUEST_METHOD": "GET", "PATH_INFO": "/caf\xe9",
                                                   "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_X_A": "c"}))
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"/caf\xe9 c False False False")
    assert raw(server.usock, struct.pack("<BHB", 0, 6, 0) + b"\x00\x00\x02\x00ab", half_close=True) == b""
    server.wait_log("uwsgi key cannot be null")


# --- the response's header fields ------------------------------------------------------------------

fields_c = http._load_accelerator("fast_fields")
RESPONSE_NAMES = [b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Transfer-Encoding", b"Keep-Alive",
                  b"Connection", b"connection", b"Date", b"DATE", b"Server", b"server", b"Content-Type", b"X-A",
                  b"Content-Lengthy", b"Dates", b"Serve"]
RESPONSE_VALUES = [b"13", b"0", b"007", b"13 ", b"-1", b"", b"1" * 18, b"1" * 19, b"\xb2", b"close", b"Close",
                   b"keep-alive, CLOSE", b"clos", b"text/plain", b"x" * 40]
header_lists = st.lists(st.tuples(st.sampled_from(RESPONSE_NAMES) | st.binary(max_size=6),
                                  st.sampled_from(RESPONSE_VALUES) | st.binary(max_size=8)), max_size=8)


def python_fields(headers: list) -> object:
    try:
        return http._response_fields(headers)
    except HTTPError as exc:
        return (exc.status, exc.reason)


@needs_c
@settings(max_examples=3000, deadline=None)
@given(header_lists)
@example([(b"Content-Length", b"5"), (b"content-length", b"5"), (b"Connection", b"close"), (b"Date", b"x")])
@example([(b"Content-Length", b"5"), (b"Content-Length", b"6")])
@example([(b"Content-Length", b"1" * 19)])
def test_compiled_fields_match_the_python_loop(headers: list) -> None:
    """Whatever the compiled loop answers is what the Python loop answers; where it answers None
    (a bad or conflicting Content-Length, one over 18 digits) the Python one is left to say it."""
    fast = fields_c(headers)
    if fast is None:
        assert any(name.lower() == b"content-length" for name, _ in headers)
        return
    assert fast == python_fields(headers)


@needs_c
def test_compiled_fields_leave_what_is_not_a_list_of_byte_pairs_to_python() -> None:
    for headers in ([("a", "b")], [(b"a", b"b", b"c")], [[b"a", b"b"]], ((b"a", b"b"),), [(bytearray(b"a"), b"b")]):
        assert fields_c(headers) is None
    assert fields_c([]) == (b"", None, False, False, False)


@needs_c
def test_c_gate_refuses_a_class_that_is_no_tuple():
    head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    for bad in (dict, "Request", None):
        with pytest.raises(TypeError):
            fast_c(head, DEFAULT_LIMITS, bad)
    with pytest.raises(TypeError):
        fast_c(head, DEFAULT_LIMITS, Request, 1)
