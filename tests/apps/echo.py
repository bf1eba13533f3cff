"""The test suite's app: each path exercises one part of the WSGI contract."""

import json
import os
import sys
import tempfile
import time
from urllib.parse import parse_qs


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _wait_for_file(path, seconds=30, sleep=time.sleep):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        sleep(0.01)


def _unpatched_sleep(seconds):
    """time.sleep as it was before gevent's patch: a wait that holds the whole gevent worker, as a
    database driver's blocking call does."""
    if "gevent" in sys.modules:
        from gevent.monkey import get_original
        return get_original("time", "sleep")(seconds)
    return time.sleep(seconds)


class _HeldClose:
    """A whole response whose close() waits for the test's file (as a framework's close() may
    wait on its database): the client must have it meanwhile."""

    def __init__(self, gate, blocking):
        self.gate = gate
        self.sleep = _unpatched_sleep if blocking else time.sleep

    def __iter__(self):
        yield b"done"

    def close(self):
        _wait_for_file(self.gate, sleep=self.sleep)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _json(start_response, {
            "method": environ["REQUEST_METHOD"],
            "body": body.decode("latin-1"),
            "length": len(body),
            "pid": os.getpid(),
            "content_length": environ.get("CONTENT_LENGTH"),
            "content_type": environ.get("CONTENT_TYPE"),
        })
    if path == "/bodycheck":  # says on stderr whether the body came whole or the read raised
        try:
            body = environ["wsgi.input"].read()
        except Exception as exc:
            print(f"BODYCHECK raised {type(exc).__name__}", file=sys.stderr, flush=True)
            raise
        print(f"BODYCHECK complete {len(body)}", file=sys.stderr, flush=True)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got %d" % len(body)]
    if path == "/lines":
        stream = environ["wsgi.input"]
        lines = [line.decode("latin-1") for line in stream]
        return _json(start_response, {"lines": lines})
    if path == "/osenv":  # the process environment the app runs in
        return _json(start_response, sorted(os.environ))
    if path == "/env":
        return _json(start_response, {k: v for k, v in environ.items() if isinstance(v, str)})
    if path == "/sleep":
        time.sleep(float(query.get("s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/gate":  # held until the test creates the file named by ?f= (at most 30 s)
        _wait_for_file(query["f"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/held-close":  # the response whole, then close() held until ?f= exists (&block=1: the whole process)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return _HeldClose(query["f"], query.get("block") == "1")
    if path == "/stacksize":
        import threading
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(threading.stack_size()).encode()]
    if path == "/crash":
        raise RuntimeError("boom from the test app")
    if path == "/crash-late":
        def gen():
            yield b"partial"
            raise RuntimeError("late boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/two-lengths":  # the codec, not the adapter, refuses this head
        start_response("200 OK", [("Content-Length", "5"), ("Content-Length", "6")])
        return [b"12345"]
    if path == "/exit":
        os._exit(17)
    if path == "/chunks":
        def gen():
            for i in range(int(query.get("n", "3"))):
                yield b"chunk%d;" % i
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"via-write;")
        return [b"via-iter"]
    if path == "/badheader":
        kind = query.get("kind", "crlf")
        value = {"crlf": "a\r\nSet-Cookie: p=1", "lf": "a\nb", "nul": "a\x00b"}.get(kind, "ok")
        name = {"space": "X Y", "colon": "X:Y"}.get(kind, "X-Test")
        start_response("200 OK", [(name, value)])
        return [b"should not be sent"]
    if path == "/badstatus":
        start_response("2000 Nope", [])
        return [b"x"]
    if path == "/cl-short":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345", b""]
    if path == "/cl-long":
        start_response("200 OK", [("Content-Length", "5")])
        return [b"1234567890", b"abc"]
    if path == "/file":
        size = int(query.get("size", "100000"))
        fh = tempfile.TemporaryFile()
        fh.write(b"x" * size)
        fh.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](fh)
    if path == "/big":
        size = int(query.get("size", "1000000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"y" * size]
    if path == "/status":
        start_response(query.get("code", "204") + " Whatever", [])
        return []
    if path == "/stderr":
        print("app says hello on stderr", file=sys.stderr, flush=True)
        start_response("200 OK", [])
        return [b"ok"]
    if path == "/os-exit":
        os._exit(int(query.get("code", "3")))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
