"""An app whose requests take a while (WORK_MS, default 30 ms, as if waiting on a database), so that
a little load fills the listen queue: the broodlord demo and load test use it."""

import os
import time

WORK = float(os.environ.get("WORK_MS", "30")) / 1000


def application(environ, start_response):
    time.sleep(WORK)
    body = f"served by pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
