"""The environment as a source: UWSGI_<OPTION> and ZERGSERVE_<OPTION> variables, and which
variables configure a process at all (the emperor keeps those from its vassals)."""

from __future__ import annotations

from collections.abc import Mapping

from zergserve.config.errors import ConfigError
from zergserve.config.files import CONFIG_FD_VARIABLE, Scope
from zergserve.config.hints import unknown
from zergserve.config.options import find
from zergserve.config.settings import Setting, resolve_set

# Variables of uWSGI's and our own machinery, never options (ZERGSERVE_PURE_PYTHON: the codecs' switch
# off their C accelerators, read at import, before any config exists).
_RESERVED_ENV = frozenset({"UWSGI_RELOADS", "UWSGI_VASSALS_DIR", "UWSGI_EMPEROR_FD", "UWSGI_EMPEROR_FD_CONFIG",
                           "UWSGI_BROODLORD_NUM", "UWSGI_EMPEROR_PROXY", "UWSGI_JAIL_PID",
                           "UWSGI_ORIGINAL_PROC_NAME", CONFIG_FD_VARIABLE, "ZERGSERVE_PURE_PYTHON"})
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


def settings(env: Mapping[str, str], prefix: str, scope: Scope) -> list[Setting]:
    """PREFIX_<OPTION> variables as settings, in name order. A ZERGSERVE_ name that is no option is
    an error (a typo in our own namespace); a UWSGI_ one a warning (the variable is ignored)."""
    found = []
    for name in sorted(env):
        if not name.startswith(prefix) or name in _RESERVED_ENV or name.startswith(_RESERVED_ENV_PREFIXES):
            continue
        key = name[len(prefix):].lower()
        opt = find(key)
        if opt is None:
            message = f"environment variable {name}: {unknown(key.replace('_', '-'))}"
            if prefix == "ZERGSERVE_":
                scope.errors.append(message)
            else:
                scope.warnings.append(f"{message} (ignored)")
            continue
        try:
            found.append(resolve_set(Setting(opt, opt.name, env[name], f"${name}")))
        except ConfigError as exc:
            scope.errors.append(str(exc))
    return found
