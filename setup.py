"""The compiled parts, both optional; everything else is in pyproject.toml.

- The codecs' C accelerator (zergserve/protocols/_speedups.c): the uwsgi vars loop, the HTTP head
  gate's and the response fields' common cases.
- The drivers' recv that returns None for nothing yet (zergserve/_nowait.c) instead of raising.
- The scoreboard row's writer (zergserve/_rowwriter.c): a request's stores into the shared row.
- The request path compiled by mypyc (the groups of modules zergserve/compiled.py names): the same
  typed source, run as C. ZERGSERVE_MYPYC=0 skips it.

Both are optional=True: without a compiler (or Python headers, or mypyc) the build logs a warning
and the package installs pure Python, which behaves the same.

`python setup.py` is not how to install (use pip); `python -c "import setup; setup.build_in_place()"`
compiles both into a source tree with any setuptools, as `pip install -e .` does.
"""

from __future__ import annotations

import os
import runpy
import tempfile

from setuptools import Extension, setup


def extensions() -> list[Extension]:
    extensions = [Extension("zergserve.protocols._speedups", ["zergserve/protocols/_speedups.c"], optional=True),
                  Extension("zergserve._nowait", ["zergserve/_nowait.c"], optional=True),
                  Extension("zergserve._rowwriter", ["zergserve/_rowwriter.c"], optional=True)]
    if os.environ.get("ZERGSERVE_MYPYC", "1") == "0":
        return extensions
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warning: mypyc is not installed: the request path stays pure Python")
        return extensions
    groups = [([os.path.join(*module.split(".")) + ".py" for module in modules], group)
              for group, modules in runpy.run_path(os.path.join("zergserve", "compiled.py"))["GROUPS"].items()]
    # A fresh type cache: mypyc's incremental mode (which its groups use) can crash reading the
    # cache an earlier build left in .mypy_cache (`pip install -e .`, then `python -m build`). A build
    # process compiles once, so the variable need not be restored.
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MYPY_CACHE_DIR"] = cache
        compiled = mypycify([path for paths, _ in groups for path in paths], opt_level="3", separate=groups)
    for extension in compiled:
        extension.optional = True
        extensions.append(extension)
    return extensions


def build_in_place() -> None:
    """Compile the extensions next to their sources, from the source tree's root, without reading
    pyproject.toml (an older setuptools than the build's cannot)."""
    from setuptools.dist import Distribution

    distribution = Distribution({"name": "zergserve", "ext_modules": extensions()})
    command = distribution.get_command_obj("build_ext")
    command.inplace = True
    distribution.run_command("build_ext")


if __name__ == "__main__":
    setup(ext_modules=extensions())
