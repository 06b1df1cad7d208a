"""The request/answer loop every polled-device driver uses: ask once, listen until done.

Protocol-agnostic: the driver brings the request bytes, its codec's incremental parser
and a callback that takes each good frame and says when the answer is complete. This
module brings what every serial driver must get right and should not rewrite:

* stale input (a late answer, leftover frames of a multi-frame reply) is discarded
  before the request goes out, and logged in hex;
* the wait has a deadline computed from the line, never a fixed sleep. The first byte
  must come within the wire time of the request + the device's turnaround + a small
  `first_byte_margin_s`; once bytes flow, the deadline moves on to the wire time of what
  is still missing + `margin_s` (the longest silence tolerated inside an answer), capped
  at three times the wait for the whole answer. So a lost answer costs only the wait for
  its first byte, and a slow but steady one is not cut off. `DeviceConfig.timeout_s`,
  when set, replaces the computed deadline;
* the moment the callback says "complete", the exchange returns: no waiting for silence;
* every `ProtocolError` from the parser or the callback (bad checksum, broken frame,
  stale or unexpected frame) is counted under its ``kind`` in the driver's `Counters`
  and ignored, so no value ever comes from a bad frame and a good frame after it still
  counts;
* an attempt that ends at its deadline is counted (``timeout``) and retried
  (``retry``) up to `DeviceConfig.retries` times; then `NoAnswerError` is raised.

The parser is anything with ``events(data) -> iterable of frames and ProtocolError
instances`` and ``close() -> ProtocolError | None`` (report a partial frame left over when
the deadline passed); `bmslogger.sansio.FrameParser` is the base every codec parser builds on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, Union

from bmslogger.errors import NoAnswerError, ProtocolError
from bmslogger.stats import Counters
from bmslogger.transport import Transport

#: Extra time beyond the computed wait; also the longest silence tolerated between bytes
#: of an answer that has started (Daly units: "inter-byte silence > 100 ms ends a reply").
DEFAULT_MARGIN_S = 0.1


class EventParser(Protocol):
    """What the conversation needs from a codec's parser."""

    def events(self, data: bytes) -> Iterable[Any]:
        """Feed bytes; yield every complete frame and every `ProtocolError` instance."""

    def close(self) -> ProtocolError | None:
        """Forget buffered bytes; return an error describing a partial frame, if any."""


#: Called with each good frame; returns True once the answer is complete. May raise a
#: `ProtocolError` (e.g. `UnexpectedAnswerError` for a stale frame): it is counted and
#: the frame ignored.
FrameHandler = Callable[[Any], bool]

LoggerLike = Union[logging.Logger, logging.LoggerAdapter]


class Conversation:
    """One device's request/answer exchanges on one transport.

    Build one per driver (``Conversation(transport, counters, log, timeout_s=...,
    retries=...)``) and call `exchange` for every request.
    """

    def __init__(
        self,
        transport: Transport,
        counters: Counters,
        log: LoggerLike | None = None,
        timeout_s: float | None = None,
        retries: int = 2,
        margin_s: float = DEFAULT_MARGIN_S,
        turnaround_s: float | None = None,
        first_byte_margin_s: float | None = None,
        late_answer_window_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.counters = counters
        self.log = log if log is not None else logging.getLogger(__name__)
        self.timeout_s = timeout_s
        self.retries = max(0, int(retries))
        self.margin_s = margin_s
        #: a device that may still answer after its deadline (REC when busy) and whose
        #: answers do not say what they answer: after a failed try, input is drained until
        #: this long after that try's request, so the late answer cannot be taken for the
        #: answer to the next request
        self.late_answer_window_s = late_answer_window_s
        self._sent_at = 0.0
        #: slack for the first answer byte beyond request wire time + turnaround
        self.first_byte_margin_s = margin_s if first_byte_margin_s is None else first_byte_margin_s
        # read from the transport when needed: a driver built for a dry run has none
        self._turnaround_s = turnaround_s
        self.clock = clock
        #: bytes received during the last `exchange`, every attempt (0 = total silence)
        self.last_bytes_received = 0
        #: attempts the last `exchange` took
        self.last_attempts = 0

    @property
    def turnaround_s(self) -> float:
        if self._turnaround_s is not None:
            return self._turnaround_s
        return self.transport.settings.turnaround_s

    def deadline_s(self, request_len: int, expect_bytes: int) -> float:
        """Seconds to wait for a whole answer of `expect_bytes` after writing
        `request_len` bytes."""
        if self.timeout_s is not None:
            return self.timeout_s
        wire = self.transport.wire_time
        return wire(request_len) + self.turnaround_s + wire(expect_bytes) + self.margin_s

    def first_byte_s(self, request_len: int) -> float:
        """Seconds to wait for the first answer byte after writing `request_len` bytes."""
        if self.timeout_s is not None:
            return self.timeout_s
        wire = self.transport.wire_time
        return wire(request_len) + self.turnaround_s + wire(1) + self.first_byte_margin_s

    def exchange(
        self,
        request: bytes,
        parser: EventParser,
        on_frame: FrameHandler,
        expect_bytes: int,
        label: str = "",
        retries: int | None = None,
    ) -> None:
        """Send `request` and feed the answer to `on_frame` until it returns True.

        Raises `NoAnswerError` when no attempt completed; `TransportError` if the line
        fails. Frames `on_frame` accepted on an earlier attempt stay accepted (the
        handler keeps its own state), so a retry only has to fill the gaps.
        """
        label = label or request[:4].hex(" ")
        tries = 1 + (self.retries if retries is None else max(0, retries))
        self.last_bytes_received = 0
        for attempt in range(1, tries + 1):
            self.last_attempts = attempt
            if attempt > 1:
                self.counters.count("retry")
            if self._attempt(request, parser, on_frame, expect_bytes, label, attempt):
                return
            self.counters.count(NoAnswerError.kind)
            self._drain_late_answer(label)
        what = "no answer" if not self.last_bytes_received else "no valid answer"
        raise NoAnswerError(f"{label}: {what} after {tries} tries")

    def _attempt(
        self,
        request: bytes,
        parser: EventParser,
        on_frame: FrameHandler,
        expect_bytes: int,
        label: str,
        attempt: int,
    ) -> bool:
        debug = self.log.isEnabledFor(logging.DEBUG)
        stale = self.transport.discard_input()
        if stale:
            self.counters.count("stale_bytes", len(stale))
            self.log.debug("%s: discarded stale %s", label, stale.hex(" "))
        leftover = parser.close()
        if leftover is not None:
            self.log.debug("%s: dropped partial frame %s", label, leftover.data.hex(" "))
        if debug:
            self.log.debug("%s: try %d -> %s", label, attempt, request.hex(" "))
        self.transport.write(request)
        start = self._sent_at = self.clock()
        deadline = start + self.first_byte_s(len(request))
        # a line that never stops chattering must not hold the exchange forever
        hard_deadline = start + 3 * self.deadline_s(len(request), expect_bytes)
        received = 0
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            chunk = self.transport.read(remaining)
            if not chunk:
                continue
            received += len(chunk)
            self.last_bytes_received += len(chunk)
            if debug:
                self.log.debug("%s: <- %s", label, chunk.hex(" "))
            for event in parser.events(chunk):
                if isinstance(event, ProtocolError):
                    self._count_error(label, event)
                    continue
                try:
                    done = on_frame(event)
                except ProtocolError as err:
                    self._count_error(label, err)
                    continue
                if done:
                    self.log.debug(
                        "%s: complete in %.1f ms", label, (self.clock() - start) * 1000
                    )
                    return True
            if self.timeout_s is None:
                # the answer is flowing: allow the rest of it plus the silence margin
                missing = max(0, expect_bytes - received)
                deadline = min(
                    hard_deadline,
                    max(deadline, self.clock() + self.transport.wire_time(missing) + self.margin_s),
                )
        partial = parser.close()
        if partial is not None:
            self._count_error(label, partial)
        self.log.debug("%s: deadline passed on try %d (%d bytes heard)", label, attempt, received)
        return False

    def _drain_late_answer(self, label: str) -> None:
        """Read and drop input until `late_answer_window_s` after the failed request."""
        until = self._sent_at + self.late_answer_window_s
        dropped = 0
        while True:
            remaining = until - self.clock()
            if remaining <= 0:
                break
            dropped += len(self.transport.read(remaining))
        if dropped:
            self.counters.count("stale_bytes", dropped)
            self.log.debug("%s: dropped %d late bytes", label, dropped)

    def _count_error(self, label: str, err: ProtocolError) -> None:
        self.counters.count(err.kind)
        self.log.debug("%s: %s: %s [%s]", label, err.kind, err, err.data.hex(" "))
