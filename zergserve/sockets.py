"""Listening sockets: address parsing, binding, inheritance and accept-queue measurement.

Addresses use uWSGI's spellings so that the same strings work in both servers:

    :3031            every IPv4 interface, port 3031
    127.0.0.1:3031   one IPv4 address
    [::1]:3031       IPv6
    /run/app.sock    UNIX socket (a path: anything without ':' that is not '@...' or 'fd://')
    @name            Linux abstract namespace, stored as '\\0name\\0' like uWSGI so its peers can connect
    fd://3           an already listening, inherited descriptor

systemd socket activation (LISTEN_FDS/LISTEN_PID) is read by `systemd_fds()`; the master binds
everything and workers inherit the descriptors through fork.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import stat
import struct
from typing import Any

PROTOCOLS = ("http", "uwsgi")
SD_LISTEN_FDS_START = 3
_TCP_INFO_UNACKED = struct.Struct("=7B x 6I")  # up to tcpi_unacked; see linux/tcp.h

# What socket.bind() and connect() take: a UNIX path (or '\0'-led abstract name), an IPv4
# (host, port) or an IPv6 (host, port, flowinfo, scope_id).
SockAddr = str | tuple[str, int] | tuple[str, int, int, int]


class AddressError(ValueError):
    """An address string that cannot be parsed or bound."""


class Listener:
    """One listening socket and what it serves."""

    def __init__(self, sock: socket.socket, name: str, proto: str, path: str | None = None,
                 inode: tuple[int, int] | None = None, origin: str = "bound") -> None:
        self.sock = sock
        self.name = name
        self.proto = proto
        self.path = path  # filesystem path of a UNIX socket, for --vacuum
        self.inode = inode  # (st_dev, st_ino) of that path when we bound it
        self.origin = origin  # bound | inherited | systemd | fd | zerg:<server>

    def __repr__(self) -> str:
        return f"Listener({self.name!r}, {self.proto!r}, origin={self.origin!r})"

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def attached(self) -> bool:
        """Received from a zerg server or pool, which still holds it (and its queue)."""
        return self.origin.startswith("zerg:")

    @property
    def is_tcp(self) -> bool:
        return self.sock.family in (socket.AF_INET, socket.AF_INET6)

    def server_name_port(self) -> tuple[str, str]:
        """SERVER_NAME and SERVER_PORT for the WSGI environ."""
        if self.is_tcp:
            host, port = self.sock.getsockname()[:2]
            return host, str(port)
        return self.name, ""


def parse_address(addr: str) -> tuple[socket.AddressFamily, SockAddr]:
    """Turn an address string into (family, sockaddr); raise AddressError if it is malformed."""
    if not addr:
        raise AddressError("empty address")
    if addr.startswith("fd://"):
        raise AddressError(f"{addr}: an fd:// address has no sockaddr")
    if addr.startswith("@"):
        name = addr[1:]
        if not name or len(name) > 102:
            raise AddressError(f"{addr}: invalid abstract socket name")
        return socket.AF_UNIX, "\0" + name + "\0"
    if ":" not in addr or addr.startswith("/") or addr.startswith("."):
        return socket.AF_UNIX, addr
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep:
            raise AddressError(f"{addr}: expected [ipv6]:port")
        family = socket.AF_INET6
    else:
        host, _, port = addr.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        host = host or "0.0.0.0"
    try:
        port_no = int(port)
    except ValueError:
        raise AddressError(f"{addr}: port {port!r} is not a number") from None
    if not 0 <= port_no <= 65535:
        raise AddressError(f"{addr}: port {port_no} out of range")
    if family == socket.AF_INET6:
        return family, (host, port_no, 0, 0)
    return family, (host, port_no)


def is_local(sock: socket.socket) -> bool:
    """Whether only this host can reach the socket: UNIX, or TCP on 127.0.0.0/8 or ::1."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    return is_loopback(sock.getsockname()[0])


def is_loopback(host: str) -> bool:
    """Whether an IP address (as getsockname() gives it) is a loopback one: 127.0.0.0/8, ::1, or
    127.0.0.0/8 mapped into IPv6."""
    packed = packed_address(host)
    return packed[:1] == b"\x7f" if len(packed) == 4 else packed == IPV6_LOOPBACK


def packed_address(host: str) -> bytes:
    """An IP address in binary: IPv4 in 4 bytes (an IPv4-mapped IPv6 address too), IPv6 in 16,
    b'' for anything else; a zone (`%eth0`) is dropped. The socket module's parser: `ipaddress`
    would cost every worker a quarter of a megabyte for these few checks (proxy.py keeps it for
    networks)."""
    host = host.partition("%")[0]
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return b""
    return packed[12:] if packed[:12] == IPV4_MAPPED else packed


IPV4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d
IPV6_LOOPBACK = bytes(15) + b"\x01"


def socket_name(sock: socket.socket) -> str:
    """Render a bound socket's address the way uWSGI names it (used to match zerg sockets)."""
    return _render(sock.family, sock.getsockname())


def canonical_name(addr: str) -> str:
    """The name socket_name() gives a socket bound to `addr`, so that two spellings of one address
    compare equal (':80' and '0.0.0.0:80', '127.0.0.1:80' and 'localhost:80', an fd:// and the
    address it listens on). UNIX paths are made absolute. `addr` itself when it cannot be resolved:
    binding it will then say why."""
    if addr.startswith("fd://"):
        try:
            sock = socket.socket(fileno=_parse_fd(addr))
        except (AddressError, OSError):
            return addr
        try:
            return canonical_name(socket_name(sock))
        except OSError:
            return addr
        finally:
            sock.detach()
    try:
        family, sockaddr = parse_address(addr)
    except AddressError:
        return addr
    if isinstance(sockaddr, str):  # AF_UNIX: a path or an abstract name
        return _render(family, sockaddr) if sockaddr.startswith("\0") else os.path.abspath(sockaddr)
    host = sockaddr[0]
    try:  # an ASCII name as bytes: getaddrinfo() would otherwise load the idna codec, and stringprep with it
        infos = socket.getaddrinfo(host.encode() if host.isascii() else host, sockaddr[1], family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return addr
    return _render(family, infos[0][4]) if infos else addr


def _render(family: int, addr: tuple[Any, ...] | str | bytes) -> str:
    """`addr` as getsockname() gives it: an INET (host, port) or INET6 (host, port, flow, scope)
    tuple, a UNIX path or abstract name (bytes when not UTF-8)."""
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        if family == socket.AF_INET6:
            return f"[{host}]:{port}"
        return f":{port}" if host == "0.0.0.0" else f"{host}:{port}"
    if isinstance(addr, bytes):
        addr = addr.decode("latin-1")
    text = str(addr)
    if text.startswith("\0"):
        return "@" + text[1:].rstrip("\0")
    return text


def bind(addr: str, proto: str, backlog: int = 100, chmod: int | None = None,
         chown: tuple[int, int] | None = None, defer_accept: int = 0) -> Listener:
    """Bind and listen on `addr`; a stale UNIX socket file left by a dead server is replaced.
    `chmod` and `chown` ((uid, gid), -1 keeps one) apply to a UNIX socket's file; `defer_accept`
    to a TCP socket (see set_defer_accept)."""
    if proto not in PROTOCOLS:
        raise AddressError(f"unknown protocol {proto!r}")
    if addr.startswith("fd://"):
        return from_fd(_parse_fd(addr), proto, name=addr, origin="fd")
    family, sockaddr = parse_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        path = None
        if family == socket.AF_UNIX:
            if not str(sockaddr).startswith("\0"):
                path = str(sockaddr)
                remove_stale_unix(path)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        inode = None
        if path is not None:
            if chmod is not None:
                os.chmod(path, chmod)
            if chown is not None:
                try:
                    os.chown(path, *chown)
                except OSError as exc:
                    raise AddressError(f"cannot chown {path} to {chown[0]}:{chown[1]}: {exc.strerror}") from None
            st = os.stat(path)
            inode = (st.st_dev, st.st_ino)
        sock.listen(backlog)
    except AddressError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot bind {addr}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    listener = Listener(sock, addr, proto, path=path, inode=inode)
    set_defer_accept(listener, defer_accept)
    return listener


def defer_accept_seconds(socket_timeout: float, enabled: bool = True) -> int:
    """uWSGI's defer: one --socket-timeout, in whole seconds (--no-defer-accept: none)."""
    return math.ceil(socket_timeout) if enabled else 0


def set_defer_accept(listener: Listener, seconds: int) -> None:
    """Have the kernel hold a TCP connection back from accept() until its first bytes arrive, for up
    to `seconds` (0: accept at once), as uWSGI does on every TCP socket it binds. A worker is then
    never woken for a connection it would only wait on: that costs a failed read and a poll on every
    early accept, and a sync worker's whole self for each client that connects and says nothing."""
    if listener.is_tcp and hasattr(socket, "TCP_DEFER_ACCEPT"):
        listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, seconds)


def from_fd(fd: int, proto: str, name: str | None = None, origin: str = "inherited") -> Listener:
    """Adopt an inherited listening descriptor after checking that it is one.

    It becomes close-on-exec, like every descriptor Python opens: the flag its hand-over needed (from
    the parent, systemd or the previous image) must not leak it into whatever the app execs; a
    re-exec sets it inheritable again just before handing it on."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise AddressError(f"fd {fd}: not a socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise AddressError(f"fd {fd}: not a listening stream socket")
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    return Listener(sock, name or socket_name(sock), proto, origin=origin)


def remember_path(listener: Listener) -> None:
    """Record the file of an adopted UNIX listener so --vacuum can still remove it at exit."""
    if listener.sock.family != socket.AF_UNIX:
        return
    path = listener.sock.getsockname()
    if isinstance(path, bytes) or not path or path.startswith("\0"):
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    listener.path, listener.inode = path, (st.st_dev, st.st_ino)


def systemd_fds(environ: dict[str, str] | None = None) -> list[int]:
    """Descriptors passed by systemd socket activation, if they are meant for this process."""
    env = os.environ if environ is None else environ
    try:
        if int(env.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def queue_length(listener: Listener) -> tuple[int, int]:
    """(connections waiting in the accept queue, its maximum); (0, 0) where the kernel does not say.

    For TCP, Linux reports a listening socket's queue in TCP_INFO: tcpi_unacked is the current
    length and tcpi_sacked the backlog. For UNIX sockets (where uWSGI always reports 0) the kernel
    tells the same through sock_diag, as `ss -xl` shows it: see `_unix_queue`.
    """
    if listener.sock.family == socket.AF_UNIX:
        return _unix_queue(listener.sock)
    try:
        raw = listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        fields = _TCP_INFO_UNACKED.unpack_from(raw)
    except (OSError, struct.error):
        return 0, 0
    return fields[11], fields[12]


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_TCP_LISTEN = 10
_NLMSG = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_NO_COOKIE = 0xFFFFFFFF


def _unix_queue(sock: socket.socket) -> tuple[int, int]:
    """(queued, backlog) of a listening UNIX socket from the kernel's sock_diag (UNIX_DIAG_RQLEN)."""
    try:
        ino = os.fstat(sock.fileno()).st_ino
        request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, ino, _UDIAG_SHOW_RQLEN,
                                      _NO_COOKIE, _NO_COOKIE)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(_NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + request, (0, 0))
            data = nl.recv(65536)
        length, kind = _NLMSG.unpack_from(data)[:2]
        if kind != _SOCK_DIAG_BY_FAMILY:
            return 0, 0
        pos = _NLMSG.size + 16  # after struct unix_diag_msg
        while pos + 4 <= min(length, len(data)):
            size, attr = struct.unpack_from("=HH", data, pos)
            if attr == _UNIX_DIAG_RQLEN:
                queued, backlog = struct.unpack_from("=II", data, pos + 4)
                return queued, backlog
            if size < 4:
                break
            pos += (size + 3) & ~3
    except (OSError, struct.error):
        pass
    return 0, 0


def close_listener(listener: Listener, vacuum: bool = False) -> None:
    """Close the socket; with vacuum, also remove its file if it is still the one we bound."""
    listener.sock.close()
    if vacuum and listener.path and listener.inode:
        try:
            st = os.stat(listener.path)
            if (st.st_dev, st.st_ino) == listener.inode:
                os.unlink(listener.path)
        except OSError:
            pass


def _parse_fd(addr: str) -> int:
    try:
        return int(addr[len("fd://"):])
    except ValueError:
        raise AddressError(f"{addr}: fd:// needs a number") from None


def remove_stale_unix(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to clobber a live server or a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressError(f"cannot bind {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            _check_removable(path, st)
            os.unlink(path)
            return
        raise AddressError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise AddressError(f"cannot bind {path}: another server is listening on it")


def _check_removable(path: str, st: os.stat_result) -> None:
    """Only our own stale socket, in a directory others cannot swap files in (reliability.md §4.1
    rule 1): otherwise another user chooses what we unlink, or replaces it before we bind."""
    if st.st_uid != os.geteuid():
        raise AddressError(f"cannot bind {path}: a stale socket owned by uid {st.st_uid} is in the way, and "
                           f"zergserve removes only its own (uid {os.geteuid()}); remove it by hand")
    parent = os.path.dirname(os.path.abspath(path))
    mode = os.stat(parent).st_mode
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise AddressError(f"cannot bind {path}: not removing the stale socket in {parent}, which anyone may "
                           f"write to (no sticky bit); remove it by hand, or use a directory only you can write")
