"""The option table: one row per option (name, type, default, help, aliases, group), which the
command line, config files, the environment, the typed Config, --help and docs/settings.md all read.
A new option is one row here (and its attribute in view.Config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from zergserve import accesslog, proxy
from zergserve.config.converters import (address, boolean, choice, expires_rule, expires_type, integer, key_value,
                                         log_format, mode, mount, number, proxies, strftime, text, umask)


class Option(NamedTuple):
    """One row of the table: everything every source, --help and the docs need to know.

    A NamedTuple, not a dataclass: `dataclasses` imports `inspect` and friends, a megabyte in
    every worker (the workers are forked from a master that imported this module)."""

    name: str                     # canonical, dashed: "buffer-size"
    type: Callable[[str], Any]    # converts a string value; raises ValueError on bad input
    default: Any                  # the converted value used when no source sets it
    help: str
    short: str | None = None      # one letter, uWSGI's ("p" for processes)
    aliases: tuple[str, ...] = ()
    repeatable: bool = False      # the value is a list; each occurrence appends
    flag: bool = False            # no value on the command line; a boolean in files and env
    const: Any = None             # the string an optional value defaults to (chmod-socket → "666")
    group: str = "core"           # section in --help and the docs

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return self.name.upper().replace("-", "_")


O = Option


def _sections(table: tuple[str | Option, ...]) -> tuple[Option, ...]:
    """The rows, each with the --help section it stands under: a string in the table names the
    section of the rows that follow it."""
    rows: list[Option] = []
    section = "core"
    for item in table:
        if isinstance(item, str):
            section = item
        else:
            rows.append(item._replace(group=section))
    return tuple(rows)


OPTIONS: tuple[Option, ...] = _sections((
    "app",  # application
    O("module", text, None, "WSGI app as pkg.mod[:callable] (callable defaults to --callable)", "w", ("wsgi",)),
    O("wsgi-file", text, None, "load the WSGI app from this Python file", aliases=("file",)),
    O("callable", text, "application", "name of the WSGI callable"),
    O("chdir", text, None, "change to this directory before loading the app"),
    O("pythonpath", text, (), "add a directory to sys.path", aliases=("python-path", "pp"), repeatable=True),
    O("env", key_value, (), "set KEY=VALUE in the environment before loading the app", repeatable=True),
    O("home", text, None, "run the app in this virtualenv: its site-packages first on sys.path, VIRTUAL_ENV "
      "set; a venv of another Python version is refused", "H", ("virtualenv", "venv", "pyhome")),
    O("lazy-apps", boolean, False, "load the app in each worker instead of once in the master", flag=True),
    O("hooks", text, None, "call gunicorn-style server hooks defined in this Python file (a gunicorn.conf.py "
      "works): on_starting, on_reload, when_ready, pre_fork, post_fork, worker_exit, child_exit, on_exit"),
    O("lifespan", choice("auto", "on", "off"), "auto", "the ASGI lifespan scope (asyncio worker), as uvicorn's: "
      "auto serves an app that raises on it before its startup completes without it, on makes that a boot "
      "failure too, off never sends it"),
    O("lifespan-timeout", number(), 60.0, "seconds the ASGI lifespan startup and shutdown may each take; a "
      "startup that takes longer fails the worker's boot"),
    O("ws", choice("auto", "wsproto", "none"), "auto", "WebSocket on the asyncio worker's --http sockets: auto "
      "and wsproto speak it through wsproto (the zergserve[websocket] extra; without it, auto refuses upgrades "
      "with 501 and wsproto fails the boot), none refuses upgrades with 501"),
    O("ws-max-size", integer(1), 16777216, "largest WebSocket message in bytes a client may send; a bigger one "
      "closes the connection with 1009"),
    O("ws-ping-interval", number(), 20.0, "seconds between the server's WebSocket pings (0: none)",
      aliases=("websocket-ping-freq", "websockets-ping-freq")),
    O("ws-ping-timeout", number(), 20.0, "seconds a WebSocket client has to answer a ping before the "
      "connection closes with 1011 (0: wait for ever)", aliases=("websocket-pong-tolerance",
                                                                  "websockets-pong-tolerance")),
    O("ws-per-message-deflate", boolean, True, "accept the permessage-deflate WebSocket extension when the "
      "client offers it"),
    "sockets",
    O("http", address, (), "serve HTTP/1.1 on ADDR from the workers themselves: uWSGI's --http-socket; there is "
      "no separate HTTP router process", aliases=("http-socket", "bind"), repeatable=True),
    O("socket", address, (), "serve the uwsgi protocol on ADDR (for nginx uwsgi_pass)", "s", ("uwsgi-socket",),
      repeatable=True),
    O("listen", integer(1, 65535), 100, "listen backlog of every socket", "l", ("backlog",)),
    O("no-defer-accept", boolean, False, "accept a TCP connection as soon as it opens; by default, as in uWSGI, "
      "the kernel holds it back until its first bytes arrive, for up to --socket-timeout seconds "
      "(TCP_DEFER_ACCEPT), so no worker waits on a client that has said nothing", flag=True),
    O("chmod-socket", mode, None, "mode of UNIX sockets (without a value: 666)", "C", const="666"),
    O("forwarded-allow-ips", proxies, proxy.DEFAULT, "trust X-Forwarded-Proto/-For (or Forwarded) from these "
      "peers on --http: comma-separated IPs, networks (10.0.0.0/8), 'unix' for UNIX socket peers, '*' for "
      "everyone; they set wsgi.url_scheme and REMOTE_ADDR (the ASGI scheme and client)"),
    O("vacuum", boolean, False, "remove UNIX socket and pid files at exit", flag=True),
    O("chown-socket", text, None, "owner of UNIX sockets as USER[:GROUP] (names or numbers), set before "
      "privileges are dropped: give the socket to nginx's user or group"),
    "processes",
    O("processes", integer(1, 4096), 1, "number of worker processes", "p", ("workers",)),
    O("master", boolean, True, "run a master (zergserve always does; accepted for uWSGI configs)", "M",
      flag=True),
    O("worker", choice("sync", "gthread", "gevent", "asyncio"), "sync", "worker class: sync (one request at a "
      "time), gthread (--threads requests at once, HTTP keep-alive; what --threads N chooses), gevent (many "
      "connections per process, HTTP keep-alive; pip install zergserve[gevent]) or asyncio (ASGI apps only, on "
      "an event loop)", "k",
      aliases=("worker-class",)),
    O("threads", integer(1, 1024), 1, "requests each worker process serves at once, each in a thread of its own; "
      "kept-alive connections wait in the worker's poller, not in a thread (gunicorn's gthread); above 1 the "
      "sync worker becomes the gthread worker"),
    O("threads-stacksize", integer(0), 0, "stack size of each request thread in KiB (uWSGI's unit; 0: the "
      "system's)", aliases=("thread-stacksize", "threads-stack-size", "thread-stack-size")),
    O("worker-connections", integer(1), 1000, "most connections a gevent or asyncio worker serves at once"),
    O("loop", choice("auto", "asyncio", "uvloop"), "auto", "the asyncio worker's event loop, as uvicorn's: "
      "uvloop (pip install zergserve[uvloop]; asking for it without it installed is a start error), asyncio "
      "(the standard library's), or auto: uvloop when it is installed"),
    O("gevent", integer(1), None, "uWSGI's gevent loop: the same as --worker gevent --worker-connections N"),
    O("harakiri", integer(0), 0, "kill a worker stuck on one request for more than N seconds (0: off)", "t"),
    O("max-requests", integer(0), 0, "recycle a worker after N requests (0: never)", "R"),
    O("max-requests-delta", integer(0), 0, "add (worker id - 1) * N to max-requests, so workers do not "
      "recycle together"),
    O("reload-check-url", text, (), "on every reload, GET this PATH (or http://HOST/PATH, to set the Host "
      "header) from the reload check's trial worker, the new app booted on a private socket; the reload is "
      "refused unless each answers 2xx or 3xx", repeatable=True),
    O("max-requests-jitter", integer(0), 0, "add a random 0..N to each worker's max-requests (gunicorn's), so "
      "workers do not recycle together"),
    O("worker-reload-mercy", integer(0), 60, "seconds a worker may take to finish its requests on reload or "
      "stop before SIGKILL", aliases=("graceful-timeout",)),
    O("reload-on-rss", integer(0), 0, "recycle a worker whose resident memory exceeds N megabytes, after the "
      "request in hand (0: off)"),
    O("evil-reload-on-rss", integer(0), 0, "kill (SIGKILL) and respawn a worker whose resident memory exceeds N "
      "megabytes, even in the middle of a request (0: off)"),
    O("max-worker-lifetime", integer(0), 0, "recycle a worker after N seconds, after the request in hand "
      "(0: never)"),
    O("max-worker-lifetime-delta", integer(0), 0, "add (worker id - 1) * N seconds to max-worker-lifetime, so "
      "workers do not recycle together"),
    O("check-interval", number(), 1.0, "seconds between the master's housekeeping turns"),
    O("auto-procname", boolean, True, "title processes by role and app: 'zergserve master [shop.ini]', "
      "'zergserve worker 2 [mysite.wsgi]' (uWSGI's default is off; false keeps the command line)", flag=True),
    O("procname", text, None, "title every process with this name (the master too, unless --procname-master)"),
    O("procname-master", text, None, "title the master (an emperor, a zergpool) with this name"),
    O("procname-prefix", text, "", "prefix for process titles"),
    O("procname-prefix-spaced", text, "", "prefix for process titles, followed by a space"),
    O("procname-append", text, "", "append this to process titles"),
    O("pidfile", text, None, "write the master's pid to this file"),
    O("privileged-binary-patch", text, None, "once configured, exec this program instead of serving "
      "(a vassal that is really nginx, say)"),
    O("privileged-binary-patch-arg", text, None, "the same, with arguments (a shell-like command line)"),
    O("unprivileged-binary-patch", text, None, "as privileged-binary-patch (zergserve drops no privileges of "
      "its own before it)"),
    O("unprivileged-binary-patch-arg", text, None, "as privileged-binary-patch-arg"),
    "static",  # static files
    O("static-map", mount, (), "serve GET/HEAD of /URL/REST from DIR/REST before the app (DIR may be one file); "
      "a path with no file there goes to the app", repeatable=True),
    O("static-map2", mount, (), "as static-map, but the whole path is appended: /URL/REST from DIR/URL/REST",
      repeatable=True),
    O("check-static", text, (), "serve GET/HEAD of /PATH from DIR/PATH when that file exists, else the app",
      repeatable=True),
    O("static-index", text, (), "for a mapped directory, serve this file in it (index.html)", repeatable=True),
    O("static-safe", text, (), "a file whose real path (symlinks resolved) is under DIR may be served even when "
      "it is outside the directory it was mapped through", repeatable=True),
    O("static-expires", expires_rule, (), "an Expires header SECONDS from now for static files whose real path "
      "matches REGEXP", repeatable=True),
    O("static-expires-type", expires_type, (), "an Expires header SECONDS from now for static files of this "
      "MIME type", repeatable=True),
    O("mimefile", text, (), "read more MIME types (mime.types format) for static files; Python's table and "
      "/etc/mime.types are read anyway", aliases=("mime-file",), repeatable=True),
    "privileges",
    O("uid", text, None, "after binding the sockets and before loading the app, the master and workers become "
      "this user (name or number)"),
    O("gid", text, None, "the group the master and workers become (name or number; with --uid the default "
      "is the user's primary group); supplementary groups are the user's (initgroups)"),
    O("umask", umask, None, "set this umask (octal) at startup, before sockets and files are created"),
    "reload",  # reload on change
    O("touch-reload", text, (), "graceful reload (as HUP: checked first) when FILE's modification time changes",
      repeatable=True),
    O("touch-workers-reload", text, (), "recycle every worker, each after the request in hand, when FILE's "
      "modification time changes", repeatable=True),
    O("fs-reload", text, (), "graceful reload when PATH (a file, or anything directly in a directory) changes; "
      "inotify where the kernel has it, else polled every master cycle", repeatable=True),
    O("py-autoreload", integer(0), 0, "development: graceful reload when the source of a module the app "
      "imported changes; inotify where the kernel has it, else checked every N seconds (0: off; "
      "without a value: 1)", aliases=("python-autoreload", "reload"), const="1"),
    "limits",
    O("buffer-size", integer(1, 65535), 4096, "largest uwsgi vars block accepted; above 4096 it also raises the "
      "HTTP request line and header field limits to N, as in uWSGI", "b"),
    O("max-vars", integer(1), 64, "uwsgi packets may carry at most 2 * N vars"),
    O("http-timeout", number(), 4.0, "absolute deadline in seconds for the whole request head to arrive"),
    O("keep-alive", number(), 2.0, "seconds a gevent or asyncio worker waits for the next request on a kept-alive "
      "HTTP connection"),
    O("socket-timeout", number(), 4.0, "timeout in seconds for each read and write on an accepted "
      "connection (body reads, sends)", "z"),
    O("body-timeout", number(), 20.0, "seconds a request body may take to arrive, plus one second for every "
      "--body-min-rate bytes received (mod_reqtimeout's body=20,MinRate=500); 408 past it (0: no bound)"),
    O("body-min-rate", number(), 500.0, "bytes per second that extend --body-timeout (0: the timeout is "
      "absolute)"),
    O("send-min-rate", number(), 500.0, "bytes per second a client must take a response at, over every "
      "--socket-timeout seconds the worker waits on it; a slower client is dropped (0: one byte per window)"),
    O("limit-request-line", integer(0), 4094, "longest HTTP request line (414 above; 0: no limit)"),
    O("limit-request-fields", integer(0), 100, "most HTTP header fields (431 above; 0: no limit)"),
    O("limit-request-field-size", integer(0), 8190, "longest HTTP header line (431 above; 0: no limit)"),
    O("limit-post", integer(0), 0, "largest request body in bytes (413 above; 0: no limit)"),
    "zerg",
    O("zerg-server", text, None, "hand this instance's sockets to zergs connecting to this UNIX socket"),
    O("zerg", text, (), "attach to a zerg server (or zergpool) and serve its sockets", repeatable=True),
    O("zerg-fallback", boolean, False, "if no zerg server answers, bind --http/--socket normally",
      flag=True),
    O("zerg-server-mode", mode, 0o600, "file mode of the zerg server socket"),
    O("zerg-allow-uid", integer(0), (), "also trust this uid as a zerg peer (own uid and root always are)",
      repeatable=True),
    O("zergpool", text, (), "run a zergpool: PATH:addr1,addr2 (binds the addresses, hands them to zergs)",
      aliases=("zerg-pool",), repeatable=True),
    O("zergpool-protocol", choice("uwsgi", "http"), "uwsgi", "protocol of the zergpool's sockets"),
    "elastic",  # elastic: idle, cheap, SOS
    O("idle", integer(0), 0, "after more than N seconds without a request, stop the workers until the next "
      "connection (0: never)"),
    O("die-on-idle", boolean, False, "with --idle: exit instead (a vassal asks its emperor, byte 22)", flag=True),
    O("cheap", boolean, False, "start with no workers; the first connection spawns them", flag=True),
    O("vassal-sos-backlog", integer(0), 0, "ask the emperor for reinforcements (byte 30, once per zerg "
      "wanted) as soon as a socket's accept queue holds N or more connections (0: off)"),
    O("vassal-sos", integer(0), 0, "ask the emperor for reinforcements when every worker has been busy for "
      "more than N seconds (0: off)"),
    "cheaper",  # cheaper: the worker count follows the load, between --cheaper and --processes
    O("cheaper", integer(0), 0, "cheaper subsystem: keep at least N workers and let the --cheaper-algo add "
      "workers up to --processes under load and stop them again when the load is gone (0: off)"),
    O("cheaper-initial", integer(0), 0, "workers started at boot in cheaper mode (0: --cheaper)"),
    O("cheaper-step", integer(1), 1, "workers added at a time when the algorithm asks for more"),
    O("cheaper-overload", integer(0), 3, "spare: seconds every worker must be busy before adding workers (and "
      "with one idle before stopping one); backlog: queued connections above which workers are added; "
      "busyness: seconds between busyness checks"),
    O("cheaper-algo", choice("spare", "backlog", "busyness"), "spare", "how the cheaper subsystem decides"),
    O("cheaper-rss-limit-soft", integer(0), 0, "add no worker while the workers' total RSS is above N bytes "
      "(0: off)"),
    O("cheaper-rss-limit-hard", integer(0), 0, "stop a worker (down to --cheaper) while the workers' total RSS "
      "is above N bytes (0: off)"),
    O("cheaper-busyness-min", integer(0, 100), 25, "busyness: below this average busyness (%) stop a worker"),
    O("cheaper-busyness-max", integer(0, 100), 50, "busyness: above this average busyness (%) add workers"),
    O("cheaper-busyness-multiplier", integer(1), 10, "busyness: low-busyness checks to wait before stopping a "
      "worker"),
    O("cheaper-busyness-penalty", integer(0), 1, "busyness: added to the multiplier when a stopped worker had to "
      "be started again within it"),
    O("cheaper-busyness-verbose", boolean, False, "busyness: log every check", flag=True),
    O("cheaper-busyness-backlog-alert", integer(0), 33, "busyness: add emergency workers at once when more "
      "than N connections are queued (0: off)"),
    O("cheaper-busyness-backlog-multiplier", integer(1), 3, "busyness: the multiplier while emergency workers "
      "run"),
    O("cheaper-busyness-backlog-step", integer(1), 1, "busyness: emergency workers added at a time"),
    O("cheaper-busyness-backlog-nonzero", integer(0), 60, "busyness: add emergency workers when connections "
      "have been queued for N seconds (0: off)"),
    "emperor",
    O("emperor", text, (), "run the emperor over a vassals dir (DIR, dir://DIR or glob://PATTERN) or the rows "
      "of a PostgreSQL query (pg://CONNINFO;SELECT name, config, ts FROM vassals)", repeatable=True),
    O("emperor-pg-channel", text, "zergserve_vassals", "pg:// monitors LISTEN on this channel and re-read "
      "their rows on a NOTIFY (empty: poll only)"),
    O("emperor-freq", number(), 3.0, "seconds between scans of the monitors (inotify wakes it sooner)"),
    O("emperor-throttle", integer(1), 1000, "milliseconds: blacklist step for a vassal that dies before "
      "serving, how long a silent vassal counts as starting, and how often failing vassals may "
      "start, all together"),
    O("emperor-max-throttle", integer(1), 180000, "milliseconds: the largest blacklist delay"),
    O("emperor-spawn-burst", integer(1), 16, "vassals that may be starting at once (failing ones: "
      "half of them, and this many before one per --emperor-throttle)"),
    O("emperor-required-heartbeat", integer(1), 30, "seconds without a heartbeat before a vassal that "
      "sends them is killed and respawned"),
    O("emperor-curse-tolerance", integer(1), 30, "seconds a stopped vassal may take to exit before SIGKILL"),
    O("emperor-graceful-shutdown", boolean, False, "stop vassals gracefully (byte 2) instead of byte 0",
      flag=True),
    O("emperor-stats", address, None, "serve the emperor's stats JSON on ADDR", aliases=("emperor-stats-server",)),
    O("emperor-metrics", address, None, "serve the emperor's Prometheus metrics at http://ADDR/metrics: "
      "vassals, respawns, throttles, broodlord zergs"),
    O("emperor-pidfile", text, None, "write the emperor's pid to this file"),
    O("emperor-extra-extension", text, (), "also treat files ending in EXT as vassal configs",
      repeatable=True),
    O("emperor-nofollow", boolean, False, "use a symlink's own mtime (lstat), for the .skel trick", flag=True),
    O("emperor-no-blacklist", boolean, False, "never blacklist vassals that die before serving", flag=True),
    O("emperor-tyrant", boolean, False, "run each vassal as the owner (uid and gid) of its config file",
      flag=True),
    O("emperor-tyrant-nofollow", boolean, False, "tyrant mode: a symlinked config runs as the owner of the "
      "link itself (uWSGI's lstat); without it symlinks are refused", flag=True),
    O("emperor-tyrant-initgroups", boolean, False, "tyrant mode: give vassals their owner's supplementary "
      "groups (initgroups) instead of none", flag=True),
    O("vassal-set", key_value, (), "pass --set key=value to every vassal", aliases=("vassals-set",),
      repeatable=True),
    O("vassals-include", text, (), "append this config file to every vassal's command line",
      repeatable=True),
    O("vassals-include-before", text, (), "put this config file before every vassal's own",
      repeatable=True),
    O("binary-path", text, None, "program to run vassals with (default: this zergserve)"),
    O("emperor-broodlord", integer(0), 0, "on a vassal's SOS spawn NAME:zerg (the [zerg] section of its "
      "file), as many at once as it asks for, while it has fewer than N zergs (0: off)"),
    O("emperor-broodlord-boot-timeout", number(), 10.0, "seconds a zerg may take from its spawn to "
      "accepting requests; a slower one is killed and counted as a failed boot (0: wait forever)"),
    O("reload-mercy", integer(0), 30, "seconds the emperor gives vassals to stop at shutdown before SIGKILL"),
    O("heartbeat", integer(0), 0, "vassal: send the emperor a heartbeat every N seconds (0: off)"),
    "stats",
    O("stats", address, None, "serve stats JSON on ADDR (TCP if it has ':', else UNIX)", aliases=("stats-server",)),
    O("stats-http", boolean, False, "prefix the stats JSON with an HTTP header", flag=True),
    O("stats-minified", boolean, False, "compact stats JSON", flag=True),
    O("metrics", address, None, "serve Prometheus metrics at http://ADDR/metrics (TCP if it has ':', else "
      "UNIX): requests, exceptions, harakiri, respawns, workers by status, listen queue, response times, "
      "open WebSockets"),
    "logging",
    O("disable-logging", boolean, False, "no access log lines (errors are always logged)", "L", flag=True),
    O("logto", text, None, "append the log (and the app's stdout/stderr) to this file"),
    O("log-format", log_format, "zergserve", "the access line: uWSGI's %(placeholders) (docs/logging.md), gunicorn's "
      "%(h)s atoms, or a preset: zergserve, uwsgi, combined, common, json", aliases=("logformat", "access-logformat")),
    O("req-logger", text, None, "write access lines to file:PATH (or PATH) instead of the log; '-' is the log",
      aliases=("logger-req", "access-logfile")),
    O("log-level", choice(*accesslog.LEVELS), "info", "the least severe server line written; access lines are "
      "info, so warning and above turn them off", aliases=("loglevel",)),
    O("logdate", strftime, None, "prefix access lines with this strftime date (without a value: uWSGI's "
      "'%a %b %d %H:%M:%S %Y -'); also the format of %(ftime)", aliases=("log-date",),
      const="%a %b %d %H:%M:%S %Y -"),
    O("log-4xx", boolean, False, "with --disable-logging: still log responses with a 4xx status", flag=True),
    O("log-5xx", boolean, False, "with --disable-logging: still log responses with a 5xx status", flag=True),
    O("log-slow", integer(0), 0, "with --disable-logging: still log requests that took N ms or more (0: off)"),
    O("log-maxsize", integer(0), 0, "rotate the --logto and --req-logger files past N bytes: renamed to "
      "FILE.<unix time>, a new one started (0: never)"),
    O("touch-logreopen", text, (), "reopen the --logto and --req-logger files when FILE's modification time "
      "changes (logrotate's postrotate: touch FILE); a moved file is reopened within a second anyway",
      repeatable=True),
    "compat",  # uWSGI compatibility: accepted so that uWSGI files load; the default is what zergserve always does
    O("enable-threads", boolean, True, "accepted for uWSGI configs: Python threads always work", "T",
      flag=True),
    O("single-interpreter", boolean, True, "accepted for uWSGI configs: there is one interpreter per process",
      flag=True),
    O("need-app", boolean, True, "accepted for uWSGI configs: the app is always required", flag=True),
    O("die-on-term", boolean, True, "accepted for uWSGI configs: TERM always shuts down gracefully", flag=True),
    O("strict", boolean, True, "accepted for uWSGI configs: unknown keys are always errors", flag=True),
    O("thunder-lock", boolean, False, "accepted for uWSGI configs: the sync worker waits with EPOLLEXCLUSIVE, so "
      "a connection wakes one worker, not all", flag=True),
    O("post-buffering", integer(0), 0, "accepted for uWSGI configs: wsgi.input reads the body from the socket "
      "as the app asks, within --limit-post"),
    O("offload-threads", integer(0), 0, "accepted for uWSGI configs: wsgi.file_wrapper uses sendfile in the "
      "worker"),
    O("memory-report", boolean, False, "accepted for uWSGI configs: the stats server reports each worker's rss",
      flag=True),
    O("harakiri-verbose", boolean, False, "accepted for uWSGI configs: a harakiri is always logged with the "
      "request it killed", flag=True),
    O("plugins", text, (), "accepted for uWSGI configs: Python is built in, there are no plugins to load",
      aliases=("plugin",), repeatable=True),
    O("gevent-monkey-patch", boolean, False, "accepted for uWSGI configs: the gevent worker always "
      "monkey-patches", flag=True),
    O("preload", boolean, False, "accepted for gunicorn configs: the app is loaded in the master before the "
      "fork unless --lazy-apps", flag=True),
    "config",  # config sources
    O("ini", text, (), "read options from an ini file (FILE[:section])", repeatable=True),
    O("json", text, (), "read options from a JSON file (FILE[:section])", aliases=("js",), repeatable=True),
    O("toml", text, (), "read options from a TOML file (FILE[:section])", repeatable=True),
    O("yaml", text, (), "read options from a YAML file (FILE[:section]; needs PyYAML)", aliases=("yml",),
      repeatable=True),
    O("include", text, (), "read a config file (any format, by extension) in place, as uWSGI's --include",
      repeatable=True),
    O("inherit", text, (), "read a config file after every other source (uWSGI's template: only its magic "
      "variables are expanded)", repeatable=True),
    O("set", key_value, (), "set an option, or a placeholder if KEY is no option", "S", repeatable=True),
    O("set-placeholder", key_value, (), "set a placeholder, even if KEY is an option's name", aliases=("set-ph",),
      repeatable=True),
    O("print-config", boolean, False, "print the merged configuration as JSON and exit", flag=True),
    O("check-config", boolean, False, "load the configuration and the app, then exit", flag=True),
    O("connect-and-read", text, None, "connect to ADDR (a stats socket: TCP if it has a ':', else a UNIX "
      "path), copy what it sends to stdout and exit, as uWSGI's option"),
))
del O

BY_NAME: dict[str, Option] = {name: opt for opt in OPTIONS for name in (opt.name, *opt.aliases)}
BY_SHORT: dict[str, Option] = {opt.short: opt for opt in OPTIONS if opt.short}
FILE_OPTIONS = frozenset({"ini", "json", "toml", "yaml", "include", "inherit"})
NOT_FORWARDED = FILE_OPTIONS | {"set", "set-placeholder", "print-config", "check-config", "gevent"}
# An option whose value stands for others (uWSGI's gevent = N); the row keeps its own value too.
EXPANDS: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "gevent": lambda n: [("worker", "gevent"), ("worker-connections", str(n))]}
# A value of a live option that changes nothing here: warned about with the reason (the compat group's
# rows are warned about whatever their value, with their help as the reason).
NO_EFFECT: dict[str, tuple[Any, str]] = {"master": (False, "zergserve always runs a master process")}


def find(name: str) -> Option | None:
    """The option called `name` or one of its aliases ('_' is accepted for '-')."""
    return BY_NAME.get(name) or BY_NAME.get(name.replace("_", "-"))

