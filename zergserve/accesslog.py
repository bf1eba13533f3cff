"""The access log: uWSGI's `--log-format` placeholders compiled once into one function per worker,
named presets, the conditional filters (`--log-4xx`, `--log-5xx`, `--log-slow`) and the target
(fd 2, or `--req-logger file:PATH` with `--log-maxsize` rotation and reopening).

A format is compiled into a single f-string lambda over the exchange (exchange.py), so a line costs
one call and the few attribute reads its placeholders need; placeholders that need a lookup (a
header, /proc) cost nothing unless the format names them. Every string from the client is escaped
(`log.quoted`; JSON-quoted in the json preset), so a request cannot forge or colour a line.

The file (the access file, or --logto's behind fd 2) is checked at most once a second, on the next
line written (log.LogFile): moved, deleted, past `--log-maxsize` or told to by `--touch-logreopen`,
it is reopened.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from zergserve import proxy
from zergserve.log import LogFile, quoted

if TYPE_CHECKING:  # config imports this module (its log-format check)
    from zergserve.config import Config

PRESETS = {
    "zergserve": '%(addr) "%(method) %(uri) %(proto)" %(status) %(rsize) %(mstime)ms w%(wid)',
    "uwsgi": "[pid: %(pid)|app: 0|req: -/-] %(addr) (%(user)) {%(vars) vars in %(pktsize) bytes} [%(ctime)] "
             "%(method) %(uri) => generated %(rsize) bytes in %(msecs) msecs (%(proto) %(status)) "
             "%(headers) headers in %(hsize) bytes (%(switches) switches on core %(core))",
    "combined": '%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(rsize) "%(referer)" '
                '"%(uagent)"',
    "common": '%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(rsize)',
    "json": '{"time": %(iso), "addr": %(addr), "user": %(user), "method": %(method), "uri": %(uri), '
            '"proto": %(proto), "status": %(status), "size": %(rsize), "hsize": %(hsize), "referer": %(referer), '
            '"uagent": %(uagent), "host": %(host), "msecs": %(msecs), "pid": %(pid), "wid": %(wid)}',
}
DEFAULT_DATE = "%Y-%m-%d %H:%M:%S"  # --logdate without a value, and %(ftime)

# Placeholder → a Python expression over the formatter's arguments (ex, status, sent, now, elapsed)
# and the names in _HELPERS. `elapsed` is in seconds; `sent` counts body bytes; ex.head_sent the
# response head; the request began at `now - elapsed`. _STRINGS are escaped (or JSON-quoted);
# _NUMBERS cannot hold client bytes.
_NUMBERS = {
    "status": "status",
    "rsize": "sent",
    "hsize": "ex.head_sent",
    "size": "ex.head_sent + sent",
    "msecs": "int(elapsed * 1000)",
    "micros": "int(elapsed * 1000000)",
    "secs": "format(elapsed, SIX_DECIMALS)",
    "mstime": "format(elapsed * 1000, ONE_DECIMAL)",
    "time": "int(now - elapsed)",
    "epoch": "int(now)",
    "tmsecs": "int((now - elapsed) * 1000)",
    "tmicros": "int((now - elapsed) * 1000000)",
    "pid": "_pid()",
    "wid": "ctx.wid",
    "cl": "_cl(ex)",
    "vars": "len(_vars(ex))",
    "pktsize": "_pktsize(ex)",
    "headers": "ex.head_count",
    "switches": "0",
    "core": "0",
    "modifier1": "0",  # the exchange keeps the packet's vars, not its modifiers
    "modifier2": "0",
    "rss": "_statm(1)",
    "vsz": "_statm(0)",
    "rssM": "_statm(1) >> 20",
    "vszM": "_statm(0) >> 20",
}
_STRINGS = {
    "addr": "_addr(ex)",
    "user": "_var(ex, REMOTE_USER) or DASH",
    "method": "ex.method",
    "uri": "ex.target",
    "proto": "ex.protocol",
    "host": "_var(ex, HTTP_HOST) or DASH",
    "referer": "_var(ex, HTTP_REFERER) or DASH",
    "uagent": "_var(ex, HTTP_USER_AGENT) or DASH",
    "ltime": "_strftime(LTIME, now - elapsed)",
    "ftime": "_strftime(datefmt, now - elapsed)",
    "ctime": "_ctime(now - elapsed)",
    "iso": "_iso(now - elapsed)",
}
NAMES = (*_NUMBERS, *_STRINGS, "var.NAME")
_PLACEHOLDER = re.compile(r"%\(([A-Za-z0-9_.\-]+)\)")


def is_placeholder(name: str) -> bool:
    """Whether `%(name)` is one of the access log's (config files leave those to --log-format)."""
    return name in _NUMBERS or name in _STRINGS or (name.startswith("var.") and len(name) > 4)


Formatter = Callable[[Any, int, int, float, float], str]


def resolve(spec: str) -> str:
    """A format as given: a preset's name, gunicorn's `%(h)s` atoms (translated), or uWSGI's own."""
    if spec in PRESETS:
        return PRESETS[spec]
    if _GUNICORN.search(spec):
        return _from_gunicorn(spec)
    return spec


def compile_format(spec: str, ctx: Any = None, datefmt: str = DEFAULT_DATE) -> Formatter:
    """`fmt(ex, status, sent, now, elapsed) -> line`, one f-string; ValueError names an unknown placeholder."""
    fmt = resolve(spec)
    quote = "_json" if fmt is PRESETS["json"] else "_printable"
    parts = []
    names: dict[str, str] = {}  # constants the expressions use: an f-string part may hold no quotes
    pos = 0
    for match in _PLACEHOLDER.finditer(fmt):
        parts.append(_literal(fmt[pos:match.start()]))
        parts.append("{" + _expression(match.group(1), quote, names) + "}")
        pos = match.end()
    parts.append(_literal(fmt[pos:]))
    source = "lambda ex, status, sent, now, elapsed: f" + repr("".join(parts))
    scope = {**_HELPERS, **names, "ctx": ctx, "datefmt": datefmt}
    if quote == "_json":  # json only for a JSON format: most workers never load it
        from json.encoder import encode_basestring_ascii
        scope["_json"] = encode_basestring_ascii
    return eval(source, scope)  # noqa: S307 - the source is built above from a fixed table


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _expression(name: str, quote: str, names: dict[str, str]) -> str:
    if name in _NUMBERS:
        return _NUMBERS[name]
    if name in _STRINGS:
        return f"{quote}({_STRINGS[name]})"
    if name.startswith("var.") and len(name) > 4:
        key = f"_name{len(names)}"
        names[key] = name[4:]
        return f"{quote}(_var(ex, {key}) or EMPTY)"
    raise ValueError(f"unknown log-format placeholder %({name}) (known: {', '.join(NAMES)})")


# --- what the placeholders read ------------------------------------------------------------------

def _addr(ex: Any) -> str:
    """The client: behind a trusted proxy (--forwarded-allow-ips) the one it names, as REMOTE_ADDR
    in the environ says; over uwsgi nginx's REMOTE_ADDR; else the peer (the listener for UNIX)."""
    if not ex.http:
        return ex.variables.get("REMOTE_ADDR") or "-"
    request = ex.request
    if request is not None:
        fields: dict[str, str] = {}
        for name, value in request.headers:
            if name in ("x-forwarded-proto", "x-forwarded-for", "forwarded"):
                fields[name] = f"{fields[name]},{value}" if name in fields else value
        if fields and proxy.trusted(ex.peer):
            client = proxy.forwarded(fields.get("x-forwarded-proto"), fields.get("x-forwarded-for"),
                                     fields.get("forwarded"))[1]
            if client:
                return client[0]
    return ex.peer[0] if ex.peer else "-"


def _vars(ex: Any) -> Any:
    return ex.variables if not ex.http else (ex.request.headers if ex.request is not None else ())


def _pktsize(ex: Any) -> int:
    items = _vars(ex).items() if not ex.http else _vars(ex)
    return sum(len(key) + len(value) + 4 for key, value in items)


def _header(ex: Any, name: str) -> str | None:
    if ex.request is None:
        return None
    found = [value for key, value in ex.request.headers if key == name]
    return ",".join(found) if found else None


_HTTP_VARS = {
    "REQUEST_METHOD": lambda ex: ex.method,
    "REQUEST_URI": lambda ex: ex.target,
    "SERVER_PROTOCOL": lambda ex: ex.protocol,
    "PATH_INFO": lambda ex: ex.request.path if ex.request is not None else None,
    "QUERY_STRING": lambda ex: ex.request.query if ex.request is not None else None,
    "REMOTE_ADDR": _addr,
    "REMOTE_PORT": lambda ex: str(ex.peer[1]) if ex.peer else None,
    "CONTENT_TYPE": lambda ex: _header(ex, "content-type"),
    "CONTENT_LENGTH": lambda ex: _header(ex, "content-length"),
}


def _var(ex: Any, name: str) -> str | None:
    """A request variable by its CGI name: a uwsgi packet's var, or what the HTTP head gives it."""
    if not ex.http:
        return ex.variables.get(name)
    if name.startswith("HTTP_"):
        return _header(ex, name[5:].lower().replace("_", "-"))
    getter = _HTTP_VARS.get(name)
    return getter(ex) if getter is not None else None


def _cl(ex: Any) -> int:
    try:
        return int(_var(ex, "CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _statm(index: int) -> int:
    with open("/proc/self/statm", "rb") as file:
        return int(file.read().split()[index]) * os.sysconf("SC_PAGE_SIZE")


_dates: dict[str, tuple[int, str]] = {}  # format → (second, text): one strftime a second per format


def _strftime(fmt: str, when: float) -> str:
    second = int(when)
    cached = _dates.get(fmt)
    if cached is None or cached[0] != second:
        cached = _dates[fmt] = (second, time.strftime(fmt, time.localtime(second)))
    return cached[1]


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}" + \
        time.strftime("%z", time.localtime(when))


_HELPERS = {
    "_addr": _addr, "_vars": _vars, "_pktsize": _pktsize, "_var": _var, "_cl": _cl,
    "_statm": _statm, "_strftime": _strftime, "_ctime": time.ctime, "_iso": _iso,
    "_printable": quoted, "_pid": os.getpid, "REMOTE_USER": "REMOTE_USER", "HTTP_HOST": "HTTP_HOST",
    "HTTP_REFERER": "HTTP_REFERER", "HTTP_USER_AGENT": "HTTP_USER_AGENT", "LTIME": "%d/%b/%Y:%H:%M:%S %z",
    "ONE_DECIMAL": ".1f", "SIX_DECIMALS": ".6f", "DASH": "-", "EMPTY": "",
}


# --- gunicorn's --access-logformat ---------------------------------------------------------------

_GUNICORN = re.compile(r"%\((\{[^}]*\}[ieo]|[a-zA-Z])\)s")
_GUNICORN_ATOMS = {
    "h": "%(addr)", "l": "-", "u": "%(user)", "t": "[%(ltime)]", "r": "%(method) %(uri) %(proto)",
    "m": "%(method)", "U": "%(var.PATH_INFO)", "q": "%(var.QUERY_STRING)", "H": "%(proto)", "s": "%(status)",
    "B": "%(rsize)", "b": "%(rsize)", "f": "%(referer)", "a": "%(uagent)", "T": "%(secs)", "D": "%(micros)",
    "M": "%(msecs)", "L": "%(secs)", "p": "<%(pid)>",
}


def _from_gunicorn(spec: str) -> str:
    """gunicorn's atoms in uWSGI's spelling; `%({name}i)s` is a request header, `%({NAME}e)s` a
    request variable; response headers (`o`) are not kept, so they are refused."""
    def atom(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("{"):
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return f"%(var.HTTP_{name.upper().replace('-', '_')})"
            if kind == "e":
                return f"%(var.{name})"
            raise ValueError(f"gunicorn access-logformat atom %({key})s (a response header) is not supported")
        if key not in _GUNICORN_ATOMS:
            raise ValueError(f"unknown gunicorn access-logformat atom %({key})s")
        return _GUNICORN_ATOMS[key]
    return _GUNICORN.sub(atom, spec)


# --- the target and the filters ------------------------------------------------------------------

class AccessLog:
    """What the exchange calls after each request (and each refusal): filter, format, write."""

    __slots__ = ("format", "write_line", "everything", "log_4xx", "log_5xx", "slow", "prefix")

    def __init__(self, format: Formatter, write_line: Callable[[str, float], None], everything: bool = True,
                 log_4xx: bool = False, log_5xx: bool = False, slow: float = 0.0) -> None:
        self.format = format
        self.write_line = write_line
        self.everything = everything
        self.log_4xx = log_4xx
        self.log_5xx = log_5xx
        self.slow = slow  # seconds; 0: off

    def request(self, ex: Any, status: int, sent: int) -> None:
        now = time.time()
        elapsed = time.monotonic() - ex.began if ex.began else 0.0
        if not self.everything and not (
                (self.log_5xx and status >= 500) or (self.log_4xx and 400 <= status < 500)
                or (self.slow and elapsed >= self.slow)):
            return
        self.write_line(self.format(ex, status, sent, now, elapsed), now)


def writer(target: str | None, datefmt: str | None, maxsize: int = 0, touch: tuple[str, ...] = (),
           logto: str | None = None) -> Callable[[str, float], None]:
    """`write(line, now)`: a line (prefixed with --logdate's date, if any) to the file, or to fd 2,
    which follows the --logto file (the master opened it) when there is one."""
    if target and target not in ("-", "stdio", "stderr"):
        put = LogFile(target[len("file:"):] if target.startswith("file:") else target, maxsize, touch).write
    elif logto:
        put = LogFile(logto, maxsize, touch, stdio=True).write
    else:
        def put(data: bytes, now: float) -> None:
            try:
                os.write(2, data)
            except OSError:
                pass
    if not datefmt:
        return lambda line, now: put((line + "\n").encode("utf-8", "replace"), now)

    def write(line: str, now: float) -> None:
        put((_strftime(datefmt, now) + " " + line + "\n").encode("utf-8", "replace"), now)
    return write


def from_config(cfg: Config, ctx: Any) -> AccessLog | None:
    """The worker's access log, or None when no line could ever be written."""
    filtered = cfg.log_4xx or cfg.log_5xx or cfg.log_slow
    if (cfg.disable_logging and not filtered) or _LEVELS[cfg.log_level] > _LEVELS["info"]:
        return None
    datefmt = cfg.logdate
    if datefmt is None and cfg.log_format == "zergserve":
        datefmt = "[" + DEFAULT_DATE + "]"  # today's line: `[date] addr "GET / HTTP/1.1" 200 5 0.3ms w1`
    fmt = compile_format(cfg.log_format, ctx, cfg.logdate or DEFAULT_DATE)
    return AccessLog(fmt, writer(cfg.req_logger, datefmt, cfg.log_maxsize, tuple(cfg.touch_logreopen), cfg.logto),
                     everything=not cfg.disable_logging, log_4xx=cfg.log_4xx, log_5xx=cfg.log_5xx,
                     slow=cfg.log_slow / 1000)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LEVELS = tuple(_LEVELS)


def check_format(value: str) -> str:
    """--log-format's converter: compile it now, so an unknown placeholder is a config error."""
    compile_format(value)
    return value
