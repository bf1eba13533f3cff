"""An app whose requests take a known while: WORK_MS of waiting (as on a database, default 30 ms) and
CPU_MS of computing (default 0), so that a little load fills the listen queue: the broodlord demo and
the load test use it."""

import os
import time

WORK = float(os.environ.get("WORK_MS", "30")) / 1000
CPU = float(os.environ.get("CPU_MS", "0")) / 1000


def application(environ, start_response):
    if CPU:
        until = time.thread_time() + CPU
        while time.thread_time() < until:
            pass
    time.sleep(WORK)
    body = f"served by pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
