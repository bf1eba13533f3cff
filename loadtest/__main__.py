"""Run the broodlord deployment under locust and show reinforcement: python -m loadtest [options].

Starts, in a temporary directory: the emperor of deploy/broodlord (its paths rendered there), nginx
with nginx/broodlord.conf in front of the vassal's socket, and locust headless with the shape of
loadtest/locustfile.py. Every 0.5 s it samples the emperor's and the vassal's stats; locust's own
history gives users, requests/s and p95. It writes samples.csv and broodlord.png (users, requests/s,
p95 latency, backlog and live zergs over time) and prints a summary: requests, failures, peak
zergs, time to the first reinforcement and to the last zerg gone. Loopback only; everything it
starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak", type=int, default=60, help="peak users (60)")
    parser.add_argument("--ramp", type=float, default=10, help="seconds to reach the peak (10)")
    parser.add_argument("--hold", type=float, default=20, help="seconds at the peak (20)")
    parser.add_argument("--fall", type=float, default=5, help="seconds back to zero users (5)")
    parser.add_argument("--zerg-idle", type=int, default=5, help="seconds before an idle zerg dies (5)")
    parser.add_argument("--broodlord", type=int, default=4, help="most zergs (4)")
    parser.add_argument("--out", default=str(ROOT / "loadtest" / "results"), help="where the CSV and PNG go")
    parser.add_argument("--wait-gone", type=float, default=60, help="seconds to wait for zergs to die (60)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = run(args, out)
    print(json.dumps(summary, indent=1))
    return 0 if summary["failures"] == 0 and summary["peak_zergs"] > 0 else 1


def run(args: argparse.Namespace, out: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="zsload-"))
    run_dir = tmp / "run"
    run_dir.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        emperor_ini = render_deploy(tmp, run_dir, args)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        emperor_log = open(tmp / "emperor.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "zergserve", "--ini", str(emperor_ini)], env=env,
                                      stdout=emperor_log, stderr=subprocess.STDOUT, start_new_session=True))
        emperor_stats = str(run_dir / "emperor.stats")
        vassal_stats = str(run_dir / "app.stats")
        wait(lambda: Path(run_dir / "broodlord.sock").exists() and fetch(vassal_stats), "the vassal")
        port = free_port()
        procs.append(start_nginx(tmp, run_dir, port))
        wait(lambda: connectable(port), "nginx")
        sampler = Sampler(emperor_stats, vassal_stats)
        sampler.start()
        locust_env = dict(env, LOADTEST_PEAK=str(args.peak), LOADTEST_RAMP=str(args.ramp),
                          LOADTEST_HOLD=str(args.hold), LOADTEST_FALL=str(args.fall))
        started = time.time()
        subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
                        "--headless", "--host", f"http://127.0.0.1:{port}", "--csv", str(tmp / "locust"),
                        "--csv-full-history", "--only-summary", "--loglevel", "WARNING"],
                       env=locust_env, check=False, cwd=tmp, timeout=args.ramp + args.hold + args.fall + 60)
        load_end = time.time()
        deadline = time.time() + args.wait_gone
        while time.time() < deadline and sampler.zergs_now() > 0:
            time.sleep(0.5)
        sampler.stop()
        return report(tmp, out, sampler, started, load_end)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(35)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for name in ("emperor.log",):
            if (tmp / name).exists():
                shutil.copy(tmp / name, out / name)
        shutil.rmtree(tmp, ignore_errors=True)


def render_deploy(tmp: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    """deploy/broodlord with its paths moved into `tmp` (the files are otherwise used as shipped)."""
    source = ROOT / "deploy" / "broodlord"
    for path in source.rglob("*.ini"):
        target = tmp / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text().replace("/run/zergserve", str(run_dir))
        text = text.replace("%d../../../examples", str(ROOT / "examples"))
        text = text.replace("emperor-broodlord = 4", f"emperor-broodlord = {args.broodlord}")
        text = text.replace("idle = 5", f"idle = {args.zerg_idle}")
        target.write_text(text)
    return tmp / "emperor.ini"


def start_nginx(tmp: Path, run_dir: Path, port: int) -> subprocess.Popen:
    vhost = (ROOT / "nginx" / "broodlord.conf").read_text()
    vhost = vhost.replace("/etc/nginx/uwsgi_params", str(ROOT / "nginx" / "uwsgi_params"))
    vhost = vhost.replace("/run/zergserve", str(run_dir)).replace("listen 8080;", f"listen 127.0.0.1:{port};")
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; uwsgi_temp_path {tmp}/uwsgi; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi; scgi_temp_path {tmp}/scgi;
{vhost}
}}
""")
    return subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Sampler(threading.Thread):
    """Every 0.5 s: live zergs and reinforcement times (emperor), listen queue (vassal)."""

    def __init__(self, emperor_stats: str, vassal_stats: str) -> None:
        super().__init__(daemon=True)
        self.emperor_stats = emperor_stats
        self.vassal_stats = vassal_stats
        self.samples: list[dict] = []
        self.reinforced: dict[int, float] = {}
        self.running = True

    def run(self) -> None:
        while self.running:
            now = time.time()
            emperor = fetch(self.emperor_stats) or {}
            vassal = fetch(self.vassal_stats) or {}
            zergs = [v for v in emperor.get("vassals", []) if v.get("zerg")]
            for zerg in zergs:
                if zerg.get("reinforced_in"):
                    self.reinforced.setdefault(zerg["pid"], zerg["reinforced_in"])
            self.samples.append({"time": now, "zergs": len(zergs), "backlog": vassal.get("listen_queue", 0)})
            time.sleep(max(0.0, 0.5 - (time.time() - now)))

    def zergs_now(self) -> int:
        return self.samples[-1]["zergs"] if self.samples else 0

    def stop(self) -> None:
        self.running = False
        self.join(5)


def report(tmp: Path, out: Path, sampler: Sampler, started: float, load_end: float) -> dict:
    history = read_history(tmp / "locust_stats_history.csv")
    totals = read_totals(tmp / "locust_stats.csv")
    rows = []
    for sample in sampler.samples:
        nearest = min(history, key=lambda h: abs(h["time"] - sample["time"])) if history else {}
        fresh = nearest and abs(nearest["time"] - sample["time"]) < 2 and sample["time"] <= load_end + 1
        rows.append({"t": round(sample["time"] - started, 2), "users": nearest.get("users", 0) if fresh else 0,
                     "rps": nearest.get("rps", 0.0) if fresh else 0.0, "p95_ms": nearest.get("p95", 0.0) if fresh else 0.0,
                     "backlog": sample["backlog"], "zergs": sample["zergs"]})
    with open(out / "samples.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["t", "users", "rps", "p95_ms", "backlog", "zergs"])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "broodlord.png")
    with_zergs = [r for r in rows if r["zergs"] > 0]
    first_zerg = with_zergs[0]["t"] if with_zergs else None
    gone = None
    if with_zergs:
        last = with_zergs[-1]["t"]
        after = [r for r in rows if r["t"] > last and r["zergs"] == 0]
        gone = round(after[0]["t"] - (load_end - started), 2) if after else None
    return {"requests": totals.get("requests", 0), "failures": totals.get("failures", 0),
            "peak_zergs": max((r["zergs"] for r in rows), default=0),
            "first_zerg_at_s": first_zerg,
            "sos_to_zerg_accepting_s": sorted(sampler.reinforced.values()),
            "last_zerg_gone_after_load_end_s": gone,
            "csv": str(out / "samples.csv"), "plot": str(out / "broodlord.png")}


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows: list[dict] = []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") != "Aggregated":
                continue
            try:
                now, total = float(row["Timestamp"]), int(row["Total Request Count"])
                # locust's Requests/s is a 10 s average; the slope of the total shows changes as they happen
                rps = (total - rows[-1]["total"]) / (now - rows[-1]["time"]) if rows and now > rows[-1]["time"] else 0.0
                rows.append({"time": now, "total": total, "users": int(float(row["User Count"])), "rps": rps,
                             "p95": float(row["95%"]) if row["95%"] != "N/A" else 0.0})
            except (KeyError, ValueError):
                continue
    return rows


def read_totals(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])}
    return {}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    axes[0].plot(t, [r["users"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("users")
    axes[1].plot(t, [r["rps"] for r in rows], color="tab:green")
    axes[1].set_ylabel("requests/s")
    axes[2].plot(t, [r["p95_ms"] for r in rows], color="tab:orange")
    axes[2].set_ylabel("p95 ms")
    axes[3].plot(t, [r["backlog"] for r in rows], color="tab:red", label="vassal backlog")
    axes[3].step(t, [r["zergs"] for r in rows], color="black", where="post", label="live zergs")
    axes[3].set_ylabel("backlog / zergs")
    axes[3].legend(loc="upper right")
    axes[3].set_xlabel("seconds")
    fig.suptitle("zergserve broodlord: nginx → vassal, zergs spawned on SOS and gone when idle")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fetch(addr: str) -> dict | None:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(addr)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return json.loads(data)
    except (OSError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise SystemExit(f"loadtest: {what} did not come up")


if __name__ == "__main__":
    sys.exit(main())
