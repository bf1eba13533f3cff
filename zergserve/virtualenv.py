"""--home / --virtualenv / --venv / -H: run the app in a virtualenv.

uWSGI sets PYTHONHOME before it starts its interpreter; zergserve is already running in its own,
so it does what the venv's `bin/activate_this.py` does: the venv's site-packages go first on
sys.path (its .pth files processed), sys.prefix points at it, VIRTUAL_ENV is set and its bin/ leads
PATH (for subprocesses the app starts). Compiled packages only work under the Python they were
built for, so a venv made by another Python version is refused, naming both versions, instead of
failing later on an obscure import error.
"""

from __future__ import annotations

import glob
import os
import site
import sys


class VirtualenvError(Exception):
    """The directory is no usable environment for this interpreter."""


def activate(home: str) -> list[str]:
    """Put the environment at `home` first on sys.path; return its site-packages directories."""
    home = os.path.abspath(home)
    if not os.path.isdir(home):
        raise VirtualenvError(f"virtualenv {home}: not a directory")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    made_by = _venv_version(home)
    if made_by is not None and made_by != running:
        raise VirtualenvError(f"virtualenv {home} was made by Python {made_by}, but zergserve runs on Python "
                              f"{running}: recreate it with python{running} -m venv, or run zergserve with "
                              f"python{made_by}")
    wanted = os.path.join(home, "lib", f"python{running}", "site-packages")
    if not os.path.isdir(wanted):
        others = sorted(os.path.basename(os.path.dirname(d))
                        for d in glob.glob(os.path.join(home, "lib", "python*", "site-packages")))
        if others:
            raise VirtualenvError(f"virtualenv {home} has packages for {', '.join(others)} only, but zergserve "
                                  f"runs on Python {running}")
        raise VirtualenvError(f"virtualenv {home}: no {wanted} (is it a virtualenv?)")
    site_dirs = [wanted]
    lib64 = os.path.join(home, "lib64", f"python{running}", "site-packages")
    if os.path.isdir(lib64) and os.path.realpath(lib64) != os.path.realpath(wanted):
        site_dirs.append(lib64)
    before = list(sys.path)
    for directory in site_dirs:
        site.addsitedir(directory)  # appends it and what its .pth files name
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before
    sys.prefix = sys.exec_prefix = home
    os.environ["VIRTUAL_ENV"] = home
    path = os.environ.get("PATH", os.defpath).split(os.pathsep)
    if path[0] != os.path.join(home, "bin"):  # a re-executed master inherits it already
        os.environ["PATH"] = os.pathsep.join([os.path.join(home, "bin"), *path])
    return site_dirs


def _venv_version(home: str) -> str | None:
    """'X.Y' of the Python that made the venv, from pyvenv.cfg (None for a plain prefix)."""
    try:
        with open(os.path.join(home, "pyvenv.cfg"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    version = values.get("version_info") or values.get("version")
    if not version:
        return None
    return ".".join(version.split(".")[:2])
