"""The access log with real processes: presets parsed, placeholders checked against the request
sent, on every worker class and both protocols; the file target (rotation, reopen after a move, on
HUP and on --touch-logreopen); the 4xx/5xx/slow filters; --log-level; refusals as access lines."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, http_request, wait_for
from zergserve import accesslog, config
from zergserve.protocols.uwsgi import encode_packet

WORKERS = {"sync": ("--module", "echo:application"),
           "gevent": ("--module", "echo:application", "--worker", "gevent"),
           "asyncio": ("--module", "asgi_app:application", "--worker", "asyncio")}


def uwsgi_request(path: str, variables: dict[str, str]) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(encode_packet(variables))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def raw_unix(path: str, payload: bytes, close_early: bool = False) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(payload)
        if close_early:
            return b""
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def lines_of(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def start(spawn, workdir: Path, worker: str, *extra: str):
    http, uwsgi = str(workdir / "h.sock"), str(workdir / "u.sock")
    server = spawn(*WORKERS[worker], "--http", http, "--socket", uwsgi, "-p", "1", *extra, wait=http)
    return server, http, uwsgi


@pytest.mark.parametrize("worker", WORKERS)
def test_json_lines_hold_what_was_sent(spawn, workdir, worker):
    """Every field of the json preset, over HTTP (client named by a trusted proxy's
    X-Forwarded-For) and over uwsgi (nginx's REMOTE_ADDR), written to --req-logger file:PATH."""
    log = workdir / "access.log"
    server, http, uwsgi = start(spawn, workdir, worker, "--log-format", "json", "--req-logger", f"file:{log}")
    status, _, body = http_request(http, "GET", "/?q=1", headers={
        "User-Agent": "probe/1.0", "Referer": "http://ref.example/", "X-Forwarded-For": "203.0.113.7",
        "Host": "shop.example"})
    assert status == 200
    reply = uwsgi_request(uwsgi, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/nothing-here", "PATH_INFO": "/nothing-here",
                                  "SERVER_PROTOCOL": "HTTP/1.0", "REMOTE_ADDR": "198.51.100.2",
                                  "REMOTE_USER": "ann", "HTTP_USER_AGENT": "nginx-client", "HTTP_HOST": "u.example"})
    assert reply.startswith(b"HTTP/1.0 404")
    records = wait_for(lambda: len(lines_of(log)) >= 2 and [json.loads(line) for line in lines_of(log)])
    first, second = records
    assert first["addr"] == "203.0.113.7" and first["method"] == "GET" and first["uri"] == "/?q=1"
    assert first["proto"] == "HTTP/1.1" and first["status"] == 200 and first["size"] == len(body)
    assert first["uagent"] == "probe/1.0" and first["referer"] == "http://ref.example/"
    assert first["host"] == "shop.example" and first["user"] == "-" and first["wid"] == 1
    assert first["pid"] in server.worker_pids() and first["hsize"] > 20 and first["msecs"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", first["time"])
    assert second["addr"] == "198.51.100.2" and second["method"] == "POST" and second["status"] == 404
    assert second["uri"] == "/nothing-here" and second["user"] == "ann" and second["uagent"] == "nginx-client"
    assert second["proto"] == "HTTP/1.0" and second["host"] == "u.example"
    assert '"GET /?q=1' not in server.log()  # the file took them, not the log


def test_combined_and_uwsgi_presets_parse(spawn, workdir):
    """The combined line as log tools read it; uWSGI's default line as uwsgitop-era tools do."""
    server, http, uwsgi = start(spawn, workdir, "sync", "--log-format", "combined")
    http_request(http, "GET", "/?x=1", headers={"User-Agent": "ua 1", "Referer": "r", "X-Forwarded-For": "192.0.2.1"})
    line = wait_for(lambda: [x for x in server.log().splitlines() if "ua 1" in x])[0]
    match = re.fullmatch(r'(\S+) - (\S+) \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "(\S+) (\S+) (\S+)" '
                         r'(\d{3}) (\d+) "([^"]*)" "([^"]*)"', line)
    assert match, line
    assert match.groups()[:2] == ("192.0.2.1", "-") and match.groups()[3:] == (
        "GET", "/?x=1", "HTTP/1.1", "200", "5", "r", "ua 1")

    server2 = spawn("--module", "echo:application", "--http", str(workdir / "h2.sock"), "--log-format", "uwsgi",
                    wait=str(workdir / "h2.sock"))
    http_request(str(workdir / "h2.sock"), "GET", "/abc")
    line = wait_for(lambda: [x for x in server2.log().splitlines() if "/abc" in x])[0]
    match = re.fullmatch(r"\[pid: (\d+)\|app: 0\|req: -/-\] (\S+) \((\S*)\) \{(\d+) vars in (\d+) bytes\} "
                         r"\[(.+)\] (\S+) (\S+) => generated (\d+) bytes in (\d+) msecs \((\S+) (\d+)\) "
                         r"(\d+) headers in (\d+) bytes \(0 switches on core 0\)", line)
    assert match, line
    groups = match.groups()
    assert int(groups[0]) in server2.worker_pids() and groups[6:8] == ("GET", "/abc")
    assert groups[10:12] == ("HTTP/1.1", "404") and int(groups[12]) >= 1 and int(groups[3]) >= 1


@pytest.mark.parametrize("worker", WORKERS)
def test_custom_placeholders(spawn, workdir, worker):
    fmt = "%(method)|%(uri)|%(status)|%(rsize)|%(hsize)|%(size)|%(cl)|%(var.HTTP_X_REQUEST_ID)|%(wid)|%(pid)|%(micros)"
    server, http, uwsgi = start(spawn, workdir, worker, "--log-format", fmt, "--logdate", "%Y:")
    status, headers, body = http_request(http, "POST", "/echo", body=b"12345", headers={"X-Request-Id": "abc-1"})
    assert status == 200
    line = wait_for(lambda: [x for x in server.log().splitlines() if "|/echo|" in x])[0]
    date, _, rest = line.partition(" ")
    assert re.fullmatch(r"\d{4}:", date), line
    method, uri, status_, rsize, hsize, size, cl, rid, wid, pid, micros = rest.split("|")
    assert (method, uri, status_, rsize, cl, rid, wid) == ("POST", "/echo", "200", str(len(body)), "5", "abc-1", "1")
    assert int(size) == int(hsize) + int(rsize) and int(hsize) > 20
    assert int(pid) in server.worker_pids() and int(micros) >= 0


def test_gunicorn_spelling(spawn, workdir):
    log = workdir / "gunicorn.log"
    server, http, _ = start(spawn, workdir, "sync", "--access-logfile", str(log),
                            "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s %({x-id}i)s')
    body = http_request(http, "GET", "/g", headers={"X-Id": "7", "X-Forwarded-For": "192.0.2.9"})[2]
    assert wait_for(lambda: lines_of(log)) == [f'192.0.2.9 "GET /g HTTP/1.1" 404 {len(body)} 7']


def test_untrusted_proxy_is_not_believed(spawn, workdir):
    server, http, _ = start(spawn, workdir, "sync", "--log-format", "%(addr) %(uri)", "--forwarded-allow-ips",
                            "10.9.9.9")
    http_request(http, "GET", "/u", headers={"X-Forwarded-For": "6.6.6.6"})
    assert wait_for(lambda: [x for x in server.log().splitlines() if x.endswith(" /u")]) == ["- /u"]


@pytest.mark.parametrize("worker", WORKERS)
def test_filters_log_only_what_they_name(spawn, workdir, worker):
    """--disable-logging with --log-4xx, --log-5xx and --log-slow: uWSGI's conditional logging."""
    server, http, _ = start(spawn, workdir, worker, "--log-format", "ACCESS %(status) %(uri)", "--disable-logging",
                            "--log-5xx", "--log-slow", "150")
    for path in ("/", "/missing", "/sleep?s=0.3", "/crash"):
        http_request(http, "GET", path)
    wait_for(lambda: "ACCESS 500 /crash" in server.log())
    assert [x for x in server.log().splitlines() if x.startswith("ACCESS")] == [
        "ACCESS 200 /sleep?s=0.3", "ACCESS 500 /crash"]

    http4 = str(workdir / "h4.sock")
    server = spawn(*WORKERS[worker], "--http", http4, "--log-format", "ACCESS %(status) %(uri)", "--disable-logging",
                   "--log-4xx", wait=http4)
    for path in ("/", "/crash", "/missing"):
        http_request(http4, "GET", path)
    wait_for(lambda: "ACCESS 404 /missing" in server.log())
    assert [x for x in server.log().splitlines() if x.startswith("ACCESS")] == ["ACCESS 404 /missing"]


def test_log_level_warning_keeps_errors_only(spawn, workdir):
    server, http, _ = start(spawn, workdir, "sync", "--log-level", "warning")
    http_request(http, "GET", "/")
    http_request(http, "GET", "/crash")
    text = wait_for(lambda: "boom from the test app" in server.log() and server.log())
    assert "ERROR" in text and "INFO:" not in text and '"GET / HTTP/1.1"' not in text


@pytest.mark.parametrize("worker", WORKERS)
def test_refusals_and_clients_that_left_are_access_lines(spawn, workdir, worker):
    server, http, uwsgi = start(spawn, workdir, worker, "--log-format",
                                "ACCESS %(status) %(method) %(uri)|%(time) %(epoch)", "--http-timeout", "0.5")
    assert raw_unix(http, b"GET /\x01bad HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_unix(http, b"GET /slow HTTP/1.1\r\nHost: a\r\n").startswith(b"HTTP/1.1 408")
    with socket.socket(socket.AF_UNIX) as sock:  # a client that leaves in the middle of its body
        sock.connect(uwsgi)
        sock.sendall(encode_packet({"REQUEST_METHOD": "POST", "REQUEST_URI": "/echo", "PATH_INFO": "/echo",
                                    "CONTENT_LENGTH": "100"}) + b"only-a-bit")
    reply = uwsgi_request(uwsgi, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/x", "CONTENT_LENGTH": "-1"})
    assert b" 400 " in reply.split(b"\r\n")[0]
    wait_for(lambda: "ACCESS 499 POST /echo" in server.log())
    lines, times = zip(*(x.split("|") for x in server.log().splitlines() if x.startswith("ACCESS")))
    assert "ACCESS 400  " in lines and "ACCESS 408  " in lines and "ACCESS 400 POST /x" in lines, lines
    for began, logged in (map(int, pair.split()) for pair in times):  # a refusal began when it was refused
        assert 0 <= logged - began <= 60, times
    assert "Traceback" not in server.log() and "ERROR" not in server.log(), server.log()


def _rotated(log: Path) -> list[Path]:
    return sorted(log.parent.glob(log.name + ".*"))


def test_rotation_at_maxsize(spawn, workdir):
    log = workdir / "access.log"
    server, http, _ = start(spawn, workdir, "sync", "--req-logger", f"file:{log}", "--log-maxsize", "400")

    def rotated() -> list[Path]:
        http_request(http, "GET", "/fill")
        return _rotated(log)
    backup = wait_for(rotated)[0]
    assert backup.stat().st_size >= 400 and re.fullmatch(r"access\.log\.\d+_*", backup.name)
    wait_for(lambda: http_request(http, "GET", "/after") and "/after" in log.read_text())
    assert "/after" not in backup.read_text()


def test_reopen_after_move_and_on_hup(spawn, workdir):
    """logrotate's create mode: the file is renamed, a new one expected at the path."""
    log = workdir / "access.log"
    server, http, _ = start(spawn, workdir, "sync", "--req-logger", str(log))
    http_request(http, "GET", "/one")
    wait_for(lambda: "/one" in log.read_text())
    log.rename(workdir / "access.log.1")

    def followed(path: str) -> bool:
        http_request(http, "GET", path)
        return log.exists() and path in log.read_text()
    wait_for(lambda: followed("/two"))
    assert "/two" not in (workdir / "access.log.1").read_text() or "/one" in (workdir / "access.log.1").read_text()

    log.rename(workdir / "access.log.2")
    server.signal(signal.SIGHUP)  # a graceful reload: the new workers open the path
    wait_for(lambda: followed("/three"), timeout=20)


def _log_fds(pid: int, path: Path) -> set[str]:
    fds = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(entry) == str(path):
                fds.add(entry.name)
        except OSError:
            pass
    return fds


def test_touch_logreopen(spawn, workdir):
    log, touch = workdir / "access.log", workdir / "reopen"
    touch.write_text("")
    server, http, _ = start(spawn, workdir, "sync", "--req-logger", str(log), "--touch-logreopen", str(touch))
    http_request(http, "GET", "/first")
    wait_for(lambda: "/first" in log.read_text())
    worker = server.worker_pids()[0]
    before = _log_fds(worker, log)
    assert before
    os.utime(touch, (1, 1))

    def reopened() -> bool:
        http_request(http, "GET", "/next")
        return _log_fds(worker, log) not in (before, set())
    wait_for(reopened)


def test_bad_formats_are_config_errors():
    for spec, message in (("%(nope)", "unknown log-format placeholder %(nope)"),
                          ("%({x}o)s", "(a response header) is not supported")):
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            config.load(["--module", "m", "--log-format", spec], {})
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--module", "m", "--log-format", "%(nope)"],
                          capture_output=True, text=True, cwd=ROOT, timeout=20)
    assert proc.returncode == 2 and "%(nope)" in proc.stderr


def test_every_preset_compiles():
    assert set(accesslog.PRESETS) == {"zergserve", "uwsgi", "combined", "common", "json"}
    for name in accesslog.PRESETS:
        accesslog.compile_format(name)


def test_logto_follows_its_path(spawn, workdir):
    """--logto (fds 1 and 2 of every process) rotates past --log-maxsize and follows a move: the
    worker's access lines and the app's prints go to the new file."""
    log = workdir / "server.log"
    server, http, _ = start(spawn, workdir, "sync", "--logto", str(log), "--log-maxsize", "2000")

    def rotated() -> list[Path]:
        http_request(http, "GET", "/stderr")
        return _rotated(log)
    backup = wait_for(rotated)[0]
    assert "spawned worker 1" in backup.read_text()
    wait_for(lambda: http_request(http, "GET", "/stderr") and "app says hello" in log.read_text()
             and '"GET /stderr' in log.read_text())

    log.rename(workdir / "moved.log")
    wait_for(lambda: http_request(http, "GET", "/after-move") and log.exists() and "/after-move" in log.read_text())
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload" in log.read_text().lower(), timeout=20)  # the master writes to the new file too


def test_a_uwsgi_ini_with_a_log_format(spawn, workdir):
    """uWSGI's documented ini: the log-format's placeholders are not config placeholders, and a
    date is written with %% as uWSGI's docs show."""
    http = str(workdir / "h.sock")
    ini = workdir / "app.ini"
    ini.write_text("[uwsgi]\nmodule = echo:application\nhttp = %s\nlogformat = i am a logline reporting "
                   '"%%(method) %%(uri) %%(proto)" returning with status %%(status)\nlog-date = %%%%Y-%%%%m-%%%%d\n'
                   % http)
    server = spawn(str(ini), wait=http)
    http_request(http, "GET", "/ini")
    line = wait_for(lambda: [x for x in server.log().splitlines() if "i am a logline" in x])[0]
    assert re.fullmatch(r'\d{4}-\d\d-\d\d i am a logline reporting "GET /ini HTTP/1.1" returning with status 404',
                        line), line
