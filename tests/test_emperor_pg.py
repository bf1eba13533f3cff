"""The pg:// imperial monitor against a real PostgreSQL: rows are vassals, NOTIFY wakes the emperor,
and the database may go away without taking a vassal along."""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path

import pytest

from conftest import APPS, ROOT, _answers, fetch, free_port, http_request, wait_for
from nginx import NGINX, Nginx
from pgserver import Postgres, missing
from test_broodlord import block_worker
from test_tyrant import probe_program

SCHEMA = ROOT / "deploy" / "fleet" / "vassals.sql"


@pytest.fixture(scope="module")
def postgres():
    """One PostgreSQL for the module: the tests that need it skip when it or psycopg is missing."""
    if reason := missing():
        pytest.skip(reason)
    server = Postgres()
    try:
        server.start()
        server.execute(SCHEMA.read_text())
        yield server
    finally:
        server.destroy()


@pytest.fixture
def db(postgres):
    """The module's database, running, with an empty vassals table."""
    if postgres.proc is None:
        postgres.start()
    postgres.execute("TRUNCATE vassals")
    return postgres


def app_config(workdir: Path, processes: int = 1, extra: str = "") -> str:
    """A real vassal serving HTTP on a UNIX socket named after its row (%n); its worker count
    shows which text it runs."""
    return (f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {workdir}/%n.sock\n"
            f"processes = {processes}\n{extra}")


class Emperor:
    def __init__(self, spawn, workdir: Path, db: Postgres, host: str, *extra: str, columns: str = "name, config, ts",
                 env: dict[str, str] | None = None) -> None:
        self.stats = str(workdir / f"emperor-{host}.stats")
        query = f"SELECT {columns} FROM vassals WHERE host = '{host}'"
        self.server = spawn("--emperor", f"pg://{db.conninfo};{query}", "--emperor-stats", self.stats,
                            "--emperor-freq", "60", *extra, env=env)
        wait_for(lambda: self.monitor()["state"] == "connected", message="monitor connected")

    def doc(self) -> dict:
        return fetch(self.stats)

    def monitor(self) -> dict:
        return self.doc()["monitors"][0]

    def vassal(self, name: str) -> dict | None:
        return next((v for v in self.doc()["vassals"] if v["id"] == name), None)

    def names(self) -> list[str]:
        return sorted(v["id"] for v in self.doc()["vassals"])


def insert(db: Postgres, host: str, name: str, config: str) -> None:
    db.execute("INSERT INTO vassals (host, name, config) VALUES (%s, %s, %s)", (host, name, config))


def serving(workdir: Path, name: str) -> bool:
    return http_request(str(workdir / f"{name}.sock"))[0] == 200


def workers(pid: int) -> int:
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return 0


def test_rows_spawn_reload_and_stop_vassals(spawn, workdir, db):
    emperor = Emperor(spawn, workdir, db, "a")
    started = time.monotonic()
    insert(db, "a", "site.ini", app_config(workdir, processes=1))
    wait_for(lambda: emperor.vassal("site.ini"), timeout=1, interval=0.005, message="spawned within 1 s of the insert")
    print(f"pg://: vassal spawned {(time.monotonic() - started) * 1000:.0f} ms after its INSERT (--emperor-freq 60)")
    wait_for(lambda: serving(workdir, "site"), timeout=20, message="the vassal serves on its row's %n socket")
    pid = emperor.vassal("site.ini")["pid"]
    wait_for(lambda: workers(pid) == 1, message="one worker, as the row says")

    db.execute("UPDATE vassals SET config = %s WHERE name = 'site.ini'", (app_config(workdir, processes=2),))
    wait_for(lambda: emperor.vassal("site.ini")["respawns"] == 1, timeout=1, interval=0.01,
             message="reload sent within 1 s of the update")
    wait_for(lambda: workers(pid) == 2, timeout=20, message="the reload read the new text: two workers")
    assert emperor.vassal("site.ini")["pid"] == pid  # a graceful reload, not a new vassal
    assert serving(workdir, "site")

    db.execute("DELETE FROM vassals WHERE name = 'site.ini'")
    wait_for(lambda: emperor.vassal("site.ini") is None, timeout=10, message="deleted row stops its vassal")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), message="vassal gone")
    assert emperor.monitor()["notifications"] >= 3


def test_two_emperors_each_run_only_their_rows(spawn, workdir, db):
    one = Emperor(spawn, workdir, db, "one")
    two = Emperor(spawn, workdir, db, "two")
    insert(db, "one", "a.ini", app_config(workdir))
    insert(db, "two", "b.ini", app_config(workdir))
    insert(db, "three", "c.ini", app_config(workdir))
    wait_for(lambda: one.names() == ["a.ini"] and two.names() == ["b.ini"], timeout=2, message="each its row")
    wait_for(lambda: serving(workdir, "a") and serving(workdir, "b"), timeout=20, message="a and b serving")
    assert not (workdir / "c.sock").exists()
    db.execute("UPDATE vassals SET host = 'two' WHERE name = 'a.ini'")  # move a site to the other host
    wait_for(lambda: one.names() == [] and two.names() == ["a.ini", "b.ini"], timeout=5, message="a moved")


def test_database_restart_loses_no_vassal(spawn, workdir, db):
    emperor = Emperor(spawn, workdir, db, "a")
    insert(db, "a", "keep.ini", app_config(workdir))
    wait_for(lambda: serving(workdir, "keep"), timeout=20, message="serving")
    pid = emperor.vassal("keep.ini")["pid"]

    db.stop()
    wait_for(lambda: emperor.monitor()["state"] == "disconnected", timeout=5, message="loss noticed")
    assert emperor.vassal("keep.ini")["pid"] == pid
    assert serving(workdir, "keep")
    os.kill(pid, 9)  # a vassal that dies meanwhile comes back from the rows last read
    wait_for(lambda: (emperor.vassal("keep.ini") or {}).get("pid") not in (None, pid, -1), timeout=10,
             message="respawned while the database is down")
    wait_for(lambda: emperor.monitor()["failures"] >= 2, timeout=10, message="reconnection attempts")

    db.start()
    wait_for(lambda: emperor.monitor()["state"] == "connected", timeout=20, message="reconnected")
    insert(db, "a", "later.ini", app_config(workdir))
    wait_for(lambda: emperor.vassal("later.ini"), timeout=1, interval=0.01, message="a later row applies")
    wait_for(lambda: serving(workdir, "later"), timeout=20, message="later serving")
    wait_for(lambda: serving(workdir, "keep"), timeout=20, message="keep serving")
    log = emperor.server.log()
    assert log.count("lost the database") == 1, log
    assert log.count("cannot connect") <= 1, log  # once, not once per attempt


def test_a_rows_zerg_runs_the_rows_zerg_section(spawn, workdir, db):
    """Broodlord: the zerg of a row's vassal reads the [zerg] section of the same row."""
    emperor = Emperor(spawn, workdir, db, "a", "--emperor-broodlord", "1")
    zsock = workdir / "brood.zerg"
    insert(db, "a", "brood.ini", app_config(workdir, extra=f"zerg-server = {zsock}\nvassal-sos-backlog = 1\n"
                                                           f"check-interval = 0.25\n[zerg]\nchdir = {APPS}\n"
                                                           f"module = echo:application\nzerg = {zsock}\n"))
    wait_for(lambda: serving(workdir, "brood"), timeout=20, message="the row's vassal serving")
    block_worker(str(workdir / "brood.sock"), 4, 3)
    wait_for(lambda: (emperor.vassal("brood.ini:zerg") or {}).get("accepting") == 1, timeout=20,
             message="a zerg from the row's [zerg] section, accepting")
    emperor.server.wait_log(f"(http) attached from {zsock}")  # `zerg =`: only the [zerg] section says it


def test_bad_rows_are_their_vassals_errors(spawn, workdir, db):
    emperor = Emperor(spawn, workdir, db, "a")
    insert(db, "a", "broken.ini", "[uwsgi\nmodule = nowhere\n")
    insert(db, "a", "../evil.ini", app_config(workdir))
    insert(db, "a", "good.ini", app_config(workdir))
    wait_for(lambda: serving(workdir, "good"), timeout=20, message="the good row serves")
    emperor.server.wait_log("malformed section header")
    emperor.server.wait_log("'../evil.ini': not a vassal name")
    assert emperor.vassal("../evil.ini") is None
    assert emperor.server.proc.poll() is None


def test_bad_query_keeps_the_emperor_and_says_so(spawn, workdir, db):
    stats = str(workdir / "e.stats")
    server = spawn("--emperor", f"pg://{db.conninfo};SELECT name, config, ts FROM no_such_table", "--emperor-stats",
                   stats, "--emperor-freq", "0.2")
    wait_for(lambda: os.path.exists(stats) and fetch(stats)["monitors"][0]["state"] == "query failed",
             message="the query's failure in the stats")
    monitor = fetch(stats)["monitors"][0]
    assert 'relation "no_such_table" does not exist' in monitor["last_error"]
    wait_for(lambda: fetch(stats)["scans"] >= 5, message="more scans")
    assert server.log().count("query failed") == 1  # one line for all those scans
    assert server.proc.poll() is None


def test_without_listen_the_query_polls_at_emperor_freq(spawn, workdir, db):
    emperor = Emperor(spawn, workdir, db, "a", "--emperor-pg-channel", "", "--emperor-freq", "0.3")
    insert(db, "a", "polled.ini", app_config(workdir))
    wait_for(lambda: emperor.vassal("polled.ini"), timeout=5, message="found by polling")
    assert emperor.monitor()["notifications"] == 0 and emperor.monitor()["queries"] >= 2
    assert "listening on" not in emperor.server.log()


def test_a_locked_table_does_not_hold_the_emperor(spawn, workdir, db):
    """A migration holding the table: the query gives up (statement_timeout; zergserve's default is
    5 s, this conninfo says 200 ms), the vassals and the emperor's loop go on, and the next
    notification after the lock finds the table again."""
    import psycopg

    stats = str(workdir / "e.stats")
    query = "SELECT name, config, ts FROM vassals WHERE host = 'a'"
    spawn("--emperor", f"pg://{db.conninfo} options='-c statement_timeout=200';{query}", "--emperor-stats", stats,
          "--emperor-freq", "60")
    monitor = lambda: fetch(stats)["monitors"][0]  # noqa: E731
    wait_for(lambda: os.path.exists(stats) and monitor()["state"] == "connected", message="connected")
    insert(db, "a", "keep.ini", app_config(workdir))
    wait_for(lambda: serving(workdir, "keep"), timeout=20, message="serving")
    with psycopg.connect(db.conninfo) as migration:
        migration.execute("LOCK TABLE vassals IN ACCESS EXCLUSIVE MODE")
        db.execute("NOTIFY zergserve_vassals")
        wait_for(lambda: monitor()["state"] == "query failed", timeout=5, message="the query gave up")
        assert "statement timeout" in monitor()["last_error"]
        assert serving(workdir, "keep") and len(fetch(stats)["vassals"]) == 1
    db.execute("NOTIFY zergserve_vassals")
    wait_for(lambda: monitor()["state"] == "connected", timeout=5, message="the table is back")
    assert len(fetch(stats)["vassals"]) == 1


def test_unknown_scheme_and_bad_conninfo_fail_at_start(spawn, workdir):
    bad = spawn("--emperor", "zmq://tcp://127.0.0.1:5000")
    assert bad.wait_exit() == 2
    assert "unknown imperial monitor scheme zmq://" in bad.log()
    bad = spawn("--emperor", "pg://nonsense password=hunter2 without equals;SELECT 1")
    assert bad.wait_exit() == 2
    expected = "the pg:// monitor needs psycopg" if "pg extra" in (missing() or "") else "bad connection string"
    assert expected in bad.log() and "hunter2" not in bad.log()


# A vassal program any user can run: who it is and the config text it was handed, written aside then
# renamed so that the test reads it whole.
PROBE = """#!/bin/bash
out="$PROBE_DIR/$2"
{ grep -E '^(Uid|Gid):' /proc/self/status; echo "config: $(cat <&"${ZERGSERVE_CONFIG_FD%%:*}")"; } > "$out.tmp"
mv "$out.tmp" "$out"
exec sleep 60
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="uid and gid columns apply only when the emperor runs as root")
def test_uid_gid_columns_as_root_never_root(spawn, workdir, db):
    program, probes = probe_program(workdir, PROBE)
    nobody = pwd.getpwnam("nobody")
    emperor = Emperor(spawn, workdir, db, "a", "--binary-path", str(program), "--emperor-curse-tolerance", "1",
                      columns="name, config, ts, uid, gid", env={"PROBE_DIR": str(probes)})
    db.execute("INSERT INTO vassals (host, name, config, uid, gid) VALUES ('a', 'low.ini', '[uwsgi]', %s, %s), "
               "('a', 'root.ini', '[uwsgi]', 0, 0), ('a', 'null.ini', '[uwsgi]', NULL, NULL)",
               (nobody.pw_uid, nobody.pw_gid))
    probe = probes / "low.ini"
    wait_for(probe.exists, message="low.ini started")
    lines = probe.read_text().splitlines()
    assert lines[0].split()[1:] == [str(nobody.pw_uid)] * 4 and lines[1].split()[1:] == [str(nobody.pw_gid)] * 4
    assert lines[2] == "config: [uwsgi]"  # its row's text, readable after the drop
    # not the emperor's stdout and stderr, and no file in the emperor's cwd: a row has no directory
    assert "for vassal low.ini (its output: /dev/null)" in emperor.server.log() and not list(workdir.glob("*.ini.log"))
    emperor.server.wait_log("row 'root.ini': uid 0 gid 0: a vassal from the database never runs as root")
    emperor.server.wait_log("row 'null.ini': uid None gid None")
    assert emperor.vassal("root.ini") is None and emperor.vassal("null.ini") is None
    assert emperor.vassal("low.ini")["uid"] == nobody.pw_uid

    other = pwd.getpwnam("daemon")
    old_pid = emperor.vassal("low.ini")["pid"]
    probe.unlink()
    db.execute("UPDATE vassals SET uid = %s, gid = %s WHERE name = 'low.ini'", (other.pw_uid, other.pw_gid))
    wait_for(probe.exists, message="low.ini started anew as its new owner")
    assert probe.read_text().splitlines()[0].split()[1:] == [str(other.pw_uid)] * 4
    assert emperor.vassal("low.ini")["pid"] != old_pid
    assert emperor.server.log().count("row 'root.ini'") == 1  # refused once, not once per scan


def test_fleet_runs_as_shipped(spawn, workdir, db):
    """deploy/fleet copied as is: two hosts' emperors over one table, a site added to both, a config
    rolled out on one, the site removed from one, and nginx (when installed) spreading it over both."""
    fleet = workdir / "deploy" / "fleet"
    shutil.copytree(ROOT / "deploy" / "fleet", fleet)
    (workdir / "examples").symlink_to(ROOT / "examples")  # sites/shop.ini: chdir = %(fleet)../../examples
    emperors = {}
    for host in ("web1", "web2"):
        server = spawn("--ini", str(fleet / "emperor.ini"), env={"FLEET_HOST": host, "FLEET_CONNINFO": db.conninfo})
        stats = str(fleet / "sockets" / f"emperor-{host}.stats")
        wait_for(lambda: os.path.exists(stats) and fetch(stats)["monitors"][0]["state"] == "connected",
                 message=f"{host}'s emperor connected")
        emperors[host] = (server, stats)

    def vassal(host: str) -> dict | None:
        return next((v for v in fetch(emperors[host][1])["vassals"] if v["id"] == "shop.ini"), None)

    site = (fleet / "sites" / "shop.ini").read_text()
    db.execute("INSERT INTO vassals (host, name, config) SELECT h, 'shop.ini', %s FROM unnest(ARRAY['web1', 'web2']) h",
               (site,))
    for host in ("web1", "web2"):
        wait_for(lambda: (fleet / "sockets" / f"{host}-shop.sock").exists(), timeout=20, message=f"shop on {host}")
        wait_for(lambda: (vassal(host) or {}).get("accepting") == 1, timeout=20, message=f"shop accepting on {host}")

    db.execute("UPDATE vassals SET config = %s WHERE name = 'shop.ini' AND host = 'web1'",
               (site.replace("processes = 2", "processes = 3"),))
    wait_for(lambda: vassal("web1")["respawns"] == 1, timeout=2, message="the change rolled to web1")
    wait_for(lambda: workers(vassal("web1")["pid"]) == 3, timeout=20, message="web1 runs the new text")
    assert vassal("web2")["respawns"] == 0

    nginx = None
    if Path(NGINX).exists():
        port = free_port()
        conf = (fleet / "nginx-fleet.conf").read_text().replace("/srv/zergserve/deploy/fleet", str(fleet))
        conf = conf.replace("/etc/nginx/uwsgi_params", str(ROOT / "nginx" / "uwsgi_params"))
        nginx = Nginx(workdir, conf.replace("listen 8080;", f"listen 127.0.0.1:{port};"))
        addr = f"127.0.0.1:{port}"
        wait_for(lambda: _answers(addr), message="nginx listening")
        upstreams = {http_request(addr)[1].get("X-Fleet-Upstream") for _ in range(6)}
        assert upstreams == {f"unix:{fleet}/sockets/web1-shop.sock", f"unix:{fleet}/sockets/web2-shop.sock"}
    try:
        db.execute("DELETE FROM vassals WHERE name = 'shop.ini' AND host = 'web2'")
        wait_for(lambda: vassal("web2") is None, timeout=10, message="shop removed from web2")
        assert vassal("web1") is not None
        if nginx is not None:
            wait_for(lambda: not (fleet / "sockets" / "web2-shop.sock").exists(), message="web2's socket gone")
            for _ in range(4):
                status, headers, _ = http_request(addr)
                assert status == 200 and headers["X-Fleet-Upstream"].endswith("web1-shop.sock")
    finally:
        if nginx is not None:
            nginx.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="tyrant mode needs root")
def test_tyrant_mode_takes_identity_from_the_row_and_needs_it(spawn, workdir, db):
    program, probes = probe_program(workdir, PROBE)
    nobody = pwd.getpwnam("nobody")
    tyrant = ("--emperor-tyrant", "--binary-path", str(program))
    with_columns = Emperor(spawn, workdir, db, "a", *tyrant, columns="name, config, ts, uid, gid",
                           env={"PROBE_DIR": str(probes)})
    without = Emperor(spawn, workdir, db, "b", *tyrant, env={"PROBE_DIR": str(probes)})
    db.execute("INSERT INTO vassals (host, name, config, uid, gid) VALUES ('a', 'mine.ini', '[uwsgi]', %s, %s), "
               "('b', 'anon.ini', '[uwsgi]', %s, %s)", (nobody.pw_uid, nobody.pw_gid) * 2)
    wait_for((probes / "mine.ini").exists, message="mine.ini started")
    lines = (probes / "mine.ini").read_text().splitlines()
    assert lines[0].split()[1:] == [str(nobody.pw_uid)] * 4 and lines[2] == "config: [uwsgi]"
    without.server.wait_log("missing uid and gid for vassal anon.ini")
    assert without.vassal("anon.ini") is None and not (probes / "anon.ini").exists()
    assert with_columns.vassal("mine.ini")["uid"] == nobody.pw_uid


def test_check_config_reads_every_row_and_starts_nothing(db, workdir):
    """--check-config of a pg:// emperor: each row's text is read as its vassal would read it."""
    import subprocess
    import sys
    insert(db, "check", "good.ini", app_config(workdir))
    insert(db, "check", "bad.ini", app_config(workdir, extra="workers = many\ndaemonize = /var/log/a.log\n"))
    query = "SELECT name, config, ts FROM vassals WHERE host = 'check'"
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--emperor", f"pg://{db.conninfo};{query}",
                           "--check-config"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "vassal bad.ini: bad.ini:6: processes: invalid int value 'many'" in proc.stderr
    assert "vassal bad.ini: bad.ini:7: unknown option 'daemonize'" in proc.stderr
    assert "good.ini" not in proc.stderr
    assert not list(workdir.glob("*.sock"))
