"""Idle, cheap, die-on-idle, the SOS watch, and broodlord: zergs spawned on load, gone when idle."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import APPS, ROOT, Bound, bound, fetch, handed_over, http_request, passed_fds, sent_requests, wait_for
from loadtest.probe import tcp_backlog
from test_emperor import Emperor
from zergserve.emperor.broodlord import Broodlord
from zergserve.emperor.throttle import Throttle
from zergserve.emperor.vassal import Vassal


def statuses(stats: str) -> list[str]:
    return [w["status"] for w in fetch(stats)["workers"]]


def test_idle_goes_cheap_and_first_request_is_served(spawn, workdir):
    listener = bound()
    addr = listener.addr
    stats = str(workdir / "s.sock")
    server = spawn("--module", "echo:application", "--http", listener.arg, "-p", "2", "--idle", "1", "--stats",
                   stats, wait=addr)
    assert http_request(addr)[0] == 200
    wait_for(lambda: statuses(stats) == ["cheap", "cheap"], timeout=10, message="cheap")
    assert server.worker_pids() == [] or wait_for(lambda: server.worker_pids() == [], message="workers gone")
    assert http_request(addr, timeout=10)[0] == 200  # waits in the backlog, served by a respawned worker
    wait_for(lambda: statuses(stats) == ["idle", "idle"], message="workers back")
    server.wait_log("cheap mode enabled")


def test_cheap_starts_without_workers(spawn, workdir):
    sock = str(workdir / "c.sock")
    stats = str(workdir / "s.sock")
    server = spawn("--module", "echo:application", "--http", sock, "--cheap", "--stats", stats)
    wait_for(lambda: os.path.exists(stats) and fetch(stats))  # no probe on the http socket: it would wake it
    assert statuses(stats) == ["cheap"] and server.worker_pids() == []
    assert http_request(sock, timeout=10)[2] == b"hello"


def test_die_on_idle_instance_exits(spawn, workdir):
    listener = bound()
    server = spawn("--module", "echo:application", "--http", listener.arg, "--idle", "1", "--die-on-idle",
                   wait=listener.addr)
    assert server.wait_exit(15) == 0
    assert "inactive for more than 1 seconds" in server.log()


class FakeEmperor:
    """The test holds the emperor's end of the socketpair and reads what the vassal says; `fd://N`
    arguments (`bound()` listeners) are handed to the vassal."""

    def __init__(self, workdir, *args: str) -> None:
        self.ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]),
                   UWSGI_EMPEROR_FD=str(theirs.fileno()))
        self.log = open(workdir / "vassal.log", "wb")
        fds = passed_fds(args)
        self.proc = subprocess.Popen([sys.executable, "-m", "zergserve", *args], env=env, cwd=workdir,
                                     pass_fds=[theirs.fileno(), *fds], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        theirs.close()
        handed_over(fds)
        self.ours.settimeout(0.2)
        self.received: list[int] = []
        self.arrived: list[float] = []  # time.monotonic() of each received byte, as read

    def read(self) -> list[int]:
        try:
            while data := self.ours.recv(64):
                self.received.extend(data)
                self.arrived.extend([time.monotonic()] * len(data))
        except (socket.timeout, BlockingIOError):
            pass
        return self.received

    def times_of(self, byte: int) -> list[float]:
        return [at for got, at in zip(self.received, self.arrived) if got == byte]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.ours.close()
        self.log.close()


@pytest.fixture
def fake_emperor(workdir):
    made: list[FakeEmperor] = []

    def make(*args: str) -> FakeEmperor:
        made.append(FakeEmperor(workdir, *args))
        return made[-1]

    yield make
    for item in made:
        item.close()


def block_worker(addr: str, seconds: float, count: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=lambda: _quiet(addr, seconds), daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _quiet(addr: str, seconds: float) -> None:
    try:
        http_request(addr, "GET", f"/sleep?s={seconds}", timeout=30)
    except Exception:  # noqa: BLE001 - load only
        pass


def queued(stats: str) -> int:
    return fetch(stats)["listen_queue"]


def sos_vassal(fake_emperor, workdir, listener: Bound, threshold: int, cycle: float) -> tuple[FakeEmperor, str]:
    """A one-worker vassal on the `bound()` listener with --vassal-sos-backlog, accepting; and its stats address."""
    stats = str(workdir / "s.sock")
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "-p", "1", "--stats", stats,
                          "--vassal-sos-backlog", str(threshold), "--check-interval", str(cycle))
    wait_for(lambda: 5 in vassal.read(), message="vassal accepting (byte 5)")
    return vassal, stats


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_sos_at_the_backlog_threshold_and_not_below(fake_emperor, workdir, kind):
    listener = bound(workdir / "q.sock" if kind == "unix" else None)
    addr = listener.addr
    vassal, stats = sos_vassal(fake_emperor, workdir, listener, 3, 0.25)
    block_worker(addr, 10, 1)
    wait_for(lambda: statuses(stats) == ["busy"], message="the only worker busy")
    block_worker(addr, 0.1, 2)
    wait_for(lambda: queued(stats) == 2, message="N-1 = 2 connections queued")
    deadline = time.monotonic() + 1.0  # four master cycles at N-1: none may call for help
    while time.monotonic() < deadline:
        assert 30 not in vassal.read()
    block_worker(addr, 0.1, 1)
    wait_for(lambda: queued(stats) == 3, message="N = 3 connections queued")
    wait_for(lambda: 30 in vassal.read(), timeout=5, message="SOS byte at exactly N queued")


def test_sos_once_per_cycle_however_busy_the_master_loop(fake_emperor, workdir):
    listener = bound()
    addr = listener.addr
    vassal, stats = sos_vassal(fake_emperor, workdir, listener, 1, 0.5)
    block_worker(addr, 10, 3)
    stop = threading.Event()
    polls = [0]

    def hammer() -> None:  # every stats read is an event in the master's loop
        while not stop.is_set():
            try:
                fetch(stats)
                polls[0] += 1
            except (OSError, ValueError):
                pass

    poller = threading.Thread(target=hammer, daemon=True)
    poller.start()
    try:
        first = wait_for(lambda: vassal.times_of(30) if vassal.read() else None, timeout=5, message="first SOS")[0]
        wait_for(lambda: vassal.read() and time.monotonic() > first + 2.0, timeout=5, message="two more seconds")
    finally:
        stop.set()
        poller.join(5)
    calls = sorted({at for at in vassal.times_of(30) if at <= first + 2.0})  # 30s read together: one call
    assert polls[0] > 20  # the loop really was busy
    assert len(calls) <= 2.0 / 0.5 + 1, f"{len(calls)} SOS in 2 s with a 0.5 s cycle"


def test_sos_asks_for_as_many_zergs_as_threshold_sized_queues(fake_emperor, workdir):
    """Six queued at a threshold of 2: three zergs' worth, asked as three 30s in one write."""
    listener = bound()
    addr = listener.addr
    vassal, stats = sos_vassal(fake_emperor, workdir, listener, 2, 0.5)
    block_worker(addr, 10, 1)
    wait_for(lambda: statuses(stats) == ["busy"], message="the only worker busy")
    os.kill(vassal.proc.pid, signal.SIGSTOP)  # the master sees all six at once, not one by one
    try:
        block_worker(addr, 0.1, 6)
        wait_for(lambda: tcp_backlog(listener.port) == 6, message="six queued (read from the kernel)")
    finally:
        os.kill(vassal.proc.pid, signal.SIGCONT)
    wait_for(lambda: 30 in vassal.read(), timeout=5, message="SOS")
    first = vassal.times_of(30)[0]
    assert vassal.times_of(30).count(first) == 3, f"asked for {vassal.times_of(30).count(first)} zergs"
    assert "6 connections queued" in open(workdir / "vassal.log").read()


def test_vassal_sos_when_no_worker_idle_for_s_with_short_requests(fake_emperor, workdir):
    listener = bound()
    addr = listener.addr
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "-p", "1", "--vassal-sos", "1",
                          "--check-interval", "0.25")
    wait_for(lambda: 5 in vassal.read(), message="vassal accepting (byte 5)")
    stop = threading.Event()

    def back_to_back() -> None:  # no request lasts S, but the worker is never idle
        while not stop.is_set():
            _quiet(addr, 0.05)

    threads = [threading.Thread(target=back_to_back, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: vassal.read().count(30) >= 2, timeout=8, message="two SOS under steady short requests")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    sos = vassal.times_of(30)
    assert all(b - a > 0.9 for a, b in zip(sos, sos[1:])), f"SOS more than once per S: {sos}"


def test_vassal_sos_waits_until_cheaper_runs_all_processes(fake_emperor, workdir):
    """uWSGI counts busy workers against -p: while the cheaper subsystem can still add workers,
    more workers are the help, not zergs."""
    listener = bound()
    addr = listener.addr
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "-p", "3", "--cheaper", "1",
                          "--cheaper-overload", "1", "--vassal-sos", "1", "--check-interval", "0.25")
    wait_for(lambda: 5 in vassal.read(), message="vassal accepting (byte 5)")
    block_worker(addr, 6, 4)  # the fixture's kill ends them
    wait_for(lambda: 30 in vassal.read(), timeout=15, message="SOS once cheaper has no room left")
    log = open(workdir / "vassal.log").read()
    assert "now 3 workers" in log and log.index("now 3 workers") < log.index("SOS: no idle worker"), log[-3000:]


def test_accepting_is_sent_when_the_worker_is_ready_not_at_the_next_cycle(fake_emperor, workdir):
    listener = bound()
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "--check-interval", "30")
    wait_for(lambda: 5 in vassal.read(), timeout=10, message="byte 5 long before a 30 s cycle")


def test_ttin_while_cheap_raises_the_count_and_the_wake_up_spawns_all(spawn, workdir):
    sock = str(workdir / "c.sock")
    stats = str(workdir / "s.sock")
    server = spawn("--module", "echo:application", "--http", sock, "--cheap", "--stats", stats)
    wait_for(lambda: os.path.exists(stats) and statuses(stats) == ["cheap"], message="cheap")
    server.signal(signal.SIGTTIN)
    wait_for(lambda: statuses(stats) == ["cheap", "cheap"], message="two cheap workers")
    assert server.worker_pids() == []
    assert http_request(sock, timeout=10)[2] == b"hello"
    wait_for(lambda: statuses(stats) == ["idle", "idle"], message="both workers up")
    assert "crashed" not in server.log() and "exited with code" not in server.log()


def test_stop_after_asking_to_die_is_graceful(fake_emperor, workdir):
    listener = bound()
    addr = listener.addr
    stats = str(workdir / "s.sock")
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "-p", "1", "--stats", stats,
                          "--idle", "1", "--die-on-idle")
    wait_for(lambda: 22 in vassal.read(), timeout=10, message="voluntary shutdown byte")
    wait_for(lambda: statuses(stats) == ["cheap"], message="no worker accepting after byte 22")
    result: list = []
    client = threading.Thread(target=lambda: result.append(http_request(addr, "GET", "/sleep?s=1", timeout=10)))
    client.start()  # lands between 22 and the emperor's answer
    wait_for(lambda: statuses(stats) == ["busy"], message="the late request in flight")
    vassal.ours.send(b"\x00")
    client.join(10)
    assert result and result[0][0] == 200
    assert vassal.proc.wait(10) == 0


def test_vassal_sends_22_when_idle_and_stops_on_0(fake_emperor, workdir):
    listener = bound()
    vassal = fake_emperor("--module", "echo:application", "--http", listener.arg, "--idle", "1", "--die-on-idle")
    wait_for(lambda: 22 in vassal.read(), timeout=10, message="voluntary shutdown byte")
    vassal.ours.send(b"\x00")
    assert vassal.proc.wait(10) == 0


def test_vassal_obeys_eof_from_emperor(fake_emperor, workdir):
    vassal = fake_emperor("--module", "echo:application", "--http", bound().arg)
    wait_for(lambda: 1 in vassal.read(), message="spawned byte")
    vassal.ours.close()
    assert vassal.proc.wait(10) == 1


def broodlord_vassal(emperor: Emperor, zsock: str, idle: int = 2) -> str:
    """The vassal binds its own HTTP socket (the emperor passes it none): a UNIX one in the workdir."""
    addr = str(emperor.dir.parent / "brood-http.sock")
    path = emperor.dir / "brood.ini"
    path.write_text(
        "[uwsgi]\n"
        f"chdir = {APPS}\nmodule = echo:application\nhttp = {addr}\nprocesses = 1\n"
        f"zerg-server = {zsock}\nvassal-sos-backlog = 2\n"
        "[zerg]\n"
        f"chdir = {APPS}\nmodule = echo:application\nzerg = {zsock}\nprocesses = 1\n"
        f"idle = {idle}\ndie-on-idle = true\n")
    return addr


def zergs(emperor: Emperor) -> list[dict]:
    return [v for v in emperor.doc()["vassals"] if v["id"] == "brood.ini:zerg"]


def test_broodlord_spawns_up_to_n_then_zergs_die_when_idle(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "2")
    addr = broodlord_vassal(emperor, str(workdir / "brood.zerg"))
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")
    stop = threading.Event()
    seen: list[int] = []

    def load() -> None:
        while not stop.is_set():
            _quiet(addr, 0.3)

    def count() -> int:
        seen.append(len(zergs(emperor)))
        return seen[-1]

    threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: any(z["accepting"] for z in zergs(emperor)), timeout=15, message="a zerg serving")
    wait_for(lambda: count() == 2, timeout=15, message="N = 2 zergs under the load")
    sos = emperor.vassal("brood.ini")["sos"]
    # Four more of the vassal's SOS calls (the emperor counts them) under the same load: still N.
    wait_for(lambda: count() and emperor.vassal("brood.ini")["sos"] >= sos + 4, timeout=15,
             message="four more calls for help")
    stop.set()
    for thread in threads:
        thread.join(10)
    assert max(seen) == 2, seen  # up to N and no more
    wait_for(lambda: zergs(emperor) == [], timeout=20, message="zergs gone after idle")
    assert "brood.ini:zerg" in emperor.server.log() and "asks to shut down" in emperor.server.log()
    assert "received message 2 from emperor" in emperor.server.log()  # 22 is answered by a graceful stop
    assert all(e["id"] != "brood.ini:zerg" for e in emperor.doc()["blacklist"])


def test_removing_the_vassal_file_stops_its_zergs(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "1")
    addr = broodlord_vassal(emperor, str(workdir / "brood.zerg"), idle=60)
    wait_for(lambda: http_request(addr)[0] == 200)
    block_worker(addr, 3, 4)
    wait_for(lambda: zergs(emperor), timeout=15, message="a zerg")
    (emperor.dir / "brood.ini").unlink()
    wait_for(lambda: emperor.doc()["vassals"] == [], timeout=20, message="vassal and zerg stopped")


def loaded_vassal(emperor: Emperor, zerg_section: str, extra: str = "") -> str:
    """A vassal that calls for help four times a second once one connection waits; it binds its own
    HTTP socket (the emperor passes it none): a UNIX one in the workdir."""
    addr = str(emperor.dir.parent / "brood-http.sock")
    (emperor.dir / "brood.ini").write_text(
        "[uwsgi]\n"
        f"chdir = {APPS}\nmodule = echo:application\nhttp = {addr}\nprocesses = 1\n"
        f"zerg-server = {emperor.dir.parent / 'brood.zerg'}\nvassal-sos-backlog = 1\ncheck-interval = 0.25\n{extra}"
        "[zerg]\n"
        f"chdir = {APPS}\nzerg = {emperor.dir.parent / 'brood.zerg'}\nprocesses = 1\n{zerg_section}")
    wait_for(lambda: http_request(addr)[0] == 200, timeout=15, message="vassal serving")
    return addr


def test_one_call_for_several_zergs_starts_them_at_once_and_no_more(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "3")
    addr = broodlord_vassal(emperor, str(workdir / "brood.zerg"), idle=60)
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")
    # The vassal's master is stopped while the requests queue: its backlog watch then sees the whole
    # queue at once, as it would a burst, and not the part of it that client threads made so far.
    master = emperor.vassal("brood.ini")["pid"]
    os.kill(master, signal.SIGSTOP)
    try:
        clients = sent_requests(addr, "/sleep?s=4", 12)  # the worker takes one, 11 wait
    finally:
        os.kill(master, signal.SIGCONT)
    try:
        line = wait_for(lambda: re.search(r"sent SOS for (\d+) zerg\(s\): spawning (\d+)", emperor.server.log()),
                        timeout=15, message="an SOS answered")
        assert int(line.group(2)) >= 2, line.group(0)  # a queue of 11 at a threshold of 2 is more than one zerg
        wait_for(lambda: [z["accepting"] for z in zergs(emperor)] == [1, 1, 1], timeout=20,
                 message="three zergs serving")
        assert emperor.server.log().count("vassal brood.ini:zerg spawned") == 3
    finally:
        for client in clients:
            client.close()


def test_zerg_failing_at_boot_is_throttled(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "1", "--emperor-throttle", "5000")
    addr = loaded_vassal(emperor, "module = echo:application\nno-such-option = 1\n")
    block_worker(addr, 8, 3)
    wait_for(lambda: any(e["id"] == "brood.ini:zerg" for e in emperor.doc()["blacklist"]), timeout=10,
             message="the failed zerg blacklisted")
    spawned = emperor.server.log().count("vassal brood.ini:zerg spawned")
    asked = emperor.vassal("brood.ini")["sos"]
    wait_for(lambda: emperor.vassal("brood.ini")["sos"] >= asked + 3, timeout=5, message="three more SOS")
    assert emperor.server.log().count("vassal brood.ini:zerg spawned") == spawned == 1
    assert "zerg brood.ini:zerg failed to boot (exit 2)" in emperor.server.log()
    assert emperor.vassal("brood.ini")["pid"] > 0 and all(e["id"] != "brood.ini" for e in emperor.doc()["blacklist"])


def test_zerg_stuck_booting_is_killed_and_another_starts(spawn, workdir):
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "1", "--emperor-broodlord-boot-timeout", "1",
                      "--emperor-throttle", "100")
    addr = loaded_vassal(emperor, f"module = slowboot:application\nenv = SLOWBOOT_MARKER={workdir}/booted\n")
    block_worker(addr, 8, 3)
    emperor.server.wait_log("not accepting 1s after its spawn: killing it", timeout=10)
    wait_for(lambda: any(z["accepting"] for z in zergs(emperor)), timeout=10, message="a second zerg accepting")
    assert emperor.server.log().count("vassal brood.ini:zerg spawned") == 2


class GlobEmperor(Emperor):
    """The same emperor, finding its vassals through glob:// (uWSGI #2166: broodlord for every monitor)."""

    def __init__(self, spawn, workdir, *extra: str) -> None:
        self.dir = workdir / "vassals"
        self.dir.mkdir(exist_ok=True)
        self.stats = str(workdir / "emperor.stats")
        self.server = spawn("--emperor", f"glob://{self.dir}/*.ini", "--emperor-stats", self.stats, *extra)
        wait_for(lambda: fetch(self.stats), message="emperor stats socket answering")  # its file exists before it listens


def test_broodlord_with_a_glob_monitor_numbers_its_zergs(spawn, workdir):
    emperor = GlobEmperor(spawn, workdir, "--emperor-broodlord", "2")
    # each zerg names its stats socket after UWSGI_BROODLORD_NUM, the emperor's spawn counter
    addr = loaded_vassal(emperor, "module = echo:application\nidle = 30\ndie-on-idle = true\n"
                                  f"stats = {workdir}/zerg-$(UWSGI_BROODLORD_NUM).stats\n")
    block_worker(addr, 8, 6)
    name = f"{emperor.dir}/brood.ini:zerg"
    wait_for(lambda: [z["accepting"] for z in emperor.doc()["vassals"] if z["id"] == name] == [1, 1], timeout=15,
             message="two zergs of a glob:// vassal accepting")
    pids = sorted(fetch(str(workdir / f"zerg-{n}.stats"))["pid"] for n in (1, 2))
    assert pids == sorted(z["pid"] for z in emperor.doc()["vassals"] if z["id"] == name)


def test_a_file_named_like_the_zerg_is_never_read_in_its_place(spawn, workdir):
    """Issue 8 item 1: `--ini brood.ini:zerg` means the [zerg] section, unless a file of that very
    name exists: then it was that file that ran. The emperor spawns no zerg while the file is
    there, and says why once."""
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "1")
    stranger = workdir / "stranger.sock"
    (emperor.dir / "brood.ini:zerg").write_text(
        f"[uwsgi]\nchdir = {APPS}\nmodule = echo:application\nhttp = {stranger}\n")
    addr = loaded_vassal(emperor, "module = echo:application\n")
    block_worker(addr, 8, 3)
    emperor.server.wait_log("no zerg for vassal brood.ini: a file named brood.ini:zerg exists")
    asked = emperor.vassal("brood.ini")["sos"]
    wait_for(lambda: emperor.vassal("brood.ini")["sos"] >= asked + 2, timeout=5, message="two more SOS")
    assert zergs(emperor) == [] and "vassal brood.ini:zerg spawned" not in emperor.server.log()
    assert emperor.server.log().count("no zerg for vassal brood.ini") == 1
    with pytest.raises(OSError):
        http_request(str(stranger))


class _Monitor:
    def path_of(self, name: str) -> str:
        return f"/nonexistent/{name}"


class _Emperor:
    """What Broodlord.sos() reads of the emperor: settings, vassals, the throttle; add() records."""

    def __init__(self) -> None:
        self.cfg = SimpleNamespace(emperor_broodlord=1, emperor_throttle=5000, emperor_no_blacklist=False)
        self.throttle = Throttle(burst=1, step_ms=1000, max_ms=60000)
        self.vassals: dict = {}
        self.refused: dict = {}
        self.added: list = []

    def add(self, file, monitor, mtime, zerg=False):
        vassal = self.vassals[file + ":zerg"] = Vassal(file, monitor, mtime, zerg=zerg)
        self.added.append(vassal)
        return vassal


def test_no_zerg_spawns_while_one_that_never_accepted_is_on_its_way_out():
    """Its end of the socketpair closed (cursed) but not yet reaped: its exit code decides whether
    the next one is throttled, so an SOS in between must wait for it (soak: two spawns of a broken
    [zerg] section 0.1 s apart)."""
    emperor = _Emperor()
    broodlord = Broodlord(emperor)
    vassal = emperor.vassals["brood.ini"] = Vassal("brood.ini", _Monitor(), 0.0)
    broodlord.sos(vassal, 1)
    assert [z.name for z in emperor.added] == ["brood.ini:zerg"]
    zerg = emperor.added[0]
    zerg.set_stopping()  # what the emperor does at its EOF, before _reap() sees the exit
    broodlord.sos(vassal, 16)
    assert len(emperor.added) == 1
    broodlord.exited(zerg, 2)  # reaped: a failed boot
    del emperor.vassals["brood.ini:zerg"]
    broodlord.sos(vassal, 16)
    assert len(emperor.added) == 1 and emperor.throttle.backoff("brood.ini:zerg") > 0
