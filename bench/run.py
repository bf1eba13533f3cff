"""Benchmark zergserve against gunicorn, uWSGI and granian in the same run, and print ratios.

    python bench/run.py [--duration 10] [--connections 50] [--workers 2] [--only NAME ...]

Each server serves bench/hello.py with the same number of workers; wrk (Debian package) loads it
on loopback. The families measured:

* behind nginx `uwsgi_pass` over a UNIX socket: zergserve --socket, uWSGI --socket,
  gunicorn --protocol uwsgi;
* HTTP served by the workers: zergserve --http, uWSGI --http-socket, gunicorn sync;
* threads, HTTP served by the workers with `--threads` (4) per process, clients closing after each
  response (`threads-close`) and keeping connections alive (`threads-ka`): zergserve --threads,
  uWSGI --threads (--http-socket; --http11-socket for keep-alive), gunicorn -k gthread --threads.
* gevent keep-alive (`gevent-ka`), HTTP with clients keeping connections alive: zergserve
  --worker gevent, gunicorn -k gevent, granian --interface wsgi.
* ASGI keep-alive (`asgi-ka`), bench/hello_asgi.py: zergserve --worker asyncio on each --loop
  (asyncio, uvloop), uvicorn --http httptools and --http h11 on each --loop, granian --interface asgi.
  Ratios compare zergserve with each peer on the same loop (granian's own runtime against both).

gunicorn, uWSGI, uvicorn[standard] (with httptools and uvloop), gevent and granian are installed from
PyPI into a separate venv (bench/.peers, made on first run; the ones missing are added to an older
one); their versions are printed with each run.
Results: requests/s, p99 latency, worker RSS after warm-up, the server's CPU time per request (user
plus system of all its processes during the measured run, from /proc: on a shared machine a steadier
figure of a server's cost than its requests/s, which also depend on how the scheduler shares the cores
with wrk and nginx) and ratios of zergserve to each peer.
A JSON copy goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / ".peers"


@dataclass
class Result:
    name: str
    family: str
    rps: float
    p99_ms: float
    rss_mb: float
    errors: int
    cpu_us: float  # the server's user + system CPU time per request, in microseconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="threads per worker in the threads families")
    parser.add_argument("--only", nargs="*", default=None, help="run only these targets")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every target this many times, interleaved, and keep its best run "
                             "(figures on a shared 2-core machine move by up to a third between rounds)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"bench: {tool} is not installed (apt-get install wrk nginx-light)")
    peers = ensure_peers()
    print("bench: " + peer_versions(peers))
    tmp = Path(tempfile.mkdtemp(prefix="zsbench-"))
    best: dict[str, Result] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            for target in targets(peers, tmp, args.workers, args.threads):
                if args.only and target["name"] not in args.only:
                    continue
                result = measure(target, tmp, args)
                print(f"round {round_no} {target['name']:25} {result.rps:8.0f} req/s  p99 {result.p99_ms:6.2f} ms  "
                      f"rss {result.rss_mb:5.1f} MB  cpu {result.cpu_us:5.1f} us/req  errors {result.errors}",
                      flush=True)
                if target["name"] not in best or result.rps > best[target["name"]].rps:
                    best[target["name"]] = result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = list(best.values())
    report(results)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps([asdict(r) for r in results], indent=1))
    return 0


def ensure_peers() -> Path:
    """One clean venv for every server: the peers from PyPI, zergserve from this tree.

    The same interpreter and site-packages for everyone, so worker memory compares like with like.
    """
    python = PEERS / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    missing = [package for command, package in PEER_PACKAGES if not (PEERS / "bin" / command).exists()]
    if missing:
        print(f"bench: installing {' '.join(missing)} into bench/.peers (uWSGI compiles, about a minute)")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *missing, *ASGI_EXTRAS], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(ROOT)],
                   check=True, capture_output=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "h11", "setproctitle", "gevent",
                    "packaging"], check=True, capture_output=True)  # gunicorn -k gevent imports packaging
    return PEERS / "bin"


PEER_PACKAGES = (("gunicorn", "gunicorn"), ("uwsgi", "uwsgi"), ("uvicorn", "uvicorn[standard]"),
                 ("granian", "granian"))
ASGI_EXTRAS = ("httptools", "uvloop")  # uvicorn[standard] brings them; named so an old venv gets them too


def peer_versions(peers: Path) -> str:
    """The versions every server of this run has, as one line; then whether zergserve's request path
    is compiled (mypyc) there."""
    code = ("import importlib.metadata as m\n"
            "print(', '.join(f'{p} {m.version(p)}' for p in ('zergserve', 'gunicorn', 'uwsgi', 'uvicorn', "
            "'httptools', 'uvloop', 'h11', 'gevent', 'granian')))\n"
            "from zergserve import compiled\n"
            "print(f'zergserve request path: {compiled.STATUS}')")
    return subprocess.run([str(peers / "python"), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def targets(peers: Path, tmp: Path, workers: int, threads: int) -> list[dict]:
    sock = str(tmp / "app.sock")
    zerg = [str(peers / "zergserve"), "--chdir", str(HERE), "--module", "hello:application",
            "-p", str(workers), "--master", "--disable-logging"]
    uwsgi = [str(peers / "uwsgi"), "--chdir", str(HERE), "--module", "hello:application",
             "-p", str(workers), "--master", "--disable-logging", "--die-on-term"]
    gunicorn = [str(peers / "gunicorn"), "--chdir", str(HERE), "-w", str(workers), "--worker-class", "sync"]
    found = [
        {"name": "zergserve-uwsgi", "family": "nginx", "cmd": zerg + ["--socket", sock], "upstream": sock},
        {"name": "uwsgi-uwsgi", "family": "nginx", "cmd": uwsgi + ["--socket", sock], "upstream": sock},
        {"name": "gunicorn-uwsgi", "family": "nginx",
         "cmd": gunicorn + ["--protocol", "uwsgi", "--bind", f"unix:{sock}", "hello:application"],
         "upstream": sock},
    ]
    for name, cmd in (("zergserve-http", zerg + ["--http"]), ("uwsgi-http", uwsgi + ["--http-socket"]),
                      ("gunicorn-http", gunicorn + ["hello:application", "--bind"])):
        http = f"127.0.0.1:{free_port()}"
        found.append({"name": name, "family": "http", "cmd": cmd + [http], "http": http})
    gthread = [str(peers / "gunicorn"), "--chdir", str(HERE), "-w", str(workers), "-k", "gthread",
               "--threads", str(threads), "hello:application", "--bind"]
    for family, close, uwsgi_http in (("threads-close", True, "--http-socket"), ("threads-ka", False, "--http11-socket")):
        for name, cmd in (("zergserve", zerg + ["--threads", str(threads), "--http"]),
                          ("uwsgi", uwsgi + ["--threads", str(threads), uwsgi_http]), ("gunicorn", gthread)):
            http = f"127.0.0.1:{free_port()}"
            found.append({"name": f"{name}-{family}", "family": family, "cmd": cmd + [http], "http": http,
                          "close": close})
    gevent_ka = (("zergserve", zerg + ["--worker", "gevent", "--http"]),
                 ("gunicorn", [str(peers / "gunicorn"), "--chdir", str(HERE), "-w", str(workers), "-k", "gevent",
                               "hello:application", "--bind"]),
                 ("granian", [str(peers / "granian"), "--interface", "wsgi", "--working-dir", str(HERE),
                              "--workers", str(workers), "--no-access-log", "--host", "127.0.0.1",
                              "hello:application", "--port"]))
    for name, cmd in gevent_ka:
        http = f"127.0.0.1:{free_port()}"
        found.append({"name": f"{name}-gevent-ka", "family": "gevent-ka",
                      "cmd": cmd + [http.rpartition(":")[2] if name == "granian" else http], "http": http,
                      "close": False})
    for name, cmd in asgi_targets(peers, workers).items():
        port = free_port()
        http = f"127.0.0.1:{port}"
        cmd = [part.replace("{port}", str(port)) for part in cmd]
        found.append({"name": name, "family": "asgi-ka", "cmd": cmd, "http": http, "close": False})
    return found


def asgi_targets(peers: Path, workers: int) -> dict[str, list[str]]:
    """The ASGI keep-alive family: every server on bench/hello_asgi.py with `workers` processes,
    logging off; {port} is filled in by targets()."""
    zerg = [str(peers / "zergserve"), "--chdir", str(HERE), "--module", "hello_asgi:application", "--worker",
            "asyncio", "-p", str(workers), "--disable-logging", "--http", "127.0.0.1:{port}"]
    uvicorn = [str(peers / "uvicorn"), "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", "{port}",
               "--workers", str(workers), "--no-access-log", "--log-level", "warning", "--lifespan", "on"]
    found = {}
    for loop in ("asyncio", "uvloop"):
        found[f"zergserve-asgi-{loop}"] = zerg + ["--loop", loop]
        for http in ("httptools", "h11"):
            found[f"uvicorn-{http}-{loop}"] = uvicorn + ["--http", http, "--loop", loop, "hello_asgi:application"]
    found["granian-asgi"] = [str(peers / "granian"), "--interface", "asgi", "--working-dir", str(HERE),
                             "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers), "--no-ws",
                             "--log-level", "warning", "hello_asgi:application"]
    return found


def measure(target: dict, tmp: Path, args: argparse.Namespace) -> Result:
    env = dict(os.environ)
    log = open(tmp / f"{target['name']}.log", "wb")
    server = subprocess.Popen(target["cmd"], stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    nginx = None
    try:
        if target["family"] == "nginx":
            wait_unix(target["upstream"])
            nginx, url = start_nginx(tmp, target["upstream"])
        else:
            wait_tcp(target["http"])
            url = f"http://{target['http']}/"
        close = target.get("close", target["family"] == "http")  # sync HTTP servers close after each response: so do the clients
        wrk(url, 2, 10, 2, close)  # warm-up
        before = cpu_ticks(server.pid)
        out = wrk(url, args.duration, args.connections, 2, close)
        ticks = cpu_ticks(server.pid) - before
        rss = worker_rss(server.pid)
    finally:
        stop(server, nginx)
        log.close()
    served = out["rps"] * args.duration
    cpu_us = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / served if served else 0.0
    return Result(target["name"], target["family"], out["rps"], out["p99_ms"], rss, out["errors"], cpu_us)


def stop(server: subprocess.Popen, nginx: subprocess.Popen | None) -> None:
    """Kill a measured server's process group (and its nginx) and reap them."""
    for proc in (nginx, server):
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, duration: int, connections: int, threads: int, close: bool) -> dict:
    extra = ["-H", "Connection: close"] if close else []
    proc = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
                           "--latency", *extra, url], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stdout} {proc.stderr}")
    text = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    # uWSGI resets each connection after a complete response: wrk counts that as a read error
    # although the response arrived, so only connect/write/timeout errors and bad statuses count.
    errors = sum(int(n) for n in re.findall(r"(?:connect|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def start_nginx(tmp: Path, upstream: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    conf_dir = tmp / "nginx"
    conf_dir.mkdir(exist_ok=True)
    params = "\n".join(f"uwsgi_param {k} ${v};" for k, v in (
        ("QUERY_STRING", "query_string"), ("REQUEST_METHOD", "request_method"),
        ("CONTENT_TYPE", "content_type"), ("CONTENT_LENGTH", "content_length"),
        ("REQUEST_URI", "request_uri"), ("PATH_INFO", "document_uri"), ("DOCUMENT_ROOT", "document_root"),
        ("SERVER_PROTOCOL", "server_protocol"), ("REQUEST_SCHEME", "scheme"),
        ("REMOTE_ADDR", "remote_addr"), ("REMOTE_PORT", "remote_port"), ("SERVER_PORT", "server_port"),
        ("SERVER_NAME", "server_name")))
    conf = conf_dir / "nginx.conf"
    conf.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""} daemon off; worker_processes 1; pid {conf_dir}/nginx.pid; error_log {conf_dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {conf_dir}/body; uwsgi_temp_path {conf_dir}/uwsgi;
    proxy_temp_path {conf_dir}/proxy; fastcgi_temp_path {conf_dir}/fcgi; scgi_temp_path {conf_dir}/scgi;
    upstream app {{ server unix:{upstream}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ {params} uwsgi_pass app; }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", str(conf_dir), "-c", str(conf)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_tcp(f"127.0.0.1:{port}")
    return proc, f"http://127.0.0.1:{port}/"


def worker_rss(master: int) -> float:
    """Mean RSS of the master's children in MB (the workers), read from /proc."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return 0.0
    sizes = []
    for pid in children:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return sum(sizes) / len(sizes) if sizes else 0.0


def cpu_ticks(pid: int) -> int:
    """User plus system clock ticks of `pid` and its descendants (every thread of each), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [child for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except OSError:
        return 0  # gone meanwhile
    return int(fields[11]) + int(fields[12]) + sum(cpu_ticks(int(child)) for child in children)


def report(results: list[Result]) -> None:
    by_name = {r.name: r for r in results}
    print("\n| target | req/s | p99 ms | worker RSS MB | CPU µs/req | errors |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.rps:.0f} | {r.p99_ms:.2f} | {r.rss_mb:.1f} | {r.cpu_us:.1f} | {r.errors} |")
    print()
    pairs = [(family, f"zergserve-{suffix}", (f"uwsgi-{suffix}", f"gunicorn-{suffix}", f"granian-{suffix}"))
             for family, suffix in (("nginx", "uwsgi"), ("http", "http"), ("threads-close", "threads-close"),
                                    ("threads-ka", "threads-ka"), ("gevent-ka", "gevent-ka"))]
    pairs += [("asgi-ka", f"zergserve-asgi-{loop}",
               (f"uvicorn-httptools-{loop}", f"uvicorn-h11-{loop}", "granian-asgi")) for loop in ("asyncio", "uvloop")]
    for family, ours, peers in pairs:
        if ours not in by_name:
            continue
        mine = by_name[ours]
        for peer in peers:
            if peer in by_name and by_name[peer].rps:
                other = by_name[peer]
                print(f"{family}: {ours} / {peer}: throughput {mine.rps / other.rps:.2f}x, "
                      f"p99 {mine.p99_ms / other.p99_ms if other.p99_ms else 0:.2f}x, "
                      f"RSS {mine.rss_mb / other.rss_mb if other.rss_mb else 0:.2f}x, "
                      f"CPU per request {mine.cpu_us / other.cpu_us if other.cpu_us else 0:.2f}x")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_tcp(addr: str, timeout: float = 20.0) -> None:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {addr}")


def wait_unix(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {path}")


if __name__ == "__main__":
    sys.exit(main())
