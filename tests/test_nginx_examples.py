"""Every vhost in nginx/ renders (paths and user names only), passes `nginx -t`, and serves through real
nginx, whose workers run as www-data when the test is root (as a distribution's nginx does), with
zergserve started with the socket options its header documents."""

from __future__ import annotations

import grp
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, bound, http_request
from nginx import Nginx, requires_nginx
from test_tyrant import users, vassal_python  # noqa: F401 - fixtures, for the examples that drop to a user

pytestmark = [requires_nginx, pytest.mark.nginx]
EXAMPLES = sorted(p.name for p in (ROOT / "nginx").glob("*.conf") if p.name != "websocket.conf")  # test_websocket
NGINX_USER = "www-data"


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
def test_example_serves_through_nginx(name, spawn, workdir, request):
    workdir.chmod(0o755)  # nginx's workers, not root, reach the sockets and static files below
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
    options, python, env = shipped_socket_options(conf, request, workdir)
    for addr in sorted(addrs):  # a TCP upstream is handed in bound, a UNIX one is a file in the workdir
        socket_arg = upstreams[addr].arg if addr in upstreams else addr
        spawn("--module", "echo:application", "--socket", socket_arg, *options, wait=addr, python=python, env=env)
    server = Nginx(workdir, conf, (front,), user=NGINX_USER)
    try:
        server.wait_ready()
        status, _, body = http_request(front.addr, "GET", "/")
        assert (status, body) == (200, b"hello"), server.error_log()
        if "/static/" in conf:
            assert http_request(front.addr, "GET", "/static/hello.txt")[2] == b"static hello\n"
    finally:
        server.stop()


def shipped_socket_options(conf: str, request, workdir: Path) -> tuple[list[str], str | None, dict | None]:
    """The socket and privilege options of the example's header command line, with its app user
    mapped to a real unprivileged user (and a Python that user can run); without root, the ones
    only root can apply are left out, as nginx then runs as the test's own user."""
    header = "\n".join(line for line in conf.splitlines() if line.startswith("#"))
    options = re.findall(r"(--(?:uid|gid|chown-socket)) (\S+)", header)
    chmod = re.findall(r"--chmod-socket=(\d+)", header)
    args = [f"--chmod-socket={chmod[0]}"] if chmod else []
    if not options:
        return args, None, None
    if os.geteuid() != 0:
        return args, None, None
    try:
        grp.getgrnam(NGINX_USER)
    except KeyError:
        pytest.skip(f"no {NGINX_USER} user for nginx's workers")
    user = request.getfixturevalue("users")[0].pw_name
    python, site = request.getfixturevalue("vassal_python")
    for flag, value in options:
        args += [flag, ":".join(user if part == "app" else part for part in value.split(":"))]
    return args, python, {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "apps"), site])}
