"""WebSocket echo: zergserve's asyncio worker against uvicorn (websockets and wsproto backends).

    python bench/websocket.py [--duration 5] [--connections 50] [--size 64] [--rounds 2]

Each server runs bench/ws_echo.py in one worker on a UNIX socket, permessage-deflate off (a CPU
cost both would pay alike) and pings at their defaults. The client, one process per core left
over, keeps `--connections` WebSockets busy with one message in flight each and counts the echoes
per second. uvicorn comes from PyPI into bench/.ws-peers (made on first run); zergserve is this
tree run by this interpreter. Ratios are zergserve's rate over each peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import HERE, ROOT, stop, wait_unix

PEERS = HERE / ".ws-peers"


def ensure_uvicorn() -> Path:
    python = PEERS / "bin" / "python"
    if not (PEERS / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "uvicorn", "websockets", "wsproto",
                        "httptools"], check=True)
    return PEERS / "bin" / "uvicorn"


def targets(uvicorn: Path, sock: str) -> dict[str, list[str]]:
    common = ["--app-dir", str(HERE), "--uds", sock, "--workers", "1", "--no-access-log",
              "--ws-per-message-deflate", "false", "--log-level", "warning", "ws_echo:application"]
    return {
        "zergserve": [sys.executable, "-m", "zergserve", "--chdir", str(HERE), "--module", "ws_echo:application",
                      "--worker", "asyncio", "--http", sock, "-p", "1", "--disable-logging",
                      "--ws-per-message-deflate", "false"],
        "uvicorn-websockets": [str(uvicorn), "--ws", "websockets", *common],
        "uvicorn-wsproto": [str(uvicorn), "--ws", "wsproto", *common],
    }


async def _client(sock_path: str, connections: int, size: int, duration: float) -> int:
    from websockets.asyncio.client import unix_connect
    message = "x" * size
    deadline = time.monotonic() + duration
    counts = [0] * connections

    async def one(i: int) -> None:
        async with unix_connect(sock_path, "ws://localhost/", compression=None) as ws:
            while time.monotonic() < deadline:
                await ws.send(message)
                await ws.recv()
                counts[i] += 1

    await asyncio.gather(*(one(i) for i in range(connections)))
    return sum(counts)


def _client_process(args: tuple[str, int, int, float]) -> int:
    return asyncio.run(_client(*args))


def measure(cmd: list[str], sock: str, args: argparse.Namespace) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_unix(sock)
        processes = max(1, (os.cpu_count() or 2) - 1)
        per = max(1, args.connections // processes)
        with multiprocessing.Pool(processes) as pool:
            pool.map(_client_process, [(sock, per, args.size, 1.0)] * processes)  # warm-up
            echoes = sum(pool.map(_client_process, [(sock, per, args.size, float(args.duration))] * processes))
        return echoes / args.duration
    finally:
        stop(server, None)
        if os.path.exists(sock):
            os.unlink(sock)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measure every target this many times, interleaved, and keep its best run")
    args = parser.parse_args()
    sock = str(Path(tempfile.mkdtemp(prefix="zsws-")) / "ws.sock")
    found = targets(ensure_uvicorn(), sock)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, cmd in found.items():
            rate = measure(cmd, sock, args)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"{name:20} {rate:10.0f} echoes/s", flush=True)
    print()
    for name, rate in best.items():
        if name != "zergserve":
            print(f"zergserve / {name}: {best['zergserve'] / rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
