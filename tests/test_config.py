"""The option table and every source it serves: argv, ini/json/toml files, environment, docs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, http_request
from zergserve import config
from zergserve.config import ConfigError, load


def test_cli_forms():
    cfg = load(["--module", "app:application", "-p4", "-s", "/tmp/a.sock", "--http=:8000", "--http", ":8001",
                "-M", "--chmod-socket", "--harakiri", "30"], {})
    assert cfg.module == "app:application" and cfg.processes == 4
    assert cfg.socket == ["/tmp/a.sock"] and cfg.http == [":8000", ":8001"]
    assert cfg.master is True and cfg.chmod_socket == 0o666 and cfg.harakiri == 30
    assert load(["--chmod-socket=660"], {}).chmod_socket == 0o660
    assert load(["--workers", "3"], {}).processes == 3  # alias
    assert load(["--http-socket", ":9"], {}).http == [":9"]


@pytest.mark.parametrize("argv,message", [
    (["--no-such-thing"], "--no-such-thing"),
    (["--proceses", "2"], "did you mean"),
    (["-p", "four"], "processes: invalid int value 'four'"),
    (["--chmod-socket=66"], "three octal digits"),
    (["--buffer-size", "70000"], "buffer-size"),
    (["stray"], "unexpected argument 'stray'"),
    (["--module"], "needs a value"),
    (["--worker", "threads"], "invalid choice"),
])
def test_cli_errors_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(argv, {})


def test_help_and_version():
    with pytest.raises(config.HelpRequested) as info:
        load(["--help"], {})
    assert "--processes" in info.value.args[0] and "--zerg-server" in info.value.args[0]
    with pytest.raises(config.VersionRequested):
        load(["--version"], {})


def test_ini_sections_magic_and_placeholders(tmp_path):
    ini = tmp_path / "myapp.ini"
    ini.write_text(
        "[uwsgi]\n"
        "# a comment\n"
        "base = /srv/%n\n"
        "chdir = %(base)\n"
        "socket = %d%n.sock\n"
        "socket = /tmp/second.sock\n"
        "processes = 2\n"
        "master = true\n"
        "vacuum\n"
        "pidfile = $(HOME_FOR_TEST)/x.pid\n"
        "[zergserve]\n"
        "processes = 3\n"
        "[other]\n"
        "processes = 9\n")
    cfg = load(["--ini", str(ini)], {"HOME_FOR_TEST": "/home/t"})
    assert cfg.chdir == "/srv/myapp"
    assert cfg.socket == [f"{tmp_path}/myapp.sock", "/tmp/second.sock"]
    assert cfg.processes == 3  # [zergserve] wins over [uwsgi]
    assert cfg.vacuum is True and cfg.master is True
    assert cfg.pidfile == "/home/t/x.pid"
    assert load(["--ini", f"{ini}:other"], {}).processes == 9
    assert load([str(ini)], {}).processes == 3  # a bare .ini argument is config


def test_unknown_key_in_file_names_file_line_and_key(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[uwsgi]\nprocesses = 2\nprocesess = 4\n")
    with pytest.raises(ConfigError) as info:
        load(["--ini", str(ini)], {})
    assert f"{ini}:3" in str(info.value) and "processes" in str(info.value)
    ini.write_text("[uwsgi]\nprocesses = lots\n")
    with pytest.raises(ConfigError, match=r"bad\.ini:2: processes: invalid int value 'lots'"):
        load(["--ini", str(ini)], {})


def test_nested_ini_and_recursion_bound(tmp_path):
    (tmp_path / "base.ini").write_text("[uwsgi]\nlisten = 50\nhttp = :1\n")
    (tmp_path / "app.ini").write_text("[uwsgi]\nini = base.ini\nhttp = :2\n")
    cfg = load(["--ini", str(tmp_path / "app.ini")], {})
    assert cfg.listen == 50 and cfg.http == [":1", ":2"]
    (tmp_path / "loop.ini").write_text("[uwsgi]\nini = loop.ini\n")
    with pytest.raises(ConfigError, match="include each other"):
        load(["--ini", str(tmp_path / "loop.ini")], {})


def test_json_and_toml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"uwsgi": {"processes": 2, "http": [":1", ":2"], "master": True}}))
    cfg = load(["--json", str(tmp_path / "a.json")], {})
    assert cfg.processes == 2 and cfg.http == [":1", ":2"] and cfg.master
    (tmp_path / "a.toml").write_text('[zergserve]\nprocesses = 5\nsocket = ["/a", "/b"]\nvacuum = true\n')
    cfg = load([str(tmp_path / "a.toml")], {})
    assert cfg.processes == 5 and cfg.socket == ["/a", "/b"] and cfg.vacuum
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid json"):
        load(["--json", str(tmp_path / "bad.json")], {})


def test_precedence_file_env_argv(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[uwsgi]\nprocesses = 2\nlisten = 10\nharakiri = 5\nhttp = :1\n")
    env = {"UWSGI_LISTEN": "20", "UWSGI_HARAKIRI": "6", "ZERGSERVE_HARAKIRI": "7", "UWSGI_HTTP": ":2",
           "UWSGI_SOMETHING_UWSGI_ONLY": "x", "UWSGI_EMPEROR_FD": "3"}
    cfg = load(["--ini", str(ini), "--harakiri", "8", "--http", ":3"], env)
    assert cfg.processes == 2  # file
    assert cfg.listen == 20  # UWSGI_ env over file
    assert cfg.harakiri == 8  # argv over everything
    assert cfg.http == [":1", ":2", ":3"]  # repeatables collect, lowest first
    assert load([], {"ZERGSERVE_HARAKIRI": "7", "UWSGI_HARAKIRI": "6"}).harakiri == 7
    assert cfg.sources["harakiri"] == "--harakiri" and cfg.sources["listen"] == "$UWSGI_LISTEN"


def test_unknown_zergserve_env_var_is_an_error():
    with pytest.raises(ConfigError, match="ZERGSERVE_PROCESES"):
        load([], {"ZERGSERVE_PROCESES": "2"})


def test_set_option_and_placeholder():
    cfg = load(["--set", "processes=3", "--set", "mine=x"], {})
    assert cfg.processes == 3 and cfg.placeholders["mine"] == "x"


def test_as_args_round_trip(tmp_path):
    cfg = load(["--module", "a:b", "-p", "3", "--http", ":1", "--chmod-socket=640", "--vacuum"], {})
    again = load(cfg.as_args(), {})
    for opt in config.OPTIONS:
        assert getattr(again, opt.attr) == getattr(cfg, opt.attr), opt.name


def test_docs_are_current():
    assert (ROOT / "docs" / "settings.md").read_text() == config.render_markdown(), \
        "docs/settings.md is stale: python -m zergserve.config > docs/settings.md"


def test_every_option_is_one_row():
    names = [name for opt in config.OPTIONS for name in (opt.name, *opt.aliases)]
    assert len(names) == len(set(names))
    shorts = [opt.short for opt in config.OPTIONS if opt.short]
    assert len(shorts) == len(set(shorts))


def test_bad_config_exits_nonzero_with_message(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[uwsgi]\nhttp = :0\nthreads-please = 4\n")
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--ini", str(ini)], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{ini}:3" in proc.stderr and "threads-please" in proc.stderr


def test_instance_from_ini_and_env(spawn, workdir):
    port = free_port()
    ini = workdir / "site.ini"
    ini.write_text(f"[uwsgi]\nmodule = echo:application\nhttp = 127.0.0.1:{port}\nprocesses = 1\n"
                   f"socket = %d%n.sock\n")
    addr = f"127.0.0.1:{port}"
    spawn(str(ini), env={"UWSGI_PROCESSES": "2"}, wait=addr)
    assert http_request(addr)[0] == 200
    assert Path(workdir / "site.sock").exists()


def test_print_config():
    proc = subprocess.run([sys.executable, "-m", "zergserve", "-p", "3", "--print-config"], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0 and json.loads(proc.stdout)["processes"] == 3


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "deploy").rglob("*.ini") if p.name != "common.ini"),
                         ids=lambda p: p.name)
def test_deploy_examples_are_valid_config(path):
    args = ["--ini", str(path)]
    if "apps-" in str(path):  # vassals get the emperor's vassals-include
        args += ["--ini", str(ROOT / "deploy" / "emperor" / "common.ini")]
    cfg = load(args, {})
    assert cfg.module or cfg.zergpool or cfg.zerg or getattr(cfg, "emperor", None)


def test_yaml(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "a.yaml").write_text("uwsgi:\n  processes: 4\n  socket: [/a, /b]\n  master: true\n")
    cfg = load([str(tmp_path / "a.yaml")], {})
    assert cfg.processes == 4 and cfg.socket == ["/a", "/b"] and cfg.master
    (tmp_path / "bad.yml").write_text("uwsgi: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid yaml"):
        load(["--yaml", str(tmp_path / "bad.yml")], {})


def test_roles_do_not_mix_silently():
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--emperor", "/tmp", "--module", "a:b"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2 and "separate" in proc.stderr
