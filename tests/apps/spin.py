"""An app that can hold a worker's CPU: /spin?s=N loops for N seconds without yielding (no I/O)."""

import os
import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/spin":
        end = time.monotonic() + float(environ.get("QUERY_STRING", "s=30").partition("=")[2] or 30)
        while time.monotonic() < end:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
