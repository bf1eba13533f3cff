"""--uid, --gid, --umask, --chown-socket: dropped after the sockets are bound and before the app loads,
for the master and its workers; emperor vassals that drop to their own users; tyrant mode's rules.

The root-only tests run the server with a Python the unprivileged users can execute (test_tyrant's
`vassal_python`: the test interpreter usually lives under /root, mode 0700)."""

from __future__ import annotations

import grp
import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import APPS, ROOT, http_request, wait_for
from test_tyrant import users, vassal_python  # noqa: F401 - fixtures

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def whoami(addr: str) -> dict:
    status, _, body = http_request(addr, "GET", "/")
    assert status == 200, body
    return json.loads(body)


def ids(pid: int) -> tuple[list[str], list[str]]:
    """(Uid, Gid) fields of /proc/PID/status: real, effective, saved, filesystem."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return fields["Uid"].split(), fields["Gid"].split()


def env_for(site: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS), site])}


@pytest.fixture
def private_run(workdir):
    """workdir readable by all (the dropped app reads it), and a run dir only root may write: a
    socket appears there only if it was bound before the drop."""
    workdir.chmod(0o755)
    run = workdir / "run"
    run.mkdir(mode=0o711)
    return run


@root_only
def test_drop_after_bind_before_load_for_master_and_workers(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    user = users[0]
    nginx_gid = grp.getgrnam("www-data").gr_gid if has_group("www-data") else 65534
    sock = str(private_run / "app.sock")
    server = spawn("--module", "whoami:application", "--http", sock, "-p", "2", "--uid", user.pw_name,
                   "--gid", str(user.pw_gid), "--chown-socket", f"{user.pw_name}:{nginx_gid}", "--chmod-socket=660",
                   "--umask", "027", python=python, env=env_for(site), wait=sock)
    st = os.stat(sock)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, nginx_gid, 0o660)
    doc = whoami(sock)
    assert (doc["uid"], doc["gid"]) == (user.pw_uid, user.pw_gid)
    assert doc["loaded_as"] == [user.pw_uid, user.pw_gid]  # the app was imported after the drop
    assert doc["groups"] == sorted(set(os.getgrouplist(user.pw_name, user.pw_gid)))  # initgroups
    assert doc["umask"] == 0o027
    for pid in [server.pid, *server.worker_pids()]:
        assert ids(pid) == ([str(user.pw_uid)] * 4, [str(user.pw_gid)] * 4), pid
    assert "running as root" not in server.log()
    # the checked graceful reload still works as the unprivileged master (same socket, same owner)
    old = set(server.worker_pids())
    server.signal(signal.SIGHUP)
    server.wait_log("re-executing the master")
    wait_for(lambda: old.isdisjoint(server.worker_pids()) and len(server.worker_pids()) == 2,
             message="new workers after the reload")
    assert whoami(sock)["uid"] == user.pw_uid and os.stat(sock).st_uid == user.pw_uid


@root_only
def test_uid_alone_takes_the_users_primary_group(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    sock = str(private_run / "app.sock")
    spawn("--module", "whoami:application", "--http", sock, "--uid", str(users[1].pw_uid), python=python,
          env=env_for(site), wait=sock)
    doc = whoami(sock)
    assert (doc["uid"], doc["gid"]) == (users[1].pw_uid, users[1].pw_gid)


@root_only
def test_root_workers_get_a_warning(spawn, workdir):
    sock = str(workdir / "app.sock")
    server = spawn("--module", "whoami:application", "--http", sock, wait=sock)
    server.wait_log("running as root")


@root_only
def test_not_root_cannot_switch_to_another_user(workdir, users, vassal_python):
    python, site = vassal_python
    workdir.chmod(0o755)
    other = users[1]
    proc = subprocess.run([python, "-m", "zergserve", "--module", "whoami:application", "--http",
                           str(workdir / "app.sock"), "--uid", other.pw_name], user=users[0].pw_uid,
                          group=users[0].pw_gid, extra_groups=[], env=env_for(site), cwd=workdir,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot switch to uid {other.pw_uid}: running as uid {users[0].pw_uid}, not root" in proc.stderr


def test_unknown_user_or_group_is_a_clear_error(spawn, workdir):
    for option, value, message in (("--uid", "no-such-user-zs", "no such user 'no-such-user-zs'"),
                                   ("--gid", "no-such-group-zs", "no such group 'no-such-group-zs'"),
                                   ("--chown-socket", "root:no-such-group-zs", "no such group")):
        server = spawn("--module", "whoami:application", "--http", str(workdir / "app.sock"), option, value)
        assert server.wait_exit() == 2
        assert message in server.log()


def test_umask_applies_to_what_is_created(spawn, workdir):
    sock = str(workdir / "app.sock")
    pidfile = workdir / "app.pid"
    spawn("--module", "whoami:application", "--http", sock, "--umask", "077", "--pidfile", str(pidfile), wait=sock)
    wait_for(pidfile.exists, message="pidfile")
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o600
    assert whoami(sock)["umask"] == 0o077


@root_only
def test_emperor_as_root_runs_each_vassal_as_its_uid(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    vassals = workdir / "vassals"
    vassals.mkdir()
    for index, user in enumerate(users):
        (vassals / f"app{index}.ini").write_text(
            f"[uwsgi]\nmodule = whoami:application\nhttp = {private_run}/app{index}.sock\n"
            f"uid = {user.pw_name}\ngid = {user.pw_gid}\nchown-socket = {user.pw_name}\n")
    spawn("--emperor", str(vassals), "--emperor-freq", "1", python=python, env=env_for(site))
    for index, user in enumerate(users):
        sock = f"{private_run}/app{index}.sock"
        doc = wait_for(lambda: os.path.exists(sock) and _try(whoami, sock), timeout=20,
                       message=f"vassal app{index}")
        assert (doc["uid"], doc["gid"], doc["loaded_as"]) == (user.pw_uid, user.pw_gid, [user.pw_uid, user.pw_gid])
        assert os.stat(sock).st_uid == user.pw_uid
        assert ids(doc["pid"])[0] == [str(user.pw_uid)] * 4


@root_only
def test_tyrant_vassal_may_only_name_its_owner(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    private_run.chmod(0o777)  # tyrant vassals bind as their owners
    vassals = workdir / "vassals"
    vassals.mkdir()
    vassals.chmod(0o755)
    owner, other = users
    files = {"own.ini": owner.pw_name, "other.ini": other.pw_name}
    for name, uid in files.items():
        path = vassals / name
        path.write_text(f"[uwsgi]\nmodule = whoami:application\nhttp = {private_run}/{name}.sock\nuid = {uid}\n")
        os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o644)
    emperor = spawn("--emperor", str(vassals), "--emperor-tyrant", "--emperor-freq", "1", python=python,
                    env=env_for(site))
    sock = f"{private_run}/own.ini.sock"
    doc = wait_for(lambda: os.path.exists(sock) and _try(whoami, sock), timeout=20, message="own vassal")
    assert doc["uid"] == owner.pw_uid
    emperor.wait_log("vassal other.ini spawned")
    refused = f"cannot switch to uid {other.pw_uid}: running as uid {owner.pw_uid}, not root"
    vassal_log = vassals / "other.ini.log"  # a tyrant vassal's output goes to a file of its owner
    wait_for(lambda: refused in (vassal_log.read_text() if vassal_log.exists() else ""), message=refused)


def _try(func, *args):
    try:
        return func(*args)
    except OSError:
        return None


def has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_tyrant_emperor_refuses_a_uid_of_its_own(spawn, workdir):
    (workdir / "vassals").mkdir()
    server = spawn("--emperor", str(workdir / "vassals"), "--emperor-tyrant", "--uid", "nobody")
    assert server.wait_exit() == 2
    assert "give --uid/--gid to the vassals, not to the emperor" in server.log()


@root_only
def test_emperor_with_uid_drops_itself_and_its_vassals_follow(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    user = users[0]
    private_run.chmod(0o777)  # the vassal binds as the emperor's user
    vassals = workdir / "vassals"
    vassals.mkdir()
    (vassals / "app.ini").write_text(f"[uwsgi]\nmodule = whoami:application\nhttp = {private_run}/app.sock\n")
    emperor = spawn("--emperor", str(vassals), "--emperor-freq", "1", "--uid", user.pw_name, python=python,
                    env=env_for(site))
    sock = f"{private_run}/app.sock"
    doc = wait_for(lambda: os.path.exists(sock) and _try(whoami, sock), timeout=20, message="vassal")
    assert (doc["uid"], doc["gid"]) == (user.pw_uid, user.pw_gid)
    assert ids(emperor.pid) == ([str(user.pw_uid)] * 4, [str(user.pw_gid)] * 4)


@root_only
def test_zergpool_binds_chowns_then_drops(spawn, workdir, users, vassal_python, private_run):
    python, site = vassal_python
    user = users[0]
    pool_dir = workdir / "pool"
    pool_dir.mkdir()
    os.chown(pool_dir, user.pw_uid, user.pw_gid)  # the pool's zerg server is made after the drop
    sock = f"{private_run}/app.sock"
    pool = spawn("--zergpool", f"{pool_dir}/pool.zerg:{sock}", "--zergpool-protocol", "http",
                 "--chown-socket", user.pw_name, "--uid",
                 user.pw_name, python=python, env=env_for(site))
    wait_for(lambda: os.path.exists(f"{pool_dir}/pool.zerg"), message="zerg server socket")
    assert os.stat(sock).st_uid == user.pw_uid
    assert os.stat(f"{pool_dir}/pool.zerg").st_uid == user.pw_uid
    assert ids(pool.pid)[0] == [str(user.pw_uid)] * 4
    # a zerg that drops to the same user trusts the pool's server, attaches and serves its socket
    spawn("--module", "whoami:application", "--zerg", f"{pool_dir}/pool.zerg", "--uid", user.pw_name,
          python=python, env=env_for(site))
    doc = wait_for(lambda: _try(whoami, sock), timeout=20, message="zerg serving the pool's socket")
    assert doc["uid"] == user.pw_uid
