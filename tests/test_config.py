"""The option table and every source it serves: argv, ini/json/toml/yaml files, environment, docs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bound, http_request
from zergserve import config
from zergserve.config import ConfigError, load


def write(path: Path, content: str) -> str:
    path.write_text(content)
    return str(path)


def raises(message: str):
    """pytest.raises(ConfigError) matching `message` literally."""
    return pytest.raises(ConfigError, match=re.escape(message))


# --- the table ---------------------------------------------------------------------------------------

def test_every_option_is_one_row():
    names = [name for opt in config.OPTIONS for name in (opt.name, *opt.aliases)]
    assert len(names) == len(set(names))
    shorts = [opt.short for opt in config.OPTIONS if opt.short]
    assert len(shorts) == len(set(shorts)) and all(len(s) == 1 for s in shorts)
    for opt in config.OPTIONS:
        assert opt.help and opt.name == opt.name.lower() and "_" not in opt.name, opt.name
        assert not (opt.flag and opt.repeatable), opt.name


def test_config_has_one_typed_attribute_per_option():
    """view.Config and the table stay in step: each option an attribute whose annotation is its
    converter's type (a list of it when repeatable, optional when the default is None), and the
    default fits it; no attribute without an option."""
    import typing
    hints = typing.get_type_hints(config.Config)
    for opt in config.OPTIONS:
        converted = typing.get_type_hints(opt.type)["return"]
        expected = (list[converted] if opt.repeatable
                    else converted | None if opt.default is None else converted)
        assert hints.get(opt.attr) == expected, f"Config.{opt.attr}: {hints.get(opt.attr)}, not {expected}"
        assert opt.default is None or opt.repeatable or type(opt.default) is converted, opt.name
    options = {opt.attr for opt in config.OPTIONS}
    assert set(hints) - options == {"sources", "placeholders", "warnings"}, "attributes that are no option"


def test_defaults_are_uwsgis():
    cfg = load([], {})
    assert (cfg.processes, cfg.listen, cfg.buffer_size, cfg.max_vars, cfg.socket_timeout) == (1, 100, 4096, 64, 4)
    assert cfg.callable == "application" and cfg.worker == "sync" and cfg.worker_reload_mercy == 60
    assert cfg.http == [] and cfg.socket == [] and cfg.chmod_socket is None and cfg.vacuum is False
    assert cfg.sources == {}


def test_unknown_attribute_names_the_option():
    with pytest.raises(AttributeError, match="no option 'no-such'"):
        _ = load([], {}).no_such


# --- the command line --------------------------------------------------------------------------------

def test_cli_forms():
    cfg = load(["--module", "app:application", "-p4", "-s", "/tmp/a.sock", "--http=:8000", "--http", ":8001",
                "-M", "--harakiri", "30", "--workers", "3", "--http-socket", ":9", "--env", "A=b=c"], {})
    assert cfg.module == "app:application" and cfg.harakiri == 30
    assert cfg.processes == 3  # the alias, later on the line, wins
    assert cfg.socket == ["/tmp/a.sock"] and cfg.http == [":8000", ":8001", ":9"]
    assert cfg.master is True and cfg.env == ["A=b=c"]
    assert cfg.sources["processes"] == "--workers" and cfg.sources["http"] == "--http-socket"


def test_cli_flags():
    cfg = load(["-ML", "--vacuum", "--lazy-apps=false", "--stats-http=yes"], {})
    assert cfg.master and cfg.disable_logging and cfg.vacuum  # -ML is -M -L
    assert cfg.lazy_apps is False and cfg.stats_http is True
    assert load(["--master=false"], {}).master is False
    with raises("-p: processes: invalid int value 'L'"):
        load(["-pL"], {})


def test_chmod_socket_forms(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nprocesses = 2\n")
    assert load(["--chmod-socket"], {}).chmod_socket == 0o666
    assert load(["--chmod-socket=660"], {}).chmod_socket == 0o660
    assert load(["--chmod-socket", "640"], {}).chmod_socket == 0o640
    assert load(["-C"], {}).chmod_socket == 0o666
    assert load(["-C644"], {}).chmod_socket == 0o644
    cfg = load(["--chmod-socket", "--vacuum"], {})
    assert cfg.chmod_socket == 0o666 and cfg.vacuum
    cfg = load(["--chmod-socket", ini], {})  # not a mode: the next argument is a config file
    assert cfg.chmod_socket == 0o666 and cfg.processes == 2
    for value, expected in (("", 0o666), ("=", 0o666), ("= true", 0o666), ("= 664", 0o664)):
        path = write(tmp_path / "c.ini", f"[uwsgi]\nchmod-socket {value}\n")
        assert load([path], {}).chmod_socket == expected, value
    assert load([], {"ZERGSERVE_CHMOD_SOCKET": "600"}).chmod_socket == 0o600
    for bad in ("66", "0666", "888", "rw"):
        with raises(f"--chmod-socket: chmod-socket: invalid mode {bad!r}: expected three octal digits"):
            load([f"--chmod-socket={bad}"], {})


@pytest.mark.parametrize("argv,message", [
    (["--no-such-thing"], "unknown option --no-such-thing"),
    (["--proceses", "2"], "unknown option --proceses (did you mean 'processes'?)"),
    (["-X"], "unknown option -X"),
    (["-p", "four"], "-p: processes: invalid int value 'four'"),
    (["--processes=0"], "--processes: processes: 0 is out of range: must be between 1 and 4096"),
    (["--buffer-size", "70000"], "--buffer-size: buffer-size: 70000 is out of range"),
    (["--http-timeout", "-1"], "--http-timeout: http-timeout: -1 is out of range: must be at least 0"),
    (["--master=maybe"], "--master: master: invalid boolean value 'maybe'"),
    (["--http", "127.0.0.1:http"], "--http: http: 127.0.0.1:http: port 'http' is not a number"),
    (["--socket", "fd://x"], "--socket: socket: invalid address 'fd://x'"),
    (["--env", "NOEQUALS"], "--env: env: expected KEY=VALUE"),
    (["--set", "novalue"], "--set: set: expected KEY=VALUE"),
    (["stray"], "unexpected argument 'stray'"),
    (["--module"], "--module: needs a value"),
    (["--worker", "threads"], "--worker: worker: invalid choice 'threads' (choose from sync, gthread, gevent, asyncio)"),
])
def test_cli_errors_name_the_flag(argv, message):
    with raises(message):
        load(argv, {})


def test_help_and_version():
    with pytest.raises(config.HelpRequested) as info:
        load(["-p", "2", "--help"], {})
    text = info.value.args[0]
    assert "-p, --processes, --workers N" in text and "-C, --chmod-socket[=MODE]" in text
    assert "-k, --worker, --worker-class {sync,gthread,gevent,asyncio}" in text and "no separate HTTP router process" in text
    assert all(f"--{opt.name}" in text for opt in config.OPTIONS)
    with pytest.raises(config.HelpRequested):
        load(["-h"], {})
    with pytest.raises(config.VersionRequested, match=r"zergserve \d"):
        load(["--version"], {})
    assert not issubclass(config.HelpRequested, ConfigError)


def test_bare_config_arguments(tmp_path):
    ini = write(tmp_path / "site.ini", "[uwsgi]\nprocesses = 2\n[zerg]\nprocesses = 5\n")
    assert load([ini], {}).processes == 2
    assert load([f"{ini}:zerg"], {}).processes == 5
    with raises("unexpected argument 'app.py'"):
        load(["app.py"], {})


# --- ini files ---------------------------------------------------------------------------------------

def test_ini_dialect(tmp_path):
    ini = write(tmp_path / "app.ini", (
        "; uWSGI's own comment style\n"
        "[uwsgi]\n"
        "# another comment\n"
        "\n"
        "  socket = /tmp/a.sock  \n"
        "socket=/tmp/b.sock\n"
        "env = DSN=pg://x?a=b\n"
        "processes = 2\n"
        "processes = 3\n"
        "master = false\n"
        "vacuum\n"
        "lazy-apps =\n"
        "stats-http = on\n"
        "[zergserve]\n"
        "processes = 4\n"
        "listen = 7\n"
        "[other]\n"
        "listen = 9\n"))
    cfg = load(["--ini", ini], {})
    assert cfg.socket == ["/tmp/a.sock", "/tmp/b.sock"]  # repeated keys repeat the option
    assert cfg.env == ["DSN=pg://x?a=b"]  # split at the first '='
    assert cfg.processes == 4 and cfg.listen == 7  # [zergserve] wins over [uwsgi]
    assert cfg.master is False and cfg.vacuum is True and cfg.lazy_apps is True and cfg.stats_http is True
    assert cfg.sources["processes"] == f"{ini}:15"
    assert load(["--ini", f"{ini}:other"], {}).listen == 9  # only that section
    assert load(["--ini", f"{ini}:other"], {}).processes == 1
    with raises(f"{ini}: no section [missing]"):
        load(["--ini", f"{ini}:missing"], {})


def test_unknown_key_names_file_line_and_key(tmp_path):
    ini = write(tmp_path / "bad.ini", "[uwsgi]\nprocesses = 2\nprocesess = 4\n")
    with raises(f"{ini}:3: unknown option 'procesess' (did you mean 'processes'?)"):
        load(["--ini", ini], {})


def test_bad_value_names_file_line_and_key(tmp_path):
    ini = write(tmp_path / "app.ini", "[uwsgi]\nmaster = true\n\n\n\n\nprocesses = four\n")
    with raises(f"{ini}:7: processes: invalid int value 'four'"):
        load(["--ini", ini], {})
    write(tmp_path / "app.ini", "[uwsgi]\nvacuum = sometimes\n")
    with raises(f"{ini}:2: vacuum: invalid boolean value 'sometimes'"):
        load([ini], {})
    write(tmp_path / "app.ini", "[uwsgi\nprocesses = 1\n")
    with raises(f"{ini}:1: malformed section header"):
        load([ini], {})


def test_missing_file_names_the_flag(tmp_path):
    with raises(f"--ini: cannot read ini file '{tmp_path}/nope.ini'"):
        load(["--ini", str(tmp_path / "nope.ini")], {})


def test_nested_files_are_read_in_place(tmp_path):
    write(tmp_path / "base.ini", "[uwsgi]\nlisten = 50\nhttp = :1\nprocesses = 2\n")
    write(tmp_path / "extra.json", json.dumps({"uwsgi": {"http": ":3"}}))
    app = write(tmp_path / "app.ini", "[uwsgi]\nhttp = :0\nini = base.ini\nhttp = :2\nprocesses = 3\n"
                                      "json = %dextra.json\n")
    cfg = load(["--ini", app], {})
    assert cfg.listen == 50 and cfg.processes == 3  # app.ini's later line wins over the include
    assert cfg.http == [":0", ":1", ":2", ":3"]
    assert cfg.sources["listen"] == f"{tmp_path}/base.ini:2"
    write(tmp_path / "loop.ini", "[uwsgi]\nini = loop.ini\n")
    with raises("config files include each other more than 16 deep"):
        load(["--ini", str(tmp_path / "loop.ini")], {})


def test_section_of_the_same_file(tmp_path):
    """`ini = :zerg` (uWSGI's empty file name) reads another section of the file being read, and
    `--ini :zerg` one of the file read last."""
    ini = write(tmp_path / "app.ini", "[uwsgi]\nprocesses = 2\nini = :common\n[common]\nlisten = 20\n"
                                      "[zerg]\nprocesses = 6\n")
    cfg = load([ini], {})
    assert cfg.processes == 2 and cfg.listen == 20
    assert load([ini, "--ini", ":zerg"], {}).processes == 6
    with raises("--ini: ':zerg' names a section, but no file was read before it"):
        load(["--ini", ":zerg"], {})


# --- magic variables and placeholders ----------------------------------------------------------------

def test_magic_variables(tmp_path):
    conf = tmp_path / "sites"
    conf.mkdir()
    ini = write(conf / "myapp.ini", (
        "[uwsgi]\n"
        "chdir = %d\n"
        "pidfile = %p\n"
        "logto = /var/log/%c/%n.%e.log\n"
        "procname-prefix = %s %x %o\n"
        "procname-prefix-spaced = 100%% %h\n"
        "[zerg]\n"
        "procname-prefix = section=%x\n"))
    cfg = load([ini], {})
    assert cfg.chdir == f"{conf}/" and cfg.pidfile == ini
    assert cfg.logto == "/var/log/sites/myapp.ini.log"
    assert cfg.procname_prefix == f"myapp.ini  {ini}"
    assert cfg.procname_prefix_spaced == f"100% {socket.gethostname()}"
    assert load([f"{ini}:zerg"], {}).procname_prefix == "section=zerg"


def test_magic_variables_keep_a_symlinks_name(tmp_path):
    """The .skel trick: app1.ini → app.skel gives %n = app1."""
    write(tmp_path / "app.skel", "[uwsgi]\nprocname-prefix = %n\n")
    (tmp_path / "app1.ini").symlink_to(tmp_path / "app.skel")
    assert load([str(tmp_path / "app1.ini")], {}).procname_prefix == "app1"


def test_placeholders_and_environment(tmp_path):
    ini = write(tmp_path / "myapp.ini", (
        "[uwsgi]\n"
        "base = /srv/%n\n"
        "chdir = %(base)\n"
        "socket = %(base)/app.sock\n"
        "stats = %(socket).stats\n"
        "logto = $(LOGDIR)/app.log\n"
        "pidfile = $(UNSET_VARIABLE)/x.pid\n"
        "procname-prefix = %(site)-%(uwsgi-socket)\n"))
    cfg = load(["--set", "site=blue", "--ini", ini], {"LOGDIR": "/var/log"})
    assert cfg.chdir == "/srv/myapp" and cfg.socket == ["/srv/myapp/app.sock"]
    assert cfg.stats == "/srv/myapp/app.sock.stats"  # an option's value, as a placeholder
    assert cfg.logto == "/var/log/app.log" and cfg.pidfile == "/x.pid"
    assert cfg.procname_prefix == "blue-/srv/myapp/app.sock"  # an alias names the same option
    assert cfg.placeholders == {"base": "/srv/myapp", "site": "blue"}


def test_placeholder_from_the_command_line_before_the_file(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nchdir = %(http)\n")
    assert load(["--http", ":8000", ini], {}).chdir == ":8000"


def test_placeholders_across_files(tmp_path):
    """A vassal's file defines `app`, a shared include uses it (deploy/emperor/common.ini)."""
    vassal = write(tmp_path / "v.ini", "[uwsgi]\napp = shop\n")
    common = write(tmp_path / "common.ini", "[uwsgi]\nsocket = /tmp/%(app).sock\n")
    assert load([vassal, common], {}).socket == ["/tmp/shop.sock"]


def test_unused_custom_key_is_an_error(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nbase = /srv\ncpu-affinity = 4\nchdir = %(base)\n")
    with raises(f"{ini}:3: unknown option 'cpu-affinity'"):
        load([ini], {})


def test_placeholder_must_be_defined_first(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nchdir = %(base)\nbase = /srv\n")
    with raises(f"{ini}:2: unknown placeholder %(base)"):
        load([ini], {})


def test_set_option_and_placeholder(tmp_path):
    cfg = load(["--set", "processes=3", "-S", "mine=x", "--set", "http-socket=:1"], {})
    assert cfg.processes == 3 and cfg.http == [":1"] and cfg.placeholders == {"mine": "x"}
    assert cfg.sources["processes"] == "--set"
    ini = write(tmp_path / "a.ini", "[uwsgi]\nset = listen=5\nset = who=me\nchdir = /%(who)\n")
    cfg = load([ini], {})
    assert cfg.listen == 5 and cfg.chdir == "/me"
    with raises("--set: processes: invalid int value 'many'"):
        load(["--set", "processes=many"], {})


# --- json, toml, yaml --------------------------------------------------------------------------------

def test_json(tmp_path):
    path = write(tmp_path / "a.json", json.dumps({
        "uwsgi": {"processes": 2, "http": [":1", ":2"], "master": True, "vacuum": "true", "check-interval": 0.5,
                  "chdir": "%d"},
        "zergserve": {"processes": 3, "chmod-socket": True},
        "other": {"processes": 9}}))
    cfg = load(["--json", path], {})
    assert cfg.processes == 3 and cfg.http == [":1", ":2"] and cfg.master and cfg.vacuum
    assert cfg.check_interval == 0.5 and cfg.chdir == f"{tmp_path}/" and cfg.chmod_socket == 0o666
    assert cfg.sources["processes"] == f"{path}:zergserve.processes"
    assert load(["--js", f"{path}:other"], {}).processes == 9
    assert load([path], {}).processes == 3


@pytest.mark.parametrize("content,message", [
    ("{nope", "invalid json"),
    ("[1, 2]", "the top level must be an object"),
    ('{"uwsgi": {"processes": null}}', "uwsgi.processes: unsupported value None"),
    ('{"uwsgi": {"processes": [1, 2]}}', "uwsgi.processes: processes: takes one value, got a list"),
    ('{"uwsgi": {"procesess": 2}}', "uwsgi.procesess: unknown option 'procesess'"),
    ('{"uwsgi": 3}', "'uwsgi' must be an object"),
])
def test_json_errors(tmp_path, content, message):
    path = write(tmp_path / "bad.json", content)
    with raises(message):
        load(["--json", path], {})


def test_toml(tmp_path):
    path = write(tmp_path / "a.toml", '[uwsgi]\nprocesses = 2\n[zergserve]\nprocesses = 5\n'
                                      'socket = ["/a", "/b"]\nvacuum = true\nmodule = "%n:app"\n')
    cfg = load([path], {})
    assert cfg.processes == 5 and cfg.socket == ["/a", "/b"] and cfg.vacuum and cfg.module == "a:app"
    write(tmp_path / "a.toml", "[uwsgi\n")
    with raises("invalid toml"):
        load(["--toml", path], {})


def test_yaml(tmp_path):
    pytest.importorskip("yaml")
    path = write(tmp_path / "a.yaml", "uwsgi:\n  processes: 4\n  socket: [/a, /b]\n  master: true\n")
    cfg = load([path], {})
    assert cfg.processes == 4 and cfg.socket == ["/a", "/b"] and cfg.master
    bad = write(tmp_path / "bad.yml", "uwsgi: [unclosed\n")
    with raises("invalid yaml"):
        load(["--yaml", bad], {})


# --- the environment ---------------------------------------------------------------------------------

def test_environment_variables():
    cfg = load([], {"UWSGI_BUFFER_SIZE": "8192", "UWSGI_HTTP_SOCKET": ":1", "ZERGSERVE_SOCKET": "/tmp/x.sock",
                    "UWSGI_MASTER": "", "ZERGSERVE_VACUUM": "1", "UWSGI_SET": "mine=1"})
    assert cfg.buffer_size == 8192 and cfg.http == [":1"] and cfg.socket == ["/tmp/x.sock"]
    assert cfg.master is True and cfg.vacuum is True and cfg.placeholders == {"mine": "1"}
    assert cfg.sources["buffer-size"] == "$UWSGI_BUFFER_SIZE"
    assert load([], {"ZERGSERVE_SOCKET": "/a;/b"}).socket == ["/a;/b"]  # one variable, one value


def test_environment_ignores_uwsgis_own_variables():
    env = {name: "3" for name in ("UWSGI_RELOADS", "UWSGI_VASSALS_DIR", "UWSGI_EMPEROR_FD", "UWSGI_EMPEROR_FD_CONFIG",
                                  "UWSGI_BROODLORD_NUM", "UWSGI_EMPEROR_PROXY", "UWSGI_JAIL_PID",
                                  "UWSGI_ORIGINAL_PROC_NAME", "UWSGI_VASSAL_PROCESSES", "UWSGI_SOMETHING_ELSE",
                                  "ZERGSERVE_REEXEC_FDS", "ZERGSERVE_VASSAL_PROCESSES")}
    cfg = load([], env)
    assert cfg.processes == 1 and cfg.sources == {}


def test_unknown_zergserve_variable_is_an_error():
    with raises("environment variable ZERGSERVE_PROCESES: unknown option 'proceses' (did you mean 'processes'?)"):
        load([], {"ZERGSERVE_PROCESES": "2"})
    with raises("$UWSGI_LISTEN: listen: invalid int value 'lots'"):
        load([], {"UWSGI_LISTEN": "lots"})


def test_config_file_named_in_the_environment(tmp_path):
    """UWSGI_INI=/app/uwsgi.ini is how many container images configure uWSGI."""
    ini = write(tmp_path / "env.ini", "[uwsgi]\nprocesses = 2\nlisten = 3\nhttp = :1\n")
    late = write(tmp_path / "late.ini", "[uwsgi]\nprocesses = 4\nhttp = :2\n")
    cfg = load(["--ini", late], {"UWSGI_INI": ini, "UWSGI_LISTEN": "5"})
    assert cfg.processes == 4  # files from the command line come after those from the environment
    assert cfg.listen == 5  # the environment's own options still beat every file
    assert cfg.http == [":1", ":2"]


# --- precedence, all sources at once -----------------------------------------------------------------

def test_precedence_file_env_argv(tmp_path):
    ini = write(tmp_path / "p.ini", "[uwsgi]\nprocesses = 2\nlisten = 10\nharakiri = 5\nmax-requests = 9\n"
                                    "http = :1\n")
    env = {"UWSGI_LISTEN": "20", "UWSGI_HARAKIRI": "6", "ZERGSERVE_HARAKIRI": "7", "UWSGI_MAX_REQUESTS": "8",
           "ZERGSERVE_MAX_REQUESTS": "7", "UWSGI_HTTP": ":2", "ZERGSERVE_HTTP": ":3"}
    cfg = load(["--max-requests", "6", "--http", ":4", "--ini", ini], env)
    assert cfg.processes == 2  # file over default
    assert cfg.listen == 20  # UWSGI_ over file
    assert cfg.harakiri == 7  # ZERGSERVE_ over UWSGI_
    assert cfg.max_requests == 6  # command line over everything, even before the --ini
    assert cfg.http == [":1", ":2", ":3", ":4"]  # repeatables collect, lowest source first
    assert cfg.sources == {"processes": f"{ini}:2", "listen": "$UWSGI_LISTEN", "harakiri": "$ZERGSERVE_HARAKIRI",
                           "max-requests": "--max-requests", "http": "--http"}


def test_files_in_command_line_order(tmp_path):
    a = write(tmp_path / "a.ini", "[uwsgi]\nprocesses = 2\nsocket = /a\n")
    b = write(tmp_path / "b.toml", "[uwsgi]\nprocesses = 3\nsocket = \"/b\"\n")
    assert load([a, b], {}).processes == 3 and load([b, a], {}).processes == 2
    assert load([b, a], {}).socket == ["/b", "/a"]


# --- round trip, parse_file, docs --------------------------------------------------------------------

def test_as_args_round_trip(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nsocket = %d%n.sock\nprocname-prefix = -x\n")
    cfg = load(["--module", "a:b", "-p", "3", "--http", ":1", "--chmod-socket=640", "--vacuum", "--master=false",
                "--check-interval", "0.25", "--env", "A=1", "--env", "B=--two", "--ini", ini, "--set", "x=y",
                "--zerg-server-mode", "660"], {})
    args = cfg.as_args()
    assert "--ini" not in " ".join(args) and "--set" not in " ".join(args)
    assert "--master=false" in args and "--chmod-socket=640" in args and "--check-interval=0.25" in args
    again = load(args, {})
    for opt in config.OPTIONS:
        assert getattr(again, opt.attr) == getattr(cfg, opt.attr), opt.name
    assert load([], {}).as_args() == []


def test_parse_file_for_the_emperor(tmp_path):
    write(tmp_path / "common.ini", "[uwsgi]\nlisten = 5\n")
    ini = write(tmp_path / "vassal.ini", "[uwsgi]\nsocket = %d%n.sock\nini = common.ini\nvacuum\n"
                                         "[zerg]\nzerg = /tmp/%x.sock\n")
    assert config.parse_file(ini, environ={}) == [
        ("socket", f"{tmp_path}/vassal.sock", f"{ini}:2"),
        ("listen", "5", f"{tmp_path}/common.ini:2"),
        ("vacuum", "", f"{ini}:4"),
    ]
    assert config.parse_file(ini, "zerg") == [("zerg", "/tmp/zerg.sock", f"{ini}:6")]
    assert config.parse_file(f"{ini}:zerg") == config.parse_file(ini, "zerg")
    path = write(tmp_path / "v.json", json.dumps({"uwsgi": {"http": [":1", ":2"], "master": True}}))
    assert config.parse_file(path) == [("http", ":1", f"{path}:uwsgi.http"), ("http", ":2", f"{path}:uwsgi.http"),
                                       ("master", "true", f"{path}:uwsgi.master")]


def test_docs_are_current():
    expected = config.render_markdown()
    assert (ROOT / "docs" / "settings.md").read_text() == expected, \
        "docs/settings.md is stale: python -m zergserve.config > docs/settings.md"
    assert all(f"`{opt.name}`" in expected for opt in config.OPTIONS)
    assert "no separate HTTP router process" in expected and "UWSGI_<OPTION>" in expected


# --- through the real command ------------------------------------------------------------------------

def test_bad_config_exits_nonzero_with_message(tmp_path):
    ini = write(tmp_path / "bad.ini", "[uwsgi]\nhttp = :0\nthreads-please = 4\n")
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--ini", ini], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert f"{ini}:3" in proc.stderr and "threads-please" in proc.stderr


def test_print_config():
    proc = subprocess.run([sys.executable, "-m", "zergserve", "-p", "3", "--print-config"], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, check=False, env={**os.environ, "ZERGSERVE_LISTEN": "7"})
    assert proc.returncode == 0
    printed = json.loads(proc.stdout)
    assert printed["processes"] == 3 and printed["listen"] == 7


def test_roles_do_not_mix_silently():
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--emperor", "/tmp", "--module", "a:b"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "separate" in proc.stderr


def test_instance_from_ini_and_env(spawn, workdir):
    listener = bound()
    ini = workdir / "site.ini"
    ini.write_text(f"[uwsgi]\nmodule = echo:application\nhttp = {listener.arg}\nprocesses = 1\n"
                   f"socket = %d%n.sock\n")
    addr = listener.addr
    spawn(str(ini), env={"UWSGI_PROCESSES": "2"}, wait=addr, pass_fds=(listener.fd,))
    assert http_request(addr)[0] == 200
    assert Path(workdir / "site.sock").exists()


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "deploy").rglob("*.ini") if p.name != "common.ini"),
                         ids=lambda p: p.name)
def test_deploy_examples_are_valid_config(path):
    args = ["--ini", str(path)]
    if "apps-" in str(path) or path.parent.name == "sites":
        # a vassal (deploy/fleet/sites/ holds rows' texts): read as its emperor starts it (vassal-set, vassals-include)
        from zergserve.emperor.vassal import vassal_argv
        args = vassal_argv(load(["--ini", str(path.parent.parent / "emperor.ini")], {}), str(path))[3:]
    cfg = load(args, {})
    assert cfg.module or cfg.zergpool or cfg.zerg or cfg.emperor or cfg.privileged_binary_patch_arg


# --- issue 12: the config bugs, through the real command ---------------------------------------------

def run_zergserve(*args: str, cwd: Path = ROOT, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zergserve", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, check=False, **kwargs)


def test_check_config_of_an_emperor_only_checks(workdir):
    """It used to start the emperor (and its vassals) and never return."""
    vassals = workdir / "vassals"
    vassals.mkdir()
    (vassals / "good.ini").write_text("[uwsgi]\nmodule = echo:application\nhttp = %d%n.sock\n")
    proc = run_zergserve("--emperor", str(vassals), "--check-config")
    assert proc.returncode == 0 and "emperor configuration OK" in proc.stderr, proc.stderr
    assert not (vassals / "good.sock").exists()  # no vassal ran
    (vassals / "bad.ini").write_text("[uwsgi]\nmodule = echo:application\nthreds = 4\nprocesses = many\n")
    proc = run_zergserve("--emperor", str(vassals), "--check-config")
    assert proc.returncode == 2
    assert "vassal bad.ini: bad.ini:3: unknown option 'threds'" in proc.stderr
    assert "vassal bad.ini: bad.ini:4: processes: invalid int value 'many'" in proc.stderr
    assert not (vassals / "good.sock").exists()


@pytest.mark.parametrize("monitor", ["zmq://tcp://127.0.0.1:5555", "ldap://localhost/vassals"])
def test_unknown_monitor_is_an_error_at_start(monitor):
    """It used to start and watch nothing, as a glob matching no file; also under --check-config."""
    for extra in ((), ("--check-config",)):
        proc = run_zergserve("--emperor", monitor, *extra)
        assert proc.returncode == 2
        assert f"emperor: {monitor}: unknown imperial monitor scheme {monitor.split(':')[0]}://" in proc.stderr


def test_print_config_with_logto_prints_to_stdout(workdir):
    """It used to write the JSON into the log file."""
    log = workdir / "app.log"
    proc = run_zergserve("--print-config", "--logto", str(log), "--gevent", "50")
    assert proc.returncode == 0
    printed = json.loads(proc.stdout)
    assert printed["logto"] == str(log) and printed["worker"] == "gevent" and printed["worker-connections"] == 50
    assert not log.exists() or "worker-connections" not in log.read_text()


def test_help_into_a_closed_pipe_exits_quietly():
    """`zergserve --help | head` used to end in a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "zergserve", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=30, cwd=ROOT, check=False)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == ""


def test_every_error_of_a_file_in_one_run(workdir):
    ini = workdir / "bad.ini"
    ini.write_text("[uwsgi]\nhttp = :0\ndaemonize = /var/log/app.log\nprocesses = x\nchdir = %(nope)\nfor = a\n")
    proc = run_zergserve(str(ini))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"zergserve: {ini}:5: unknown placeholder %(nope): it must be set before it is used",
        f"zergserve: {ini}:6: for without its endfor",
        f"zergserve: {ini}:3: unknown option 'daemonize': zergserve stays in the foreground: run it under systemd "
        "(deploy/systemd) with --logto FILE",
        f"zergserve: {ini}:4: processes: invalid int value 'x'",
    ]


def test_ini_language_in_a_running_instance(spawn, workdir):
    """@(file), for, if-env, gevent = N and the warnings of options without effect, in a real server."""
    (workdir / "sockets").write_text(f"{workdir}/http\n")
    sock = workdir / "http-one.sock"
    ini = workdir / "site.ini"
    ini.write_text(
        "[uwsgi]\n"
        "module = echo:application\n"
        "\n"
        "for = one\n"
        "http = @(%dsockets)-%(_).sock\n"
        "endfor =\n"
        "if-env = SITE_WORKERS\n"
        "processes = %(_)\n"
        "endif =\n"
        "gevent = 10\n"
        "thunder-lock = true\n"
        "master = false\n")
    server = spawn(str(ini), env={"SITE_WORKERS": "2", "UWSGI_NO_SUCH_OPTION": "1"}, wait=str(sock))
    assert http_request(str(sock))[0] == 200
    log = server.wait_log("2 gevent worker")
    assert f"{ini}:11: thunder-lock has no effect here: the sync worker waits with EPOLLEXCLUSIVE" in log
    assert f"{ini}:12: master has no effect here: zergserve always runs a master process" in log
    assert "environment variable UWSGI_NO_SUCH_OPTION: unknown option 'no-such-option' (ignored)" in log


def test_buffer_size_raises_the_http_head_limit(spawn, workdir):
    """uWSGI users raise --buffer-size for big cookies: over --http the header limits grow with it."""
    cookie = {"Cookie": "a=" + "x" * 12000}
    small, large = str(workdir / "small.sock"), str(workdir / "large.sock")
    spawn("--module", "echo:application", "--http", small, wait=small)
    spawn("--module", "echo:application", "--http", large, "--buffer-size", "16384", wait=large)
    assert http_request(small, headers=cookie)[0] == 431
    assert http_request(large, headers=cookie)[0] == 200


def test_check_config_of_a_zergpool_binds_nothing(workdir):
    pool = workdir / "pool.sock"
    sock = workdir / "app.sock"
    proc = run_zergserve("--zergpool", f"{pool}:{sock}", "--check-config")
    assert proc.returncode == 0 and "zergpool configuration OK" in proc.stderr, proc.stderr
    assert not pool.exists() and not sock.exists()
    proc = run_zergserve("--zergpool", str(pool), "--check-config")
    assert proc.returncode == 2 and "expected PATH:addr1,addr2" in proc.stderr


def test_the_checked_descriptor_is_read_whatever_the_names_on_disk(tmp_path, monkeypatch):
    """Issue 8 item 1: with ZERGSERVE_CONFIG_FD the vassal's file and its sections are read from
    the descriptor the emperor checked, matched on the name as given: `victim.ini:zerg` and
    `victim.ini:x.ini` files beside it are never read in its place."""
    monkeypatch.chdir(tmp_path)
    checked = tmp_path / "victim.ini"
    checked.write_text("[uwsgi]\nprocesses = 3\n[zerg]\nprocesses = 5\n")
    fd = os.open(checked, os.O_RDONLY)
    try:
        for squatter in ("victim.ini:zerg", "victim.ini:x.ini"):
            (tmp_path / squatter).write_text("[uwsgi]\nprocesses = 9\n")
        env = {config.CONFIG_FD_VARIABLE: f"{fd}:victim.ini"}
        checked.unlink()  # and the checked name itself may be gone or swapped: the descriptor stays
        assert load(["--ini", "victim.ini"], env).processes == 3
        assert load(["--ini", "victim.ini:zerg"], env).processes == 5
        with pytest.raises(ConfigError, match="no section"):
            load(["--ini", "victim.ini:x.ini"], env)
        named = {config.CONFIG_FD_VARIABLE: f"{fd}:victim.ini:x.ini"}  # a checked name with ':' is whole
        assert load(["--ini", "victim.ini:x.ini"], named).processes == 3
    finally:
        os.close(fd)
