"""What the adapters (wsgi, asgi) and the exchange share: request errors, the header field
check, reason phrases and log escaping (log.quoted). Imports nothing of the package but the HTTP codec,
the log and oserrors."""

from __future__ import annotations

import re
from typing import Any, Callable, ClassVar, Final, Iterable

from zergserve.log import quoted as printable  # noqa: F401 - the adapters' name for it
from zergserve.oserrors import ClientDisconnected  # noqa: F401 - the adapters import it from here
from zergserve.protocols import http as h1

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_REASONS: Final = {code: text.encode() for code, text in h1.REASONS.items()}


class RequestError(Exception):
    """The request body turned out bad while the app read it: answer `status` if still possible."""

    status: ClassVar[int] = 400  # (ClassVar: a class attribute in the compiled build as well)


class RequestTooLarge(RequestError):
    """The body grew past --limit-post while being read."""

    status: ClassVar[int] = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over limit-post ({limit} bytes)")


class RequestTimeout(RequestError):
    """The body came slower than --body-timeout and --body-min-rate allow."""

    status: ClassVar[int] = 408


class AppError(Exception):
    """The application broke the WSGI contract (bad status, bad headers, write before start_response)."""


def check_field(bname: bytes, bvalue: bytes, name: Any, value: Any) -> None:
    """Refuse a field that could split the response: a name that is no token, CR, LF or NUL in the
    value. `name` and `value` are what the app gave, for the message (the ASGI adapter shares it)."""
    if not _TOKEN.match(bname):
        raise AppError(f"invalid header name {name!r}")
    if _BAD_VALUE.search(bvalue):
        raise AppError(f"invalid header value for {name!r}: {value!r}")


class CheckedFields:
    """Response header fields an adapter has checked (`check`: the app's item to a (name, value)
    byte pair, or AppError), remembered up to `size` of them: most apps send the same few fields on
    every response, so each is checked once."""

    def __init__(self, check: Callable[[Any], tuple[bytes, bytes]], size: int = 256) -> None:
        self.check = check
        self.size = size
        self.known: dict[Any, tuple[bytes, bytes]] = {}

    def encode(self, items: list[Any]) -> list[tuple[bytes, bytes]]:
        known = self.known
        found: list[tuple[bytes, bytes]] = []
        for item in items:
            try:
                field = known.get(item)
            except TypeError:  # an unhashable item (a list pair, a bytearray value): checked each time
                field = None
            if field is None:
                field = self.check(item)
                if type(item) is tuple and len(known) < self.size:
                    try:
                        known[item] = field
                    except TypeError:  # a bytearray in it: checked again next time
                        pass
            found.append(field)
        return found


def reason(code: int) -> bytes:
    """The standard reason phrase of a status code (b'Unknown' for others)."""
    return _REASONS.get(code, b"Unknown")


def unquote(path: str | bytes) -> bytes:
    """A request path's %-escapes decoded, as bytes (PATH_INFO and the ASGI path are made from
    them). urllib.parse is imported here, by the first path with a %-escape in it: a sixth of a
    megabyte that a worker serving plain paths need not hold."""
    from urllib.parse import unquote_to_bytes
    return unquote_to_bytes(path)
