"""Apps written for uWSGI (`import uwsgi`, uwsgidecorators) run unchanged; gunicorn-style server hooks
from `--hooks FILE`, all with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import APPS, ROOT, fetch, http_request, wait_for

HOOKS = '''\
import os
OUT = {out!r}

def _line(*words):
    with open(OUT, "a") as fh:
        fh.write(" ".join(str(w) for w in words) + "\\n")

def on_starting(server):
    _line("on_starting", server.pid, server.num_workers)
    server.log.info("hook says hello")

def on_reload(server):
    _line("on_reload", server.pid)

def when_ready(server):
    _line("when_ready", server.pid)

def pre_fork(server, worker):
    _line("pre_fork", worker.wid, worker.pid)

def post_fork(server, worker):
    _line("post_fork", worker.age, worker.pid, os.getpid())

def worker_exit(server, worker):
    _line("worker_exit", worker.wid, os.getpid())

def child_exit(server, worker):
    _line("child_exit", worker.wid, worker.pid)

def on_exit(server):
    _line("on_exit", server.pid)

def worker_abort(worker):
    _line("worker_abort")

bind = "0.0.0.0:8000"  # a gunicorn setting: ignored, options come from zergserve's own sources
workers = 4
'''


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def named(path: Path, name: str) -> list[list[str]]:
    return [line[1:] for line in lines(path) if line[0] == name]


def test_gunicorn_hooks_at_start_reload_and_stop(spawn, workdir):
    out = workdir / "hooks.out"
    (workdir / "gunicorn.conf.py").write_text(HOOKS.format(out=str(out)))
    sock = str(workdir / "app.sock")
    server = spawn("--module", "echo:application", "--http", sock, "-p", "2", "--hooks", "gunicorn.conf.py",
                   wait=sock)
    wait_for(lambda: len(named(out, "post_fork")) == 2, message="post_fork in both workers")
    pid = str(server.pid)
    assert named(out, "on_starting") == [[pid, "2"]] and named(out, "when_ready") == [[pid]]
    assert [line[0] for line in lines(out)][:3] == ["on_starting", "when_ready", "pre_fork"]
    assert sorted(named(out, "pre_fork")) == [["1", "None"], ["2", "None"]]
    workers = {line[0]: line[1] for line in named(out, "post_fork")}
    assert set(workers) == {"1", "2"} and all(line[1] == line[2] for line in named(out, "post_fork"))
    assert set(workers.values()) == {str(p) for p in server.worker_pids()}
    assert "hooks from gunicorn.conf.py: on_starting, on_reload" in server.log()
    assert "hook says hello" in server.log()
    assert "hooks file gunicorn.conf.py: gunicorn's worker_abort hook is not called by zergserve" in server.log()

    server.signal(signal.SIGHUP)
    wait_for(lambda: len(named(out, "child_exit")) == 2, timeout=20, message="old workers reaped")
    assert named(out, "on_reload") == [[pid]] and len(named(out, "on_starting")) == 1
    assert len(named(out, "when_ready")) == 1
    assert sorted(line[1] for line in named(out, "worker_exit")) == sorted(workers.values())
    assert sorted(named(out, "child_exit")) == sorted([["0", p] for p in workers.values()])
    wait_for(lambda: len(named(out, "post_fork")) == 4, message="new workers forked")

    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert named(out, "on_exit") == [[pid]] and len(named(out, "child_exit")) == 4
    assert len(named(out, "worker_exit")) == 4


def test_a_hook_that_raises_is_logged_and_the_server_goes_on(spawn, workdir):
    (workdir / "hooks.py").write_text("def post_fork(server, worker):\n    raise RuntimeError('hook broke')\n")
    sock = str(workdir / "app.sock")
    server = spawn("--module", "echo:application", "--http", sock, "--hooks", "hooks.py", wait=sock)
    assert http_request(sock)[0] == 200
    log = server.wait_log("RuntimeError: hook broke")
    assert "hook post_fork (hooks.py) raised" in log


def test_a_broken_hooks_file_stops_the_start_and_aborts_a_reload(spawn, workdir):
    hooks = workdir / "hooks.py"
    hooks.write_text("def on_starting(server:\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    done = subprocess.run([sys.executable, "-m", "zergserve", "--module", "echo:application", "--http",
                           str(workdir / "x.sock"), "--hooks", str(hooks)], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and f"hooks file {str(hooks)!r} failed: SyntaxError" in done.stderr, done.stderr
    hooks.write_text("when_ready = 3\n")
    done = subprocess.run([sys.executable, "-m", "zergserve", "--module", "echo:application", "--http",
                           str(workdir / "x.sock"), "--hooks", str(hooks)], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "when_ready is not callable" in done.stderr, done.stderr
    hooks.write_text("def on_starting(server):\n    pass\n")
    sock = str(workdir / "app.sock")
    server = spawn("--module", "echo:application", "--http", sock, "--hooks", str(hooks), wait=sock)
    wait_for(lambda: http_request(sock)[0] == 200, message="the app serving")  # the socket listens before it
    hooks.write_text("def on_starting(server:\n")
    server.signal(signal.SIGHUP)
    server.wait_log("reload aborted", timeout=20)
    assert http_request(sock)[0] == 200


def info(sock: str) -> dict:
    status, _, body = http_request(sock, path="/info")
    assert status == 200, body
    return json.loads(body)


def test_an_app_written_for_uwsgi_runs_unchanged(spawn, workdir):
    sock = str(workdir / "app.sock")
    out = workdir / "postfork.out"
    server = spawn("--module", "uwsgi_api:application", "--http", sock, "-p", "2", "--set", "myapp-setting=hello",
                   "--env", f"UWSGI_API_OUT={out}", wait=sock)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 2, message="@postfork in both workers")
    forked = sorted(line.split() for line in out.read_text().splitlines())
    out.write_text("")
    assert [wid for wid, _ in forked] == ["1", "2"]
    assert {int(pid) for _, pid in forked} == set(server.worker_pids())
    item = info(sock)
    assert item["forked"] == {"wid": item["worker_id"], "pid": item["pid"]}
    assert item["masterpid"] == server.pid and item["numproc"] == 2
    assert item["processes"] == "2" and item["custom"] == "hello" and item["enable_threads"] is True
    assert item["mem"][1] > item["mem"][0] > 0
    status, _, body = http_request(sock, path="/procname")
    assert json.loads(body)["title"] == "uwsgi-app-title"
    old = set(server.worker_pids())
    assert json.loads(http_request(sock, path="/reload")[2]) == {"reload": True}
    server.wait_log("new workers ready", timeout=20)
    wait_for(lambda: old.isdisjoint(server.worker_pids()), message="old workers gone")
    assert info(sock)["masterpid"] == server.pid
    exited = sorted(line.split()[1:] for line in out.read_text().splitlines() if line.startswith("atexit"))
    assert exited == forked  # uwsgi.atexit ran in each old worker as it left


def test_uwsgi_lock_is_shared_by_the_workers(spawn, workdir):
    sock = str(workdir / "app.sock")
    stats = str(workdir / "stats.sock")
    spawn("--module", "uwsgi_api:application", "--http", sock, "-p", "2", "--stats", stats, wait=sock)
    wait_for(lambda: os.path.exists(stats) and [w["status"] for w in fetch(stats)["workers"]] == ["idle", "idle"],
             message="both workers accepting")
    record = workdir / "lock.out"
    pids: list[int] = []

    def hold() -> None:
        pids.append(json.loads(http_request(sock, path=f"/lock?{record}", timeout=10)[2])["pid"])

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(pids) == 4 and len(set(pids)) == 2, pids  # both workers took part
    events = [line.split() for line in record.read_text().splitlines()]
    assert len(events) == 8
    for begin, end in zip(events[::2], events[1::2]):  # never two holders at once
        assert begin[0] == "begin" and end == ["end", begin[1]], events


def test_import_uwsgi_fails_outside_zergserve_and_the_fallback_decorators_work(spawn, workdir):
    """`import uwsgi` is for apps zergserve runs, not for every Python process; where uWSGI's own
    uwsgidecorators is missing, zergserve's @postfork runs in each worker (@postfork(2) in worker 2)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    done = subprocess.run([sys.executable, "-c", "import zergserve.cli, uwsgi"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert "No module named 'uwsgi'" in done.stderr
    out = workdir / "postfork.out"
    (workdir / "fallback_app.py").write_text(
        "import uwsgi\n"
        "from zergserve.compat import uwsgidecorators\n"
        f"OUT = {str(out)!r}\n"
        "@uwsgidecorators.postfork\n"
        "def hello():\n"
        "    open(OUT, 'a').write(f'hello {uwsgi.worker_id()}\\n')\n"
        "@uwsgidecorators.postfork(2)\n"
        "def only_two():\n"
        "    open(OUT, 'a').write(f'two {uwsgi.worker_id()}\\n')\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    sock = str(workdir / "app.sock")
    spawn("--module", "fallback_app:application", "--http", sock, "-p", "2", "--chdir", str(workdir), wait=sock)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 3, message="three postfork calls")
    assert sorted(out.read_text().splitlines()) == ["hello 1", "hello 2", "two 2"]
