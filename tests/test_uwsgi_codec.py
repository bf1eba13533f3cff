"""The uwsgi codec alone: every framing rule, and property tests on random and truncated input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zergserve.protocols.uwsgi import (PONG, BadContentLength, EmptyConnection, Packet, PacketParser, UwsgiError,
                                       content_length, encode_packet, encode_vars, parse_header, parse_vars)

NGINX = {"QUERY_STRING": "a=1", "REQUEST_METHOD": "POST", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5",
         "REQUEST_URI": "/p?a=1", "PATH_INFO": "/p", "DOCUMENT_ROOT": "/srv", "SERVER_PROTOCOL": "HTTP/1.1",
         "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000", "SERVER_PORT": "80",
         "SERVER_NAME": "example.com", "HTTP_HOST": "example.com", "HTTP_USER_AGENT": "curl/8"}


def parse(data: bytes, buffer_size: int = 4096, max_vars: int = 128, eof: bool = True) -> Packet | None:
    parser = PacketParser(buffer_size, max_vars)
    parser.receive_data(data)
    if eof:
        parser.receive_data(b"")
    return parser.next_packet()


def test_nginx_packet_with_body_bytes():
    parser = PacketParser()
    parser.receive_data(encode_packet(NGINX) + b"hel")
    packet = parser.next_packet()
    assert packet == Packet(0, 0, NGINX)
    assert parser.trailing == b"hel"
    assert content_length(packet.vars) == 5


def test_byte_at_a_time():
    data = encode_packet(NGINX) + b"xy"
    parser = PacketParser()
    for i, byte in enumerate(data[:-2]):
        assert parser.next_packet() is None
        parser.receive_data(bytes([byte]))
    packet = parser.next_packet()
    assert packet is not None and packet.vars == NGINX


def test_one_packet_only():
    parser = PacketParser()
    parser.receive_data(encode_packet({"A": "1"}) + encode_packet({"B": "2"}))
    assert parser.next_packet().vars == {"A": "1"}
    assert parser.next_packet() is None
    assert parser.trailing == encode_packet({"B": "2"})


def test_ping():
    assert parse(b"\x64\x00\x00\x00") == Packet(100, 0, {})
    assert PONG == b"\x64\x00\x00\x01"


def test_buffer_size_boundary():
    block = encode_vars({"K": "v" * (4096 - 5)})
    assert len(block) == 4096
    assert parse(struct.pack("<BHB", 0, 4096, 0) + block).vars["K"]
    with pytest.raises(UwsgiError, match="4097"):
        parse(struct.pack("<BHB", 0, 4097, 0), eof=False)  # refused as soon as the header is in


def test_http_sent_to_uwsgi_socket_hint():
    with pytest.raises(UwsgiError, match="looks like HTTP"):
        parse(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize("data,message", [
    (b"\x00\x10", "truncated"),
    (struct.pack("<BHB", 0, 10, 0) + b"\x01\x00", "truncated"),
    (struct.pack("<BHB", 0, 0, 0), "empty"),
    (struct.pack("<BHB", 5, 0, 0), "unavailable modifier requested: 5"),
    (struct.pack("<BHB", 0, 6, 0) + b"\x00\x00\x02\x00ab", "null"),
    (struct.pack("<BHB", 0, 5, 0) + b"\xff\x00abc", "strsize"),
    (struct.pack("<BHB", 0, 7, 0) + b"\x01\x00a\xff\x00bb", "strsize"),
    (struct.pack("<BHB", 0, 3, 0) + b"\x01\x00a", "strsize"),
    (struct.pack("<BHB", 0, 1, 0) + b"\x01", "strsize"),
])
def test_malformed(data, message):
    with pytest.raises(UwsgiError, match=message):
        parse(data)


def test_eof_before_anything_is_its_own_error():
    with pytest.raises(EmptyConnection):
        parse(b"")


def test_empty_value_last_is_legal_and_last_key_wins():
    block = encode_vars({"A": "1"}) + encode_vars({"A": "2"}) + encode_vars({"B": ""})
    assert parse_vars(block) == {"A": "2", "B": ""}


def test_max_vars():
    block = encode_vars({f"K{i}": "v" for i in range(129)})
    with pytest.raises(UwsgiError, match="too many vars"):
        parse_vars(block, 128)
    assert len(parse_vars(block, 129)) == 129


def test_latin1_bytes_survive():
    variables = {"PATH_INFO": "/caf\xe9", "HTTP_X": "\xff\x00"}
    assert parse_vars(encode_vars(variables)) == variables


@pytest.mark.parametrize("value,expected", [("", 0), ("0", 0), ("12", 12), ("007", 7)])
def test_content_length_ok(value, expected):
    assert content_length({"CONTENT_LENGTH": value}) == expected
    assert content_length({}) == 0


@pytest.mark.parametrize("value", ["+3", "-1", " 3", "3 ", "0x3", "3_0", "1e3", "\u0663", "9" * 19])
def test_content_length_strict(value):
    with pytest.raises(BadContentLength):
        content_length({"CONTENT_LENGTH": value})


def test_parse_header():
    assert parse_header(b"\x00\x10\x00\x00") == (0, 16, 0)
    with pytest.raises(UwsgiError):
        parse_header(b"\x00")


variables = st.dictionaries(st.text(st.characters(max_codepoint=255), min_size=1, max_size=20),
                            st.text(st.characters(max_codepoint=255), max_size=40), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_codec_errors(data):
    parser = PacketParser(256, 16)
    parser.receive_data(data)
    parser.receive_data(b"")
    try:
        parser.next_packet()
    except UwsgiError:
        pass


@settings(max_examples=200, deadline=None)
@given(variables, st.data())
def test_truncated_valid_packets(vars_, data):
    packet = encode_packet(vars_) if vars_ else encode_packet({"A": "b"})
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(UwsgiError):
        parse(packet[:cut])


@settings(max_examples=200, deadline=None)
@given(variables, st.lists(st.integers(1, 50), max_size=30), st.binary(max_size=20))
def test_valid_packets_round_trip_in_any_split(vars_, sizes, body):
    vars_ = vars_ or {"A": "b"}
    data = encode_packet(vars_) + body
    parser = PacketParser(65535, 1000)
    pos = 0
    for size in sizes:
        parser.receive_data(data[pos:pos + size])
        pos += size
    parser.receive_data(data[pos:])
    packet = parser.next_packet()
    assert packet is not None and packet.vars == vars_
    assert parser.trailing == body


@settings(max_examples=100, deadline=None)
@given(st.integers(4097, 65535), st.binary(max_size=100))
def test_oversized_packets_refused(size, rest):
    with pytest.raises(UwsgiError, match="block size"):
        parse(struct.pack("<BHB", 0, size, 0) + rest, eof=False)
