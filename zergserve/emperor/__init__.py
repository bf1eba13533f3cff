"""The emperor: one vassal process per config file (research/uwsgi-internals.md §3)."""
