"""An app that answers with the names of the modules its worker process has loaded, one per line."""

import sys


def application(environ, start_response):
    body = "\n".join(sorted(sys.modules)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
