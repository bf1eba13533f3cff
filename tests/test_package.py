"""The released artefacts: the wheel and sdist pass `twine check`, install in a clean venv (the wheel,
built with the C accelerator and the mypyc-compiled request path, on this Python; the sdist, which
compiles them, on every supported Python found on this machine), and the installed `zergserve`
command serves a request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, http_request, wait_for

SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]
APP = "def application(environ, start_response):\n" \
      "    start_response('200 OK', [('Content-Type', 'text/plain')])\n" \
      "    return [b'installed']\n"


def _interpreter(version: str) -> str | None:
    """A working `pythonX.Y`: pyenv's build of it, else one on PATH (a pyenv shim may not run)."""
    candidates = [str(path / "bin" / f"python{version}")
                  for path in sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*"), reverse=True)]
    candidates.append(shutil.which(f"python{version}") or "")
    for binary in filter(None, candidates):
        if Path(binary).exists() and subprocess.run([binary, "-c", "import venv"], capture_output=True).returncode == 0:
            return binary
    return None


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=240)
    return out


@pytest.mark.timeout(300)
def test_twine_check_passes(dist: Path) -> None:
    artefacts = sorted(str(path) for path in dist.iterdir())
    assert any(name.endswith(".whl") for name in artefacts) and any(name.endswith(".tar.gz") for name in artefacts)
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *artefacts],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version,kind", [(f"{sys.version_info.major}.{sys.version_info.minor}", "whl")]
                         + [(version, "tar.gz") for version in SUPPORTED])
def test_installs_and_serves(dist: Path, version: str, kind: str, tmp_path: Path) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    # Clean: no PYTHONPATH, else a source tree on it (with the egg-info a build leaves) reads as
    # zergserve already installed and pip skips the artefact.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    venv = tmp_path / "venv"
    # No pip in the venv (ensurepip takes seconds): this pip installs into it with --python.
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120, env=env)
    artefact = next(dist.glob(f"*.{kind}"))
    # mypyc compiles the request path into the wheel, and from the sdist on this Python; on the
    # others the sdist installs without it (ZERGSERVE_MYPYC=0), a minute of compiling less each.
    mypyc = version == f"{sys.version_info.major}.{sys.version_info.minor}"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "-q", str(artefact)], capture_output=True, text=True, timeout=240,
                             env={**env, "ZERGSERVE_MYPYC": "1" if mypyc else "0"})
    assert install.returncode == 0, install.stdout + install.stderr
    if shutil.which("gcc"):  # the optional extensions are built wherever a compiler is
        code = ("from zergserve import compiled; from zergserve.protocols import http, uwsgi; "
                "print(uwsgi.ACCELERATED, http.ACCELERATED, compiled.ACTIVE)")
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "ZERGSERVE_PURE_PYTHON")}
        check = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path, env=env)
        assert check.stdout.strip() == f"True True {mypyc}", check.stdout + check.stderr
    (tmp_path / "hello.py").write_text(APP)
    sock = str(tmp_path / "http.sock")
    proc = subprocess.Popen([str(venv / "bin" / "zergserve"), "--wsgi-file", "hello.py", "--http", sock],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        status, _, body = wait_for(lambda: http_request(sock), timeout=30, message="the installed zergserve")
        assert (status, body) == (200, b"installed")
    finally:
        proc.kill()
        proc.wait(10)
