"""An app whose memory grows on request: /grow?mb=N keeps N more megabytes (touched, so resident);
with &wait=FILE the request then writes its pid to FILE.held and holds until FILE exists (at most
30 s), as a long request would."""

import os
import time
from urllib.parse import parse_qs

KEPT = []


def application(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/grow":
        KEPT.append(b"x" * (int(query.get("mb", "0")) * 1024 * 1024))
        if "wait" in query:
            with open(query["wait"] + ".held", "w") as fh:
                fh.write(str(os.getpid()))
            deadline = time.monotonic() + 30
            while not os.path.exists(query["wait"]) and time.monotonic() < deadline:
                time.sleep(0.01)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
