"""Logging configured as Flask's documentation shows ("Basic Configuration"), before the app is
created; the stream is sys.stderr here since Flask itself is not installed. No
`disable_existing_loggers: False`: every logger that exists already is disabled."""

from logging.config import dictConfig

dictConfig({
    "version": 1,
    "formatters": {"default": {
        "format": "[%(asctime)s] %(levelname)s in %(module)s: %(message)s",
    }},
    "handlers": {"wsgi": {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "default",
    }},
    "root": {
        "level": "INFO",
        "handlers": ["wsgi"],
    },
})

from logged_routes import application, asgi  # noqa: E402,F401
