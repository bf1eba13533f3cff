"""The WebSocket test app: each path exercises one part of the ASGI websocket contract."""

import os
from urllib.parse import parse_qs


def _record(scope, text):
    record = parse_qs(scope["query_string"].decode()).get("record")
    if record:
        with open(record[0], "a") as f:
            f.write(text + "\n")


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # no lifespan: the worker serves without it
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close"})
    elif path == "/http-deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"7")]})
        await send({"type": "websocket.http.response.body", "body": b"go away"})
    elif path == "/error":
        raise RuntimeError("boom before accept")
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
    else:  # echo, with the first subprotocol the client offered
        protocols = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None,
                    "headers": [(b"x-worker", str(os.getpid()).encode())]})
        _record(scope, "accepted")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _record(scope, f"disconnect {message['code']}")
                return
            if message.get("text") == "scope":
                await send({"type": "websocket.send", "text": f"{scope['scheme']} {scope['path']} "
                                                              f"{scope['query_string'].decode()}"})
            elif message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
