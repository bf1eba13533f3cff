"""Config: the merged configuration as the roles, workers and modules read it, one typed attribute
per option of the table (tests/test_config.py keeps the two in step), and back to an argv."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zergserve.config.converters import render
from zergserve.config.options import NOT_FORWARDED, OPTIONS


class Config:
    """The merged configuration: attribute access by option name with '-' → '_' (cfg.processes,
    cfg.http is a list, cfg.master a bool). `sources` maps the name of every option that some
    source set to where its value came from; `placeholders` holds the custom %(name) values.
    A plain class, not a dataclass, for the reason options.Option gives."""

    sources: dict[str, str]
    placeholders: dict[str, str]
    warnings: list[str]  # options that change nothing here, ignored variables: for the log
    # Application
    module: str | None
    wsgi_file: str | None
    callable: str
    chdir: str | None
    pythonpath: list[str]
    env: list[str]
    home: str | None
    lazy_apps: bool
    hooks: str | None
    lifespan: str
    lifespan_timeout: float
    ws: str
    ws_max_size: int
    ws_ping_interval: float
    ws_ping_timeout: float
    ws_per_message_deflate: bool
    # Sockets
    http: list[str]
    socket: list[str]
    listen: int
    no_defer_accept: bool
    chmod_socket: int | None
    forwarded_allow_ips: str
    vacuum: bool
    chown_socket: str | None
    # Processes
    processes: int
    master: bool
    worker: str
    threads: int
    threads_stacksize: int
    worker_connections: int
    loop: str
    gevent: int | None
    harakiri: int
    max_requests: int
    max_requests_delta: int
    reload_check_url: list[str]
    max_requests_jitter: int
    worker_reload_mercy: int
    reload_on_rss: int
    evil_reload_on_rss: int
    max_worker_lifetime: int
    max_worker_lifetime_delta: int
    check_interval: float
    auto_procname: bool
    procname: str | None
    procname_master: str | None
    procname_prefix: str
    procname_prefix_spaced: str
    procname_append: str
    pidfile: str | None
    privileged_binary_patch: str | None
    privileged_binary_patch_arg: str | None
    unprivileged_binary_patch: str | None
    unprivileged_binary_patch_arg: str | None
    # Static files
    static_map: list[str]
    static_map2: list[str]
    check_static: list[str]
    static_index: list[str]
    static_safe: list[str]
    static_expires: list[str]
    static_expires_type: list[str]
    mimefile: list[str]
    # Privileges
    uid: str | None
    gid: str | None
    umask: int | None
    # Reload on change
    touch_reload: list[str]
    touch_workers_reload: list[str]
    fs_reload: list[str]
    py_autoreload: int
    # Limits
    buffer_size: int
    max_vars: int
    http_timeout: float
    keep_alive: float
    socket_timeout: float
    body_timeout: float
    body_min_rate: float
    send_min_rate: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    limit_post: int
    # Zerg mode
    zerg_server: str | None
    zerg: list[str]
    zerg_fallback: bool
    zerg_server_mode: int
    zerg_allow_uid: list[int]
    zergpool: list[str]
    zergpool_protocol: str
    # Idle, cheap and SOS
    idle: int
    die_on_idle: bool
    cheap: bool
    vassal_sos_backlog: int
    vassal_sos: int
    # Cheaper: the worker count follows the load
    cheaper: int
    cheaper_initial: int
    cheaper_step: int
    cheaper_overload: int
    cheaper_algo: str
    cheaper_rss_limit_soft: int
    cheaper_rss_limit_hard: int
    cheaper_busyness_min: int
    cheaper_busyness_max: int
    cheaper_busyness_multiplier: int
    cheaper_busyness_penalty: int
    cheaper_busyness_verbose: bool
    cheaper_busyness_backlog_alert: int
    cheaper_busyness_backlog_multiplier: int
    cheaper_busyness_backlog_step: int
    cheaper_busyness_backlog_nonzero: int
    # Emperor
    emperor: list[str]
    emperor_pg_channel: str
    emperor_freq: float
    emperor_throttle: int
    emperor_max_throttle: int
    emperor_spawn_burst: int
    emperor_required_heartbeat: int
    emperor_curse_tolerance: int
    emperor_graceful_shutdown: bool
    emperor_stats: str | None
    emperor_metrics: str | None
    emperor_pidfile: str | None
    emperor_extra_extension: list[str]
    emperor_nofollow: bool
    emperor_no_blacklist: bool
    emperor_tyrant: bool
    emperor_tyrant_nofollow: bool
    emperor_tyrant_initgroups: bool
    vassal_set: list[str]
    vassals_include: list[str]
    vassals_include_before: list[str]
    binary_path: str | None
    emperor_broodlord: int
    emperor_broodlord_boot_timeout: float
    reload_mercy: int
    heartbeat: int
    # Stats
    stats: str | None
    stats_http: bool
    stats_minified: bool
    metrics: str | None
    # Logging
    disable_logging: bool
    logto: str | None
    log_format: str
    req_logger: str | None
    log_level: str
    logdate: str | None
    log_4xx: bool
    log_5xx: bool
    log_slow: int
    log_maxsize: int
    touch_logreopen: list[str]
    # uWSGI compatibility
    enable_threads: bool
    single_interpreter: bool
    need_app: bool
    die_on_term: bool
    strict: bool
    thunder_lock: bool
    post_buffering: int
    offload_threads: int
    memory_report: bool
    harakiri_verbose: bool
    plugins: list[str]
    gevent_monkey_patch: bool
    preload: bool
    # Configuration
    ini: list[str]
    json: list[str]
    toml: list[str]
    yaml: list[str]
    include: list[str]
    inherit: list[str]
    set: list[str]
    set_placeholder: list[str]
    print_config: bool
    check_config: bool
    connect_and_read: str | None

    def __init__(self) -> None:
        self.sources = {}
        self.placeholders = {}
        self.warnings = []
        for opt in OPTIONS:
            setattr(self, opt.attr, list(opt.default) if opt.repeatable else opt.default)

    if not TYPE_CHECKING:  # for mypy a name that is no option stays an error
        def __getattr__(self, name: str) -> Any:  # only called for names that are no option
            raise AttributeError(f"no option {name.replace('_', '-')!r}")

    def __repr__(self) -> str:
        return f"Config({' '.join(self.as_args())})"

    def as_args(self) -> list[str]:
        """argv that reproduces every value that differs from its default (to re-exec, or to pass
        on to a vassal); always `--name=value`, so no value can be mistaken for an option."""
        args: list[str] = []
        for opt in OPTIONS:
            if opt.name in NOT_FORWARDED or opt.group == "compat":
                continue
            value = getattr(self, opt.attr)
            if opt.repeatable:
                args += [f"--{opt.name}={render(opt.type, item)}" for item in value]
            elif value != opt.default:
                if opt.flag:
                    args.append(f"--{opt.name}" if value else f"--{opt.name}=false")
                else:
                    args.append(f"--{opt.name}={render(opt.type, value)}")
        return args
