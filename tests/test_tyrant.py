"""Tyrant mode with two real unprivileged users (created here with useradd; root only)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for
from test_emperor import Emperor

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


def setup(spawn, workdir: Path, *extra: str) -> tuple[Emperor, Path]:
    workdir.chmod(0o755)
    probe_dir = workdir / "probe"
    probe_dir.mkdir(mode=0o777)
    probe_dir.chmod(0o777)
    program = workdir / "probe.sh"
    program.write_text(PROBE)
    program.chmod(0o755)
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
