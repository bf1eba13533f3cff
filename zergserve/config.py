"""One option table for everything: command line, config files, environment, `--help` and docs.

## Sources and precedence

Lowest to highest:

1. built-in defaults;
2. config files, in the order given: first those named in the environment (`UWSGI_INI=app.ini`,
   `ZERGSERVE_TOML=...`), then `--ini FILE[:section]`, `--json`, `--toml`, `--yaml`, `--include`
   and bare `FILE.ini` / `.json` / `.toml` / `.yaml` arguments, each read where it appears on the
   command line. A file may name others (`ini = base.ini` or `include = base.toml`, relative to the
   including file; `ini = :zerg` is a section of the same file), which are read in its place, at
   most 16 deep;
3. `UWSGI_<OPTION>` environment variables (upper case, `-` → `_`: `UWSGI_BUFFER_SIZE`). uWSGI's
   internal variables (`UWSGI_RELOADS`, `UWSGI_EMPEROR_FD`, `UWSGI_VASSAL_*`, …) are ignored; any
   other name that is no option is ignored with a warning;
4. `ZERGSERVE_<OPTION>` environment variables. A name that is no option is an error: a typo in
   our own namespace should fail loudly;
5. the command line;
6. files read with `inherit` (uWSGI's templates), which uWSGI appends after everything else, the
   command line included.

A scalar takes the value of the highest source that sets it (within one source, the last
occurrence). A repeatable option collects the values of every source, lowest first. An environment
variable gives one value.

Every error of a run is reported at once (each naming its file and line, flag or variable), and the
process exits 2. A name that is no option gets a hint: where it has another name here, that name
(gunicorn's `--timeout` → `--harakiri`); a uWSGI option zergserve lacks is "not supported yet";
otherwise the closest option name, if one is close. Options that change nothing here
(the "uWSGI compatibility" group below, and `master = false`) are accepted with one warning line
saying why.

## Files

* ini: uWSGI's dialect (`key = value`, `#`/`;` comment lines, repeated keys repeat the option; a
  bare `key` is a flag set to true). Without a section, `[uwsgi]` and then `[zergserve]` are read,
  so `[zergserve]` wins for scalars; `FILE:section` reads only that section.
* json / toml / yaml: a `uwsgi` and/or `zergserve` object of `key: value`, the value a string,
  number, boolean or list of them (a list repeats the option).
* Flags take `true/false`, `yes/no`, `on/off`, `1/0`; an empty value means true.

Values in files (not on the command line or in the environment, where the shell has done its
part) are expanded, uWSGI style. Anything that looks like one of these and is not known (`%Y`,
`%(a + b)`, `@(http://…)`) is an error, never left as text:

| syntax | becomes |
|---|---|
| `%d` | directory of the file, with a trailing `/` |
| `%p` | absolute path of the file (symlinks not resolved) |
| `%s` | file name |
| `%n` | file name without extension |
| `%e` | extension, without the dot |
| `%c` | name of the file's directory |
| `%0` … `%9` | the components of the file's directory (`/etc/vassals/a.ini`: `%0` = `etc`, `%1` = `vassals`) |
| `%x` | the section asked for (`app.ini:zerg` → `zerg`), else empty |
| `%o` | the file name as given |
| `%i` | the file's inode number |
| `%j` | uWSGI's djb33x hash of `%p`, 8 hex digits |
| `%D %P %S %N %E %C %X %O %I %J` | the same, of the first file read that was not an `include` or `inherit` template (a vassal's own file, seen from a shared template) |
| `%v` | the working directory |
| `%h` | the host name |
| `%k` | the number of CPUs |
| `%t`, `%T` | the Unix time at start, in seconds and microseconds |
| `%u`, `%U` | the uid and user name; `%g`, `%G` the gid and group name |
| `%V` | the zergserve version |
| `%[` | the ESC character (for colours) |
| `%%` | `%` |
| `%(name)` | the value of an option or placeholder set earlier (in a file, by `--set` or on the command line before the file) |
| `%(_)` | inside a `for` or `if-*` block: the loop item, or what the condition found |
| `$(NAME)` | the environment variable `NAME` (empty if unset); `$(NAME:-DEFAULT)` if unset or empty, `$(NAME-DEFAULT)` if unset |
| `@(FILE)` | the content of FILE (relative to the working directory, as in uWSGI), less one trailing newline |
| `@(exec://COMMAND)` | the output of the shell command, less one trailing newline; a failing command is an error |

The access log's own placeholders (`log-format = %(addr) %(method) %(uri) %(status)`) are left for
`--log-format`, as uWSGI leaves them, unless set as placeholders first; a `--logdate` format in a file
doubles its `%`s (`log-date = %%Y-%%m-%%d`), as in uWSGI.

A key that is no option is an error naming the file, line and key, unless the loaded
configuration uses it as `%(key)`: that is how uWSGI users define their own placeholders.
`--set key=value` sets the option `key`, or the placeholder `key` if there is no such option;
`set-placeholder` (`set-ph`) always sets a placeholder.

Configuration logic (uWSGI's): a block's lines are kept only if its condition holds, or repeated
once per item of a loop, with `%(_)` set; blocks do not nest (nor do they in uWSGI).

| block | lines kept | `%(_)` |
|---|---|---|
| `for = a b c` … `endfor` | once per space-separated item | the item |
| `for-glob = PATTERN`, `for-readline = FILE`, `for-times = N` | once per matching path, non-empty line, or 1…N | the item |
| `if-env = NAME` or `NAME=VALUE` … `endif` | if the variable is set (to VALUE) | its value |
| `if-opt = NAME` or `NAME=VALUE` | if the option or placeholder is set so far (to VALUE) | its value |
| `if-exists`, `if-file`, `if-dir = PATH` | if PATH is readable, a regular file, a directory | PATH |
| `if-hostname = NAME` | if the host is called NAME | NAME |
| `if-not-…` of each | if it does not hold | as above, when there is one |

`include = FILE` reads a file of any format (by its extension) in place, as `ini =` does for an ini
file. `inherit = FILE` reads a template whose settings come after every other source; as in uWSGI,
only its magic variables are expanded, so `$()`, `@()` and `%()` there are errors.

## Command line

`--name value`, `--name=value`, `-p 4`, `-p4`; flags take no value (`--master`, `-M`, clustered
`-ML`; `--master=false` in full). An option with an optional value (`--chmod-socket`) takes the
next argument only if it is a valid value, so prefer `--chmod-socket=660`. A bare argument ending
in `.ini`, `.json`, `.js`, `.toml`, `.yaml` or `.yml` (optionally `:section`) is loaded as a
config file; any other bare argument is an error.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from zergserve import __version__, accesslog, configfile, proxy, sockets


class ConfigError(Exception):
    """Bad configuration: str() names the source (file:line, flag or env var) and the key."""


class HelpRequested(Exception):
    """--help or -h: args[0] is the text to print; the caller prints it and exits 0."""


class VersionRequested(Exception):
    """--version: args[0] is the text to print; the caller prints it and exits 0."""


# --- value types: each converts one string and raises ValueError naming the bad value ------------

def _metavar(name: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Label a converter with the placeholder --help shows for its value (N, MODE, ...)."""
    def mark(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        convert.metavar = name  # type: ignore[attr-defined]
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


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An int converter that also checks the range, so a bad value fails at load, not at use."""
    @_metavar("N")
    def convert(value: str) -> int:
        try:
            result = int(value.strip())
        except ValueError:
            raise ValueError(f"invalid int value {value!r}") from None
        if (low is not None and result < low) or (high is not None and result > high):
            raise ValueError(f"{result} is out of range: must be {_bounds(low, high)}")
        return result
    return convert


def number(low: float | None = 0) -> Callable[[str], float]:
    """Seconds and the like: a finite float, never negative by default."""
    @_metavar("N")
    def convert(value: str) -> float:
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"invalid number {value!r}") from None
        if not math.isfinite(result) or (low is not None and result < low):
            raise ValueError(f"{value.strip()} is out of range: must be {_bounds(low, None)}")
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
    convert.choices = names  # type: ignore[attr-defined]
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


# --- the table -----------------------------------------------------------------------------------

class Option(NamedTuple):
    """One row of the table: everything every source, --help and the docs need to know.

    A NamedTuple, not a dataclass: `dataclasses` imports `inspect` and friends, a megabyte in
    every worker (the workers are forked from a master that imported this module)."""

    name: str                     # canonical, dashed: "buffer-size"
    type: Callable[[str], Any]    # converts a string value; raises ValueError on bad input
    default: Any                  # the converted value used when no source sets it
    help: str
    short: str | None = None      # one letter, uWSGI's ("p" for processes)
    aliases: tuple[str, ...] = ()
    repeatable: bool = False      # the value is a list; each occurrence appends
    flag: bool = False            # no value on the command line; a boolean in files and env
    const: Any = None             # the string an optional value defaults to (chmod-socket → "666")
    group: str = "core"           # section in --help and the docs

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return self.name.upper().replace("-", "_")


O = Option
OPTIONS: tuple[Option, ...] = (
    # application
    O("module", text, None, "WSGI app as pkg.mod[:callable] (callable defaults to --callable)", "w", ("wsgi",),
      group="app"),
    O("wsgi-file", text, None, "load the WSGI app from this Python file", aliases=("file",), group="app"),
    O("callable", text, "application", "name of the WSGI callable", group="app"),
    O("chdir", text, None, "change to this directory before loading the app", group="app"),
    O("pythonpath", text, (), "add a directory to sys.path", aliases=("python-path", "pp"), repeatable=True,
      group="app"),
    O("env", key_value, (), "set KEY=VALUE in the environment before loading the app", repeatable=True,
      group="app"),
    O("home", text, None, "run the app in this virtualenv: its site-packages first on sys.path, VIRTUAL_ENV "
      "set; a venv of another Python version is refused", "H", ("virtualenv", "venv", "pyhome"), group="app"),
    O("lazy-apps", boolean, False, "load the app in each worker instead of once in the master", flag=True,
      group="app"),
    O("hooks", text, None, "call gunicorn-style server hooks defined in this Python file (a gunicorn.conf.py "
      "works): on_starting, on_reload, when_ready, pre_fork, post_fork, worker_exit, child_exit, on_exit",
      group="app"),
    O("lifespan", choice("auto", "on", "off"), "auto", "the ASGI lifespan scope (asyncio worker), as uvicorn's: "
      "auto serves an app that raises on it before its startup completes without it, on makes that a boot "
      "failure too, off never sends it", group="app"),
    O("lifespan-timeout", number(), 60.0, "seconds the ASGI lifespan startup and shutdown may each take; a "
      "startup that takes longer fails the worker's boot", group="app"),
    O("ws", choice("auto", "wsproto", "none"), "auto", "WebSocket on the asyncio worker's --http sockets: auto "
      "and wsproto speak it through wsproto (the zergserve[websocket] extra; without it, auto refuses upgrades "
      "with 501 and wsproto fails the boot), none refuses upgrades with 501", group="app"),
    O("ws-max-size", integer(1), 16777216, "largest WebSocket message in bytes a client may send; a bigger one "
      "closes the connection with 1009", group="app"),
    O("ws-ping-interval", number(), 20.0, "seconds between the server's WebSocket pings (0: none)",
      aliases=("websocket-ping-freq", "websockets-ping-freq"), group="app"),
    O("ws-ping-timeout", number(), 20.0, "seconds a WebSocket client has to answer a ping before the "
      "connection closes with 1011 (0: wait for ever)", aliases=("websocket-pong-tolerance",
                                                                  "websockets-pong-tolerance"), group="app"),
    O("ws-per-message-deflate", boolean, True, "accept the permessage-deflate WebSocket extension when the "
      "client offers it", group="app"),
    # sockets
    O("http", address, (), "serve HTTP/1.1 on ADDR from the workers themselves: uWSGI's --http-socket; there is "
      "no separate HTTP router process", aliases=("http-socket", "bind"), repeatable=True, group="sockets"),
    O("socket", address, (), "serve the uwsgi protocol on ADDR (for nginx uwsgi_pass)", "s", ("uwsgi-socket",),
      repeatable=True, group="sockets"),
    O("listen", integer(1, 65535), 100, "listen backlog of every socket", "l", ("backlog",), group="sockets"),
    O("chmod-socket", mode, None, "mode of UNIX sockets (without a value: 666)", "C", const="666",
      group="sockets"),
    O("forwarded-allow-ips", proxies, proxy.DEFAULT, "trust X-Forwarded-Proto/-For (or Forwarded) from these "
      "peers on --http: comma-separated IPs, networks (10.0.0.0/8), 'unix' for UNIX socket peers, '*' for "
      "everyone; they set wsgi.url_scheme and REMOTE_ADDR (the ASGI scheme and client)", group="sockets"),
    O("vacuum", boolean, False, "remove UNIX socket and pid files at exit", flag=True, group="sockets"),
    O("chown-socket", text, None, "owner of UNIX sockets as USER[:GROUP] (names or numbers), set before "
      "privileges are dropped: give the socket to nginx's user or group", group="sockets"),
    # processes
    O("processes", integer(1, 4096), 1, "number of worker processes", "p", ("workers",), group="processes"),
    O("master", boolean, True, "run a master (zergserve always does; accepted for uWSGI configs)", "M",
      flag=True, group="processes"),
    O("worker", choice("sync", "gthread", "gevent", "asyncio"), "sync", "worker class: sync (one request at a "
      "time), gthread (--threads requests at once, HTTP keep-alive; what --threads N chooses), gevent (many "
      "connections per process, HTTP keep-alive; pip install zergserve[gevent]) or asyncio (ASGI apps only, on "
      "an event loop)", "k",
      aliases=("worker-class",), group="processes"),
    O("threads", integer(1, 1024), 1, "requests each worker process serves at once, each in a thread of its own; "
      "kept-alive connections wait in the worker's poller, not in a thread (gunicorn's gthread); above 1 the "
      "sync worker becomes the gthread worker", group="processes"),
    O("threads-stacksize", integer(0), 0, "stack size of each request thread in KiB (uWSGI's unit; 0: the "
      "system's)", aliases=("thread-stacksize", "threads-stack-size", "thread-stack-size"), group="processes"),
    O("worker-connections", integer(1), 1000, "most connections a gevent or asyncio worker serves at once",
      group="processes"),
    O("loop", choice("auto", "asyncio", "uvloop"), "auto", "the asyncio worker's event loop, as uvicorn's: "
      "uvloop (pip install zergserve[uvloop]; asking for it without it installed is a start error), asyncio "
      "(the standard library's), or auto: uvloop when it is installed", group="processes"),
    O("gevent", integer(1), None, "uWSGI's gevent loop: the same as --worker gevent --worker-connections N",
      group="processes"),
    O("harakiri", integer(0), 0, "kill a worker stuck on one request for more than N seconds (0: off)", "t",
      group="processes"),
    O("max-requests", integer(0), 0, "recycle a worker after N requests (0: never)", "R", group="processes"),
    O("max-requests-delta", integer(0), 0, "add (worker id - 1) * N to max-requests, so workers do not "
      "recycle together", group="processes"),
    O("reload-check-url", text, (), "on every reload, GET this PATH (or http://HOST/PATH, to set the Host "
      "header) from the reload check's trial worker, the new app booted on a private socket; the reload is "
      "refused unless each answers 2xx or 3xx", repeatable=True, group="processes"),
    O("max-requests-jitter", integer(0), 0, "add a random 0..N to each worker's max-requests (gunicorn's), so "
      "workers do not recycle together", group="processes"),
    O("worker-reload-mercy", integer(0), 60, "seconds a worker may take to finish its requests on reload or "
      "stop before SIGKILL", aliases=("graceful-timeout",), group="processes"),
    O("reload-on-rss", integer(0), 0, "recycle a worker whose resident memory exceeds N megabytes, after the "
      "request in hand (0: off)", group="processes"),
    O("evil-reload-on-rss", integer(0), 0, "kill (SIGKILL) and respawn a worker whose resident memory exceeds N "
      "megabytes, even in the middle of a request (0: off)", group="processes"),
    O("max-worker-lifetime", integer(0), 0, "recycle a worker after N seconds, after the request in hand "
      "(0: never)", group="processes"),
    O("max-worker-lifetime-delta", integer(0), 0, "add (worker id - 1) * N seconds to max-worker-lifetime, so "
      "workers do not recycle together", group="processes"),
    O("check-interval", number(), 1.0, "seconds between the master's housekeeping turns", group="processes"),
    O("auto-procname", boolean, True, "title processes by role and app: 'zergserve master [shop.ini]', "
      "'zergserve worker 2 [mysite.wsgi]' (uWSGI's default is off; false keeps the command line)", flag=True,
      group="processes"),
    O("procname", text, None, "title every process with this name (the master too, unless --procname-master)",
      group="processes"),
    O("procname-master", text, None, "title the master (an emperor, a zergpool) with this name", group="processes"),
    O("procname-prefix", text, "", "prefix for process titles", group="processes"),
    O("procname-prefix-spaced", text, "", "prefix for process titles, followed by a space", group="processes"),
    O("procname-append", text, "", "append this to process titles", group="processes"),
    O("pidfile", text, None, "write the master's pid to this file", group="processes"),
    O("privileged-binary-patch", text, None, "once configured, exec this program instead of serving "
      "(a vassal that is really nginx, say)", group="processes"),
    O("privileged-binary-patch-arg", text, None, "the same, with arguments (a shell-like command line)",
      group="processes"),
    O("unprivileged-binary-patch", text, None, "as privileged-binary-patch (zergserve drops no privileges of "
      "its own before it)", group="processes"),
    O("unprivileged-binary-patch-arg", text, None, "as privileged-binary-patch-arg", group="processes"),
    # static files
    O("static-map", mount, (), "serve GET/HEAD of /URL/REST from DIR/REST before the app (DIR may be one file); "
      "a path with no file there goes to the app", repeatable=True, group="static"),
    O("static-map2", mount, (), "as static-map, but the whole path is appended: /URL/REST from DIR/URL/REST",
      repeatable=True, group="static"),
    O("check-static", text, (), "serve GET/HEAD of /PATH from DIR/PATH when that file exists, else the app",
      repeatable=True, group="static"),
    O("static-index", text, (), "for a mapped directory, serve this file in it (index.html)", repeatable=True,
      group="static"),
    O("static-safe", text, (), "a file whose real path (symlinks resolved) is under DIR may be served even when "
      "it is outside the directory it was mapped through", repeatable=True, group="static"),
    O("static-expires", expires_rule, (), "an Expires header SECONDS from now for static files whose real path "
      "matches REGEXP", repeatable=True, group="static"),
    O("static-expires-type", expires_type, (), "an Expires header SECONDS from now for static files of this "
      "MIME type", repeatable=True, group="static"),
    O("mimefile", text, (), "read more MIME types (mime.types format) for static files; Python's table and "
      "/etc/mime.types are read anyway", aliases=("mime-file",), repeatable=True, group="static"),
    # privileges
    O("uid", text, None, "after binding the sockets and before loading the app, the master and workers become "
      "this user (name or number)", group="privileges"),
    O("gid", text, None, "the group the master and workers become (name or number; with --uid the default "
      "is the user's primary group); supplementary groups are the user's (initgroups)", group="privileges"),
    O("umask", umask, None, "set this umask (octal) at startup, before sockets and files are created",
      group="privileges"),
    # reload on change
    O("touch-reload", text, (), "graceful reload (as HUP: checked first) when FILE's modification time changes",
      repeatable=True, group="reload"),
    O("touch-workers-reload", text, (), "recycle every worker, each after the request in hand, when FILE's "
      "modification time changes", repeatable=True, group="reload"),
    O("fs-reload", text, (), "graceful reload when PATH (a file, or anything directly in a directory) changes; "
      "inotify where the kernel has it, else polled every master cycle", repeatable=True, group="reload"),
    O("py-autoreload", integer(0), 0, "development: graceful reload when the source of a module the app "
      "imported changes; inotify where the kernel has it, else checked every N seconds (0: off; "
      "without a value: 1)", aliases=("python-autoreload", "reload"), const="1", group="reload"),
    # limits
    O("buffer-size", integer(1, 65535), 4096, "largest uwsgi vars block accepted; above 4096 it also raises the "
      "HTTP request line and header field limits to N, as in uWSGI", "b", group="limits"),
    O("max-vars", integer(1), 64, "uwsgi packets may carry at most 2 * N vars", group="limits"),
    O("http-timeout", number(), 4.0, "absolute deadline in seconds for the whole request head to arrive",
      group="limits"),
    O("keep-alive", number(), 2.0, "seconds a gevent or asyncio worker waits for the next request on a kept-alive "
      "HTTP connection", group="limits"),
    O("socket-timeout", number(), 4.0, "timeout in seconds for each read and write on an accepted "
      "connection (body reads, sends)", "z", group="limits"),
    O("body-timeout", number(), 20.0, "seconds a request body may take to arrive, plus one second for every "
      "--body-min-rate bytes received (mod_reqtimeout's body=20,MinRate=500); 408 past it (0: no bound)",
      group="limits"),
    O("body-min-rate", number(), 500.0, "bytes per second that extend --body-timeout (0: the timeout is "
      "absolute)", group="limits"),
    O("send-min-rate", number(), 500.0, "bytes per second a client must take a response at, over every "
      "--socket-timeout seconds the worker waits on it; a slower client is dropped (0: one byte per window)",
      group="limits"),
    O("limit-request-line", integer(0), 4094, "longest HTTP request line (414 above; 0: no limit)", group="limits"),
    O("limit-request-fields", integer(0), 100, "most HTTP header fields (431 above; 0: no limit)", group="limits"),
    O("limit-request-field-size", integer(0), 8190, "longest HTTP header line (431 above; 0: no limit)",
      group="limits"),
    O("limit-post", integer(0), 0, "largest request body in bytes (413 above; 0: no limit)", group="limits"),
    # zerg
    O("zerg-server", text, None, "hand this instance's sockets to zergs connecting to this UNIX socket",
      group="zerg"),
    O("zerg", text, (), "attach to a zerg server (or zergpool) and serve its sockets", repeatable=True,
      group="zerg"),
    O("zerg-fallback", boolean, False, "if no zerg server answers, bind --http/--socket normally",
      flag=True, group="zerg"),
    O("zerg-server-mode", mode, 0o600, "file mode of the zerg server socket", group="zerg"),
    O("zerg-allow-uid", integer(0), (), "also trust this uid as a zerg peer (own uid and root always are)",
      repeatable=True, group="zerg"),
    O("zergpool", text, (), "run a zergpool: PATH:addr1,addr2 (binds the addresses, hands them to zergs)",
      aliases=("zerg-pool",), repeatable=True, group="zerg"),
    O("zergpool-protocol", choice("uwsgi", "http"), "uwsgi", "protocol of the zergpool's sockets", group="zerg"),
    # elastic: idle, cheap, SOS
    O("idle", integer(0), 0, "after more than N seconds without a request, stop the workers until the next "
      "connection (0: never)", group="elastic"),
    O("die-on-idle", boolean, False, "with --idle: exit instead (a vassal asks its emperor, byte 22)", flag=True,
      group="elastic"),
    O("cheap", boolean, False, "start with no workers; the first connection spawns them", flag=True,
      group="elastic"),
    O("vassal-sos-backlog", integer(0), 0, "ask the emperor for reinforcements (byte 30, once per zerg "
      "wanted) as soon as a socket's accept queue holds N or more connections (0: off)", group="elastic"),
    O("vassal-sos", integer(0), 0, "ask the emperor for reinforcements when every worker has been busy for "
      "more than N seconds (0: off)", group="elastic"),
    # cheaper: the worker count follows the load, between --cheaper and --processes
    O("cheaper", integer(0), 0, "cheaper subsystem: keep at least N workers and let the --cheaper-algo add "
      "workers up to --processes under load and stop them again when the load is gone (0: off)",
      group="cheaper"),
    O("cheaper-initial", integer(0), 0, "workers started at boot in cheaper mode (0: --cheaper)", group="cheaper"),
    O("cheaper-step", integer(1), 1, "workers added at a time when the algorithm asks for more", group="cheaper"),
    O("cheaper-overload", integer(0), 3, "spare: seconds every worker must be busy before adding workers (and "
      "with one idle before stopping one); backlog: queued connections above which workers are added; "
      "busyness: seconds between busyness checks", group="cheaper"),
    O("cheaper-algo", choice("spare", "backlog", "busyness"), "spare", "how the cheaper subsystem decides",
      group="cheaper"),
    O("cheaper-rss-limit-soft", integer(0), 0, "add no worker while the workers' total RSS is above N bytes "
      "(0: off)", group="cheaper"),
    O("cheaper-rss-limit-hard", integer(0), 0, "stop a worker (down to --cheaper) while the workers' total RSS "
      "is above N bytes (0: off)", group="cheaper"),
    O("cheaper-busyness-min", integer(0, 100), 25, "busyness: below this average busyness (%) stop a worker",
      group="cheaper"),
    O("cheaper-busyness-max", integer(0, 100), 50, "busyness: above this average busyness (%) add workers",
      group="cheaper"),
    O("cheaper-busyness-multiplier", integer(1), 10, "busyness: low-busyness checks to wait before stopping a "
      "worker", group="cheaper"),
    O("cheaper-busyness-penalty", integer(0), 1, "busyness: added to the multiplier when a stopped worker had to "
      "be started again within it", group="cheaper"),
    O("cheaper-busyness-verbose", boolean, False, "busyness: log every check", flag=True, group="cheaper"),
    O("cheaper-busyness-backlog-alert", integer(0), 33, "busyness: add emergency workers at once when more "
      "than N connections are queued (0: off)", group="cheaper"),
    O("cheaper-busyness-backlog-multiplier", integer(1), 3, "busyness: the multiplier while emergency workers "
      "run", group="cheaper"),
    O("cheaper-busyness-backlog-step", integer(1), 1, "busyness: emergency workers added at a time",
      group="cheaper"),
    O("cheaper-busyness-backlog-nonzero", integer(0), 60, "busyness: add emergency workers when connections "
      "have been queued for N seconds (0: off)", group="cheaper"),
    # emperor
    O("emperor", text, (), "run the emperor over a vassals dir (DIR, dir://DIR or glob://PATTERN) or the rows "
      "of a PostgreSQL query (pg://CONNINFO;SELECT name, config, ts FROM vassals)", repeatable=True,
      group="emperor"),
    O("emperor-pg-channel", text, "zergserve_vassals", "pg:// monitors LISTEN on this channel and re-read "
      "their rows on a NOTIFY (empty: poll only)", group="emperor"),
    O("emperor-freq", number(), 3.0, "seconds between scans of the monitors (inotify wakes it sooner)",
      group="emperor"),
    O("emperor-throttle", integer(1), 1000, "milliseconds: blacklist step for a vassal that dies before "
      "serving, how long a silent vassal counts as starting, and how often failing vassals may "
      "start, all together", group="emperor"),
    O("emperor-max-throttle", integer(1), 180000, "milliseconds: the largest blacklist delay", group="emperor"),
    O("emperor-spawn-burst", integer(1), 16, "vassals that may be starting at once (failing ones: "
      "half of them, and this many before one per --emperor-throttle)", group="emperor"),
    O("emperor-required-heartbeat", integer(1), 30, "seconds without a heartbeat before a vassal that "
      "sends them is killed and respawned", group="emperor"),
    O("emperor-curse-tolerance", integer(1), 30, "seconds a stopped vassal may take to exit before SIGKILL",
      group="emperor"),
    O("emperor-graceful-shutdown", boolean, False, "stop vassals gracefully (byte 2) instead of byte 0",
      flag=True, group="emperor"),
    O("emperor-stats", address, None, "serve the emperor's stats JSON on ADDR", aliases=("emperor-stats-server",),
      group="emperor"),
    O("emperor-metrics", address, None, "serve the emperor's Prometheus metrics at http://ADDR/metrics: "
      "vassals, respawns, throttles, broodlord zergs", group="emperor"),
    O("emperor-pidfile", text, None, "write the emperor's pid to this file", group="emperor"),
    O("emperor-extra-extension", text, (), "also treat files ending in EXT as vassal configs",
      repeatable=True, group="emperor"),
    O("emperor-nofollow", boolean, False, "use a symlink's own mtime (lstat), for the .skel trick", flag=True,
      group="emperor"),
    O("emperor-no-blacklist", boolean, False, "never blacklist vassals that die before serving", flag=True,
      group="emperor"),
    O("emperor-tyrant", boolean, False, "run each vassal as the owner (uid and gid) of its config file",
      flag=True, group="emperor"),
    O("emperor-tyrant-nofollow", boolean, False, "tyrant mode: a symlinked config runs as the owner of the "
      "link itself (uWSGI's lstat); without it symlinks are refused", flag=True, group="emperor"),
    O("emperor-tyrant-initgroups", boolean, False, "tyrant mode: give vassals their owner's supplementary "
      "groups (initgroups) instead of none", flag=True, group="emperor"),
    O("vassal-set", key_value, (), "pass --set key=value to every vassal", aliases=("vassals-set",),
      repeatable=True, group="emperor"),
    O("vassals-include", text, (), "append this config file to every vassal's command line",
      repeatable=True, group="emperor"),
    O("vassals-include-before", text, (), "put this config file before every vassal's own",
      repeatable=True, group="emperor"),
    O("binary-path", text, None, "program to run vassals with (default: this zergserve)", group="emperor"),
    O("emperor-broodlord", integer(0), 0, "on a vassal's SOS spawn NAME:zerg (the [zerg] section of its "
      "file), as many at once as it asks for, while it has fewer than N zergs (0: off)", group="emperor"),
    O("emperor-broodlord-boot-timeout", number(), 10.0, "seconds a zerg may take from its spawn to "
      "accepting requests; a slower one is killed and counted as a failed boot (0: wait forever)",
      group="emperor"),
    O("reload-mercy", integer(0), 30, "seconds the emperor gives vassals to stop at shutdown before SIGKILL",
      group="emperor"),
    O("heartbeat", integer(0), 0, "vassal: send the emperor a heartbeat every N seconds (0: off)",
      group="emperor"),
    # stats and logging
    O("stats", address, None, "serve stats JSON on ADDR (TCP if it has ':', else UNIX)", aliases=("stats-server",),
      group="stats"),
    O("stats-http", boolean, False, "prefix the stats JSON with an HTTP header", flag=True, group="stats"),
    O("stats-minified", boolean, False, "compact stats JSON", flag=True, group="stats"),
    O("metrics", address, None, "serve Prometheus metrics at http://ADDR/metrics (TCP if it has ':', else "
      "UNIX): requests, exceptions, harakiri, respawns, workers by status, listen queue, response times, "
      "open WebSockets",
      group="stats"),
    O("disable-logging", boolean, False, "no access log lines (errors are always logged)", "L", flag=True,
      group="logging"),
    O("logto", text, None, "append the log (and the app's stdout/stderr) to this file", group="logging"),
    O("log-format", log_format, "zergserve", "the access line: uWSGI's %(placeholders) (docs/logging.md), gunicorn's "
      "%(h)s atoms, or a preset: zergserve, uwsgi, combined, common, json", aliases=("logformat", "access-logformat"),
      group="logging"),
    O("req-logger", text, None, "write access lines to file:PATH (or PATH) instead of the log; '-' is the log",
      aliases=("logger-req", "access-logfile"), group="logging"),
    O("log-level", choice(*accesslog.LEVELS), "info", "the least severe server line written; access lines are "
      "info, so warning and above turn them off", aliases=("loglevel",), group="logging"),
    O("logdate", strftime, None, "prefix access lines with this strftime date (without a value: uWSGI's "
      "'%a %b %d %H:%M:%S %Y -'); also the format of %(ftime)", aliases=("log-date",),
      const="%a %b %d %H:%M:%S %Y -", group="logging"),
    O("log-4xx", boolean, False, "with --disable-logging: still log responses with a 4xx status", flag=True,
      group="logging"),
    O("log-5xx", boolean, False, "with --disable-logging: still log responses with a 5xx status", flag=True,
      group="logging"),
    O("log-slow", integer(0), 0, "with --disable-logging: still log requests that took N ms or more (0: off)",
      group="logging"),
    O("log-maxsize", integer(0), 0, "rotate the --logto and --req-logger files past N bytes: renamed to "
      "FILE.<unix time>, a new one started (0: never)", group="logging"),
    O("touch-logreopen", text, (), "reopen the --logto and --req-logger files when FILE's modification time "
      "changes (logrotate's postrotate: touch FILE); a moved file is reopened within a second anyway",
      repeatable=True, group="logging"),
    # uWSGI compatibility: accepted so that uWSGI files load; the default is what zergserve always does
    O("enable-threads", boolean, True, "accepted for uWSGI configs: Python threads always work", "T",
      flag=True, group="compat"),
    O("single-interpreter", boolean, True, "accepted for uWSGI configs: there is one interpreter per process",
      flag=True, group="compat"),
    O("need-app", boolean, True, "accepted for uWSGI configs: the app is always required", flag=True,
      group="compat"),
    O("die-on-term", boolean, True, "accepted for uWSGI configs: TERM always shuts down gracefully", flag=True,
      group="compat"),
    O("strict", boolean, True, "accepted for uWSGI configs: unknown keys are always errors", flag=True,
      group="compat"),
    O("thunder-lock", boolean, False, "accepted for uWSGI configs: the sync worker waits with EPOLLEXCLUSIVE, so "
      "a connection wakes one worker, not all", flag=True, group="compat"),
    O("post-buffering", integer(0), 0, "accepted for uWSGI configs: wsgi.input reads the body from the socket "
      "as the app asks, within --limit-post", group="compat"),
    O("offload-threads", integer(0), 0, "accepted for uWSGI configs: wsgi.file_wrapper uses sendfile in the "
      "worker", group="compat"),
    O("memory-report", boolean, False, "accepted for uWSGI configs: the stats server reports each worker's rss",
      flag=True, group="compat"),
    O("harakiri-verbose", boolean, False, "accepted for uWSGI configs: a harakiri is always logged with the "
      "request it killed", flag=True, group="compat"),
    O("plugins", text, (), "accepted for uWSGI configs: Python is built in, there are no plugins to load",
      aliases=("plugin",), repeatable=True, group="compat"),
    O("gevent-monkey-patch", boolean, False, "accepted for uWSGI configs: the gevent worker always "
      "monkey-patches", flag=True, group="compat"),
    O("preload", boolean, False, "accepted for gunicorn configs: the app is loaded in the master before the "
      "fork unless --lazy-apps", flag=True, group="compat"),
    # config sources
    O("ini", text, (), "read options from an ini file (FILE[:section])", repeatable=True, group="config"),
    O("json", text, (), "read options from a JSON file (FILE[:section])", aliases=("js",), repeatable=True,
      group="config"),
    O("toml", text, (), "read options from a TOML file (FILE[:section])", repeatable=True, group="config"),
    O("yaml", text, (), "read options from a YAML file (FILE[:section]; needs PyYAML)", aliases=("yml",),
      repeatable=True, group="config"),
    O("include", text, (), "read a config file (any format, by extension) in place, as uWSGI's --include",
      repeatable=True, group="config"),
    O("inherit", text, (), "read a config file after every other source (uWSGI's template: only its magic "
      "variables are expanded)", repeatable=True, group="config"),
    O("set", key_value, (), "set an option, or a placeholder if KEY is no option", "S", repeatable=True,
      group="config"),
    O("set-placeholder", key_value, (), "set a placeholder, even if KEY is an option's name", aliases=("set-ph",),
      repeatable=True, group="config"),
    O("print-config", boolean, False, "print the merged configuration as JSON and exit", flag=True,
      group="config"),
    O("check-config", boolean, False, "load the configuration and the app, then exit", flag=True,
      group="config"),
    O("connect-and-read", text, None, "connect to ADDR (a stats socket: TCP if it has a ':', else a UNIX "
      "path), copy what it sends to stdout and exit, as uWSGI's option", group="config"),
)
del O

_GROUP_TITLES = {"app": "Application", "sockets": "Sockets", "processes": "Processes", "limits": "Limits",
                 "privileges": "Privileges", "reload": "Reload on change", "static": "Static files",
                 "zerg": "Zerg mode", "elastic": "Idle, cheap and SOS",
                 "cheaper": "Cheaper: the worker count follows the load", "emperor": "Emperor", "stats": "Stats",
                 "logging": "Logging", "compat": "uWSGI compatibility", "config": "Configuration"}
_BY_NAME: dict[str, Option] = {name: opt for opt in OPTIONS for name in (opt.name, *opt.aliases)}
_BY_SHORT: dict[str, Option] = {opt.short: opt for opt in OPTIONS if opt.short}
_FILE_OPTIONS = frozenset({"ini", "json", "toml", "yaml", "include", "inherit"})
_NOT_FORWARDED = _FILE_OPTIONS | {"set", "set-placeholder", "print-config", "check-config", "gevent"}
# An option whose value stands for others (uWSGI's gevent = N); the row keeps its own value too.
_EXPANDS: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "gevent": lambda n: [("worker", "gevent"), ("worker-connections", str(n))]}
# A value of a live option that changes nothing here: warned about with the reason (the compat group's
# rows are warned about whatever their value, with their help as the reason).
_NO_EFFECT: dict[str, tuple[Any, str]] = {"master": (False, "zergserve always runs a master process")}
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
# Tyrant mode: "FD:NAME", the vassal's config file NAME as the emperor opened and checked it (see _read).
CONFIG_FD_VARIABLE = "ZERGSERVE_CONFIG_FD"
# Variables of uWSGI's and our own machinery, never options.
_RESERVED_ENV = frozenset({"UWSGI_RELOADS", "UWSGI_VASSALS_DIR", "UWSGI_EMPEROR_FD", "UWSGI_EMPEROR_FD_CONFIG",
                           "UWSGI_BROODLORD_NUM", "UWSGI_EMPEROR_PROXY", "UWSGI_JAIL_PID",
                           "UWSGI_ORIGINAL_PROC_NAME", CONFIG_FD_VARIABLE})
_RESERVED_ENV_PREFIXES = ("UWSGI_VASSAL_", "ZERGSERVE_VASSAL_", "ZERGSERVE_REEXEC_")
# uWSGI reads config files named by these variables too (UWSGI_XML=...), though they are no options here.
_UWSGI_CONFIG_VARIABLES = frozenset({"UWSGI_XML", "UWSGI_INCLUDE", "UWSGI_INHERIT", "UWSGI_CONFIG"})


def is_option_variable(name: str) -> bool:
    """Whether the environment variable `name` configures a zergserve or uWSGI process (an option,
    or a config file to read). The emperor keeps its own such variables from its vassals: a vassal
    reading ZERGSERVE_EMPEROR would become an emperor of the same directory, and so on forever."""
    if name in _UWSGI_CONFIG_VARIABLES:
        return True
    for prefix in ("UWSGI_", "ZERGSERVE_"):
        if name.startswith(prefix) and name not in _RESERVED_ENV and not name.startswith(_RESERVED_ENV_PREFIXES):
            return find(name[len(prefix):].lower()) is not None
    return False


def find(name: str) -> Option | None:
    """The option called `name` or one of its aliases ('_' is accepted for '-')."""
    return _BY_NAME.get(name) or _BY_NAME.get(name.replace("_", "-"))


# --- the merged configuration ----------------------------------------------------------------------

class Config:
    """The merged configuration: attribute access by option name with '-' → '_' (cfg.processes,
    cfg.http is a list, cfg.master a bool). `sources` maps the name of every option that some
    source set to where its value came from; `placeholders` holds the custom %(name) values."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.placeholders: dict[str, str] = {}
        self.warnings: list[str] = []  # options that change nothing here, ignored variables: for the log
        for opt in OPTIONS:
            setattr(self, opt.attr, list(opt.default) if opt.repeatable else opt.default)

    def __getattr__(self, name: str) -> Any:  # only called for names that are no option
        raise AttributeError(f"no option {name.replace('_', '-')!r}")

    def __repr__(self) -> str:
        return f"Config({' '.join(self.as_args())})"

    def as_args(self) -> list[str]:
        """argv that reproduces every value that differs from its default (to re-exec, or to pass
        on to a vassal); always `--name=value`, so no value can be mistaken for an option."""
        args: list[str] = []
        for opt in OPTIONS:
            if opt.name in _NOT_FORWARDED or opt.group == "compat":
                continue
            value = getattr(self, opt.attr)
            if opt.repeatable:
                args += [f"--{opt.name}={_render(opt, item)}" for item in value]
            elif value != opt.default:
                if opt.flag:
                    args.append(f"--{opt.name}" if value else f"--{opt.name}=false")
                else:
                    args.append(f"--{opt.name}={_render(opt, value)}")
        return args


def _render(opt: Option, value: Any) -> str:
    """A converted value back as the string its option's type reads."""
    if opt.type is mode or opt.type is umask:
        return format(value, "03o")
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


class Setting(NamedTuple):
    """One key = value from one source, before conversion; opt is None for a file key that is no
    option (a placeholder, or a mistake)."""

    opt: Option | None
    key: str
    value: Any  # a string, a bool or a list of strings (json, toml, yaml)
    source: str  # "file:line", "--flag", "$VAR"
    placeholder: bool = False  # defined by `set`, so it needs no %(key) use to be accepted


def is_file_option(setting: Setting) -> bool:
    """Whether the setting names a config file to read in its place (--ini and friends)."""
    return setting.opt is not None and setting.opt.name in _FILE_OPTIONS


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into a Config (argv without the program name). Raises ConfigError naming
    the source and key of every problem found, HelpRequested or VersionRequested. Options that
    change nothing here and unknown UWSGI_* variables end up in cfg.warnings, for the caller to log."""
    env = os.environ if environ is None else environ
    command_line = _parse_argv(argv)
    scope = configfile.Scope(env)
    environment = _from_environ(env, "UWSGI_", scope) + _from_environ(env, "ZERGSERVE_", scope)
    files: list[Setting] = []
    others: list[Setting] = []
    for setting in environment + command_line:
        if is_file_option(setting):
            files += configfile.read_named(setting.opt.name, setting.value, None, setting.source, 0, scope, False)
        else:
            scope.define(setting)
            others.append(setting)
    ordered = files + others + scope.inherited
    used = scope.referenced | configfile.placeholder_names(ordered)
    cfg = Config()
    for setting in ordered:
        try:
            _apply(cfg, setting, used)
        except ConfigError as exc:
            scope.errors.append(str(exc))
    _threaded(cfg, scope.errors)
    if scope.errors:
        raise ConfigError("\n".join(dict.fromkeys(scope.errors)))
    cfg.warnings[:0] = dict.fromkeys(scope.warnings)
    return cfg


def _threaded(cfg: Config, errors: list[str]) -> None:
    """--threads above 1 makes the sync worker the gthread worker (uWSGI's threads = N on the default
    worker); the gevent and asyncio workers serve many requests per process their own way."""
    if cfg.threads > 1 and cfg.worker == "sync":
        cfg.worker = "gthread"
    elif cfg.threads > 1 and cfg.worker != "gthread":
        errors.append(f"{cfg.sources.get('threads', 'threads')}: threads {cfg.threads} cannot go with the "
                      f"{cfg.worker} worker, which serves many requests per process without threads: drop "
                      "threads, or use the sync or gthread worker")


def parse_file(path: str, section: str | None = None,
               environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') of one config file and the files it includes, with its magic
    variables, placeholders and $(ENV) applied; a list value gives one tuple per item. Keys are
    not checked against the table (the emperor reads vassal files with it)."""
    env = os.environ if environ is None else environ
    if section is None:
        path, section = configfile.split_section(path)
    scope = configfile.Scope(env)
    settings = configfile.expand_file(configfile.file_kind(path) or "ini", path, section, path, path, 0, scope)
    if scope.errors:
        raise ConfigError("\n".join(scope.errors))
    return [(s.key, as_text(item), s.source) for s in settings + scope.inherited
            for item in (s.value if isinstance(s.value, list) else [s.value])]


def _apply(cfg: Config, setting: Setting, used: set[str]) -> None:
    """Convert one setting and store it: replace a scalar, extend a list, keep a placeholder."""
    opt = setting.opt
    if opt is None:
        if not (setting.placeholder or setting.key in used):
            raise ConfigError(f"{setting.source}: {_unknown(setting.key)}")
        cfg.placeholders[setting.key] = as_text(setting.value)
        return
    value = _convert(opt, setting.value, setting.source)
    _warn_if_inert(cfg, opt, value, setting.source)
    if opt.name in _EXPANDS:
        for name, item in _EXPANDS[opt.name](value):
            _apply(cfg, Setting(find(name), name, item, setting.source), used)
    if opt.repeatable:
        getattr(cfg, opt.attr).extend(value if isinstance(value, list) else [value])
    else:
        setattr(cfg, opt.attr, value)
    cfg.sources[opt.name] = setting.source


def _warn_if_inert(cfg: Config, opt: Option, value: Any, source: str) -> None:
    """One warning line per option that is accepted but changes nothing here, saying why (the
    row's help for the compat group; _NO_EFFECT for a value of a live option, like master = false)."""
    if opt.group == "compat":
        why = opt.help.split(": ", 1)[-1]
    elif opt.name in _NO_EFFECT and _NO_EFFECT[opt.name][0] == value:
        why = _NO_EFFECT[opt.name][1]
    else:
        return
    if not any(f" {opt.name} has no effect here" in line for line in cfg.warnings):
        cfg.warnings.append(f"{source}: {opt.name} has no effect here: {why}")


def _convert(opt: Option, raw: Any, source: str) -> Any:
    """The typed value of one raw value: a flag's empty value is true, an optional value's empty
    (or true) value is its const."""
    if isinstance(raw, list):
        if not opt.repeatable:
            raise ConfigError(f"{source}: {opt.name}: takes one value, got a list")
        return [_convert(opt, item, source) for item in raw]
    value = as_text(raw)
    if opt.flag and not value.strip():
        return True
    if opt.const is not None and value.strip().lower() in ("", "true"):
        value = opt.const
    try:
        return opt.type(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {opt.name}: {exc}") from None


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve_set(setting: Setting) -> Setting:
    """`set = key=value` as the setting of option `key`, or of the placeholder `key`;
    `set-placeholder = key=value` always as a placeholder."""
    if setting.opt is None or setting.opt.name not in ("set", "set-placeholder"):
        return setting
    try:
        key, _, value = key_value(as_text(setting.value)).partition("=")
    except ValueError as exc:
        raise ConfigError(f"{setting.source}: {setting.opt.name}: {exc}") from None
    target = find(key) if setting.opt.name == "set" else None
    return Setting(target, key, value, setting.source, placeholder=target is None)


# --- the command line ------------------------------------------------------------------------------

def _parse_argv(argv: Sequence[str]) -> list[Setting]:
    """Settings in command-line order. The table drives a small hand parser because argparse
    handles optional values and bare config-file arguments poorly."""
    args = list(argv)
    settings: list[Setting] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested(help_text())
        if arg == "--version":
            raise VersionRequested(f"zergserve {__version__}")
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            opt = find(name)
            if opt is None:
                raise ConfigError(_unknown(name, f"--{name}"))
            spelled = f"--{name}"
            if not eq:
                value, i = _take_value(opt, args, i, spelled)
        elif arg.startswith("-") and len(arg) > 1:
            letter, rest = arg[1], arg[2:]
            opt = _BY_SHORT.get(letter)
            if opt is None:
                raise ConfigError(f"unknown option -{letter}")
            spelled = f"-{letter}"
            if opt.flag and rest:
                args.insert(i, f"-{rest}")  # clustered flags: -ML is -M -L
                value = ""
            elif rest:
                value = rest
            else:
                value, i = _take_value(opt, args, i, spelled)
        else:
            kind = configfile.file_kind(arg)
            if kind is None:
                raise ConfigError(f"unexpected argument {arg!r} (config files end in .ini, .json, .toml or .yaml)")
            opt, spelled, value = _BY_NAME[kind], arg, arg
        settings.append(resolve_set(Setting(opt, opt.name, value, spelled)))
    return settings


def _take_value(opt: Option, args: list[str], i: int, spelled: str) -> tuple[str, int]:
    """The value of an option written without '=', and the index after it: none for a flag; for
    an optional value the next argument only if it is a valid value, else the const."""
    if opt.flag:
        return "", i
    if opt.const is not None:
        if i < len(args) and _is_valid(opt, args[i]):
            return args[i], i + 1
        return opt.const, i
    if i < len(args):
        return args[i], i + 1
    raise ConfigError(f"{spelled}: needs a value")


def _is_valid(opt: Option, value: str) -> bool:
    try:
        opt.type(value)
    except ValueError:
        return False
    return True


# --- the environment -------------------------------------------------------------------------------

def _from_environ(env: Mapping[str, str], prefix: str, scope: configfile.Scope) -> list[Setting]:
    """PREFIX_<OPTION> variables as settings, in name order. A ZERGSERVE_ name that is no option is
    an error (a typo in our own namespace); a UWSGI_ one a warning (the variable is ignored)."""
    settings = []
    for name in sorted(env):
        if not name.startswith(prefix) or name in _RESERVED_ENV or name.startswith(_RESERVED_ENV_PREFIXES):
            continue
        key = name[len(prefix):].lower()
        opt = find(key)
        if opt is None:
            message = f"environment variable {name}: {_unknown(key.replace('_', '-'))}"
            if prefix == "ZERGSERVE_":
                scope.errors.append(message)
            else:
                scope.warnings.append(f"{message} (ignored)")
            continue
        try:
            settings.append(resolve_set(Setting(opt, opt.name, env[name], f"${name}")))
        except ConfigError as exc:
            scope.errors.append(str(exc))
    return settings


# --- unknown names ---------------------------------------------------------------------------------

def _unknown(name: str, shown: str | None = None) -> str:
    """'unknown option NAME' and what to do about it: a migration hint where the option has
    another name here, "not supported yet" for a uWSGI option zergserve lacks, else the closest
    option name when one is close (a uWSGI option is never answered with some other option)."""
    shown = shown or repr(name)
    if name in configfile.BLOCK_KIND or name in configfile.ENDS:
        return f"unknown option {shown}: {_LOGIC}"
    if name in _HINTS:
        return f"unknown option {shown}: {_HINTS[name]}"
    from zergserve.uwsgi_names import NAMES
    if name in NAMES or name.replace("_", "-") in NAMES:
        return f"unknown option {shown}: a uWSGI option that zergserve does not support yet"
    import difflib
    hint = difflib.get_close_matches(name, list(_BY_NAME), 1)
    return f"unknown option {shown}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


# --- help and docs ---------------------------------------------------------------------------------

def _groups() -> list[tuple[str, list[Option]]]:
    """(title, options) in table order, so a new group needs no second list to show up."""
    groups: dict[str, list[Option]] = {}
    for opt in OPTIONS:
        groups.setdefault(opt.group, []).append(opt)
    return [(_GROUP_TITLES.get(name, name.capitalize()), opts) for name, opts in groups.items()]


def _spelling(opt: Option) -> str:
    names = [f"--{name}" for name in (opt.name, *opt.aliases)]
    if opt.short:
        names.insert(0, f"-{opt.short}")
    return ", ".join(names)


# What a generic converter's value is, read from its row's help: the converters say "a number" or
# "a string", the help says which (seconds, a file, a user). A syntax the help spells out wins;
# otherwise the first of the words it uses.
_SYNTAX = {"VALUE": (("USER[:GROUP]", "USER[:GROUP]"), ("FILE[:section]", "FILE[:SECTION]"),
                     ("PATH:addr1,addr2", "PATH:ADDR,..."), ("pkg.mod[:callable]", "MODULE[:CALLABLE]"),
                     ("http://HOST/PATH", "URL"), ("dir://DIR", "DIR|URL"))}
_WORDS = {"N": (("milliseconds", "MS"), ("seconds", "SECONDS"), ("megabytes", "MB"), ("bytes", "BYTES"),
                ("(%)", "PERCENT")),
          "VALUE": (("EXT", "EXT"), ("ADDR", "ADDR"), ("PATH", "PATH"), ("FILE", "PATH"), ("user", "USER"), ("group", "GROUP"),
                    ("file", "PATH"), ("directory", "DIR"), ("virtualenv", "DIR"), ("program", "PATH"),
                    ("command line", "COMMAND"), ("UNIX socket", "PATH"), ("zerg server", "PATH"),
                    ("name", "NAME"), ("plugins", "NAMES"), ("mime.types", "PATH"), ("channel", "CHANNEL"), ("prefix", "TEXT"), ("append this to", "TEXT"))}


def metavar(opt: Option) -> str:
    """The placeholder --help and the docs show for the option's value: the converter's own (ADDR,
    MODE, {a,b}); for a plain number or string the syntax or unit its help names; for a row whose
    help is "as OTHER-OPTION", that option's."""
    base = getattr(opt.type, "metavar", "VALUE")
    same = re.match(r"as ([a-z-]+)", opt.help)
    if same and same.group(1) in _BY_NAME and _BY_NAME[same.group(1)] is not opt:
        return metavar(_BY_NAME[same.group(1)])
    for text, name in _SYNTAX.get(base, ()):
        if text in opt.help:
            return name
    found = [(match.start(), name) for word, name in _WORDS.get(base, ())
             if (match := re.search(r"(?<![\w.-])" + re.escape(word) + r"(?![\w-])", opt.help))]
    return min(found)[1] if found else base


def _value_syntax(opt: Option) -> str:
    if opt.flag:
        return ""
    return f"[={metavar(opt)}]" if opt.const is not None else f" {metavar(opt)}"


def _default_text(opt: Option) -> str:
    if opt.repeatable:
        return "repeatable"
    if opt.default is None or opt.default == "":
        return ""
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    return _render(opt, opt.default)


# Flags that are no option (nothing to set in a file or the environment): answered and exited.
_HELP_FLAGS = (("-h, --help", "show this help and exit"), ("--version", "print the version and exit"))


def help_text() -> str:
    lines = [f"zergserve {__version__}: a prefork WSGI and ASGI server with uWSGI's elastic modes", "",
             "usage: zergserve [OPTIONS] [CONFIG.ini|.json|.toml|.yaml[:section]]", ""]
    for title, options in _groups():
        lines.append(f"{title}:")
        for opt in options:
            default = "" if opt.flag or opt.repeatable else _default_text(opt)
            lines.append(f"  {_spelling(opt)}{_value_syntax(opt)}")
            lines.append(f"      {opt.help}" + (f" (default: {default})" if default else "")
                         + (" (repeatable)" if opt.repeatable else ""))
        lines.append("")
    lines.append("Help:")
    for spelled, meaning in _HELP_FLAGS:
        lines += [f"  {spelled}", f"      {meaning}"]
    lines.append("")
    lines.append("Every option is also a config-file key and a ZERGSERVE_<OPTION> / UWSGI_<OPTION> variable;")
    lines.append("precedence: defaults < files < UWSGI_* < ZERGSERVE_* < command line. See docs/settings.md.")
    return "\n".join(lines)


def render_markdown() -> str:
    """docs/settings.md: the module docstring, then one table per group."""
    out = ["# zergserve settings", "",
           ("Generated from the option table in `zergserve/config.py` "
            "(`python -m zergserve.config > docs/settings.md`); do not edit by hand."), ""]
    out += (__doc__ or "").strip().splitlines()
    out += ["", "## Options", ""]
    for title, options in _groups():
        out += [f"### {title}", "", "| option | file key / environment | default | meaning |", "|---|---|---|---|"]
        for opt in options:
            kind = " (flag)" if opt.flag else ""
            default = _default_text(opt) or "—"
            meaning = opt.help.replace("|", "\\|")
            if hasattr(opt.type, "choices"):
                meaning += f"; one of {', '.join(f'`{c}`' for c in opt.type.choices)}"
            out.append(f"| `{_spelling(opt)}{_value_syntax(opt)}`{kind} | `{opt.name}` / `ZERGSERVE_{opt.env}` | {default} "
                       f"| {meaning} |")
        out.append("")
    out += ["### Help", "", "| flag | meaning |", "|---|---|"]
    out += [f"| `{spelled}` | {meaning} |" for spelled, meaning in _HELP_FLAGS]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
