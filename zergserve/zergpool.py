"""A zergpool: binds addresses and hands them only to zergs; it never accepts on them itself.

`--zergpool PATH:addr1,addr2` (repeatable, split at the first ':' as uWSGI does); the pooled
sockets speak `--zergpool-protocol` (uwsgi by default), which zergserve zergs learn from the pool. With no zerg
attached, connections wait in the kernel backlog; zergs can come and go while the pool keeps the
sockets, and so their queues, alive. The pool runs no app and has no workers, so HUP (which would
otherwise kill it and reset every queued connection) is logged and ignored.
"""

from __future__ import annotations

import selectors
import signal
from typing import Any

from setproctitle import setproctitle

from zergserve import sockets
from zergserve.log import logger
from zergserve.wakeup import drain, wakeup_pipe
from zergserve.zerg import ZergServer


def parse(spec: str) -> tuple[str, list[str]]:
    """'PATH:addr1,addr2' → (PATH, [addr1, addr2])."""
    path, sep, addrs = spec.partition(":")
    items = [a.strip() for a in addrs.split(",") if a.strip()]
    if not sep or not path or not items:
        raise sockets.AddressError(f"invalid zergpool syntax {spec!r}: expected PATH:addr1,addr2")
    return path, items


def run(cfg: Any) -> int:
    """Bind every pool and answer zergs until TERM/INT/QUIT; HUP is harmless."""
    servers: list[ZergServer] = []
    bound: list[sockets.Listener] = []
    try:
        for spec in cfg.zergpool:
            path, addrs = parse(spec)
            pool = []
            for addr in addrs:
                proto = cfg.zergpool_protocol
                listener = sockets.bind(addr, proto, cfg.listen, cfg.chmod_socket)
                bound.append(listener)
                pool.append(listener)
                logger.info("zergpool %s bound to %s (%s, fd %d)", path, addr, proto, listener.fileno())
            servers.append(ZergServer(path, pool, cfg.listen, cfg.zerg_server_mode, cfg.zerg_allow_uid))
    except sockets.AddressError as exc:
        logger.error("%s", exc)
        for listener in bound:
            sockets.close_listener(listener, cfg.vacuum)
        for server in servers:
            server.close()
        return 2
    setproctitle(f"{cfg.procname_prefix}zergserve zergpool")
    stop: list[int] = []
    hups: list[int] = []
    wake_r, _ = wakeup_pipe()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, lambda n, f: stop.append(n))
    signal.signal(signal.SIGHUP, lambda n, f: hups.append(n))
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ, None)
    for server in servers:
        selector.register(server, selectors.EVENT_READ, server)
    while not stop:
        for key, _ in selector.select(5.0):
            if key.data is not None:
                key.data.serve_one()
        drain(wake_r)
        if hups:
            hups.clear()
            logger.info("zergpool: HUP ignored, a pool has nothing to reload (its sockets and queues stay)")
    logger.info("zergpool stopping")
    for server in servers:
        server.close()
    for listener in bound:
        sockets.close_listener(listener, cfg.vacuum)
    return 0
