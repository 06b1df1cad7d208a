"""The shared incremental-parser base (`bmslogger.sansio`), tested through a tiny framing.

The line protocol below exists only for these tests: ``$`` + payload + ``*`` + two hex
digits (low byte of the payload's sum) + LF, at most `max_line` bytes before the LF. It
uses every hook a real codec uses (start byte, terminator, checksum, "quiet" bytes of a
rejected frame, the default incomplete-frame message), so the base's buffer, junk-run,
bounded-buffer and close logic is checked once, independent of any device.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger import sansio
from bmslogger.errors import ChecksumError, FramingError, ProtocolError
from bmslogger.sansio import NEED_DATA, FrameParser

HEX = b"0123456789ABCDEFabcdef"


class LineParser(FrameParser[bytes]):
    """``$payload*CS`` LF lines; frames are the payload bytes."""

    start_byte = ord("$")

    def __init__(self, max_buffer: int | None = 4096, max_line: int = 32) -> None:
        super().__init__(max_buffer)
        self.max_line = max_line

    def _parse_frame(self) -> bytes | ProtocolError | sansio.NeedData | None:
        buf = self._buf
        end = buf.find(b"\n", 0, self.max_line + 1)
        if end < 0:
            if len(buf) > self.max_line:
                return self._reject(FramingError, self.max_line + 1, "no line end")
            return NEED_DATA
        line = bytes(buf[:end])
        star = line.rfind(b"*")
        if star < 0 or len(line) - star != 3 or not all(c in HEX for c in line[star + 1:]):
            return self._reject(FramingError, end + 1, "malformed line")
        payload = line[1:star]
        if sum(payload) & 0xFF != int(line[star + 1:], 16):
            return self._reject(ChecksumError, end + 1, "checksum mismatch")
        del buf[:end + 1]
        self._quiet = 0
        return payload

    def _reject(self, kind: type[ProtocolError], size: int, why: str) -> ProtocolError:
        # like the real codecs: move on by one byte (a frame may start inside), and keep
        # the rest of the rejected candidate quiet so it is not reported a second time
        bad = bytes(self._buf[:size])
        del self._buf[:1]
        self._quiet = size - 1
        return kind(why, bad)


def line(payload: bytes) -> bytes:
    return b"$" + payload + b"*%02X\n" % (sum(payload) & 0xFF)


def parse(data: bytes, **kw: int) -> list[object]:
    parser = LineParser(**kw)
    return [*parser.events(data), parser.close()]


def bytewise(data: bytes, **kw: int) -> list[object]:
    parser = LineParser(**kw)
    out: list[object] = []
    for i in range(len(data)):
        out.extend(parser.events(data[i:i + 1]))
    return [*out, parser.close()]


def norm(events: list[object]) -> list[object]:
    """Errors compared by type, message and bytes (exceptions have no value equality)."""
    return [(type(e).__name__, str(e), e.data) if isinstance(e, ProtocolError) else e
            for e in events]


# --- the sentinel -------------------------------------------------------------------------


def test_need_data_is_a_falsy_singleton_with_a_readable_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert not NEED_DATA
    assert isinstance(NEED_DATA, sansio.NeedData)


def test_next_event_on_an_empty_parser_needs_data() -> None:
    parser = LineParser()
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0 and parser.close() is None


def test_plugins_reexport_the_one_sentinel() -> None:
    from bmslogger.plugins.daly import protocol as daly
    from bmslogger.plugins.emus import protocol as emus
    from bmslogger.plugins.pace import protocol as pace
    from bmslogger.plugins.rec import protocol as rec

    for module in (daly, rec, pace, emus):
        assert module.NEED_DATA is NEED_DATA
    for cls in (daly.FrameParser, rec.FrameParser, pace.FrameParser, emus.SentenceParser):
        assert issubclass(cls, FrameParser)


# --- frames and chunking --------------------------------------------------------------------


def test_frames_come_out_in_order() -> None:
    assert parse(line(b"one") + line(b"two")) == [b"one", b"two", None]


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    data = b"xx" + line(b"a") + line(b"bad")[:-2] + b"00\n" + b"$half" + line(b"c") + b"yy"
    whole = norm(parse(data))
    assert norm(bytewise(data)) == whole
    assert whole[0] == ("FramingError", "skipped 2 stray bytes", b"xx")
    assert b"a" in whole and b"c" in whole


def test_next_event_waits_for_the_terminator() -> None:
    parser = LineParser()
    parser.feed(line(b"abc")[:-1])
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == len(line(b"abc")) - 1
    parser.feed(b"\n")
    assert parser.next_event() == b"abc"
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


# --- junk -----------------------------------------------------------------------------------


def test_junk_before_a_frame_is_reported_once_then_the_frame() -> None:
    events = parse(b"noise" + line(b"ok"))
    assert norm(events) == [("FramingError", "skipped 5 stray bytes", b"noise"), b"ok", None]


def test_junk_run_split_over_many_chunks_is_one_report() -> None:
    parser = LineParser()
    for chunk in (b"n", b"oi", b"se"):
        assert list(parser.events(chunk)) == []
    [junk, frame] = parser.events(line(b"ok"))
    assert isinstance(junk, FramingError) and str(junk) == "skipped 5 stray bytes"
    assert junk.data == b"noise" and frame == b"ok"


def test_junk_after_the_last_frame_is_reported_by_close() -> None:
    parser = LineParser()
    assert list(parser.events(line(b"ok") + b"tail")) == [b"ok"]
    error = parser.close()
    assert isinstance(error, FramingError)
    assert str(error) == "skipped 4 stray bytes" and error.data == b"tail"
    assert parser.close() is None


def test_junk_report_keeps_only_the_head_of_a_long_run() -> None:
    [junk, frame, end] = parse(bytes(range(100)).replace(b"$", b"#") + line(b"x"))
    assert isinstance(junk, FramingError) and str(junk) == "skipped 100 stray bytes"
    assert len(junk.data) == sansio.JUNK_HEAD == 64
    assert frame == b"x" and end is None


def test_rest_of_a_rejected_frame_is_not_reported_again() -> None:
    bad = b"$abc*00\n"  # checksum of b"abc" is 0x26
    events = norm(parse(bad + line(b"next")))
    assert events == [("ChecksumError", "checksum mismatch", bad), b"next", None]


def test_frame_starting_inside_a_rejected_one_is_still_found() -> None:
    events = parse(b"$x*ZZ" + line(b"good"))  # one candidate up to the LF: bad checksum
    assert isinstance(events[0], ChecksumError)
    assert b"good" in events


def test_over_long_line_is_rejected_and_parsing_resumes() -> None:
    long = b"$" + b"a" * 40
    events = norm(parse(long + b"\n" + line(b"z"), max_line=16))
    assert events[0] == ("FramingError", "no line end", long[:17])
    assert events[-2:] == [b"z", None]


# --- bounded buffer -------------------------------------------------------------------------


def test_buffer_is_bounded_and_the_overflow_is_reported() -> None:
    parser = LineParser(max_buffer=40)
    data = b"#" * 92 + line(b"end")
    parser.feed(data)
    assert parser.buffered == 40
    first = parser.next_event()
    assert isinstance(first, FramingError)
    assert str(first) == f"parser buffer full: dropped {len(data) - 40} unread bytes"
    assert first.data == data[:len(data) - 40]
    rest = list(parser.events())
    assert rest[-1] == b"end" and all(isinstance(e, FramingError) for e in rest[:-1])


def test_unbounded_buffer_when_max_buffer_is_none() -> None:
    parser = LineParser(max_buffer=None)
    parser.feed(b"#" * 10_000)
    assert parser.buffered == 10_000


# --- close and reset ------------------------------------------------------------------------


def test_close_turns_a_partial_frame_into_an_incomplete_error() -> None:
    parser = LineParser()
    assert list(parser.events(b"$abc")) == []
    error = parser.close()
    assert isinstance(error, FramingError)
    assert str(error) == "incomplete frame: 4 bytes" and error.data == b"$abc"
    assert parser.buffered == 0 and parser.close() is None


def test_close_prefers_the_partial_frame_over_unparsed_junk() -> None:
    parser = LineParser()
    parser.feed(b"zz$ab")  # never parsed: close judges the whole buffer
    error = parser.close()
    assert isinstance(error, FramingError) and error.data == b"zz$ab"


def test_close_does_not_report_quiet_bytes_as_junk() -> None:
    parser = LineParser()
    [err] = parser.events(b"$abc*00\n")
    assert isinstance(err, ChecksumError)
    assert parser.close() is None


def test_reset_returns_buffered_bytes_and_forgets_everything() -> None:
    parser = LineParser(max_buffer=40)
    parser.feed(b"#" * 50)  # queues an overflow error and buffers junk
    assert parser.reset() == b"#" * 40
    assert parser.buffered == 0
    assert parser.next_event() is NEED_DATA
    assert parser.close() is None
    assert list(parser.events(line(b"fresh"))) == [b"fresh"]


def test_base_parse_frame_must_be_implemented() -> None:
    parser: FrameParser[bytes] = FrameParser()
    with pytest.raises(NotImplementedError):
        list(parser.events(b"x"))


# --- hypothesis -----------------------------------------------------------------------------

pieces = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=20).map(line),
    st.sampled_from([b"$", b"\n", b"*", b"*00\n", b"$abc*26\n"]),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_yield_frames_or_protocol_errors(data: bytes) -> None:
    parser = LineParser(max_buffer=64)
    for event in parser.events(data):
        assert isinstance(event, (bytes, ProtocolError))
    end = parser.close()
    assert end is None or isinstance(end, ProtocolError)
    assert parser.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=12))
def test_verdicts_do_not_depend_on_chunking(parts: list[bytes]) -> None:
    data = b"".join(parts)
    whole = norm(parse(data))
    assert norm(bytewise(data)) == whole
    # every whole, well-formed line survives whatever junk surrounds it
    for part in parts:
        payload = part[1:-4]
        plain = b"$" not in payload and b"\n" not in payload
        if part == line(payload) and plain and len(part) <= 33:
            assert payload in whole
