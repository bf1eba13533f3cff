"""The access line's cost per request, in-process: each preset against the line zergserve wrote
before formats existed (f-string + strftime per line), each written to /dev/null.

    python3 bench/accesslog.py

Runs are interleaved and the best of each kept, so a loaded machine skews them alike."""

from __future__ import annotations

import os
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zergserve.accesslog import PRESETS, AccessLog, compile_format, writer  # noqa: E402
from zergserve.exchange import Context, Exchange  # noqa: E402
from zergserve.log import printable  # noqa: E402
from zergserve.protocols import http as h1  # noqa: E402


class _Row:
    def begin(self, *args: object) -> None: ...

    def end(self, *args: object) -> None: ...


class _Listener:
    proto = "http"
    name = "bench"


def main(number: int = 100_000, rounds: int = 15) -> None:
    ctx = Context(app=None, row=_Row(), wid=1, log_error=print, access_log=None, limits=h1.Limits())
    ex = Exchange(ctx, _Listener(), ("127.0.0.1", 5000))
    ex.receive_data(b"GET /some/path?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: bench/1\r\nReferer: http://r/\r\n\r\n")
    ex.next_action()

    null = os.open(os.devnull, os.O_WRONLY)

    def before() -> None:  # exchange.access + connection.log_writer as they were
        addr = printable(ex.peer[0])
        ms = (time.time() - ex.started) * 1000
        line = (f'{addr} "{printable(ex.method)} {printable(ex.target)} {printable(ex.protocol)}" '
                f"{200} {5} {ms:.1f}ms w{ctx.wid}")
        os.write(null, (time.strftime("[%Y-%m-%d %H:%M:%S] ") + line + "\n").encode("utf-8", "replace"))

    cases = {"before (fixed line)": before}
    for name in PRESETS:
        prefix = "[%Y-%m-%d %H:%M:%S]" if name == "zergserve" else None  # as accesslog.from_config
        log = AccessLog(compile_format(name, ctx), writer(os.devnull, prefix))
        cases[name] = lambda log=log: log.request(ex, 200, 5)
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            best[name] = min(best[name], timeit.timeit(case, number=number) / number)
    for name, seconds in best.items():
        print(f"{name:22s} {seconds * 1e6:6.2f} µs/line")


if __name__ == "__main__":
    main()
