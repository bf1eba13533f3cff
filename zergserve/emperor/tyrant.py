"""Tyrant mode: each vassal runs as the owner of its config file (research/reliability.md §4.2).

The owner is read from a descriptor opened with O_NOFOLLOW (fstat, not a path: no symlink or
race can lend a vassal someone else's identity), and the file must be a regular file with one link,
not writable by group or others, owned by neither uid 0 nor gid 0. The emperor never parses a
vassal's config: the vassal does, after the drop, from that same descriptor (passed to it as
ZERGSERVE_CONFIG_FD), so a file swapped in the directory after the check is never the one read. A
program that is not zergserve (--binary-path, a real uWSGI) ignores the descriptor and opens the
name again: for those the check and the read stay two steps, as in uWSGI. A config symlink taken with
--emperor-tyrant-nofollow is read by name too, by the vassal as its owner: a descriptor opened by
root would let it read a file its owner cannot. In the child, before exec: supplementary groups
(none, or the owner's with --emperor-tyrant-initgroups), then gid, then uid — subprocess does these
in that order when given all three — and a check that root cannot be regained. PR_SET_PDEATHSIG is
set after the drop, because a credential change clears it.

A tyrant vassal does not inherit the emperor's stdout and stderr (it could forge lines in the
emperor's log, or ftruncate it: an inherited descriptor needs no permission). Its output goes to
its own log, FILE.log next to its config: the emperor creates it if it is not there (O_EXCL and
O_NOFOLLOW, then fchown to the owner: the vassal may not be allowed to create files in the
directory), and the vassal opens it after the drop, as its owner, O_NOFOLLOW and O_NONBLOCK (a
FIFO put there blocks nothing), keeping it only if it is a regular file with one link that the
owner owns. Anything else (a file someone else put there first) gives /dev/null, and so does a
monitor with no directory (Monitor.log_of: a pg:// row run as its uid). Its own `logto` still wins.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
from typing import NamedTuple

from zergserve import exitcodes
from zergserve.parent_death import die_with_parent


class TyrantError(Exception):
    """This file may not be run as a vassal in tyrant mode."""


class CheckedConfig(NamedTuple):
    """A config file that passed the checks: who its vassal runs as, and what was checked."""

    uid: int
    gid: int
    ident: tuple[int, int]  # (st_dev, st_ino): a replaced file is a new file, checked and run anew
    fd: int  # the checked file, open for the vassal to read; -1 for a link read by name (nofollow)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def open_checked(path: str, nofollow_link: bool) -> CheckedConfig:
    """The checked file behind `path` (the caller closes it); TyrantError says why it is refused."""
    try:
        if nofollow_link:  # uWSGI's --emperor-tyrant-nofollow: the link's own owner
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                return CheckedConfig(*_owner_ids(path, st, link=True), (st.st_dev, st.st_ino), -1)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise TyrantError(f"{path}: {exc.strerror} (symlinks are refused without --emperor-tyrant-nofollow)"
                          if exc.errno == 40 else f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        return CheckedConfig(*_owner_ids(path, st, link=False), (st.st_dev, st.st_ino), fd)
    except BaseException:
        os.close(fd)
        raise


def _owner_ids(path: str, st: os.stat_result, link: bool) -> tuple[int, int]:
    if not link and not stat.S_ISREG(st.st_mode):
        raise TyrantError(f"{path}: not a regular file")
    if not link and st.st_nlink != 1:
        raise TyrantError(f"{path}: has {st.st_nlink} hard links")
    if st.st_uid == 0 or st.st_gid == 0:
        raise TyrantError(f"invalid permissions for vassal {path}: owned by uid {st.st_uid} gid {st.st_gid}")
    if not link and st.st_mode & 0o022:
        raise TyrantError(f"{path}: writable by group or others (mode {oct(stat.S_IMODE(st.st_mode))})")
    return st.st_uid, st.st_gid


def groups_for(uid: int, gid: int, initgroups: bool) -> list[int]:
    if not initgroups:
        return []
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return []
    return [g for g in os.getgrouplist(name, gid) if g != 0]


def log_path(config: str) -> str:
    """Where a tyrant vassal's stdout and stderr go."""
    return config + ".log"


def prepare_log(path: str, uid: int, gid: int) -> None:
    """Create the vassal's log for its owner unless something is there already (which the vassal
    checks itself), in the emperor, as root."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except OSError:
        return
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def after_drop(uid: int, gid: int, emperor: int, log: str | None) -> None:
    """Runs in the child after subprocess dropped groups, gid and uid: verify, PDEATHSIG, own log."""
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        os._exit(exitcodes.FAILURE)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        os._exit(exitcodes.FAILURE)  # root could be regained: never exec like this
    die_with_parent(emperor)
    fd = _own_log(log, uid) if log is not None else os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _own_log(path: str, uid: int) -> int:
    """The vassal's log opened for appending, or /dev/null if what is there is not its own file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o640)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_nlink != 1:
        os.close(fd)
        return os.open(os.devnull, os.O_WRONLY)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd
