"""One option table for everything: command line, config files, environment, `--help` and docs.

## Sources and precedence

Lowest to highest:

1. built-in defaults;
2. config files, in the order given: first those named in the environment (`UWSGI_INI=app.ini`,
   `ZERGSERVE_TOML=...`), then `--ini FILE[:section]`, `--json`, `--toml`, `--yaml` and bare
   `FILE.ini` / `.json` / `.toml` / `.yaml` arguments, each read where it appears on the command
   line. A file may name others (`ini = base.ini`, relative to the including file; `ini = :zerg`
   is a section of the same file), which are read in its place, at most 16 deep;
3. `UWSGI_<OPTION>` environment variables (upper case, `-` → `_`: `UWSGI_BUFFER_SIZE`). uWSGI's
   internal variables (`UWSGI_RELOADS`, `UWSGI_EMPEROR_FD`, `UWSGI_VASSAL_*`, …) and names that are
   no option are ignored: uWSGI sets many of its own;
4. `ZERGSERVE_<OPTION>` environment variables. A name that is no option is an error: a typo in
   our own namespace should fail loudly;
5. the command line.

A scalar takes the value of the highest source that sets it (within one source, the last
occurrence). A repeatable option collects the values of every source, lowest first. An environment
variable gives one value.

## Files

* ini: uWSGI's dialect (`key = value`, `#`/`;` comment lines, repeated keys repeat the option; a
  bare `key` is a flag set to true). Without a section, `[uwsgi]` and then `[zergserve]` are read,
  so `[zergserve]` wins for scalars; `FILE:section` reads only that section.
* json / toml / yaml: a `uwsgi` and/or `zergserve` object of `key: value`, the value a string,
  number, boolean or list of them (a list repeats the option).
* Flags take `true/false`, `yes/no`, `on/off`, `1/0`; an empty value means true.

Values in files (not on the command line or in the environment, where the shell has done its
part) are expanded, uWSGI style:

| syntax | becomes |
|---|---|
| `%d` | directory of the file, with a trailing `/` |
| `%p` | absolute path of the file (symlinks not resolved) |
| `%s` | file name |
| `%n` | file name without extension |
| `%e` | extension, without the dot |
| `%c` | name of the file's directory |
| `%x` | the section asked for (`app.ini:zerg` → `zerg`), else empty |
| `%o` | the file name as given |
| `%v` | the working directory |
| `%h` | the host name |
| `%%` | `%` |
| `%(name)` | the value of an option or placeholder set earlier (in a file, by `--set` or on the command line before the file) |
| `$(NAME)` | the environment variable `NAME` (empty if unset) |

A key that is no option is an error naming the file, line and key, unless the loaded
configuration uses it as `%(key)`: that is how uWSGI users define their own placeholders.
`--set key=value` sets the option `key`, or the placeholder `key` if there is no such option.

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
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from zergserve import __version__, sockets


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
    its file and line rather than at bind time."""
    if value.startswith("fd://"):
        if not value[len("fd://"):].isdigit():
            raise ValueError(f"invalid address {value!r}: fd:// needs a number")
    else:
        sockets.parse_address(value)  # AddressError is a ValueError
    return value


@_metavar("MODE")
def mode(value: str) -> int:
    """A file mode of exactly three octal digits, as uWSGI's --chmod-socket wants."""
    if not re.fullmatch(r"[0-7]{3}", value.strip()):
        raise ValueError(f"invalid mode {value!r}: expected three octal digits like 660")
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
    O("lazy-apps", boolean, False, "load the app in each worker instead of once in the master", flag=True,
      group="app"),
    # sockets
    O("http", address, (), "serve HTTP/1.1 on ADDR from the workers themselves: uWSGI's --http-socket; there is "
      "no separate HTTP router process", aliases=("http-socket",), repeatable=True, group="sockets"),
    O("socket", address, (), "serve the uwsgi protocol on ADDR (for nginx uwsgi_pass)", "s", ("uwsgi-socket",),
      repeatable=True, group="sockets"),
    O("listen", integer(1, 65535), 100, "listen backlog of every socket", "l", group="sockets"),
    O("chmod-socket", mode, None, "mode of UNIX sockets (without a value: 666)", "C", const="666",
      group="sockets"),
    O("vacuum", boolean, False, "remove UNIX socket and pid files at exit", flag=True, group="sockets"),
    # processes
    O("processes", integer(1, 4096), 1, "number of worker processes", "p", ("workers",), group="processes"),
    O("master", boolean, True, "run a master (zergserve always does; accepted for uWSGI configs)", "M",
      flag=True, group="processes"),
    O("worker", choice("sync", "gevent", "asyncio"), "sync", "worker class: sync (one request at a time), gevent "
      "(many connections per process, HTTP keep-alive; pip install zergserve[gevent]) or asyncio (ASGI apps "
      "only, on an event loop)", "k",
      aliases=("worker-class",), group="processes"),
    O("worker-connections", integer(1), 1000, "most connections a gevent or asyncio worker serves at once",
      group="processes"),
    O("harakiri", integer(0), 0, "kill a worker stuck on one request for more than N seconds (0: off)", "t",
      group="processes"),
    O("max-requests", integer(0), 0, "recycle a worker after N requests (0: never)", "R", group="processes"),
    O("max-requests-delta", integer(0), 0, "add (worker id - 1) * N to max-requests, so workers do not "
      "recycle together", group="processes"),
    O("worker-reload-mercy", integer(0), 60, "seconds a worker may take to finish its requests on reload or "
      "stop before SIGKILL", group="processes"),
    O("check-interval", number(), 1.0, "seconds between the master's housekeeping turns", group="processes"),
    O("procname-prefix", text, "", "prefix for process titles", group="processes"),
    O("procname-prefix-spaced", text, "", "prefix for process titles, followed by a space", group="processes"),
    O("pidfile", text, None, "write the master's pid to this file", group="processes"),
    O("privileged-binary-patch", text, None, "once configured, exec this program instead of serving "
      "(a vassal that is really nginx, say)", group="processes"),
    O("privileged-binary-patch-arg", text, None, "the same, with arguments (a shell-like command line)",
      group="processes"),
    O("unprivileged-binary-patch", text, None, "as privileged-binary-patch (zergserve drops no privileges of "
      "its own before it)", group="processes"),
    O("unprivileged-binary-patch-arg", text, None, "as privileged-binary-patch-arg", group="processes"),
    # limits
    O("buffer-size", integer(1, 65535), 4096, "largest uwsgi vars block accepted", "b", group="limits"),
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
    O("vassal-sos-backlog", integer(0), 0, "ask the emperor for reinforcements (byte 30) when a socket's "
      "accept queue holds N or more connections (0: off)", group="elastic"),
    O("vassal-sos", integer(0), 0, "ask the emperor for reinforcements when every worker has been busy for "
      "more than N seconds (0: off)", group="elastic"),
    # emperor
    O("emperor", text, (), "run the emperor over a vassals dir (DIR, dir://DIR or glob://PATTERN)",
      repeatable=True, group="emperor"),
    O("emperor-freq", number(), 3.0, "seconds between scans of the monitors (inotify wakes it sooner)",
      group="emperor"),
    O("emperor-throttle", integer(1), 1000, "milliseconds: blacklist step for a vassal that dies before "
      "serving, and the refill interval of the global spawn budget", group="emperor"),
    O("emperor-max-throttle", integer(1), 180000, "milliseconds: the largest blacklist delay", group="emperor"),
    O("emperor-spawn-burst", integer(1), 16, "vassals that may be spawned at once before the global "
      "throttle spaces the rest by --emperor-throttle", group="emperor"),
    O("emperor-required-heartbeat", integer(1), 30, "seconds without a heartbeat before a vassal that "
      "sends them is killed and respawned", group="emperor"),
    O("emperor-curse-tolerance", integer(1), 30, "seconds a stopped vassal may take to exit before SIGKILL",
      group="emperor"),
    O("emperor-graceful-shutdown", boolean, False, "stop vassals gracefully (byte 2) instead of byte 0",
      flag=True, group="emperor"),
    O("emperor-stats", address, None, "serve the emperor's stats JSON on ADDR", aliases=("emperor-stats-server",),
      group="emperor"),
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
      "file) while it has fewer than N zergs (0: off)", group="emperor"),
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
    O("disable-logging", boolean, False, "no access log lines (errors are always logged)", "L", flag=True,
      group="logging"),
    O("logto", text, None, "append the log (and the app's stdout/stderr) to this file", group="logging"),
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
    # config sources
    O("ini", text, (), "read options from an ini file (FILE[:section])", repeatable=True, group="config"),
    O("json", text, (), "read options from a JSON file (FILE[:section])", aliases=("js",), repeatable=True,
      group="config"),
    O("toml", text, (), "read options from a TOML file (FILE[:section])", repeatable=True, group="config"),
    O("yaml", text, (), "read options from a YAML file (FILE[:section]; needs PyYAML)", aliases=("yml",),
      repeatable=True, group="config"),
    O("set", key_value, (), "set an option, or a placeholder if KEY is no option", "S", repeatable=True,
      group="config"),
    O("print-config", boolean, False, "print the merged configuration as JSON and exit", flag=True,
      group="config"),
    O("check-config", boolean, False, "load the configuration and the app, then exit", flag=True,
      group="config"),
)
del O

_GROUP_TITLES = {"app": "Application", "sockets": "Sockets", "processes": "Processes", "limits": "Limits",
                 "zerg": "Zerg mode", "elastic": "Idle, cheap and SOS", "emperor": "Emperor", "stats": "Stats",
                 "logging": "Logging", "compat": "uWSGI compatibility", "config": "Configuration"}
_BY_NAME: dict[str, Option] = {name: opt for opt in OPTIONS for name in (opt.name, *opt.aliases)}
_BY_SHORT: dict[str, Option] = {opt.short: opt for opt in OPTIONS if opt.short}
_FILE_OPTIONS = frozenset({"ini", "json", "toml", "yaml"})
_NOT_FORWARDED = _FILE_OPTIONS | {"set", "print-config", "check-config"}
_EXTENSIONS = {".ini": "ini", ".json": "json", ".js": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
_DEFAULT_SECTIONS = ("uwsgi", "zergserve")
_MAX_INCLUDE_DEPTH = 16
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
            if opt.name in _NOT_FORWARDED:
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
    if opt.type is mode:
        return format(value, "03o")
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


class _Setting(NamedTuple):
    """One key = value from one source, before conversion; opt is None for a file key that is no
    option (a placeholder, or a mistake)."""

    opt: Option | None
    key: str
    value: Any  # a string, a bool or a list of strings (json, toml, yaml)
    source: str  # "file:line", "--flag", "$VAR"
    placeholder: bool = False  # defined by `set`, so it needs no %(key) use to be accepted


class _Scope:
    """What files see while they are read: values for %(name), the names used so, and the last
    file read (the file of a bare ':section')."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.referenced: set[str] = set()
        self.last_file: str | None = None

    def define(self, setting: _Setting) -> None:
        if _is_file_option(setting):
            return
        values = setting.value if isinstance(setting.value, list) else [setting.value]
        if not values:
            return
        value = _as_text(values[-1])
        self.values[setting.key] = value
        if setting.opt is not None:
            self.values[setting.opt.name] = value


def _is_file_option(setting: _Setting) -> bool:
    """Whether the setting names a config file to read in its place (--ini and friends)."""
    return setting.opt is not None and setting.opt.name in _FILE_OPTIONS


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into a Config (argv without the program name). Raises ConfigError naming
    the source and key of a problem, HelpRequested or VersionRequested."""
    env = os.environ if environ is None else environ
    command_line = _parse_argv(argv)
    environment = _from_environ(env, "UWSGI_", strict=False) + _from_environ(env, "ZERGSERVE_", strict=True)
    scope = _Scope()
    files: list[_Setting] = []
    others: list[_Setting] = []
    for setting in environment + command_line:
        if _is_file_option(setting):
            path, section = _split_section(setting.value)
            files += _expand_file(setting.opt.name, path or scope.last_file or "", section, setting.value,
                                  setting.source, env, 0, scope)
        else:
            scope.define(setting)
            others.append(setting)
    ordered = files + others
    used = scope.referenced | _placeholder_names(ordered)
    cfg = Config()
    for setting in ordered:
        _apply(cfg, setting, used)
    return cfg


def parse_file(path: str, section: str | None = None,
               environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') of one config file and the files it includes, with its magic
    variables, placeholders and $(ENV) applied; a list value gives one tuple per item. Keys are
    not checked against the table (the emperor reads vassal files with it)."""
    env = os.environ if environ is None else environ
    if section is None:
        path, section = _split_section(path)
    settings = _expand_file(_file_kind(path) or "ini", path, section, path, path, env, 0, _Scope())
    return [(s.key, _as_text(item), s.source) for s in settings
            for item in (s.value if isinstance(s.value, list) else [s.value])]


def _apply(cfg: Config, setting: _Setting, used: set[str]) -> None:
    """Convert one setting and store it: replace a scalar, extend a list, keep a placeholder."""
    opt = setting.opt
    if opt is None:
        if not (setting.placeholder or setting.key in used):
            raise ConfigError(f"{setting.source}: unknown option {setting.key!r}{_suggest(setting.key)}")
        cfg.placeholders[setting.key] = _as_text(setting.value)
        return
    value = _convert(opt, setting.value, setting.source)
    if opt.repeatable:
        getattr(cfg, opt.attr).extend(value if isinstance(value, list) else [value])
    else:
        setattr(cfg, opt.attr, value)
    cfg.sources[opt.name] = setting.source


def _convert(opt: Option, raw: Any, source: str) -> Any:
    """The typed value of one raw value: a flag's empty value is true, an optional value's empty
    (or true) value is its const."""
    if isinstance(raw, list):
        if not opt.repeatable:
            raise ConfigError(f"{source}: {opt.name}: takes one value, got a list")
        return [_convert(opt, item, source) for item in raw]
    value = _as_text(raw)
    if opt.flag and not value.strip():
        return True
    if opt.const is not None and value.strip().lower() in ("", "true"):
        value = opt.const
    try:
        return opt.type(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {opt.name}: {exc}") from None


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve_set(setting: _Setting) -> _Setting:
    """`set = key=value` as the setting of option `key`, or of the placeholder `key`."""
    if setting.opt is None or setting.opt.name != "set":
        return setting
    try:
        key, _, value = key_value(_as_text(setting.value)).partition("=")
    except ValueError as exc:
        raise ConfigError(f"{setting.source}: set: {exc}") from None
    target = find(key)
    return _Setting(target, key, value, setting.source, placeholder=target is None)


# --- the command line ------------------------------------------------------------------------------

def _parse_argv(argv: Sequence[str]) -> list[_Setting]:
    """Settings in command-line order. The table drives a small hand parser because argparse
    handles optional values and bare config-file arguments poorly."""
    args = list(argv)
    settings: list[_Setting] = []
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
                raise ConfigError(f"unknown option --{name}{_suggest(name)}")
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
            kind = _file_kind(arg)
            if kind is None:
                raise ConfigError(f"unexpected argument {arg!r} (config files end in .ini, .json, .toml or .yaml)")
            opt, spelled, value = _BY_NAME[kind], arg, arg
        settings.append(_resolve_set(_Setting(opt, opt.name, value, spelled)))
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

def _from_environ(env: Mapping[str, str], prefix: str, strict: bool) -> list[_Setting]:
    """PREFIX_<OPTION> variables as settings, in name order; `strict` makes an unknown name an
    error instead of someone else's variable."""
    settings = []
    for name in sorted(env):
        if not name.startswith(prefix) or name in _RESERVED_ENV or name.startswith(_RESERVED_ENV_PREFIXES):
            continue
        key = name[len(prefix):].lower()
        opt = find(key)
        if opt is None:
            if strict:
                raise ConfigError(f"environment variable {name}: no option {key.replace('_', '-')!r}"
                                  f"{_suggest(key.replace('_', '-'))}")
            continue
        settings.append(_resolve_set(_Setting(opt, opt.name, env[name], f"${name}")))
    return settings


# --- files -----------------------------------------------------------------------------------------

def _expand_file(kind: str, path: str, section: str | None, given: str, source: str, env: Mapping[str, str],
                 depth: int, scope: _Scope) -> list[_Setting]:
    """The settings of one file in order, with its includes read in their place and its values
    expanded (magic variables, placeholders, environment)."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{source}: config files include each other more than {_MAX_INCLUDE_DEPTH} deep")
    if not path:
        raise ConfigError(f"{source}: {given!r} names a section, but no file was read before it")
    try:
        data = _read(path, env)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {kind} file {path!r}: {exc.strerror}") from None
    scope.last_file = path
    if kind == "ini":
        raw = _read_ini(path, data.decode("utf-8", "replace"), section)
    else:
        raw = _read_structured(kind, path, data, section)
    magic = _magic(path, given, section)
    settings: list[_Setting] = []
    for key, value, where in raw:
        if isinstance(value, list):
            value = [_substitute(item, magic, scope, env, where) if isinstance(item, str) else item
                     for item in value]
        elif isinstance(value, str):
            value = _substitute(value, magic, scope, env, where)
        setting = _resolve_set(_Setting(find(key), key, value, where))
        if _is_file_option(setting):
            for item in setting.value if isinstance(setting.value, list) else [setting.value]:
                include, include_section = _split_section(_as_text(item))
                if not include:
                    include = path
                elif not os.path.isabs(include):
                    include = os.path.join(os.path.dirname(path), include)
                settings += _expand_file(setting.opt.name, include, include_section, _as_text(item), where, env,
                                         depth + 1, scope)
            continue
        scope.define(setting)
        settings.append(setting)
    return settings


def _read(path: str, env: Mapping[str, str]) -> bytes:
    """The bytes of a config file. In tyrant mode the emperor passes the vassal its file already
    open (CONFIG_FD_VARIABLE): it checked the owner on that descriptor, so reading the name again
    would let anyone who can write the directory swap the file in between. The name still gives
    the magic variables (%n, %d, ...); includes are opened by name, after the privilege drop."""
    fd, sep, name = env.get(CONFIG_FD_VARIABLE, "").partition(":")
    if not (sep and fd.isdigit() and os.path.abspath(name) == os.path.abspath(path)):
        with open(path, "rb") as fh:
            return fh.read()
    chunks = []
    offset = 0
    while chunk := os.pread(int(fd), 65536, offset):  # pread: every reload reads it from the start
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _split_section(spec: str) -> tuple[str, str | None]:
    """'file.ini:section' → ('file.ini', 'section'): the last ':' after the last '/', as uWSGI
    splits it; an empty section means the default ones."""
    if os.path.exists(spec):
        return spec, None
    path, sep, section = spec.rpartition(":")
    if not sep or "/" in section:
        return spec, None
    return path, section or None


def _file_kind(spec: str) -> str | None:
    """ini, json, toml or yaml by extension; None for anything else."""
    path = _split_section(spec)[0]
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def _read_ini(path: str, content: str, section: str | None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') in uWSGI's ini dialect. Hand-parsed because keys repeat, which
    configparser refuses; the default sections come back [uwsgi] first so [zergserve] wins."""
    wanted = (section,) if section else _DEFAULT_SECTIONS
    found: dict[str, list[tuple[str, str, str]]] = {name: [] for name in wanted}
    seen: set[str] = set()
    current: str | None = None
    for lineno, line in enumerate(content.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ConfigError(f"{path}:{lineno}: malformed section header {stripped!r}")
            current = stripped[1:-1].strip()
            seen.add(current)
            continue
        if current in found:
            key, _, value = stripped.partition("=")
            found[current].append((key.strip(), value.strip(), f"{path}:{lineno}"))
    if section and section not in seen:
        raise ConfigError(f"{path}: no section [{section}]")
    return [item for name in wanted for item in found[name]]


def _read_structured(kind: str, path: str, data: bytes, section: str | None) -> list[tuple[str, Any, str]]:
    """(key, value, 'file:section.key') of a json, toml or yaml file; numbers become strings, so
    every source converts through the same option types."""
    try:
        if kind == "json":
            import json
            doc = json.loads(data)
        elif kind == "yaml":
            doc = _yaml(path).safe_load(data)
        else:
            doc = _tomllib().loads(data.decode("utf-8"))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - each parser has its own errors (yaml.YAMLError is no ValueError)
        raise ConfigError(f"{path}: invalid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    if section and section not in doc:
        raise ConfigError(f"{path}: no section {section!r}")
    items: list[tuple[str, Any, str]] = []
    for name in (section,) if section else _DEFAULT_SECTIONS:
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name!r} must be an object")
        for key, value in table.items():
            where = f"{path}:{name}.{key}"
            if isinstance(value, list):
                items.append((key, [_scalar(item, where) for item in value], where))
            else:
                items.append((key, _scalar(value, where), where))
    return items


def _scalar(value: Any, where: str) -> str | bool:
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise ConfigError(f"{where}: unsupported value {value!r} (use a string, number, boolean or list)")


def _tomllib() -> Any:
    """tomllib, imported only when a TOML file is read (workers never need it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def _yaml(path: str) -> Any:
    """PyYAML, imported only when a YAML file is read; it is optional."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
    return yaml


def _magic(path: str, given: str, section: str | None) -> dict[str, str]:
    """uWSGI's magic variables of one file. abspath, not realpath: a symlink to a .skel template
    keeps its own name in %n, which is the point of the trick."""
    absolute = os.path.abspath(path)
    directory, filename = os.path.split(absolute)
    stem, ext = os.path.splitext(filename)
    return {"d": directory.rstrip("/") + "/", "p": absolute, "s": filename, "n": stem, "e": ext[1:],
            "c": os.path.basename(directory), "x": section or "", "o": given, "v": os.getcwd(),
            "h": socket.gethostname(), "%": "%"}


_TOKEN = re.compile(r"%\(([^)]+)\)|%(.)|\$\(([^)]+)\)")


def _substitute(value: str, magic: dict[str, str], scope: _Scope, env: Mapping[str, str], where: str) -> str:
    """One value with %(name), %X magic and $(ENV) replaced; an unknown %X stays as written."""
    def replace(match: re.Match[str]) -> str:
        name, letter, var = match.groups()
        if name is not None:
            scope.referenced.add(name)
            option = find(name)
            for candidate in (name, option.name if option else None):
                if candidate in scope.values:
                    return scope.values[candidate]
            raise ConfigError(f"{where}: unknown placeholder %({name}): it must be set before it is used")
        if letter is not None:
            return magic.get(letter, match.group(0))
        return env.get(var, "")
    return _TOKEN.sub(replace, value)


def _placeholder_names(settings: Iterable[_Setting]) -> set[str]:
    """Names used as %(name) in values that were not expanded (the command line, environment)."""
    names: set[str] = set()
    for setting in settings:
        for value in setting.value if isinstance(setting.value, list) else [setting.value]:
            if isinstance(value, str):
                names.update(m.group(1) for m in _TOKEN.finditer(value) if m.group(1))
    return names


def _suggest(name: str) -> str:
    import difflib
    hint = difflib.get_close_matches(name, list(_BY_NAME), 1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


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


def _value_syntax(opt: Option) -> str:
    if opt.flag:
        return ""
    metavar = getattr(opt.type, "metavar", "VALUE")
    return f"[={metavar}]" if opt.const is not None else f" {metavar}"


def _default_text(opt: Option) -> str:
    if opt.repeatable:
        return "repeatable"
    if opt.default is None or opt.default == "":
        return ""
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    return _render(opt, opt.default)


def help_text() -> str:
    lines = [f"zergserve {__version__}: a prefork WSGI server with uWSGI's elastic modes", "",
             "usage: zergserve [OPTIONS] [CONFIG.ini|.json|.toml|.yaml[:section]]", ""]
    for title, options in _groups():
        lines.append(f"{title}:")
        for opt in options:
            default = "" if opt.flag or opt.repeatable else _default_text(opt)
            lines.append(f"  {_spelling(opt)}{_value_syntax(opt)}")
            lines.append(f"      {opt.help}" + (f" (default: {default})" if default else "")
                         + (" (repeatable)" if opt.repeatable else ""))
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
            kind = "flag" if opt.flag else ("optional value" if opt.const is not None else "value")
            default = _default_text(opt) or "—"
            meaning = opt.help.replace("|", "\\|")
            if hasattr(opt.type, "choices"):
                meaning += f"; one of {', '.join(f'`{c}`' for c in opt.type.choices)}"
            out.append(f"| `{_spelling(opt)}` ({kind}) | `{opt.name}` / `ZERGSERVE_{opt.env}` | {default} "
                       f"| {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
