"""Trusted proxies (--forwarded-allow-ips, gunicorn's and uvicorn's name): from those peers only,
X-Forwarded-Proto / X-Forwarded-For, or RFC 7239 `Forwarded` where those are absent, give the
request its scheme and client address, in the WSGI environ and the ASGI scope alike.

The client address is the rightmost one in the chain that is not itself a trusted proxy: each
proxy appends what it saw, so addresses left of the first untrusted hop are whatever the client
claimed. A UNIX socket peer is trusted when the list holds `unix` (the default, as gunicorn: only
local processes allowed by the socket's mode can connect). Over the uwsgi protocol the proxy
passes the client address and nginx's `HTTPS` variable itself (wsgi.uwsgi_environ): no headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zergserve import sockets

if TYPE_CHECKING:
    import ipaddress

    Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Trust:
    """A parsed allow-list: `*`, `unix`, addresses and networks (`10.0.0.0/8`), comma-separated.

    Addresses are compared in binary (an IPv4-mapped IPv6 one as IPv4), parsed by the socket
    module (sockets.packed_address); `ipaddress` is imported only for a list with networks."""

    def __init__(self, spec: str) -> None:
        self.everyone = False
        self.unix = False
        self.exact: set[bytes] = set()
        self.networks: list[Network] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            if item == "*":
                self.everyone = True
            elif item in ("unix", "unix:"):
                self.unix = True
            elif packed := sockets.packed_address(item):
                self.exact.add(packed)
            else:
                import ipaddress
                try:
                    net = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"invalid proxy address {item!r} (an IP, a network like 10.0.0.0/8, "
                                     f"'unix' or '*')") from None
                if net.num_addresses == 1:
                    self.exact.add(sockets.packed_address(str(net.network_address)))
                else:
                    self.networks.append(net)

    def peer(self, peer: Any) -> bool:
        """Whether the connection's peer (accept()'s address; '' for a UNIX socket) is trusted."""
        if self.everyone:
            return True
        if not peer:
            return self.unix
        return self.address(peer[0])

    def address(self, text: str) -> bool:
        if self.everyone:
            return True
        packed = sockets.packed_address(text)
        if not packed:
            return False
        if packed in self.exact:
            return True
        if not self.networks:
            return False
        import ipaddress
        ip = ipaddress.ip_address(packed)
        return any(ip in net for net in self.networks)


DEFAULT = "127.0.0.1,::1,unix"
_trust = Trust(DEFAULT)


def configure(spec: str) -> None:
    """Set the worker's allow-list (at boot, from --forwarded-allow-ips)."""
    global _trust
    _trust = Trust(spec)


def trusted(peer: Any) -> bool:
    """Whether this peer's forwarding headers are believed (the access log's client address)."""
    return _trust.peer(peer)


FORWARDED_KEYS = frozenset(("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED"))  # all it reads


def apply_environ(env: dict[str, Any], peer: Any) -> None:
    """Rewrite wsgi.url_scheme, REMOTE_ADDR and REMOTE_PORT of an HTTP request from a trusted peer."""
    proto, xff, rfc7239 = env.get("HTTP_X_FORWARDED_PROTO"), env.get("HTTP_X_FORWARDED_FOR"), env.get("HTTP_FORWARDED")
    if not (proto or xff or rfc7239) or not _trust.peer(peer):
        return
    scheme, client = forwarded(proto, xff, rfc7239)
    if scheme:
        env["wsgi.url_scheme"] = scheme
    if client:
        env["REMOTE_ADDR"] = client[0]
        if client[1]:
            env["REMOTE_PORT"] = str(client[1])
        else:
            env.pop("REMOTE_PORT", None)


def apply_scope(scope: dict[str, Any], peer: Any) -> dict[str, Any]:
    """The same for an ASGI scope: `scheme` and `client`."""
    fields: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in (b"x-forwarded-proto", b"x-forwarded-for", b"forwarded"):
            text = value.decode("latin-1")
            fields[name] = f"{fields[name]},{text}" if name in fields else text
    if fields and _trust.peer(peer):
        scheme, client = forwarded(fields.get(b"x-forwarded-proto"), fields.get(b"x-forwarded-for"),
                                   fields.get(b"forwarded"))
        if scheme:
            scope["scheme"] = scheme
        if client:
            scope["client"] = client
    return scope


def forwarded(proto: str | None, xff: str | None, rfc7239: str | None) -> tuple[str | None, tuple[str, int] | None]:
    """(scheme, (client address, port or 0)) from a trusted proxy's headers; None where they say nothing."""
    elements = _parse_forwarded(rfc7239) if rfc7239 and not (proto and xff) else []
    if not proto:
        protos = [item["proto"] for item in elements if "proto" in item]
        proto = protos[-1] if protos else None
    scheme = proto.rpartition(",")[2].strip().lower() if proto else None
    if scheme not in ("http", "https"):
        scheme = None
    if xff:
        hops = [_node(hop.strip()) for hop in xff.split(",") if hop.strip()]
    else:
        hops = [_node(item["for"]) for item in elements if "for" in item]
    client = None
    for addr, port in reversed(hops):
        client = (addr, port)
        if not _trust.address(addr):
            break
    return scheme, client


def _parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 elements: `for=1.2.3.4;proto=https, for="[2001:db8::1]:4711"`."""
    elements = []
    for element in value.split(","):
        pairs = {}
        for pair in element.split(";"):
            key, sep, val = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = val.strip().strip('"')
        elements.append(pairs)
    return elements


def _node(value: str) -> tuple[str, int]:
    """A hop: '1.2.3.4', '1.2.3.4:80', '2001:db8::1', '[2001:db8::1]:4711' → (address, port or 0)."""
    if value.startswith("["):
        addr, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        addr, _, port = value.partition(":")
    else:
        addr, port = value, ""
    return addr, int(port) if port.isdigit() else 0
