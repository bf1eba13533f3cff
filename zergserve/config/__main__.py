"""`python -m zergserve.config > docs/settings.md`: the settings page, generated from the table."""

from zergserve.config.docs import render_markdown

print(render_markdown(), end="")
