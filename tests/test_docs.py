"""The docs: --help lists every flag with a typed value, settings.md is generated from the option
table, the mkdocs site builds strictly, and every command in the guides runs."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

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
