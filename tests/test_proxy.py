"""Trusted proxies (issue 12, item 4): --forwarded-allow-ips on every worker class, real processes.

From a trusted peer X-Forwarded-Proto/-For (or Forwarded) set wsgi.url_scheme and REMOTE_ADDR (the
ASGI scheme and client); from any other peer they change nothing. Over uwsgi, nginx's HTTPS=on
sets the scheme."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import bound, connect, http_request, recv_all
from zergserve import proxy, sockets
from zergserve.protocols.uwsgi import encode_packet

WORKERS = {
    "sync": ("echo:application",),
    "gevent": ("echo:application", "--worker", "gevent"),
    "asyncio": ("asgi_app:application", "--worker", "asyncio"),
}
XFF = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9, 127.0.0.1"}


def seen(addr: str, worker: str, headers: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(scheme, client address) as the app sees them."""
    if worker == "asyncio":
        doc = json.loads(http_request(addr, "GET", "/scope", headers=headers)[2])
        return doc["scheme"], doc["client"][0] if doc["client"] else None
    env = json.loads(http_request(addr, "GET", "/env", headers=headers)[2])
    return env["wsgi.url_scheme"], env.get("REMOTE_ADDR")


@pytest.mark.parametrize("worker", WORKERS)
def test_trusted_unix_peer_by_default(spawn, workdir, worker):
    addr = str(workdir / "h.sock")
    spawn("--module", *WORKERS[worker], "--http", addr, wait=addr)
    assert seen(addr, worker, XFF) == ("https", "203.0.113.9")  # 127.0.0.1: a trusted hop, skipped
    assert seen(addr, worker, {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'}) == ("https", "2001:db8::7")
    assert seen(addr, worker, {"X-Forwarded-For": "[2001:db8::8]:443"}) == ("http", "2001:db8::8")
    assert seen(addr, worker)[0] == "http"


@pytest.mark.parametrize("worker", WORKERS)
def test_untrusted_peer_changes_nothing(spawn, workdir, worker):
    addr = str(workdir / "h.sock")
    spawn("--module", *WORKERS[worker], "--http", addr, "--forwarded-allow-ips", "127.0.0.1,::1", wait=addr)
    scheme, client = seen(addr, worker, XFF)
    assert scheme == "http" and client in ("", None)
    assert seen(addr, worker, {"Forwarded": "for=198.51.100.1;proto=https"})[0] == "http"


@pytest.mark.parametrize("worker", WORKERS)
def test_trusted_networks_over_tcp(spawn, workdir, worker):
    listener = bound()
    addr = listener.addr
    spawn("--module", *WORKERS[worker], "--http", listener.arg, "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.0/8",
          wait=addr)
    # both hops on the right are trusted proxies: the client is the first address left of them
    assert seen(addr, worker, {**XFF, "X-Forwarded-For": "198.51.100.4, 10.1.2.3, 127.0.0.1"}) == \
        ("https", "198.51.100.4")
    assert seen(addr, worker) == ("http", "127.0.0.1")
    spoofed = {"X-Forwarded-For": "1.1.1.1, 198.51.100.4"}  # what the client claimed stays left of its hop
    assert seen(addr, worker, spoofed)[1] == "198.51.100.4"


@pytest.mark.parametrize("worker", WORKERS)
def test_uwsgi_https_var_sets_the_scheme(spawn, workdir, worker):
    addr = str(workdir / "u.sock")
    spawn("--module", *WORKERS[worker], "--socket", addr, wait=addr)
    path = "/scope" if worker == "asyncio" else "/env"
    for https, scheme in (("on", "https"), ("", "http")):
        variables = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
                     "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.5", "REMOTE_PORT": "5000",
                     "SERVER_NAME": "x", "SERVER_PORT": "80", "HTTP_X_FORWARDED_PROTO": "https"}
        if https:
            variables["HTTPS"] = https
        with connect(addr) as sock:
            sock.sendall(encode_packet(variables))
            body = json.loads(recv_all(sock).partition(b"\r\n\r\n")[2])
        got = (body["scheme"], body["client"][0]) if worker == "asyncio" else \
            (body["wsgi.url_scheme"], body["REMOTE_ADDR"])
        assert got == (scheme, "203.0.113.5")  # headers over uwsgi are the client's: never trusted


def test_bad_allow_list_is_a_clear_error(spawn, workdir):
    server = spawn("--module", "echo:application", "--http", str(workdir / "h.sock"),
                   "--forwarded-allow-ips", "127.0.0.1,nginx.local")
    assert server.wait_exit() == 2
    assert "invalid proxy address 'nginx.local'" in server.log()


# --- the address checks, against the ipaddress module they replace ----------------------------

def _oracle(text: str):
    """What ipaddress makes of `text`: the address (an IPv4-mapped one as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


ADDRESS_TEXT = st.one_of(st.ip_addresses().map(str),
                         st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
                         st.ip_addresses(v=6).map(lambda ip: f"{ip}%eth0"),
                         st.text(alphabet="0123456789abcdef.:%fx ", max_size=45))
TRUST = "10.0.0.0/8, 2001:db8::/32, 192.0.2.1, ::1, 127.0.0.0/31"


@settings(max_examples=800, deadline=None)
@given(ADDRESS_TEXT)
def test_address_checks_agree_with_ipaddress(text):
    ip = _oracle(text)
    assert sockets.packed_address(text) == (b"" if ip is None else ip.packed)
    if ip is not None:
        assert sockets.is_loopback(text) == ip.is_loopback
    networks = [ipaddress.ip_network(item.strip()) for item in TRUST.split(",")]
    assert proxy.Trust(TRUST).address(text) == (ip is not None and any(ip in net for net in networks))
