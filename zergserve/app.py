"""Loading the application: 'pkg.mod:callable', --wsgi-file, --chdir, --pythonpath, --home."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Any, Callable

_CO_VARARGS = 0x04  # inspect's code flags, read here without importing inspect into every worker
_CO_COROUTINE = 0x80


class AppLoadError(Exception):
    """The application could not be found, imported or is not callable."""


_layers: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = []


def add_layer(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Have every app load() returns from now on wrapped by `wrap` (the static files). Set by the cli
    before the master forks, so a preloaded, a lazy (--lazy-apps) and a reloaded app get it alike."""
    _layers.append(wrap)


def prepare(chdir: str | None, pythonpath: list[str], env: list[str], home: str | None = None) -> None:
    """Process-wide setup that must happen before the import: cwd, environment, sys.path (--pythonpath,
    then the virtualenv's site-packages, then the rest)."""
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise AppLoadError(f"chdir {chdir}: {exc.strerror}") from None
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AppLoadError(f"env {item!r}: expected KEY=VALUE")
        os.environ[key] = value
    if home:
        from zergserve import virtualenv
        try:
            virtualenv.activate(home)
        except virtualenv.VirtualenvError as exc:
            raise AppLoadError(str(exc)) from None
    for path in reversed(pythonpath):
        sys.path.insert(0, os.path.abspath(path))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def load(module: str | None, wsgi_file: str | None, callable_name: str = "application",
         serves: str | None = None, worker: str = "") -> Callable[..., Any]:
    """Import the app object; every failure becomes an AppLoadError with a message a user can act on.
    With `serves` ('wsgi' or 'asgi', what the `worker` class calls), an app that is clearly of the
    other kind is refused here, at start, rather than answering 500 to every request."""
    if module and wsgi_file:
        raise AppLoadError("give either --module or --wsgi-file, not both")
    if module:
        modname, _, attr = module.partition(":")
        attr = attr or callable_name
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and modname.startswith(exc.name):
                raise AppLoadError(f"module {modname!r} not found (sys.path[0] is {sys.path[0]!r})") from exc
            raise AppLoadError(f"importing {modname!r} failed: {exc!r}") from exc
        except Exception as exc:
            raise AppLoadError(f"importing {modname!r} failed: {exc!r}") from exc
        where = f"module {modname!r}"
    elif wsgi_file:
        attr = callable_name
        mod = _load_file(wsgi_file)
        where = f"file {wsgi_file!r}"
    else:
        raise AppLoadError("no application: use --module pkg.mod:callable or --wsgi-file FILE")
    try:
        app = _resolve(mod, attr)
    except AttributeError:
        raise AppLoadError(f"{where} has no callable {attr!r}") from None
    if not callable(app):
        raise AppLoadError(f"{attr!r} in {where} is not callable")
    found = interface(app)
    if serves and found and found != serves:
        raise AppLoadError(_MISMATCH[found].format(app=f"{attr!r} in {where}", worker=worker))
    for wrap in _layers:
        app = wrap(app)
    return app


_MISMATCH = {
    "asgi": "{app} is an ASGI app (async, called with scope, receive, send); the {worker} worker serves "
            "WSGI apps: use --worker asyncio",
    "wsgi": "{app} is a WSGI app (called with environ, start_response); the {worker} worker serves ASGI "
            "apps: use --worker sync or --worker gevent",
}


def interface(app: Any) -> str | None:
    """'asgi', 'wsgi', or None when it cannot be told, by uvicorn's and asgiref's tests: a coroutine
    function, or an object whose __call__ is one, is ASGI (as are asgiref's `_asgi_*_callable`
    hints); else the required positional parameters decide: (scope, receive, send) is ASGI,
    (environ, start_response) WSGI. A class is called as its __init__ (a WSGI app may be a class)."""
    if getattr(app, "_asgi_single_callable", False) or getattr(app, "_asgi_double_callable", False):
        return "asgi"
    bound = 0
    while isinstance(app, functools.partial):
        bound += len(app.args)
        app = app.func
    if isinstance(app, types.MethodType):
        bound, app = bound + 1, app.__func__
    elif isinstance(app, type):
        bound, app = bound + 1, getattr(app, "__init__")  # the function, whatever its signature
    elif not isinstance(app, types.FunctionType):
        bound, app = bound + 1, getattr(type(app), "__call__", None)
    code = getattr(app, "__code__", None)
    if code is None:
        return None
    if code.co_flags & _CO_COROUTINE:
        return "asgi"
    if code.co_flags & _CO_VARARGS:
        wrapped = getattr(app, "__wrapped__", None)  # a decorator's (*args, **kwargs) wrapper
        return interface(wrapped) if wrapped is not None else None
    required = code.co_argcount - len(getattr(app, "__defaults__", None) or ()) - bound
    return {2: "wsgi", 3: "asgi"}.get(required)


def _load_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise AppLoadError(f"wsgi-file {path!r} not found")
    name = "zergserve_wsgi_file_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"wsgi-file {path!r} cannot be imported")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise AppLoadError(f"executing {path!r} failed: {exc!r}") from exc
    return mod


def _resolve(mod: Any, attr: str) -> Any:
    obj = mod
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
