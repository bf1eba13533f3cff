"""The blocking driver: one accepted connection over a C socket, moved by an Exchange.

The exchange (exchange.py) decides everything about the request lifecycle; this module only
reads, writes and waits. Every read and write passes MSG_DONTWAIT, so a connection may stay in
the blocking mode accept() gave it, with no syscall to change that; when one finds nothing to do,
the driver waits for the socket with a deadline: in poll() for the sync and gthread workers, on
the hub for the gevent worker, whose greenlets (one per connection) then use the same C sockets
and never gevent's wrappers around them (use_wait).
"""

from __future__ import annotations

import _socket
import fcntl
import os
import select
import socket
import struct
import termios
from typing import Any, Callable, Final, Iterable, Iterator

from zergserve import compiled, wsgi
from zergserve.exchange import DRAIN, DRAIN_CAP, KEEP, LINGER, RECV, Context, RECEIVE, Exchange, Reply
from zergserve.pacing import SendPace, monotonic
from zergserve.sockets import Listener

__all__ = ["Context", "Socket", "serve", "resume", "send_all", "sending", "unsent", "poll_wait", "use_wait"]

Socket = _socket.socket  # the C class under socket.socket: what the sync worker accepts (workers/sync.py)

_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_PEEK: Final = int(socket.MSG_PEEK)  # (an int: `|` on socket's IntFlags runs enum's Python)
_MORE: Final = int(socket.MSG_MORE)
_UNIX: Final = int(socket.AF_UNIX)
_SHUT_WR: Final = int(socket.SHUT_WR)
_POLLIN: Final = select.POLLIN
_POLLOUT: Final = select.POLLOUT
_LINGER_SECONDS: Final = 2.0
_STREAK: Final = 8  # requests a connection may take back to back before it waits its turn
_LINGER_BYTES: Final = 1 << 20


def serve(conn: Socket, peer: Any, listener: Listener, ctx: Context,
          park: Callable[[Socket, Exchange], None] | None = None) -> None:
    """Serve one connection until it is done; never raises for anything a client sends.

    The request is usually already there and the response fits the send buffer, so the common
    case costs one recv and one send, neither waiting (MSG_DONTWAIT), and a wait (_wait) only when
    the socket makes us. With `park` (the gthread worker), a kept-alive connection whose next
    request has not arrived is handed to park() instead of waited for here; resume() goes on with
    it once it is readable.
    """
    if conn.gettimeout():  # socket.setdefaulttimeout() in the app: each try would poll first
        try:
            conn.setblocking(False)
        except OSError:
            conn.close()
            return
    resume(conn, Exchange(ctx, listener, peer), park)


def resume(conn: Socket, ex: Exchange, park: Callable[[Socket, Exchange], None] | None = None,
           readable: bool = False) -> None:
    """Serve a connection from where its exchange stands until it is done (closed) or parked;
    `readable`: the poller found it so, and it is read before it could be parked again.

    A fast client's next request is often there before the response's bookkeeping is done: it is
    taken at once, but only `_STREAK` times in a row; then the connection waits its turn (parked,
    or the worker's `turn()`), so that it cannot hold a thread or the gevent hub from the others."""
    parked = kept = False
    streak = 0  # requests taken back to back, already there, since this connection last waited
    try:
        while True:
            action = ex.next_action()
            if action is RECEIVE:
                idle = ex.kept_alive and not ex.received_any  # ex.idle, without a property call per request
                if idle and park is not None and not readable:
                    if streak >= _STREAK or not _readable(conn):
                        park(conn, ex)
                        parked = True
                        return
                    streak += 1
                elif idle and not kept:  # it may wait here between requests: close_idle() must find it
                    ex.ctx.kept[ex] = conn
                    kept = True
                readable = False
                try:
                    if idle and park is None and ex.ctx.turn is not None:
                        data = _ready(conn)
                        if data is None:  # waited for: its turn came through the worker's loop
                            streak = 0
                            data = _recv(conn, RECV, ex.deadline, wait=True)
                        else:
                            streak += 1
                            if streak >= _STREAK:
                                streak = 0
                                ex.ctx.turn()
                        ex.receive_data(data)
                    else:
                        # idle without a poller: the client sends its next request only once it has
                        # read our response, so a read tried before waiting would find nothing
                        ex.receive_data(_recv(conn, RECV, ex.deadline, idle and park is None))
                except TimeoutError:
                    ex.timed_out()
            elif type(action) is Reply:
                send_all(conn, action.data, ex.ctx.pace())
                if action.linger:
                    _linger_close(conn)
                return
            elif not _serve_request(conn, ex.listener, ex.ctx, ex):
                return
    except OSError:
        pass
    finally:
        if kept:
            del ex.ctx.kept[ex]
        if not parked:
            conn.close()


def _readable(conn: Socket) -> bool:
    """Whether a read would not wait (bytes or EOF are there)."""
    return _recv_nowait(conn, 1, _PEEK) is not None


def _serve_request(conn: Socket, listener: Listener, ctx: Context, ex: Exchange) -> bool:
    """Run the app for one request; False when the connection must close afterwards."""
    body = wsgi.Input(_body_pull(conn, ex)) if ex.has_body else wsgi.NO_BODY
    base = ctx.environs.get(listener)
    if base is None:
        base = ctx.environs[listener] = wsgi.base_environ(*listener.server_name_port())
    if ex.request is not None:  # HTTP
        environ = wsgi.http_environ(base, ex.request, ex.peer, body)
    else:
        environ = wsgi.uwsgi_environ(base, ex.variables, body, ex.reserved_vars)
    response = wsgi.run(ctx.app, environ, _Sink(conn, ex, SendPace(ctx.socket_timeout, ctx.send_min_rate)),
                        ctx.log_error, ctx.log_refusal)
    after = ex.after_response(response.status, response.sent)
    if after == DRAIN:
        after = KEEP if _drain(body) else LINGER
    if after == LINGER:
        _linger_close(conn)
    return after == KEEP and ex.next_request()


def _drain(body: wsgi.Input) -> bool:
    """Read what the app left of the body so the next request can be parsed; give up past the cap."""
    total = 0
    try:
        while chunk := body.read(8192):
            total += len(chunk)
            if total > DRAIN_CAP:
                return False
    except (OSError, wsgi.RequestError):
        return False
    return True


def _body_pull(conn: Socket, ex: Exchange) -> Callable[[int], bytes]:
    """wsgi.Input's pull function: the exchange's body pieces, read from the socket as it asks."""
    def pull(size: int) -> bytes:
        interim = ex.interim()
        if interim:
            send_all(conn, interim, ex.ctx.pace())
        while True:
            piece = ex.body_next()
            if isinstance(piece, bytes):
                return piece
            try:
                data = _recv(conn, ex.want, monotonic() + piece)
            except TimeoutError:
                ex.body_stalled()
            ex.body_data(data)

    return pull


class _Sink:
    """Puts the exchange's response bytes on the socket (wsgi.Sink).

    On a TCP connection that closes after the response, its last bytes go with MSG_MORE: the
    kernel holds them for the FIN and sends both in one segment, which the client acknowledges
    once. A close-per-request exchange then takes 8 segments instead of 10, less work for both
    ends' network stacks than all of the request's Python (the sync worker's common case; any
    worker's last response on a connection)."""

    __slots__ = ("conn", "ex", "pace", "corked")

    def __init__(self, conn: Socket, ex: Exchange, pace: SendPace) -> None:
        self.conn = conn
        self.ex = ex
        self.pace = pace
        self.corked = False

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                  last: bool) -> None:
        data = self.ex.head(status, reason, headers, body)
        send_all(self.conn, data, self.pace, self._cork(last))

    def send_body(self, data: bytes, last: bool) -> None:
        framed = self.ex.data(data)
        if framed:
            send_all(self.conn, framed, self.pace, self._cork(last))

    def _cork(self, last: bool) -> int:
        """The flags for the response's bytes: MSG_MORE for its last ones when the FIN follows them."""
        if last and self.ex.closes_after() and self.conn.family != _UNIX:
            self.corked = True
            return _MORE
        return 0

    def sendfile(self, file: Any, count: int | None) -> int | None:
        try:
            fd, offset = file.fileno(), file.tell()
        except (OSError, ValueError, AttributeError):
            return None
        if not self.ex.unframed_file(count):
            return None
        return _sendfile(self.conn, fd, offset, file, count, self.pace)

    def finish(self, flush: bool) -> None:
        """The end of the body; with `flush` (the app's iterable has a close() to run, which may
        take a while), held bytes leave now with the FIN (shutdown), else at the close soon after."""
        end = self.ex.end()
        if end:
            send_all(self.conn, end, self.pace, self._cork(True))
        if self.corked and flush:
            try:
                self.conn.shutdown(_SHUT_WR)
            except OSError:
                pass  # the client is gone: the close will say so to nobody

    def abort(self) -> None:
        self.ex.abort()


# --- socket calls ------------------------------------------------------------------------------

def poll_wait(conn: Socket, writing: bool, seconds: float) -> bool:
    """Wait at most `seconds` for `conn` to be readable (or writable); whether it is. The blocking
    worker classes wait in poll(); the gevent worker waits on its hub instead (use_wait)."""
    poller = select.poll()
    poller.register(conn, _POLLOUT if writing else _POLLIN)
    return bool(poller.poll(max(seconds, 0.0) * 1000.0))


_wait: Callable[[Socket, bool, float], bool] = poll_wait


def use_wait(wait: Callable[[Socket, bool, float], bool]) -> None:
    """Make every wait of this process's connections `wait` (a gevent worker's hub), in place of
    poll_wait: the socket calls stay the C socket's own, tried without waiting."""
    global _wait
    _wait = wait


def _recv(conn: Socket, size: int, deadline: float, wait: bool = False) -> bytes:
    """recv() bounded by an absolute deadline (TimeoutError past it), so a byte-a-second trickle
    cannot hold the worker; tried without waiting first, as the bytes are usually there, unless
    the caller knows they are not (`wait`)."""
    if not wait:
        data = _ready(conn, size)
        if data is not None:
            return data
    while True:
        left = deadline - monotonic()
        if left <= 0 or not _wait(conn, False, left):
            raise TimeoutError
        data = _ready(conn, size)
        if data is not None:
            return data


def _ready(conn: Socket, size: int = RECV) -> bytes | None:
    """What a read that does not wait finds (b'' at EOF), or None when nothing is there yet."""
    return _recv_nowait(conn, size, 0)


def _python_recv_nowait(conn: Socket, size: int, flags: int) -> bytes | None:
    """_nowait.recv's behaviour in Python: the BlockingIOError it saves costs some 10k instructions."""
    try:
        return conn.recv(size, flags | _DONTWAIT)
    except BlockingIOError:
        return None


_recv_nowait: Final[Callable[[Socket, int, int], bytes | None]] = (
    compiled.accelerator("zergserve._nowait", "recv") or _python_recv_nowait)


def send_all(conn: Socket, data: bytes, pace: SendPace, flags: int = 0) -> None:
    """Send everything, or raise TimeoutError once the client reads slower than `pace` allows.

    Python's sendall() bounds the whole transfer, which would cut a slow but live download of a
    large body, and a timeout per write would let a client taking one byte at a time hold the
    worker forever; the pace (pacing.py) asks for a minimum rate while we wait.
    """
    for wait in sending(conn, data, pace, flags):
        _wait(conn, True, wait)


def sending(conn: Socket, data: bytes, pace: SendPace, flags: int = 0) -> Iterable[float]:
    """Send `data` without waiting in send(); the seconds the driver may wait for it to be writable,
    each time it is full (SendTimeout once the client took too little). The first send is tried
    at once and usually takes the whole response: then there is nothing to iterate."""
    try:
        sent = conn.send(data, _DONTWAIT | flags)
    except BlockingIOError:
        sent = 0
    pace.accepted += sent
    return _send_rest(conn, memoryview(data)[sent:], pace, flags) if sent < len(data) else ()


def _send_rest(conn: Socket, view: memoryview, pace: SendPace, flags: int) -> Iterator[float]:
    """The rest of a send: the kernel says writable only once a third of a large send buffer is
    free, so progress is read from the send queue's length, not from wake-ups."""
    while view:
        try:
            sent = conn.send(view, _DONTWAIT | flags)
        except BlockingIOError:
            sent = 0
        if sent:
            pace.accepted += sent
            view = view[sent:]
            continue
        started = monotonic()
        yield pace.wait(unsent(conn))
        pace.waited(monotonic() - started, unsent(conn))


def unsent(conn: Socket) -> int:
    """Bytes still waiting in the socket's send queue (SIOCOUTQ), -1 if the kernel will not say."""
    try:
        return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return -1


def _sendfile(conn: Socket, fd: int, offset: int, file: Any, count: int | None, pace: SendPace) -> int:
    """os.sendfile() of `count` bytes of `fd` from `offset`, paced as send_all()."""
    if count is None:
        count = os.fstat(fd).st_size - offset
    conn.setblocking(False)
    total = 0
    try:
        while total < count:
            try:
                sent = os.sendfile(conn.fileno(), fd, offset + total, min(count - total, 1 << 20))
            except BlockingIOError:
                started = monotonic()
                _wait(conn, True, pace.wait(unsent(conn)))
                pace.waited(monotonic() - started, unsent(conn))
                continue
            if not sent:
                break
            total += sent
            pace.accepted += sent
    except OSError as exc:
        raise wsgi.ClientDisconnected(str(exc)) from exc
    file.seek(offset + total)
    return total


def _linger_close(conn: Socket) -> None:
    """Half-close and discard what the client is still sending, so our reply is not lost to a RST."""
    try:
        conn.shutdown(_SHUT_WR)
        deadline = monotonic() + _LINGER_SECONDS
        total = 0
        while total < _LINGER_BYTES:
            left = deadline - monotonic()
            if left <= 0 or not _wait(conn, False, left):
                break
            data = _ready(conn)
            if data == b"":
                break
            if data is not None:
                total += len(data)
    except OSError:
        pass

