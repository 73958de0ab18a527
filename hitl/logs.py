"""structlog set-up for the worker, starter and tools: JSON unless on a terminal.

Every line is redacted (`hitl.secrets`) before it is written: our events, the SDK's
(temporalio's own loggers, `workflow.logger`, `activity.logger`), anything a library
logs, and the tracebacks of exceptions whose messages may quote a secret.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from hitl.secrets import current_redactor
from hitl.text import visible

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact_event(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog processor: the event dict with the worker's secrets replaced."""
    redactor = current_redactor()
    if not redactor:
        return event_dict
    return {
        # The record and the meta keys are structlog's plumbing, not output.
        key: value if key.startswith("_") else redactor.redact(value)
        for key, value in event_dict.items()
    }


def _redacting(renderer: Any) -> Any:
    """The renderer, with its output redacted too: tracebacks are rendered there."""

    def render(logger: Any, method: str, event_dict: Any) -> Any:
        return current_redactor().redact(renderer(logger, method, event_dict))

    return render


class RedactingFilter(logging.Filter):
    """Redacts a stdlib record's message, arguments and extras in place.

    For records that don't come from structlog (temporalio's loggers, libraries):
    the message is formatted with its arguments first, since a secret can be an
    argument. Installed on our handler by `configure_logging`; attach it to any
    other handler you add.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = current_redactor()
        if not redactor or isinstance(record.msg, dict):
            return True  # structlog's own events: `redact_event` handles them
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what the logger would show
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redactor.redact_text(message)
        record.args = ()
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                record.__dict__[key] = redactor.redact(value)
        return True


def _visible_event(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return {
        key: visible(value, multiline=key == "exception") if isinstance(value, str) else value
        for key, value in event.items()
    }


def configure_logging(level: str | None = None, stream: object = None) -> None:
    """One format for our events and for the SDK's (workflow.logger included)."""
    out = stream or sys.stderr
    json_output = not getattr(out, "isatty", lambda: False)() or os.environ.get("HITL_LOG_JSON")
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # JSON has no traceback renderer of its own: without this an exception shows as
    # the repr of the exc_info tuple.
    tracebacks: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info] if json_output else []
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                # Before rendering, so a secret that JSON would escape is still found.
                redact_event,
                # JSON escapes control characters itself; a terminal needs them made visible,
                # or a file name in a log line could rewrite what an operator sees.
                *([] if json_output else [_visible_event]),
                _redacting(renderer),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("HITL_LOG_LEVEL") or "INFO").upper())
