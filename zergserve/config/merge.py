"""Merging the sources into one Config: defaults < files < UWSGI_* < ZERGSERVE_* < command line <
inherited templates, each setting converted by its option's type, every error of the run collected
before one ConfigError."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from zergserve.config import cmdline, environment
from zergserve.config.errors import ConfigError
from zergserve.config.files import Scope, placeholder_names, read_named
from zergserve.config.hints import unknown
from zergserve.config.options import EXPANDS, NO_EFFECT, Option, find
from zergserve.config.settings import Setting, as_text, file_option
from zergserve.config.view import Config


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Merge every source into a Config (argv without the program name). Raises ConfigError naming
    the source and key of every problem found, HelpRequested or VersionRequested. Options that
    change nothing here and unknown UWSGI_* variables end up in cfg.warnings, for the caller to log."""
    env = os.environ if environ is None else environ
    command_line = cmdline.settings(argv)
    scope = Scope(env)
    variables = environment.settings(env, "UWSGI_", scope) + environment.settings(env, "ZERGSERVE_", scope)
    files: list[Setting] = []
    others: list[Setting] = []
    for setting in variables + command_line:
        if (option := file_option(setting)) is not None:
            files += read_named(option, setting.value, None, setting.source, 0, scope, False)
        else:
            scope.define(setting)
            others.append(setting)
    ordered = files + others + scope.inherited
    used = scope.referenced | placeholder_names(ordered)
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


def _apply(cfg: Config, setting: Setting, used: set[str]) -> None:
    """Convert one setting and store it: replace a scalar, extend a list, keep a placeholder."""
    opt = setting.opt
    if opt is None:
        if not (setting.placeholder or setting.key in used):
            raise ConfigError(f"{setting.source}: {unknown(setting.key)}")
        cfg.placeholders[setting.key] = as_text(setting.value)
        return
    value = _convert(opt, setting.value, setting.source)
    _warn_if_inert(cfg, opt, value, setting.source)
    if opt.name in EXPANDS:
        for name, item in EXPANDS[opt.name](value):
            _apply(cfg, Setting(find(name), name, item, setting.source), used)
    if opt.repeatable:
        getattr(cfg, opt.attr).extend(value if isinstance(value, list) else [value])
    else:
        setattr(cfg, opt.attr, value)
    cfg.sources[opt.name] = setting.source


def _warn_if_inert(cfg: Config, opt: Option, value: Any, source: str) -> None:
    """One warning line per option that is accepted but changes nothing here, saying why (the
    row's help for the compat group; NO_EFFECT for a value of a live option, like master = false)."""
    if opt.group == "compat":
        why = opt.help.split(": ", 1)[-1]
    elif opt.name in NO_EFFECT and NO_EFFECT[opt.name][0] == value:
        why = NO_EFFECT[opt.name][1]
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

