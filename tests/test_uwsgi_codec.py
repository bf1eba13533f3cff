"""The uwsgi codec alone: every framing rule of uWSGI 2.0, and property tests on random, truncated,
split and mutated input (reliability.md §3.11, checks C19, C20, C22 at the codec level).

Every test runs twice: on the compiled vars loop (skipped when it is not built) and on the Python one.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve.protocols import uwsgi
from zergserve.protocols.uwsgi import (HEADER, MODIFIER_PING, MODIFIER_WSGI, PONG, BadContentLength,
                                       EmptyConnection, Packet, PacketParser, UwsgiError, content_length,
                                       encode_packet, encode_vars, parse_header, parse_vars)

# What nginx sends for `POST /p?a=1` through the stock uwsgi_params (HTTPS is `if_not_empty`, so absent
# on plain http), then every request header as HTTP_*; duplicates joined with ", " ("; " for Cookie).
NGINX = [("QUERY_STRING", "a=1"), ("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", "text/plain"),
         ("CONTENT_LENGTH", "5"), ("REQUEST_URI", "/p?a=1"), ("PATH_INFO", "/p"),
         ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
         ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "51234"), ("SERVER_PORT", "80"),
         ("SERVER_NAME", "example.com"), ("HTTP_HOST", "example.com"), ("HTTP_USER_AGENT", "curl/8.5.0"),
         ("HTTP_ACCEPT", "*/*"), ("HTTP_CONTENT_TYPE", "text/plain"), ("HTTP_CONTENT_LENGTH", "5"),
         ("HTTP_X_FORWARDED_FOR", "10.0.0.1, 10.0.0.2"), ("HTTP_COOKIE", "a=1; b=2"), ("HTTP_X_EMPTY", "")]


@pytest.fixture(scope="module", params=["c", "python"], autouse=True)
def fast_loop(request):
    """The vars loop every test here goes through; module scope, so hypothesis sees no per-test fixture."""
    loop = uwsgi._fast_vars_c if request.param == "c" else uwsgi._fast_vars_py
    if loop is None:
        pytest.skip("the C accelerator is not built (or ZERGSERVE_PURE_PYTHON is set)")
    saved, uwsgi._fast_vars = uwsgi._fast_vars, loop
    yield request.param
    uwsgi._fast_vars = saved


def raw_vars(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A vars block packed by hand, so parser tests do not lean on the encoder being right."""
    return b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v for k, v in pairs)


def raw_packet(block: bytes, modifier1: int = 0, modifier2: int = 0, size: int | None = None) -> bytes:
    return struct.pack("<BHB", modifier1, len(block) if size is None else size, modifier2) + block


def nginx_packet() -> bytes:
    return raw_packet(raw_vars([(k.encode("latin-1"), v.encode("latin-1")) for k, v in NGINX]))


def parse(data: bytes, buffer_size: int = 4096, max_vars: int = 128, eof: bool = True) -> Packet | None:
    parser = PacketParser(buffer_size, max_vars)
    if data:
        parser.receive_data(data)
    if eof:
        parser.receive_data(b"")
    return parser.next_packet()


def error_of(data: bytes, **kwargs: object) -> str:
    with pytest.raises(UwsgiError) as info:
        parse(data, **kwargs)
    return str(info.value)


# ----- valid packets -------------------------------------------------------------------------------

def test_constants():
    assert HEADER.size == 4 and (MODIFIER_WSGI, MODIFIER_PING) == (0, 100)
    assert PONG == b"\x64\x00\x00\x01" == HEADER.pack(100, 0, 1)


def test_nginx_packet_with_body_bytes():
    parser = PacketParser()
    parser.receive_data(nginx_packet() + b"hel")
    packet = parser.next_packet()
    assert packet == Packet(0, 0, dict(NGINX))
    assert list(packet.vars) == [k for k, _ in NGINX]
    assert parser.trailing == b"hel"
    assert content_length(packet.vars) == 5


def test_byte_at_a_time_keeps_the_body():
    data = nginx_packet() + b"hello"
    end = len(data) - 5
    parser = PacketParser()
    for i in range(len(data)):
        assert parser.next_packet() is None
        parser.receive_data(data[i:i + 1])
        if i + 1 == end:
            break
    parser.receive_data(b"he")
    packet = parser.next_packet()
    assert packet is not None and packet.vars == dict(NGINX)
    assert parser.trailing == b"he"


def test_dribbled_max_size_packet():
    """A 64 KiB block one byte per recv: linear buffering, so this stays well under a second."""
    block = raw_vars([(b"K", b"v" * (0xFFFF - 5))])
    data = raw_packet(block)
    parser = PacketParser(0xFFFF)
    for i in range(len(data)):
        parser.receive_data(data[i:i + 1])
    assert parser.next_packet().vars["K"] == "v" * (0xFFFF - 5)


def test_one_packet_only():
    second = raw_packet(raw_vars([(b"B", b"2")]))
    parser = PacketParser()
    parser.receive_data(raw_packet(raw_vars([(b"A", b"1")])) + second)
    assert parser.next_packet().vars == {"A": "1"}
    parser.receive_data(second)
    parser.receive_data(b"")
    assert parser.next_packet() is None
    assert parser.trailing == second


def test_ping():
    assert parse(b"\x64\x00\x00\x00") == Packet(100, 0, {})
    assert parse(b"\x64\x00\x00\x00", eof=False) == Packet(100, 0, {})


def test_ping_with_vars_keeps_modifier2_and_ignores_vars():
    parser = PacketParser()
    parser.receive_data(raw_packet(b"\x00\x00garbage", modifier1=100, modifier2=7) + b"rest")
    assert parser.next_packet() == Packet(100, 7, {})
    assert parser.trailing == b"rest"


def test_modifier2_is_kept():
    assert parse(raw_packet(raw_vars([(b"A", b"1")]), modifier2=3)) == Packet(0, 3, {"A": "1"})


def test_buffer_size_boundary():
    block = raw_vars([(b"K", b"v" * (4096 - 5))])
    assert len(block) == 4096
    assert parse(raw_packet(block)).vars["K"] == "v" * 4091
    assert error_of(raw_packet(block + b"x"), eof=False) == \
        "invalid request block size: 4097 (max 4096); raise --buffer-size for larger request heads"
    assert parse(raw_packet(b"", size=4097), buffer_size=4097, eof=False) is None


def test_empty_value_last_is_legal_and_last_key_wins():
    block = raw_vars([(b"A", b"1"), (b"B", b"x"), (b"A", b"2"), (b"C", b"")])
    assert parse_vars(block) == {"A": "2", "B": "x", "C": ""}


def test_max_vars_boundary():
    block = raw_vars([(b"K%d" % i, b"v") for i in range(128)])
    assert len(parse_vars(block)) == 128
    assert len(parse(raw_packet(block)).vars) == 128
    block += raw_vars([(b"K", b"v")])
    with pytest.raises(UwsgiError, match=r"^too many vars \(max 128\)$"):
        parse_vars(block)
    assert error_of(raw_packet(block)) == "too many vars (max 128)"
    assert error_of(raw_packet(raw_vars([(b"A", b"1"), (b"B", b"2")])), max_vars=1) == "too many vars (max 1)"


def test_duplicates_count_towards_max_vars():
    with pytest.raises(UwsgiError, match="too many vars"):
        parse_vars(raw_vars([(b"A", b"1")] * 3), max_vars=2)


def test_latin1_bytes_survive():
    block = raw_vars([(b"PATH_INFO", b"/caf\xe9"), (b"HTTP_X", b"\xff\x00\x80"), (b"\xc3\xa9", b"\r\n")])
    assert parse_vars(block) == {"PATH_INFO": "/caf\xe9", "HTTP_X": "\xff\x00\x80", "\xc3\xa9": "\r\n"}


def test_parse_vars_takes_any_bytes_like():
    block = raw_vars([(b"A", b"1"), (b"B", b"")])
    assert parse_vars(bytearray(block)) == parse_vars(memoryview(block)) == {"A": "1", "B": ""}
    assert parse_vars(b"") == {}


def test_parse_header():
    assert parse_header(b"\x00\x10\x00\x00body") == (0, 16, 0)
    assert parse_header(b"\x64\x34\x12\x01") == (100, 0x1234, 1)
    with pytest.raises(UwsgiError, match=r"^truncated packet: got 1 of 4 header bytes$"):
        parse_header(b"\x00")


def test_encoder_bytes_and_round_trip():
    assert encode_vars({"A": "bc", "D": ""}) == b"\x01\x00A\x02\x00bc\x01\x00D\x00\x00"
    assert encode_packet({"A": "bc"}, 0, 2) == b"\x00\x07\x00\x02\x01\x00A\x02\x00bc"
    assert encode_packet(dict(NGINX)) == nginx_packet()
    assert parse(encode_packet(dict(NGINX))) == Packet(0, 0, dict(NGINX))


@pytest.mark.parametrize("variables,modifiers", [
    ({"K": "x" * 0x10000}, (0, 0)),
    ({"K" * 0x10000: "x"}, (0, 0)),
    ({f"K{i}": "x" * 1000 for i in range(70)}, (0, 0)),
    ({"K": "\u20ac"}, (0, 0)),
    ({"K": "v"}, (256, 0)),
    ({"K": "v"}, (0, -1)),
])
def test_encoder_refuses_what_cannot_be_sent(variables, modifiers):
    with pytest.raises(UwsgiError):
        encode_packet(variables, *modifiers)


# ----- framing errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("data,message", [
    (b"\x00\x10", "truncated packet: got 2 of 4 header bytes"),
    (raw_packet(b"\x01\x00", size=10), "truncated packet: got 6 of 14 bytes"),
    (raw_packet(b"", size=100, modifier1=100), "truncated packet: got 4 of 104 bytes"),
    (raw_packet(b""), "empty request (datasize 0)"),
    (raw_packet(b"\x00\x00\x00\x00", modifier1=5), "unavailable modifier requested: 5"),
    (raw_packet(b"", modifier1=72), "unavailable modifier requested: 72"),
    (raw_packet(b"\x00\x00\x02\x00ab"), "uwsgi key cannot be null"),
    (raw_packet(b"\xff\x00abc"), "invalid uwsgi request (current strsize: 255)"),
    (raw_packet(b"\x01\x00a\xff\x7fbb"), "invalid uwsgi request (current strsize: 32767)"),
    (raw_packet(b"\x01\x00a"), "invalid uwsgi request (current strsize: 1)"),
    (raw_packet(b"\x01\x00a\x00"), "invalid uwsgi request (current strsize: 1)"),
    (raw_packet(b"\x01"), "invalid uwsgi request (current strsize: 1)"),
    (raw_packet(raw_vars([(b"A", b"1")]) + b"\x05"), "invalid uwsgi request (current strsize: 1)"),
])
def test_malformed(data, message):
    assert error_of(data) == message


def test_eof_before_anything_is_its_own_error():
    with pytest.raises(EmptyConnection):
        parse(b"")
    assert issubclass(EmptyConnection, UwsgiError) and issubclass(UwsgiError, ValueError)


@pytest.mark.parametrize("header", [raw_packet(b"", size=4097), raw_packet(b"", modifier1=5, size=1),
                                   raw_packet(b""), raw_packet(b"", modifier1=0x16)])
def test_header_errors_do_not_wait_for_the_block(header):
    with pytest.raises(UwsgiError):
        parse(header, eof=False)


def test_truncated_packet_waits_without_eof():
    packet = nginx_packet()
    assert parse(packet[:3], eof=False) is None
    assert parse(packet[:-1], eof=False) is None


def test_errors_are_sticky():
    parser = PacketParser()
    parser.receive_data(raw_packet(b"", modifier1=9))
    for _ in range(2):
        with pytest.raises(UwsgiError, match="unavailable modifier"):
            parser.next_packet()


@pytest.mark.parametrize("method", [b"GET ", b"POST", b"HEAD", b"PUT ", b"DELETE", b"OPTIONS", b"PATCH",
                                    b"CONNECT", b"TRACE", b"PRI * HTTP/2.0"])
def test_http_sent_to_uwsgi_socket_hint(method):
    data = method + b" / HTTP/1.1\r\nHost: a\r\n\r\n"
    size = data[1] | data[2] << 8
    assert error_of(data, eof=False) == \
        f"invalid request block size: {size} (max 4096); this looks like HTTP sent to a uwsgi socket"
    assert error_of(data, buffer_size=0xFFFF, eof=False) == \
        f"unavailable modifier requested: {data[0]}; this looks like HTTP sent to a uwsgi socket"


def test_get_reads_as_datasize_21573():
    assert "block size: 21573 " in error_of(b"GET / HTTP/1.1\r\n\r\n")


def test_tls_sent_to_uwsgi_socket_hint():
    client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    assert error_of(client_hello, eof=False) == \
        "unavailable modifier requested: 22; this looks like TLS sent to a uwsgi socket"


def test_no_hint_for_other_garbage():
    assert "HTTP" not in error_of(b"\x00\xff\xff\x00") and "TLS" not in error_of(b"\x05\x00\x00\x00")


# ----- CONTENT_LENGTH -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [("", 0), ("0", 0), ("12", 12), ("007", 7), ("9" * 18, 10 ** 18 - 1)])
def test_content_length_ok(value, expected):
    assert content_length({"CONTENT_LENGTH": value}) == expected


def test_content_length_absent():
    assert content_length({}) == 0


@pytest.mark.parametrize("value", ["+3", "-1", " 3", "3 ", "0x3", "3_0", "1e3", "3.0", "\u0663", "\u00b2",
                                   "9" * 19, "9" * 5000])
def test_content_length_strict(value):
    with pytest.raises(BadContentLength, match="invalid CONTENT_LENGTH"):
        content_length({"CONTENT_LENGTH": value})


# ----- properties ----------------------------------------------------------------------------------

latin1 = st.characters(max_codepoint=255)
variables = st.dictionaries(st.text(latin1, min_size=1, max_size=20), st.text(latin1, max_size=40),
                            min_size=1, max_size=12)


def feed(parser: PacketParser, data: bytes, sizes: list[int]) -> None:
    """Deliver `data` in chunks of `sizes` (then the rest), never an empty chunk, which would mean EOF."""
    pos = 0
    for size in sizes:
        if data[pos:pos + size]:
            parser.receive_data(data[pos:pos + size])
        pos += size
    if data[pos:]:
        parser.receive_data(data[pos:])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10), st.booleans(),
       st.integers(0, 300), st.integers(0, 20))
def test_random_bytes_only_raise_codec_errors(data, sizes, eof, buffer_size, max_vars):
    parser = PacketParser(buffer_size, max_vars)
    feed(parser, data, sizes)
    if eof:
        parser.receive_data(b"")
    try:
        packet = parser.next_packet()
    except UwsgiError:
        return
    if packet is not None:
        assert packet.modifier1 in (0, 100) and isinstance(packet.vars, dict)
        assert data.endswith(parser.trailing)
    else:
        assert not eof


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 20))
def test_random_vars_blocks_only_raise_codec_errors(block, max_vars):
    try:
        result = parse_vars(block, max_vars)
    except UwsgiError:
        return
    assert len(result) <= max_vars
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in result.items())


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(latin1, min_size=1, max_size=8), st.text(latin1, max_size=16), min_size=1, max_size=5),
       st.sampled_from([0, 100]), st.integers(0, 255))
def test_truncated_valid_packets_at_every_length(vars_, modifier1, modifier2):
    packet = encode_packet(vars_, modifier1, modifier2)
    for cut in range(len(packet)):
        assert parse(packet[:cut], eof=False) is None
        try:
            parse(packet[:cut])
        except EmptyConnection:
            assert cut == 0
        except UwsgiError as exc:
            assert cut and str(exc).startswith("truncated packet: got ")
        else:
            pytest.fail(f"a packet cut at {cut} of {len(packet)} bytes parsed")


@settings(max_examples=200, deadline=None)
@given(variables, st.lists(st.integers(1, 50), max_size=30), st.binary(max_size=20), st.integers(0, 255))
def test_valid_packets_round_trip_in_any_split(vars_, sizes, body, modifier2):
    parser = PacketParser(0xFFFF, 1000)
    feed(parser, encode_packet(vars_, 0, modifier2) + body, sizes)
    reserved = any(name.startswith(("UWSGI_", "wsgi.")) for name in vars_)
    assert parser.next_packet() == Packet(0, modifier2, vars_, reserved)
    assert parser.trailing == body
    assert parser.next_packet() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.binary(max_size=10)), min_size=1, max_size=10))
def test_hand_packed_blocks_decode_with_last_key_winning(pairs):
    expected = {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}
    assert parse_vars(raw_vars(pairs)) == expected
    assert parse_vars(encode_vars(expected)) == expected


@settings(max_examples=300, deadline=None)
@given(variables, st.data())
def test_mutated_valid_packets_only_raise_codec_errors(vars_, data):
    packet = bytearray(encode_packet(vars_))
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse(bytes(packet), buffer_size=0xFFFF)
    except UwsgiError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(4097, 0xFFFF), st.integers(0, 255), st.binary(max_size=100))
def test_oversized_packets_refused_at_once(size, modifier1, rest):
    with pytest.raises(UwsgiError, match=f"^invalid request block size: {size} \\(max 4096\\)"):
        parse(struct.pack("<BHB", modifier1, size, 0) + rest, eof=False)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=25))
def test_content_length_is_digits_or_bad(value):
    try:
        length = content_length({"CONTENT_LENGTH": value})
    except BadContentLength:
        assert not (value.isascii() and value.isdigit() and len(value) <= 18)
        return
    assert length == (int(value) if value else 0) and value.isascii() and (not value or value.isdigit())
