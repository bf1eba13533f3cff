"""The compiled uwsgi vars loop against the Python one: the same dict, the same reserved flag or the
same refusal for any block (a server forced onto the Python codecs is in test_http_speedups.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zergserve.protocols import uwsgi

fast_c = uwsgi._fast_vars_c
needs_c = pytest.mark.skipif(fast_c is None, reason="the C accelerator is not built (or ZERGSERVE_PURE_PYTHON is set)")

# Names the C loop knows (and returns interned), near-misses of them, reserved names and near-misses
# of those, and any bytes.
NAMES = [b"REQUEST_METHOD", b"HTTP_HOST", b"PATH_INFO", b"HTTPS", b"HTTP_DNT", b"HTTP_HOS", b"HTTP_HOSTS",
         b"REQUEST_METHOd", b"SERVER_PORT", b"SERVER_PORX", b"UWSGI_SCHEME", b"UWSGI_", b"UWSGI", b"uWSGI_FILE",
         b"wsgi.", b"wsgi", b"wsgi.input", b"WSGI.input", b"X_UWSGI_FILE"]
pairs = st.lists(st.tuples(st.one_of(st.binary(max_size=12), st.sampled_from(NAMES)), st.binary(max_size=20)),
                 max_size=12)


def pack(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in items)


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    """Valid blocks (empty keys included), then cut, extended or with bytes overwritten."""
    block = bytearray(pack(draw(pairs)))
    kind = draw(st.sampled_from(["valid", "cut", "extra", "mutated", "random"]))
    if kind == "cut" and block:
        del block[draw(st.integers(0, len(block) - 1)):]
    elif kind == "extra":
        block += draw(st.binary(min_size=1, max_size=6))
    elif kind == "mutated" and block:
        for _ in range(draw(st.integers(1, 4))):
            block[draw(st.integers(0, len(block) - 1))] = draw(st.integers(0, 255))
    elif kind == "random":
        block = bytearray(draw(st.binary(max_size=200)))
    return bytes(block)


def outcome(block: bytes, max_vars: int) -> tuple[str, object]:
    """What parse_block does with the block: its dict (with key order) and reserved flag, or its error
    type and text."""
    try:
        result, reserved = uwsgi.parse_block(block, max_vars)
    except Exception as exc:  # every exception is compared, not only UwsgiError
        return type(exc).__name__, str(exc)
    return "ok", (list(result.items()), reserved)


@needs_c
@settings(max_examples=1500, deadline=None)
@given(blocks(), st.integers(-2, 14))
@example(b"", 0)
@example(b"\x00\x00\x00\x00", 128)
@example(b"\x01\x00a\x00\x00\x01\x00a\x01\x00b", 128)
@example(b"\x01\x00a\x00\x00", 0)
@example(b"\x01", 128)
@example(b"\x01\x00a\x00", 128)
def test_c_and_python_agree(block, max_vars):
    python = uwsgi._fast_vars_py(block, max_vars)
    compiled = fast_c(block, max_vars)
    assert compiled == python and (compiled is None or list(compiled[0].items()) == list(python[0].items()))
    saved = uwsgi._fast_vars
    try:
        uwsgi._fast_vars = uwsgi._fast_vars_py
        expected = outcome(block, max_vars)
        uwsgi._fast_vars = fast_c
        assert outcome(block, max_vars) == expected
    finally:
        uwsgi._fast_vars = saved


@needs_c
@pytest.mark.parametrize("block", [b"\x01\x00a\x01\x00b", bytearray(b"\x01\x00a\x01\x00b"),
                                   memoryview(b"xx\x01\x00a\x01\x00b")[2:]])
def test_c_takes_any_bytes_like_and_any_int(block):
    assert fast_c(block, 128) == uwsgi._fast_vars_py(block, 128) == ({"a": "b"}, False)
    assert fast_c(block, 10 ** 30) == uwsgi._fast_vars_py(block, 10 ** 30) == ({"a": "b"}, False)
    assert fast_c(block, -(10 ** 30)) is uwsgi._fast_vars_py(block, -(10 ** 30)) is None
    for bad in ("1", 1.5, None):
        with pytest.raises(TypeError):
            uwsgi._fast_vars_py(block, bad)
        with pytest.raises(TypeError):
            fast_c(block, bad)
    with pytest.raises(TypeError):
        fast_c("text", 128)


@needs_c
def test_known_names_come_interned():
    """nginx's uwsgi_params names are the same str object every time; others are new ones."""
    import sys

    block = pack([(b"REQUEST_METHOD", b"GET"), (b"HTTP_X_CUSTOM", b"1"), (b"HTTP_HOST", b"a")])
    names = list(fast_c(block, 128)[0])
    assert names == ["REQUEST_METHOD", "HTTP_X_CUSTOM", "HTTP_HOST"]
    assert names[0] is sys.intern("REQUEST_METHOD") and names[2] is sys.intern("HTTP_HOST")
    assert names[1] is not list(fast_c(block, 128)[0])[1]


@needs_c
def test_short_values_are_kept_and_given_again():
    """A short value sent again is the str made the first time; a long one is made anew. Values
    whose cache slots collide still come back as their own bytes (the differential test above
    covers random ones)."""
    long_value = b"q=" + b"x" * 100
    block = pack([(b"REQUEST_METHOD", b"GET"), (b"SERVER_NAME", b"example.org"), (b"QUERY_STRING", long_value)])
    first, again = fast_c(block, 128)[0], fast_c(block, 128)[0]
    assert first == again == {"REQUEST_METHOD": "GET", "SERVER_NAME": "example.org", "QUERY_STRING": long_value.decode()}
    assert first["SERVER_NAME"] is again["SERVER_NAME"] and first["REQUEST_METHOD"] is again["REQUEST_METHOD"]
    assert first["QUERY_STRING"] is not again["QUERY_STRING"]
    values = [b"v%d" % n for n in range(2000)] + [b"\xe9t\xe9", b"caf\xc3\xa9"]  # more than the slots
    for _ in range(2):
        for value in values:
            assert fast_c(pack([(b"A", value)]), 128)[0] == {"A": value.decode("latin-1")}
