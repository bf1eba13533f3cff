"""Static files before the app: uWSGI's --check-static, --static-map, --static-map2, --static-index,
--static-safe and --static-expires*, as a layer around the loaded WSGI or ASGI app.

A GET or HEAD whose path names a regular file under a mapped directory is answered here; anything
else (another method, no such file) goes on to the app, as in uWSGI. The file's real path (symlinks
and `..` resolved) must stay under the directory it was found through, or under a --static-safe
directory: otherwise the request is refused with 403 and a log line (uWSGI logs and hands it to
the app). A 200 body is `wsgi.file_wrapper`, which the driver sends with os.sendfile where it can.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import time
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from zergserve.config import Config
from zergserve.log import logger, printable
from zergserve.protocols.http import REASONS

_CHUNK = 65536  # read size where a body is not sent with sendfile (ranges, ASGI)
_INLINE = 32768  # smaller bodies are read and written with the head: one write beats head + sendfile
_RANGE = re.compile(rb"bytes=(\d*)-(\d*)\Z")
_FORBIDDEN = b"Forbidden\n"
_PROC = os.path.isdir("/proc/self/fd")  # the kernel's word on an open file's real path


class StaticError(ValueError):
    """A static option cannot be used (an unreadable --mimefile): raised at startup."""


class Mount(NamedTuple):
    """One place to look: `prefix` of the path ('' for --check-static), the directory (or file)
    `root`, and whether the whole path (--static-map2, --check-static) or only what follows the
    prefix (--static-map) is appended to it."""

    prefix: bytes
    root: bytes
    whole_path: bool
    is_file: bool = False  # a map to one file (static-map /favicon.ico=/srv/favicon.ico)


class Expires(NamedTuple):
    """An Expires rule: files whose real path matches `pattern` (or whose type is `mime`) expire
    `seconds` after the request."""

    pattern: re.Pattern[bytes] | None
    mime: str | None
    seconds: int


class Answer(NamedTuple):
    """What the layer sends: status, headers, and either `body` or `length` bytes of `file` from
    `offset` (file is None for a body-less answer or a HEAD)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    file: Any = None
    offset: int = 0
    length: int = 0


class Refused(Exception):
    """The path leaves its mapped directory (or holds a NUL): 403."""


class Files:
    """The configured mounts and the rules for answering from them; shared by both adapters."""

    def __init__(self, check_static: Sequence[str], static_map: Sequence[str], static_map2: Sequence[str],
                 index: Sequence[str] = (), safe: Sequence[str] = (), expires: Sequence[str] = (),
                 expires_type: Sequence[str] = (), mimefile: Sequence[str] = ()) -> None:
        mounts = [(b"", _root(path), True) for path in check_static]
        mounts += [(*_split_map(item), False) for item in static_map]
        mounts += [(*_split_map(item), True) for item in static_map2]
        self.mounts = [Mount(prefix, root, whole, os.path.isfile(root)) for prefix, root, whole in mounts]
        self.index = [os.fsencode(name).strip(b"/") for name in index]
        self.safe = [_root(path) for path in safe]
        self.expires = [_expires_rule(item) for item in expires]
        self.expires += [_expires_type_rule(item) for item in expires_type]
        self.types = mimetypes.MimeTypes()
        for path in mimefile:
            try:
                self.types.read(path)
            except OSError as exc:
                raise StaticError(f"mimefile {path}: {exc.strerror}") from None
        self._types: dict[bytes, bytes] = {}
        for mount in self.mounts:
            if not os.path.exists(mount.root):
                logger.warning("static: %s does not exist (yet): requests for %s go to the app until it does",
                               os.fsdecode(mount.root), os.fsdecode(mount.prefix or b"/"))

    @classmethod
    def from_config(cls, cfg: Config) -> "Files":
        return cls(cfg.check_static, cfg.static_map, cfg.static_map2, cfg.static_index, cfg.static_safe,
                   cfg.static_expires, cfg.static_expires_type, cfg.mimefile)

    def answer(self, method: str, path: bytes, header: Callable[[str], str | None]) -> Answer | None:
        """The answer for a request, or None when it is not for a static file (the app's).
        `path` is the decoded request path as bytes; `header` looks up a request header by its
        lower-case name."""
        if method != "GET" and method != "HEAD":
            return None
        for mount in self.mounts:
            candidate = self._candidate(mount, path)
            if candidate is None:
                continue
            try:
                found = self._open(mount, candidate)
            except Refused as exc:
                logger.warning("static: refused %s: %s", printable(os.fsdecode(path)), exc)
                return Answer(403, [(b"Content-Type", b"text/plain"),
                                    (b"Content-Length", b"%d" % len(_FORBIDDEN))], _FORBIDDEN)
            if found is not None:
                return self._respond(method, header, *found)
        return None

    def _candidate(self, mount: Mount, path: bytes) -> bytes | None:
        """The file system path `path` names under `mount`, or None when the mount does not apply."""
        if mount.prefix:
            if not path.startswith(mount.prefix):
                return None
            rest = path[len(mount.prefix):]
            if rest and rest[:1] != b"/" and mount.prefix[-1:] != b"/":
                return None  # /static does not map /staticfoo
            if not mount.whole_path:
                path = rest
        if mount.is_file:
            return mount.root
        return mount.root + b"/" + path.lstrip(b"/") if path.strip(b"/") else mount.root

    def _open(self, mount: Mount, candidate: bytes) -> tuple[Any, os.stat_result, bytes] | None:
        """The open regular file, its stat and real path; None when there is none (the app's turn).
        A directory is looked up for its --static-index files.

        The path is opened O_PATH first (no I/O, so a device or FIFO out there is never really opened),
        its real path read back from the kernel, checked, and only then opened for reading through that
        same descriptor: what was checked is what is sent, whatever is renamed meanwhile."""
        if b"\0" in candidate:
            raise Refused("NUL in the path")
        try:
            handle = os.open(candidate, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise Refused(exc.strerror) from None
        try:
            st = os.fstat(handle)
            real = self._real(mount, handle, candidate)
            if stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(b"/proc/self/fd/%d" % handle if _PROC else real, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise Refused(f"{os.fsdecode(real)}: {exc.strerror}") from None
                return open(fd, "rb", buffering=0), st, real
        finally:
            os.close(handle)
        if stat.S_ISDIR(st.st_mode):
            for name in self.index:
                found = self._open(mount, real + b"/" + name)
                if found is not None:
                    return found
        return None

    def _real(self, mount: Mount, handle: int, candidate: bytes) -> bytes:
        """The real path of the open `handle` (symlinks and dot segments resolved), if it stays under
        the mount's root or a --static-safe directory."""
        real = os.readlink(b"/proc/self/fd/%d" % handle) if _PROC else os.path.realpath(candidate)
        if _under(real, mount.root) or any(_under(real, safe) for safe in self.safe):
            return real
        raise Refused(f"{os.fsdecode(real)} is not under {os.fsdecode(mount.root)} or a static-safe path")

    def _respond(self, method: str, header: Callable[[str], str | None], file: Any, st: os.stat_result,
                 real: bytes) -> Answer:
        """The answer for an open file: 304, 416, 206 or 200 with the headers of each."""
        mtime = int(st.st_mtime)
        last_modified = _http_date(mtime)
        mime = self._type(real)
        headers = [(b"Last-Modified", last_modified)]
        for rule in self.expires:
            if (rule.mime is not None and rule.mime.encode() == mime) or \
                    (rule.pattern is not None and rule.pattern.search(real)):
                headers.append((b"Expires", _http_date(int(time.time()) + rule.seconds)))
                break
        since = _parse_date(header("if-modified-since"))
        if since is not None and mtime <= since:
            file.close()
            return Answer(304, headers)
        headers.append((b"Content-Type", mime))
        headers.append((b"Accept-Ranges", b"bytes"))
        size = st.st_size
        status, offset, length = 200, 0, size
        wanted = header("range")
        if wanted is not None and _if_range(header("if-range"), mtime):
            span = _parse_range(wanted, size)
            if span == "unsatisfiable":
                file.close()
                return Answer(416, [*headers, (b"Content-Range", b"bytes */%d" % size), (b"Content-Length", b"0")])
            if isinstance(span, tuple):  # else None: the header is ignored
                status, (offset, length) = 206, span
                headers.append((b"Content-Range", b"bytes %d-%d/%d" % (offset, offset + length - 1, size)))
        headers.append((b"Content-Length", b"%d" % length))
        if method == "HEAD" or length <= _INLINE:
            with file:  # a file that shrank since fstat comes short: the server then cuts the connection
                body = os.pread(file.fileno(), length, offset) if method != "HEAD" else b""
            return Answer(status, headers, body)
        return Answer(status, headers, file=file, offset=offset, length=length)

    def _type(self, real: bytes) -> bytes:
        name = real.rpartition(b"/")[2]
        ext = name[name.rfind(b"."):].lower() if name.rfind(b".") > 0 else b""
        found = self._types.get(ext)
        if found is None:
            guess = self.types.types_map[1].get(os.fsdecode(ext)) or self.types.types_map[0].get(os.fsdecode(ext))
            found = (guess or "application/octet-stream").encode("latin-1")
            self._types[ext] = found
        return found


def layer(files: Files, asgi: bool) -> Callable[[Callable], Callable]:
    """The wrapper app.load() applies: the WSGI or the ASGI flavour, as the worker class calls apps."""
    return (lambda app: asgi_app(files, app)) if asgi else (lambda app: wsgi_app(files, app))


# --- the adapters ------------------------------------------------------------------------------

def wsgi_app(files: Files, app: Callable) -> Callable:
    """`app` behind the static files, for the WSGI workers."""
    def static(environ: dict[str, Any], start_response: Callable) -> Any:
        found = files.answer(environ.get("REQUEST_METHOD", "GET"),
                             environ.get("PATH_INFO", "").encode("latin-1", "replace"),
                             lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")))
        if found is None:
            return app(environ, start_response)
        start_response(f"{found.status} {REASONS[found.status]}",
                       [(name.decode("latin-1"), value.decode("latin-1")) for name, value in found.headers])
        if found.file is None:
            return [found.body] if found.body else []
        if found.status == 200:
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                return wrapper(found.file, _CHUNK)
        return _Slice(found.file, found.offset, found.length)
    static.__wrapped__ = app  # type: ignore[attr-defined]  # a function attribute: app.interface() looks through it
    return static


def asgi_app(files: Files, app: Callable) -> Callable:
    """`app` behind the static files, for the asyncio worker (the file is read in chunks)."""
    async def static(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            return await app(scope, receive, send)
        headers = scope.get("headers", ())
        found = files.answer(scope.get("method", "GET"), scope.get("path", "").encode("utf-8", "surrogateescape"),
                             lambda name: _scope_header(headers, name))
        if found is None:
            return await app(scope, receive, send)
        await send({"type": "http.response.start", "status": found.status,
                    "headers": [(name.lower(), value) for name, value in found.headers]})
        if found.file is None:
            await send({"type": "http.response.body", "body": found.body})
            return
        body = _Slice(found.file, found.offset, found.length, 4 * _CHUNK)
        try:
            left = found.length
            for chunk in body:
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            if left > 0:  # the file shrank under us: end the body short, the driver cuts the connection
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            body.close()
    static.__wrapped__ = app  # type: ignore[attr-defined]  # a function attribute: app.interface() looks through it
    return static


class _Slice:
    """`length` bytes of `file` from `offset`, read in chunks (os.pread: the file position is not
    shared state); closes the file when the server closes the body."""

    def __init__(self, file: Any, offset: int, length: int, chunk: int = _CHUNK) -> None:
        self.file, self.offset, self.left, self.chunk = file, offset, length, chunk

    def __iter__(self) -> Iterator[bytes]:
        fd = self.file.fileno()
        while self.left > 0:
            data = os.pread(fd, min(self.chunk, self.left), self.offset)
            if not data:
                return
            self.offset += len(data)
            self.left -= len(data)
            yield data

    def close(self) -> None:
        self.file.close()


# --- helpers -----------------------------------------------------------------------------------

def _scope_header(headers: Any, name: str) -> str | None:
    key = name.encode("latin-1")
    for field, value in headers:
        if field == key:
            return value.decode("latin-1")
    return None


def _root(path: str) -> bytes:
    """A mapped directory as its real path (symlinks in it resolved once, at startup)."""
    return os.path.realpath(os.fsencode(path))


def _split_map(item: str) -> tuple[bytes, bytes]:
    """'/URL=DIR' (checked by config.mount) as (prefix, real root)."""
    prefix, _, path = item.partition("=")
    return os.fsencode(prefix), _root(path)


def _under(real: bytes, root: bytes) -> bool:
    return real == root or real.startswith(root if root.endswith(b"/") else root + b"/")


def _expires_rule(item: str) -> Expires:
    """--static-expires 'REGEXP SECONDS' (checked by config.expires_rule), matched against the real path."""
    pattern, _, seconds = item.strip().rpartition(" ")
    return Expires(re.compile(os.fsencode(pattern.strip())), None, int(seconds))


def _expires_type_rule(item: str) -> Expires:
    """--static-expires-type 'MIMETYPE=SECONDS' (checked by config.expires_type)."""
    mime, _, seconds = item.strip().partition("=")
    return Expires(None, mime, int(seconds))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@lru_cache(maxsize=1024)
def _http_date(seconds: int) -> bytes:
    t = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[t.tm_wday].encode(), t.tm_mday, _MONTHS[t.tm_mon - 1].encode(),
                                                   t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def _parse_date(value: str | None) -> int | None:
    """An HTTP date as epoch seconds; None when absent or unreadable (then it is ignored)."""
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _if_range(value: str | None, mtime: int) -> bool:
    """Honour Range? Without If-Range yes; with a date only if the file has not changed since; an
    entity tag (we send none) never matches."""
    if value is None:
        return True
    since = _parse_date(value)
    return since is not None and mtime <= since


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """(offset, length) of a single byte range, 'unsatisfiable', or None to ignore the header (a
    multi-range or malformed one: the whole file is sent, which RFC 9110 allows)."""
    match = _RANGE.match(value.replace(" ", "").encode("latin-1", "replace"))
    if not match:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = int(last)
        if not suffix or not size:
            return "unsatisfiable"
        return max(0, size - suffix), min(suffix, size)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = min(end, size - 1)
    return start, end - start + 1
