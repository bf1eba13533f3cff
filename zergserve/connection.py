"""The blocking driver: one accepted connection over a C socket, moved by an Exchange.

The exchange (exchange.py) decides everything about the request lifecycle; this module only
reads, writes and waits. Every read and write passes MSG_DONTWAIT, so a connection may stay in
the blocking mode accept() gave it, with no syscall to change that; when one finds nothing to do,
the driver waits for the socket with a deadline: in poll() for the sync and gthread workers, on
the hub for the gevent worker, whose greenlets (one per connection) then use the same C sockets
and never gevent's wrappers around them (use_wait). The gevent worker also holds the end of each
kept-alive response until its hub has run every ready connection, and sends them together (Outbox).
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

__all__ = ["HOLD_MOST", "Context", "Socket", "Outbox", "serve", "resume", "send_all", "sending", "unsent", "poll_wait",
           "use_wait", "use_outbox"]

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
HOLD_MOST: Final = 16384  # the most a driver holds back for a connection: what a fresh TCP socket's buffer takes (tcp_wmem)


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
                        # (its response held in the outbox, the client cannot have asked again
                        # unless it pipelines, and the wait finds that too)
                        data = None if _outbox is not None and conn in _outbox.held else _ready(conn)
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
            if _outbox is not None:
                try:
                    _outbox.release(conn)
                except OSError:
                    pass
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
    worker's last response on a connection). On a connection kept alive, the last bytes of a
    response go to the worker's Outbox if it has one (the gevent worker)."""

    __slots__ = ("conn", "ex", "pace", "corked")

    def __init__(self, conn: Socket, ex: Exchange, pace: SendPace) -> None:
        self.conn = conn
        self.ex = ex
        self.pace = pace
        self.corked = False

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                  last: bool) -> None:
        self._send(self.ex.head(status, reason, headers, body), last)

    def send_body(self, data: bytes, last: bool) -> None:
        framed = self.ex.data(data)
        if framed:
            self._send(framed, last)

    def _send(self, data: bytes, last: bool) -> None:
        """The response's last bytes on a connection kept alive go to the worker's outbox, if it
        has one; the others leave now."""
        if last and _outbox is not None and not self.ex.closes_after():
            _outbox.hold(self.conn, data, self.pace)
        else:
            send_all(self.conn, data, self.pace, self._cork(last))

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
            self._send(end, True)
        if flush and self.corked:
            try:
                self.conn.shutdown(_SHUT_WR)
            except OSError:
                pass  # the client is gone: the close will say so to nobody
        elif flush and _outbox is not None:
            _outbox.release(self.conn)

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


class Outbox:
    """Responses on kept-alive connections, held until the worker's loop has run every connection
    that was ready, then sent one after another (the gevent worker's, use_outbox).

    Sent the moment each is made, every response finds its client asleep and wakes it: on a busy
    machine a load balancer or client handling many connections is woken once per response, and
    it wakes the server's process back as often. Sent together, they reach the client between two
    of its waits, and it reads them all at one wake-up, as it would from a server whose I/O
    thread writes what its app thread finished meanwhile. Under wrk, this took the gevent worker
    from 33 to 26 µs of CPU per request, halved its p99 and took its throughput up by a third.

    Held bytes are the last of a response, and nothing else on that connection is sent before
    them: every other send on it, its close and an app's close() release them first (release).
    A connection has at most what a fresh socket's buffer takes held (HOLD_MOST): more leaves
    at once, and its failures are the request's. What the buffer did not take at the flush (a
    client that stopped reading) is finished by a greenlet of its own (`spawn`), paced as the
    connection's own sends, while its connection waits for the next request; a failure there is
    logged (`log`) and closes the connection."""

    def __init__(self, later: Callable[[Callable[[], None]], Any], spawn: Callable[..., Any],
                 log: Callable[[str], None]) -> None:
        self.held: dict[Socket, tuple[bytes, SendPace]] = {}
        self.finishing: dict[Socket, Any] = {}  # connection → the greenlet sending the rest
        self.later = later  # runs a function once the loop has run what is ready (hub.loop.run_callback)
        self.spawn = spawn
        self.log = log
        self.due = False

    def hold(self, conn: Socket, data: bytes, pace: SendPace) -> None:
        """Send `data` on `conn` at the end of this round of the loop; at once, after what is held,
        if the two are more than HOLD_MOST (a large response, or the responses to pipelined
        requests: a client that sends many and reads none meets the socket's limits) or the one
        before is still being finished."""
        held = self.held.get(conn)
        if len(data) + (0 if held is None else len(held[0])) > HOLD_MOST or conn in self.finishing:
            send_all(conn, data, pace)  # (which releases what is held first)
            return
        self.held[conn] = (data, pace) if held is None else (held[0] + data, held[1])
        if not self.due:
            self.due = True
            self.later(self.flush)

    def flush(self) -> None:
        """Send what is held: each without waiting; what the buffer does not take, from a greenlet."""
        self.due = False
        held, self.held = self.held, {}
        for conn, (data, pace) in held.items():
            try:
                rest = sending(conn, data, pace)
            except OSError:
                continue  # the client is gone: its connection's next read says so
            if rest:
                self.finishing[conn] = self.spawn(self._finish, conn, rest)

    def _finish(self, conn: Socket, rest: Iterable[float]) -> None:
        try:
            for wait in rest:
                _wait(conn, True, wait)
        except OSError as exc:  # (a client reading too slowly too): its connection's wait ends, it closes
            self.log(f"client gone during the end of a response: {exc}")
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            self.finishing.pop(conn, None)  # (a thread for a greenlet may end before spawn returns)

    def release(self, conn: Socket) -> None:
        """Put what is held for `conn` on the socket now, before anything else goes on it."""
        held = self.held.pop(conn, None)
        if held is not None:
            send_all(conn, held[0], held[1])
        finishing = self.finishing.get(conn)
        if finishing is not None:
            finishing.join()


_outbox: Outbox | None = None


def use_outbox(outbox: Outbox | None) -> None:
    """Hold the responses of this process's kept-alive connections in `outbox` (the gevent worker)."""
    global _outbox
    _outbox = outbox


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
    if _outbox is not None:
        _outbox.release(conn)
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
    if _outbox is not None:
        _outbox.release(conn)
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
        if _outbox is not None:
            _outbox.release(conn)
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

