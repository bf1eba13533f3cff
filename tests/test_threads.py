"""The gthread worker (--threads N) with real processes: N requests at once per process, kept-alive
connections that hold no thread, harakiri, graceful stops and reloads, max-requests, config."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT, connect, http_request, responses, wait_for
from conftest import fetch


def start(spawn, workdir: Path, *extra: str, threads: int = 4):
    http, stats = str(workdir / "http.sock"), str(workdir / "stats.sock")
    server = spawn("--module", "echo:application", "--http", http, "-p", "1", "-k", "gthread",
                   "--threads", str(threads), "--stats", stats, "--worker-reload-mercy", "10", *extra, wait=http)
    server.addr, server.stats = http, stats
    wait_for(lambda: worker(server)["status"] == "idle", message="the worker idle")
    return server


def worker(server) -> dict:
    return fetch(server.stats)["workers"][0]


def in_flight(server) -> int:
    return sum(core["in_request"] for core in worker(server)["cores"])


class Gated:
    """Requests held in the app until `release()` (the /gate path waits for a file)."""

    def __init__(self, server, workdir: Path) -> None:
        self.server = server
        self.gate = workdir / "gate"
        self.results: list[tuple[int, bytes]] = []
        self.threads: list[threading.Thread] = []

    def send(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _one(self) -> None:
        status, _, body = http_request(self.server.addr, "GET", f"/gate?f={self.gate}", timeout=30)
        self.results.append((status, body))

    def release(self) -> list[tuple[int, bytes]]:
        self.gate.touch()
        for thread in self.threads:
            thread.join(30)
        return self.results


def test_n_requests_at_once_in_one_process_busy_only_when_all_threads_are(spawn, workdir):
    server = start(spawn, workdir)
    first = worker(server)
    assert first["status"] == "idle" and len(first["cores"]) == 4
    gated = Gated(server, workdir)
    gated.send(3)
    wait_for(lambda: in_flight(server) == 3, message="3 requests in flight")
    assert worker(server)["status"] == "idle"  # a thread is free: not busy for cheaper, idle and SOS
    gated.send(1)
    wait_for(lambda: in_flight(server) == 4 and worker(server)["status"] == "busy", message="4 in flight, busy")
    results = gated.release()
    assert [status for status, _ in results] == [200] * 4
    assert len({body for _, body in results}) == 1  # one process served them all
    wait_for(lambda: worker(server)["status"] == "idle" and in_flight(server) == 0, message="idle again")
    assert sum(core["requests"] for core in worker(server)["cores"]) == 4


def test_kept_alive_connections_wait_in_the_poller_not_in_a_thread(spawn, workdir):
    """With one thread and a long --keep-alive, connections taking turns are each answered: a thread
    held by a kept-alive connection between its requests would leave the others waiting."""
    server = start(spawn, workdir, "--keep-alive", "30", threads=1)
    socks = [connect(server.addr) for _ in range(3)]
    request = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        for _ in range(3):
            for sock in socks:
                sock.sendall(request)
                (reply,) = responses(sock, 1)
                assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" not in reply.lower()
        socks[0].sendall(request * 3)  # pipelined on a parked connection
        assert all(r.startswith(b"HTTP/1.1 200") for r in responses(socks[0], 3))
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: worker(server)["requests"] == 12, message="12 requests counted")


def test_harakiri_kills_the_worker_of_a_stuck_thread_while_others_finish(spawn, workdir):
    server = start(spawn, workdir, "--harakiri", "2")
    pid = worker(server)["pid"]
    def stuck_request() -> None:
        try:
            http_request(server.addr, "GET", "/sleep?s=60", timeout=30)
        except OSError:
            pass  # harakiri closes it unanswered

    stuck = threading.Thread(target=stuck_request, daemon=True)
    stuck.start()
    wait_for(lambda: in_flight(server) == 1, message="the stuck request in flight")
    while "HARAKIRI ON WORKER 1" not in server.log():  # other threads go on finishing requests
        try:
            status = http_request(server.addr, "GET", "/", timeout=10)[0]
        except (OSError, http.client.HTTPException):
            status = 0  # in flight when the worker was killed
        assert status == 200 or "HARAKIRI" in server.log()
    assert "/sleep?s=60" in server.log()
    wait_for(lambda: worker(server)["pid"] not in (0, pid) and worker(server)["harakiri_count"] == 1,
             message="a new worker after harakiri")
    assert http_request(server.addr, "GET", "/")[0] == 200


def test_term_finishes_the_requests_in_flight(spawn, workdir):
    server = start(spawn, workdir)
    gated = Gated(server, workdir)
    gated.send(3)
    wait_for(lambda: in_flight(server) == 3, message="3 requests in flight")
    server.signal(signal.SIGTERM)
    server.wait_log("stopping")
    assert [status for status, _ in gated.release()] == [200] * 3
    assert server.wait_exit() == 0


def test_hup_finishes_the_requests_in_flight_and_new_workers_serve(spawn, workdir):
    server = start(spawn, workdir)
    pid = worker(server)["pid"]
    gated = Gated(server, workdir)
    gated.send(2)
    wait_for(lambda: in_flight(server) == 2, message="2 requests in flight")
    server.signal(signal.SIGHUP)
    wait_for(lambda: worker(server)["pid"] not in (0, pid), timeout=20, message="a new worker")
    results = gated.release()
    assert [status for status, _ in results] == [200] * 2 and {body for _, body in results} == {str(pid).encode()}
    assert http_request(server.addr, "GET", "/")[0] == 200


def test_max_requests_recycles_a_threaded_worker(spawn, workdir):
    server = start(spawn, workdir, "--max-requests", "5", threads=2)
    pids = {http_request(server.addr, "GET", "/pid")[2] for _ in range(12)}
    assert len(pids) >= 2
    assert "max-requests (5) reached" in server.log()


def test_uwsgi_ini_threads_and_stacksize(spawn, workdir):
    ini = workdir / "app.ini"
    http = str(workdir / "http.sock")
    ini.write_text(f"[uwsgi]\nmodule = echo:application\nhttp = {http}\nprocesses = 2\nthreads = 3\n"
                   "threads-stacksize = 512\n")
    server = spawn(str(ini), wait=http)
    server.wait_log("2 gthread worker(s)")
    status, _, body = http_request(http, "GET", "/stacksize")
    assert status == 200 and int(body) == 512 * 1024
    assert "unknown option" not in server.log()


def test_gunicorn_gthread_and_refusals():
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'apps'}", "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "zergserve", "--print-config", *args], env=env,
                              capture_output=True, text=True, timeout=30)

    import json
    chosen = json.loads(run("-k", "gthread", "--threads", "4").stdout)
    assert (chosen["worker"], chosen["threads"]) == ("gthread", 4)
    assert json.loads(run("--threads", "2").stdout)["worker"] == "gthread"
    assert json.loads(run("--threads", "1").stdout)["worker"] == "sync"
    for worker_class in ("gevent", "asyncio"):
        refused = run("--worker", worker_class, "--threads", "4")
        assert refused.returncode == 2
        assert f"threads 4 cannot go with the {worker_class} worker" in refused.stderr


def test_threads_in_a_zerg_and_its_server(spawn, workdir):
    """A zerg with threads serves the server's sockets N at once while the server is paused."""
    from test_zerg import instance, zerg
    main = instance(spawn, workdir, extra=("--threads", "2"))
    z = zerg(spawn, workdir, main.zsock, extra=("--threads", "3"))
    main.signal(signal.SIGTSTP)
    wait_for(lambda: fetch(main.stats)["workers"][0]["status"] == "pause", message="main paused")
    z.addr = main.addr
    gated = Gated(z, workdir)
    gated.send(3)
    z_in_flight = lambda: sum(core["in_request"] for core in fetch(z.stats)["workers"][0]["cores"])  # noqa: E731
    wait_for(lambda: z_in_flight() == 3 and fetch(z.stats)["workers"][0]["status"] == "busy",
             message="3 requests in flight in the zerg")
    zerg_pid = str(fetch(z.stats)["workers"][0]["pid"]).encode()
    assert {body for _, body in gated.release()} == {zerg_pid}


def test_a_vassal_with_threads_serves_them_at_once(spawn, workdir):
    from test_emperor import Emperor
    emperor = Emperor(spawn, workdir)
    stats = str(workdir / "vassal.stats")
    addr = emperor.write("app.ini", extra=f"threads = 3\nstats = {stats}\n")
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")

    class Vassal:
        pass
    vassal = Vassal()
    vassal.addr, vassal.stats = addr, stats
    gated = Gated(vassal, workdir)
    gated.send(3)
    wait_for(lambda: in_flight(vassal) == 3 and worker(vassal)["status"] == "busy", message="3 in flight")
    assert [status for status, _ in gated.release()] == [200] * 3


def test_term_answers_the_connections_queued_while_every_thread_was_busy(spawn, workdir):
    server = start(spawn, workdir, threads=1)
    gated = Gated(server, workdir)
    gated.send(1)
    wait_for(lambda: in_flight(server) == 1, message="the only thread busy")
    queued: list[int] = []
    clients = [threading.Thread(target=lambda: queued.append(http_request(server.addr, "GET", "/", timeout=30)[0]),
                                daemon=True) for _ in range(2)]
    for client in clients:
        client.start()
    wait_for(lambda: fetch(server.stats)["sockets"][0]["queue"] == 2, message="2 connections queued")
    server.signal(signal.SIGTERM)
    server.wait_log("stopping")
    for client in clients:
        client.join(30)
    assert queued == [200, 200]  # served on the way out, while the gated request still runs
    assert [status for status, _ in gated.release()] == [200]
    assert server.wait_exit() == 0


def test_broodlord_zergs_with_threads_take_the_queue_of_a_threaded_vassal(spawn, workdir):
    """Both threads of the vassal held, its queue asks for a zerg (threads too), which serves from it;
    idle again, the zerg leaves."""
    from conftest import APPS
    from test_emperor import Emperor
    from test_broodlord import zergs
    emperor = Emperor(spawn, workdir, "--emperor-broodlord", "1")
    addr, zsock = str(workdir / "brood.sock"), str(workdir / "brood.zerg")
    (emperor.dir / "brood.ini").write_text(
        "[uwsgi]\n"
        f"chdir = {APPS}\nmodule = echo:application\nhttp = {addr}\nprocesses = 1\nthreads = 2\n"
        f"zerg-server = {zsock}\nvassal-sos-backlog = 2\nstats = {workdir / 'vassal.stats'}\n"
        "[zerg]\n"
        f"chdir = {APPS}\nmodule = echo:application\nzerg = {zsock}\nprocesses = 1\nthreads = 2\n"
        "idle = 2\ndie-on-idle = true\n")
    wait_for(lambda: http_request(addr)[0] == 200, message="vassal serving")

    class Target:
        pass
    target = Target()
    target.addr = addr
    gated = Gated(target, workdir)
    gated.send(6)
    wait_for(lambda: any(z["accepting"] for z in zergs(emperor)), timeout=20, message="a zerg serving")
    stats = str(workdir / "vassal.stats")
    wait_for(lambda: fetch(stats)["sockets"][0]["queue"] == 2, message="the zerg's 2 threads took 2 of 4 queued")
    results = gated.release()
    assert [status for status, _ in results] == [200] * 6
    assert len({body for _, body in results}) == 2  # the vassal's worker and the zerg's
    wait_for(lambda: zergs(emperor) == [], timeout=20, message="the zerg gone after idle")


def test_cheaper_adds_a_worker_once_every_thread_is_busy_and_stops_it_when_quiet(spawn, workdir):
    from test_cheaper import grow_and_shrink
    from test_cheaper import start as start_cheaper
    server, sock, stats = start_cheaper(spawn, workdir, "-p", "2", "--threads", "2", "--cheaper", "1",
                                        "--cheaper-overload", "1")
    grow_and_shrink(server, sock, stats, workdir, held=4, most=2, least=1)
    assert "cheaper (spare): all 1 worker(s) busy for 1s: now 2 workers" in server.log()
