"""Run a real PostgreSQL (Debian's binaries) in a temporary directory, on a UNIX socket only.

PostgreSQL refuses to run as root; as root (CI) the cluster belongs to the `postgres` system user
(Debian's package creates it) or `nobody`, and its programs are started as that user (subprocess's
user/group: no runuser in between, so the pid is postgres's own and a signal reaches it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from conftest import wait_for

_BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
BINDIR = Path(os.environ.get("PG_BINDIR") or (_BINDIRS[-1] if _BINDIRS else "/usr/lib/postgresql/15/bin"))
DATABASE_USER = "zerg"


def missing() -> str | None:
    """Why a test cluster cannot run here (a reason to skip), or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the pg extra is not installed (pip install 'zergserve[pg]')"
    if not (BINDIR / "postgres").exists() or not (BINDIR / "initdb").exists():
        return f"PostgreSQL is not installed ({BINDIR}; apt-get install postgresql)"
    return None


def _system_user() -> str | None:
    """Who owns the cluster: ourselves, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody account exists")


class Postgres:
    """One cluster: initdb at construction, start() and stop() as often as a test likes."""

    def __init__(self) -> None:
        self.user = _system_user()
        self.dir = Path(tempfile.mkdtemp(prefix="zs-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.sockdir = self.dir  # the socket is self.dir/.s.PGSQL.5432
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.dir, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", DATABASE_USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        self.conninfo = f"host={self.sockdir} port=5432 user={DATABASE_USER} dbname=postgres"

    def _as_owner(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), "LC_ALL": "C"}}

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([str(BINDIR / program), *args], cwd=self.dir, capture_output=True, text=True,
                                timeout=60, **self._as_owner())
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(BINDIR / "postgres"), "-D", str(self.data), "-k", str(self.sockdir), "-c", "listen_addresses=",
             "-c", "fsync=off", "-c", "max_connections=40"],
            cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner())
        log.close()
        wait_for(self.ready, timeout=30, interval=0.05, message=f"postgres accepting (log: {self.log})")

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"postgres exited:\n{self.log.read_text(errors='replace')}")
        import psycopg
        try:
            with psycopg.connect(self.conninfo, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, as when a database goes away."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def execute(self, query: str, params: tuple = ()) -> list[tuple]:
        import psycopg
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
