"""A setting: one key = value from one source (a file line, a flag, a variable) before conversion,
what every source produces and merge.load() applies in order."""

from __future__ import annotations

from typing import Any, NamedTuple

from zergserve.config.converters import key_value
from zergserve.config.errors import ConfigError
from zergserve.config.options import FILE_OPTIONS, Option, find


class Setting(NamedTuple):
    """One key = value from one source, before conversion; opt is None for a file key that is no
    option (a placeholder, or a mistake)."""

    opt: Option | None
    key: str
    value: Any  # a string, a bool or a list of strings (json, toml, yaml)
    source: str  # "file:line", "--flag", "$VAR"
    placeholder: bool = False  # defined by `set`, so it needs no %(key) use to be accepted


def file_option(setting: Setting) -> str | None:
    """The option (ini, json, ..., include, inherit) when the setting names a config file to read in
    its place, else None."""
    return setting.opt.name if setting.opt is not None and setting.opt.name in FILE_OPTIONS else None


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

