"""--help and docs/settings.md, both generated from the option table: groups in table order, each
option's spellings, value placeholder, default and help."""

from __future__ import annotations

import re

from zergserve import __version__
from zergserve.config.converters import render
from zergserve.config.options import BY_NAME, OPTIONS, Option

GROUP_TITLES = {"app": "Application", "sockets": "Sockets", "processes": "Processes", "limits": "Limits",
                "privileges": "Privileges", "reload": "Reload on change", "static": "Static files",
                "zerg": "Zerg mode", "elastic": "Idle, cheap and SOS",
                "cheaper": "Cheaper: the worker count follows the load", "emperor": "Emperor", "stats": "Stats",
                "logging": "Logging", "compat": "uWSGI compatibility", "config": "Configuration"}


def _groups() -> list[tuple[str, list[Option]]]:
    """(title, options) in table order, so a new group needs no second list to show up."""
    groups: dict[str, list[Option]] = {}
    for opt in OPTIONS:
        groups.setdefault(opt.group, []).append(opt)
    return [(GROUP_TITLES.get(name, name.capitalize()), opts) for name, opts in groups.items()]


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
    if same and same.group(1) in BY_NAME and BY_NAME[same.group(1)] is not opt:
        return metavar(BY_NAME[same.group(1)])
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
    return render(opt.type, opt.default)


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
    """docs/settings.md: the package's docstring (sources, files, the command line), then one table
    per group."""
    from zergserve import config
    out = ["# zergserve settings", "",
           ("Generated from the option table in `zergserve/config/options.py` "
            "(`python -m zergserve.config > docs/settings.md`); do not edit by hand."), ""]
    out += (config.__doc__ or "").strip().splitlines()
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

