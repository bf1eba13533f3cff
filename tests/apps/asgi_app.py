"""The ASGI test app: each path exercises one part of the ASGI contract."""

import asyncio
import json
import os
import sys
import time
from urllib.parse import parse_qs

STARTED_AT = 0.0  # set by lifespan startup, in the worker


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _reply(send, status, body, content_type=b"text/plain", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    global STARTED_AT
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(0.2)
                STARTED_AT = time.time()
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                marker = os.environ.get("ASGI_SHUTDOWN_FILE")
                if marker:
                    with open(marker, "a") as f:
                        f.write(f"shutdown {os.getpid()}\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/":
        await _reply(send, 200, b"hello")
    elif path == "/pid":
        await _reply(send, 200, str(os.getpid()).encode())
    elif path == "/scope":  # what the server says of the connection (behind proxies: --forwarded-allow-ips)
        reply = {"scheme": scope["scheme"], "client": scope["client"]}
        await _reply(send, 200, json.dumps(reply).encode(), b"application/json")
    elif path == "/echo":
        body = await _read_body(receive)
        reply = {"method": scope["method"], "body": body.decode("latin-1"), "length": len(body),
                 "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                 "http_version": scope["http_version"], "query": scope["query_string"].decode()}
        await _reply(send, 200, json.dumps(reply).encode(), b"application/json")
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/forever":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        while True:  # until the client leaves and send() raises
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.02)
    elif path == "/sse":  # streams events until receive() says the client left, then records it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: hello\n\n", "more_body": True})
        message = await receive()  # the (empty) request body, then only the disconnect is left
        message = await receive()
        with open(query["record"], "a") as f:
            f.write(message["type"] + "\n")
    elif path == "/flood":  # sends as fast as the server lets it, counting the sends that returned
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for sent in range(1, 1000):
            await send({"type": "http.response.body", "body": b"z" * 1048576, "more_body": True})
            with open(query["record"], "w") as f:
                f.write(str(sent))
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":  # one body of ?size= bytes, with its Content-Length
        await _reply(send, 200, b"y" * int(query.get("size", "1000000")), b"application/octet-stream")
    elif path == "/bigstream":
        size = int(query.get("size", "20000000"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        while size > 0:
            await send({"type": "http.response.body", "body": b"y" * min(size, 65536), "more_body": True})
            size -= 65536
        await send({"type": "http.response.body", "body": b""})
    elif path == "/bodycheck":  # says on stderr whether the body came whole or the client left
        body, message = b"", {"type": "http.disconnect"}
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        outcome = "disconnect" if message["type"] == "http.disconnect" else "complete"
        print(f"BODYCHECK {outcome} {len(body)}", file=sys.stderr, flush=True)
        await _reply(send, 200, b"got %d" % len(body))
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", "1")))
        await _reply(send, 200, b"slept")
    elif path == "/gate":  # held until the test creates the file named by ?f= (at most 30 s)
        deadline = time.monotonic() + 30
        while not os.path.exists(query["f"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await _reply(send, 200, b"opened")
    elif path == "/spin":
        end = time.time() + float(query.get("s", "30"))
        while time.time() < end:  # blocks the loop, as a CPU-bound view would
            pass
        await _reply(send, 200, b"spun")
    elif path == "/crash-late":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("late boom")
    elif path == "/two-lengths":  # the codec, not the adapter, refuses this head
        await _reply(send, 200, b"12345", headers=[(b"content-length", b"6")])
    elif path in ("/error", "/crash"):
        raise RuntimeError("boom from the ASGI app")
    elif path == "/badheader":
        await _reply(send, 200, b"never", headers=[(b"x-bad", b"a\r\nInjected: yes")])
    elif path == "/lifespan":
        reply = {"state": scope.get("state", {}).get("started", False), "started_at": STARTED_AT,
                 "now": time.time()}
        await _reply(send, 200, json.dumps(reply).encode(), b"application/json")
    else:
        await _reply(send, 404, b"not found")


async def no_lifespan(scope, receive, send):
    """An app that knows only HTTP, as many do: lifespan must not cost it the worker."""
    assert scope["type"] == "http", f"unsupported scope {scope['type']}"
    await _reply(send, 200, b"plain")


async def failing_startup(scope, receive, send):
    """An app whose startup fails: the worker must not serve, and the master must not respawn it forever."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await _reply(send, 200, b"never")
