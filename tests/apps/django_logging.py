"""A Django-style LOGGING dict, applied as Django applies it (logging.config.dictConfig at setup),
without `disable_existing_loggers: False`. It also names a "zergserve" logger at CRITICAL, as a
site that wanted the server quiet by the book would: the server's lines do not depend on it."""

import logging.config

LOGGING = {
    "version": 1,
    "formatters": {"verbose": {"format": "{levelname} {asctime} {module} {message}", "style": "{"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "verbose"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "zergserve": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}

logging.config.dictConfig(LOGGING)

from logged_routes import application, asgi  # noqa: E402,F401
