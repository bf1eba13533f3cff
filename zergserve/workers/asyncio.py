"""The asyncio worker: ASGI apps on one event loop per process, many connections at once.

It speaks both protocols with the same sans-I/O codecs as the other workers (HTTP/1.1 with
keep-alive and pipelining, or one uwsgi packet per connection); only the reads and writes are
coroutines here. The app's lifespan startup runs before the worker says it is ready, its
shutdown after the last connection closed. Signals only set the base worker's flags; the wake-up
pipe, watched by the loop, makes it look at them at once. The scoreboard row is shared by the
requests in flight, as in the gevent worker (base.SharedRow).
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from typing import Any

from zergserve import app as app_loader
from zergserve import asgi, connection
from zergserve.log import logger
from zergserve.pacing import BodyClock, BodyTimeout, SendPace
from zergserve.protocols import http as h1
from zergserve.protocols import uwsgi
from zergserve.scoreboard import IDLE, PAUSED
from zergserve.sockets import Listener
from zergserve.workers.base import SharedRow, Worker
from zergserve.wsgi import ClientDisconnected, RequestError, RequestTimeout, RequestTooLarge

_RECV = 65536
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1 << 20
_DRAIN_BODY_CAP = 65536


class _Timeout(Exception):
    """The request head did not arrive before its deadline."""


class AsyncioWorker(Worker):
    """Up to --worker-connections connections at once per process, for ASGI apps."""

    keep_alive = True

    def boot(self) -> None:
        super().boot()
        self.ctx.row = SharedRow(self.row, self)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.lifespan = asgi.Lifespan(self.app, lambda text: logger.info("worker %d: %s", self.wid, text),
                                      self.log_error)
        try:
            self.loop.run_until_complete(self.lifespan.startup())
        except asgi.LifespanFailed as exc:
            raise app_loader.AppLoadError(f"ASGI lifespan startup failed: {exc}") from None
        self.active = 0  # connections holding one of the --worker-connections slots
        self.room = asyncio.Event()  # set while active < --worker-connections
        self.room.set()
        self.tasks: set[asyncio.Task] = set()
        self.idle: set[asyncio.Task] = set()  # kept-alive connections waiting for their next request
        self.woke = asyncio.Event()

    def serve_forever(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        loop = self.loop
        loop.add_reader(self.wake_r, self._on_wakeup)
        acceptors: list[asyncio.Task] = []
        while not self.done():
            if self.paused and acceptors:
                _cancel(acceptors)
                acceptors = []
                self.row.set_status(PAUSED)
            elif not self.paused and not acceptors:
                acceptors = [loop.create_task(self._accept_forever(listener)) for listener in self.listeners]
                if not self.ctx.row.inflight:
                    self.row.set_status(IDLE)
            try:
                await asyncio.wait_for(self.woke.wait(), 1.0)
            except TimeoutError:
                self.row.heartbeat()
            self.woke.clear()
        _cancel(acceptors)
        await asyncio.sleep(0)  # let the acceptors unregister from the loop
        if self.orphan:
            super().release_listeners()
        loop.remove_reader(self.wake_r)
        self.ctx.draining = True  # kept-alive connections close after the response in hand
        _cancel(self.idle)
        self.drain_queue(lambda conn, peer, listener: self._spawn(conn, peer, listener, slotted=False))
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.cfg.worker_reload_mercy)
            if pending:
                logger.error("worker %d: %d connections still open after %ds, closing them",
                             self.wid, len(pending), self.cfg.worker_reload_mercy)
                _cancel(pending)
        await self.lifespan.shutdown()

    def _on_wakeup(self) -> None:
        self.drain_wakeups()
        self.woke.set()

    def release_listeners(self) -> None:
        """Done by _serve once the acceptors stopped watching the sockets."""

    async def _accept_forever(self, listener: Listener) -> None:
        """Accept on one listener while a connection slot is free; a task per connection.

        A slot is taken only together with a connection (no await between the check and the
        accept): an acceptor waiting on a quiet listener holds none, and above the cap the excess
        stays in the kernel's backlog, where another worker may take it.
        """
        sock = listener.sock
        while True:
            await self.room.wait()
            await self._readable(sock)
            if self.active >= self.cfg.worker_connections:
                continue  # another listener's acceptor took the last slot meanwhile
            try:
                conn, peer = sock.accept()
            except OSError as exc:
                backoff = self.accept_error(exc, listener)
                if backoff:
                    await asyncio.sleep(backoff)
                continue
            self._spawn(conn, peer, listener)

    async def _readable(self, sock: socket.socket) -> None:
        ready = self.loop.create_future()
        self.loop.add_reader(sock, ready.set_result, None)
        try:
            await ready
        finally:
            self.loop.remove_reader(sock)

    def _spawn(self, conn: socket.socket, peer: Any, listener: Listener, slotted: bool = True) -> None:
        """A task for the connection; `slotted` when it takes one of the --worker-connections slots."""
        task = self.loop.create_task(self._serve_connection(conn, peer, listener))
        self.tasks.add(task)
        if slotted:
            self.active += 1
            if self.active >= self.cfg.worker_connections:
                self.room.clear()
        task.add_done_callback(self._connection_done if slotted else self.tasks.discard)

    def _connection_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.active -= 1
        self.room.set()

    async def _serve_connection(self, conn: socket.socket, peer: Any, listener: Listener) -> None:
        """Serve one connection until it is done; never raises for anything a client sends."""
        try:
            conn.setblocking(False)
            if listener.proto == "http":
                await self._serve_http(conn, peer, listener)
            else:
                await self._serve_uwsgi(conn, peer, listener)
        except (OSError, asyncio.CancelledError):
            pass
        except Exception:
            self.log_error("connection failed:\n" + traceback.format_exc().rstrip())
        finally:
            conn.close()

    # --- I/O helpers ---------------------------------------------------------------------------

    async def _recv_before(self, conn: socket.socket, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout
        try:
            return await asyncio.wait_for(self.loop.sock_recv(conn, _RECV), left)
        except TimeoutError:
            raise _Timeout from None

    async def _recv(self, conn: socket.socket, clock: BodyClock, size: int = _RECV) -> bytes:
        """A read for the body, within its clock (a 408 past it) and at most --socket-timeout
        seconds of silence (then the client is gone), as connection.recv_body."""
        stall = self.ctx.socket_timeout
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(conn, size), min(stall, clock.left()))
        except TimeoutError:
            try:
                clock.left()
            except BodyTimeout as exc:
                raise RequestTimeout(str(exc)) from None
            raise ClientDisconnected(f"no body bytes for {stall:g}s") from None
        except BodyTimeout as exc:
            raise RequestTimeout(str(exc)) from None
        clock.received(len(data))
        return data

    async def _send_all(self, conn: socket.socket, data: bytes, pace: SendPace | None = None) -> None:
        """Send everything, or raise TimeoutError once the client reads slower than the pace
        allows (pacing.py), as connection.send_all does."""
        pace = pace or self.ctx.pace()
        view = memoryview(data)
        while view:
            try:
                sent = conn.send(view)
            except BlockingIOError:
                sent = 0
            if sent:
                pace.sent(sent)
                view = view[sent:]
                continue
            ready = self.loop.create_future()
            self.loop.add_writer(conn, ready.set_result, None)
            started = time.monotonic()
            try:
                await asyncio.wait_for(ready, pace.wait(connection.unsent(conn)))
            except TimeoutError:
                pass
            finally:
                self.loop.remove_writer(conn)
            pace.waited(time.monotonic() - started, connection.unsent(conn))

    async def _linger_close(self, conn: socket.socket) -> None:
        """Half-close and discard what the client still sends, so our reply is not lost to a RST."""
        try:
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            total = 0
            while total < _LINGER_BYTES:
                data = await self._recv_before(conn, deadline)
                if not data:
                    break
                total += len(data)
        except (OSError, _Timeout):
            pass

    # --- uwsgi ---------------------------------------------------------------------------------

    async def _serve_uwsgi(self, conn: socket.socket, peer: Any, listener: Listener) -> None:
        ctx = self.ctx
        deadline = time.monotonic() + ctx.socket_timeout
        parser = uwsgi.PacketParser(ctx.buffer_size, ctx.max_vars)
        try:
            packet = None
            while packet is None:
                parser.receive_data(await self._recv_before(conn, deadline))
                packet = parser.next_packet()
        except uwsgi.EmptyConnection:
            return
        except uwsgi.UwsgiError as exc:
            ctx.log_error(f"uwsgi: {exc} (peer {connection.peer_text(peer, listener)})")
            return
        except _Timeout:
            if parser.started:  # an idle connection (a health check's connect) is no error
                ctx.log_error(f"uwsgi: no complete packet within {ctx.socket_timeout:g}s "
                              f"(peer {connection.peer_text(peer, listener)})")
            return
        if packet.modifier1 == uwsgi.MODIFIER_PING:
            await self._send_all(conn, uwsgi.PONG)
            return
        started = time.time()
        variables = packet.vars
        method, target, protocol, length, refused = connection.uwsgi_head(variables, ctx, peer, listener)
        if refused:
            await self._send_all(conn, connection.raw_error(protocol, refused))
            if refused == 413:
                await self._linger_close(conn)
            return
        body = _UwsgiBody(self, conn, parser.trailing, length)
        scope = asgi.uwsgi_scope(variables, listener.server_name_port(), self.lifespan.state)
        ctx.row.begin(f"{method} {target}".encode("latin-1", "replace"), started)
        response = await asgi.run(self.app, scope, body.pull if length else None,
                                  _RawSink(self, conn, protocol), ctx.log_error)
        ctx.row.end(response.sent, time.time() - started, response.status >= 500)
        connection.access(ctx, peer or (variables.get("REMOTE_ADDR", "-"),), method, target, protocol,
                          response.status, response.sent, started)
        if body.left:
            await self._linger_close(conn)

    # --- HTTP ----------------------------------------------------------------------------------

    async def _serve_http(self, conn: socket.socket, peer: Any, listener: Listener) -> None:
        ctx = self.ctx
        h = h1.HTTPConnection(ctx.limits, keep_alive=True)
        deadline = time.monotonic() + ctx.http_timeout
        received_any = False
        kept_alive = False
        task = asyncio.current_task()
        while True:
            try:
                event = h.next_event()
                while event is h1.NEED_DATA:
                    if kept_alive and not received_any:
                        self.idle.add(task)  # type: ignore[arg-type]
                    try:
                        data = await self._recv_before(conn, deadline)
                    finally:
                        self.idle.discard(task)  # type: ignore[arg-type]
                    received_any = received_any or bool(data)
                    h.receive_data(data)
                    event = h.next_event()
            except h1.HTTPError as exc:
                ctx.log_error(f"http: {exc.status} {exc.reason} (peer {connection.peer_text(peer, listener)})")
                await self._send_all(conn, h.error_response(exc))
                await self._linger_close(conn)
                return
            except _Timeout:
                if received_any:
                    ctx.log_error(f"http: request head not complete within {ctx.http_timeout:g}s "
                                  f"(peer {connection.peer_text(peer, listener)})")
                    await self._send_all(conn, h.error_response(h1.HTTPError(408, "request head timeout")))
                return
            if not isinstance(event, h1.Request):
                return  # ConnectionClosed, or PAUSED with nothing more to do
            if not await self._serve_request(conn, peer, listener, h, event):
                return
            if ctx.draining or not h.start_next_cycle():
                return
            deadline = time.monotonic() + (ctx.keepalive_timeout or ctx.http_timeout)
            received_any = False
            kept_alive = True

    async def _serve_request(self, conn: socket.socket, peer: Any, listener: Listener,
                             h: h1.HTTPConnection, request: h1.Request) -> bool:
        """Run the app for one request; False when the connection must close afterwards."""
        ctx = self.ctx
        started = time.time()
        if ctx.limit_post and request.content_length is not None and request.content_length > ctx.limit_post:
            ctx.log_error(f"http: body of {request.content_length} bytes over limit-post {ctx.limit_post}")
            await self._send_all(conn, h.error_response(h1.HTTPError(413, "body over limit-post")))
            await self._linger_close(conn)
            return False
        if ctx.draining:
            h.keep_alive = False  # this response says Connection: close
        has_body = request.chunked or bool(request.content_length)
        body = _HTTPBody(self, conn, h)
        scope = asgi.http_scope(request, peer, listener.server_name_port(), self.lifespan.state)
        ctx.row.begin(f"{request.method} {request.target}".encode("latin-1", "replace"), started)
        response = await asgi.run(self.app, scope, body.pull if has_body else None, _HTTPSink(self, conn, h),
                                  ctx.log_error)
        ctx.row.end(response.sent, time.time() - started, response.status >= 500)
        connection.access(ctx, peer, request.method, request.target, "HTTP/" + request.http_version,
                          response.status, response.sent, started)
        if not response.finished or h.must_close:
            if has_body and not body.done:
                await self._linger_close(conn)
            return False
        if has_body and not body.done and not await body.drain():
            await self._linger_close(conn)
            return False
        return True


class _HTTPBody:
    """The request body as an async pull: feeds h11 from the socket until the body's end."""

    __slots__ = ("worker", "conn", "h", "clock", "read", "continued", "done", "failed")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, h: h1.HTTPConnection) -> None:
        self.worker = worker
        self.conn = conn
        self.h = h
        self.clock: BodyClock | None = None  # started at the first wait for body bytes
        self.read = 0
        self.continued = False
        self.done = False
        self.failed = False  # a read failed (stalled, bad framing): the rest of the body is lost

    async def pull(self) -> bytes:
        if self.done:
            return b""
        if not self.continued:
            self.continued = True
            interim = self.h.send_continue()
            if interim:
                await self.worker._send_all(self.conn, interim)
        try:
            return await self._next_chunk()
        except (OSError, RequestError):
            self.failed = True
            raise

    async def _next_chunk(self) -> bytes:
        limit = self.worker.ctx.limit_post
        while True:
            try:
                event = self.h.next_event()
            except h1.HTTPError as exc:
                raise RequestError(exc.reason) from None
            if event is h1.NEED_DATA:
                self.clock = self.clock or self.worker.ctx.body_clock()
                self.h.receive_data(await self.worker._recv(self.conn, self.clock))
                continue
            if isinstance(event, h1.Data):
                self.read += len(event.data)
                if limit and self.read > limit:
                    raise RequestTooLarge(limit)
                return event.data
            self.done = True
            return b""

    async def drain(self) -> bool:
        """Read what the app left of the body so the next request can be parsed; give up past a cap."""
        if self.failed:
            return False
        total = 0
        try:
            while chunk := await self.pull():
                total += len(chunk)
                if total > _DRAIN_BODY_CAP:
                    return False
        except (OSError, RequestError):
            return False
        return True


class _HTTPSink:
    """Writes the response through the HTTP codec, which frames it (chunked, HEAD, close)."""

    __slots__ = ("worker", "conn", "h", "pace")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, h: h1.HTTPConnection) -> None:
        self.worker = worker
        self.conn = conn
        self.h = h
        self.pace = worker.ctx.pace()

    async def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        data = self.h.send_response(status, reason, headers)
        if body:
            data += self.h.send_data(body)
        await self.worker._send_all(self.conn, data, self.pace)

    async def send_body(self, data: bytes) -> None:
        framed = self.h.send_data(data)
        if framed:
            await self.worker._send_all(self.conn, framed, self.pace)

    async def finish(self) -> None:
        end = self.h.send_end()
        if end:
            await self.worker._send_all(self.conn, end, self.pace)

    def abort(self) -> None:
        self.h.keep_alive = False


class _UwsgiBody:
    """Exactly CONTENT_LENGTH body bytes: the ones read with the packet, then the socket."""

    __slots__ = ("worker", "conn", "clock", "first", "left", "length")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, first: bytes, length: int) -> None:
        self.worker = worker
        self.conn = conn
        self.clock: BodyClock | None = None
        self.first = first[:length]
        self.left = length
        self.length = length

    async def pull(self) -> bytes:
        if self.left <= 0:
            return b""
        if self.first:
            data, self.first = self.first, b""
        else:
            self.clock = self.clock or self.worker.ctx.body_clock()
            data = await self.worker._recv(self.conn, self.clock, min(self.left, _RECV))
            if not data:
                raise ClientDisconnected(f"client closed with {self.left} of {self.length} body bytes unsent")
        self.left -= len(data)
        return data


class _RawSink:
    """A raw HTTP response on a uwsgi connection, as uWSGI writes it; the connection closes after it."""

    __slots__ = ("worker", "conn", "protocol", "pace")

    def __init__(self, worker: AsyncioWorker, conn: socket.socket, protocol: str) -> None:
        self.worker = worker
        self.conn = conn
        self.protocol = protocol.encode("latin-1")
        self.pace = worker.ctx.pace()

    async def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        parts = [b"%s %d %s\r\n" % (self.protocol, status, reason)]
        parts.extend(b"%s: %s\r\n" % header for header in headers)
        parts.append(b"\r\n")
        parts.append(body)
        await self.worker._send_all(self.conn, b"".join(parts), self.pace)

    async def send_body(self, data: bytes) -> None:
        await self.worker._send_all(self.conn, data, self.pace)

    async def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _cancel(tasks: Any) -> None:
    for task in list(tasks):
        task.cancel()
