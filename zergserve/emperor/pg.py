"""The pg:// imperial monitor: vassals are the rows of a PostgreSQL query (uWSGI's emperor-pg).

`pg://CONNINFO;SELECT name, config, ts FROM vassals WHERE ...`: each row is one vassal. `name` is its
file name (the extension picks the config kind, and %n, %e... are made from it), `config` the text of
that file, `ts` when it last changed (a timestamp, or epoch seconds): a larger ts reloads the vassal,
a row that is gone stops it. Two more columns, uid and gid (numbers or names), say whom the vassal
runs as when the emperor runs as root. Without a query, uWSGI's default is used.

uWSGI connects and runs the query on every scan. Here one connection stays open and LISTENs on
--emperor-pg-channel: a NOTIFY (see deploy/fleet/vassals.sql) wakes the emperor's loop through the
connection's socket, which the loop's selector waits on like any other, and the query runs at once.
It also runs every --emperor-freq seconds, for tables without the trigger.

The vassal never reads a file: its text lives in a memfd the monitor keeps per row, handed to the
vassal read-only as ZERGSERVE_CONFIG_FD, the way tyrant mode hands over a checked file. A newer ts
rewrites the memfd before the emperor sends the reload, so the reload (and its config check) reads
the new text. The emperor never parses a config: a row that does not parse fails in its vassal.

When the database goes away the last rows read stay in force: running vassals are left alone (and
respawned from those rows if they die). The loss is logged once; reconnections back off from half a
second to 30 s, and the emperor's stats show the monitor's state. The database can hold the
emperor's loop only so long (see _BOUNDS): 2 s to connect, 5 s for the query, about 10 s for a peer
that went silent, unless the conninfo says otherwise.
"""

from __future__ import annotations

import datetime
import decimal
import grp
import os
import pwd
import re
import selectors
import time
from typing import Any, Callable, NamedTuple

from zergserve.config import Config
from zergserve.emperor import tyrant
from zergserve.emperor.monitor import Monitor, extensions
from zergserve.log import logger, printable

try:
    import psycopg
    from psycopg import sql
    HAVE_PSYCOPG = True
except ImportError:  # the pg extra is optional: only a pg:// monitor needs it
    HAVE_PSYCOPG = False

DEFAULT_QUERY = "SELECT name, config, EXTRACT(epoch FROM ts) FROM vassals"
# Bounds on how long the emperor's loop can wait for the database, unless the conninfo (or the
# libpq variable named) sets them: connecting; a query stuck behind a lock (a migration holding the
# table); a peer gone silent (keepalives on the idle LISTEN connection, and unacknowledged data).
_BOUNDS = {"connect_timeout": ("2", "PGCONNECT_TIMEOUT"), "options": ("-c statement_timeout=5000", "PGOPTIONS"),
           "keepalives_idle": ("10", ""), "keepalives_interval": ("5", ""), "keepalives_count": ("3", ""),
           "tcp_user_timeout": ("10000", "")}
_MAX_BACKOFF = 30.0
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*\Z")
_SECRETS = (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)"), re.compile(r"(://[^:/@]*:)[^@/]*(?=@)"))


class Row(NamedTuple):
    """One vassal as the query gave it."""

    config: bytes
    ts: float
    identity: tuple[Any, Any] | None  # (uid, gid) as given, when the query has those columns


def redact(conninfo: str) -> str:
    """The connection string without its password, for logs and stats."""
    for pattern in _SECRETS:
        conninfo = pattern.sub(lambda m: m.group(1) + "***", conninfo)
    return conninfo


class PgMonitor(Monitor):
    """One pg:// --emperor argument: the rows of its query, and a LISTEN that wakes the emperor."""

    def __init__(self, arg: str, cfg: Config) -> None:
        conninfo, _, query = arg[len("pg://"):].partition(";")
        self.arg = arg
        self.kind = "pg"
        self.start_cwd = self.target = os.getcwd()
        self.extensions = extensions(cfg.emperor_extra_extension)
        self.nofollow = cfg.emperor_nofollow
        self.query = query.strip() or DEFAULT_QUERY
        self.name = f"pg://{redact(conninfo)};{self.query}"
        if not HAVE_PSYCOPG:
            raise ValueError(f"emperor: {self.name}: the pg:// monitor needs psycopg: pip install 'zergserve[pg]'")
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ValueError(f"emperor: {self.name}: bad connection string: {exc}") from None
        self.conninfo = conninfo
        self.connect_args = {key: value for key, (value, variable) in _BOUNDS.items()
                             if key not in params and not (variable and os.environ.get(variable))}
        self.channel = cfg.emperor_pg_channel
        self.conn: Any = None
        self.fd = -1  # the connection's socket, as registered with the emperor's selector
        self.selector: selectors.BaseSelector | None = None
        self.wake: Callable[[float], None] = lambda when: None
        self.rows: dict[str, Row] = {}
        self.fds: dict[str, int] = {}  # name → the memfd holding its row's text
        self.spawned_as: dict[str, tuple[int, int]] = {}
        self.refused_rows: dict[str, str] = {}  # rows skipped, with the reason last logged
        self.state, self.since, self.last_error = "connecting", time.time(), ""
        self.failures = 0
        self.retry_at = 0.0
        self.queries = self.notifications = 0

    # --- the Monitor interface ---------------------------------------------------------------

    def attach(self, selector: selectors.BaseSelector, wake: Callable[[float], None]) -> None:
        self.selector, self.wake = selector, wake

    def watch_dirs(self) -> list[str]:
        return []

    def scan(self) -> dict[str, float]:
        """name → ts of every vassal row: read now if the database answers, else the last rows read."""
        if self.conn is None:
            if time.monotonic() >= self.retry_at:
                self._connect()
            else:
                self.wake(self.retry_at)  # this scan came early, for another reason: keep the retry's
        if self.conn is not None:
            try:
                records = self.conn.execute(self.query).fetchall()
            except psycopg.Error as exc:
                if self.conn.closed or self.conn.broken:
                    self._lost(exc)
                else:
                    self._failed("query failed", exc)
            else:
                self.queries += 1
                if self.state != "connected":
                    self._set_state("connected", "")
                self._apply(records)
        return {name: row.ts for name, row in self.rows.items() if not self._identity_changed(name, row)}

    def config_fd(self, name: str) -> int:
        """A new read-only descriptor of the row's memfd, so every vassal reads from its own offset;
        the memfd itself stays open here, to be rewritten when the row changes."""
        memfd = self.fds.get(name)
        return -1 if memfd is None else os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)

    def identity(self, name: str) -> tuple[int | None, int | None]:
        """Whom the vassal runs as: the row's uid and gid when the emperor is root and the query
        has them, else the emperor's own identity. A row naming root (or nobody) is refused."""
        row = self.rows.get(name)
        if row is None or row.identity is None or os.geteuid() != 0:
            return None, None
        try:
            uid, gid = _resolve(row.identity)
        except (KeyError, ValueError) as exc:
            raise OSError(f"vassal {name}: {exc}") from None
        self.spawned_as[name] = (uid, gid)
        return uid, gid

    def open_checked(self, name: str, nofollow: bool) -> tyrant.CheckedConfig:
        """Tyrant mode: the row must give a uid and a gid, neither of them root's."""
        row = self.rows.get(name)
        if row is None or row.identity is None:
            raise tyrant.TyrantError(f"missing uid and gid for vassal {name} (add them to the query)")
        try:
            uid, gid = _resolve(row.identity)
        except (KeyError, ValueError) as exc:
            raise tyrant.TyrantError(f"vassal {name}: {exc}") from None
        return tyrant.CheckedConfig(uid, gid, (0, 0), self.config_fd(name))

    def log_of(self, name: str) -> str | None:
        """A row has no directory to keep a log in: /dev/null, unless its config sets logto."""
        return None

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "state": self.state, "since": int(self.since),
                "last_error": self.last_error, "channel": self.channel, "rows": len(self.rows),
                "queries": self.queries, "notifications": self.notifications, "failures": self.failures,
                "retry_in": round(max(0.0, self.retry_at - time.monotonic()), 2) if self.conn is None else 0}

    # --- the connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            conninfo = psycopg.conninfo.make_conninfo(self.conninfo, **self.connect_args)
            conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
        except psycopg.Error as exc:
            self._failed("cannot connect", exc)
            return
        try:
            if self.channel:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            conn.close()
            self._failed("cannot LISTEN", exc)
            return
        conn.add_notify_handler(self._notified)  # those that arrive while a query runs
        self.conn, self.fd = conn, conn.fileno()
        if self.selector is not None:
            self.selector.register(self.fd, selectors.EVENT_READ, self._readable)
        if self.failures:
            logger.info("[emperor-pg] %s: connected again after %d failed attempts", self.name, self.failures)
        else:
            logger.info("[emperor-pg] %s: connected%s", self.name,
                        f", listening on {self.channel}" if self.channel else "")
        self.failures = 0
        self._set_state("connected", "")

    def _readable(self) -> None:
        """The connection's socket: notifications, or the server going away."""
        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as exc:
            self._lost(exc)
            return
        while (notify := pgconn.notifies()) is not None:
            self._notified(notify)
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            self._lost(psycopg.OperationalError(pgconn.get_error_message() or "connection lost"))

    def _notified(self, _notify: Any) -> None:
        self.notifications += 1
        self.wake(time.monotonic())

    def _lost(self, exc: BaseException) -> None:
        if self.conn is not None:
            if self.selector is not None:
                self.selector.unregister(self.fd)
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None
        self._failed("lost the database", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Log once per change of state (a new query error too); keep the rows; retry after a
        growing delay."""
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state = "query failed" if what == "query failed" else "disconnected"
        if state != self.state or (state == "query failed" and error != self.last_error):
            logger.error("[emperor-pg] %s: %s: %s; %d running vassals are kept%s", self.name, what, printable(error),
                         len(self.rows), "" if self.conn is not None else ", reconnecting with back-off")
        self._set_state(state, error)
        if self.conn is None:
            delay = min(_MAX_BACKOFF, 0.5 * 2 ** self.failures)
            self.failures += 1
            self.retry_at = time.monotonic() + delay
            self.wake(self.retry_at)

    def _set_state(self, state: str, error: str) -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.last_error = state, error

    # --- rows --------------------------------------------------------------------------------

    def _apply(self, records: list[tuple]) -> None:
        """Take the query's rows: new ones get a memfd, a newer ts rewrites it, gone ones close it."""
        rows: dict[str, Row] = {}
        for record in records:
            named = self._row(record)
            if named is not None:
                rows[named[0]] = named[1]
        for name in list(self.rows):
            if name not in rows:
                os.close(self.fds.pop(name))
                del self.rows[name]
                self.spawned_as.pop(name, None)
        for name, row in rows.items():
            old = self.rows.get(name)
            if old is None:
                self.fds[name] = os.memfd_create(f"zergserve-vassal:{name}", os.MFD_CLOEXEC)
                _write(self.fds[name], row.config)
            elif row.ts > old.ts:
                _write(self.fds[name], row.config)
            else:
                row = old._replace(identity=row.identity)  # the text changes with its ts only
            self.rows[name] = row

    def _row(self, record: tuple) -> tuple[str, Row] | None:
        """(name, Row) from one record, or None (logged once) for a row that cannot be a vassal."""
        if len(record) < 3:
            self._refuse("", f"the query returns {len(record)} columns: it needs name, config, ts")
            return None
        name, text, ts = record[:3]
        if not isinstance(name, str) or not _NAME.match(name) or not self.valid(name):
            self._refuse(str(name), f"row {name!r}: not a vassal name (a file name such as app.ini, "
                                    f"ending in one of {', '.join(self.extensions)})")
            return None
        if text is None:
            self._refuse(name, f"row {name!r}: its config is NULL")
            return None
        try:
            stamp = _timestamp(ts)
        except (TypeError, ValueError):
            self._refuse(name, f"row {name!r}: ts {ts!r} is neither a timestamp nor a number")
            return None
        identity = tuple(record[3:5]) if len(record) >= 5 else None
        if identity is not None and os.geteuid() == 0:
            try:
                _resolve(identity)
            except (KeyError, ValueError) as exc:
                self._refuse(name, f"row {name!r}: {exc}")
                return None
        self.refused_rows.pop(name, None)
        config = bytes(text) if isinstance(text, (bytes, memoryview)) else str(text).encode()
        return name, Row(config, stamp, identity)

    def _refuse(self, name: str, reason: str) -> None:
        if self.refused_rows.get(name) != reason:
            self.refused_rows[name] = reason
            logger.error("[emperor-pg] %s", printable(reason))

    def _identity_changed(self, name: str, row: Row) -> bool:
        """Whether the row now names another uid or gid than its vassal runs as: it is left out of
        one scan, so the emperor stops the vassal and starts it anew as the new owner."""
        spawned = self.spawned_as.get(name)
        if spawned is None or row.identity is None:
            return False
        try:
            changed = _resolve(row.identity) != spawned
        except (KeyError, ValueError):
            changed = True
        if changed:
            logger.info("[emperor-pg] uid/gid of vassal %s changed: restarting it", name)
            del self.spawned_as[name]
        return changed


def _timestamp(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float, decimal.Decimal, str)):
        return float(value)
    raise TypeError(value)


def _resolve(identity: tuple[Any, Any]) -> tuple[int, int]:
    """(uid, gid) from numbers or names; root's and missing ones are refused."""
    user, group = identity
    uid = None if user is None else int(user) if str(user).isdigit() else pwd.getpwnam(str(user)).pw_uid
    gid = None if group is None else int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
    if not uid or not gid:
        raise ValueError(f"uid {user!r} gid {group!r}: a vassal from the database never runs as root "
                         "(nor with a NULL uid or gid)")
    return uid, gid


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    view = memoryview(data)
    while view:
        view = view[os.pwrite(fd, view, len(data) - len(view)):]
