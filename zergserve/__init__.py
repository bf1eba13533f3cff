"""zergserve: a prefork WSGI server with uWSGI's elastic modes."""

from zergserve import compiled  # noqa: F401  (first: it decides between compiled modules and their source)

__version__ = "0.1.0"
