"""An open-loop spike against a broodlord vassal, or one cheaper instance: python -m loadtest [options].

Starts, in a temporary directory, an emperor with --emperor-broodlord over one vassal
(loadtest/vassal.ini: one worker, WORK_MS/CPU_MS per request, SOS at THRESHOLD queued connections),
nginx in front of the vassal's TCP socket, and locust headless with loadtest/locustfile.py, whose
arrivals follow loadtest/phases.py whatever the latency: BASE requests/s, a spike of PEAK requests/s,
BASE again, then nothing until the zergs are gone. Every 0.1 s it reads the socket's accept queue from
the kernel (inet_diag, the same for every server) and the zergs from the emperor's stats; the
emperor's log gives the SOS, spawn and exit events as they happen. It writes samples.csv,
requests.csv, events.csv and spike.png and prints a summary: "absorbed in X s" (from the start of
a spike until the backlog is back under THRESHOLD for the rest of it) and how long the backlog was
over it, p95 before, during and after, failures, zergs, and for --waves what each wave left behind
(zergs, sockets, RSS).

    --peer uwsgi   the same run against uWSGI 2.0's emperor (the `uwsgi` binary) with the same vassal
                   ini, and a side-by-side figure on the same axes
    --waves        three spikes in a row (or --waves N)
    --scenario cheaper   no emperor: one instance (loadtest/cheaper.ini) whose cheaper subsystem runs
                   --cheaper to --processes workers (default 1 to 4, busyness algorithm) under the
                   same spike; the bottom panel shows its worker count, with the additions and
                   removals the instance logs, instead of zergs

The shape options default to the LOADTEST_* environment variables of loadtest/locustfile.py.
Loopback only; everything it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import DEFAULTS, Profile  # noqa: E402
from probe import proc_usage, tcp_backlog  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SAMPLE = 0.1  # seconds between samples
EVENTS = {  # what each emperor logs, as it happens: (event, pattern)
    "zergserve": [("sos", re.compile(r"SOS: \d+ connections queued")),
                  ("spawn", re.compile(r"\[emperor\] vassal \S+:zerg spawned")),
                  ("exit", re.compile(r"\[emperor\] removed vassal \S+:zerg"))],
    "uwsgi": [("sos", re.compile(r"asking Emperor for reinforcements")),
              ("spawn", re.compile(r"going in broodlord mode: launching zergs")),
              ("exit", re.compile(r"removed uwsgi instance \S+:zerg"))],
    "cheaper": [("up", re.compile(r"cheaper \(\w+\): (?!.*stopping a worker).*: now \d+ workers")),
                ("down", re.compile(r"cheaper \(\w+\): .*stopping a worker: now \d+ workers"))],
}


def main(argv: list[str] | None = None) -> int:
    shape = Profile.from_environ()
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("shape (defaults: LOADTEST_<NAME> or the value shown)")
    for key, default in DEFAULTS.items():
        if key == "waves":
            continue
        group.add_argument(f"--{key}", type=type(default), default=getattr(shape, key), metavar="N",
                           help=f"{_SHAPE_HELP[key]} ({getattr(shape, key)})")
    group.add_argument("--waves", type=int, nargs="?", const=3, default=shape.waves, metavar="N",
                        help=f"spikes in a row, separated by --gap s at --base (bare --waves: 3) ({shape.waves})")
    parser.add_argument("--work-ms", type=float, default=100, metavar="MS", help="ms each request waits (100)")
    parser.add_argument("--cpu-ms", type=float, default=0, metavar="MS", help="ms of CPU each request burns (0)")
    parser.add_argument("--scenario", choices=["broodlord", "cheaper"], default="broodlord",
                        help="an emperor's broodlord vassal, or one instance in cheaper mode (broodlord)")
    parser.add_argument("--processes", type=int, metavar="N",
                        help="workers of the vassal and of each zerg (1); cheaper: the most workers (4)")
    parser.add_argument("--cheaper", type=int, default=1, metavar="N", help="cheaper: the fewest workers (1)")
    parser.add_argument("--cheaper-algo", choices=["spare", "backlog", "busyness"], default="busyness",
                        help="cheaper: the algorithm (busyness)")
    parser.add_argument("--cheaper-overload", type=int, default=1, metavar="SECONDS",
                        help="cheaper: --cheaper-overload, the busyness period (1)")
    parser.add_argument("--cheaper-multiplier", type=int, default=3, metavar="N",
                        help="cheaper: --cheaper-busyness-multiplier, quiet periods before a worker stops (3)")
    parser.add_argument("--threshold", type=int, default=8, metavar="N", help="vassal-sos-backlog (8)")
    parser.add_argument("--broodlord", type=int, default=4, metavar="N", help="most zergs (4)")
    parser.add_argument("--zerg-idle", type=int, default=5, metavar="SECONDS", help="seconds before an idle zerg dies (5)")
    parser.add_argument("--peer", choices=["uwsgi"], help="also run uWSGI's emperor and draw both side by side")
    parser.add_argument("--only", choices=["zergserve", "uwsgi"], help="run one server only")
    parser.add_argument("--out", default=str(ROOT / "loadtest" / "results"), metavar="DIR", help="where the CSVs and PNG go")
    parser.add_argument("--wait-gone", type=float, default=60, metavar="SECONDS",
                        help="seconds to wait for the zergs to die after the load (60)")
    args = parser.parse_args(argv)
    if args.processes is None:
        args.processes = 4 if args.scenario == "cheaper" else 1
    if args.scenario == "cheaper" and (args.peer or args.only == "uwsgi"):
        parser.error("--scenario cheaper runs zergserve only")
    profile = Profile(**{key: getattr(args, key) for key in DEFAULTS})
    servers = [args.only] if args.only else ["zergserve"] + ([args.peer] if args.peer else [])
    if "uwsgi" in servers and not shutil.which("uwsgi"):
        parser.error("--peer uwsgi: no uwsgi binary on PATH")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for server in servers:
        where = out / server if len(servers) > 1 else out
        where.mkdir(parents=True, exist_ok=True)
        results.append(run(server, args, profile, where))
    plot(results, profile, args, out / "spike.png")
    summaries = {r["server"]: r["summary"] for r in results}
    for server, summary in summaries.items():
        absorbed = ", ".join("never" if a is None else f"{a:.2f} s" for a in summary["absorbed_in_s"])
        over = ", ".join(f"{o:.2f} s" for o in summary["over_threshold_s"])
        print(f"{server}: absorbed in {absorbed} (backlog over the threshold for {over}); p95 ms {summary['p95_ms']}; "
              f"{summary['failures']} failures of {summary['requests']}"
              + (f"; workers up to {summary['peak_workers']}, {summary['workers_at_end']} at the end"
                 if "peak_workers" in summary else ""), file=sys.stderr)
    print(json.dumps(summaries if len(summaries) > 1 else summaries[servers[0]], indent=1))
    if args.scenario == "cheaper":
        ok = all(s["failures"] == 0 and s["peak_workers"] > args.cheaper and s["workers_at_end"] == args.cheaper
                 for s in summaries.values())
    else:
        ok = all(s["failures"] == 0 and s["peak_zergs"] > 0 and s["zergs_at_end"] == 0 for s in summaries.values())
    return 0 if ok else 1


_SHAPE_HELP = {"base": "requests/s before, between and after the spikes", "peak": "requests/s during a spike",
               "before": "seconds at --base before the first spike", "spike": "seconds each spike lasts",
               "after": "seconds at --base after the last spike", "waves": "", "gap": "seconds at --base between spikes",
               "users": "locust users sharing the arrivals (more than rate x worst latency)"}


def run(server: str, args: argparse.Namespace, profile: Profile, out: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="zsload-"))
    run_dir = tmp / "run"
    (tmp / "vassals").mkdir(parents=True)
    run_dir.mkdir()
    procs: list[subprocess.Popen] = []
    port = free_port()
    watcher = None
    try:
        cheaper = args.scenario == "cheaper"
        render(ROOT / "loadtest" / ("cheaper.ini" if cheaper else "vassal.ini"), tmp / "vassals" / "app.ini",
               run_dir, port, args)
        emperor_stats = str(run_dir / ("app.stats" if cheaper else "emperor.stats"))
        binary = [shutil.which("uwsgi") or "uwsgi"] if server == "uwsgi" else [sys.executable, "-m", "zergserve"]
        command = ["--ini", str(tmp / "vassals" / "app.ini")] if cheaper else \
            ["--emperor", str(tmp / "vassals"), "--emperor-broodlord", str(args.broodlord),
             "--emperor-stats", emperor_stats]
        emperor = subprocess.Popen(binary + command, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
        procs.append(emperor)
        watcher = LogWatcher(emperor.stdout, EVENTS["cheaper" if cheaper else server],
                             out / ("instance.log" if cheaper else "emperor.log"))
        watcher.start()
        if cheaper:
            wait(lambda: listening(port) and running_workers(fetch(emperor_stats) or {}), "the cheaper instance")
        else:
            wait(lambda: listening(port) and any(v.get("accepting")
                                                 for v in (fetch(emperor_stats) or {}).get("vassals", [])),
                 f"the {server} vassal")
        nginx_port = free_port()
        procs.append(start_nginx(tmp, port, nginx_port))
        wait(lambda: connectable(nginx_port), "nginx")
        sampler = Sampler(port, emperor_stats, emperor.pid, args.cheaper if cheaper else None)
        sampler.start()
        env = dict(os.environ, PYTHONPATH=str(ROOT), LOADTEST_REQUESTS=str(tmp / "requests.log"), **profile.environ())
        with open(out / "locust.log", "wb") as locust_log:
            subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
                            "--headless", "--host", f"http://127.0.0.1:{nginx_port}", "--only-summary",
                            "--loglevel", "WARNING", "--stop-timeout", "30"],
                           env=env, check=False, cwd=tmp, timeout=profile.duration() + 120,
                           stdout=subprocess.DEVNULL, stderr=locust_log)
        deadline = time.time() + args.wait_gone
        while time.time() < deadline and (sampler.extra_now() or not sampler.samples):
            time.sleep(0.2)
        time.sleep(1.0)  # a last sample of the quiet vassal
        sampler.stop()
        return report(server, tmp / "requests.log", sampler, watcher, profile, args.threshold, out,
                      args.cheaper if cheaper else None)
    finally:
        for proc in reversed(procs):
            stop(proc, signal.SIGINT if proc is procs[0] else signal.SIGTERM)
        if watcher is not None:
            watcher.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


def render(template: Path, target: Path, run_dir: Path, port: int, args: argparse.Namespace) -> None:
    text = template.read_text()
    for name, value in {"EXAMPLES": ROOT / "examples", "RUN": run_dir, "PORT": port, "WORK_MS": args.work_ms,
                        "CPU_MS": args.cpu_ms, "PROCESSES": args.processes, "THRESHOLD": args.threshold,
                        "IDLE": args.zerg_idle, "CHEAPER": args.cheaper, "ALGO": args.cheaper_algo,
                        "OVERLOAD": args.cheaper_overload, "MULTIPLIER": args.cheaper_multiplier}.items():
        text = text.replace(f"@{name}@", str(value))
    target.write_text(text)


def start_nginx(tmp: Path, upstream: int, port: int) -> subprocess.Popen:
    """nginx → uwsgi_pass 127.0.0.1:upstream: one upstream connection per request, so the requests
    that wait are connections in the vassal's accept queue."""
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; uwsgi_temp_path {tmp}/uwsgi; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {ROOT}/nginx/uwsgi_params;
            uwsgi_pass 127.0.0.1:{upstream};
            uwsgi_connect_timeout 10s;
            uwsgi_read_timeout 60s;
        }}
    }}
}}
""")
    return subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen, signum: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signum)
        proc.wait(35)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class LogWatcher(threading.Thread):
    """Copies the emperor's output (its vassals' too) to a file, noting when each event's line arrives."""

    def __init__(self, stream, patterns: list, path: Path) -> None:
        super().__init__(daemon=True)
        self.stream, self.patterns, self.path = stream, patterns, path
        self.events: list[tuple[float, str]] = []

    def run(self) -> None:
        with open(self.path, "wb") as log:
            for line in iter(self.stream.readline, b""):
                log.write(line)
                text = line.decode(errors="replace")
                for event, pattern in self.patterns:
                    if pattern.search(text):
                        self.events.append((time.time(), event))


def running_workers(doc: dict) -> list[dict]:
    """An instance's workers that run (its stats show the ones the cheaper subsystem stopped as cheap)."""
    return [w for w in doc.get("workers", []) if w.get("pid") and w.get("status") != "cheap"]


class Sampler(threading.Thread):
    """Every SAMPLE s: the accept queue (kernel) and the zergs (emperor stats), or with `floor` (the
    cheaper scenario) the instance's running workers (its stats); every second also the descriptors
    and RSS of the emperor and of the vassal's master, or of the instance's master."""

    def __init__(self, port: int, emperor_stats: str, emperor_pid: int, floor: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.emperor_stats, self.emperor_pid, self.floor = port, emperor_stats, emperor_pid, floor
        self.samples: list[dict] = []
        self.running = True

    def run(self) -> None:
        tick = 0
        while self.running:
            now = time.time()
            doc = fetch(self.emperor_stats) or {}
            sample = {"time": now, "backlog": tcp_backlog(self.port)}
            sample.update(self._instance(doc, tick) if self.floor is not None else self._emperor(doc, tick))
            self.samples.append(sample)
            tick += 1
            time.sleep(max(0.0, SAMPLE - (time.time() - now)))

    def _emperor(self, doc: dict, tick: int) -> dict:
        vassals = doc.get("vassals", [])
        zergs = [v for v in vassals if v.get("zerg")]
        sample = {"zergs": len(zergs), "accepting": sum(1 for z in zergs if z.get("accepting"))}
        if tick % int(1 / SAMPLE) == 0:
            master = next((v["pid"] for v in vassals if not v.get("zerg")), 0)
            sample.update(proc_usage(self.emperor_pid, "emperor"))
            sample.update(proc_usage(master, "vassal"))
            sample["blacklist"] = len(doc.get("blacklist", []))
        return sample

    def _instance(self, doc: dict, tick: int) -> dict:
        workers = running_workers(doc)
        sample = {"zergs": 0, "workers": len(workers), "busy": sum(1 for w in workers if w.get("status") == "busy")}
        if tick % int(1 / SAMPLE) == 0:
            sample.update(proc_usage(self.emperor_pid, "vassal"))
        return sample

    def extra_now(self) -> int:
        """Zergs still alive, or workers the cheaper subsystem has not stopped yet."""
        if not self.samples:
            return 0
        last = self.samples[-1]
        return last["zergs"] if self.floor is None else max(0, last["workers"] - self.floor)

    def stop(self) -> None:
        self.running = False
        self.join(5)


def report(server: str, requests_log: Path, sampler: Sampler, watcher: LogWatcher, profile: Profile,
           threshold: int, out: Path, floor: int | None = None) -> dict:
    start, requests = read_requests(requests_log)
    phases = profile.phases()
    samples = [dict(s, t=round(s["time"] - start, 2)) for s in sampler.samples]
    events = [(round(at - start, 2), kind) for at, kind in watcher.events]
    load_end = profile.duration()
    with open(out / "samples.csv", "w", newline="") as fh:
        fields = ["t", "backlog", "zergs", "accepting", "workers", "busy", "emperor_fds", "emperor_sockets",
                  "emperor_rss_kb", "vassal_fds", "vassal_sockets", "vassal_rss_kb", "blacklist"]
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(samples)
    with open(out / "requests.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t", "latency_ms", "ok"])
        writer.writerows([(round(t, 3), ms, ok) for t, ms, ok in requests])
    with open(out / "events.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t", "event"])
        writer.writerows(events)
    spikes = [p for p in phases if p.name.startswith("spike")]
    p95 = {p.name: percentile([ms for t, ms, _ in requests if p.start <= t < p.end], 95) for p in phases}
    waves = []
    for index, spike in enumerate(spikes):
        end = phases[phases.index(spike) + 1].end
        last = [s for s in samples if "vassal_fds" in s and s["t"] <= end]
        waves.append(_usage(last[-1]) if last else {})
    final = [s for s in samples if "vassal_fds" in s]
    first = [s for s in final if s["t"] < phases[0].end]
    zerg_times = [s["t"] for s in samples if s["zergs"]]
    gone = next((s["t"] for s in samples if s["t"] > load_end and not s["zergs"]), None) if zerg_times else None
    summary = {
        "requests": len(requests), "failures": sum(1 for _, _, ok in requests if not ok),
        "absorbed_in_s": [absorbed_in(samples, spike, threshold) for spike in spikes],
        "over_threshold_s": [over_threshold(samples, spike, threshold) for spike in spikes],
        "p95_ms": p95, "peak_backlog": max((s["backlog"] for s in samples), default=0),
        "peak_zergs": max((s["zergs"] for s in samples), default=0),
        "sos": sum(1 for _, kind in events if kind == "sos"),
        "zerg_spawns": sum(1 for _, kind in events if kind == "spawn"),
        "zerg_exits": sum(1 for _, kind in events if kind == "exit"),
        "zergs_at_end": samples[-1]["zergs"] if samples else None,
        "zergs_gone_after_load_s": round(gone - load_end, 2) if gone is not None else None,
        "after_each_wave": waves, "before_load": _usage(first[-1]) if first else {},
        "at_end": _usage(final[-1]) if final else {},
        "blacklisted": max((s.get("blacklist", 0) for s in samples), default=0),
    }
    if floor is not None:
        for key in ("peak_zergs", "sos", "zerg_spawns", "zerg_exits", "zergs_at_end", "zergs_gone_after_load_s",
                    "blacklisted"):
            del summary[key]
        back = next((s["t"] for s in samples if s["t"] > load_end and s["workers"] <= floor), None)
        summary.update({
            "peak_workers": max((s["workers"] for s in samples), default=0),
            "workers_at_end": samples[-1]["workers"] if samples else None,
            "workers_back_after_load_s": round(back - load_end, 2) if back is not None else None,
            "workers_added": sum(1 for _, kind in events if kind == "up"),
            "workers_stopped": sum(1 for _, kind in events if kind == "down"),
        })
    return {"server": server, "samples": samples, "events": events, "requests": requests, "summary": summary}


def _usage(sample: dict) -> dict:
    return {key: sample.get(key) for key in ("zergs", "emperor_fds", "emperor_sockets", "emperor_rss_kb", "vassal_fds",
                                             "vassal_sockets", "vassal_rss_kb", "blacklist")}


def absorbed_in(samples: list[dict], spike, threshold: int) -> float | None:
    """Seconds from the spike's start until the backlog is under `threshold` for the rest of the spike:
    0 if it never reached it, None if it still had not drained when the spike ended."""
    during = [s for s in samples if spike.start <= s["t"] < spike.end]
    over = [i for i, s in enumerate(during) if s["backlog"] >= threshold]
    if not over:
        return 0.0
    if over[-1] + 1 >= len(during):
        return None
    return round(during[over[-1] + 1]["t"] - spike.start, 2)


def over_threshold(samples: list[dict], spike, threshold: int) -> float:
    """Seconds of the spike with the backlog at `threshold` or more (a spike met by zergs still alive
    from the last one may cross late, briefly: "absorbed in" alone would read as slow)."""
    during = [s for s in samples if spike.start <= s["t"] < spike.end]
    return round(sum(b["t"] - a["t"] for a, b in zip(during, during[1:]) if a["backlog"] >= threshold), 2)


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1)], 1)


def read_requests(path: Path) -> tuple[float, list[tuple[float, float, int]]]:
    """(the profile's start, [(seconds since then, latency ms, ok)]) from the locustfile's request log."""
    start, rows = 0.0, []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if parts[0] == "start":
                start = float(parts[1])
            elif len(parts) == 3:
                rows.append((float(parts[0]), float(parts[1]), int(parts[2])))
    return start, [(t - start, ms, ok) for t, ms, ok in rows]


def plot(results: list[dict], profile: Profile, args: argparse.Namespace, path: Path) -> None:
    """One column per server, the same axes in each row: arrivals and answers per second, p95, backlog
    (with the SOS threshold and the SOS events), zergs (with spawns and exits) or, in the cheaper
    scenario, the instance's workers (with the additions and removals); spikes shaded."""
    threshold, cheaper = args.threshold, args.scenario == "cheaper"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = len(results)
    fig, axes = plt.subplots(4, cols, figsize=(8 * cols, 10.5), sharex=True, sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [2, 2, 3, 2]})
    phases = profile.phases()
    end = max(max((s["t"] for s in r["samples"]), default=0) for r in results)
    for col, result in enumerate(results):
        ax = axes[:, col]
        requests = result["requests"]
        buckets = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        sent = _per_window(requests, buckets, lambda t, ms: t)
        done = _per_window(requests, buckets, lambda t, ms: t + ms / 1000)
        ax[0].step(buckets[:-1], [len(b) / 0.5 for b in sent], where="post", color="tab:blue", label="arrivals/s")
        ax[0].step(buckets[:-1], [len(b) / 0.5 for b in done], where="post", color="tab:green", label="answered/s")
        ax[0].legend(loc="upper right", fontsize=8)
        p95 = [percentile([ms for _, ms in b], 95) for b in sent]
        ax[1].plot([t for t, v in zip(buckets, p95) if v is not None], [v for v in p95 if v is not None],
                   color="tab:orange", marker=".", markersize=3)
        t = [s["t"] for s in result["samples"]]
        ax[2].plot(t, [s["backlog"] for s in result["samples"]], color="tab:red", label="backlog")
        ax[2].axhline(threshold, color="tab:red", linestyle=":", linewidth=1,
                      label=f"{'absorbed' if cheaper else 'SOS'} threshold ({threshold})")
        sos = [at for at, kind in result["events"] if kind == "sos"]
        if sos:
            ax[2].plot(sos, [threshold] * len(sos), "v", color="black", markersize=5, label=f"SOS ({len(sos)})")
        ax[2].legend(loc="upper right", fontsize=8)
        if cheaper:
            ax[3].step(t, [s["workers"] for s in result["samples"]], where="post", color="black", label="workers")
            ax[3].step(t, [s["busy"] for s in result["samples"]], where="post", color="tab:purple",
                       linestyle="--", label="busy")
            ax[3].axhline(args.processes, color="gray", linestyle=":", linewidth=1, label=f"-p {args.processes}")
            kinds = (("up", "^", "tab:green"), ("down", "v", "tab:gray"))
        else:
            ax[3].step(t, [s["zergs"] for s in result["samples"]], where="post", color="black", label="zergs")
            ax[3].step(t, [s["accepting"] for s in result["samples"]], where="post", color="tab:purple",
                       linestyle="--", label="accepting")
            kinds = (("spawn", "^", "tab:green"), ("exit", "v", "tab:gray"))
        for kind, marker, color in kinds:
            times = [at for at, what in result["events"] if what == kind]
            if times:
                ax[3].plot(times, [0] * len(times), marker, color=color, markersize=7, clip_on=False,
                           label=f"{kind} ({len(times)})")
        ax[3].legend(loc="upper right", fontsize=8)
        for axis in ax:
            for phase in phases:
                if phase.name.startswith("spike"):
                    axis.axvspan(phase.start, phase.end, color="tab:blue", alpha=0.08)
            axis.grid(alpha=0.3)
        s = result["summary"]
        absorbed = ", ".join("never" if a is None else f"{a:.2f} s" for a in s["absorbed_in_s"])
        p95s = s["p95_ms"]
        spikes = [v for k, v in p95s.items() if k.startswith("spike") and v is not None]
        first, last = s["before_load"], s["at_end"]
        over = ", ".join(f"{o:.1f}" for o in s["over_threshold_s"])
        elastic = (f"{s['peak_workers']} workers at peak, {s['workers_added']} added, {s['workers_stopped']} stopped, "
                   f"back to {s['workers_at_end']} {s['workers_back_after_load_s']} s after the load") if cheaper else \
            f"{s['peak_zergs']} zergs at peak, {s['zerg_spawns']} spawned, {s['blacklisted']} blacklisted"
        ax[0].set_title(f"{result['server']}: absorbed in {absorbed} (backlog ≥ {threshold} for {over} s)\n"
                        f"p95 before {p95s.get('before')} ms, spike {max(spikes, default=None)} ms, "
                        f"after {p95s.get('after')} ms\n{s['failures']} failures of {s['requests']} · " + elastic
                        + (f" · vassal fds {first.get('vassal_fds')}→{last.get('vassal_fds')}, "
                           f"RSS {first.get('vassal_rss_kb')}→{last.get('vassal_rss_kb')} kB" if profile.waves > 1 else ""),
                        fontsize=9)
    axes[0, 0].set_ylabel("requests/s")
    axes[1, 0].set_ylabel("p95 latency ms\n(0.5 s windows)")
    axes[2, 0].set_ylabel("accept queue")
    axes[3, 0].set_ylabel("workers" if cheaper else "zergs")
    axes[3, 0].yaxis.get_major_locator().set_params(integer=True)
    for col in range(cols):
        axes[3, col].set_xlabel("seconds (spikes shaded)")
    spikes = f"{profile.waves} spikes" if profile.waves > 1 else "a spike"
    where = (f"one instance, --cheaper {args.cheaper} -p {args.processes} ({args.cheaper_algo}), no emperor" if cheaper
             else f"a broodlord vassal (SOS at {threshold} queued)")
    fig.suptitle(f"Open loop, {spikes} of {profile.base:g} → {profile.peak:g} requests/s on {where}", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _per_window(requests: list, buckets: list[float], when) -> list[list[tuple[float, float]]]:
    windows: list[list[tuple[float, float]]] = [[] for _ in buckets[:-1]]
    for t, ms, _ in requests:
        index = int(when(t, ms) / (buckets[1] - buckets[0]))
        if 0 <= index < len(windows):
            windows[index].append((t, ms))
    return windows


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


def listening(port: int) -> bool:
    """Whether the vassal has bound its port (without connecting: a probe would be a request)."""
    return any(f":{port:04X} " in line and line.split()[3] == "0A" for line in open("/proc/net/tcp"))


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
