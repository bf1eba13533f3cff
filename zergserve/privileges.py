"""Privileges: --uid, --gid, --umask and --chown-socket, in uWSGI's order.

The umask is set first, so that it governs every socket and file created after it. The sockets
are bound (and chowned) while the process may still be root, so that ports below 1024 and
directories like /run work; then the master drops to --gid, the user's supplementary groups
(initgroups) and --uid, and only then loads the app, so no application code ever runs as root.
The workers are forked from that master and inherit its identity.

A process that is not root can only "switch" to what it already is: a master re-executed by a
graceful reload (it dropped before), or a vassal that tyrant mode already runs as its config file's
owner. Asking for another identity there is an error, never a silent no-op.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import NamedTuple

from zergserve.config import Config
from zergserve.log import logger


class PrivilegeError(Exception):
    """A user or group that does not exist, or an identity this process cannot take."""


class Identity(NamedTuple):
    """Whom to become: -1 leaves a field as it is."""

    uid: int
    gid: int
    user: str | None  # the user's name, for initgroups; None without a passwd entry


def prepare(cfg: Config) -> Identity | None:
    """At startup, before anything is bound or created: set --umask; resolve --uid, --gid and
    --chown-socket and check that this process can take that identity (PrivilegeError if not)."""
    if cfg.umask is not None:
        os.umask(cfg.umask)
    who = identity(cfg.uid, cfg.gid)
    if who is not None:
        check_possible(who)
    socket_owner(cfg.chown_socket)
    return who


def apply(who: Identity | None, warn_root: bool = True) -> None:
    """After the sockets are bound: drop to `who` (raises PrivilegeError or OSError), then warn
    if what runs next (the app's workers) still runs as root."""
    if who is not None:
        drop(who)
        logger.info("running as uid %d gid %d (groups %s)", os.getuid(), os.getgid(),
                    ",".join(map(str, os.getgroups())) or "none")
    if warn_root and os.geteuid() == 0:
        logger.warning("*** running as root: the app and its workers have every privilege; give --uid and "
                       "--gid to drop them after the sockets are bound ***")


def resolve_user(spec: str) -> tuple[int, str | None, int | None]:
    """(uid, name, primary gid) of a user name or number; a number need not have a passwd entry."""
    spec = spec.strip()
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        if spec.isdigit():
            return int(spec), None, None
        raise PrivilegeError(f"no such user {spec!r}") from None
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def resolve_group(spec: str) -> int:
    spec = spec.strip()
    if spec.isdigit():
        return int(spec)
    try:
        return grp.getgrnam(spec).gr_gid
    except KeyError:
        raise PrivilegeError(f"no such group {spec!r}") from None


def identity(uid: str | None, gid: str | None) -> Identity | None:
    """The --uid/--gid pair resolved (None when neither is given); --uid alone takes the user's
    primary group, as `su` would, rather than keeping root's group."""
    if not uid and not gid:
        return None
    number, name, primary = resolve_user(uid) if uid else (-1, None, None)
    group = resolve_group(gid) if gid else (primary if primary is not None else -1)
    return Identity(number, group, name)


def socket_owner(spec: str | None) -> tuple[int, int] | None:
    """--chown-socket USER[:GROUP] as (uid, gid); without a group the user's primary group."""
    if not spec:
        return None
    user, sep, group = spec.partition(":")
    uid, _, primary = resolve_user(user) if user else (-1, None, None)
    gid = resolve_group(group) if group else (primary if primary is not None and not sep else -1)
    return uid, gid


def drop(who: Identity) -> None:
    """Become `who`: groups, then gid, then uid, and check that root cannot be regained."""
    if os.geteuid() != 0:
        check_possible(who)
        return
    if who.gid >= 0:
        if who.user is not None and who.uid >= 0:
            os.initgroups(who.user, who.gid)
        else:
            os.setgroups([who.gid])
        os.setresgid(who.gid, who.gid, who.gid)
    if who.uid >= 0:
        os.setresuid(who.uid, who.uid, who.uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"root could be regained after switching to uid {who.uid}: refusing to go on")


def check_possible(who: Identity) -> None:
    """Raise unless this process can become `who`: root can become anyone, others only themselves.
    Checked before binding, so that a refused start leaves no socket file behind."""
    if os.geteuid() == 0:
        return
    if who.uid >= 0 and who.uid != os.getuid():
        raise PrivilegeError(f"cannot switch to uid {who.uid}: running as uid {os.getuid()}, not root "
                             "(in emperor tyrant mode a vassal runs as its config file's owner)")
    if who.gid >= 0 and who.gid != os.getgid():
        raise PrivilegeError(f"cannot switch to gid {who.gid}: running as gid {os.getgid()}, not root "
                             "(in emperor tyrant mode a vassal runs as its config file's group)")

