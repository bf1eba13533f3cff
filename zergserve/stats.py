"""The stats server: one JSON object per connection, in uWSGI's layout, then close.

`--stats ADDR` is TCP when ADDR has a ':' and a UNIX socket otherwise, like uWSGI. The master
(and, later, the emperor) owns the socket and calls `serve_one()` when it is readable; the
document itself comes from a callable, so each role decides what it reports.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

from zergserve import sockets
from zergserve.log import logger

CLIENT_TIMEOUT = 1.0
_HEAD_LIMIT = 8192
_LINGER = 0.2  # seconds a client that sent something may take to close after the reply
_HTTP_HEAD = b"HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n\r\n"


class StatsServer:
    """A listening socket that answers every connection with the current stats document.

    `reply()` turns the document into bytes; the metrics server (metrics.py) answers HTTP with it."""

    what = "stats"

    def __init__(self, addr: str, document: Callable[[], Any], *, http: bool = False,
                 minified: bool = False, backlog: int = 100, chmod: int | None = None) -> None:
        self.listener = sockets.bind(addr, "uwsgi", backlog, chmod)
        if not sockets.is_local(self.listener.sock):
            logger.warning("%s: %s is reachable from other hosts: anyone who connects reads pids, uids, "
                           "the cwd and socket paths; serve %s on a UNIX socket or 127.0.0.1",
                           self.what, self.listener.name, self.what)
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
            logger.error("%s: accept: %s", self.what, exc.strerror)
            return
        try:
            conn.settimeout(CLIENT_TIMEOUT)
            conn.sendall(self.reply(conn))
            _linger(conn, self.http)
        except OSError:
            pass
        except Exception as exc:
            logger.error("%s: cannot build the document: %r", self.what, exc)
        finally:
            conn.close()

    def reply(self, conn: socket.socket) -> bytes:
        import json  # here, not at the top: the master forks workers before any stats request
        doc = self.document()
        text = json.dumps(doc, separators=(",", ":")) if self.minified else json.dumps(doc, indent=1)
        return (_HTTP_HEAD if self.http else b"") + text.encode()

    def close(self, vacuum: bool = False) -> None:
        sockets.close_listener(self.listener, vacuum)


def _linger(conn: socket.socket, http: bool = False) -> None:
    """If the client sent something, say we are done and read it until the client closes: a close
    with unread bytes would reset the connection and could cut the reply. A raw client that sent
    nothing (uwsgitop, nc) costs no wait. Under --stats-http the client's request may still be on its
    way (curl connects, then sends; the reply can be out first on a loaded host): wait for it, or for
    the close, up to the client time budget."""
    if not http:
        conn.setblocking(False)
        try:
            if not conn.recv(_HEAD_LIMIT):
                return
        except BlockingIOError:
            return
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(CLIENT_TIMEOUT if http else _LINGER)
    try:
        while conn.recv(_HEAD_LIMIT):
            pass
    except OSError:
        pass


def read_head(conn: socket.socket) -> bytes:
    """An HTTP request head, read within the stats server's time budget (the master's loop waits)."""
    deadline = time.monotonic() + CLIENT_TIMEOUT
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _HEAD_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("request head")
        conn.settimeout(left)
        chunk = conn.recv(_HEAD_LIMIT)
        if not chunk:
            break
        data += chunk
    return data
