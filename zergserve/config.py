"""One option table for everything: CLI flags, ini/json/toml files, environment, --help and docs.

Sources, lowest to highest precedence:

1. built-in defaults;
2. config files, in the order given (`--ini FILE[:section]`, `--json`, `--toml`, or a bare
   `FILE.ini` argument); a file may include others (`ini = other.ini`). Without a section both
   `[uwsgi]` and `[zergserve]` are read, `[zergserve]` winning;
3. `UWSGI_<OPTION>` environment variables (upper case, '-' → '_'); uWSGI's internal ones are
   ignored, as are names that are no option (uWSGI sets many of its own);
4. `ZERGSERVE_<OPTION>` environment variables; an unknown name is an error (a typo in our own
   namespace should fail loudly);
5. the command line.

A scalar takes the value of the highest source that sets it; a repeatable option collects the
values of every source, lowest first. Files support uWSGI's magic variables (%d %n %p %s %c %x
%%), placeholders `%(name)` (an option or placeholder set earlier) and `$(ENV)`. A key that is no
option is an error naming the file and line, unless it is used as a placeholder somewhere in the
loaded configuration — that is how uWSGI users define their own variables.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from zergserve import __version__


class ConfigError(Exception):
    """Bad configuration: the message names the source (file:line, flag or variable) and the key."""


class HelpRequested(Exception):
    """--help: args[0] is the text to print."""


class VersionRequested(Exception):
    """--version: args[0] is the text to print."""


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def boolean(value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"invalid boolean {value!r}")


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def convert(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"invalid int value {value!r}") from None
        if low is not None and number < low or high is not None and number > high:
            raise ValueError(f"{number} is out of range ({low}..{high if high is not None else ''})")
        return number
    convert.__name__ = "int"
    return convert


def number(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError(f"invalid number {value!r}") from None


def text(value: str) -> str:
    return value


def mode(value: str) -> int:
    """A socket mode: exactly three octal digits, as uWSGI's --chmod-socket."""
    if not re.fullmatch(r"[0-7]{3}", value.strip()):
        raise ValueError(f"invalid mode {value!r}: expected three octal digits like 660")
    return int(value.strip(), 8)


def choice(*names: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in names:
            raise ValueError(f"invalid choice {value!r} (choose from {', '.join(names)})")
        return value
    convert.__name__ = "choice"
    convert.choices = names  # type: ignore[attr-defined]
    return convert


def key_value(value: str) -> str:
    if "=" not in value or value.startswith("="):
        raise ValueError(f"expected KEY=VALUE, got {value!r}")
    return value


class Option(NamedTuple):
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    short: str | None = None
    aliases: tuple[str, ...] = ()
    repeatable: bool = False
    flag: bool = False
    const: Any = None
    group: str = "core"

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return self.name.upper().replace("-", "_")


O = Option
OPTIONS: tuple[Option, ...] = (
    # application
    O("module", text, None, "WSGI app as pkg.mod[:callable] (callable defaults to --callable)", "w", ("wsgi",), group="app"),
    O("wsgi-file", text, None, "load the WSGI app from this Python file", aliases=("file",), group="app"),
    O("callable", text, "application", "name of the WSGI callable", group="app"),
    O("chdir", text, None, "change to this directory before loading the app", group="app"),
    O("pythonpath", text, [], "add a directory to sys.path", aliases=("python-path", "pp"), repeatable=True, group="app"),
    O("env", key_value, [], "set KEY=VALUE in the environment before loading the app", repeatable=True, group="app"),
    O("lazy-apps", boolean, False, "load the app in each worker instead of once in the master", flag=True, group="app"),
    # sockets
    O("http", text, [], "serve HTTP/1.1 on ADDR from the workers (uWSGI's --http-socket; no router process)",
      aliases=("http-socket",), repeatable=True, group="sockets"),
    O("socket", text, [], "serve the uwsgi protocol on ADDR (for nginx uwsgi_pass)", "s", ("uwsgi-socket",),
      repeatable=True, group="sockets"),
    O("listen", integer(1, 65535), 100, "listen backlog of every socket", "l", group="sockets"),
    O("chmod-socket", mode, None, "mode of UNIX sockets (no value: 666)", "C", const=0o666, group="sockets"),
    O("vacuum", boolean, False, "remove UNIX socket and pid files at exit", flag=True, group="sockets"),
    # processes
    O("processes", integer(1, 4096), 1, "number of worker processes", "p", ("workers",), group="processes"),
    O("master", boolean, True, "run a master (zergserve always does; accepted for uWSGI configs)", "M",
      flag=True, group="processes"),
    O("worker", choice("sync"), "sync", "worker class", aliases=("worker-class",), group="processes"),
    O("harakiri", integer(0), 0, "kill a worker stuck on one request for more than N seconds (0: off)", "t",
      group="processes"),
    O("max-requests", integer(0), 0, "recycle a worker after N requests (0: never)", "R", group="processes"),
    O("max-requests-delta", integer(0), 0, "add (worker id - 1) * N to max-requests, so workers do not "
      "recycle together", group="processes"),
    O("worker-reload-mercy", integer(0), 60, "seconds a stopping worker may take to finish before SIGKILL",
      group="processes"),
    O("check-interval", number, 1.0, "seconds between the master's housekeeping turns", group="processes"),
    O("procname-prefix", text, "", "prefix for process titles", group="processes"),
    O("procname-prefix-spaced", text, "", "prefix for process titles, followed by a space", group="processes"),
    O("pidfile", text, None, "write the master's pid to this file", group="processes"),
    # limits
    O("buffer-size", integer(1, 65535), 4096, "largest uwsgi vars block accepted", "b", group="limits"),
    O("max-vars", integer(1), 64, "uwsgi packets may carry at most 2 * N vars", group="limits"),
    O("http-timeout", number, 4.0, "absolute deadline in seconds for a request head to arrive", group="limits"),
    O("socket-timeout", number, 4.0, "timeout in seconds for each read and write on a connection", "z",
      group="limits"),
    O("limit-request-line", integer(0), 4094, "longest HTTP request line (414 above; 0: no limit)", group="limits"),
    O("limit-request-fields", integer(0), 100, "most HTTP header fields (431 above; 0: no limit)", group="limits"),
    O("limit-request-field-size", integer(0), 8190, "longest HTTP header line (431 above; 0: no limit)",
      group="limits"),
    O("limit-post", integer(0), 0, "largest request body in bytes (413 above; 0: no limit)", group="limits"),
    # zerg
    O("zerg-server", text, None, "hand this instance's sockets to zergs connecting to this UNIX socket",
      group="zerg"),
    O("zerg", text, [], "attach to a zerg server (or zergpool) and serve its sockets", repeatable=True,
      group="zerg"),
    O("zerg-fallback", boolean, False, "if no zerg server answers, bind --http/--socket normally",
      flag=True, group="zerg"),
    O("zerg-server-mode", mode, 0o600, "file mode of the zerg server socket", group="zerg"),
    O("zerg-allow-uid", integer(0), [], "also trust this uid as a zerg peer (own uid and root always are)",
      repeatable=True, group="zerg"),
    O("zergpool", text, [], "run a zergpool: PATH:addr1,addr2 (binds the addresses, hands them to zergs)",
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
    O("emperor", text, [], "run the emperor over a vassals dir (DIR, dir://DIR or glob://PATTERN)",
      repeatable=True, group="emperor"),
    O("emperor-freq", number, 3.0, "seconds between scans of the monitors (inotify wakes it sooner)",
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
    O("emperor-stats", text, None, "serve the emperor's stats JSON on ADDR", aliases=("emperor-stats-server",),
      group="emperor"),
    O("emperor-pidfile", text, None, "write the emperor's pid to this file", group="emperor"),
    O("emperor-extra-extension", text, [], "also treat files ending in EXT as vassal configs",
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
    O("vassal-set", key_value, [], "pass --set key=value to every vassal", aliases=("vassals-set",),
      repeatable=True, group="emperor"),
    O("vassals-include", text, [], "append this config file to every vassal's command line",
      repeatable=True, group="emperor"),
    O("vassals-include-before", text, [], "put this config file before every vassal's own",
      repeatable=True, group="emperor"),
    O("binary-path", text, None, "program to run vassals with (default: this zergserve)", group="emperor"),
    O("emperor-broodlord", integer(0), 0, "on a vassal's SOS spawn NAME:zerg (the [zerg] section of its "
      "file) while it has fewer than N zergs (0: off)", group="emperor"),
    O("reload-mercy", integer(0), 30, "seconds the emperor gives vassals to stop at shutdown before SIGKILL",
      group="emperor"),
    O("heartbeat", integer(0), 0, "vassal: send the emperor a heartbeat every N seconds (0: off)",
      group="emperor"),
    # stats and logging
    O("stats", text, None, "serve stats JSON on ADDR (TCP if it has ':', else UNIX)", aliases=("stats-server",),
      group="stats"),
    O("stats-http", boolean, False, "prefix the stats JSON with an HTTP header", flag=True, group="stats"),
    O("stats-minified", boolean, False, "compact stats JSON", flag=True, group="stats"),
    O("disable-logging", boolean, False, "no access log lines (errors are always logged)", "L", flag=True,
      group="logging"),
    O("logto", text, None, "append the log (and the app's stdout/stderr) to this file", group="logging"),
    O("privileged-binary-patch", text, None, "once configured, exec this program instead of serving "
      "(a vassal that is really nginx, say)", group="processes"),
    O("privileged-binary-patch-arg", text, None, "the same, with arguments (a shell-like command line)",
      group="processes"),
    O("unprivileged-binary-patch", text, None, "as privileged-binary-patch (zergserve drops no privileges of "
      "its own before it)", group="processes"),
    O("unprivileged-binary-patch-arg", text, None, "as privileged-binary-patch-arg", group="processes"),
    # uWSGI compatibility
    O("enable-threads", boolean, False, "accepted for uWSGI configs: Python threads always work", "T",
      flag=True, group="compat"),
    O("single-interpreter", boolean, False, "accepted for uWSGI configs: there is one interpreter per process",
      flag=True, group="compat"),
    O("need-app", boolean, True, "accepted for uWSGI configs: the app is always required", flag=True,
      group="compat"),
    O("die-on-term", boolean, True, "accepted for uWSGI configs: TERM always shuts down gracefully", flag=True,
      group="compat"),
    O("strict", boolean, True, "accepted for uWSGI configs: unknown keys are always errors", flag=True,
      group="compat"),
    # config sources
    O("ini", text, [], "read options from an ini file (FILE[:section])", repeatable=True, group="config"),
    O("json", text, [], "read options from a JSON file (FILE[:section])", aliases=("js",), repeatable=True,
      group="config"),
    O("toml", text, [], "read options from a TOML file (FILE[:section])", repeatable=True, group="config"),
    O("yaml", text, [], "read options from a YAML file (FILE[:section]; needs PyYAML)", aliases=("yml",),
      repeatable=True, group="config"),
    O("set", key_value, [], "set an option or placeholder: key=value", "S", repeatable=True, group="config"),
    O("print-config", boolean, False, "print the merged configuration as JSON and exit", flag=True,
      group="config"),
    O("check-config", boolean, False, "load the configuration and the app, then exit", flag=True,
      group="config"),
)
del O

_BY_NAME: dict[str, Option] = {}
for _opt in OPTIONS:
    for _name in (_opt.name, *_opt.aliases):
        _BY_NAME[_name] = _opt
_BY_SHORT = {opt.short: opt for opt in OPTIONS if opt.short}
_FILE_OPTIONS = {"ini", "json", "toml", "yaml"}
_UWSGI_INTERNAL = {"RELOADS", "VASSALS_DIR", "EMPEROR_FD", "EMPEROR_FD_CONFIG", "BROODLORD_NUM",
                   "EMPEROR_PROXY", "JAIL_PID", "ORIGINAL_PROC_NAME"}
_MAX_INCLUDE_DEPTH = 16


def find(name: str) -> Option | None:
    """The option called `name` (or one of its aliases, with '_' accepted for '-')."""
    return _BY_NAME.get(name) or _BY_NAME.get(name.replace("_", "-"))


class Config:
    """The merged configuration; attributes are option names with '-' → '_'."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.placeholders: dict[str, str] = {}
        for opt in OPTIONS:
            setattr(self, opt.attr, list(opt.default) if opt.repeatable else opt.default)

    def __getattr__(self, name: str) -> Any:  # only called for unknown attributes
        raise AttributeError(f"no option {name.replace('_', '-')!r}")

    def as_args(self) -> list[str]:
        """argv that reproduces every value that differs from its default."""
        args: list[str] = []
        for opt in OPTIONS:
            if opt.name in _FILE_OPTIONS or opt.name in ("set", "print-config", "check-config"):
                continue
            value = getattr(self, opt.attr)
            if opt.repeatable:
                for item in value:
                    args += [f"--{opt.name}", _render(opt, item)]
            elif value != opt.default:
                if opt.flag:
                    args.append(f"--{opt.name}" if value else f"--{opt.name}=false")
                else:
                    args += [f"--{opt.name}", _render(opt, value)]
        return args


def _render(opt: Option, value: Any) -> str:
    if opt.type is mode:
        return format(value, "03o")
    return str(value)


class _Scope(NamedTuple):
    """Placeholders defined so far while reading files, and the names referenced as %(name)."""

    values: dict[str, str]
    referenced: set[str]


class _Setting(NamedTuple):
    opt: Option | None
    key: str
    value: Any
    source: str


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into a Config; raise ConfigError naming the source and key of any problem."""
    env = os.environ if environ is None else environ
    cli = _parse_argv(list(argv))
    file_settings: list[_Setting] = []
    scope = _Scope({}, set())
    for setting in cli:
        if setting.opt is not None and setting.opt.name in _FILE_OPTIONS:
            file_settings += _expand_file(setting.opt.name, setting.value, setting.source, env, 0, scope)
    env_settings = _from_environ(env, "UWSGI_", strict=False) + _from_environ(env, "ZERGSERVE_", strict=True)
    ordered = file_settings + env_settings + cli
    cfg = Config()
    used_placeholders = scope.referenced | _placeholder_names(ordered)
    for setting in ordered:
        _apply(cfg, setting, used_placeholders)
    return cfg


def _apply(cfg: Config, setting: _Setting, used: set[str]) -> None:
    opt = setting.opt
    if opt is None:
        if setting.key in used:
            cfg.placeholders[setting.key] = str(setting.value)
            return
        raise ConfigError(f"{setting.source}: unknown option {setting.key!r}{_suggest(setting.key)}")
    if opt.name in _FILE_OPTIONS:
        return
    if opt.name == "set":
        key, _, value = str(setting.value).partition("=")
        target = find(key)
        cfg.placeholders[key] = value
        if target is None:
            return
        _apply(cfg, _Setting(target, key, value, setting.source), used)
        return
    value = _convert(opt, setting.value, setting.source)
    if opt.repeatable:
        getattr(cfg, opt.attr).extend(value if isinstance(value, list) else [value])
    else:
        setattr(cfg, opt.attr, value)
    cfg.sources[opt.name] = setting.source
    if not isinstance(value, list):
        cfg.placeholders[opt.name] = str(setting.value)


def _convert(opt: Option, raw: Any, source: str) -> Any:
    if isinstance(raw, list):
        if not opt.repeatable:
            raise ConfigError(f"{source}: {opt.name}: takes one value, got a list")
        return [_convert(opt, item, source) for item in raw]
    if raw is True and opt.const is not None:
        return opt.const
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    try:
        if opt.flag:
            return boolean(str(raw))
        return opt.type(str(raw))
    except ValueError as exc:
        raise ConfigError(f"{source}: {opt.name}: {exc}") from None


# --- the command line --------------------------------------------------------------------------

def _parse_argv(argv: list[str]) -> list[_Setting]:
    settings: list[_Setting] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
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
            if not eq:
                value, i = _take_value(opt, argv, i, f"--{name}")
            settings.append(_Setting(opt, name, value, f"--{name}"))
        elif arg.startswith("-") and len(arg) > 1:
            letter, rest = arg[1], arg[2:]
            opt = _BY_SHORT.get(letter)
            if opt is None:
                raise ConfigError(f"unknown option -{letter}")
            if opt.flag and rest:
                raise ConfigError(f"-{letter} takes no value")
            if rest:
                value = rest
            else:
                value, i = _take_value(opt, argv, i, f"-{letter}")
            settings.append(_Setting(opt, opt.name, value, f"-{letter}"))
        else:
            kind = _file_kind(arg)
            if kind is None:
                raise ConfigError(f"unexpected argument {arg!r} (config files end in .ini, .json or .toml)")
            settings.append(_Setting(find(kind), kind, arg, arg))
    return settings


def _take_value(opt: Option, argv: list[str], i: int, spelled: str) -> tuple[Any, int]:
    """The value of an option written without '=': none for a flag, the const for an optional value
    followed by another option (or nothing), else the next argument."""
    if opt.flag:
        return "true", i
    if opt.const is not None and (i >= len(argv) or argv[i].startswith("-")):
        return True, i
    if i < len(argv):
        return argv[i], i + 1
    raise ConfigError(f"{spelled}: needs a value")


def _file_kind(path: str) -> str | None:
    base = path.split(":", 1)[0] if not os.path.exists(path) else path
    for ext, kind in ((".ini", "ini"), (".json", "json"), (".js", "json"), (".toml", "toml"), (".yml", "yaml"),
                      (".yaml", "yaml")):
        if base.endswith(ext):
            return kind
    return None


# --- the environment ---------------------------------------------------------------------------

def _from_environ(env: Mapping[str, str], prefix: str, strict: bool) -> list[_Setting]:
    settings = []
    for name in sorted(env):
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):]
        if prefix == "UWSGI_" and (key in _UWSGI_INTERNAL or key.startswith("VASSAL_")):
            continue
        if prefix == "ZERGSERVE_" and key.startswith(("REEXEC_", "VASSAL_")):
            continue
        opt = find(key.lower())
        if opt is None:
            if strict:
                raise ConfigError(f"environment variable {name}: no option {key.lower().replace('_', '-')!r}")
            continue
        value: Any = env[name]
        if opt.repeatable:
            value = [v for v in value.split(";") if v] if ";" in value else value
        settings.append(_Setting(opt, key.lower(), value, f"${name}"))
    return settings


# --- files -------------------------------------------------------------------------------------

def parse_file(path: str, section: str | None = None, environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') of one file with its magic variables applied (for the emperor)."""
    env = os.environ if environ is None else environ
    scope = _Scope({}, set())
    return [(s.key, s.value, s.source) for s in
            _expand_file(_file_kind(path) or "ini", path + (f":{section}" if section else ""), path, env, 0, scope)]


def _expand_file(kind: str, spec: str, source: str, env: Mapping[str, str], depth: int,
                 scope: _Scope) -> list[_Setting]:
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{source}: config files include each other more than {_MAX_INCLUDE_DEPTH} deep")
    path, section = _split_section(spec)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {kind} file {path!r}: {exc.strerror}") from None
    if kind == "ini":
        raw = _read_ini(path, data.decode("utf-8", "replace"), section)
    else:
        raw = _read_structured(kind, path, data, section)
    magic = _magic(path)
    settings: list[_Setting] = []
    for key, value, where in raw:
        opt = find(key)
        values = value if isinstance(value, list) else [value]
        expanded = [_substitute(v, magic, scope, env, where) if isinstance(v, str) else v for v in values]
        if opt is not None and opt.name in _FILE_OPTIONS:
            for item in expanded:
                include = item if os.path.isabs(str(item).split(":", 1)[0]) else os.path.join(
                    os.path.dirname(path), str(item))
                settings += _expand_file(opt.name, include, where, env, depth + 1, scope)
            continue
        final = expanded if isinstance(value, list) else expanded[0]
        if isinstance(final, str):
            scope.values[key] = final
            if opt is not None and opt.name == "set":
                pkey, _, pval = final.partition("=")
                scope.values[pkey] = pval
        settings.append(_Setting(opt, key, final, where))
    return settings


def _split_section(spec: str) -> tuple[str, str | None]:
    if os.path.exists(spec):
        return spec, None
    path, sep, section = spec.rpartition(":")
    if sep and path and "/" not in section:
        return path, section
    return spec, None


def _read_ini(path: str, content: str, section: str | None) -> list[tuple[str, str, str]]:
    """uWSGI's ini dialect: keys repeat, so configparser cannot read it."""
    wanted = (section,) if section else ("uwsgi", "zergserve")
    found: dict[str, list[tuple[str, str, str]]] = {name: [] for name in wanted}
    current: str | None = None
    for lineno, line in enumerate(content.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ConfigError(f"{path}:{lineno}: malformed section header {stripped!r}")
            current = stripped[1:-1].strip()
            continue
        if current not in found:
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            key, value = stripped, "true"  # a bare key is a flag, as in uWSGI
        found[current].append((key.strip(), value.strip(), f"{path}:{lineno}"))
    if section and not any(True for _ in found[section]) and f"[{section}]" not in content:
        raise ConfigError(f"{path}: no section [{section}]")
    return [item for name in wanted for item in found[name]]


def _read_structured(kind: str, path: str, data: bytes, section: str | None) -> list[tuple[str, Any, str]]:
    try:
        if kind == "json":
            import json
            doc = json.loads(data)
        elif kind == "yaml":
            doc = _yaml().safe_load(data)
        else:
            doc = _tomllib().loads(data.decode("utf-8"))
    except Exception as exc:  # each parser has its own error classes (yaml.YAMLError is no ValueError)
        raise ConfigError(f"{path}: invalid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    wanted = (section,) if section else ("uwsgi", "zergserve")
    if section and section not in doc:
        raise ConfigError(f"{path}: no section {section!r}")
    items = []
    for name in wanted:
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name!r} must be an object")
        for key, value in table.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            elif isinstance(value, list):
                value = [str(v) if not isinstance(v, str) else v for v in value]
            elif not isinstance(value, (str, bool)):
                raise ConfigError(f"{path}: {name}.{key}: unsupported value {value!r}")
            items.append((key, value, f"{path}:{name}.{key}"))
    return items


def _tomllib():
    """tomllib is imported only when a TOML file is read (workers never need it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def _yaml():
    """PyYAML, imported only when a YAML file is read; it is optional."""
    try:
        import yaml
    except ImportError:
        raise ValueError("YAML config needs PyYAML (pip install pyyaml)") from None
    return yaml


def _suggest(name: str) -> str:
    import difflib
    hint = difflib.get_close_matches(name, list(_BY_NAME), 1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _magic(path: str) -> dict[str, str]:
    """uWSGI's per-file magic variables."""
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    filename = os.path.basename(absolute)
    stem, ext = os.path.splitext(filename)
    return {"d": directory + "/", "n": stem, "p": absolute, "s": filename,
            "c": os.path.basename(directory), "x": ext.lstrip("."), "%": "%"}


_TOKEN = re.compile(r"%\(([^)]+)\)|%(.)|\$\(([^)]+)\)")


def _substitute(value: str, magic: dict[str, str], scope: _Scope, env: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match) -> str:
        name, letter, var = match.groups()
        if name is not None:
            scope.referenced.add(name)
            if name in scope.values:
                return scope.values[name]
            if name in magic:
                return magic[name]
            raise ConfigError(f"{where}: unknown placeholder %({name})")
        if letter is not None:
            return magic.get(letter, match.group(0))
        return env.get(var, "")
    return _TOKEN.sub(replace, value)


def _placeholder_names(settings: Iterable[_Setting]) -> set[str]:
    names: set[str] = set()
    for setting in settings:
        values = setting.value if isinstance(setting.value, list) else [setting.value]
        for value in values:
            if isinstance(value, str):
                names.update(m.group(1) for m in _TOKEN.finditer(value) if m.group(1))
    return names


# --- help and docs -----------------------------------------------------------------------------

_GROUPS = {"app": "Application", "sockets": "Sockets", "processes": "Processes", "limits": "Limits",
           "zerg": "Zerg mode", "elastic": "Idle, cheap and SOS", "emperor": "Emperor", "stats": "Stats", "logging": "Logging", "compat": "uWSGI compatibility",
           "config": "Configuration"}


def _spelling(opt: Option) -> str:
    names = [f"--{opt.name}"] + [f"--{a}" for a in opt.aliases]
    if opt.short:
        names.insert(0, f"-{opt.short}")
    return ", ".join(names)


def _default_text(opt: Option) -> str:
    if opt.repeatable:
        return "repeatable"
    if opt.default is None or opt.default == "":
        return ""
    if opt.type is mode:
        return format(opt.default, "03o")
    return str(opt.default).lower() if isinstance(opt.default, bool) else str(opt.default)


def help_text() -> str:
    lines = [f"zergserve {__version__}: a prefork WSGI server with uWSGI's elastic modes",
             "", "usage: zergserve [OPTIONS] [CONFIG.ini|.json|.toml]", ""]
    for group, title in _GROUPS.items():
        lines.append(f"{title}:")
        for opt in (o for o in OPTIONS if o.group == group):
            value = "" if opt.flag else (" [MODE]" if opt.const is not None else " VALUE")
            default = _default_text(opt)
            lines.append(f"  {_spelling(opt)}{value}")
            lines.append(f"      {opt.help}" + (f" (default: {default})" if default and not opt.flag else ""))
        lines.append("")
    lines.append("Every option is also a config-file key and a ZERGSERVE_<OPTION> / UWSGI_<OPTION> variable.")
    return "\n".join(lines)


def render_markdown() -> str:
    out = ["# zergserve settings", "",
           "Generated from the option table in `zergserve/config.py` "
           "(`python -m zergserve.config > docs/settings.md`); do not edit by hand.", ""]
    out += [line for line in (__doc__ or "").strip().splitlines()]
    out.append("")
    for group, title in _GROUPS.items():
        out += [f"## {title}", "", "| option | file key / environment | default | meaning |", "|---|---|---|---|"]
        for opt in (o for o in OPTIONS if o.group == group):
            default = _default_text(opt) or "—"
            kind = "flag" if opt.flag else ("optional value" if opt.const is not None else "value")
            out.append(f"| `{_spelling(opt)}` ({kind}) | `{opt.name}` / `ZERGSERVE_{opt.env}` | {default} "
                       f"| {opt.help} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
