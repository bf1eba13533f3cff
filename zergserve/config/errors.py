"""What loading the configuration raises instead of returning a Config: a bad configuration (every
error of the run in one message), or a request for the help or the version text."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration: str() names the source (file:line, flag or env var) and the key."""


class HelpRequested(Exception):
    """--help or -h: args[0] is the text to print; the caller prints it and exits 0."""


class VersionRequested(Exception):
    """--version: args[0] is the text to print; the caller prints it and exits 0."""

