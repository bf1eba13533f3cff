"""The docs: --help lists every flag with a typed value, settings.md is generated from the option
table, the mkdocs site builds strictly, and every command in the guides runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, _answers, free_port, wait_for
from nginx import NGINX

from zergserve import config


def test_help_lists_every_flag_with_a_typed_value():
    text = subprocess.run([sys.executable, "-m", "zergserve", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True).stdout
    for spelled in ("-h, --help", "--version", "--harakiri SECONDS", "--http, --http-socket, --bind ADDR",
                    "-p, --processes, --workers N", "--reload-on-rss MB", "--uid USER", "--pidfile PATH",
                    "--chown-socket USER[:GROUP]", "--ini FILE[:SECTION]", "--emperor-throttle MS",
                    "--unprivileged-binary-patch PATH", "-C, --chmod-socket[=MODE]"):
        assert spelled in text, spelled
    for opt in config.OPTIONS:
        assert f"--{opt.name}" in text, opt.name
        if opt.short:
            assert f"-{opt.short}, --{opt.name}" in text, opt.name
    assert "VALUE\n" not in text.replace("KEY=VALUE\n", ""), "an option still shows a generic VALUE"


# --- the site ------------------------------------------------------------------------------------

def test_site_builds_strictly(tmp_path):
    """CI builds the site: a broken link, a page missing from the nav or a bad config fails here.
    mkdocs is the `docs` extra (.ci/run installs it); its built-in theme fetches nothing."""
    import mkdocs  # noqa: F401 - a missing `docs` extra fails here, not as a skip
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                             str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for page in GUIDES:
        built = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / built).exists(), page.name
    assert (tmp_path / "site" / "settings" / "index.html").exists()
    assert (tmp_path / "site" / "broodlord.png").exists()


def test_every_guide_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in GUIDES:
        assert page.name in nav, page.name


# --- every command in the guides -----------------------------------------------------------------
#
# The guides mark what a test can run:
#   ```sh               a command block: run with bash (-e, -u, pipefail) in the guide's own temporary
#                       directory, in document order; it must exit 0.
#   <!-- file: NAME --> before a fenced block: its text is written to NAME there first (an app, an
#                       ini, an nginx config the commands use).
#   <!-- server: ADDR --> before a ```sh block: a server start; it runs in the background, in its own
#                       session, and the guide goes on once ADDR (HOST:PORT or a socket path) accepts.
#                       Every server is stopped (SIGTERM, then SIGKILL of its process group) when the
#                       guide ends.
# Commands that cannot run here (systemctl, apt-get, installing into /etc, a host other than
# loopback) are in ```console or ```text blocks, which are shown and not run. Every 127.0.0.1:PORT and
# localhost:PORT in the runnable text is mapped onto a free port, so parallel runs do not collide.

GUIDES = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in ("settings.md",))
BLOCK = re.compile(r"(?:<!-- (file|server): (\S+) -->\n)?```(\w*)\n(.*?)\n```", re.S)
PORT = re.compile(r"\b(127\.0\.0\.1|localhost):(\d{4,5})\b")


def steps(page: Path) -> list[tuple[str, str, str]]:
    """(kind, argument, text) of each runnable block: ('file', NAME, text), ('server', ADDR, script),
    ('sh', '', script); other fences are skipped."""
    out = []
    for marker, arg, lang, text in BLOCK.findall(page.read_text()):
        if marker == "file":
            out.append(("file", arg, text + "\n"))
        elif lang == "sh":
            out.append((marker or "sh", arg, text))
    return out


def test_guides_have_commands():
    for page in GUIDES:
        if page.name != "index.md":
            assert any(kind != "file" for kind, _, _ in steps(page)), f"{page.name} runs nothing"


def _map_ports(text: str, ports: dict[str, int]) -> str:
    def sub(match: re.Match) -> str:
        return f"{match.group(1)}:{ports.setdefault(match.group(2), free_port())}"
    return PORT.sub(sub, text)


def _stop(proc: subprocess.Popen) -> None:
    for signum, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the leader left behind
    except ProcessLookupError:
        pass


@pytest.mark.timeout(180)
@pytest.mark.parametrize("page", [p for p in GUIDES if p.name != "index.md"], ids=lambda p: p.stem)
def test_guide_commands_run(page, workdir):
    text = page.read_text()
    if "\nnginx " in text and not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx-light; .ci/run installs it)")
    if "www-data" in text and os.geteuid() != 0:
        pytest.skip("the guide gives a socket to nginx's group and runs nginx's workers as www-data: root only")
    workdir.chmod(0o755)  # nginx's workers (nobody) reach the sockets below when the test is root
    shim = workdir / ".bin"
    shim.mkdir()
    (shim / "zergserve").write_text(f'#!/bin/sh\nexec {sys.executable} -m zergserve "$@"\n')
    (shim / "zergserve").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT),
               PYTHONUNBUFFERED="1")
    ports: dict[str, int] = {}
    servers: list[tuple[subprocess.Popen, Path]] = []
    transcript: list[str] = []

    def logs() -> str:
        return "\n".join(transcript + [f"--- server log {log.name}:\n{log.read_text(errors='replace')[-4000:]}"
                                       for _, log in servers])
    try:
        for kind, arg, text in steps(page):
            text = _map_ports(text, ports)
            if kind == "file":
                (workdir / arg).parent.mkdir(parents=True, exist_ok=True)
                (workdir / arg).write_text(text)
            elif kind == "server":
                addr = _map_ports(arg, ports)
                addr = addr if ":" in addr else str(workdir / addr)
                log = workdir / f".server-{len(servers)}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", text], cwd=workdir, env=env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                servers.append((proc, log))
                transcript.append(f"$ (server) {text}")
                def up() -> bool:
                    assert proc.poll() is None, f"the server exited with {proc.returncode}"
                    return _answers(addr)
                try:
                    wait_for(up, 30, message=f"{addr} accepting")
                except AssertionError as exc:
                    raise AssertionError(f"{page.name}: {exc}\n{logs()}") from None
            else:
                result = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=workdir, env=env,
                                        capture_output=True, text=True, timeout=60)
                transcript.append(f"$ {text}\n{result.stdout}{result.stderr}")
                assert result.returncode == 0, f"{page.name}: exit {result.returncode}\n{logs()}"
    finally:
        for proc, _ in reversed(servers):
            _stop(proc)
