"""The ini language uWSGI users write: @(file), @(exec://), magic variables, for/if-* blocks,
include, inherit, set-placeholder; every error of a run at once; warnings for options that change
nothing; migration hints; gunicorn's long options. Checked against real uWSGI where it is installed."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from zergserve import __version__, config
from zergserve.config import files, hints
from zergserve.config import ConfigError, load, parse_file


def write(path: Path, content: str) -> str:
    path.write_text(content)
    return str(path)


def raises(message: str):
    return pytest.raises(ConfigError, match=re.escape(message))


def values(path: str, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """key → values of a file as the emperor reads it (keys unchecked, so custom keys show)."""
    found: dict[str, list[str]] = {}
    for key, value, _ in parse_file(path, environ=env or {}):
        found.setdefault(key, []).append(value)
    return found


# --- @(file) and @(exec://) --------------------------------------------------------------------------

def test_file_and_command_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "two").write_text("a\n\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "in-sub").write_text("deep")
    ini = write(tmp_path / "app.ini", (
        "[uwsgi]\n"
        "env = SECRET=@(secret)\n"  # relative to the working directory, as in uWSGI
        "a = @(two)\n"  # one trailing newline goes
        "b = @(exec://echo hi there)\n"
        "c = @(%dsub/in-sub)\n"  # magic variables inside
        "dir = sub\n"
        "d = @(%(dir)/in-sub)\n"  # placeholders inside
        "e = @($(WHERE)/in-sub)\n"))  # the environment inside
    got = values(ini, {"WHERE": "sub"})
    assert got["env"] == ["SECRET=s3cret"]
    assert load([write(tmp_path / "env.ini", "[uwsgi]\nenv = SECRET=@(secret)\n")], {}).env == ["SECRET=s3cret"]
    assert got["a"] == ["a\n"] and got["b"] == ["hi there"]
    assert got["c"] == got["d"] == got["e"] == ["deep"]


def test_file_and_command_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ini = write(tmp_path / "app.ini", "[uwsgi]\na = @(missing)\nb = @(exec://exit 3)\nc = @(http://x/y)\n")
    with pytest.raises(ConfigError) as info:
        values(ini)
    assert str(info.value).splitlines() == [
        f"{ini}:2: @(missing): cannot read it: No such file or directory",
        f"{ini}:3: @(exec://exit 3): the command exited with status 3",
        f"{ini}:4: @(http://x/y): only files and exec:// are supported",
    ]


# --- magic variables -------------------------------------------------------------------------------

def test_global_magic_variables(tmp_path):
    conf = tmp_path / "etc" / "vassals"
    conf.mkdir(parents=True)
    ini = write(conf / "shop.ini", "[uwsgi]\nk = %k\nt = %t %T\nu = %u %U %g %G\nv = %V\ni = %i\nesc = %[\n"
                                   "parts = %0|%1|%9\n")
    before = time.time()
    got = {key: items[0] for key, items in values(ini).items()}
    assert got["k"] == str(os.cpu_count())
    seconds, micros = map(int, got["t"].split())
    assert before - 60 < seconds <= time.time() and micros // 1_000_000 == seconds
    uid, gid = os.getuid(), os.getgid()
    assert got["u"] == f"{uid} {pwd.getpwuid(uid).pw_name} {gid} {grp.getgrgid(gid).gr_name}"
    assert got["v"] == __version__ and got["i"] == str(os.stat(ini).st_ino) and got["esc"] == "\x1b"
    components = [part for part in str(conf).split("/") if part]
    assert got["parts"] == f"{components[0]}|{components[1]}|{components[9] if len(components) > 9 else ''}"


def test_path_hash_is_uwsgis():
    """%j is uWSGI's djb33x of %p, bytes in memory order: uWSGI 2.0.31 gave A589277F for this path."""
    assert files._djb33x("/tmp/ini-lang/a.ini") == "A589277F"


def test_upper_case_magic_is_the_first_file(tmp_path):
    """A template included by a vassal sees its own %n, and the vassal's as %N (uWSGI 1.9.18+)."""
    write(tmp_path / "common.ini", "[uwsgi]\nsocket = /run/%N.sock\nprocname-prefix = %n-%N-%C\n")
    ini = write(tmp_path / "shop.ini", "[uwsgi]\ninclude = common.ini\n")
    cfg = load([ini], {})
    assert cfg.socket == ["/run/shop.sock"] and cfg.procname_prefix == f"common-shop-{tmp_path.name}"


@pytest.mark.parametrize("value,message", [
    ("%Y", "unknown magic variable %Y (write %% for a literal %)"),
    ("%(_)", "%(_) has no value here"),
    ("%(a + b)", "%(a + b): placeholder math and other expressions are not supported"),
    ("%(nope)", "unknown placeholder %(nope)"),
    ("$(A:B)", "$(A:B): expected $(NAME), $(NAME:-DEFAULT) or $(NAME-DEFAULT)"),
])
def test_nothing_unknown_passes_as_text(tmp_path, value, message):
    ini = write(tmp_path / "a.ini", f"[uwsgi]\nchdir = {value}\n")
    with raises(f"{ini}:2: {message}"):
        load([ini], {})


def test_environment_fallbacks(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\na = $(UNSET:-x)\nb = $(EMPTY:-x)\nc = $(EMPTY-x)\nd = $(SET-x)\n"
                                    "e = $(UNSET)\n")
    got = values(ini, {"EMPTY": "", "SET": "y"})
    assert [got[k][0] for k in "abcde"] == ["x", "x", "", "y", ""]


# --- configuration logic -----------------------------------------------------------------------------

def test_for_loops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b.conf", "a.conf"):
        (tmp_path / name).write_text("")
    (tmp_path / "hosts").write_text("one\n\ntwo\n")
    ini = write(tmp_path / "a.ini", (
        "[uwsgi]\n"
        "for = 3031  3032\n"
        "socket = 127.0.0.1:%(_)\n"
        "http = /tmp/%(_).sock\n"
        "endfor =\n"
        "for-times = 2\n"
        "env = N%(_)=%(_)\n"
        "end-for\n"
        "for-glob = *.conf\n"
        "env = CONF=%(_)\n"
        "endfor\n"
        "for-readline = hosts\n"
        "env = HOST=%(_)\n"
        "endfor\n"))
    cfg = load([ini], {})
    assert cfg.socket == ["127.0.0.1:3031", "127.0.0.1:3032"]  # each line once per item, in order
    assert cfg.http == ["/tmp/3031.sock", "/tmp/3032.sock"]
    assert cfg.env == ["N1=1", "N2=2", "CONF=a.conf", "CONF=b.conf", "HOST=one", "HOST=two"]


def test_if_blocks(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    ini = write(tmp_path / "a.ini", (
        "[uwsgi]\n"
        "if-env = HOME_DIR\n" "chdir = %(_)\n" "endif =\n"
        "if-env = NOPE\n" "processes = 9\n" "endif =\n"
        "if-env = MODE=prod\n" "listen = 500\n" "endif\n"
        "if-env = MODE=dev\n" "listen = 5\n" "endif\n"
        "if-not-env = NOPE\n" "env = NOPE=unset\n" "endif\n"
        "if-not-env = MODE=dev\n" "env = MODE=%(_)\n" "endif\n"
        f"if-exists = {tmp_path}/file\n" "env = EXISTS=%(_)\n" "endif\n"
        f"if-not-exists = {tmp_path}/nope\n" "env = MISSING=%(_)\n" "endif\n"
        f"if-file = {tmp_path}/dir\n" "env = WRONG=1\n" "endif\n"
        f"if-dir = {tmp_path}/dir\n" "env = DIR=%(_)\n" "endif\n"
        f"if-not-dir = {tmp_path}/file\n" "env = NOTDIR=1\n" "endif\n"
        "if-opt = listen\n" "env = LISTEN=%(_)\n" "endif\n"
        "if-opt = listen=5\n" "env = WRONG=2\n" "endif\n"
        "if-not-opt = harakiri\n" "harakiri = 30\n" "endif\n"
        f"if-hostname = {socket.gethostname()}\n" "env = HOST=yes\n" "endif\n"))
    cfg = load([ini], {"HOME_DIR": "/srv", "MODE": "prod"})
    assert cfg.chdir == "/srv" and cfg.processes == 1 and cfg.listen == 500 and cfg.harakiri == 30
    assert cfg.env == ["NOPE=unset", "MODE=prod", f"EXISTS={tmp_path}/file", f"MISSING={tmp_path}/nope",
                       f"DIR={tmp_path}/dir", "NOTDIR=1", "LISTEN=500", "HOST=yes"]


def test_logic_errors_are_all_reported(tmp_path):
    ini = write(tmp_path / "a.ini", (
        "[uwsgi]\n"
        "endif =\n"
        "for = a b\n"
        "if-env = HOME\n"
        "endfor =\n"
        "for-times = many\n"
        "endfor\n"
        "if-exists = /\n"))
    with pytest.raises(ConfigError) as info:
        load([ini], {"HOME": "/root"})
    assert str(info.value).splitlines() == [
        f"{ini}:2: endif without a matching if",
        f"{ini}:4: if-env inside the for block of line 3: blocks do not nest (nor in uWSGI)",
        f"{ini}:6: for-times: invalid int value 'many'",
        f"{ini}:8: if-exists without its endif",
    ]


# --- include, inherit, placeholders ------------------------------------------------------------------

def test_include_reads_any_format_in_place(tmp_path):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "base.toml", '[uwsgi]\nlisten = 50\nhttp = ":1"\n')
    app = write(tmp_path / "app.ini", "[uwsgi]\nhttp = :0\ninclude = conf/base.toml\nhttp = :2\n")
    cfg = load([app], {})
    assert cfg.http == [":0", ":1", ":2"] and cfg.listen == 50
    cfg = load(["--include", str(tmp_path / "conf" / "base.toml"), "--listen", "7"], {})
    assert cfg.listen == 7 and cfg.http == [":1"]


def test_inherit_comes_after_everything(tmp_path):
    """uWSGI appends an inherited template after every other option, command line included (uWSGI 2.0.31:
    `processes = 2` then `inherit` of `processes = 3` spawns 3 workers, and so does `--processes 1`)."""
    write(tmp_path / "tpl.ini", "[uwsgi]\nprocesses = 3\nsocket = /run/%n.sock\n")
    app = write(tmp_path / "app.ini", "[uwsgi]\ninherit = tpl.ini\nprocesses = 2\nsocket = /run/app.sock\n")
    cfg = load([app, "--processes", "1"], {})
    assert cfg.processes == 3 and cfg.socket == ["/run/app.sock", "/run/tpl.sock"]
    write(tmp_path / "tpl.ini", "[uwsgi]\nchdir = $(HOME)\nsocket = %(app)\n")
    with pytest.raises(ConfigError) as info:
        load([app], {"HOME": "/root"})
    assert "tpl.ini:2: $(HOME)" in str(info.value) and "tpl.ini:3: %(app)" in str(info.value)


def test_set_placeholder(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nset-placeholder = socket=/x\nset-ph = base=/srv\nchdir = %(base)\n"
                                    "http = %(socket).http\n")
    cfg = load([ini, "--set-placeholder", "unused=1"], {})
    assert cfg.socket == [] and cfg.chdir == "/srv" and cfg.http == ["/x.http"]
    assert cfg.placeholders == {"socket": "/x", "base": "/srv", "unused": "1"}


# --- errors, hints, warnings -------------------------------------------------------------------------

def test_every_error_of_a_run_at_once(tmp_path):
    ini = write(tmp_path / "bad.ini", "[uwsgi]\nprocesses = four\ndaemonize = /var/log/a.log\nchdir = %(nope)\n"
                                      "async = 4\nproceses = 2\n")
    with pytest.raises(ConfigError) as info:
        load([ini, "--listen", "lots"], {"ZERGSERVE_NOPE": "1"})
    assert str(info.value).splitlines() == [
        "environment variable ZERGSERVE_NOPE: unknown option 'nope'",
        f"{ini}:4: unknown placeholder %(nope): it must be set before it is used",
        f"{ini}:2: processes: invalid int value 'four'",
        f"{ini}:3: unknown option 'daemonize': zergserve stays in the foreground: run it under systemd "
        "(deploy/systemd) with --logto FILE",
        f"{ini}:5: unknown option 'async': use --worker gevent --worker-connections N",
        f"{ini}:6: unknown option 'proceses' (did you mean 'processes'?)",
        "--listen: listen: invalid int value 'lots'",
    ]


@pytest.mark.parametrize("name,message", [
    ("static-gzip-all", "a uWSGI option that zergserve does not support yet"),
    ("mule", "a uWSGI option that zergserve does not support yet"),
    ("timeout", "the nearest here is --harakiri N"),
    ("if-reload", "a uWSGI option that zergserve does not support yet"),
])
def test_known_names_get_no_fuzzy_suggestion(tmp_path, name, message):
    ini = write(tmp_path / "a.ini", f"[uwsgi]\n{name} = 1\n")
    with pytest.raises(ConfigError) as info:
        load([ini], {})
    assert message in str(info.value) and "did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match="configuration logic works in config files"):
        load(["--if-env", "HOME"], {})


def test_options_without_effect_warn_once_with_the_reason(tmp_path):
    ini = write(tmp_path / "a.ini", "[uwsgi]\nmaster = false\nenable-threads = true\nthunder-lock\nthunder-lock\n"
                                    "plugins = python3\npost-buffering = 8192\noffload-threads = 2\n"
                                    "single-interpreter\nneed-app\nstrict\ndie-on-term\nmemory-report\n"
                                    "harakiri-verbose\ngevent-monkey-patch\n")
    cfg = load([ini], {"UWSGI_NO_SUCH_THING": "1", "UWSGI_RELOADS": "3"})
    assert len(cfg.warnings) == 14
    assert cfg.warnings[0] == ("environment variable UWSGI_NO_SUCH_THING: unknown option 'no-such-thing' "
                               "(ignored)")
    assert f"{ini}:2: master has no effect here: zergserve always runs a master process" in cfg.warnings
    assert (f"{ini}:4: thunder-lock has no effect here: the sync worker waits with EPOLLEXCLUSIVE, so a "
            "connection wakes one worker, not all") in cfg.warnings
    assert f"{ini}:6: plugins has no effect here: Python is built in, there are no plugins to load" in cfg.warnings
    assert load(["--master"], {}).warnings == []
    assert "--thunder-lock" not in " ".join(cfg.as_args())  # not passed on to re-execs and vassals


def test_gevent_shorthand():
    cfg = load(["--gevent", "100"], {})
    assert (cfg.worker, cfg.worker_connections) == ("gevent", 100)
    assert load(["--gevent", "100", "--worker-connections", "7"], {}).worker_connections == 7
    assert load([], {"UWSGI_GEVENT": "5"}).worker == "gevent"
    again = load(cfg.as_args(), {})
    assert (again.worker, again.worker_connections) == ("gevent", 100)


def test_gunicorn_long_options():
    cfg = load(["--bind", "unix:/run/app.sock", "--bind", "127.0.0.1:8000", "--workers", "3", "--worker-class",
                "gevent", "--graceful-timeout", "20", "--backlog", "64", "--max-requests", "100",
                "--max-requests-jitter", "10", "--preload"], {})
    assert cfg.http == ["/run/app.sock", "127.0.0.1:8000"] and cfg.processes == 3 and cfg.worker == "gevent"
    assert cfg.worker_reload_mercy == 20 and cfg.listen == 64 and cfg.max_requests_jitter == 10
    assert cfg.lazy_apps is False and any("preload has no effect" in line for line in cfg.warnings)


def test_max_requests_jitter_spreads_workers():
    from zergserve.workers.base import Worker

    class Board:
        def writer(self, wid):
            return None
    cfg = load(["--max-requests", "100", "--max-requests-delta", "5", "--max-requests-jitter", "10"], {})
    limits = {Worker(2, cfg, [], None, Board(), []).max_requests for _ in range(200)}
    assert limits <= set(range(105, 116)) and len(limits) > 1


def test_buffer_size_raises_the_http_head_limits():
    from zergserve.workers.base import head_limits
    assert head_limits(load([], {}))[:3] == (4094, 100, 8190)
    assert head_limits(load(["-b", "32768"], {}))[:3] == (32768, 100, 32768)
    assert head_limits(load(["-b", "32768", "--limit-request-line", "40000"], {}))[0] == 40000


# --- the same expansion as real uWSGI ------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("uwsgi") is None, reason="uWSGI is not installed")
def test_expansion_matches_uwsgi(tmp_path):
    """What uWSGI's --show-config prints for a file using the language is what we read."""
    (tmp_path / "secret").write_text("s3cret\n")
    ini = write(tmp_path / "lang.ini", (
        "[uwsgi]\n"
        "a = @(secret)\n"
        "b = @(exec://echo out)\n"
        "c = %n %e %s %d %c %0 %x %i %j %k %u %U\n"
        "if-env = SOME_VAR\n" "d = %(_)\n" "endif =\n"
        "if-env = OTHER_VAR\n" "e = no\n" "endif =\n"
        "for = x y\n" "f = %(_)-%n\n" "endfor =\n"
        "set-placeholder = g=G\n"
        "h = %(g)%(a)\n"))
    env = {**os.environ, "SOME_VAR": "some"}
    env.pop("OTHER_VAR", None)
    shown = subprocess.run(["uwsgi", "--ini", ini, "--show-config"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30,
                           check=False).stdout
    body = shown.split("[uwsgi]\n", 1)[1].split(";end of configuration", 1)[0]
    logic = ("if-env", "endif", "for", "endfor", "set-placeholder", "ini", "show-config")
    theirs = [tuple(line.split(" = ", 1)) for line in body.splitlines()
              if line.strip() and line.split(" = ", 1)[0] not in logic]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ours = [(key, value) for key, value, _ in parse_file(ini, environ=env)]
    finally:
        os.chdir(cwd)
    assert ours == theirs


# --- the migration tables in docs/ -------------------------------------------------------------------

@pytest.mark.parametrize("doc", ["from-uwsgi.md", "from-gunicorn.md"])
def test_migration_tables_say_what_the_table_does(doc):
    """Every row of docs/from-*.md agrees with the option table: "same" and named options exist,
    "accepted" ones are in the compat group, "—" ones are no option and get a hint, never a guess."""
    from conftest import ROOT
    rows = [line.split(" | ") for line in (ROOT / "docs" / doc).read_text().splitlines()
            if line.startswith("| `")]
    assert len(rows) > 20
    for theirs, ours, _ in (row for row in rows if len(row) == 3):
        if any(sign in theirs for sign in ("%", "$(", "@(")):
            continue
        names = [name.lstrip("-") for name in re.findall(r"`([^`]+)`", theirs) if not re.fullmatch(r"-\w", name)]
        for name in names:
            if ours == "same":
                assert config.find(name) is not None, (doc, name)
            elif ours == "accepted":
                assert config.find(name).group == "compat", (doc, name)
            elif ours == "in files":
                assert name in files.BLOCK_KIND or name in files.ENDS, (doc, name)
            elif ours == "—":
                assert config.find(name) is None, (doc, name)
                assert "did you mean" not in hints.unknown(name), (doc, name)
            else:
                assert config.find(ours.strip("`")) is not None, (doc, ours)
