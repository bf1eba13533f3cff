"""An app written for uWSGI: `import uwsgi` and uwsgidecorators, run unchanged by zergserve."""

import json
import os
import time

import uwsgi
from uwsgidecorators import lock, postfork  # uWSGI's own if installed, else zergserve's

FORKED = {}


@postfork
def remember_fork():
    FORKED["wid"] = uwsgi.worker_id()
    FORKED["pid"] = os.getpid()
    if os.environ.get("UWSGI_API_OUT"):
        with open(os.environ["UWSGI_API_OUT"], "a") as fh:
            fh.write(f"{uwsgi.worker_id()} {os.getpid()}\n")


def _at_exit():
    if os.environ.get("UWSGI_API_OUT"):
        with open(os.environ["UWSGI_API_OUT"], "a") as fh:
            fh.write(f"atexit {uwsgi.worker_id()} {os.getpid()}\n")


uwsgi.atexit = _at_exit


@lock
def locked(path):
    with open(path, "a") as fh:
        fh.write(f"begin {os.getpid()}\n")
    time.sleep(0.2)
    with open(path, "a") as fh:
        fh.write(f"end {os.getpid()}\n")


def _opt(name):
    value = uwsgi.opt.get(name)
    return value.decode() if isinstance(value, bytes) else value


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/info":
        body = {"worker_id": uwsgi.worker_id(), "numproc": uwsgi.numproc, "masterpid": uwsgi.masterpid(),
                "pid": os.getpid(), "forked": FORKED, "processes": _opt("processes"),
                "custom": _opt("myapp-setting"), "enable_threads": _opt("enable-threads"),
                "version": uwsgi.version.decode(), "mem": list(uwsgi.mem())}
    elif path == "/reload":
        body = {"reload": uwsgi.reload()}
    elif path == "/procname":
        uwsgi.setprocname("uwsgi-app-title")
        with open("/proc/self/cmdline", "rb") as fh:
            body = {"title": fh.read().split(b"\0")[0].decode()}
    elif path == "/lock":
        locked(environ["QUERY_STRING"])
        body = {"pid": os.getpid()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
