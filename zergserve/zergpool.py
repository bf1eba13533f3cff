"""A zergpool: binds addresses and hands them only to zergs; it never accepts on them itself.

`--zergpool PATH:addr1,addr2` (repeatable, split at the first ':' as uWSGI does); the pooled
sockets speak `--zergpool-protocol` (uwsgi by default), which zergserve zergs learn from the pool. With no zerg
attached, connections wait in the kernel backlog; zergs can come and go while the pool keeps the
sockets, and so their queues, alive. The pool runs no app and has no workers, so HUP (which would
otherwise kill it and reset every queued connection) is logged and ignored.

As a vassal (UWSGI_EMPEROR_FD set) it tells its emperor 1, 5 and 17 once its sockets are bound (it
serves no request itself, so it is loyal at once, as uWSGI's sub-emperor is), 26 every --heartbeat
seconds; 0 and 2 stop it, EOF stops it with exit code 1, and 1 re-executes it with the new
configuration, handing the bound sockets over so that no queued connection is lost.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections.abc import Sequence


from zergserve import config, exitcodes, handover, privileges, proctitle, sockets
from zergserve.emperor import protocol
from zergserve.emperor.vassal_link import VassalLink
from zergserve.log import logger
from zergserve.sdnotify import Notifier
from zergserve.wakeup import drain, record_signals, wakeup_pipe
from zergserve.zerg import ZergServer


def parse(spec: str) -> tuple[str, list[str]]:
    """'PATH:addr1,addr2' → (PATH, [addr1, addr2])."""
    path, sep, addrs = spec.partition(":")
    items = [a.strip() for a in addrs.split(",") if a.strip()]
    if not sep or not path or not items:
        raise sockets.AddressError(f"invalid zergpool syntax {spec!r}: expected PATH:addr1,addr2")
    return path, items


def run(cfg: config.Config, argv: Sequence[str] = (), emperor_fd: int | None = None,
        inherited: dict | None = None) -> int:
    """Bind every pool and answer zergs until TERM/INT/QUIT (or the emperor says stop); HUP is harmless.
    `inherited`: the sockets a reload's previous image handed over (handover.py)."""
    try:
        identity = privileges.prepare(cfg)
    except privileges.PrivilegeError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    kept = handover.adopt_listeners(inherited)
    notify = Notifier.take(os.environ)
    reloaded = inherited is not None
    servers: list[ZergServer] = []
    bound: list[sockets.Listener] = []
    pools: list[tuple[str, list[sockets.Listener]]] = []
    try:
        defer = sockets.defer_accept_seconds(cfg.socket_timeout, not cfg.no_defer_accept)
        for spec in cfg.zergpool:
            path, addrs = parse(spec)
            pool = []
            for addr in addrs:
                proto = cfg.zergpool_protocol
                if addr in kept:
                    listener = kept.pop(addr)
                else:
                    listener = sockets.bind(addr, proto, cfg.listen, cfg.chmod_socket,
                                            privileges.socket_owner(cfg.chown_socket), defer)
                bound.append(listener)
                pool.append(listener)
                logger.info("zergpool %s bound to %s (%s, fd %d)", path, addr, proto, listener.fileno())
            pools.append((path, pool))
        # As an instance: the zerg servers come after the drop, so they trust (and are reachable by)
        # zergs of the identity the pool runs as. A pool runs no app: root needs no warning here.
        privileges.apply(identity, warn_root=False)
        for path, pool in pools:
            servers.append(ZergServer(path, pool, cfg.listen, cfg.zerg_server_mode, cfg.zerg_allow_uid))
    except (sockets.AddressError, privileges.PrivilegeError, OSError) as exc:
        logger.error("%s", exc)
        for listener in bound:
            sockets.close_listener(listener, cfg.vacuum)
        for server in servers:
            server.close()
        return exitcodes.USAGE
    for listener in kept.values():  # addresses no longer in the configuration
        sockets.close_listener(listener)
    proctitle.set_title(cfg, "zergpool", master=True)
    stop: list[int] = []
    signals: list[int] = []
    wake_r, _ = wakeup_pipe()
    record_signals((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP), signals)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ, lambda: drain(wake_r))
    for server in servers:
        selector.register(server, selectors.EVENT_READ, server.serve_one)
    code = exitcodes.OK
    reloads: list[bool] = []
    link: VassalLink | None = None
    if emperor_fd is not None:
        def lost() -> None:
            nonlocal code
            if not stop:
                logger.error("lost connection with my emperor !!!")
                code = exitcodes.FAILURE
                stop.append(0)

        link = VassalLink(emperor_fd, on_stop=lambda graceful: stop.append(0),
                          on_reload=lambda: reloads.append(True), on_lost=lost)
        selector.register(link.sock, selectors.EVENT_READ, link.receive)
        # it serves no request itself, so it is loyal at once, as uWSGI's sub-emperor is
        for byte in (protocol.ACCEPTING,) if reloaded else (protocol.SPAWNED, protocol.ACCEPTING, protocol.LOYAL):
            link.send(byte)
    if not reloaded:
        notify.ready(f"zergpool serving {len(bound)} socket(s) to zergs")
    every = cfg.heartbeat
    while not stop:
        notify.wait(selector, min(5.0, float(every)) if every and link else 5.0)
        for server in servers:
            server.refusals.flush()
        while signals:
            signum = signals.pop(0)
            if signum == signal.SIGHUP:
                logger.info("zergpool: HUP ignored, a pool has nothing to reload (its sockets and queues stay)")
            else:
                stop.append(signum)
        if link is not None:
            if link.heartbeat_due(every):
                link.heartbeat()
            if reloads and not stop:
                reloads.clear()
                _reexec(argv, bound, servers)
    logger.info("zergpool stopping")
    notify.stopping("zergpool stopping")
    for server in servers:
        server.close()
    for listener in bound:
        sockets.close_listener(listener, cfg.vacuum)
    return code


def _reexec(argv: Sequence[str], bound: list[sockets.Listener], servers: list[ZergServer]) -> None:
    """Reload: check the configuration, then become a fresh zergpool that adopts the bound sockets
    (their queues survive; zergs keep the fds they hold). A bad configuration keeps this one."""
    try:
        config.load(argv, os.environ)
    except config.ConfigError as exc:
        logger.error("reload aborted, the zergpool goes on as it was: %s", exc)
        return
    logger.info("zergpool reloading: re-executing (pid %d)", os.getpid())
    for server in servers:
        server.close()
    handover.exec_self(argv, {"listeners": handover.listener_records(bound)}, bound)
