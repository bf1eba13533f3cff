"""Every vhost in nginx/ renders (paths only), passes `nginx -t`, and serves through real nginx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT, bound, http_request
from nginx import Nginx, requires_nginx

pytestmark = [requires_nginx, pytest.mark.nginx]
EXAMPLES = sorted(p.name for p in (ROOT / "nginx").glob("*.conf"))


def render(name: str, workdir: Path, port: int, upstream_ports: list[int]) -> str:
    """Substitute only the paths (and the listen port, which a test must choose)."""
    text = (ROOT / "nginx" / name).read_text()
    text = text.replace("/etc/nginx/uwsgi_params", str(ROOT / "nginx" / "uwsgi_params"))
    text = text.replace("/run/zergserve", str(workdir / "run"))
    text = text.replace("/srv/app/static", str(workdir / "static"))
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    for old, new in zip(("127.0.0.1:3031", "127.0.0.1:3032", "127.0.0.1:3033"), upstream_ports):
        text = text.replace(old, f"127.0.0.1:{new}")
    return text


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_serves_through_nginx(name, spawn, workdir):
    (workdir / "run").mkdir()
    (workdir / "static").mkdir()
    (workdir / "static" / "hello.txt").write_text("static hello\n")
    front = bound()
    upstreams = {listener.addr: listener for listener in (bound() for _ in range(3))}
    conf = render(name, workdir, front.port, [int(addr.rpartition(":")[2]) for addr in upstreams])
    code = re.sub(r"#[^\n]*", "", conf)
    targets = re.findall(r"uwsgi_pass (unix:)?([^;]+);", code)
    addrs = set()
    for prefix, target in targets:
        if prefix or ":" in target:
            addrs.add(target)
    addrs |= set(re.findall(r"server (127\.0\.0\.1:\d+)", code))
    assert targets and addrs
    for addr in sorted(addrs):  # a TCP upstream is handed in bound, a UNIX one is a file in the workdir
        socket_arg = upstreams[addr].arg if addr in upstreams else addr
        spawn("--module", "echo:application", "--socket", socket_arg, "--chmod-socket=666", wait=addr)
    server = Nginx(workdir, conf, (front,))
    try:
        server.wait_ready()
        status, _, body = http_request(front.addr, "GET", "/")
        assert (status, body) == (200, b"hello"), server.error_log()
        if "/static/" in conf:
            assert http_request(front.addr, "GET", "/static/hello.txt")[2] == b"static hello\n"
    finally:
        server.stop()
