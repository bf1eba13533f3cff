"""Which modules mypyc compiles, and whether a process runs them compiled or from their source.

The request path (the codecs, the exchange, the blocking driver, the WSGI adapter, the asyncio
connection and the ASGI adapter) is plain typed Python that setup.py also compiles with mypyc
when it can: the same source, several times faster per request. The compiled modules sit next to
their .py files and Python's import prefers them. Their source runs instead when:

- ZERGSERVE_PURE_PYTHON=1 (the tests' and bench's way to run both builds of the same code);
- a source file is newer than the compiled group in a source checkout (an edit since the last
  `pip install -e .`): running stale machine code for a changed file would be worse than slower.

It is all or nothing: compiled modules check the classes they take against the compiled ones, so
a mix would hold two copies of a class that do not pass for each other. This module imports only
the standard library: setup.py reads GROUPS from it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any, Sequence

# Compiled in two groups, a shared library each (`zergserve/<group>__mypyc*.so`), in dependency
# order: calls within a group are native; a WSGI worker loads only the first group's library.
GROUPS = {"zergserve._wsgi_path": ("zergserve.protocols.http", "zergserve.protocols.uwsgi", "zergserve.vocabulary",
                                   "zergserve.pacing", "zergserve.scoreboard", "zergserve.exchange", "zergserve.wsgi",
                                   "zergserve.connection"),
          "zergserve._asgi_path": ("zergserve.asgi", "zergserve.aioconnection")}
MODULES = tuple(module for modules in GROUPS.values() for module in modules)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding zergserve/


def _path(module: str) -> str:
    return os.path.join(_ROOT, *module.split(".")) + ".py"


def _built() -> dict[str, str]:
    """Each group's shared library for this interpreter, by group; empty unless every group is there."""
    libraries = {}
    for group in GROUPS:
        found = [path for suffix in importlib.machinery.EXTENSION_SUFFIXES
                 if os.path.exists(path := _path(group + "__mypyc")[:-3] + suffix)]
        if not found:
            return {}
        libraries[group] = found[0]
    return libraries


def _stale(libraries: dict[str, str]) -> list[str]:
    """The compiled modules whose source changed after their group's build, in a source checkout
    only (an installed package's file times say nothing about its build)."""
    if not os.path.exists(os.path.join(_ROOT, "setup.py")):
        return []
    return [module for group, library in libraries.items() for module in GROUPS[group]
            if os.stat(_path(module)).st_mtime > os.stat(library).st_mtime]


class _SourceFinder:
    """A meta path finder for the compiled modules' .py files, ahead of the compiled modules."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        import importlib.util  # only in a process that runs the source

        return importlib.util.spec_from_file_location(fullname, _path(fullname))


def pure_python_requested() -> bool:
    """ZERGSERVE_PURE_PYTHON=1: run every optional C part's Python instead (the tests' and bench's
    way to run both builds of the same code)."""
    return os.environ.get("ZERGSERVE_PURE_PYTHON", "") not in ("", "0")


def accelerator(module: str, name: str) -> Any:
    """`name` from the optional C extension `module` (setup.py builds them when a compiler is
    there), or None when it is absent or pure_python_requested(): the caller then runs its Python,
    which behaves the same."""
    if pure_python_requested():
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def _choose() -> str:
    """Decide, once per process, and say what was decided (the master logs it)."""
    libraries = _built()
    if not libraries:
        return "pure Python (not compiled)"
    if pure_python_requested():
        reason = "ZERGSERVE_PURE_PYTHON is set"
    else:
        stale = _stale(libraries)
        if not stale:
            return "compiled (mypyc)"
        reason = f"{', '.join(stale)} changed since the build: `pip install -e .` compiles them again"
    sys.meta_path.insert(0, _SourceFinder())
    return f"pure Python ({reason})"


STATUS = _choose()
ACTIVE = STATUS.startswith("compiled")
