"""Static files before the app (--static-map, --static-map2, --check-static, --static-index,
--static-safe, --static-expires*): every worker class, HTTP and uwsgi, real processes; attacks are
sent as raw bytes so no client normalises the path first."""

from __future__ import annotations

import os
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pytest

from conftest import ROOT, raw
from nginx import Nginx, requires_nginx
from zergserve.protocols.uwsgi import encode_packet

WORKERS = {
    "sync": ("--module", "echo:application"),
    "gevent": ("--module", "echo:application", "--worker", "gevent"),
    "asyncio": ("--module", "asgi_app:application", "--worker", "asyncio"),
}
BIG = bytes(range(256)) * 400  # 102,400 bytes


@pytest.fixture
def tree(workdir: Path) -> Path:
    """root/ (mapped) with files, an index, and links in and out; outside/ holds a secret."""
    root = workdir / "root"
    (root / "css").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "static").mkdir()
    (root / "big.bin").write_bytes(BIG)
    (root / "css" / "site.css").write_text("body{}\n")
    (root / "docs" / "index.html").write_text("<p>index</p>\n")
    (root / "static" / "two.txt").write_text("map2\n")
    (root / "fav.ico").write_bytes(b"ICO")
    (root / "caf\u00e9 menu.txt").write_text("utf-8 name\n")
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET\n")
    (root / "inlink.txt").symlink_to(root / "css" / "site.css")
    (root / "outlink.txt").symlink_to(outside / "secret.txt")
    (root / "outdir").symlink_to(outside)
    os.mkfifo(root / "pipe")
    return workdir


def start(spawn, workdir: Path, worker: str, *extra: str):
    http, sock = str(workdir / "h.sock"), str(workdir / "u.sock")
    server = spawn(*WORKERS[worker], "--http", http, "--socket", sock, "-p", "1", *extra, wait=sock)
    server.http, server.sock = http, sock
    return server


def get(server, proto: str, path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request as raw bytes on `proto` ('http' or 'uwsgi'); (status, headers, body)."""
    if proto == "http":
        lines = [f"{method} {path} HTTP/1.1", "Host: t", "Connection: close",
                 *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
        reply = raw(server.http, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    else:
        variables = {"REQUEST_METHOD": method, "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
                     "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "t", "SERVER_PORT": "80", "HTTP_HOST": "t",
                     **{"HTTP_" + name.upper(): value for name, value in headers.items()}}
        reply = raw(server.sock, encode_packet(variables))
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), {k.lower(): v for k, _, v in (f.partition(": ") for f in fields)}, body


@pytest.mark.parametrize("proto", ["http", "uwsgi"])
@pytest.mark.parametrize("worker", WORKERS)
def test_static_files_are_served_before_the_app(spawn, tree, worker, proto):
    root = tree / "root"
    server = start(spawn, tree, worker, "--static-map", f"/s={root}", "--static-map", f"/favicon.ico={root}/fav.ico",
                   "--static-map2", f"/static={root}", "--check-static", str(root / "css"),
                   "--static-index", "index.html", "--static-expires-type", "text/css=3600")
    status, headers, body = get(server, proto, "/s/big.bin")
    assert (status, body) == (200, BIG)
    assert headers["content-length"] == str(len(BIG))
    assert headers["content-type"] == "application/octet-stream"
    assert headers["last-modified"] == formatdate((root / "big.bin").stat().st_mtime, usegmt=True)
    assert headers["accept-ranges"] == "bytes"

    status, headers, body = get(server, proto, "/s/big.bin", "HEAD")
    assert (status, headers["content-length"]) == (200, str(len(BIG)))
    assert body == b""

    status, headers, body = get(server, proto, "/s/css/site.css")
    assert (status, body, headers["content-type"]) == (200, b"body{}\n", "text/css")
    assert "expires" in headers
    assert get(server, proto, "/s/docs/")[2] == b"<p>index</p>\n"       # --static-index
    assert get(server, proto, "/s/docs")[2] == b"<p>index</p>\n"
    assert get(server, proto, "/static/two.txt")[2] == b"map2\n"        # --static-map2 keeps the prefix
    assert get(server, proto, "/site.css")[2] == b"body{}\n"            # --check-static
    assert get(server, proto, "/favicon.ico")[2] == b"ICO"              # a map to one file
    assert get(server, proto, "/s/inlink.txt")[2] == b"body{}\n"        # a link that stays inside
    name = "/s/caf%C3%A9%20menu.txt" if proto == "http" else "/s/caf\u00c3\u00a9 menu.txt"  # nginx decodes
    assert get(server, proto, name)[2] == b"utf-8 name\n"

    # conditional and partial requests
    last = headers = get(server, proto, "/s/big.bin")[1]["last-modified"]
    status, headers, body = get(server, proto, "/s/big.bin", if_modified_since=last)
    assert (status, body) == (304, b"")
    earlier = formatdate((root / "big.bin").stat().st_mtime - 60, usegmt=True)
    assert get(server, proto, "/s/big.bin", if_modified_since=earlier)[0] == 200
    status, headers, body = get(server, proto, "/s/big.bin", range="bytes=1000-1999")
    assert (status, body) == (206, BIG[1000:2000])
    assert headers["content-range"] == f"bytes 1000-1999/{len(BIG)}"
    assert headers["content-length"] == "1000"
    status, headers, body = get(server, proto, "/s/big.bin", range="bytes=100-60099")  # read in chunks
    assert (status, body, headers["content-length"]) == (206, BIG[100:60100], "60000")
    status, headers, body = get(server, proto, "/s/big.bin", range="bytes=-10")
    assert (status, body) == (206, BIG[-10:])
    status, headers, body = get(server, proto, "/s/big.bin", range="bytes=102000-")
    assert (status, body) == (206, BIG[102000:])
    status, headers, body = get(server, proto, "/s/big.bin", range=f"bytes={len(BIG)}-")
    assert (status, headers["content-range"]) == (416, f"bytes */{len(BIG)}")
    assert get(server, proto, "/s/big.bin", range="bytes=0-1,5-6")[0] == 200  # multi-range: whole file
    assert get(server, proto, "/s/big.bin", range="bytes=0-9", if_range=earlier)[0] == 200  # changed since

    # the app's turn: no such file, a directory without index, a FIFO, another method, another path
    assert get(server, proto, "/s/missing.txt")[:3:2] == (404, b"not found")
    assert get(server, proto, "/s/css/")[0] == 404
    assert get(server, proto, "/s/pipe")[0] == 404
    assert get(server, proto, "/s/big.bin", "DELETE")[0] == 404
    assert get(server, proto, "/sx/big.bin")[0] == 404  # /s does not map /sx


ATTACKS = [
    "/s/../outside/secret.txt",
    "/s/%2e%2e/outside/secret.txt",
    "/s/%2E%2E%2Foutside%2Fsecret.txt",
    "/s/..%2foutside/secret.txt",
    "/s/css/../../outside/secret.txt",
    "/s//..//outside/secret.txt",
    "/s/outlink.txt",
    "/s/outdir/secret.txt",
    "/s/big.bin%00.txt",
]


@pytest.mark.parametrize("worker", WORKERS)
def test_paths_that_leave_the_mapped_directory_are_refused(spawn, tree, worker):
    server = start(spawn, tree, worker, "--static-map", f"/s={tree / 'root'}")
    for path in ATTACKS:
        status, _, body = get(server, "http", path)
        assert status == 403, (path, status, body)
        assert b"SECRET" not in body
    for path in ["/s/../outside/secret.txt", "/s/outlink.txt", "/s/big.bin\0.txt"]:  # nginx would decode
        status, _, body = get(server, "uwsgi", path)
        assert status == 403, (path, status, body)
    server.wait_log("static: refused")
    assert get(server, "http", "/s/big.bin")[0] == 200  # the worker goes on


@pytest.mark.parametrize("worker", ["sync", "asyncio"])
def test_static_safe_allows_links_to_a_named_directory(spawn, tree, worker):
    server = start(spawn, tree, worker, "--static-map", f"/s={tree / 'root'}", "--static-safe", str(tree / "outside"))
    assert get(server, "http", "/s/outlink.txt")[::2] == (200, b"SECRET\n")
    assert get(server, "http", "/s/outdir/secret.txt")[::2] == (200, b"SECRET\n")


@pytest.mark.parametrize("worker", ["gevent", "asyncio"])
def test_static_and_app_responses_share_a_kept_alive_connection(spawn, tree, worker):
    from conftest import connect
    server = start(spawn, tree, worker, "--static-map", f"/s={tree / 'root'}")
    with connect(server.http) as conn:
        conn.sendall(b"GET /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\nHEAD /s/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET /s/css/site.css HTTP/1.1\r\nHost: t\r\n\r\nGET /nothing HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while not data.endswith(b"not found"):
            chunk = conn.recv(65536)
            assert chunk, data[-300:]
            data += chunk
    first, rest = data.split(b"\r\n\r\n", 1)
    assert rest.startswith(BIG)
    assert rest.count(b"HTTP/1.1 200") == 2 and b"body{}" in rest and b"HTTP/1.1 404" in rest


def test_a_uwsgi_ini_runs_unchanged(spawn, tree):
    """uWSGI's spellings from an ini file, the README's example among them."""
    sock = str(tree / "u.sock")
    (tree / "app.ini").write_text(f"""[uwsgi]
module = echo:application
socket = {sock}
http = {tree / 'h.sock'}
processes = 1
static-map = /static={tree / 'root'}
static-map = /favicon.ico={tree / 'root' / 'fav.ico'}
static-index = index.html
static-expires = /* 7776000
mimefile = {tree / 'mime.types'}
""")
    (tree / "mime.types").write_text("application/x-zergserve-test\tzst\n")
    (tree / "root" / "data.zst").write_bytes(b"z")
    server = spawn(str(tree / "app.ini"), wait=sock)
    server.http, server.sock = str(tree / "h.sock"), sock
    status, headers, body = get(server, "uwsgi", "/static/docs/")
    assert (status, body) == (200, b"<p>index</p>\n")
    assert "expires" in headers
    assert get(server, "http", "/favicon.ico")[2] == b"ICO"
    assert get(server, "http", "/static/data.zst")[1]["content-type"] == "application/x-zergserve-test"


def test_lazy_apps_get_the_layer_too(spawn, tree):
    server = start(spawn, tree, "sync", "--lazy-apps", "--static-map", f"/s={tree / 'root'}")
    assert get(server, "http", "/s/css/site.css")[2] == b"body{}\n"


@pytest.mark.parametrize("value", ["static", "/s", "=/tmp"])
def test_bad_static_map_is_a_usage_error(value):
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--module", "echo", "--http", "127.0.0.1:0",
                           "--static-map", value], capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "static-map" in proc.stderr and "/MOUNTPOINT=DIR" in proc.stderr


def test_unreadable_mimefile_is_a_start_error(workdir):
    proc = subprocess.run([sys.executable, "-m", "zergserve", "--module", "echo", "--http", str(workdir / "h.sock"),
                           "--static-map", f"/s={workdir}", "--mimefile", str(workdir / "nope.types")],
                          capture_output=True, text=True, timeout=20, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "mimefile" in proc.stderr and "nope.types" in proc.stderr


@requires_nginx
@pytest.mark.nginx
def test_behind_nginx_uwsgi_pass(spawn, tree):
    from conftest import bound, http_request
    sock = str(tree / "u.sock")
    spawn("--module", "echo:application", "--socket", sock, "-p", "1", "--static-map", f"/s={tree / 'root'}",
          wait=sock)
    front = bound()
    port = front.port
    nginx = Nginx(tree, f"server {{ listen {front.addr}; location / {{ include uwsgi_params; "
                        f"uwsgi_pass unix:{sock}; }} }}", (front,))
    try:
        from conftest import wait_for
        status, headers, body = wait_for(lambda: http_request(f"127.0.0.1:{port}", "GET", "/s/big.bin"))
        assert (status, body) == (200, BIG)
        status, headers, body = http_request(f"127.0.0.1:{port}", "GET", "/s/big.bin", headers={"Range": "bytes=5-9"})
        assert (status, body) == (206, BIG[5:10])
        assert http_request(f"127.0.0.1:{port}", "GET", "/s/nothing")[0] == 404
    finally:
        nginx.stop()
