"""zergserve: a prefork WSGI server with uWSGI's elastic modes."""

__version__ = "0.1.0"
