"""Logging set-up, and the adapter that puts the device or sink name in every line.

Operators grep logs by device name, so every line about a device starts with
``[name]``. Expected failures are one line each, without traceback; availability changes
are logged once per transition by the runtime, not on every failed poll.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class NamedAdapter(logging.LoggerAdapter):
    """Prefix each message with ``[name]`` (a device or sink)."""

    def __init__(self, logger: logging.Logger, name: str) -> None:
        super().__init__(logger, {"subject": name})
        self.subject = name

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.subject}] {msg}", kwargs


def named_logger(module: str, name: str) -> NamedAdapter:
    """The logger for module `module`, speaking about device or sink `name`."""
    return NamedAdapter(logging.getLogger(module), name)


def setup_logging(level: str = "info", file: str = "") -> None:
    """Log to stderr (or `file`) at `level`; called once by the CLI."""
    handler: logging.Handler
    if file:
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # APScheduler logs every job run at INFO; that is noise for a logger polling every 5 s
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
