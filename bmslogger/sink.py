"""The base every sink extends: write one batch of points, or say why not.

Sinks stay small because the pipeline (`bmslogger.pipeline`) does the hard parts:
queueing, batching, retry with backoff, and keeping data while a sink is down. A sink
only translates a batch into its storage and sorts failures into two kinds:

* `SinkUnavailable`: nothing (or not all) was written and trying later may work
  (connection refused, server overloaded). The pipeline keeps the batch and retries.
* `SinkError`: this batch can never be written (the server rejects its content). The
  pipeline moves it to a dead-letter file and goes on.

A sink must be safe to `close` without `open`, and `write` after a failed `write` must
not duplicate rows it already stored (or must be idempotent, as InfluxDB is).
"""

from __future__ import annotations

from collections.abc import Sequence

from bmslogger.logs import named_logger
from bmslogger.model import Point, SinkConfig


class Sink:
    """Subclass per storage; implement `write`, and `open`/`close` where there is a
    connection or a file to manage."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.options = config.options
        self.log = named_logger(type(self).__module__, config.name)

    def open(self) -> None:
        """Prepare (connect, create folders). May raise `SinkUnavailable`; the pipeline
        then retries opening before the next write."""

    def write(self, points: Sequence[Point]) -> None:
        """Store all of `points`, or raise `SinkUnavailable` / `SinkError`."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was written durable (fsync files, flush client buffers)."""

    def close(self) -> None:
        """Release connections and files. Safe to call without `open`, and twice."""
