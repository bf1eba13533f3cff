"""The uwsgi binary protocol, sans-I/O: what nginx `uwsgi_pass` sends and how to read it.

A packet is a 4-byte header (modifier1 u8, datasize u16 little-endian, modifier2 u8) followed by
`datasize` bytes of vars: repeated `u16le key_len, key, u16le val_len, val`. The request body
follows, its length given only by CONTENT_LENGTH. One packet per connection: bytes after it are
body, never a second request (uWSGI issue #2336 shows why).

Parsing follows uWSGI 2.0 (research/uwsgi-internals.md §1, reliability.md §3.11): every framing
error is a UwsgiError whose text names the fault the way uWSGI logs it, and nothing else escapes,
whatever the bytes.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, Final, Mapping, NamedTuple

HEADER: Final = struct.Struct("<BHB")
HEADER_SIZE: Final = 4
MODIFIER_WSGI: Final = 0
MODIFIER_PING: Final = 100
PONG: Final = b"\x64\x00\x00\x01"
_MAX_STRSIZE: Final = 0xFFFF
_U16: Final = struct.Struct("<H")
_HTTP_LIKE: Final = frozenset((b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
                        b"PRI "))
_HTTP_HINT: Final = "; this looks like HTTP sent to a uwsgi socket"
_TLS_HINT: Final = "; this looks like TLS sent to a uwsgi socket"


class UwsgiError(ValueError):
    """A malformed packet: log str(err) and close the connection without a reply."""


class EmptyConnection(UwsgiError):
    """The peer closed without sending anything: a probe, not worth a log line."""


class BadContentLength(UwsgiError):
    """CONTENT_LENGTH is not plain ASCII digits: answer 400, then close."""


class Packet(NamedTuple):
    """One parsed packet; a NamedTuple, not a dataclass, to keep `dataclasses` (~1 MB) out of workers.
    `reserved`: whether a var's name has one of RESERVED_PREFIXES."""

    modifier1: int
    modifier2: int
    vars: dict[str, str]
    reserved: bool = False


# uWSGI's magic vars (UWSGI_FILE and the like load code in uWSGI) and names of a WSGI server's own
# environ keys: a packet's vars with these names must not reach the environ as they are.
RESERVED_PREFIXES: Final = ("UWSGI_", "wsgi.")


_new_packet: Final = tuple.__new__  # Packet(...) without the Python-level __new__ a NamedTuple adds


class PacketParser:
    """Incremental parser for exactly one uwsgi packet per connection (never a second one).

    Header errors are raised as soon as the four header bytes are in, so an oversized or foreign
    packet is refused without waiting for (or buffering) its block.
    """

    __slots__ = ("buffer_size", "max_vars", "_buf", "_eof", "_size", "_trailing", "_done")

    def __init__(self, buffer_size: int = 4096, max_vars: int = 128) -> None:
        self.buffer_size = buffer_size
        self.max_vars = max_vars
        self._buf: bytes | bytearray = b""
        self._eof = False
        self._size = -1
        self._trailing = b""
        self._done = False

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; b'' means the peer closed.

        The first chunk is kept as is (nginx sends the whole packet in one write, so no copy);
        later chunks go into a bytearray, so a client dribbling bytes costs linear, not quadratic, time.
        """
        if not data:
            self._eof = True
        elif self._done:
            return
        elif not self._buf:
            self._buf = data
        elif type(self._buf) is bytearray:
            self._buf += data
        else:
            self._buf = bytearray(self._buf)
            self._buf += data

    def next_packet(self) -> Packet | None:
        """The packet once it is complete, None while more bytes are needed (and after the packet)."""
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
            self._size = _check_header(buf, self.buffer_size)
        end = HEADER_SIZE + self._size
        if len(buf) < end:
            if self._eof:
                raise UwsgiError(f"truncated packet: got {len(buf)} of {end} bytes")
            return None
        modifier1, modifier2 = buf[0], buf[3]
        self._done = True
        self._trailing = bytes(buf[end:]) if len(buf) > end else b""
        self._buf = b""
        if modifier1 == MODIFIER_PING:
            return _new_packet(Packet, (modifier1, modifier2, {}, False))
        variables, reserved = parse_block(buf[HEADER_SIZE:end], self.max_vars)
        return _new_packet(Packet, (modifier1, modifier2, variables, reserved))

    @property
    def started(self) -> bool:
        """Whether any byte of the packet arrived."""
        return bool(self._buf) or self._done

    @property
    def trailing(self) -> bytes:
        """Bytes that arrived after the vars block: the start of the request body."""
        return self._trailing


def _check_header(buf: bytes | bytearray, buffer_size: int) -> int:
    """The datasize of a header uWSGI would accept; the size check comes first, as in uWSGI."""
    modifier1, size = buf[0], buf[1] | buf[2] << 8  # HEADER's fields, without a struct call per packet
    if size > buffer_size:
        raise UwsgiError(f"invalid request block size: {size} (max {buffer_size})"
                         + (_foreign_hint(buf) or "; raise --buffer-size for larger request heads"))
    if modifier1 != MODIFIER_WSGI and modifier1 != MODIFIER_PING:
        raise UwsgiError(f"unavailable modifier requested: {modifier1}{_foreign_hint(buf)}")
    if size == 0 and modifier1 == MODIFIER_WSGI:
        raise UwsgiError("empty request (datasize 0)")
    return size


def _foreign_hint(buf: bytes | bytearray) -> str:
    """Name the protocol mix-up behind a bad header: HTTP (`GET ` reads as datasize 21573) or TLS."""
    if bytes(buf[:4]) in _HTTP_LIKE:
        return _HTTP_HINT
    if buf[0] == 0x16 and buf[1] == 0x03:
        return _TLS_HINT
    return ""


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(modifier1, datasize, modifier2) from the first four bytes, without judging them."""
    if len(data) < HEADER_SIZE:
        raise UwsgiError(f"truncated packet: got {len(data)} of {HEADER_SIZE} header bytes")
    return HEADER.unpack_from(data)


def parse_vars(block: bytes | bytearray | memoryview, max_vars: int = 128) -> dict[str, str]:
    """Decode a vars block (latin-1, so every byte survives); the last of a repeated key wins."""
    return parse_block(block, max_vars)[0]


def parse_block(block: bytes | bytearray | memoryview, max_vars: int = 128) -> tuple[dict[str, str], bool]:
    """The vars of a block (parse_vars) and whether a name has one of RESERVED_PREFIXES.

    The fast loop (C when the accelerator is built, else Python) checks nothing it does not have
    to and refuses a malformed block; the careful parser then names the fault as uWSGI does.
    """
    result = _fast_vars(block, max_vars)
    if result is None:
        _explain(block, max_vars)
    return result  # type: ignore[return-value]  # _explain always raises


def _fast_vars_py(block: bytes | bytearray | memoryview, max_vars: int) -> tuple[dict[str, str], bool] | None:
    """The vars of a well-formed block and whether a name is reserved, None for any other block:
    the hottest loop of a uwsgi request.

    The block is decoded once and sliced as text, since latin-1 maps byte offsets to character
    offsets: one str per key and value, no intermediate bytes. A length that points past the
    block raises IndexError or ends beyond it, an empty key leaves "" in the dict: either refuses.
    _speedups.fast_vars is the same function in C.
    """
    text = str(block, "latin-1")
    result: dict[str, str] = {}
    pos, end = 0, len(text)
    try:
        for _ in range(max_vars):
            if pos >= end:
                break
            kstart = pos + 2
            kend = kstart + (block[pos] | block[pos + 1] << 8)
            vstart = kend + 2
            pos = vstart + (block[kend] | block[kend + 1] << 8)
            result[text[kstart:kend]] = text[vstart:pos]
    except IndexError:
        return None
    if pos != end or "" in result:
        return None
    return result, any(key.startswith(RESERVED_PREFIXES) for key in result)


def _load_accelerator() -> Callable[[bytes | bytearray | memoryview, int], tuple[dict[str, str], bool] | None] | None:
    """The compiled fast loop, unless absent (no compiler at install) or ZERGSERVE_PURE_PYTHON=1."""
    if os.environ.get("ZERGSERVE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from zergserve.protocols._speedups import fast_vars
    except ImportError:
        return None
    return fast_vars


_fast_vars_c = _load_accelerator()
_fast_vars = _fast_vars_c or _fast_vars_py
ACCELERATED = _fast_vars_c is not None


def _explain(block: bytes | bytearray | memoryview, max_vars: int) -> None:
    """Raise the UwsgiError for a vars block the fast loop refused, checking each length."""
    pos, end = 0, len(block)
    for _ in range(max_vars):
        if pos >= end:
            return
        kstart = pos + 2
        if kstart > end:
            raise UwsgiError(f"invalid uwsgi request (current strsize: {end - pos})")
        kend = kstart + (block[pos] | block[pos + 1] << 8)
        if kend == kstart:
            raise UwsgiError("uwsgi key cannot be null")
        vstart = kend + 2
        if vstart > end:  # a key needs room for its value's length after it
            raise UwsgiError(f"invalid uwsgi request (current strsize: {kend - kstart})")
        vend = vstart + (block[kend] | block[kend + 1] << 8)
        if vend > end:
            raise UwsgiError(f"invalid uwsgi request (current strsize: {vend - vstart})")
        pos = vend
    if pos < end:
        raise UwsgiError(f"too many vars (max {max_vars})")
    raise AssertionError("the fast vars loop refused a valid block")  # pragma: no cover


def encode_vars(variables: Mapping[str, str]) -> bytes:
    """The vars block for `variables`, as nginx would send it (for tests and a client)."""
    parts: list[bytes] = []
    pack = _U16.pack
    try:
        for key, value in variables.items():
            bkey, bvalue = key.encode("latin-1"), value.encode("latin-1")
            parts += (pack(len(bkey)), bkey, pack(len(bvalue)), bvalue)
    except UnicodeEncodeError as exc:
        raise UwsgiError(f"uwsgi vars are latin-1: {exc}") from None
    except struct.error:
        raise UwsgiError(f"uwsgi key or value over {_MAX_STRSIZE} bytes") from None
    return b"".join(parts)


def encode_packet(variables: Mapping[str, str], modifier1: int = 0, modifier2: int = 0) -> bytes:
    """A whole packet (header + vars), refused when the block cannot fit the u16 datasize."""
    block = encode_vars(variables)
    if len(block) > _MAX_STRSIZE:
        raise UwsgiError(f"vars block of {len(block)} bytes does not fit a uwsgi packet")
    try:
        return HEADER.pack(modifier1, len(block), modifier2) + block
    except struct.error:
        raise UwsgiError(f"modifiers must be 0..255, not {modifier1}, {modifier2}") from None


def content_length(variables: Mapping[str, str]) -> int:
    """The body length: ASCII digits only, none of the sign, spaces, '_' or 0x that int() would take.

    More than 18 digits is refused too: no body is that long, and int() on thousands of digits
    would raise its own ValueError.
    """
    value = variables.get("CONTENT_LENGTH", "")
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadContentLength(f"invalid CONTENT_LENGTH {value[:40]!r}")
    return int(value)
