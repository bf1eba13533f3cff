"""ASGI apps whose lifespan misbehaves in the ways real frameworks do, for --lifespan and the log."""

import asyncio
import traceback


async def _hello(send, body=b"hello"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def starlette_failing(scope, receive, send):
    """As Starlette's router: a startup handler raises, the app sends startup.failed with the
    traceback and re-raises."""
    if scope["type"] == "lifespan":
        await receive()
        try:
            raise ConnectionRefusedError("database at 127.0.0.1:5432 refused the connection")
        except BaseException:
            await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
            raise
    await _hello(send, b"never")


async def hanging_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.sleep(3600)
    await _hello(send, b"never")


async def http_only(scope, receive, send):
    """Knows only HTTP: raises on the lifespan scope."""
    assert scope["type"] == "http", f"unsupported scope {scope['type']}"
    await _hello(send)


class SyncCallASGI:
    """An ASGI app whose __call__ is not declared async (it returns the coroutine): three parameters."""

    def __call__(self, scope, receive, send):
        return http_only(scope, receive, send)


sync_call = SyncCallASGI()
