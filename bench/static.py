"""Static files: zergserve --static-map against uWSGI --static-map, in the same run, on a 100 kB file.

    python bench/static.py [--duration 5] [--connections 50] [--workers 2] [--rounds 2]

Both serve bench/hello.py with --static-map /static=DIR and the same number of workers; wrk loads
/static/file.bin on loopback, and then / (the app's hello) for scale: the ratio on / is what the
request path costs, the ratio on the file adds what the static layer costs. Two families, as in bench/run.py: HTTP served by the workers
(zergserve --http, one line per worker class, against uWSGI --http-socket; clients close after each
response, as those servers do) and behind nginx `uwsgi_pass` over a UNIX socket. uWSGI is the
`uwsgi` on PATH (else bench/.peers), zergserve this tree run by this interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import HERE, PEERS, ROOT, free_port, start_nginx, stop, wait_tcp, wait_unix, wrk

SIZE = 100 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="measure every target this many times, interleaved, and keep its best run")
    args = parser.parse_args()
    uwsgi = shutil.which("uwsgi") or str(PEERS / "bin" / "uwsgi")
    tmp = Path(tempfile.mkdtemp(prefix="zsstatic-"))
    (tmp / "files").mkdir()
    (tmp / "files" / "file.bin").write_bytes(os.urandom(SIZE))
    best: dict[tuple[str, str], float] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            for name, family, cmd in targets(uwsgi, tmp, args.workers):
                for path, rps in measure(family, cmd, tmp, args).items():
                    print(f"round {round_no} {name:24} {path:18} {rps:8.0f} req/s", flush=True)
                    best[name, path] = max(best.get((name, path), 0.0), rps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| target | path | req/s | ratio to uWSGI |\n|---|---|---|---|")
    for (name, path), rps in best.items():
        peer = best.get(("uwsgi-" + name.split("-")[1], path))
        ratio = f"{rps / peer:.2f}x" if name.startswith("zergserve") and peer else ""
        print(f"| {name} | {path} | {rps:.0f} | {ratio} |")
    return 0


def targets(uwsgi: str, tmp: Path, workers: int) -> list[tuple[str, str, list[str]]]:
    static = ["--static-map", f"/static={tmp / 'files'}"]
    zerg = [sys.executable, "-m", "zergserve", "--chdir", str(HERE), "--module", "hello:application",
            "-p", str(workers), "--master", "--disable-logging", *static]
    peer = [uwsgi, "--chdir", str(HERE), "--module", "hello:application", "-p", str(workers), "--master",
            "--disable-logging", "--die-on-term", *static]
    sock = str(tmp / "app.sock")
    found = [("zergserve-uwsgi-sync", "nginx", zerg + ["--socket", sock]),
             ("uwsgi-uwsgi", "nginx", peer + ["--socket", sock])]
    for worker in ("sync", "gevent"):
        found.append((f"zergserve-http-{worker}", "http", zerg + ["--worker", worker, "--http", ""]))
    found.append(("uwsgi-http", "http", peer + ["--http-socket", ""]))
    return found


def measure(family: str, cmd: list[str], tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    http = f"127.0.0.1:{free_port()}"
    cmd = [http if part == "" else part for part in cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp / "server.log", "ab") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    nginx = None
    try:
        if family == "nginx":
            wait_unix(cmd[cmd.index("--socket") + 1])
            nginx, url = start_nginx(tmp, cmd[cmd.index("--socket") + 1])
        else:
            wait_tcp(http)
            url = f"http://{http}/"
        close = family == "http"
        found = {}
        for path in ("/static/file.bin", "/"):
            wrk(url + path[1:], 1, 10, 2, close)  # warm-up
            out = wrk(url + path[1:], args.duration, args.connections, 2, close)
            if out["errors"]:
                print(f"  {path}: {out['errors']} errors", flush=True)
            found[path] = out["rps"]
        return found
    finally:
        stop(server, nginx)


if __name__ == "__main__":
    sys.exit(main())
