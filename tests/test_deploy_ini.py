"""A uWSGI-style ini using home, uid/gid, chown-socket, chmod-socket and touch-reload runs unchanged,
and each option visibly takes effect (root only: it drops to an unprivileged user)."""

from __future__ import annotations

import grp
import os
import stat
import subprocess

import pytest

from conftest import wait_for
from test_privileges import env_for, has_group, whoami
from test_tyrant import users, vassal_python  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uid/gid and chown-socket need root")

INI = """\
[uwsgi]
home = %d{venv}
uid = {user}
gid = {user}
chown-socket = {user}:{group}
chmod-socket = 660
http-socket = %drun/app.sock
module = whoami:application
master = true
processes = 2
touch-reload = %dreload.trigger
"""


def test_uwsgi_deployment_ini_runs_unchanged(spawn, workdir, users, vassal_python):
    python, site = vassal_python
    user = users[0]
    group = "www-data" if has_group("www-data") else "nogroup"
    workdir.chmod(0o755)
    (workdir / "run").mkdir(mode=0o711)  # only root can bind here: the socket comes before the drop
    venv = "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(workdir / venv)], check=True, timeout=60)
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    package = workdir / venv / "lib" / f"python{version}" / "site-packages" / "venvpkg"
    package.mkdir()
    (package / "__init__.py").write_text("WHERE = 'venv'\n")
    trigger = workdir / "reload.trigger"
    trigger.touch()
    ini = workdir / "app.ini"
    ini.write_text(INI.format(venv=venv, user=user.pw_name, group=group))
    sock = str(workdir / "run" / "app.sock")
    server = spawn(str(ini), python=python, wait=sock,
                   env=env_for(site))
    server.wait_log(" worker(s)")

    def effects() -> dict:
        doc = whoami(sock)
        assert doc["venvpkg"] == "venv" and doc["virtual_env"] == str(workdir / venv)  # home
        assert (doc["uid"], doc["gid"], doc["loaded_as"]) == (user.pw_uid, user.pw_gid,
                                                              [user.pw_uid, user.pw_gid])  # uid, gid
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid) == (user.pw_uid, grp.getgrnam(group).gr_gid)  # chown-socket
        assert stat.S_IMODE(st.st_mode) == 0o660  # chmod-socket
        return doc

    effects()
    old = set(wait_for(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), message="2 workers"))
    st = trigger.stat()
    os.utime(trigger, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    server.wait_log("touch-reload: ")  # touch-reload
    server.wait_log("re-executing the master")
    wait_for(lambda: old.isdisjoint(server.worker_pids()) and len(server.worker_pids()) == 2,
             message="new workers after touch-reload")
    effects()  # and all of it again after the reload
    server.signal(15)
    assert server.wait_exit() == 0

