"""The incremental-parser machinery every device codec shares, sans-IO in the h11 sense.

A codec's parser turns bytes into frames and nothing else: it does no I/O, reads no
clock and logs nothing, so the driver (real port), the simulator (pseudo-terminal) and
the tests (plain bytes) all run the very same code and cannot disagree about a byte.
It is also total: whatever bytes come in, only frames and `ProtocolError` instances come
out (returned, not raised), so one corrupt frame never hides the good one behind it and
garbage on the line is counted, never turned into a value.

What is the same for every framing lives here once: the buffer (optionally bounded),
the queue of pending events, the "junk run" that reports stray bytes between frames once
per run whatever the chunking, the "quiet" bytes of a frame already reported as bad,
`feed`, `next_event`, `events`, `reset`, `buffered` and the `close` template. A protocol
subclass says only what differs: where a frame may start and what to make of the bytes
from there (length or terminator, checksum, the frame object, the error messages).

Imports only the standard library and `bmslogger.errors`: codecs may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar, Union

from bmslogger.errors import FramingError, ProtocolError

#: How many bytes of a stray run an error keeps for the hex log.
JUNK_HEAD = 64


class NeedData:
    """Type of `NEED_DATA`; falsy, so ``while event := ...`` style loops read naturally."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __bool__(self) -> bool:
        return False


#: `FrameParser.next_event` returns this when it needs more bytes (h11 style).
NEED_DATA = NeedData()

F = TypeVar("F")

#: What `FrameParser.next_event` returns: a frame, an error, or `NEED_DATA`.
Event = Union[F, ProtocolError, NeedData]


class FrameParser(Generic[F]):
    """Base of an incremental parser: feed any chunks, take frames and errors one by one.

    Why a base class: four codecs had grown the same buffer, junk-run and close logic,
    and each copy is a place for the "verdict depends on chunking" bug to creep back.
    Here it exists once and is tested once (``tests/test_sansio.py``).

    Subclasses implement:

    * `_find_start` (optional): offset of the first byte that may start a frame; the
      default looks for `start_byte`. Bytes before it join the junk run.
    * `_parse_frame`: judge the bytes from a frame start (buffer[0]); return a frame, a
      `ProtocolError`, `NEED_DATA`, or None after consuming bytes to look again.
      Consume with ``del self._buf[:n]`` or `_skip`; set `_quiet` to the number of bytes
      still in the buffer that belong to a frame already reported.
    * `_incomplete`: the error for bytes left when `close` is called (None if they are
      not worth a report).
    * `_reset_state` (optional): forget subclass state on `reset`.

    `max_buffer`: if not None, the oldest bytes beyond it are dropped on `feed` (one
    `FramingError` per overflow), so a caller that never reads cannot grow memory.
    """

    #: The byte a frame starts with, for the default `_find_start`.
    start_byte: int | None = None

    def __init__(self, max_buffer: int | None = None) -> None:
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._pending: list[F | ProtocolError] = []
        # bytes of an already-reported bad frame: skipped without a second report
        self._quiet = 0
        # a run of stray bytes, reported once when the next frame start (or close) comes,
        # so the report does not depend on how the input was chunked
        self._junk = 0
        self._junk_head = b""

    # --- the public, protocol-independent surface -------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes. Beyond `max_buffer` (if set) the oldest are dropped and a
        `FramingError` is queued, so the loss is counted, not silent."""
        self._buf += data
        if self.max_buffer is None:
            return
        excess = len(self._buf) - self.max_buffer
        if excess > 0:
            dropped = bytes(self._buf[:excess])
            del self._buf[:excess]
            self._quiet = max(0, self._quiet - excess)
            self._pending.append(
                FramingError(f"parser buffer full: dropped {excess} unread bytes", dropped)
            )

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form an event."""
        return len(self._buf)

    def reset(self) -> bytes:
        """Forget buffered bytes and queued events (before a new request); returns the
        bytes for logging."""
        left = bytes(self._buf)
        self._buf.clear()
        self._pending.clear()
        self._quiet = 0
        self._junk = 0
        self._junk_head = b""
        self._reset_state()
        return left

    def close(self) -> ProtocolError | None:
        """No more bytes will come (the deadline passed): a buffered partial frame
        becomes an error (never a value), else a pending stray-byte run does; the buffer
        is emptied either way. This is what `bmslogger.conversation` calls."""
        junk = self._take_junk()
        error = self._incomplete(bytes(self._buf)) if self._buf else None
        self.reset()
        return error if error is not None else junk

    def events(self, data: bytes = b"") -> Iterator[F | ProtocolError]:
        """Feed `data`, then yield every event until more bytes are needed."""
        if data:
            self.feed(data)
        while True:
            event = self.next_event()
            if isinstance(event, NeedData):
                return
            yield event

    def next_event(self) -> F | ProtocolError | NeedData:
        """The next frame or error, or `NEED_DATA`."""
        if self._pending:
            return self._pending.pop(0)
        return self._parse()

    # --- the scan loop and its bookkeeping --------------------------------------------

    def _parse(self) -> F | ProtocolError | NeedData:
        """Skip to a frame start (stray bytes join the junk run), report the run once a
        start is reached, then let the subclass judge the frame."""
        buf = self._buf
        while buf:
            start = self._find_start(0)
            if start:
                self._skip(start)
                continue
            junk = self._take_junk()
            if junk is not None:
                return junk
            event = self._parse_frame()
            if event is not None:
                return event
        return NEED_DATA

    def _find_start(self, at: int) -> int:
        """Offset (from `at`) of the first byte that may start a frame; len(buffer) if
        there is none."""
        if self.start_byte is None:
            return at
        found = self._buf.find(self.start_byte, at)
        return len(self._buf) if found < 0 else found

    def _skip(self, n: int) -> None:
        """Drop n bytes; those not part of a frame already reported join the junk run."""
        dropped = bytes(self._buf[:n])
        del self._buf[:n]
        quiet = min(self._quiet, n)
        self._quiet -= quiet
        if n > quiet:
            self._junk += n - quiet
            if len(self._junk_head) < JUNK_HEAD:
                self._junk_head = (self._junk_head + dropped[quiet:])[:JUNK_HEAD]

    def _take_junk(self) -> ProtocolError | None:
        """The pending stray-byte run as one `FramingError` (and forget it), or None."""
        if not self._junk:
            return None
        error = FramingError(f"skipped {self._junk} stray bytes", self._junk_head)
        self._junk = 0
        self._junk_head = b""
        return error

    # --- what a protocol supplies -----------------------------------------------------

    def _parse_frame(self) -> F | ProtocolError | NeedData | None:
        """Judge the bytes from a frame start at buffer[0] (see the class docstring)."""
        raise NotImplementedError

    def _incomplete(self, left: bytes) -> ProtocolError | None:
        """The error for `left`, bytes still buffered at `close` (not empty)."""
        return FramingError(f"incomplete frame: {len(left)} bytes", left[:JUNK_HEAD])

    def _reset_state(self) -> None:
        """Forget subclass state; called by `reset` (and so by `close`)."""
