"""What to say about a name that is no option: where it has another name here (uWSGI's and
gunicorn's), "not supported yet" for a uWSGI option zergserve lacks, else the closest option."""

from __future__ import annotations

from zergserve.config.files import BLOCK_KIND, ENDS
from zergserve.config.options import BY_NAME

# Migration hints for names that are no option here, from uWSGI and gunicorn: what to use instead.
_SERVE_TLS = "zergserve speaks no TLS: terminate it in nginx (or another proxy) in front"
_LOGIC = "configuration logic works in config files, not on the command line or in the environment"
_HINTS: dict[str, str] = {
    "async": "use --worker gevent --worker-connections N",
    "websocket-max-size": "use --ws-max-size BYTES (uWSGI's counts KiB) with --worker asyncio",
    "websockets-max-size": "use --ws-max-size BYTES (uWSGI's counts KiB) with --worker asyncio",
    "http-websockets": "--worker asyncio serves WebSocket on --http by itself (see --ws)",
    "http-keepalive": "--http keeps connections alive with --worker gevent or asyncio (see --keep-alive)",
    "daemonize": "zergserve stays in the foreground: run it under systemd (deploy/systemd) with --logto FILE",
    "daemon": "zergserve stays in the foreground: run it under systemd (deploy/systemd)",
    "https": _SERVE_TLS, "https-socket": _SERVE_TLS, "certfile": _SERVE_TLS, "keyfile": _SERVE_TLS,
    "timeout": "gunicorn's --timeout kills a silent worker; the nearest here is --harakiri N (a request running "
               "more than N seconds)",
    "pid": "--pidfile FILE",
    "user": "--uid USER", "group": "--gid GROUP",
    "log-file": "--logto FILE",
    "config": "zergserve reads ini/json/toml/yaml files (--ini FILE), not gunicorn's Python config files",
}


def unknown(name: str, shown: str | None = None) -> str:
    """'unknown option NAME' and what to do about it: a migration hint where the option has
    another name here, "not supported yet" for a uWSGI option zergserve lacks, else the closest
    option name when one is close (a uWSGI option is never answered with some other option)."""
    shown = shown or repr(name)
    if name in BLOCK_KIND or name in ENDS:
        return f"unknown option {shown}: {_LOGIC}"
    if name in _HINTS:
        return f"unknown option {shown}: {_HINTS[name]}"
    from zergserve.uwsgi_names import NAMES
    if name in NAMES or name.replace("_", "-") in NAMES:
        return f"unknown option {shown}: a uWSGI option that zergserve does not support yet"
    import difflib
    hint = difflib.get_close_matches(name, list(BY_NAME), 1)
    return f"unknown option {shown}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
