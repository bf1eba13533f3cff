"""Real processes on loopback and UNIX sockets: start zergserve, wait for conditions, clean up by pid."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last error: {last_exc!r})")


def free_port() -> int:
    """A port number that was free a moment ago, for the few tests where zergserve (or the emperor's
    vassals, or a reload to a new address) must bind an address itself. Another process may take it
    between this call and the bind: prefer `bound()`, which hands the server a socket already bound."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bound:
    """A listening socket the test binds and hands to zergserve as `fd://N`: nothing can take its
    address between the test choosing it and the server listening on it.

    `arg` goes on zergserve's command line (`--http fd://N`, `--socket fd://N`), `addr` to clients
    ('127.0.0.1:PORT' or the UNIX path), `port` is the TCP port (None for UNIX)."""

    def __init__(self, sock: socket.socket, addr: str, port: int | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.arg = f"fd://{self.fd}"
        self.addr = addr
        self.port = port

    def __str__(self) -> str:
        return self.addr

    def close(self) -> None:
        """Close the test's copy (the server keeps its own)."""
        _BOUND.pop(self.fd, None)
        self.sock.close()


_BOUND: dict[int, Bound] = {}


def bound(path: str | Path | None = None, backlog: int = 100) -> Bound:
    """A listening socket: TCP on 127.0.0.1 port 0, or a UNIX socket at `path` (in the test's workdir).

    Handed to the next `spawn`/`Server` whose arguments name its `arg`: the child gets the fd through
    `pass_fds` and the test's copy is closed, so that once the server is gone its address refuses."""
    if path is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        addr = f"127.0.0.1:{port}"
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr, port = str(path), None
        sock.bind(addr)
    sock.listen(backlog)
    listener = Bound(sock, addr, port)
    _BOUND[listener.fd] = listener
    return listener


def passed_fds(args: list[str] | tuple[str, ...]) -> list[int]:
    """The descriptors named by `fd://N` in zergserve arguments (`fd://3`, `--http=fd://3`): the
    `pass_fds` of a child started with them."""
    return sorted({int(fd) for arg in args for fd in re.findall(r"fd://(\d+)", arg)})


def handed_over(fds: list[int]) -> None:
    """Close the test's copies of the `bound()` sockets among `fds`, now that a child holds them."""
    for fd in fds:
        if fd in _BOUND:
            _BOUND[fd].close()


def fetch(addr: str, timeout: float = 5.0) -> dict[str, Any]:
    """One stats document from zergserve's --stats (raw JSON or HTTP): connect, read to EOF, parse."""
    with connect(addr, timeout) as sock:
        data = recv_all(sock, timeout)
    if data.startswith(b"HTTP/"):
        data = data.split(b"\r\n\r\n", 1)[1]
    return json.loads(data)


def accelerated(codec: str, env: dict[str, str]) -> str:
    """`zergserve.protocols.<codec>.ACCELERATED` in a fresh interpreter with `env` added: "True" or "False"."""
    code = f"from zergserve.protocols import {codec}; print({codec}.ACCELERATED)"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def gone(pid: int) -> bool:
    """Exited, or a zombie its parent has not reaped yet (the state follows the ')' ending the comm,
    which a process title may fill with spaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def connect(addr: str, timeout: float = 5.0) -> socket.socket:
    """A client socket to a zergserve address string ('127.0.0.1:PORT', '[::1]:PORT', a UNIX path
    or '@abstract')."""
    if addr.startswith("@"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect("\0" + addr[1:] + "\0")
        return sock
    if addr.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(addr)
        return sock
    host, _, port = addr.rpartition(":")
    return socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout)


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until EOF (or a reset, which also ends the reply)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def sent_requests(addr: str, path: str, count: int) -> list[socket.socket]:
    """`count` connections, each with a GET of `path` already sent (Connection: close). Once this
    returns every one is accepted or in the listener's queue, which a stop serves: a test that
    signals the server can count on all of them, as it could not on client threads that may not
    have connected yet (`status_of` reads each answer)."""
    socks = []
    for _ in range(count):
        sock = connect(addr)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        socks.append(sock)
    return socks


def status_of(sock: socket.socket, timeout: float = 10.0) -> int:
    """The status of the one response on `sock` (0 if none came), which is then closed."""
    with sock:
        answer = recv_all(sock, timeout)
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0


def raw(addr: str, payload: bytes, timeout: float = 5.0, half_close: bool = False) -> bytes:
    """Send bytes on a fresh connection (then shut our side if asked) and return all until EOF."""
    with connect(addr, timeout) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return recv_all(sock, timeout)


def at_once(addr: str, path: str, count: int) -> tuple[list[int], float]:
    """`count` requests for `path` sent together from threads: their statuses and the seconds all took."""
    import threading
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(http_request(addr, "GET", path, timeout=10)[0]))
               for _ in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return statuses, time.monotonic() - started


def fill_send_buffer(sock: socket.socket, chunk: bytes = b"f" * 65536) -> int:
    """Send `chunk` after `chunk` on `sock` until its buffers take no more, and leave it
    non-blocking: how many bytes they took."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(chunk)
    except BlockingIOError:
        return total


def responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read `count` responses with Content-Length bodies off a kept-alive connection."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(data) >= head_end + 4 + length:
                out.append(data[:head_end + 4 + length])
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} responses"
        data += chunk
    return out


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def http_request(addr: str, method: str = "GET", path: str = "/", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """One request with http.client; returns (status, headers, body)."""
    if addr.startswith("/"):
        conn: http.client.HTTPConnection = UnixHTTPConnection(addr, timeout)
    else:
        host, _, port = addr.rpartition(":")
        conn = http.client.HTTPConnection(host or "127.0.0.1", int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Server:
    """One zergserve process tree, started in its own session so it can be killed as a group.

    Every `fd://N` in `args` (and any fd in `pass_fds`) is passed to the child under its number;
    the test's copy of a `bound()` socket is then closed unless `keep_fds` (to hand it on again)."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = (), keep_fds: bool = False,
                 python: str | None = None) -> None:
        self.args = args
        self.workdir = workdir
        self.logfile = workdir / f"zergserve-{len(list(workdir.glob('zergserve-*.log')))}.log"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.log_fh = open(self.logfile, "wb")
        fds = sorted({*passed_fds(args), *pass_fds})
        self.proc = subprocess.Popen([python or sys.executable, "-m", "zergserve", *args], cwd=workdir,
                                     stdout=self.log_fh, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True, pass_fds=fds)
        self.pid = self.proc.pid
        if not keep_fds:
            handed_over(fds)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        return wait_for(lambda: text in self.log() and self.log(), timeout, message=f"log line {text!r}")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def worker_pids(self) -> list[int]:
        """Children of the master, read from /proc."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log_fh.close()


@pytest.fixture
def workdir():
    """A short temporary directory (UNIX socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="zs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn(workdir):
    """Start zergserve processes; every one is killed (process group, by pid) at teardown."""
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: str | None = None,
              timeout: float = 15.0, pass_fds: tuple[int, ...] = (), keep_fds: bool = False,
              python: str | None = None) -> Server:
        """`wait`: an address that must answer first; for a `bound()` one handed to this server, which
        listens before the server runs, the server must have logged adopting it instead (its stats and
        pidfile are set up by then; and no probe connection is left for a worker to accept later)."""
        handed = {listener.addr: listener.arg for fd in {*passed_fds(args), *pass_fds}
                  if (listener := _BOUND.get(fd))}
        server = Server(list(args), workdir, env, pass_fds, keep_fds, python)
        started.append(server)
        if wait:
            try:
                if wait in handed:
                    wait_for(lambda: f"{handed[wait]} (" in server.log() + _logto(args, workdir)
                             or server.proc.poll() is not None,
                             timeout, message=f"zergserve adopting {handed[wait]}")
                    assert server.proc.poll() is None, f"zergserve exited {server.proc.returncode}"
                else:
                    wait_for(lambda: _answers(wait), timeout, message=f"zergserve answering on {wait}")
            except AssertionError:
                raise AssertionError(f"server did not come up on {wait}; log:\n{server.log()}") from None
        return server

    yield start
    for server in started:
        server.kill()
        print(f"--- zergserve {' '.join(server.args)} (pid {server.pid}) log:\n{server.log()}")
    for listener in list(_BOUND.values()):
        listener.close()


def start(spawn: Callable[..., Server], workdir: Path, *extra: str, module: str = "echo:application",
          workers: int | None = 2, worker: str | None = None, http: str | None = "tcp",
          uwsgi: str | None = None, stats: bool = True, mercy: int | None = 10, backlog: int = 100,
          prefix: str = "") -> Server:
    """The usual instance for a test: `module` on bound listeners handed in as fd://N, every worker idle.

    `http` and `uwsgi` are "tcp" (127.0.0.1, port 0), "unix" (http.sock / app.sock in the workdir, after
    `prefix`, which tells apart the files of several instances in one workdir) or
    None; `backlog` is their listen backlog (the server's --listen does not apply to a socket handed
    in). The server carries what tests talk to: `.addr` (HTTP, else uwsgi), `.http`, `.uwsgi`, `.usock`
    (the uwsgi socket when it is UNIX), `.stats` (a UNIX path) and `.listeners` (the `Bound`s)."""
    args = ["--module", module]
    if workers is not None:
        args += ["-p", str(workers)]
    if worker:
        args += ["--worker", worker]
    if mercy is not None:
        args += ["--worker-reload-mercy", str(mercy)]
    listeners = {}
    for proto, kind, path in (("http", http, "http.sock"), ("uwsgi", uwsgi, "app.sock")):
        if kind:
            listeners[proto] = bound(workdir / f"{prefix}{path}" if kind == "unix" else None, backlog)
            args += ["--http" if proto == "http" else "--socket", listeners[proto].arg]
    stats_path = str(workdir / f"{prefix}stats.sock") if stats else None
    if stats_path:
        args += ["--stats", stats_path]
    addrs = {proto: listener.addr for proto, listener in listeners.items()}
    server = spawn(*args, *extra, wait=addrs.get("http") or addrs.get("uwsgi"))
    server.http, server.uwsgi, server.stats = addrs.get("http"), addrs.get("uwsgi"), stats_path
    server.addr = server.http or server.uwsgi
    server.usock = server.uwsgi if uwsgi == "unix" else None
    server.listeners = list(listeners.values())
    if stats_path:
        wait_idle(server, workers)
    return server


def wait_idle(server: Server, workers: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Wait until the stats socket shows `workers` workers (any number if None), every one idle."""
    def idle() -> list[dict] | None:
        rows = fetch(server.stats)["workers"]
        ok = workers is None or len(rows) == workers
        return rows if ok and rows and all(w["pid"] and w["status"] == "idle" for w in rows) else None
    return wait_for(idle, timeout, message=f"{workers or 'all'} worker(s) idle")


def _logto(args: tuple[str, ...], workdir: Path) -> str:
    """What the server wrote to its --logto file, if it has one."""
    for flag, value in zip(args, args[1:]):
        if flag == "--logto":
            path = workdir / value
            return path.read_text(errors="replace") if path.exists() else ""
    return ""


def _answers(addr: str) -> bool:
    with connect(addr, 1.0):
        return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nginx: needs the nginx binary")
