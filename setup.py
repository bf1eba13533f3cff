"""The codecs' optional C accelerator (the uwsgi vars loop, the HTTP head gate's and response fields'
common cases); everything else is in pyproject.toml.

optional=True: without a compiler (or Python headers) the build logs a warning and the package
installs pure Python, which behaves the same (zergserve/protocols/uwsgi.py and http.py fall back).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("zergserve.protocols._speedups", ["zergserve/protocols/_speedups.c"], optional=True)])
