"""The demo app: `zergserve --chdir examples --module demo:application --http 127.0.0.1:8000`."""

import os


def application(environ, start_response):
    """Greets, and says which worker answered and what it was asked."""
    body = (
        f"Hello from zergserve worker pid {os.getpid()}\n"
        f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} via {environ['SERVER_PROTOCOL']}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
