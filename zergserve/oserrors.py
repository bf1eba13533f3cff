"""The package's OSError subclasses, in a module of their own because mypyc cannot compile a
subclass of OSError: the modules that raise them (vocabulary, pacing) are compiled.

Each is an OSError so that a driver's `except OSError` (the socket failed) takes it as well."""

from __future__ import annotations


class ClientDisconnected(OSError):
    """The client went away (or stalled past the timeout) while the app was reading the body."""


class SendTimeout(TimeoutError):
    """The client took too little of the response for too long: drop the connection."""
