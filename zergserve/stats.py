"""The stats server: one JSON object per connection, in uWSGI's layout, then close.

`--stats ADDR` is TCP when ADDR has a ':' and a UNIX socket otherwise, like uWSGI. The master
(and, later, the emperor) owns the socket and calls `serve_one()` when it is readable; the
document itself comes from a callable, so each role decides what it reports.
"""

from __future__ import annotations

from typing import Any, Callable

from zergserve import sockets
from zergserve.log import logger

_HTTP_HEAD = b"HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n\r\n"


class StatsServer:
    """A listening socket that answers every connection with the current stats document."""

    def __init__(self, addr: str, document: Callable[[], dict[str, Any]], *, http: bool = False,
                 minified: bool = False, backlog: int = 100, chmod: int | None = None) -> None:
        self.listener = sockets.bind(addr, "uwsgi", backlog, chmod)
        self.document = document
        self.http = http
        self.minified = minified

    def fileno(self) -> int:
        return self.listener.fileno()

    def serve_one(self) -> None:
        """Accept one client and send it the document; a slow or gone client costs at most 1 s."""
        try:
            conn, _ = self.listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.error("stats: accept: %s", exc.strerror)
            return
        import json  # here, not at the top: the master forks workers before any stats request
        try:
            doc = self.document()
            text = json.dumps(doc, separators=(",", ":")) if self.minified else json.dumps(doc, indent=1)
            conn.settimeout(1.0)
            conn.sendall((_HTTP_HEAD if self.http else b"") + text.encode())
        except OSError:
            pass
        except Exception as exc:
            logger.error("stats: cannot build the document: %r", exc)
        finally:
            conn.close()

    def close(self, vacuum: bool = False) -> None:
        sockets.close_listener(self.listener, vacuum)

