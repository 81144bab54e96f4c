"""Structured logs: JSON lines when not on a terminal (for shipping), readable otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", stream: object = None) -> None:
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if getattr(out, "isatty", lambda: False)():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
