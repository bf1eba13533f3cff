"""How many concurrent slow request heads (slowloris) each worker class withstands, reached directly.

    python bench/slow_heads.py [--workers 2] [--worker-connections 1000]

For each worker class and each count N, N connections send a request head one byte at a time
(never finishing it), then a normal client sends 5 requests: N is withstood when every one is
answered within 1 s. Prints the largest N withstood per class (README, security notes). Loopback
only; each step takes about 3 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAD = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 1000
COUNTS = {"sync": [1, 2, 3, 4, 8], "gevent": [100, 1000, 1900, 1999, 2001, 2500],
          "asyncio": [100, 1000, 1900, 1999, 2001, 2500]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answered_in_time(port: int, limit: float = 1.0) -> bool:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200") and time.monotonic() - started < limit
    except OSError:
        return False


def withstands(port: int, count: int) -> bool:
    slow = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.setblocking(False)
            slow.append(sock)
        for sock in slow:
            sock.send(HEAD[:1])
        ok = True
        for step in range(5):
            for sock in slow:
                try:
                    sock.send(HEAD[1 + step:2 + step])
                except OSError:
                    pass
            ok = answered_in_time(port) and ok
            time.sleep(0.4)
        return ok
    finally:
        for sock in slow:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-connections", type=int, default=1000)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'bench'}:{ROOT / 'tests' / 'apps'}")
    for worker, counts in COUNTS.items():
        port = free_port()
        module = "asgi_app:application" if worker == "asyncio" else "hello:application"
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([sys.executable, "-m", "zergserve", "--module", module, "--worker", worker,
                                     "--http", f"127.0.0.1:{port}", "-p", str(args.workers), "--listen", "4096",
                                     "--worker-connections", str(args.worker_connections), "--disable-logging"],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + 15
                while not answered_in_time(port) and time.monotonic() < deadline:
                    time.sleep(0.1)
                best = 0
                for count in counts:
                    if not withstands(port, count):
                        break
                    best = count
                    time.sleep(4.5)  # the slow heads' --http-timeout passes; the workers are free again
                print(f"{worker:8s} -p {args.workers}: withstands {best} concurrent slow heads "
                      f"(tried {', '.join(map(str, counts))})", flush=True)
            finally:
                proc.terminate()
                proc.wait(15)


if __name__ == "__main__":
    main()
