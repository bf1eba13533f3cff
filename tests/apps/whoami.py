"""Says who and where it runs: identity, umask, virtualenv, and the identity it was imported as."""

import json
import os
import sys

LOADED_AS = (os.getuid(), os.getgid())

try:
    import venvpkg  # only importable from the test's virtualenv
    VENVPKG = venvpkg.WHERE
except ImportError:
    VENVPKG = None


def application(environ, start_response):
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps({
        "pid": os.getpid(),
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "loaded_as": LOADED_AS, "umask": umask,
        "virtual_env": os.environ.get("VIRTUAL_ENV"), "venvpkg": VENVPKG,
        "sys_path": sys.path, "prefix": sys.prefix,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
