"""Interface checks at start (a WSGI app under the asyncio worker, an ASGI app under sync/gevent)
and the ASGI lifespan options and log lines."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import APPS, bound, http_request

from zergserve.app import interface


def _app_module(name: str):
    spec = importlib.util.spec_from_file_location(f"interface_{name}", APPS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interface_detection():
    asgi_app, asgi_lifespan, echo = (_app_module(name) for name in ("asgi_app", "asgi_lifespan", "echo"))

    assert interface(echo.application) == "wsgi"
    assert interface(asgi_app.application) == "asgi"
    assert interface(asgi_lifespan.sync_call) == "asgi"

    class WsgiClass:  # PEP 3333 allows a class: calling it is __init__(environ, start_response)
        def __init__(self, environ, start_response):
            pass

    assert interface(WsgiClass) == "wsgi"
    assert interface(lambda *args, **kwargs: None) is None


@pytest.mark.parametrize("worker,module,advice", [
    ("asyncio", "echo:application", "use --worker sync or --worker gevent"),
    ("sync", "asgi_app:application", "use --worker asyncio"),
    ("gevent", "asgi_app:application", "use --worker asyncio"),
])
@pytest.mark.parametrize("lazy", [False, True], ids=["preload", "lazy-apps"])
def test_wrong_interface_is_refused_at_start(spawn, worker, module, advice, lazy):
    extra = ["--lazy-apps"] if lazy else []
    server = spawn("--module", module, "--worker", worker, "--http", bound().arg, *extra)
    assert server.wait_exit(timeout=15) == 4
    log = server.log()
    assert f"the {worker} worker serves" in log and advice in log
    assert "does not support ASGI lifespan" not in log


def test_starlette_style_startup_failure_logs_only_the_failure(spawn):
    server = spawn("--module", "asgi_lifespan:starlette_failing", "--worker", "asyncio",
                   "--http", bound().arg)
    assert server.wait_exit(timeout=15) == 4
    log = server.log()
    assert "ASGI lifespan startup failed: Traceback" in log
    assert "database at 127.0.0.1:5432 refused the connection" in log
    assert "does not support ASGI lifespan" not in log and "serving without" not in log


def test_lifespan_auto_serves_an_app_without_lifespan(spawn):
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "asgi_lifespan:http_only", "--worker", "asyncio", "--http", listener.arg, wait=addr)
    assert http_request(addr)[2] == b"hello"
    assert "does not support ASGI lifespan (AssertionError: unsupported scope lifespan); serving without it" \
        in server.log()


def test_lifespan_on_fails_an_app_that_raises_on_it(spawn):
    server = spawn("--module", "asgi_lifespan:http_only", "--worker", "asyncio", "--lifespan", "on",
                   "--http", bound().arg)
    assert server.wait_exit(timeout=15) == 4
    assert "the app raised on the lifespan scope (--lifespan on)" in server.log()
    assert "serving without" not in server.log()


def test_lifespan_off_never_sends_the_scope(spawn):
    listener = bound()
    addr = listener.addr
    server = spawn("--module", "asgi_lifespan:starlette_failing", "--worker", "asyncio", "--lifespan", "off",
                   "--http", listener.arg, wait=addr)
    assert http_request(addr)[2] == b"never"
    assert "lifespan" not in server.log()


def test_lifespan_timeout_fails_a_hanging_startup(spawn):
    server = spawn("--module", "asgi_lifespan:hanging_startup", "--worker", "asyncio", "--lifespan-timeout", "1",
                   "--http", bound().arg)
    assert server.wait_exit(timeout=15) == 4
    assert "ASGI lifespan startup failed: not complete after 1s (--lifespan-timeout)" in server.log()
