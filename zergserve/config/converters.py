"""The value types of the option table: each converts one string and raises ValueError naming the
bad value, so a bad value fails at load with its source, never at use; `render` turns a value back
into the string its converter reads."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from zergserve import accesslog, proxy, sockets

T = TypeVar("T", int, float)


def _metavar(name: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Label a converter with the placeholder --help shows for its value (N, MODE, ...)."""
    def mark(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        convert.metavar = name  # type: ignore[attr-defined]  # a function attribute, read by docs.metavar()
        return convert
    return mark


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@_metavar("")
def boolean(value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"invalid boolean value {value!r} (use true/false, yes/no, on/off or 1/0)")


def _bounds(low: float | None, high: float | None) -> str:
    if high is None:
        return f"at least {low:g}"
    if low is None:
        return f"at most {high:g}"
    return f"between {low:g} and {high:g}"


def _parsed(parse: Callable[[str], T], kind: str, value: str) -> T:
    try:
        return parse(value.strip())
    except ValueError:
        raise ValueError(f"invalid {kind} {value!r}") from None


def _check_range(result: float, shown: str, low: float | None, high: float | None) -> None:
    """ValueError unless `result` is finite and within the bounds; `shown` is how the message spells it."""
    finite = not isinstance(result, float) or math.isfinite(result)
    if not finite or (low is not None and result < low) or (high is not None and result > high):
        raise ValueError(f"{shown} is out of range: must be {_bounds(low, high)}")


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An int converter that also checks the range, so a bad value fails at load, not at use."""
    @_metavar("N")
    def convert(value: str) -> int:
        result = _parsed(int, "int value", value)
        _check_range(result, str(result), low, high)
        return result
    return convert


def number(low: float | None = 0) -> Callable[[str], float]:
    """Seconds and the like: a finite float, never negative by default."""
    @_metavar("N")
    def convert(value: str) -> float:
        result = _parsed(float, "number", value)
        _check_range(result, value.strip(), low, None)
        return result
    return convert


@_metavar("VALUE")
def text(value: str) -> str:
    return value


@_metavar("ADDR")
def address(value: str) -> str:
    """A listening address in sockets.py's spellings, checked now so that a typo is reported with
    its file and line rather than at bind time. gunicorn's `unix:PATH` is PATH."""
    if value.startswith("unix:"):
        value = value[len("unix:"):]
    if value.startswith("fd://"):
        if not value[len("fd://"):].isdigit():
            raise ValueError(f"invalid address {value!r}: fd:// needs a number")
    else:
        sockets.parse_address(value)  # AddressError is a ValueError
    return value


@_metavar("IPS")
def proxies(value: str) -> str:
    """--forwarded-allow-ips: checked now, so that a bad entry is reported with its file and line."""
    proxy.Trust(value)
    return value


@_metavar("FORMAT")
def log_format(value: str) -> str:
    """An access-log format, compiled now so that an unknown placeholder is reported with its source."""
    return accesslog.check_format(value)


@_metavar("STRFTIME")
def strftime(value: str) -> str:
    """A strftime format (it must hold a % directive)."""
    if "%" not in value:
        raise ValueError(f"invalid date format {value!r}: expected strftime directives like %Y-%m-%d")
    return value


@_metavar("MODE")
def mode(value: str) -> int:
    """A file mode of exactly three octal digits, as uWSGI's --chmod-socket wants."""
    if not re.fullmatch(r"[0-7]{3}", value.strip()):
        raise ValueError(f"invalid mode {value!r}: expected three octal digits like 660")
    return int(value.strip(), 8)


@_metavar("MASK")
def umask(value: str) -> int:
    """A umask in octal, as uWSGI takes it: 022, 0027, 7."""
    if not re.fullmatch(r"[0-7]{1,4}", value.strip()):
        raise ValueError(f"invalid umask {value!r}: expected octal digits like 022")
    return int(value.strip(), 8)


def choice(*names: str) -> Callable[[str], str]:
    """One of a fixed set of names; a later feature adds its name to the row's call."""
    @_metavar("{" + ",".join(names) + "}")
    def convert(value: str) -> str:
        if value.strip() not in names:
            raise ValueError(f"invalid choice {value!r} (choose from {', '.join(names)})")
        return value.strip()
    convert.choices = names  # type: ignore[attr-defined]  # a function attribute, listed by the docs
    return convert


@_metavar("KEY=VALUE")
def key_value(value: str) -> str:
    if "=" not in value or value.startswith("="):
        raise ValueError(f"expected KEY=VALUE, got {value!r}")
    return value


@_metavar("/URL=DIR")
def mount(value: str) -> str:
    """A --static-map: a mount point (a path) and the directory or file it maps to."""
    prefix, sep, target = value.partition("=")
    if not sep or not prefix.startswith("/") or not target:
        raise ValueError(f"expected /MOUNTPOINT=DIR (or =FILE), got {value!r}")
    return value


@_metavar("'REGEXP SECONDS'")
def expires_rule(value: str) -> str:
    """A --static-expires rule as uWSGI spells it: a regular expression, a space, seconds."""
    pattern, _, seconds = value.strip().rpartition(" ")
    if not pattern.strip() or not seconds.isdigit():
        raise ValueError(f"expected 'REGEXP SECONDS', got {value!r}")
    try:
        re.compile(pattern.strip())
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern.strip()!r}: {exc}") from None
    return value


@_metavar("TYPE=SECONDS")
def expires_type(value: str) -> str:
    """A --static-expires-type rule: a MIME type, '=', seconds."""
    mime, _, seconds = value.strip().partition("=")
    if not mime or not seconds.isdigit():
        raise ValueError(f"expected MIMETYPE=SECONDS, got {value!r}")
    return value


def render(convert: Callable[[str], Any], value: Any) -> str:
    """A converted value back as the string `convert` reads."""
    if convert is mode or convert is umask:
        return format(value, "03o")
    if isinstance(value, float):
        return format(value, "g")
    return str(value)
