"""Log output: plain text lines (the default), or one JSON object per line for log shippers.

Records logged while a request is handled carry its request id (the `X-Request-Id` the answer
has too), through a context variable the HTTP middleware sets; the access log adds the
request's method, route template, status, duration and client address as fields.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, Literal, TextIO

import msgspec

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sup_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes a record may carry (logging's `extra=`) that become fields of the JSON object.
FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "client_ip")


class RequestIdFilter(logging.Filter):
    """Gives each record the id of the request being handled, if any (unless it names one itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message, fields."""

    def __init__(self) -> None:
        super().__init__()
        self._encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Not str(): a message is whatever a caller passed, and must not break the line or the JSON.
        return self._encode(entry).decode()


def configure(level: str, style: Literal["text", "json"], stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of the process to `stream` (standard error), as text or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
