"""The optional C accelerator of the uwsgi vars loop; everything else is in pyproject.toml.

optional=True: without a compiler (or Python headers) the build logs a warning and the package
installs pure Python, which behaves the same (zergserve/protocols/uwsgi.py falls back).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("zergserve.protocols._uwsgi_speedups",
                             ["zergserve/protocols/_uwsgi_speedups.c"], optional=True)])
