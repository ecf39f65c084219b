"""structlog set-up: one JSON object per line on stdout (CloudWatch reads it).

Log calls bind ids (``job_id``, ``email_id``) only; addresses, variables and bodies are
never passed to a logger, so there is nothing to scrub here.
"""

from __future__ import annotations

import logging as std_logging
import sys
from typing import TextIO

import structlog

from delivery_server.settings import Settings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog once, from the settings (called by the CLI at start-up).

    The server logs to stdout (what CloudWatch reads); short commands pass stderr so that
    their own output (``--json``) stays clean."""
    stream = stream or sys.stdout
    fmt = settings.log_format or ("console" if stream.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[settings.log_level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; keep them quiet unless they matter.
    std_logging.basicConfig(level=std_logging.WARNING, stream=sys.stderr)
