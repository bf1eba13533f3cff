"""inotify through ctypes: a descriptor that becomes readable when something changes in the watched
directories (Linux only; elsewhere `fileno()` is -1 and callers poll instead). Used by the
emperor's monitors and by the master's reload-on-change watches."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct


class Inotify:
    """A readable descriptor whenever something changes in the watched directories (Linux only)."""

    MODIFY = 0x2
    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800  # modify attrib close_write moves create delete self
    _EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name

    def __init__(self) -> None:
        self.fd = -1
        libc_name = ctypes.util.find_library("c")
        try:
            self.libc = ctypes.CDLL(libc_name, use_errno=True)
            fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        self.fd = fd if fd >= 0 else -1

    def watch(self, path: str) -> None:
        if self.fd >= 0:
            self.libc.inotify_add_watch(self.fd, os.fsencode(path), self._MASK)

    def fileno(self) -> int:
        return self.fd

    def changes(self) -> list[tuple[int, str]]:
        """(mask, file name) of every queued event, the queue emptied; a name is empty for an
        event of the directory itself (or an overflow)."""
        data = b""
        try:
            while chunk := os.read(self.fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        except OSError:
            return [(0, "")]
        events = []
        offset = 0
        while offset + self._EVENT.size <= len(data):
            _, mask, _, length = self._EVENT.unpack_from(data, offset)
            offset += self._EVENT.size
            events.append((mask, os.fsdecode(data[offset:offset + length].split(b"\0", 1)[0])))
            offset += length
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
