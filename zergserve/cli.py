"""argv → Config → the role's run(); nothing else."""

from __future__ import annotations

import os
import socket
import sys

from zergserve import app as app_loader
from zergserve import compat, config, exitcodes, handover, log, loops, privileges, sockets, workers, zerg
from zergserve.exitcodes import StartError
from zergserve.emperor import protocol
from zergserve.hooks import Hooks, HooksError
from zergserve.log import logger, traceback_text
from zergserve.master import Master, check_start, hold_signals
from zergserve.sdnotify import Notifier


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    inherited = handover.take(os.environ)  # a re-exec's state: the role adopts it, no child inherits it
    try:
        cfg = config.load(args, os.environ)
    except (config.HelpRequested, config.VersionRequested) as exc:
        return _print(exc.args[0])
    except config.ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"zergserve: {log.printable(line)}", file=sys.stderr)
        return exitcodes.USAGE
    if cfg.connect_and_read:
        return _connect_and_read(cfg.connect_and_read)
    if cfg.print_config:  # before --logto takes stdout: the JSON is for the terminal or a pipe
        import json
        return _print(json.dumps({opt.name: getattr(cfg, opt.attr) for opt in config.OPTIONS}, indent=1,
                                 default=str))
    logto = None if cfg.check_config else cfg.logto  # a check answers on the terminal
    log.setup(logto, cfg.log_maxsize, tuple(cfg.touch_logreopen))
    log.set_level(cfg.log_level)
    for line in cfg.warnings:
        logger.warning("%s", line)
    patch = binary_patch(cfg)
    if patch:
        try:
            os.execvp(patch[0], patch)
        except OSError as exc:
            logger.error("binary patch %s: %s", patch[0], exc.strerror)
            return exitcodes.FAILURE
    roles = [name for name, on in (("--emperor", cfg.emperor), ("--zergpool", cfg.zergpool),
                                   ("an app (--module/--wsgi-file)", cfg.module or cfg.wsgi_file)) if on]
    if len(roles) > 1:
        logger.error("%s run in separate processes here: give them to separate zergserve commands",
                     " and ".join(roles))
        return exitcodes.USAGE
    try:
        emperor_fd = protocol.vassal_fd(os.environ)
    except ValueError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    if cfg.emperor and emperor_fd is not None:
        logger.error("refusing to run an emperor as a vassal (%s is set): an emperor's environment or "
                     "config made this vassal an emperor too; give vassals options with UWSGI_VASSAL_* "
                     "or --vassal-set instead", protocol.ENV_FD)
        return exitcodes.USAGE
    if cfg.zergpool:
        if cfg.check_config:
            return _check_zergpool(cfg)
        from zergserve import zergpool  # here: an instance's workers never need it (nor its json)
        return zergpool.run(cfg, args, emperor_fd, inherited)
    if cfg.emperor:
        return run_emperor(cfg)
    return run_instance(cfg, args, emperor_fd, inherited)


def _print(text: str) -> int:
    """Print to stdout and exit 0, also when the reader left early (`zergserve --help | head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail
    return 0


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
        return exitcodes.USAGE
    try:
        privileges.apply(privileges.prepare(cfg), warn_root=False)
        emperor = Emperor(cfg)
    except (ValueError, sockets.AddressError, privileges.PrivilegeError, OSError) as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    if cfg.check_config:
        return _check_emperor(emperor)
    try:
        emperor.start()
    except StartError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    return emperor.run()


def _check_emperor(emperor) -> int:
    """--check-config of an emperor: its monitors (checked when it was made) and the config of every
    vassal they see now, read as the vassal would read it (its cwd, environment and, for a database
    row, the descriptor the monitor hands over); nothing is started."""
    from zergserve.emperor.vassal import vassal_argv, vassal_environ
    bad = 0
    for monitor in emperor.monitors:
        for name in sorted(monitor.scan()):
            env = vassal_environ(os.environ)
            fd = monitor.config_fd(name)
            if fd >= 0:
                env[config.CONFIG_FD_VARIABLE] = f"{fd}:{name}"
            argv = vassal_argv(emperor.cfg, name)
            os.chdir(monitor.cwd())  # where the vassal would start
            try:
                config.load(argv[1:] if emperor.cfg.binary_path else argv[3:], env)
            except config.ConfigError as exc:
                bad += 1
                for line in str(exc).splitlines():
                    logger.error("vassal %s: %s", log.printable(name), log.printable(line))
            finally:
                if fd >= 0:
                    os.close(fd)
    if bad:
        return exitcodes.USAGE
    logger.info("emperor configuration OK (%s)", ", ".join(m.name for m in emperor.monitors))
    return 0


def _check_zergpool(cfg: config.Config) -> int:
    """--check-config of a zergpool: every PATH:addr1,addr2 parses; nothing is bound."""
    from zergserve import zergpool
    try:
        for spec in cfg.zergpool:
            zergpool.parse(spec)
    except sockets.AddressError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    logger.info("zergpool configuration OK")
    return 0


def run_instance(cfg: config.Config, argv: list[str], emperor_fd: int | None = None,
                 inherited: dict | None = None) -> int:
    """An instance: a master and its workers over the configured sockets; a vassal when its
    emperor's socket is given; `inherited` is what a previous image handed over (handover.py)."""
    start_cwd = os.getcwd()
    notify = Notifier.take(os.environ)  # before the app loads: only the master speaks to systemd
    try:
        identity = privileges.prepare(cfg)
    except privileges.PrivilegeError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    try:
        hooks = Hooks(cfg.hooks)  # before --chdir: a relative path means what it meant where we started
    except HooksError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    try:
        app_loader.prepare(cfg.chdir, cfg.pythonpath, cfg.env, cfg.home)
    except app_loader.AppLoadError as exc:
        logger.error("%s", exc)
        return exitcodes.APP_LOAD_ERROR
    compat.install(cfg)
    if cfg.cheaper:
        from zergserve import cheaper
        try:
            cheaper.check(cfg)
        except cheaper.CheaperError as exc:
            logger.error("%s", exc)
            return exitcodes.USAGE
    try:
        loops.check(cfg.loop)
    except loops.LoopError as exc:
        logger.error("%s", exc)
        return exitcodes.USAGE
    if cfg.check_static or cfg.static_map or cfg.static_map2:
        from zergserve import static  # here: an instance without static files never imports it
        try:
            files = static.Files.from_config(cfg)  # after --chdir: relative directories are the app's
        except static.StaticError as exc:
            logger.error("%s", exc)
            return exitcodes.USAGE
        app_loader.add_layer(static.layer(files, asgi=workers.SERVES[cfg.worker] == "asgi"))
    if cfg.check_config:
        return _check_config(cfg, inherited)
    reloaded = inherited is not None
    hold_signals()
    adopted = handover.adopt_listeners(inherited)
    handed = list(adopted.values())
    try:
        listeners = bind_listeners(cfg, adopted)
    except (sockets.AddressError, zerg.ZergError) as exc:
        logger.error("%s", exc)
        return exitcodes.FAILURE if isinstance(exc, zerg.ZergError) else exitcodes.USAGE
    for listener in adopted.values():
        logger.info("closing %s: no longer in the configuration", listener.name)
        sockets.close_listener(listener, cfg.vacuum)
    if not listeners:
        logger.error("no socket to serve: give --http ADDR and/or --socket ADDR")
        return exitcodes.USAGE
    try:
        privileges.apply(identity)  # uWSGI's order: after the sockets are bound, before the app loads
    except (OSError, privileges.PrivilegeError) as exc:
        logger.error("cannot drop privileges: %s", exc)
        _abandon(listeners, cfg.vacuum)
        return exitcodes.USAGE
    app = None
    if not cfg.lazy_apps:
        app = _load_app(cfg)
        if app is None and not (inherited or {}).get("workers"):
            _abandon(listeners, cfg.vacuum)
            return exitcodes.APP_LOAD_ERROR
    master = Master(cfg, listeners, app, workers.get(cfg.worker), argv, start_cwd, notify, hooks, inherited)
    if log.logto_file is not None:
        master.add_housekeeping(log.logto_file.check)  # moved, rotated, --touch-logreopen
    if reloaded:
        master.added_listeners = [item for item in listeners if item.origin == "bound" and item not in handed]
    if app is None and not cfg.lazy_apps:  # a reload's new image, with the previous workers to fall back on
        master.roll_back("the new app could not be loaded by the master", exitcodes.APP_LOAD_ERROR)
    if cfg.zerg_server:
        try:
            server = zerg.ZergServer(cfg.zerg_server, listeners, cfg.listen, cfg.zerg_server_mode,
                                     cfg.zerg_allow_uid)
        except sockets.AddressError as exc:
            logger.error("%s", exc)
            _abandon(listeners, cfg.vacuum)
            return exitcodes.USAGE
        master.add_reader(server, server.serve_one)
        master.add_housekeeping(server.refusals.flush)
        master.add_cleanup(server.close)
        master.add_stats(server.stats)
        server.restore((inherited or {}).get("zerg_server"))
        master.add_handover("zerg_server", server.handover)
    link = None
    if emperor_fd is not None:
        from zergserve.emperor.vassal_link import EmperorLink
        link = EmperorLink(emperor_fd, master, first_start=not reloaded)
    if cfg.idle or cfg.cheap or cfg.vassal_sos_backlog or cfg.vassal_sos:
        from zergserve.elastic import Elastic
        Elastic(master, link.send if link else None, link.ask_to_die if link else None)
    if cfg.cheaper:
        from zergserve.cheaper import Cheaper
        Cheaper(master)
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
    defer = sockets.defer_accept_seconds(cfg.socket_timeout, not cfg.no_defer_accept)
    fresh: list[sockets.Listener] = []
    try:
        for addr, proto in [*configured.items(), *unflagged]:
            if sockets.canonical_name(addr) in attached:
                continue
            listener = _take_adopted(addr, adopted)
            if listener is not None:
                listener.proto = proto
                if listener.origin == "bound":  # ours, and the option may have changed since
                    sockets.set_defer_accept(listener, defer)
            elif addr in activated:
                listener = sockets.from_fd(int(addr[len("fd://"):]), proto, name=addr, origin="systemd")
            else:
                listener = sockets.bind(addr, proto, cfg.listen, cfg.chmod_socket,
                                        privileges.socket_owner(cfg.chown_socket), defer)
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
        return workers.load_app(cfg)
    except app_loader.AppLoadError as exc:
        logger.error("cannot load the app: %s", exc)
        if exc.__cause__ is not None:
            logger.error("%s", traceback_text(exc.__cause__))
        return None


def _abandon(listeners: list[sockets.Listener], vacuum: bool) -> None:
    """Close the sockets of an instance that will not start (with --vacuum, their files too)."""
    for listener in listeners:
        sockets.close_listener(listener, vacuum)


def _check_config(cfg: config.Config, inherited: dict | None = None) -> int:
    """--check-config: the configuration and the app load. As the master's HUP check it also
    tries what the new master will bind and create, and boots a trial worker of the new app that
    must answer the --reload-check-url requests (trial.py), so that a reload that would fail is
    refused while the old workers go on serving."""
    reload_check = False
    if inherited is not None and "reload_check" in inherited:
        reload_check = True
        code = _check_reload_resources(cfg, inherited)
        if code:
            return code
    app = None
    if not (reload_check and cfg.lazy_apps):  # a lazy app loads in the trial worker, after its fork
        app = _load_app(cfg)
        if app is None:
            return exitcodes.APP_LOAD_ERROR
    if reload_check:
        from zergserve import trial  # here: http.client (email, ssl) would otherwise sit in every worker's memory
        code = trial.run(cfg, app, workers.get(cfg.worker))
        if code:
            return code
    logger.info("configuration and app OK")
    return 0


def _check_reload_resources(cfg: config.Config, inherited: dict) -> int:
    """Bind the addresses the running master does not hold (it passes us the ones it does, which
    are taken over, never rebound), then release them and remove the socket files made here; check
    the stats and metrics addresses and the pidfile. A zerg that has not attached yet would attach at start, so
    it has nothing to bind here."""
    adopted = handover.adopt_listeners(inherited)
    held = list(adopted.values())
    listeners: list[sockets.Listener] = []
    try:
        if not cfg.zerg or any(item.attached for item in held):
            listeners = bind_listeners(cfg, adopted, attach=False)
        check_start(cfg, inherited["reload_check"])
    except (sockets.AddressError, StartError) as exc:
        logger.error("reload check: %s", exc)
        return exitcodes.USAGE
    finally:
        for listener in listeners:
            sockets.close_listener(listener, vacuum=listener not in held)
        for listener in adopted.values():
            sockets.close_listener(listener)
    return 0


def _connect_and_read(addr: str) -> int:
    """--connect-and-read: what a stats (or any) socket sends, on stdout, as `uwsgi --connect-and-read`."""
    try:
        family, sockaddr = sockets.parse_address(addr)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(sockaddr)
            while data := sock.recv(65536):
                sys.stdout.buffer.write(data)
    except (OSError, ValueError) as exc:
        print(f"zergserve: connect-and-read {addr}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.flush()
    return 0
