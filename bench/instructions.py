"""Instructions per request of one zergserve worker, counted by callgrind: a figure that load on a
shared machine does not disturb, unlike requests/s (bench/run.py, which compares with peers).

    python bench/instructions.py FAMILY [--requests 2000] [--rounds 3] [--warmup 300] [--pure] [--log]

FAMILY is what bench/run.py's family of the same kind serves, with one worker (-p 1):
  http-close  the sync worker, bench/hello.py over HTTP, one connection per request (Connection: close)
  http-ka     the gthread worker (--threads 2), bench/hello.py over HTTP, every request on one kept-alive connection
  uwsgi       the sync worker, bench/hello.py over the uwsgi protocol (nginx-like vars) on a UNIX socket
  gevent-ka   the gevent worker, bench/hello.py over HTTP, every request on one kept-alive connection
              (so every request waits on the hub for the next, which under wrk's 50 connections a third do)
  asgi-ka     the asyncio worker on asyncio's own loop, bench/hello_asgi.py over HTTP, every request on one kept-alive connection
  asgi-ka-uvloop  the same on uvloop's event loop (--loop uvloop)

The server runs under `valgrind --tool=callgrind --trace-children=yes` from this source tree (set
PYTHONPATH to run another one), with PYTHONHASHSEED=0 so that two runs count alike, on a socket
bound here and handed over as fd://N. After the warm-up requests, the worker's counters are zeroed
(`callgrind_control -z PID`), the measured requests are sent from a plain socket client (see
Client), the counters are dumped (`callgrind_control -d PID`) and their total is divided by the
number of requests; that --rounds times, keeping the least. --pure sets ZERGSERVE_PURE_PYTHON=1
(the codecs without their C accelerators); access logging is off, as in bench/run.py, unless --log.
The callgrind files stay in --out for callgrind_annotate.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from zergserve.protocols.uwsgi import encode_packet  # noqa: E402  (from this tree, like the server)

FAMILIES = {
    "http-close": ["--module", "hello:application", "--http"],
    "http-ka": ["--module", "hello:application", "--threads", "2", "--http"],
    "uwsgi": ["--module", "hello:application", "--socket"],
    "gevent-ka": ["--module", "hello:application", "--worker", "gevent", "--http"],
    "asgi-ka": ["--module", "hello_asgi:application", "--worker", "asyncio", "--loop", "asyncio", "--http"],
    "asgi-ka-uvloop": ["--module", "hello_asgi:application", "--worker", "asyncio", "--loop", "uvloop", "--http"],
}
# What wrk sends, with the Connection header bench/run.py adds for the close families.
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
HTTP_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
# What nginx's stock uwsgi_params send for the same request.
UWSGI_PACKET = encode_packet({
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "", "REQUEST_URI": "/",
    "PATH_INFO": "/", "DOCUMENT_ROOT": "/usr/share/nginx/html", "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234", "SERVER_PORT": "8080",
    "SERVER_NAME": "localhost", "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "wrk", "HTTP_ACCEPT": "*/*"})


class Client:
    """Sends requests as the family's clients do and checks each answer: one after another on one
    kept-alive connection, or, for the close families, a connection per request, `queue` of them
    connected and sent before the first answer is read, so that the worker finds the next one
    waiting, as under wrk's 50 connections (a worker that waits for its client does work that
    depends on timing)."""

    def __init__(self, family: str, address: str) -> None:
        self.family = family
        self.address = address
        self.kept: socket.socket | None = None

    def connect(self) -> socket.socket:
        if self.family == "uwsgi":
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(self.address)
        else:
            host, _, port = self.address.rpartition(":")
            sock = socket.create_connection((host, int(port)))
        sock.settimeout(120)  # callgrind runs the server some 50 times slower
        return sock

    def requests(self, count: int, queue: int = 10) -> None:
        if "-ka" in self.family:
            if self.kept is None:
                self.kept = self.connect()
            for _ in range(count):
                self.kept.sendall(HTTP_REQUEST)
                check(read_response(self.kept))
            return
        for start in range(0, count, queue):
            sockets = [self.connect() for _ in range(min(queue, count - start))]
            for sock in sockets:
                sock.sendall(UWSGI_PACKET if self.family == "uwsgi" else HTTP_CLOSE)
            for sock in sockets:
                with sock:
                    answer = b""
                    while chunk := sock.recv(65536):
                        answer += chunk
                    check(answer)

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def check(answer: bytes) -> None:
    if not (answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Hello, World!")):
        raise RuntimeError(f"unexpected answer {answer[:200]!r}")


def listener(family: str, out: Path) -> tuple[socket.socket, str]:
    """The server's socket, bound here and handed over as fd://N (no port another process may take
    between a probe and the server's bind): a UNIX socket for uwsgi, else TCP on 127.0.0.1."""
    if family == "uwsgi":
        sock = socket.socket(socket.AF_UNIX)
        address = str(out / "app.sock")
        sock.bind(address)
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % sock.getsockname()[1]
    sock.listen(100)
    return sock, address


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def worker_pid(master: int, timeout: float) -> int:
    """The master's one child (the worker), once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise TimeoutError("no worker")


def dumped(out: Path, pid: int, number: int) -> int:
    """The instructions in dump `number` of `pid` (callgrind numbers them from 1), once it is written."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        path = out / f"callgrind.out.{pid}.{number}"
        if path.exists():
            found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise TimeoutError(f"no callgrind dump {number} of {pid} in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--requests", type=int, default=2000, help="requests counted")
    parser.add_argument("--rounds", type=int, default=3,
                        help="count this many times in a row and keep the least: work the worker does each "
                             "second (the Date header, its loop's timeouts) adds more per request when "
                             "the machine is busy")
    parser.add_argument("--warmup", type=int, default=300, help="requests before the counters are zeroed")
    parser.add_argument("--pure", action="store_true", help="ZERGSERVE_PURE_PYTHON=1: no C accelerators")
    parser.add_argument("--log", action="store_true", help="keep the access log on")
    parser.add_argument("--out", type=Path, default=None, help="where the callgrind files go (a temporary directory)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="zs-instructions-"))
    out.mkdir(parents=True, exist_ok=True)
    sock, address = listener(args.family, out)
    # One hash seed: the same dict and set layouts in every run, so two runs count the same.
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)), "PYTHONHASHSEED": "0"}
    env.pop("ZERGSERVE_PURE_PYTHON", None)
    if args.pure:
        env["ZERGSERVE_PURE_PYTHON"] = "1"
    command = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/callgrind.out.%p",
               sys.executable, "-m", "zergserve", "--chdir", str(HERE), "-p", "1",
               *([] if args.log else ["--disable-logging"]), *FAMILIES[args.family], f"fd://{sock.fileno()}"]
    with open(out / "server.log", "wb") as log:
        # cwd: `python -m` puts it first on sys.path, before PYTHONPATH: not a tree with a zergserve in it.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  pass_fds=[sock.fileno()], cwd=out)
    sock.close()  # the server holds it; once it is gone, the address refuses
    client = Client(args.family, address)
    try:
        deadline = time.monotonic() + 300
        while True:  # the first answer: the worker is up
            try:
                client.requests(1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the server did not answer; see {out / 'server.log'}") from None
                time.sleep(0.5)
        worker = worker_pid(server.pid, 60)
        client.requests(args.warmup)
        counts = []
        for number in range(1, args.rounds + 1):
            callgrind(worker, "-z")
            client.requests(args.requests)
            callgrind(worker, "-d")
            counts.append(dumped(out, worker, number) / args.requests)
    finally:
        client.close()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    accelerated = "pure Python" if args.pure else "C accelerators if built"
    print(f"{args.family} ({accelerated}): {min(counts):,.0f} instructions per request, the least of "
          f"{args.rounds} rounds of {args.requests} ({', '.join(f'{count:,.0f}' for count in counts)}; "
          f"callgrind files in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
