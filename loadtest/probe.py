"""What the kernel says about another process's sockets and memory, for the runner and the tests."""

from __future__ import annotations

import os
import socket
import struct


def proc_usage(pid: int, prefix: str) -> dict:
    """Open descriptors, sockets among them and RSS (kB) of a process, from /proc."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = sum(1 for fd in fds if _readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return {}
    return {f"{prefix}_fds": len(fds), f"{prefix}_sockets": sockets, f"{prefix}_rss_kb": rss}


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


_INET_DIAG_REQ = struct.Struct("=BBBBI48s")
_NLMSG = struct.Struct("=IHHII")
_NLMSG_DONE = 3
_TCP_LISTEN = 10


def tcp_backlog(port: int) -> int:
    """Connections waiting in the accept queue of the TCP listener on 127.0.0.1:port, as `ss -ltn`
    shows it (inet_diag's rqueue of a listening socket), whichever process owns it."""
    request = _INET_DIAG_REQ.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN, b"\0" * 48)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_SOCK_DIAG
            nl.settimeout(1.0)
            nl.sendto(_NLMSG.pack(_NLMSG.size + len(request), 20, 0x301, 1, 0) + request, (0, 0))  # dump
            while True:
                data = nl.recv(65536)
                pos = 0
                while pos + _NLMSG.size <= len(data):
                    length, kind = _NLMSG.unpack_from(data, pos)[:2]
                    if kind == _NLMSG_DONE or length < _NLMSG.size:
                        return 0
                    body = pos + _NLMSG.size
                    sport = struct.unpack_from("!H", data, body + 4)[0]
                    if sport == port:
                        return struct.unpack_from("=I", data, body + 56)[0]  # idiag_rqueue
                    pos += (length + 3) & ~3
    except OSError:
        return 0
