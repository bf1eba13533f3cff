"""Zerg mode: a server that hands its listening sockets to zergs, and the zerg that attaches.

The wire format is uWSGI's, byte for byte (research/uwsgi-internals.md §2.2): on each connection
the server sends one message, `uwsgi-zerg` + the fd count as a native C int (14 bytes), with every
listening fd in one SCM_RIGHTS block, and closes. uWSGI sends nothing else, so its zergs cannot
tell an HTTP socket from a uwsgi one. A zergserve server therefore sends a second, fd-less message
after the first: `zergserve:` + one `proto name` line per fd, in the order of the fds. uWSGI clients
read only the first 14 bytes and never see it; a zergserve zerg pairs the lines with the fds by
position (names are spelled many ways: '0.0.0.0:80', 'localhost:80', 'fd://3') to serve each socket
in its own protocol.

Security (research/reliability.md §4.1): the server socket file is created 0600, and the server
checks each peer's SO_PEERCRED, serving only its own uid, root and uids it is told to trust —
the only protection an abstract socket has. The client receives with MSG_CMSG_CLOEXEC, checks the
server's credentials too, and accepts only listening stream sockets.
"""

from __future__ import annotations

import array
import os
import socket
import stat
import struct
import time

from zergserve import sockets
from zergserve.log import Repeated, logger, printable

MAGIC = b"uwsgi-zerg"
MESSAGE_SIZE = len(MAGIC) + 4
EXTENSION = b"zergserve:"
FIRST_TRY_FDS = 8  # what a uWSGI client makes room for before retrying with the advertised count
MAX_FDS = 253  # SCM_MAX_FD on Linux
KEEP_ZERGS = 100
REFUSALS_EVERY = 5.0  # seconds: at most one refusal line per peer uid (and per error) this often
_COUNT = struct.Struct("=i")
_CRED = struct.Struct("3i")


class ZergError(Exception):
    """Attaching failed: no server, a refused peer, or data that is not a zerg message."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def trusted_uids(extra: list[int] | None = None) -> set[int]:
    return {0, os.getuid(), *(extra or [])}


class ZergServer:
    """Hands `listeners` to every trusted peer that connects to `addr`; polled by the master."""

    def __init__(self, addr: str, listeners: list[sockets.Listener], backlog: int = 100,
                 mode: int = 0o600, allow_uids: list[int] | None = None) -> None:
        count = len(unique_listeners(listeners))
        if count > MAX_FDS:
            raise sockets.AddressError(f"zerg server {addr}: {count} listening sockets, but one message can pass "
                                       f"at most {MAX_FDS} fds (SCM_MAX_FD): no zerg could ever attach")
        self.addr = addr
        self.listeners = listeners
        self.allowed = trusted_uids(allow_uids)
        self.attaches = 0  # distinct zerg processes served since the instance started
        self.refused = 0  # connects refused: an untrusted uid, or no credentials
        self.refusals = Repeated(REFUSALS_EVERY)  # anyone may connect to an abstract socket, at will
        self.zergs: dict[int, dict] = {}  # pid → {pid, uid, time, last}, least recently attached first
        family, sockaddr = sockets.parse_address(addr)
        if family != socket.AF_UNIX:
            raise sockets.AddressError(f"zerg server {addr}: must be a UNIX socket path or @abstract name")
        self.path = None if str(sockaddr).startswith("\0") else str(sockaddr)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self.path:
                sockets.remove_stale_unix(self.path)
                old = os.umask(0o177)  # the file is born 0600: no window where others may connect
                try:
                    self.sock.bind(sockaddr)
                finally:
                    os.umask(old)
                os.chmod(self.path, mode)
            else:
                self.sock.bind(sockaddr)
            self.sock.listen(backlog)
        except OSError as exc:
            self.sock.close()
            raise sockets.AddressError(f"cannot bind zerg server {addr}: {exc.strerror or exc}") from None
        self.sock.setblocking(False)
        logger.info("*** zerg server enabled on %s (mode %s, trusted uids %s) ***", addr,
                    "abstract" if not self.path else oct(mode), sorted(self.allowed))

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_one(self) -> None:
        """Answer one connection: the uWSGI message with the fds, then our protocol extension."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.refusals.error("accept", "zerg server %s: accept: %s", self.addr, exc.strerror)
            return
        with conn:
            try:
                pid, uid, gid = peer_credentials(conn)
            except OSError as exc:
                self.refused += 1
                self.refusals.error("credentials", "zerg server %s: cannot read peer credentials: %s", self.addr,
                                    exc.strerror)
                return
            if uid not in self.allowed:
                self.refused += 1
                self.refusals.error(uid, "zerg server %s: refused peer pid %d uid %d gid %d (not a trusted uid)",
                                    self.addr, pid, uid, gid)
                return
            conn.settimeout(2.0)
            try:
                send_sockets(conn, self.listeners)
            except OSError as exc:
                logger.error("zerg server %s: sending to pid %d: %s", self.addr, pid, exc.strerror or exc)
                return
        self.record(pid, uid)
        logger.info("zerg server %s: handed %d socket(s) to pid %d", self.addr, len(self.listeners), pid)

    def record(self, pid: int, uid: int) -> None:
        """Count zerg processes, not connections: a uWSGI client with room for too few fds
        connects again, and a zerg attached to several of our sockets' servers is still one."""
        now = int(time.time())
        entry = self.zergs.pop(pid, None)
        if entry is None:
            self.attaches += 1
            entry = {"pid": pid, "uid": uid, "time": now}
        entry["last"] = now
        self.zergs[pid] = entry
        while len(self.zergs) > KEEP_ZERGS:
            del self.zergs[next(iter(self.zergs))]

    def stats(self) -> dict[str, object]:
        return {"zerg_server": self.addr, "zerg_attaches": self.attaches, "zerg_refused": self.refused,
                "zergs": list(self.zergs.values())}

    def handover(self) -> dict[str, object]:
        """The attach record for the master's next image (see Master.add_handover)."""
        return {"attaches": self.attaches, "zergs": list(self.zergs.values())}

    def restore(self, state: dict | None) -> None:
        """Take over the attach record the previous image handed over (None: none)."""
        if state is None:
            return
        try:
            zergs = {int(entry["pid"]): entry for entry in state["zergs"]}
            self.attaches, self.zergs = int(state["attaches"]), zergs
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("zerg server %s: attach record from the previous image unreadable (%r): starting afresh",
                         self.addr, exc)

    def close(self) -> None:
        self.sock.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def unique_listeners(listeners: list[sockets.Listener]) -> list[sockets.Listener]:
    """One listener per name, in order, as uWSGI's uwsgi_socket_uniq() passes them."""
    unique: dict[str, sockets.Listener] = {}
    for listener in listeners:
        unique.setdefault(listener.name, listener)
    return list(unique.values())


def send_sockets(conn: socket.socket, listeners: list[sockets.Listener]) -> None:
    """uWSGI's message with every unique listener, then the fd-less protocol extension."""
    unique = unique_listeners(listeners)
    fds = array.array("i", (listener.fileno() for listener in unique))
    conn.sendmsg([MAGIC, _COUNT.pack(len(fds))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    lines = "".join(f"{listener.proto} {sockets.socket_name(listener.sock)}\n" for listener in unique)
    try:
        conn.sendall(EXTENSION + lines.encode("utf-8", "replace"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # a uWSGI client closes after the first 14 bytes


def attach(addr: str, timeout: float = 30.0, allow_uids: list[int] | None = None) -> list[sockets.Listener]:
    """Receive the listening sockets of the zerg server at `addr`, as a uWSGI zerg does."""
    listeners, count = _receive(addr, FIRST_TRY_FDS, timeout, allow_uids)
    if listeners is None:
        listeners, count = _receive(addr, count, timeout, allow_uids)
        if listeners is None:
            raise ZergError(f"zerg server {addr}: still truncated with room for {count} fds")
    return listeners


def _receive(addr: str, room: int, timeout: float,
             allow_uids: list[int] | None) -> tuple[list[sockets.Listener] | None, int]:
    """One attempt: (listeners, count), or (None, advertised count) when the fds did not fit."""
    family, sockaddr = sockets.parse_address(addr)
    if family != socket.AF_UNIX:
        raise ZergError(f"zerg server {addr}: must be a UNIX socket path or @abstract name")
    fds: list[int] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            _, uid, _ = peer_credentials(sock)
            if uid not in trusted_uids(allow_uids):
                raise ZergError(f"zerg server {addr} runs as uid {uid}, which is not trusted")
            data, ancdata, flags, _ = sock.recvmsg(MESSAGE_SIZE, socket.CMSG_SPACE(room * 4),
                                                    socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancdata:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            if len(data) != MESSAGE_SIZE or not data.startswith(MAGIC):
                raise ZergError(f"invalid data received from zerg server {addr}")
            (count,) = _COUNT.unpack_from(data, len(MAGIC))
            if not 0 < count <= MAX_FDS or len(fds) > count:
                raise ZergError(f"zerg server {addr} advertised {count} fds and sent {len(fds)}")
            if flags & socket.MSG_CTRUNC or len(fds) < count:
                if room >= count:
                    raise ZergError(f"zerg server {addr} advertised {count} fds and sent {len(fds)}")
                _close_all(fds)
                return None, count
            protos = _read_extension(sock)
            if protos and len(protos) != len(fds):
                logger.error("zerg server %s: %d protocol lines for %d fds; serving every socket as uwsgi",
                             addr, len(protos), len(fds))
                protos = []
            for fd in fds:
                _check(fd, addr)
            listeners = [_adopt(fd, addr, proto) for fd, proto in zip(fds, protos or ["uwsgi"] * len(fds))]
        except OSError as exc:
            _close_all(fds)
            raise ZergError(f"unable to connect to zerg server {addr}: {exc.strerror or exc}") from None
        except ZergError:
            _close_all(fds)
            raise
    return listeners, count


def _read_extension(sock: socket.socket) -> list[str]:
    """The protocol of each fd, in order, from a zergserve server; empty from uWSGI, which sends
    nothing more."""
    chunks = []
    try:
        sock.settimeout(2.0)
        while data := sock.recv(65536):
            chunks.append(data)
            if sum(map(len, chunks)) > 1 << 20:
                break
    except OSError:
        return []
    raw = b"".join(chunks)
    if not raw.startswith(EXTENSION):
        return []
    protos = []
    for line in raw[len(EXTENSION):].decode("utf-8", "replace").splitlines():
        proto = line.partition(" ")[0]
        protos.append(proto if proto in sockets.PROTOCOLS else "uwsgi")
    return protos


def _check(fd: int, server: str) -> None:
    """Check that a received fd is a listening stream socket before trusting it. No socket object
    keeps the fd: if a later fd fails, _close_all closes each one exactly once."""
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        raise ZergError(f"zerg server {server} sent fd {fd}, which is not a socket")
    sock = socket.socket(fileno=fd)
    try:
        ok = (sock.type == socket.SOCK_STREAM
              and sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
              and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    finally:
        sock.detach()
    if not ok:
        raise ZergError(f"zerg server {server} sent fd {fd}, which is not a listening stream socket")


def _adopt(fd: int, server: str, proto: str) -> sockets.Listener:
    """A listener for an fd that passed _check."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sockets.Listener(sock, sockets.socket_name(sock), proto, origin=f"zerg:{server}")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def attach_all(servers: list[str], fallback: bool, configured: dict[str, str],
               allow_uids: list[int] | None = None) -> list[sockets.Listener]:
    """Attach to every server; a socket whose address a --http/--socket option also gives (in any
    spelling) takes that option's protocol (how a zerg of a real uWSGI server learns which socket
    is HTTP)."""
    protos = {sockets.canonical_name(addr): proto for addr, proto in configured.items()}
    listeners: list[sockets.Listener] = []
    for server in servers:
        try:
            got = attach(server, allow_uids=allow_uids)
        except ZergError as exc:
            if not fallback:
                for listener in listeners:
                    listener.sock.close()
                raise
            logger.error("%s; --zerg-fallback: going on without it", exc)
            continue
        for listener in got:
            listener.proto = protos.get(sockets.canonical_name(listener.name), listener.proto)
            logger.info("zerg socket %s (%s) attached from %s", printable(listener.name), printable(listener.proto),
                        server)
        listeners.extend(got)
    return listeners

