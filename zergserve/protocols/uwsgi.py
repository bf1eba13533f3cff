"""The uwsgi binary protocol, sans-I/O: what nginx `uwsgi_pass` sends and how to read it.

A packet is a 4-byte header (modifier1 u8, datasize u16 little-endian, modifier2 u8) followed by
`datasize` bytes of vars: repeated `u16le key_len, key, u16le val_len, val`. The request body
follows, its length given only by CONTENT_LENGTH. One packet per connection: bytes after it are
body, never a second request (uWSGI issue #2336 shows why).
"""

from __future__ import annotations

import struct
from typing import Mapping, NamedTuple

HEADER = struct.Struct("<BHB")
HEADER_SIZE = 4
MODIFIER_WSGI = 0
MODIFIER_PING = 100
PONG = b"\x64\x00\x00\x01"
_U16 = struct.Struct("<H")
_HTTP_LIKE = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ")


class UwsgiError(ValueError):
    """A malformed packet: log str(err) and close the connection without a reply."""


class EmptyConnection(UwsgiError):
    """The peer closed without sending anything: a probe, not worth a log line."""


class BadContentLength(UwsgiError):
    """CONTENT_LENGTH is not plain ASCII digits: answer 400, then close."""


class Packet(NamedTuple):
    modifier1: int
    modifier2: int
    vars: dict[str, str]


class PacketParser:
    """Incremental parser for exactly one uwsgi packet per connection."""

    __slots__ = ("buffer_size", "max_vars", "_buf", "_eof", "_size", "_trailing", "_done")

    def __init__(self, buffer_size: int = 4096, max_vars: int = 128) -> None:
        self.buffer_size = buffer_size
        self.max_vars = max_vars
        self._buf = b""
        self._eof = False
        self._size = -1
        self._trailing = b""
        self._done = False

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; b'' means the peer closed."""
        if not data:
            self._eof = True
        elif not self._done:
            self._buf += data

    def next_packet(self) -> Packet | None:
        """The packet once it is complete, None while more bytes are needed."""
        if self._done:
            return None
        buf = self._buf
        if self._size < 0:
            if len(buf) < HEADER_SIZE:
                if self._eof and not buf:
                    raise EmptyConnection("connection closed before any byte")
                if self._eof:
                    raise UwsgiError(f"truncated packet: got {len(buf)} of {HEADER_SIZE} header bytes")
                return None
            modifier1, size, _ = HEADER.unpack_from(buf)
            if size > self.buffer_size:
                hint = ("; this looks like HTTP sent to a uwsgi socket" if buf[:4] in _HTTP_LIKE
                        else "; raise --buffer-size for larger request heads")
                raise UwsgiError(f"invalid request block size: {size} (max {self.buffer_size}){hint}")
            if modifier1 not in (MODIFIER_WSGI, MODIFIER_PING):
                raise UwsgiError(f"unavailable modifier requested: {modifier1}")
            if modifier1 == MODIFIER_WSGI and size == 0:
                raise UwsgiError("empty request (datasize 0)")
            self._size = size
        end = HEADER_SIZE + self._size
        if len(buf) < end:
            if self._eof:
                raise UwsgiError(f"truncated packet: got {len(buf)} of {end} bytes")
            return None
        modifier1, _, modifier2 = HEADER.unpack_from(buf)
        self._done = True
        self._trailing = buf[end:]
        self._buf = b""
        if modifier1 == MODIFIER_PING:
            return Packet(modifier1, modifier2, {})
        return Packet(modifier1, modifier2, parse_vars(buf[HEADER_SIZE:end], self.max_vars))

    @property
    def trailing(self) -> bytes:
        """Bytes that arrived after the vars block: the start of the request body."""
        return self._trailing


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(modifier1, datasize, modifier2) from the first four bytes."""
    if len(data) < HEADER_SIZE:
        raise UwsgiError(f"truncated packet: got {len(data)} of {HEADER_SIZE} header bytes")
    return HEADER.unpack_from(data)


def parse_vars(block: bytes, max_vars: int = 128) -> dict[str, str]:
    """Decode a vars block (latin-1, so every byte survives); the last of a repeated key wins.

    The block is decoded once and sliced as text: latin-1 maps byte offsets to character offsets.
    """
    text = block.decode("latin-1")
    result: dict[str, str] = {}
    pos, end, count = 0, len(block), 0
    while pos < end:
        if pos + 2 > end:
            raise UwsgiError(f"invalid uwsgi request (current strsize: {end - pos})")
        kstart = pos + 2
        kend = kstart + (block[pos] | block[pos + 1] << 8)
        if kend == kstart:
            raise UwsgiError("uwsgi key cannot be null")
        if kend + 2 > end:  # a key needs room for its value's length after it
            raise UwsgiError(f"invalid uwsgi request (current strsize: {kend - kstart})")
        vstart = kend + 2
        vend = vstart + (block[kend] | block[kend + 1] << 8)
        if vend > end:
            raise UwsgiError(f"invalid uwsgi request (current strsize: {vend - vstart})")
        count += 1
        if count > max_vars:
            raise UwsgiError(f"too many vars (max {max_vars})")
        result[text[kstart:kend]] = text[vstart:vend]
        pos = vend
    return result


def encode_vars(variables: Mapping[str, str]) -> bytes:
    parts = []
    for key, value in variables.items():
        bkey, bvalue = key.encode("latin-1"), value.encode("latin-1")
        parts += (_U16.pack(len(bkey)), bkey, _U16.pack(len(bvalue)), bvalue)
    return b"".join(parts)


def encode_packet(variables: Mapping[str, str], modifier1: int = 0, modifier2: int = 0) -> bytes:
    block = encode_vars(variables)
    if len(block) > 0xFFFF:
        raise UwsgiError(f"vars block of {len(block)} bytes does not fit a uwsgi packet")
    return HEADER.pack(modifier1, len(block), modifier2) + block


def content_length(variables: Mapping[str, str]) -> int:
    """The body length: digits only (no sign, spaces, '_' or 0x that int() would take)."""
    value = variables.get("CONTENT_LENGTH", "")
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadContentLength(f"invalid CONTENT_LENGTH {value!r}")
    return int(value)
