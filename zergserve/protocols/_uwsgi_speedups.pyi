"""The types of the optional C accelerator (_uwsgi_speedups.c), which mypy cannot read."""

from _typeshed import ReadableBuffer

def fast_vars(block: ReadableBuffer, max_vars: int, /) -> dict[str, str] | None: ...
