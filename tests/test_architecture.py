"""ARCHITECTURE.md's module table is the import rule: every module (Python, or a C extension's .c source)
is listed with its layer, and no module imports a layer above its own."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bound, http_request

LAYERS = ["base", "codec", "adapter", "driver", "worker", "role", "cli"]  # bottom to top


def _table() -> dict[str, str]:
    """module name → layer, from the rows `| \\`zergserve/x.py\\` | layer | … |` (or x.c) of ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| `(zergserve/[\w/]+\.(?:py|c))` \| (\w+) \|", text, re.MULTILINE)
    return {_module(Path(path)): layer for path, layer in rows}


def _module(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """The zergserve modules `path` imports ('from zergserve import x' counts as zergserve.x)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if (ROOT / (candidate.replace(".", "/") + ".py")).exists()
                          or (ROOT / (candidate.replace(".", "/") + ".c")).exists()
                          or (ROOT / candidate.replace(".", "/")).is_dir() else base)
    return {name for name in found if name.startswith("zergserve")}


def _sources() -> dict[str, Path]:
    return {_module(path.relative_to(ROOT)): path for path in sorted((ROOT / "zergserve").rglob("*.py"))}


def _extensions() -> set[str]:
    """The compiled modules, named by their C source."""
    return {_module(path.relative_to(ROOT)) for path in (ROOT / "zergserve").rglob("*.c")}


def test_every_module_is_in_the_table() -> None:
    table = _table()
    assert set(table.values()) <= set(LAYERS), f"unknown layer in ARCHITECTURE.md: {set(table.values()) - set(LAYERS)}"
    modules = set(_sources()) | _extensions()
    missing = sorted(modules - set(table))
    stale = sorted(set(table) - modules)
    assert not missing, f"modules not in ARCHITECTURE.md's table: {missing}"
    assert not stale, f"ARCHITECTURE.md lists modules that no longer exist: {stale}"


def test_imports_point_down() -> None:
    table = _table()
    wrong = []
    for module, path in _sources().items():
        layer = LAYERS.index(table.get(module, "cli"))
        for imported in _imports(path, module):
            target = table.get(imported)
            if target is None and imported.rpartition(".")[0] in table:
                target = table[imported.rpartition(".")[0]]
            if target is not None and LAYERS.index(target) > layer:
                wrong.append(f"{module} ({table.get(module)}) imports {imported} ({target})")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_codecs_import_nothing_of_zergserve() -> None:
    """Nothing but a codec's own compiled accelerator (a .c module of the codec layer)."""
    accelerators = {module for module in _extensions() if _table().get(module) == "codec"}
    for module, path in _sources().items():
        if module.startswith("zergserve.protocols"):
            imported = _imports(path, module) - accelerators
            assert not imported, f"{module} imports {imported}"


def test_the_emperor_never_imports_a_worker_or_the_master() -> None:
    for module, path in _sources().items():
        if module.startswith("zergserve.emperor"):
            bad = {name for name in _imports(path, module)
                   if name.startswith(("zergserve.workers", "zergserve.master", "zergserve.connection"))}
            assert not bad, f"{module} imports {bad}"


def _master_uses(path: Path) -> set[str]:
    """The attributes `path` reads off the master: `master.x` and `self.master.x`."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        holder = node.value
        if (isinstance(holder, ast.Name) and holder.id == "master"
                or isinstance(holder, ast.Attribute) and holder.attr == "master"):
            used.add(node.attr)
    return used


def test_plugins_use_only_the_plugin_interface() -> None:
    """Every module that takes the master as a `plugin.Host` uses nothing of it but Host's members:
    the master's attributes stay its own."""
    from zergserve.plugin import Host
    members = {name for name in dir(Host) if not name.startswith("_")}
    plugins = {module: path for module, path in _sources().items() if "zergserve.plugin" in _imports(path, module)}
    assert {"zergserve.cheaper", "zergserve.elastic", "zergserve.emperor.vassal_link"} <= set(plugins)
    beyond = {module: sorted(_master_uses(path) - members) for module, path in plugins.items()}
    assert not any(beyond.values()), f"plugins reaching past plugin.Host: {beyond}"


def test_a_sync_worker_imports_nothing_it_does_not_use(spawn) -> None:
    """What a serving sync worker's process has loaded leaves out the libraries only other roles,
    worker classes or error paths need: each costs every worker resident memory (asyncio and ssl
    about 2 MB; the reload check's http.client and email; inspect, which dataclasses imports;
    logging, which setproctitle's package imports; traceback with linecache and tokenize;
    ipaddress, json, random, urllib.parse, and the idna codec that getaddrinfo loads for a str
    host, together about 1.4 MB; threading, which only the gthread worker needs, 0.2 MB). What the interpreter had loaded before zergserve ran (a .pth
    file's imports) is not counted."""
    listener = bound()
    spawn("--module", "modules:application", "--http", listener.arg, wait=listener.addr)
    loaded = set(http_request(listener.addr, "GET", "/")[2].decode().split())
    before = set(subprocess.run([sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
                                capture_output=True, text=True, check=True).stdout.split())
    heavy = {"asyncio", "ssl", "http.client", "email", "inspect", "dataclasses", "uvloop", "gevent", "logging",
             "traceback", "linecache", "ipaddress", "json", "random", "urllib.parse", "encodings.idna",
             "threading"}
    assert "modules" in loaded and "zergserve.workers.sync" in loaded
    extra = (heavy & loaded) - before
    assert not extra, f"loaded by every sync worker: {sorted(extra)}"


def test_mypy_reports_no_error(tmp_path: Path) -> None:
    """The package type-checks clean under pyproject.toml's [tool.mypy], so its annotations can be
    trusted; an ignore stays only where the code is dynamic, with its code and reason."""
    pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra: pip install 'zergserve[test]')")
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "mypy_cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0 and "no issues found" in done.stdout, done.stdout + done.stderr
