"""Tyrant mode with two real unprivileged users (created here with useradd; root only)."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import APPS, ROOT, http_request, wait_for
from test_emperor import Emperor, children

USERS = ("zstyrant1", "zstyrant2")
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="tyrant mode needs root and useradd to create two users")

# A vassal program any user can run: it records who it is, then waits for the emperor to go away.
# The record appears whole (written aside, then renamed): the test reads it as soon as it exists.
PROBE = """#!/bin/sh
record="$PROBE_DIR/$(basename "$2").$(id -u)"
grep -E '^(Uid|Gid|Groups):' /proc/self/status > "$record.tmp" && mv "$record.tmp" "$record"
exec sleep 60
"""


@pytest.fixture(scope="module")
def users():
    made = []
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            if subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name]).returncode:
                pytest.skip(f"useradd {name} failed")
        made.append(pwd.getpwnam(name))
    return made


def probe_program(workdir: Path, script: str = PROBE) -> tuple[Path, Path]:
    """A vassal program any user can run from `workdir`, and the dir any user can write its records to."""
    workdir.chmod(0o755)
    probe_dir = workdir / "probe"
    probe_dir.mkdir(mode=0o777)
    probe_dir.chmod(0o777)
    program = workdir / "probe.sh"
    program.write_text(script)
    program.chmod(0o755)
    return program, probe_dir


def setup(spawn, workdir: Path, *extra: str) -> tuple[Emperor, Path]:
    program, probe_dir = probe_program(workdir)
    emperor = Emperor(spawn, workdir, "--emperor-tyrant", "--binary-path", str(program), *extra,
                      env={"PROBE_DIR": str(probe_dir)})
    emperor.dir.chmod(0o755)
    return emperor, probe_dir


def own(path: Path, user: pwd.struct_passwd, mode: int = 0o644) -> None:
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def status_of(probe: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":")[1].split() for line in probe.read_text().splitlines()}


def test_vassals_run_as_their_owners(spawn, workdir, users):
    emperor, probe_dir = setup(spawn, workdir)
    for index, user in enumerate(users):
        path = emperor.dir / f"v{index}.ini"
        path.write_text("[uwsgi]\n")
        own(path, user)
    for index, user in enumerate(users):
        probe = probe_dir / f"v{index}.ini.{user.pw_uid}"
        wait_for(probe.exists, message=f"vassal v{index} started as {user.pw_name}")
        fields = status_of(probe)
        assert fields["Uid"] == [str(user.pw_uid)] * 4
        assert fields["Gid"] == [str(user.pw_gid)] * 4
        assert fields.get("Groups", []) == []
    vassals = {v["id"]: v for v in emperor.doc()["vassals"]}
    assert vassals["v0.ini"]["uid"] == users[0].pw_uid and emperor.doc()["emperor_tyrant"] == 1


def test_refused_files(spawn, workdir, users):
    emperor, probe_dir = setup(spawn, workdir)
    root_owned = emperor.dir / "root.ini"
    root_owned.write_text("[uwsgi]\n")
    writable = emperor.dir / "writable.ini"
    writable.write_text("[uwsgi]\n")
    own(writable, users[0], 0o666)
    target = emperor.dir / "target.skel"
    target.write_text("[uwsgi]\n")
    own(target, users[0])
    os.symlink("target.skel", emperor.dir / "link.ini")
    hard = workdir / "hard.ini"
    hard.write_text("[uwsgi]\n")
    own(hard, users[0])
    os.link(hard, emperor.dir / "hard.ini")
    for text in ("invalid permissions for vassal", "writable by group or others", "symlinks are refused",
                 "hard links"):
        emperor.server.wait_log(text)
    assert emperor.doc()["vassals"] == []
    assert list(probe_dir.iterdir()) == []


def test_owner_change_respawns_as_the_new_owner(spawn, workdir, users):
    # the probe ignores the stop byte: a short curse tolerance kills it
    emperor, probe_dir = setup(spawn, workdir, "--emperor-curse-tolerance", "1")
    path = emperor.dir / "moving.ini"
    path.write_text("[uwsgi]\n")
    own(path, users[0])
    wait_for((probe_dir / f"moving.ini.{users[0].pw_uid}").exists, message="first owner")
    own(path, users[1])
    wait_for((probe_dir / f"moving.ini.{users[1].pw_uid}").exists, timeout=15, message="respawned as new owner")
    emperor.server.wait_log("permissions of file moving.ini changed")


def test_nofollow_takes_the_links_owner(spawn, workdir, users):
    emperor, probe_dir = setup(spawn, workdir, "--emperor-tyrant-nofollow")
    target = emperor.dir / "app.skel"
    target.write_text("[uwsgi]\n")
    own(target, users[0])
    link = emperor.dir / "app.ini"
    os.symlink("app.skel", link)
    os.chown(link, users[1].pw_uid, users[1].pw_gid, follow_symlinks=False)
    wait_for((probe_dir / f"app.ini.{users[1].pw_uid}").exists, message="vassal as the link's owner")


@pytest.fixture(scope="module")
def vassal_python(users, tmp_path_factory):
    """A zergserve the tyrant users can run: sys.executable if they may exec it, else the system
    Python of the same version with copies of zergserve's dependencies (the test interpreter
    usually lives under /root, mode 0700). Skips when neither works as an unprivileged user."""
    site = Path(tempfile.mkdtemp(prefix="zs-site-", dir="/tmp"))
    site.chmod(0o755)
    for name in ("setproctitle", "h11"):
        package = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(package, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if runs_zergserve(python, users[0], site):
            yield python, str(site)
            shutil.rmtree(site, ignore_errors=True)
            return
        tried.append(python)
    shutil.rmtree(site, ignore_errors=True)
    pytest.skip(f"user {users[0].pw_name} can run zergserve with none of {tried} (not executable or "
                "dependencies missing for that user)")


def runs_zergserve(python: str, user: pwd.struct_passwd, site: Path) -> bool:
    try:
        return subprocess.run([python, "-c", "import zergserve.cli"], user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[], env={"PYTHONPATH": f"{ROOT}:{site}"}, capture_output=True,
                              cwd="/", timeout=30).returncode == 0
    except OSError:  # not executable by that user
        return False


def real_vassals(spawn, workdir: Path, python: tuple[str, str], before_exec: str = "") -> Emperor:
    """An emperor in tyrant mode whose vassals are zergserve itself, run by `python`."""
    workdir.chmod(0o755)
    program = workdir / "zergserve.sh"
    program.write_text(f"#!/bin/sh\n{before_exec}\n"
                       f"PYTHONPATH=\"$PYTHONPATH:{python[1]}\" exec {python[0]} -m zergserve \"$@\"\n")
    program.chmod(0o755)
    emperor = Emperor(spawn, workdir, "--emperor-tyrant", "--binary-path", str(program))
    emperor.dir.chmod(0o755)
    return emperor


def app_config(addr: str) -> str:
    return f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {addr}\n"


def socket_path(workdir: Path, name: str) -> str:
    """Where a vassal run as another user may bind its own UNIX socket (no port number to race for):
    a directory anyone may create in, sticky like /tmp."""
    sockets = workdir / "sockets"
    sockets.mkdir(exist_ok=True)
    sockets.chmod(0o1777)
    return str(sockets / name)


def test_real_zergserve_vassal_runs_as_its_owner(spawn, workdir, users, vassal_python):
    emperor = real_vassals(spawn, workdir, vassal_python)
    addr = socket_path(workdir, "app.sock")
    path = emperor.dir / "app.ini"
    path.write_text(app_config(addr))
    own(path, users[0])
    wait_for(lambda: http_request(addr)[0] == 200, timeout=15, message="the vassal serves")
    master = emperor.vassal("app.ini")["pid"]
    for pid in [master, *children(master)]:
        fields = status_of_pid(pid)
        assert fields["Uid"] == [str(users[0].pw_uid)] * 4 and fields["Gid"] == [str(users[0].pw_gid)] * 4
    fds = [os.readlink(fd) for fd in Path(f"/proc/{master}/fd").iterdir()]
    assert str(path) in fds  # the file the emperor checked, still open: what reloads read


def test_a_config_swapped_after_the_check_is_not_read(spawn, workdir, users, vassal_python):
    """The race of reliability.md §4.2: between the emperor's check and the vassal's read, someone
    who can write the directory replaces the file. Here the vassal's own wrapper does it, right
    before exec: the vassal must still read the file that was checked, as its owner."""
    checked, swapped = socket_path(workdir, "checked.sock"), socket_path(workdir, "swapped.sock")
    vassals = workdir / "vassals"
    vassals.mkdir()
    vassals.chmod(0o777)  # writable by the users: the swap needs it
    swap = vassals / "swap.txt"  # not a vassal name: the emperor ignores it
    swap.write_text(app_config(swapped))
    own(swap, users[1])
    emperor = real_vassals(spawn, workdir, vassal_python, f'[ -e {swap} ] && mv -f {swap} {vassals}/app.ini')
    vassals.chmod(0o777)
    path = vassals / "app.ini.tmp"
    path.write_text(app_config(checked))
    own(path, users[0])
    path.rename(vassals / "app.ini")
    first = int(emperor.server.wait_log("vassal app.ini spawned (pid ").split("vassal app.ini spawned (pid ")[1]
                .split(")")[0])
    own_log = vassals / "app.ini.log"  # a tyrant vassal's lines go to its own log, not the emperor's
    bound = wait_for(lambda: f"[{first}] INFO: http socket" in own_log.read_text() and own_log.read_text(),
                     message="the vassal's socket line")
    assert f"[{first}] INFO: http socket {checked} " in bound
    assert f"[{first}] INFO: http socket {swapped} " not in bound
    # the file now belongs to users[1]: that is who runs it next, from the swapped content
    wait_for(lambda: http_request(swapped)[0] == 200, timeout=15,
             message="respawned from the new file")
    assert emperor.vassal("app.ini")["uid"] == users[1].pw_uid


def status_of_pid(pid: int) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":")[1].split()
            for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(("Uid", "Gid"))}


def test_a_colon_name_never_runs_as_the_owner_of_the_prefix(spawn, workdir, users, vassal_python):
    """Issue 8 item 1: in a directory every tenant can write, users[1] puts `victim.ini:x.ini` next
    to users[0]'s `victim.ini`. `--ini victim.ini:x.ini` is also FILE:section syntax: the attacker's
    file must never run, least of all as the victim (it is refused, named in one log line), and the
    victim's vassal goes on from its own file."""
    victim_addr, attacker_addr = socket_path(workdir, "victim.sock"), socket_path(workdir, "attacker.sock")
    emperor = real_vassals(spawn, workdir, vassal_python)
    emperor.dir.chmod(0o1777)
    victim = emperor.dir / "victim.ini"
    victim.write_text(app_config(victim_addr))
    own(victim, users[0])
    wait_for(lambda: http_request(victim_addr)[0] == 200, timeout=15, message="the victim serves")
    attack = emperor.dir / "victim.ini.tmp"
    attack.write_text(app_config(attacker_addr))
    own(attack, users[1])
    attack.rename(emperor.dir / "victim.ini:x.ini")
    emperor.server.wait_log("victim.ini:x.ini: refused")
    os.kill(emperor.server.pid, signal.SIGWINCH)  # one more scan: still refused, logged once
    wait_for(lambda: emperor.doc()["scans"] >= 3, message="another scan")
    assert [v["id"] for v in emperor.doc()["vassals"]] == ["victim.ini"]
    assert emperor.vassal("victim.ini")["uid"] == users[0].pw_uid
    assert emperor.server.log().count("victim.ini:x.ini: refused") == 1
    with pytest.raises(OSError):
        http_request(attacker_addr)


NOISY = """#!/bin/sh
echo "[2026-01-01 00:00:00] [1] INFO: [emperor] FORGED by $(id -u)" >&2
perl -e 'truncate(STDERR, 0)'
echo "stdout of $(id -u)"
touch "$PROBE_DIR/$(basename "$2").done"
exec sleep 60
"""


def noisy_vassal(spawn, workdir: Path, owner: pwd.struct_passwd, squatter: pwd.struct_passwd | None = None):
    """A tyrant vassal noisy.ini of `owner` running NOISY, its log put there first by `squatter`."""
    emperor, probe_dir = setup(spawn, workdir)
    (workdir / "probe.sh").write_text(NOISY)
    emperor.server.wait_log("emperor (pid")
    if squatter is not None:
        squat = emperor.dir / "noisy.ini.log"
        squat.write_text("")
        own(squat, squatter, 0o666)
    path = emperor.dir / "noisy.ini"
    path.write_text("[uwsgi]\n")
    own(path, owner)
    wait_for((probe_dir / "noisy.ini.done").exists, message="the vassal wrote and truncated")
    return emperor


def test_a_tyrant_vassal_cannot_write_to_or_truncate_the_emperors_log(spawn, workdir, users):
    """Issue 8 item 6: a tyrant vassal inherited the emperor's stderr: it could forge lines in its
    log and truncate it (ftruncate needs no permission on an inherited descriptor). Its stdout
    and stderr now go to its own log, FILE.log next to its config, opened as its owner."""
    emperor = noisy_vassal(spawn, workdir, users[0])
    log = emperor.server.log()
    assert "FORGED" not in log and "emperor (pid" in log
    own_log = emperor.dir / "noisy.ini.log"
    assert own_log.stat().st_uid == users[0].pw_uid
    assert f"stdout of {users[0].pw_uid}" in own_log.read_text()
    emperor.server.wait_log("noisy.ini.log")  # the emperor says where the vassal's lines go


def test_a_squatted_vassal_log_is_not_used(spawn, workdir, users):
    """Someone else's file in the vassal's log's place is not written to."""
    emperor = noisy_vassal(spawn, workdir, users[0], squatter=users[1])
    assert (emperor.dir / "noisy.ini.log").read_text() == "" and "FORGED" not in emperor.server.log()
