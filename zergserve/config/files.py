"""Config files and the language uWSGI users write in them: the file kinds by extension, reading
ini/json/toml/yaml (and the file an emperor hands over open), includes, uWSGI's configuration logic
(for/if-* blocks), magic variables, placeholders, $(ENV) and @(file). options.py owns the table and
merge.py merges the sources; this module turns one file into its settings, in order, recording every
error on the way."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from zergserve import __version__, accesslog
from zergserve.config.converters import integer
from zergserve.config.errors import ConfigError
from zergserve.config.options import find
from zergserve.config.settings import Setting, as_text, file_option, resolve_set

# Config files by extension, for every reader of a file name: a bare argument, include, the emperor's
# monitors (which files are vassals) and the vassal's command line (--KIND FILE). The kind is the option
# that reads such a file; xml is uWSGI's, read by no option here: only a --binary-path uWSGI vassal reads it.
EXTENSIONS = {".ini": "ini", ".json": "json", ".js": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml",
              ".xml": "xml"}
READ = ("ini", "json", "toml", "yaml")
# Tyrant mode: "FD:NAME", the vassal's config file NAME as the emperor opened and checked it (see _read).
CONFIG_FD_VARIABLE = "ZERGSERVE_CONFIG_FD"
DEFAULT_SECTIONS = ("uwsgi", "zergserve")
MAX_INCLUDE_DEPTH = 16
# Configuration logic (uWSGI's ConfigLogic): the keys that open a block, what closes it, and the test of
# each if-* key with its -not- form folded in (if-not-env → if-env).
BLOCK_KIND = {**dict.fromkeys(("for", "for-glob", "for-times", "for-readline"), "for"),
              **dict.fromkeys(("if-env", "ifenv", "if-not-env", "if-opt", "if-not-opt", "if-exists", "ifexists",
                               "if-not-exists", "if-file", "if-not-file", "if-dir", "ifdir", "if-directory",
                               "if-not-dir", "if-hostname", "if-not-hostname"), "if")}
ENDS = {"endfor": "for", "end-for": "for", "endif": "if", "end-if": "if"}
CONDITIONS = {"if-env": "env", "ifenv": "env", "if-opt": "opt", "if-exists": "exists", "ifexists": "exists",
              "if-file": "file", "if-dir": "dir", "ifdir": "dir", "if-directory": "dir", "if-hostname": "hostname"}


class Scope:
    """What files see while they are read: values for %(name), the names used so, the last file
    read (the file of a bare ':section'), the magic variables of the first file read (%N, %P...),
    and every error and warning so far: a file's errors are reported together, not one per run."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.values: dict[str, str] = {}
        self.referenced: set[str] = set()
        self.last_file: str | None = None
        self.first: dict[str, str] | None = None
        self.inherited: list[Setting] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.started = time.time()
        self.magic_only = False  # an inherited file: uWSGI expands nothing else there

    def define(self, setting: Setting) -> None:
        if file_option(setting) is not None:
            return
        values = setting.value if isinstance(setting.value, list) else [setting.value]
        if not values:
            return
        value = as_text(values[-1])
        self.values[setting.key] = value
        if setting.opt is not None:
            self.values[setting.opt.name] = value

    def lookup(self, name: str) -> str | None:
        """The value of the option or placeholder `name` set so far (an alias names its option)."""
        option = find(name)
        for candidate in (name, option.name if option else None):
            if candidate in self.values:
                return self.values[candidate]
        return None


# --- files -----------------------------------------------------------------------------------------

def expand_file(kind: str, path: str, section: str | None, given: str, source: str, depth: int, scope: Scope,
                template: bool = False) -> list[Setting]:
    """The settings of one file in order, with its includes read in their place, its logic blocks
    (for, if-*) applied and its values expanded (magic variables, placeholders, environment, @()).
    An error is recorded in the scope and the line skipped, so that every error of a file shows."""
    if depth > MAX_INCLUDE_DEPTH:
        scope.errors.append(f"{source}: config files include each other more than {MAX_INCLUDE_DEPTH} deep")
        return []
    if not path:
        scope.errors.append(f"{source}: {given!r} names a section, but no file was read before it")
        return []
    try:
        data = _read(path, scope.env)
        scope.last_file = path
        if kind == "ini":
            raw = _read_ini(path, data.decode("utf-8", "replace"), section)
        else:
            raw = _read_structured(kind, path, data, section)
    except OSError as exc:
        scope.errors.append(f"{source}: cannot read {kind} file {path!r}: {exc.strerror}")
        return []
    except ConfigError as exc:
        scope.errors.append(str(exc))
        return []
    magic = _magic(path, given, section, scope, template)
    settings: list[Setting] = []

    def one(key: str, value: Any, where: str, context: str | None) -> None:
        if isinstance(value, list):
            value = [_substitute(item, magic, scope, where, context) if isinstance(item, str) else item
                     for item in value]
        elif isinstance(value, str):
            value = _substitute(value, magic, scope, where, context)
        setting = resolve_set(Setting(find(key), key, value, where))
        if (option := file_option(setting)) is not None:
            for item in setting.value if isinstance(setting.value, list) else [setting.value]:
                settings.extend(read_named(option, as_text(item), path, where, depth + 1, scope,
                                           template))
            return
        scope.define(setting)
        settings.append(setting)

    for key, value, where, context in _logic(raw, magic, scope):
        try:
            one(key, value, where, context)
        except ConfigError as exc:
            scope.errors.append(str(exc))
    return settings


def read_named(option: str, spec: str, including: str | None, source: str, depth: int, scope: Scope,
               template: bool) -> list[Setting]:
    """The settings of the file an ini/json/toml/yaml/include/inherit setting names: relative to the
    including file if any; an empty name is a section of that file (or of the file read last).
    include reads any format by its extension; inherit's settings are kept for the very end."""
    path, section = (None if including else _checked_file(spec, scope.env)) or split_section(spec)
    if not path:
        path = including or scope.last_file or ""
    elif including and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(including), path)
    if option == "inherit":
        scope.inherited += _inherit(path, section, spec, source, depth, scope)
        return []
    kind = (file_kind(path) or "ini") if option == "include" else option
    return expand_file(kind, path, section, spec, source, depth, scope, template or option == "include")


def _inherit(path: str, section: str | None, given: str, source: str, depth: int,
             scope: Scope) -> list[Setting]:
    """uWSGI's --inherit: the template's settings go after every other source, with its magic
    variables expanded and nothing else: uWSGI leaves $(), @() and %() there as they are written,
    so here they are an error rather than text that looks expanded and is not."""
    inner = Scope(scope.env)
    inner.first, inner.magic_only = scope.first, True
    settings = expand_file(file_kind(path) or "ini", path, section, given, source, depth + 1, inner, True)
    scope.errors += inner.errors
    return settings


def _logic(raw: list[tuple[str, Any, str]], magic: dict[str, str],
           scope: Scope) -> Iterator[tuple[str, Any, str, str | None]]:
    """uWSGI's configuration logic: (key, value, where, %(_) value) of every line a for/if block
    keeps, each block line once per loop item. Blocks do not nest, as in uWSGI."""
    block: tuple[str, str, Sequence[str | None]] | None = None  # opening key, where, contexts
    lines: list[tuple[str, Any, str]] = []
    for key, value, where in raw:
        low = key.lower().replace("_", "-")
        if low in ENDS:
            if block is None or ENDS[low] != BLOCK_KIND[block[0]]:
                scope.errors.append(f"{where}: {key} without a matching {ENDS[low]}")
                continue
            for context in block[2]:
                for item in lines:
                    yield (*item, context)
            block, lines = None, []
        elif low in BLOCK_KIND:
            if block is not None:
                scope.errors.append(f"{where}: {key} inside the {block[0]} block of line "
                                    f"{block[1].rsplit(':', 1)[-1]}: blocks do not nest (nor in uWSGI)")
                continue
            block = (low, where, [])
            try:
                arg = _substitute(as_text(value), magic, scope, where, None)
                block = (low, where, _contexts(low, arg, scope))
            except ConfigError as exc:
                scope.errors.append(str(exc))
            except ValueError as exc:
                scope.errors.append(f"{where}: {key}: {exc}")
        elif block is not None:
            lines.append((key, value, where))
        else:
            yield key, value, where, None
    if block is not None:
        scope.errors.append(f"{block[1]}: {block[0]} without its end{BLOCK_KIND[block[0]]}")


def _contexts(key: str, arg: str, scope: Scope) -> Sequence[str | None]:
    """The %(_) values a block's lines are read with: one per loop item, one for an if that holds
    (the variable's, option's or path's value), none for an if that does not."""
    if key == "for":
        return [item for item in arg.split(" ") if item]
    if key == "for-glob":
        import glob
        return sorted(glob.glob(arg))
    if key == "for-times":
        return [str(n) for n in range(1, integer(0)(arg) + 1)] if arg.strip() else []
    if key == "for-readline":
        try:
            with open(arg, encoding="utf-8") as fh:
                return [line.rstrip("\r\n") for line in fh if line.strip()]
        except OSError as exc:
            raise ValueError(f"cannot read {arg!r}: {exc.strerror}") from None
    negate = "-not-" in key
    test = CONDITIONS[key.replace("-not-", "-")]
    if test in ("env", "opt"):
        name, eq, wanted = arg.partition("=")
        found = scope.env.get(name) if test == "env" else scope.lookup(name)
        holds = found is not None and (not eq or found == wanted)
        context = found
    else:
        holds = {"exists": lambda: os.access(arg, os.R_OK), "file": lambda: os.path.isfile(arg),
                 "dir": lambda: os.path.isdir(arg), "hostname": lambda: socket.gethostname() == arg}[test]()
        context = arg
    return [context] if holds != negate else []


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


def _checked_file(spec: str, env: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(file, section) when `spec` is the file the emperor passed open (CONFIG_FD_VARIABLE), or
    that file with a :section: matched on the name as given, never split by what exists on disk,
    so `app.ini:x.ini` next to the checked `app.ini` is never read in its place (nor the reverse)."""
    fd, sep, name = env.get(CONFIG_FD_VARIABLE, "").partition(":")
    if not (sep and fd.isdigit() and name):
        return None
    if spec == name:
        return name, None
    rest = spec[len(name) + 1:] if spec.startswith(name + ":") else "/"
    return (name, rest or None) if "/" not in rest else None


def split_section(spec: str) -> tuple[str, str | None]:
    """'file.ini:section' → ('file.ini', 'section'): the last ':' after the last '/', as uWSGI
    splits it; an empty section means the default ones."""
    if os.path.exists(spec):
        return spec, None
    path, sep, section = spec.rpartition(":")
    if not sep or "/" in section:
        return spec, None
    return path, section or None


def file_kind(spec: str) -> str | None:
    """ini, json, toml or yaml by the extension of FILE[:section]; None for anything else."""
    return kind_of(split_section(spec)[0])


def kind_of(path: str, read: tuple[str, ...] = READ) -> str | None:
    """The kind of config file `path` is by its extension, if one of `read` (the emperor asks for
    xml too, for a vassal that is uWSGI)."""
    kind = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    return kind if kind in read else None


def extensions(kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The file name endings of these kinds of config file."""
    return tuple(ext for ext, kind in EXTENSIONS.items() if kind in kinds)


def parse_file(path: str, section: str | None = None,
               environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') of one config file and the files it includes, with its magic
    variables, placeholders and $(ENV) applied; a list value gives one tuple per item. Keys are
    not checked against the table (the emperor reads vassal files with it)."""
    env = os.environ if environ is None else environ
    if section is None:
        path, section = split_section(path)
    scope = Scope(env)
    settings = expand_file(file_kind(path) or "ini", path, section, path, path, 0, scope)
    if scope.errors:
        raise ConfigError("\n".join(scope.errors))
    return [(s.key, as_text(item), s.source) for s in settings + scope.inherited
            for item in (s.value if isinstance(s.value, list) else [s.value])]


def _read_ini(path: str, content: str, section: str | None) -> list[tuple[str, str, str]]:
    """(key, value, 'file:line') in uWSGI's ini dialect. Hand-parsed because keys repeat, which
    configparser refuses; the default sections come back [uwsgi] first so [zergserve] wins."""
    wanted = (section,) if section else DEFAULT_SECTIONS
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
    for name in (section,) if section else DEFAULT_SECTIONS:
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
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


def _yaml(path: str) -> Any:
    """PyYAML, imported only when a YAML file is read; it is optional."""
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
    return yaml


def _magic(path: str, given: str, section: str | None, scope: Scope, template: bool) -> dict[str, str]:
    """uWSGI's magic variables of one file. abspath, not realpath: a symlink to a .skel template
    keeps its own name in %n, which is the point of the trick. The upper-case letters are those of
    the first file that was no template (include, inherit): the vassal's own file."""
    absolute = os.path.abspath(path)
    directory, filename = os.path.split(absolute)
    stem, ext = os.path.splitext(filename)
    try:
        inode = str(os.stat(absolute).st_ino)
    except OSError:
        inode = ""
    own = {"d": directory.rstrip("/") + "/", "p": absolute, "s": filename, "n": stem, "e": ext[1:],
           "c": os.path.basename(directory), "x": section or "", "o": given, "i": inode, "j": _djb33x(absolute)}
    if scope.first is None and not template:
        scope.first = own
    first = scope.first or own
    parts = [part for part in directory.split("/") if part]
    import pwd
    import grp
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return {**own, **{letter.upper(): value for letter, value in first.items()},
            **{str(n): parts[n] if n < len(parts) else "" for n in range(10)},
            "v": os.getcwd(), "h": socket.gethostname(), "t": str(int(scope.started)),
            "T": str(int(scope.started * 1_000_000)), "V": __version__, "k": str(os.cpu_count() or 1),
            "u": str(uid), "U": user, "g": str(gid), "G": group, "%": "%", "[": "\x1b"}


def _djb33x(text: str) -> str:
    """%j: uWSGI's djb33x hash of the path, its four bytes in memory (little-endian) order, in hex."""
    value = 5381
    for byte in text.encode():
        value = ((value << 5) + value ^ byte) & 0xFFFFFFFF
    return value.to_bytes(4, "little").hex().upper()


TOKEN = re.compile(r"%\(([^)]*)\)|%(.?)|\$\(([^)]*)\)|@\(((?:[^()]|\([^()]*\))*)\)", re.S)


def _substitute(value: str, magic: dict[str, str], scope: Scope, where: str, context: str | None) -> str:
    """One value with %(name), %X magic, $(ENV) and @(file) replaced. Anything that looks like
    one of them and is not known is an error: never text that looks expanded and is not."""
    def replace(match: re.Match[str]) -> str:
        name, letter, var, source = match.groups()
        if scope.magic_only and letter is None:
            raise ConfigError(f"{where}: {match.group(0)}: uWSGI expands only magic variables (%n, %d...) "
                                     "in a file read by inherit; use include to expand the rest")
        if name is not None:
            if name == "_":
                if context is None:
                    raise ConfigError(f"{where}: %(_) has no value here: it is set inside for/endfor and "
                                             f"if-*/endif blocks (and if-not-env, if-not-opt give none)")
                return context
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ConfigError(f"{where}: %({name}): placeholder math and other expressions are not "
                                         "supported")
            scope.referenced.add(name)
            found = scope.lookup(name)
            if found is None and accesslog.is_placeholder(name):
                return match.group(0)  # a log-format's own %(addr), left for it, as uWSGI leaves it
            if found is None:
                raise ConfigError(f"{where}: unknown placeholder %({name}): it must be set before it is used")
            return found
        if letter is not None:
            if letter in magic:
                return magic[letter]
            raise ConfigError(f"{where}: unknown magic variable %{letter} (write %% for a literal %)")
        if var is not None:
            parts = re.fullmatch(r"([^:-]*)(?:(:-|-)(.*))?", var, re.S)
            if parts is None:
                raise ConfigError(f"{where}: $({var}): expected $(NAME), $(NAME:-DEFAULT) or $(NAME-DEFAULT)")
            name, sep, fallback = parts.groups()
            found = scope.env.get(name)
            if sep == ":-":
                return found or fallback
            if sep == "-":
                return fallback if found is None else found
            return found or ""
        return _read_value(_substitute(source, magic, scope, where, context), where)
    return TOKEN.sub(replace, value)


def _read_value(source: str, where: str) -> str:
    """@(file) and @(exec://command): the file's content or the command's output, without one
    trailing newline, as uWSGI reads them (a relative file is relative to the working directory)."""
    if source.startswith("exec://"):
        import subprocess
        try:
            done = subprocess.run(source[len("exec://"):], shell=True, stdout=subprocess.PIPE, check=False)
        except OSError as exc:
            raise ConfigError(f"{where}: @({source}): {exc.strerror}") from None
        if done.returncode:
            raise ConfigError(f"{where}: @({source}): the command exited with status {done.returncode}")
        data = done.stdout
    elif re.match(r"[a-z]+://", source):
        raise ConfigError(f"{where}: @({source}): only files and exec:// are supported")
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(f"{where}: @({source}): cannot read it: {exc.strerror}") from None
    text_value = data.decode("utf-8", "replace")
    return text_value[:-1] if text_value.endswith(("\n", "\r")) else text_value


def placeholder_names(settings: Iterable[Setting]) -> set[str]:
    """Names used as %(name) in values that were not expanded (the command line, environment)."""
    names: set[str] = set()
    for setting in settings:
        for value in setting.value if isinstance(setting.value, list) else [setting.value]:
            if isinstance(value, str):
                names.update(m.group(1) for m in TOKEN.finditer(value) if m.group(1))
    return names
