"""--home / --virtualenv / --venv / -H with a real `python -m venv` holding a small package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from test_privileges import whoami

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"


def make_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    site = where / "lib" / f"python{RUNNING}" / "site-packages"
    (site / "venvpkg").mkdir()
    (site / "venvpkg" / "__init__.py").write_text("WHERE = 'venv'\n")
    return site


def test_app_runs_in_the_virtualenv(spawn, workdir):
    venv = workdir / "venv"
    site = make_venv(venv)
    for spelling in ("--home", "-H", "--virtualenv", "--venv"):
        sock = str(workdir / f"app{spelling}.sock")
        server = spawn("--module", "whoami:application", "--http", sock, spelling, str(venv), "--lazy-apps",
                       "-p", "1", wait=sock)
        doc = whoami(sock)
        assert doc["venvpkg"] == "venv", spelling
        assert doc["virtual_env"] == str(venv)
        assert doc["prefix"] == str(venv)
        system_site = sysconfig.get_paths()["purelib"]
        path = doc["sys_path"]
        assert path.index(str(site)) < min(i for i, p in enumerate(path) if p.startswith(sys.base_prefix))
        assert system_site not in path or path.index(str(site)) < path.index(system_site)
        server.kill()


def test_without_home_the_package_is_not_there(spawn, workdir):
    make_venv(workdir / "venv")
    sock = str(workdir / "app.sock")
    spawn("--module", "whoami:application", "--http", sock, wait=sock)
    doc = whoami(sock)
    assert doc["venvpkg"] is None and doc["virtual_env"] is None


def test_venv_of_another_python_is_refused_naming_both(spawn, workdir):
    other = "3.7" if RUNNING != "3.7" else "3.8"
    venv = workdir / "old"
    (venv / "lib" / f"python{other}" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {other}.9\n")
    ini = workdir / "app.ini"
    ini.write_text(f"[uwsgi]\nvenv = {venv}\nmodule = whoami:application\nhttp = {workdir / 'app.sock'}\n")
    server = spawn(str(ini))
    assert server.wait_exit() == 4
    log = server.log()
    assert f"made by Python {other}" in log and f"runs on Python {RUNNING}" in log, log


def test_a_directory_that_is_no_virtualenv_is_refused(spawn, workdir):
    (workdir / "empty").mkdir()
    server = spawn("--module", "whoami:application", "--http", str(workdir / "app.sock"), "--home",
                   str(workdir / "empty"))
    assert server.wait_exit() == 4
    assert "is it a virtualenv?" in server.log()
