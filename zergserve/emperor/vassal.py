"""One vassal: how it is started (argv, environment, fds, PDEATHSIG) and what the emperor knows of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from zergserve import config
from zergserve.config import files
from zergserve.emperor import protocol, tyrant
from zergserve.emperor.monitor import Monitor
from zergserve.parent_death import die_with_parent
from zergserve.log import logger, printable

RUNNING, STOPPING = 0, 1


class Vassal:
    """The emperor's record of one vassal process (a config file, or NAME:zerg for broodlord)."""

    def __init__(self, file: str, monitor: Monitor, mtime: float, zerg: bool = False) -> None:
        self.file = file  # the config file, as its monitor names it: never parsed for a section
        self.name = file + ":zerg" if zerg else file  # uWSGI's id, for stats and the blacklist
        self.label = printable(self.name)  # the name in log lines: a file name may hold a newline
        self.monitor = monitor
        self.zerg = zerg
        self.pid = -1
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.status = RUNNING
        self.loyal = self.ready = self.accepting = False
        self.born = self.last_mod = mtime
        self.first_run = self.last_run = time.time()
        self.last_loyal = self.last_ready = self.last_accepting = 0.0
        self.last_heartbeat = 0.0
        self.heard_at = 0.0  # time.monotonic() of the last heartbeat (0: none since the spawn)
        self.stopping_since = 0.0  # time.monotonic() of the stop (uWSGI: the curse): killed past --emperor-curse-tolerance
        self.stopping_since_ts = 0.0  # the same, as the stats' timestamp
        self.ran_at = time.monotonic()  # the last spawn or reload, for the broodlord's boot timeout
        self.respawns = 0
        self.sos = 0
        self.uid: int | None = None  # tyrant mode: the owner of the config file (or its row's uid)
        self.gid: int | None = None
        self.ident: tuple[int, int] | None = None  # tyrant mode: (st_dev, st_ino) of the file checked
        self.sos_at = 0.0  # for a zerg: when (time.monotonic()) the SOS that asked for it arrived
        self.reinforced_in = 0.0  # for a zerg: seconds from that SOS to its first worker accepting
        self.boot_failed = False  # for a zerg: counted (blacklisted) as a failed boot already
        self.failing = False  # it was blacklisted when spawned: the global throttle serves it last
        self.booted = False  # it said it started (byte 1, 5 or 17) since its spawn
        self.stopped = False  # the emperor stopped it: its death is no failure
        self.spawned_at = 0.0  # time.monotonic() of the spawn

    def spawn(self, cfg: config.Config, broodlord_num: int = 0, config_fd: int = -1) -> socket.socket:
        """Fork and exec the vassal with its end of a fresh socketpair as UWSGI_EMPEROR_FD, and its
        config open as ZERGSERVE_CONFIG_FD ("FD:NAME") when there is one to hand over: the checked
        file in tyrant mode, else what the monitor hands over (a database row's text). Returns our
        end (also `sock`), for the emperor's selector."""
        if self.uid is None:
            self.uid, self.gid = self.monitor.identity(self.file)
        handed = -1
        if config_fd < 0:
            config_fd = handed = self.monitor.config_fd(self.file)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        env = vassal_environ(os.environ)
        env[protocol.ENV_FD] = str(theirs.fileno())
        pass_fds = [theirs.fileno()]
        if config_fd >= 0:
            env[config.CONFIG_FD_VARIABLE] = f"{config_fd}:{self.file}"
            pass_fds.append(config_fd)
        if self.zerg:
            env[protocol.ENV_BROODLORD_NUM] = str(broodlord_num)
        argv = vassal_argv(cfg, self.file, "zerg" if self.zerg else None)
        emperor_pid = os.getpid()
        identity: dict[str, Any] = {}
        if self.uid is not None and self.gid is not None:
            uid, gid = self.uid, self.gid
            identity = {"user": uid, "group": gid,
                        "extra_groups": tyrant.groups_for(uid, gid, cfg.emperor_tyrant_initgroups)}
            log = self.monitor.log_of(self.file)
            if log is not None:
                tyrant.prepare_log(log, uid, gid)
            prepare = lambda: tyrant.after_drop(uid, gid, emperor_pid, log)  # noqa: E731
            logger.info("[emperor-tyrant] dropping privileges to %d %d for vassal %s (its output: %s)", uid, gid,
                        self.label, printable(log or os.devnull))
        else:
            prepare = lambda: die_with_parent(emperor_pid)  # noqa: E731
        try:
            self.proc = subprocess.Popen(argv, env=env, cwd=self.monitor.cwd(), stdin=subprocess.DEVNULL,
                                         pass_fds=pass_fds, preexec_fn=prepare, **identity)
        except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: preexec_fn raised
            ours.close()
            theirs.close()
            _close(handed)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise OSError(f"cannot start vassal {self.label} with {printable(argv[0])}: {reason}") from None
        theirs.close()
        _close(handed)
        self.sock = ours
        self.pid = self.proc.pid
        self.status = RUNNING
        self.loyal = self.ready = self.accepting = False
        self.last_heartbeat = self.heard_at = 0.0
        self.last_run, self.ran_at = time.time(), time.monotonic()
        self.booted, self.spawned_at = False, time.monotonic()
        logger.info("[emperor] vassal %s spawned (pid %d): %s", self.label, self.pid,
                    printable(" ".join(argv)))
        return ours

    def starting(self, now: float, allowance: float) -> bool:
        """Whether it holds one of the global throttle's slots: spawned, running, not yet said it
        started, for at most `allowance` seconds (a program that never says so)."""
        return self.status == RUNNING and not self.booted and now - self.spawned_at < allowance

    def send(self, byte: int) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send(bytes([byte]))
            return True
        except OSError:
            return False

    def stop(self, graceful: bool) -> None:
        """Ask the vassal to stop (byte 0, or 2); it is killed if it outlives the curse tolerance."""
        if self.status == STOPPING:
            return
        logger.info("[emperor] stop the vassal %s", self.label)
        self.stopped = True
        self.send(protocol.STOP_GRACEFULLY if graceful else protocol.STOP)
        self.set_stopping()

    def set_stopping(self) -> None:
        """Mark it stopping: it is killed if still alive past --emperor-curse-tolerance (uWSGI: cursed)."""
        if self.status != STOPPING:
            self.status = STOPPING
            self.stopping_since, self.stopping_since_ts = time.monotonic(), time.time()

    def reload(self) -> None:
        if self.status != RUNNING:
            return
        logger.info("[emperor] reload the vassal %s", self.label)
        if not self.send(protocol.RELOAD):
            self.set_stopping()
            return
        self.respawns += 1
        self.last_run, self.ran_at = time.time(), time.monotonic()
        self.ready = self.accepting = False

    def kill(self) -> None:
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stats(self) -> dict[str, Any]:
        return {"id": self.name, "pid": self.pid, "born": int(self.born), "last_mod": int(self.last_mod),
                "last_heartbeat": int(self.last_heartbeat), "loyal": int(self.loyal), "ready": int(self.ready),
                "accepting": int(self.accepting), "last_loyal": int(self.last_loyal),
                "last_ready": int(self.last_ready), "last_accepting": int(self.last_accepting),
                "first_run": int(self.first_run), "last_run": int(self.last_run),
                "cursed": int(self.stopping_since_ts) if self.status == STOPPING else 0, "zerg": int(self.zerg),
                "on_demand": "", "uid": os.getuid() if self.uid is None else self.uid,
                "gid": os.getgid() if self.gid is None else self.gid, "monitor": self.monitor.name,
                "respawns": self.respawns, "sos": self.sos, "reinforced_in": round(self.reinforced_in, 3)}


def vassal_argv(cfg: config.Config, file: str, section: str | None = None) -> list[str]:
    """uWSGI's order: binary, --include-before files, --set pairs, TYPEFLAG FILE[:SECTION], --include
    files. A zergserve vassal in tyrant mode reads FILE from the descriptor the emperor checked
    (ZERGSERVE_CONFIG_FD names FILE exactly), never by name."""
    if cfg.binary_path:
        argv = [cfg.binary_path]
    else:
        argv = [sys.executable, "-m", "zergserve"]
    for item in cfg.vassals_include_before:
        argv += [_type_flag(item), item]
    for item in cfg.vassal_set:
        argv += ["--set", item]
    argv += [_type_flag(file), f"{file}:{section}" if section else file]
    for item in cfg.vassals_include:
        argv += [_type_flag(item), item]
    return argv


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _type_flag(name: str) -> str:
    """The option that reads the file `name`: uWSGI's --xml too, for a vassal that is uWSGI."""
    return "--" + (files.kind_of(name, (*files.READ, "xml")) or "ini")


def vassal_environ(environ: Any) -> dict[str, str]:
    """The emperor's environment without the variables that configured the emperor itself
    (UWSGI_<OPT>, ZERGSERVE_<OPT>, UWSGI_INI and the like: a vassal would read them as its own
    options, and ZERGSERVE_EMPEROR would make every vassal an emperor of the same directory), with
    UWSGI_VASSAL_X / ZERGSERVE_VASSAL_X rewritten as the documented UWSGI_X / ZERGSERVE_X, the one
    way to give vassals options through the environment (uWSGI 2.0 mangles this: issue #1612)."""
    env = {}
    for key, value in environ.items():
        for prefix in ("UWSGI_VASSAL_", "ZERGSERVE_VASSAL_"):
            if key.startswith(prefix):
                break
        else:
            if key not in ("UWSGI_RELOADS", "NOTIFY_SOCKET", protocol.ENV_FD, protocol.ENV_BROODLORD_NUM,
                           config.CONFIG_FD_VARIABLE) and not config.is_option_variable(key):
                env[key] = value
    for key, value in environ.items():
        for prefix, target in (("UWSGI_VASSAL_", "UWSGI_"), ("ZERGSERVE_VASSAL_", "ZERGSERVE_")):
            if key.startswith(prefix) and len(key) > len(prefix):
                env[target + key[len(prefix):]] = value
    return env
