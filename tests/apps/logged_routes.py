"""Routes shared by the apps that configure logging the way Flask's and Django's documentation show:
the server's own lines (startup, HARAKIRI, killed workers, errors, shutdown) must survive them."""

import asyncio
import logging
import os
import time

log = logging.getLogger("shop")


def _stuck() -> None:
    """Spin for a minute: blocks the worker, a gevent hub or an event loop alike (harakiri's case;
    gevent's patched time.sleep would only wait, which harakiri spares)."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        _stuck()
    if path == "/crash":
        raise RuntimeError("boom from the logging app")
    log.warning("app logging still works")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/sleep":
        _stuck()
    if scope["path"] == "/crash":
        raise RuntimeError("boom from the logging app")
    await asyncio.sleep(0)
    log.warning("app logging still works")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
