"""argv → Config → the role's run(); nothing else."""

from __future__ import annotations

import os
import sys
import traceback

from zergserve import app as app_loader
from zergserve import config, log, privileges, sockets, workers, zerg
from zergserve.emperor import protocol
from zergserve.log import logger
from zergserve.master import (RELOAD_CHECK, REEXEC_LISTENERS, Master, StartError, adopt_reexec_listeners,
                              check_start, hold_signals)
from zergserve.sdnotify import Notifier
from zergserve.workers.base import EXIT_APP_LOAD_ERROR

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config.load(args, os.environ)
    except config.HelpRequested as exc:
        print(exc.args[0])
        return 0
    except config.VersionRequested as exc:
        print(exc.args[0])
        return 0
    except config.ConfigError as exc:
        print(f"zergserve: {log.printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    log.setup(cfg.logto)
    patch = binary_patch(cfg)
    if patch:
        try:
            os.execvp(patch[0], patch)
        except OSError as exc:
            logger.error("binary patch %s: %s", patch[0], exc.strerror)
            return 1
    if cfg.print_config:
        import json
        print(json.dumps({opt.name: getattr(cfg, opt.name.replace("-", "_")) for opt in config.OPTIONS},
                         indent=1, default=str))
        return 0
    roles = [name for name, on in (("--emperor", cfg.emperor), ("--zergpool", cfg.zergpool),
                                   ("an app (--module/--wsgi-file)", cfg.module or cfg.wsgi_file)) if on]
    if len(roles) > 1:
        logger.error("%s run in separate processes here: give them to separate zergserve commands",
                     " and ".join(roles))
        return EXIT_USAGE
    try:
        emperor_fd = protocol.vassal_fd(os.environ)
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    if cfg.emperor and emperor_fd is not None:
        logger.error("refusing to run an emperor as a vassal (%s is set): an emperor's environment or "
                     "config made this vassal an emperor too; give vassals options with UWSGI_VASSAL_* "
                     "or --vassal-set instead", protocol.ENV_FD)
        return EXIT_USAGE
    if cfg.zergpool:
        from zergserve import zergpool  # here: an instance's workers never need it (nor its json)
        return zergpool.run(cfg, args, emperor_fd)
    if cfg.emperor:
        return run_emperor(cfg)
    return run_instance(cfg, args, emperor_fd)


def binary_patch(cfg: config.Config) -> list[str]:
    """The program a *-binary-patch option says to become instead of serving (uWSGI's options,
    used to run e.g. nginx as a vassal); [] when there is none."""
    line = cfg.privileged_binary_patch_arg or cfg.unprivileged_binary_patch_arg
    if line:
        import shlex  # here: only a binary-patched vassal needs it, not every worker
        return shlex.split(line)
    program = cfg.privileged_binary_patch or cfg.unprivileged_binary_patch
    return [program] if program else []


def run_emperor(cfg: config.Config) -> int:
    """An emperor with --uid/--gid drops them before it starts (its vassals then run as that user
    too, and drop no further unless they may); without, as root, each vassal applies its own."""
    from zergserve.emperor.emperor import Emperor
    if cfg.emperor_tyrant and (cfg.uid or cfg.gid):
        logger.error("--emperor-tyrant runs each vassal as its config file's owner, which needs an emperor "
                     "that stays root: give --uid/--gid to the vassals, not to the emperor")
        return EXIT_USAGE
    try:
        privileges.apply(privileges.prepare(cfg), warn_root=False)
        emperor = Emperor(cfg)
    except (ValueError, sockets.AddressError, privileges.PrivilegeError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    return emperor.run()


def run_instance(cfg: config.Config, argv: list[str], emperor_fd: int | None = None) -> int:
    """An instance: a master and its workers over the configured sockets; a vassal when its
    emperor's socket is given."""
    start_cwd = os.getcwd()
    notify = Notifier.take(os.environ)  # before the app loads: only the master speaks to systemd
    try:
        identity = privileges.prepare(cfg)
    except privileges.PrivilegeError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    try:
        app_loader.prepare(cfg.chdir, cfg.pythonpath, cfg.env, cfg.home)
    except app_loader.AppLoadError as exc:
        logger.error("%s", exc)
        return EXIT_APP_LOAD_ERROR
    if cfg.check_static or cfg.static_map or cfg.static_map2:
        from zergserve import static  # here: an instance without static files never imports it
        try:
            files = static.Files.from_config(cfg)  # after --chdir: relative directories are the app's
        except static.StaticError as exc:
            logger.error("%s", exc)
            return EXIT_USAGE
        app_loader.add_layer(static.layer(files, asgi=cfg.worker == "asyncio"))
    if cfg.check_config:
        return _check_config(cfg)
    reloaded = REEXEC_LISTENERS in os.environ
    hold_signals()
    adopted = adopt_reexec_listeners()
    try:
        listeners = bind_listeners(cfg, adopted)
    except (sockets.AddressError, zerg.ZergError) as exc:
        logger.error("%s", exc)
        return 1 if isinstance(exc, zerg.ZergError) else EXIT_USAGE
    for listener in adopted.values():
        logger.info("closing %s: no longer in the configuration", listener.name)
        sockets.close_listener(listener, cfg.vacuum)
    if not listeners:
        logger.error("no socket to serve: give --http ADDR and/or --socket ADDR")
        return EXIT_USAGE
    try:
        privileges.apply(identity)  # uWSGI's order: after the sockets are bound, before the app loads
    except (OSError, privileges.PrivilegeError) as exc:
        logger.error("cannot drop privileges: %s", exc)
        _abandon(listeners, cfg.vacuum)
        return EXIT_USAGE
    app = None
    if not cfg.lazy_apps:
        app = _load_app(cfg)
        if app is None:
            _abandon(listeners, cfg.vacuum)
            return EXIT_APP_LOAD_ERROR
    master = Master(cfg, listeners, app, workers.get(cfg.worker), argv, start_cwd, notify)
    if cfg.zerg_server:
        try:
            server = zerg.ZergServer(cfg.zerg_server, listeners, cfg.listen, cfg.zerg_server_mode,
                                     cfg.zerg_allow_uid)
        except sockets.AddressError as exc:
            logger.error("%s", exc)
            _abandon(listeners, cfg.vacuum)
            return EXIT_USAGE
        master.add_reader(server, server.serve_one)
        master.add_housekeeping(server.refusals.flush)
        master.add_cleanup(server.close)
        master.add_stats(server.stats)
        master.add_handover(server.handover)
    link = None
    if emperor_fd is not None:
        from zergserve.emperor.link import EmperorLink
        link = EmperorLink(emperor_fd, master, first_start=not reloaded)
    if cfg.idle or cfg.cheap or cfg.vassal_sos_backlog or cfg.vassal_sos:
        from zergserve.elastic import Elastic
        Elastic(master, link.send if link else None, link.ask_to_die if link else None)
    if cfg.reload_on_rss or cfg.evil_reload_on_rss or cfg.max_worker_lifetime:
        from zergserve.recycling import Recycler
        Recycler(master)
    if cfg.touch_reload or cfg.touch_workers_reload or cfg.fs_reload or cfg.py_autoreload:
        from zergserve.reloader import Reloader
        Reloader(master)
    attached = sorted({item.origin[len("zerg:"):] for item in listeners if item.origin.startswith("zerg:")})
    if attached:
        master.add_stats(lambda: {"zerg_attached_from": attached})
    return master.run()


def bind_listeners(cfg: config.Config, adopted: dict[str, sockets.Listener],
                   attach: bool = True) -> list[sockets.Listener]:
    """Adopt what a previous master image, zerg servers or systemd passed us; bind the rest.

    `adopted` holds the previous image's listeners by name: what is kept is taken out of it, and the
    caller closes what is left (no longer configured). A zerg keeps the sockets it attached across
    its own reload: they come back from the previous image like any other, so it does not attach
    again. A systemd socket comes back from the previous image too (after the re-exec LISTEN_PID
    still names this pid): it is that listener again, never a second one over the same fd.
    Without `attach` a zerg that has not attached yet does not try (the reload check).
    """
    listeners = [item for item in adopted.values() if item.attached]
    for item in listeners:
        del adopted[item.name]
    configured = {addr: "http" for addr in cfg.http} | {addr: "uwsgi" for addr in cfg.socket}
    if cfg.zerg and not listeners and attach:
        # A zerg attaches before it drops: the server of the user it becomes is one of its own.
        trusted = [*cfg.zerg_allow_uid, *([privileges.resolve_user(cfg.uid)[0]] if cfg.uid else [])]
        listeners = zerg.attach_all(cfg.zerg, cfg.zerg_fallback, configured, trusted)
    attached = {sockets.canonical_name(item.name) for item in listeners}
    activated = [f"fd://{fd}" for fd in sockets.systemd_fds()]
    unflagged = [(addr, "http") for addr in activated if addr not in configured]
    fresh: list[sockets.Listener] = []
    try:
        for addr, proto in [*configured.items(), *unflagged]:
            if sockets.canonical_name(addr) in attached:
                continue
            listener = _take_adopted(addr, adopted)
            if listener is not None:
                listener.proto = proto
            elif addr in activated:
                listener = sockets.from_fd(int(addr[len("fd://"):]), proto, name=addr, origin="systemd")
            else:
                listener = sockets.bind(addr, proto, cfg.listen, cfg.chmod_socket,
                                        privileges.socket_owner(cfg.chown_socket))
                fresh.append(listener)
            listeners.append(listener)
    except sockets.AddressError:
        for listener in listeners:
            sockets.close_listener(listener, vacuum=listener in fresh)  # our new files only
        raise
    return listeners


def _take_adopted(addr: str, adopted: dict[str, sockets.Listener]) -> sockets.Listener | None:
    """The previous image's listener on `addr`, however either spelled it ('localhost:80' is
    '127.0.0.1:80'): binding it again would fail, the old one still holds it."""
    if addr in adopted:
        return adopted.pop(addr)
    canonical = sockets.canonical_name(addr)
    for name in adopted:
        if sockets.canonical_name(name) == canonical:
            listener = adopted.pop(name)
            listener.name = addr
            return listener
    return None


def _load_app(cfg: config.Config):
    try:
        return app_loader.load(cfg.module, cfg.wsgi_file, cfg.callable)
    except app_loader.AppLoadError as exc:
        logger.error("cannot load the app: %s", exc)
        if exc.__cause__ is not None:
            logger.error("%s", "".join(traceback.format_exception(exc.__cause__)).rstrip())
        return None


def _abandon(listeners: list[sockets.Listener], vacuum: bool) -> None:
    """Close the sockets of an instance that will not start (with --vacuum, their files too)."""
    for listener in listeners:
        sockets.close_listener(listener, vacuum)


def _check_config(cfg: config.Config) -> int:
    """--check-config: the configuration and the app load. As the master's HUP check it also
    tries what the new master will bind and create, so that a reload that would fail is refused
    while the old workers go on serving."""
    if RELOAD_CHECK in os.environ:
        code = _check_reload_resources(cfg, os.environ.pop(RELOAD_CHECK))
        if code:
            return code
    if _load_app(cfg) is None:
        return EXIT_APP_LOAD_ERROR
    logger.info("configuration and app OK")
    return 0


def _check_reload_resources(cfg: config.Config, held_stats: str) -> int:
    """Bind the addresses the running master does not hold (it passes us the ones it does, which
    are taken over, never rebound), then release them and remove the socket files made here; check
    the stats address and the pidfile. A zerg that has not attached yet would attach at start, so
    it has nothing to bind here."""
    adopted = adopt_reexec_listeners()
    held = list(adopted.values())
    listeners: list[sockets.Listener] = []
    try:
        if not cfg.zerg or any(item.attached for item in held):
            listeners = bind_listeners(cfg, adopted, attach=False)
        check_start(cfg, held_stats)
    except (sockets.AddressError, StartError) as exc:
        logger.error("reload check: %s", exc)
        return EXIT_USAGE
    finally:
        for listener in listeners:
            sockets.close_listener(listener, vacuum=listener not in held)
        for listener in adopted.values():
            sockets.close_listener(listener)
    return 0
