"""One log format for every process, each line with the request id of the exchange it was
written in (``-`` outside a request: jobs, the CLI)."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def _with_request_id() -> None:
    make = logging.getLogRecordFactory()
    if getattr(make, "adds_request_id", False):
        return

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make(*args, **kwargs)
        made.request_id = REQUEST_ID.get()
        return made

    # A mark on the factory, so configuring twice does not wrap it twice; functions declare no
    # such attribute to mypy.
    record.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)


_with_request_id()


def configure_logging(level: str) -> None:
    """The root logger at ``level`` in the one format (once per process)."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
