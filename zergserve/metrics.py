"""Prometheus metrics: `--metrics ADDR` (an instance) and `--emperor-metrics ADDR` (an emperor).

The numbers are the ones the stats documents carry (so /metrics and --stats never disagree), plus
the response-time histogram the scoreboard rows keep. The master or the emperor serves them from
its own loop through the stats server's socket handling: an HTTP/1.0 answer to `GET /metrics`, in
the text exposition format 0.0.4, then close.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterable

from zergserve.scoreboard import BUCKETS, STATUS_NAMES, Totals
from zergserve.stats import StatsServer, read_head

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family:
    """One metric family: its HELP and TYPE lines and its samples."""

    def __init__(self, name: str, kind: str, help: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> "Family":
        self.samples.append((self.name + suffix, labels, value))
        return self


def render(families: Iterable[Family]) -> str:
    """The text exposition format: https://prometheus.io/docs/instrumenting/exposition_formats/"""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for name, labels, value in family.samples:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def instance(doc: dict[str, Any], totals: list[Totals]) -> list[Family]:
    """An instance's families from its stats document and its workers' lifetime totals."""
    per_worker = [
        ("requests_total", "counter", "requests served", "requests"),
        ("exceptions_total", "counter", "requests that ended in an error (5xx or a broken response)",
         "exceptions"),
        ("harakiri_total", "counter", "workers killed by --harakiri", "harakiri_count"),
        ("respawns_total", "counter", "worker processes started again after one exited", "respawn_count"),
        ("sent_bytes_total", "counter", "bytes sent in responses (uWSGI's tx)", "tx"),
        ("worker_rss_bytes", "gauge", "resident memory of the worker process", "rss"),
        ("worker_vsz_bytes", "gauge", "virtual memory of the worker process", "vsz"),
        ("websockets", "gauge", "open WebSocket connections (asyncio worker)", "websockets"),
        ("connections", "gauge", "open client connections (gevent and asyncio workers)", "connections"),
    ]
    families = []
    for suffix, kind, help, key in per_worker:
        family = Family("zergserve_" + suffix, kind, help)
        for worker in doc["workers"]:
            family.add(worker[key], worker=str(worker["id"]))
        families.append(family)
    statuses = Family("zergserve_workers", "gauge", "worker processes by status")
    counts = {name: 0 for name in STATUS_NAMES.values()}
    for worker in doc["workers"]:
        counts[worker["status"]] = counts.get(worker["status"], 0) + 1
    for name, count in counts.items():
        statuses.add(count, status=name)
    families.append(statuses)
    queue = Family("zergserve_listen_queue", "gauge", "connections waiting in a socket's accept queue")
    limit = Family("zergserve_listen_queue_max", "gauge", "size of a socket's accept queue (--listen)")
    for sock in doc["sockets"]:
        queue.add(sock["queue"], socket=sock["name"])
        limit.add(sock["max_queue"], socket=sock["name"])
    families += [queue, limit, _histogram(totals)]
    if "cheaper" in doc:
        families += _cheaper(doc["cheaper"])
    return families


def _cheaper(state: dict[str, Any]) -> list[Family]:
    """The cheaper subsystem's aim and moves (its "cheaper" stats object)."""
    target = Family("zergserve_workers_target", "gauge", "workers the cheaper subsystem runs now "
                    "(between --cheaper and --processes)").add(state["target"])
    bounds = Family("zergserve_cheaper_workers", "gauge", "the cheaper subsystem's bounds: --cheaper and "
                    "--processes")
    bounds.add(state["min"], bound="min").add(state["max"], bound="max")
    changes = Family("zergserve_cheaper_changes_total", "counter", "workers the cheaper subsystem added (up) or "
                     "stopped (down)")
    changes.add(state["added"], direction="up").add(state["stopped"], direction="down")
    return [target, bounds, changes]


def _histogram(totals: list[Totals]) -> Family:
    family = Family("zergserve_request_duration_seconds", "histogram",
                    "time from a request's head read to its response sent")
    running = 0
    for i, bound in enumerate(BUCKETS):
        running += sum(item.buckets[i] for item in totals)
        family.add(running, "_bucket", le=repr(bound))
    family.add(sum(item.requests for item in totals), "_bucket", le="+Inf")
    family.add(sum(item.running_time for item in totals) / 1e6, "_sum")
    family.add(sum(item.requests for item in totals), "_count")
    return family


def emperor(doc: dict[str, Any]) -> list[Family]:
    """An emperor's families from its stats document: vassals, their throttles, broodlord zergs."""
    vassals = [item for item in doc["vassals"] if not item["zerg"]]
    zergs = [item for item in doc["vassals"] if item["zerg"]]
    count = Family("zergserve_emperor_vassals", "gauge", "vassals by state (zergs not included)")
    for state in ("running", "accepting", "loyal"):
        count.add(sum(1 for item in vassals if state == "running" or item[state]), state=state)
    respawns = Family("zergserve_emperor_vassal_respawns_total", "counter", "times a vassal was started again")
    sos = Family("zergserve_emperor_sos_total", "counter", "reinforcements a vassal asked for (broodlord)")
    for item in vassals:
        respawns.add(item["respawns"], vassal=item["id"])
        sos.add(item["sos"], vassal=item["id"])
    brood = Family("zergserve_emperor_broodlord_zergs", "gauge", "zergs running for a vassal (broodlord)")
    per_vassal: dict[str, int] = {}
    for item in zergs:
        parent = item["id"].removesuffix(":zerg")
        per_vassal[parent] = per_vassal.get(parent, 0) + 1
    for name, number in sorted(per_vassal.items()):
        brood.add(number, vassal=name)
    blacklist = Family("zergserve_emperor_throttled_vassals", "gauge",
                       "vassals blacklisted for dying before they served (each start waits longer)")
    blacklist.add(len(doc["blacklist"]))
    delay = Family("zergserve_emperor_throttle_seconds", "gauge", "how long a blacklisted vassal's next "
                   "start waits")
    for entry in doc["blacklist"]:
        delay.add(entry["throttle_level"] / 1000, vassal=entry["id"])
    tokens = Family("zergserve_emperor_throttle_tokens", "gauge", "starts of failing vassals allowed "
                    "right now (--emperor-spawn-burst refills one per --emperor-throttle)")
    tokens.add(float(doc["throttle_level"]))
    scans = Family("zergserve_emperor_scans_total", "counter", "scans of the monitors").add(doc["scans"])
    return [count, respawns, sos, brood, blacklist, delay, tokens, scans]


class MetricsServer(StatsServer):
    """Answers `GET /metrics` with `document()` (exposition text); 404 and 405 otherwise."""

    what = "metrics"

    def __init__(self, addr: str, document: Callable[[], str], *, chmod: int | None = None) -> None:
        # http: after the reply, wait for the client's close (its body may still be on its way), as
        # --stats-http does; a close with its bytes unread would reset the connection
        super().__init__(addr, document, http=True, chmod=chmod)

    def reply(self, conn: socket.socket) -> bytes:
        head = read_head(conn)
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response(b"405 Method Not Allowed", b"GET or HEAD only\n", b"Allow: GET, HEAD\r\n")
        if path != b"/metrics":
            return _response(b"404 Not Found", b"metrics are at /metrics\n")
        body = self.document().encode()
        return _response(b"200 OK", b"" if method == b"HEAD" else body, length=len(body))


def _response(status: bytes, body: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    content_type = CONTENT_TYPE.encode() if status.startswith(b"200") else b"text/plain"
    return (b"HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (status, content_type, len(body) if length is None else length, extra) + body)
