"""Run a real nginx (Debian's nginx-light) from a config rendered into a test's directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Bound, bound, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UWSGI_PARAMS = """\
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
"""

requires_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx-light)")


class Nginx:
    """One nginx master in the foreground of its own config; stopped by pid at teardown.

    `inherit`: `bound()` sockets its `listen` directives name by address, handed to nginx already
    listening the way its binary upgrade does (the NGINX environment variable): nginx adopts them
    instead of binding, so no other process can take the port first. `user`: whom nginx's workers
    run as when the test is root (nginx.conf's `user`); the examples' test runs them as www-data,
    as a distribution's nginx does."""

    def __init__(self, workdir: Path, server_blocks: str, inherit: tuple[Bound, ...] = (),
                 user: str = "root") -> None:
        self.dir = workdir / "nginx"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "uwsgi_params").write_text(UWSGI_PARAMS)
        self.conf = self.dir / "nginx.conf"
        user = f"user {user};" if os.geteuid() == 0 else ""
        self.conf.write_text(f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    client_max_body_size 10m;
{server_blocks}
}}
""")
        check = subprocess.run([NGINX, "-t", "-p", str(self.dir), "-c", str(self.conf)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        fds = [listener.fd for listener in inherit]
        env = dict(os.environ, NGINX="".join(f"{fd};" for fd in fds)) if fds else None
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, pass_fds=fds, env=env)
        for listener in inherit:
            listener.close()

    def wait_ready(self) -> None:
        """Until its master has started the worker (that accepts on the inherited sockets)."""
        wait_for(lambda: "start worker process " in self.error_log() or self.proc.poll() is not None,
                 message="nginx started its worker")
        assert self.proc.poll() is None, self.error_log()

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def nginx(workdir):
    """nginx(server_blocks) → (Nginx, 'http address'); `listen` is a socket bound here and inherited."""
    started: list[Nginx] = []

    def start(locations: str) -> tuple[Nginx, str]:
        listener = bound()
        server = Nginx(workdir, f"    server {{\n        listen {listener.addr};\n{locations}\n    }}", (listener,))
        started.append(server)
        server.wait_ready()
        return server, listener.addr

    yield start
    for server in started:
        server.stop()
