"""The request path compiled by mypyc and its pure-Python source behave alike: the codecs', the
exchange's and the WSGI adapter's own suites pass on the source too; a process chooses one build
for the whole group (ZERGSERVE_PURE_PYTHON=1, or a source edited since the build); the master says
which build runs. The suite itself, and every server it starts, runs the compiled build when there
is one (CI's `pip install -e .` compiles it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, start
from zergserve import compiled

needs_build = pytest.mark.skipif(not compiled._built(), reason="the request path is not compiled (no mypyc at install)")
# The in-process suites of the compiled modules: codecs, exchange, WSGI adapter, scoreboard (about 30 s).
UNIT_SUITES = ["tests/test_http_codec.py", "tests/test_http_speedups.py", "tests/test_uwsgi_codec.py",
               "tests/test_uwsgi_speedups.py", "tests/test_exchange.py", "tests/test_wsgi.py",
               "tests/test_scoreboard.py"]
STATUS = "from zergserve import compiled, exchange; print(compiled.STATUS); print(exchange.__file__)"


def _status(root: Path, **env: str) -> tuple[str, str]:
    """(compiled.STATUS, the exchange module's file) in a fresh interpreter importing from `root`."""
    environment = {key: value for key, value in os.environ.items() if key != "ZERGSERVE_PURE_PYTHON"}
    result = subprocess.run([sys.executable, "-c", STATUS], env={**environment, "PYTHONPATH": str(root), **env},
                            capture_output=True, text=True, timeout=60, check=True, cwd="/")
    status, module = result.stdout.splitlines()
    return status, module


@needs_build
def test_the_tests_run_compiled() -> None:
    from zergserve import exchange

    assert compiled.ACTIVE and compiled.STATUS == "compiled (mypyc)"
    assert not exchange.__file__.endswith(".py"), exchange.__file__


@needs_build
def test_pure_python_env_runs_every_module_from_source() -> None:
    status, module = _status(ROOT, ZERGSERVE_PURE_PYTHON="1")
    assert status == "pure Python (ZERGSERVE_PURE_PYTHON is set)" and module == str(ROOT / "zergserve" / "exchange.py")
    assert _status(ROOT, ZERGSERVE_PURE_PYTHON="0")[0] == "compiled (mypyc)"


@needs_build
def test_a_source_edited_after_the_build_runs_from_source(tmp_path: Path) -> None:
    """In a source checkout: a stale build would run old code for the edited file."""
    shutil.copytree(ROOT / "zergserve", tmp_path / "zergserve", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "setup.py").write_text("")  # what makes it a source checkout
    assert _status(tmp_path) == ("compiled (mypyc)", str(next((tmp_path / "zergserve").glob("exchange.*.so"))))
    source = tmp_path / "zergserve" / "wsgi.py"
    later = max(os.stat(library).st_mtime for library in (tmp_path / "zergserve").glob("*__mypyc*.so")) + 10
    os.utime(source, (later, later))
    status, module = _status(tmp_path)
    assert module == str(tmp_path / "zergserve" / "exchange.py")  # every compiled module, not just wsgi
    assert status == "pure Python (zergserve.wsgi changed since the build: `pip install -e .` compiles them again)"
    package = tmp_path / "zergserve"
    wsgi_path, asgi_path = (next(package.glob(f"_{name}_path__mypyc*.so")) for name in ("wsgi", "asgi"))
    for path, at in ((asgi_path, later), (source, later + 5), (wsgi_path, later + 10)):
        os.utime(path, (at, at))  # only the WSGI group built again after the edit: each group by its own build
    assert _status(tmp_path)[0] == "compiled (mypyc)"
    os.utime(source, (later + 20, later + 20))
    (tmp_path / "setup.py").unlink()  # an installed package: its file times say nothing
    assert _status(tmp_path)[0] == "compiled (mypyc)"


@needs_build
@pytest.mark.timeout(300)
def test_the_unit_suites_pass_on_the_source() -> None:
    env = {**os.environ, "ZERGSERVE_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             *UNIT_SUITES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]  # (the C accelerator's own tests skip: it is off too)


def test_the_master_says_which_build_runs(spawn, workdir) -> None:
    server = start(spawn, workdir, workers=1, stats=False)
    server.wait_log(f"worker(s), request path {compiled.STATUS}")
