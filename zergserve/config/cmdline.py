"""The command line as a source: `--name value`, `--name=value`, `-p 4`, clustered flags, optional
values and bare config-file arguments, as settings in command-line order."""

from __future__ import annotations

from collections.abc import Sequence

from zergserve import __version__
from zergserve.config.docs import help_text
from zergserve.config.errors import ConfigError, HelpRequested, VersionRequested
from zergserve.config.files import file_kind
from zergserve.config.hints import unknown
from zergserve.config.options import BY_NAME, BY_SHORT, Option, find
from zergserve.config.settings import Setting, resolve_set


def settings(argv: Sequence[str]) -> list[Setting]:
    """Settings in command-line order. The table drives a small hand parser because argparse
    handles optional values and bare config-file arguments poorly."""
    args = list(argv)
    found: list[Setting] = []
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
                raise ConfigError(unknown(name, f"--{name}"))
            spelled = f"--{name}"
            if not eq:
                value, i = _take_value(opt, args, i, spelled)
        elif arg.startswith("-") and len(arg) > 1:
            letter, rest = arg[1], arg[2:]
            opt = BY_SHORT.get(letter)
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
            kind = file_kind(arg)
            if kind is None:
                raise ConfigError(f"unexpected argument {arg!r} (config files end in .ini, .json, .toml or .yaml)")
            opt, spelled, value = BY_NAME[kind], arg, arg
        found.append(resolve_set(Setting(opt, opt.name, value, spelled)))
    return found


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
