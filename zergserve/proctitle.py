"""Process titles: what `ps` and `top` show for each zergserve process.

One function computes every title, uWSGI's way: `--procname-master` names the master (and the
emperor and a zergpool, the masters of their roles), `--procname` names every process the master
option does not; otherwise, with `--auto-procname` (on by default here; uWSGI's default is off),
the title names the role and the app: `zergserve master [shop.ini]`, `zergserve worker 2
[mysite.wsgi]`. `--procname-prefix` (or `--procname-prefix-spaced`) and `--procname-append` frame
every title, the app's own `uwsgi.setprocname()` included, as uWSGI frames them. With `auto-procname = false` and none of these, titles stay the command line.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from typing import Callable

from zergserve.config import Config

_APP_OPTIONS = ("module", "wsgi-file")
_SOCKET_OPTIONS = ("http", "socket", "zerg", "zergpool", "emperor")


def _load_setproctitle() -> Callable[[str], None]:
    """setproctitle's C function, loaded without the package's __init__, which imports `logging`
    (with threading's and string's share, 0.15 MB in every worker) only to report a missing C
    module. Where the C module is not found beside it, the package as it is."""
    spec = importlib.util.find_spec("setproctitle")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_setproctitle" + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader("setproctitle._setproctitle", path)
                module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(loader.name, loader, origin=path))
                loader.exec_module(module)
                return module.setproctitle
    from setproctitle import setproctitle as package_function
    return package_function


setproctitle = _load_setproctitle()


def set_title(cfg: Config, role: str, master: bool = False) -> None:
    """Title this process for `role` ('master', 'worker 2', 'emperor', 'zergpool')."""
    text = title(cfg, role, master)
    if text is not None:
        setproctitle(text)


def title(cfg: Config, role: str, master: bool = False) -> str | None:
    """The title of a process of `role`; None to leave the command line as it is."""
    name = (cfg.procname_master if master else None) or cfg.procname
    if not name:
        if not (cfg.auto_procname or _prefix(cfg) or cfg.procname_append):
            return None
        label = app_label(cfg)
        name = f"zergserve {role} [{label}]" if label else f"zergserve {role}"
    return framed(cfg, name)


def framed(cfg: Config, name: str) -> str:
    """`name` between the prefix and --procname-append: every title zergserve sets."""
    return _prefix(cfg) + name + cfg.procname_append


def _prefix(cfg: Config) -> str:
    """--procname-prefix, or --procname-prefix-spaced and a space (uWSGI's two spellings of one prefix)."""
    return cfg.procname_prefix or (cfg.procname_prefix_spaced + " " if cfg.procname_prefix_spaced else "")


def app_label(cfg: Config) -> str:
    """What names this instance among others on the host: the config file that names the app (or,
    failing that, its sockets, or any config file), else the app's module or file, else the
    emperor's vassal directories or the zergpool's socket."""
    for names in (_APP_OPTIONS, _SOCKET_OPTIONS, tuple(cfg.sources)):
        for name in names:
            source = cfg.sources.get(name, "")
            path, sep, line = source.rpartition(":")
            if sep and line.isdigit() and not source.startswith(("-", "$")):
                return os.path.basename(path)
    if cfg.module:
        return cfg.module.partition(":")[0]
    if cfg.wsgi_file:
        return os.path.basename(cfg.wsgi_file)
    if cfg.emperor:
        return ",".join(cfg.emperor)
    return ",".join(item.partition(":")[0] for item in cfg.zergpool)
