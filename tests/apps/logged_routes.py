"""Routes shared by the apps that configure logging the way Flask's and Django's documentation show:
the server's own lines (startup, HARAKIRI, killed workers, errors, shutdown) must survive them."""

import asyncio
import logging
import os
import time

log = logging.getLogger("shop")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(60)
    if path == "/crash":
        raise RuntimeError("boom from the logging app")
    log.warning("app logging still works")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/sleep":
        time.sleep(60)  # blocks the loop, as a stuck request would: harakiri's case
    if scope["path"] == "/crash":
        raise RuntimeError("boom from the logging app")
    await asyncio.sleep(0)
    log.warning("app logging still works")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
