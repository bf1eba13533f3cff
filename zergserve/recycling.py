"""Recycling workers before they age badly: --reload-on-rss, --evil-reload-on-rss, --max-worker-lifetime.

Checked by the master once per cycle (uWSGI checks reload-on-rss in the worker after each request;
reading /proc once a second in the master costs the requests nothing):

    --reload-on-rss MB        a worker above MB resident is recycled after the request in hand
    --evil-reload-on-rss MB   a worker above MB is killed at once (SIGKILL), even mid-request: for
                              a request whose memory grows without end, which the graceful one waits for
    --max-worker-lifetime S   a worker older than S + (id - 1) * --max-worker-lifetime-delta seconds
                              is recycled after the request in hand; the delta spreads the recycling
                              so that workers started together do not all leave together

A recycled worker leaves the queue to the others and is respawned as soon as it exits.
"""

from __future__ import annotations

import time

from zergserve.log import logger
from zergserve.plugin import Host

_MB = 1024 * 1024


class Recycler:
    def __init__(self, master: Host) -> None:
        self.master = master
        self.cfg = master.cfg
        master.add_housekeeping(self.housekeeping)

    def housekeeping(self) -> None:
        cfg = self.cfg
        now = time.monotonic()
        for proc in self.master.worker_procs():
            wid = proc.wid
            if proc.recycle_deadline is not None:
                continue
            rss = proc.rss() if cfg.reload_on_rss or cfg.evil_reload_on_rss else 0
            if cfg.evil_reload_on_rss and rss > cfg.evil_reload_on_rss * _MB:
                logger.error("*** EVIL RELOAD ON WORKER %d (pid %d): RSS %d MB above %d MB, killing it ***",
                             wid, proc.pid, rss // _MB, cfg.evil_reload_on_rss)
                self.master.kill_worker(wid)
            elif cfg.reload_on_rss and rss > cfg.reload_on_rss * _MB:
                self.master.recycle(wid, f"reload-on-rss: RSS {rss // _MB} MB above {cfg.reload_on_rss} MB")
            elif cfg.max_worker_lifetime:
                lifetime = cfg.max_worker_lifetime + (wid - 1) * cfg.max_worker_lifetime_delta
                if now - proc.spawned > lifetime:
                    self.master.recycle(wid, f"max-worker-lifetime: running for {int(now - proc.spawned)} "
                                             f"seconds (limit {lifetime})")
