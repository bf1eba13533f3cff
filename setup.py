"""The optional C accelerators of the codecs (the uwsgi vars loop, the HTTP head gate's common case);
everything else is in pyproject.toml.

optional=True: without a compiler (or Python headers) the build logs a warning and the package
installs pure Python, which behaves the same (zergserve/protocols/uwsgi.py and http.py fall back).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(f"zergserve.protocols._{name}_speedups", [f"zergserve/protocols/_{name}_speedups.c"],
                             optional=True) for name in ("uwsgi", "http")])
