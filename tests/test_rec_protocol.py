"""The REC BMS 1Q codec: CRC, requests, number forms, the parser, answers, every instruction.

Worked examples and captured frames come from the protocol reference (rec.md §3-§5); the
parser is fuzzed with hypothesis.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.checksums import crc16_arc
from bmslogger.errors import (
    ChecksumError,
    DeviceReportedError,
    FramingError,
    ProtocolError,
    UnexpectedAnswerError,
)
from bmslogger.plugins.rec import protocol as p
from bmslogger.plugins.rec.instructions import INSTRUCTIONS, LIVE, SETTINGS

CAPA_QUERY = bytes.fromhex("55 01 00 05 43 41 50 41 3F 3B E0 AA")
CAPA_ANSWER = bytes.fromhex("55 00 01 09 34 2E 35 30 30 30 30 65 32 FB B4 AA")
LCD1_QUERY = bytes.fromhex("55 01 00 05 4C 43 44 31 3F 46 D0 AA")
BMIN_SET = bytes.fromhex("55 01 00 09 42 4D 49 4E 20 33 2E 39 34 C1 EA AA")
LCD1_COUNT = bytes.fromhex("55 00 01 02 32 38 8E B4 AA")
CELL_COUNT = bytes.fromhex("55 00 01 01 31 84 91 AA")
#: the 14 cell voltages REC-BMSManager printed for the captured CELL answer
CAPTURED_CELLS = (3.966, 3.9661, 3.9666, 3.9663, 3.967, 3.9635, 3.9644, 3.9577, 3.9648,
                  3.9669, 3.9652, 3.9641, 3.9656, 3.9643)


def parse_all(data: bytes, chunk: int | None = None) -> list:
    parser = p.FrameParser()
    out: list = []
    if chunk is None:
        out.extend(parser.events(data))
    else:
        for i in range(0, len(data), chunk):
            out.extend(parser.events(data[i:i + chunk]))
    left = parser.close()
    if left is not None:
        out.append(left)
    return out


def frames_of(events: list) -> list[p.Frame]:
    return [e for e in events if isinstance(e, p.Frame)]


def answer(name: str, data: bytes, address: int = 1) -> object:
    """Feed `data` through a parser into an Answer for `name`; return its result."""
    ans = p.Answer(INSTRUCTIONS[name], address)
    for event in p.FrameParser().events(data):
        assert isinstance(event, p.Frame), event
        if ans.add(event):
            break
    return ans.result()


# --- CRC ---------------------------------------------------------------------------------------


def test_crc_check_value_and_bitwise_definition():
    assert crc16_arc(b"123456789") == 0xBB3D

    def bitwise(data: bytes) -> int:
        crc = 0
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return crc

    for data in (b"", b"\x01", bytes(range(256)), b"LCD1?" * 7):
        assert p.crc(data) == bitwise(data)


def test_crc_worked_example_register_after_every_byte():
    steps = [(0x01, 0xC0C1), (0x00, 0x9001), (0x05, 0xC391), (0x43, 0x5D43), (0x41, 0xC1DC),
             (0x50, 0xA5C0), (0x41, 0x6065), (0x3F, 0x3BE0)]
    crc = 0
    for byte, register in steps:
        crc = crc16_arc(bytes((byte,)), crc)
        assert crc == register, hex(byte)


# --- captured frames -------------------------------------------------------------------------


def test_capa_query_and_its_captured_answer_450_ah():
    assert p.query("CAPA", 1) == CAPA_QUERY
    assert p.query("capa", 1) == CAPA_QUERY  # names are upper-cased
    [frame] = frames_of(parse_all(CAPA_ANSWER))
    assert (frame.dst, frame.src, frame.payload) == (0, 1, b"4.50000e2")
    assert p.crc(CAPA_ANSWER[1:-3]) == 0xFBB4
    assert answer("CAPA", CAPA_ANSWER) == 450.0


def test_lcd1_query_and_bmin_set_frames():
    assert p.query("LCD1", 1) == LCD1_QUERY
    assert p.set_request("BMIN", "3.94", 1) == BMIN_SET
    assert p.set_request("BMIN", p.format_set_value(3.94), 1) == BMIN_SET


def test_captured_count_frames():
    [lcd1] = frames_of(parse_all(LCD1_COUNT))
    [cell] = frames_of(parse_all(CELL_COUNT))
    assert lcd1.payload == b"28" and cell.payload == b"1"
    assert p.encode(0, "28", 1) == LCD1_COUNT and p.encode(0, "1", 1) == CELL_COUNT


def test_captured_first_cell_float_and_the_printed_values():
    assert round(p.decode_floats(bytes.fromhex("F2 D2 7D 40"))[0], 4) == 3.966
    data = b"".join(struct.pack("<f", v) for v in CAPTURED_CELLS)
    assert data[:4] == bytes.fromhex("F2 D2 7D 40")
    frame2 = p.encode(0, data, 1)
    assert frame2[:4] == bytes.fromhex("55 00 01 38") and len(frame2) == 56 + 7
    units, values = answer("CELL", CELL_COUNT + frame2)
    assert units == 1
    assert tuple(round(v, 4) for v in values) == CAPTURED_CELLS


def test_cell_answer_cut_at_an_aa_inside_the_data_is_incomplete_not_decoded():
    values = list(CAPTURED_CELLS)
    raw = bytearray(struct.pack("<f", values[3]))
    raw[1] = 0xAA  # a float byte equal to the end marker, as in the early REC-BMSManager bug
    values[3] = struct.unpack("<f", bytes(raw))[0]
    full = p.encode(0, p.encode_floats(values), 1)
    cut = full[:full.index(0xAA, 4) + 1]  # what a parser stopping at the first 0xAA takes
    assert len(cut) < len(full)
    events = parse_all(cut)
    assert frames_of(events) == []
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert "incomplete" in str(events[0])
    # whole, the frame is found: the length byte decides, not the first 0xAA
    [frame] = frames_of(parse_all(full))
    assert p.decode_floats(frame.payload)[3] == pytest.approx(values[3])


# --- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [
    ("4.50000e2", 450.0), ("-1.2351e2", -123.51), ("103", 103.0), ("1.03000e2", 103.0),
    ("3.94", 3.94), ("-1.00000e1", -10.0), ("7.81250e-3", 0.0078125), ("0", 0.0),
    ("3.58000e0", 3.58), (" 5.0 ", 5.0), ("2.5E+1", 25.0),
])
def test_numbers_in_both_forms(text, value):
    assert p.parse_number(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["", "nan", "inf", "-inf", "1e", "abc", "3,94", "0x10",
                                  "1e999", "--1", "SET"])
def test_bad_numbers_are_rejected(text):
    with pytest.raises(UnexpectedAnswerError):
        p.parse_number(text)


def test_integers_accept_both_forms_and_must_be_whole():
    assert p.parse_int("103") == 103 and p.parse_int("1.03000e2") == 103
    with pytest.raises(UnexpectedAnswerError):
        p.parse_int("3.5")


@pytest.mark.parametrize("value,text", [(450.0, "4.50000e2"), (3.58, "3.58000e0"),
                                        (-10.0, "-1.00000e1"), (0.0078125, "7.81250e-3"),
                                        (0.0, "0.00000e0")])
def test_bms_float_text(value, text):
    assert p.format_number(value) == text
    assert p.parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("value,integer,text", [
    (3.94, False, "3.94"), (0.0078125, False, "0.0078125"), (-20.0, False, "-20"),
    (0.0003, False, "0.0003"), (-0.0, False, "0"), (103, True, "103"), (450.0, False, "450"),
])
def test_set_values_are_plain_decimals(value, integer, text):
    assert p.format_set_value(value, integer=integer) == text


@pytest.mark.parametrize("value,integer", [(float("nan"), False), (float("inf"), False),
                                           (1e-9, False), (3.5, True)])
def test_set_values_that_cannot_be_written(value, integer):
    with pytest.raises(ValueError):
        p.format_set_value(value, integer=integer)


@pytest.mark.parametrize("bad", ["1e-3", "", "3,94", "nan", "4.2V"])
def test_set_request_refuses_non_plain_values(bad):
    with pytest.raises(ValueError):
        p.set_request("CHAR", bad, 1)


@pytest.mark.parametrize("address", [0, 17, -1])
def test_addresses_outside_1_to_16_are_refused(address):
    with pytest.raises(ValueError):
        p.query("LCD1", address)


@pytest.mark.parametrize("name", ["LCD", "LCD12", "L D1", ""])
def test_bad_instruction_names(name):
    with pytest.raises(ValueError):
        p.query(name, 1)


# --- every instruction round-trips -----------------------------------------------------------


def sample_value(name: str) -> object:
    ins = INSTRUCTIONS[name]
    if name == "LCD1":
        return p.encode_floats([3.955, 3.96, -2.45, 22.5, 55.4, 0.78, 0.97])
    if name == "LCD3":
        return bytes((1, 4, 1, 11, 1, 2, 0x01, 0x05))
    if name == "ERRO":
        return bytes((1, 1, 3, 7))
    if name in ("CELL", "RINT"):
        return tuple(p.f32(3.9 + i / 1000) for i in range(16))
    if name in ("PTEM", "BTEM"):
        return (p.f32(21.5),) if name == "BTEM" else (p.f32(21.5), p.f32(-3.25))
    if ins.shape == "text":
        return "REC BMS 1Q VICTRON" if name == "*IDN" else "2.5"
    if ins.shape == "int":
        return int(ins.max or 1)
    return ins.max if ins.max is not None else 5.001


@pytest.mark.parametrize("name", [i.name for i in LIVE + SETTINGS])
def test_every_instruction_queries_and_decodes(name):
    ins = INSTRUCTIONS[name]
    q = p.query(name, 7)
    assert q[1:4] == bytes((7, 0, 5)) and q[4:9] == name.encode() + b"?"
    value = sample_value(name)
    data = p.answer_frames(7, ins, value)
    assert len(frames_of(parse_all(data))) == (2 if ins.is_array else 1)
    got = answer(name, data, address=7)
    if ins.shape == "block":
        assert got == (ins.block_len, value)
    elif ins.shape in ("floats", "float_count"):
        assert got[1] == value
    elif ins.shape == "float":
        assert got == pytest.approx(value, rel=1e-6)
    else:
        assert got == value and type(got) is type(value)


def test_typed_live_data():
    lcd1 = p.decode_lcd1(sample_value("LCD1"))
    assert lcd1.current_a == pytest.approx(-2.45) and lcd1.soc == pytest.approx(0.78)
    assert lcd1.pack_v == pytest.approx(55.4)
    lcd3 = p.decode_lcd3(sample_value("LCD3"))
    assert (lcd3.min_cell, lcd3.max_cell, lcd3.hottest_sensor, lcd3.ah) == (4, 11, 2, 261)
    err = p.decode_erro(sample_value("ERRO"))
    assert err == p.ErrorState(True, 1, 3, 7)
    with pytest.raises(UnexpectedAnswerError):
        p.decode_lcd1(bytes(27))


# --- answers ------------------------------------------------------------------------------------


def test_lone_count_frame_is_not_an_answer():
    ans = p.Answer(INSTRUCTIONS["CELL"], 1)
    [frame] = frames_of(parse_all(CELL_COUNT))
    assert ans.add(frame) is False and not ans.done
    with pytest.raises(FramingError):
        ans.result()


def test_data_without_count_wrong_count_wrong_length_wrong_source():
    data = p.encode(0, p.encode_floats([3.9] * 4), 1)
    [frame] = frames_of(parse_all(data))
    with pytest.raises(UnexpectedAnswerError):
        p.Answer(INSTRUCTIONS["CELL"], 1).add(frame)
    [count] = frames_of(parse_all(p.encode(0, "8", 1)))
    with pytest.raises(UnexpectedAnswerError):
        p.Answer(INSTRUCTIONS["LCD1"], 1).add(count)  # LCD1 says 28
    ans = p.Answer(INSTRUCTIONS["LCD1"], 1)
    ans.add(frames_of(parse_all(LCD1_COUNT))[0])
    with pytest.raises(UnexpectedAnswerError):
        ans.add(frame)  # 16 bytes, not 28
    # our own request looped back, or another unit's answer
    with pytest.raises(UnexpectedAnswerError):
        p.Answer(INSTRUCTIONS["CAPA"], 1).add(frames_of(parse_all(CAPA_QUERY))[0])
    with pytest.raises(UnexpectedAnswerError):
        p.Answer(INSTRUCTIONS["CAPA"], 2).add(frames_of(parse_all(CAPA_ANSWER))[0])


def test_binary_bytes_are_not_a_single_value():
    [frame] = frames_of(parse_all(p.encode(0, bytes((1, 1, 3, 0)), 1)))
    with pytest.raises(UnexpectedAnswerError):
        p.Answer(INSTRUCTIONS["CAPA"], 1).add(frame)


@pytest.mark.parametrize("text", ["ERROR1", "ERROR 1"])
def test_error_answers_are_device_errors(text):
    err = p.text_answer(1, text)
    with pytest.raises(DeviceReportedError):
        answer("CHAR", err)
    with pytest.raises(DeviceReportedError):
        answer("LCD1", err)


# --- the parser ---------------------------------------------------------------------------------


def test_byte_by_byte_and_any_chunking_give_the_same_frames():
    stream = CAPA_ANSWER + LCD1_COUNT + p.encode(0, p.encode_floats([1.0] * 7), 1)
    for chunk in (None, 1, 2, 3, 5, 7, 11):
        events = parse_all(stream, chunk)
        assert [type(e) for e in events] == [p.Frame] * 3, chunk


def test_garbage_before_between_and_after():
    stream = b"\x00\xff\xaa" + CAPA_ANSWER + b"\x13\x37" + CELL_COUNT + b"\x99"
    for chunk in (None, 1, 4):
        events = parse_all(stream, chunk)
        assert [f.payload for f in frames_of(events)] == [b"4.50000e2", b"1"]
        assert all(isinstance(e, (p.Frame, FramingError)) for e in events)
        assert sum(isinstance(e, FramingError) for e in events) == 3


def test_bad_crc_rejected_and_the_next_good_frame_found():
    bad = bytearray(CAPA_ANSWER)
    bad[6] ^= 0x04  # a value byte: "4.5" would become "4.1"
    for chunk in (None, 1, 3):
        events = parse_all(bytes(bad) + CELL_COUNT, chunk)
        assert frames_of(events) == [p.Frame(0, 1, b"1")]
        assert sum(isinstance(e, ChecksumError) for e in events) == 1


def test_missing_end_marker_is_a_framing_error():
    bad = CAPA_ANSWER[:-1] + b"\xab"
    events = parse_all(bad + CAPA_ANSWER)
    assert len(frames_of(events)) == 1
    assert any(isinstance(e, FramingError) and "end marker" in str(e) for e in events)


def test_truncated_answer_followed_by_the_resent_answer():
    lcd1 = LCD1_COUNT + p.encode(0, p.encode_floats([1.5] * 7), 1)
    stream = lcd1[:20] + lcd1
    for chunk in (None, 1, 6):
        events = parse_all(stream, chunk)
        # the first count frame was whole; its data frame was cut after 11 bytes
        assert [f.payload for f in frames_of(events)] == [
            b"28", b"28", p.encode_floats([1.5] * 7)]
        assert any(isinstance(e, FramingError) and "cut short" in str(e) for e in events)


def test_markers_inside_data_and_crc():
    values = [struct.unpack("<f", bytes((0xAA, 0x55, 0x7D, 0x40)))[0]] * 3
    frame = p.encode(0, p.encode_floats(values), 1)
    assert frame[4:].count(0xAA) >= 3 and frame[4:].count(0x55) >= 3
    for chunk in (None, 1):
        assert frames_of(parse_all(frame + frame, chunk))[1].payload == p.encode_floats(values)


def test_buffer_is_bounded():
    parser = p.FrameParser(max_buffer=600)
    out = list(parser.events(b"\x55\x00\x01\xff" + bytes(700)))
    assert any(isinstance(e, FramingError) for e in out)
    assert parser.buffered <= 600


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_fuzz_random_bytes_only_give_frames_or_protocol_errors(data, cuts):
    parser = p.FrameParser()
    at = 0
    i = 0
    while at < len(data):
        size = cuts[i % len(cuts)]
        for event in parser.events(data[at:at + size]):
            assert isinstance(event, (p.Frame, ProtocolError))
            if isinstance(event, p.Frame):
                assert p.crc(event.raw[1:-3]) == int.from_bytes(event.raw[-3:-1], "big")
        at += size
        i += 1
    left = parser.close()
    assert left is None or isinstance(left, ProtocolError)


_frames = st.builds(lambda dst, src, payload: p.encode(dst, payload, src),
                    st.integers(0, 255), st.integers(0, 255), st.binary(max_size=80))


@settings(max_examples=200, deadline=None)
@given(st.lists(_frames, min_size=1, max_size=6), st.integers(1, 40))
def test_fuzz_valid_frames_in_any_chunking_come_out_whole(frames, chunk):
    stream = b"".join(frames)
    events = parse_all(stream, chunk)
    assert [f.raw for f in frames_of(events)] == frames
    assert len(events) == len(frames)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_frames, st.binary(max_size=12)), max_size=8),
       st.sampled_from([i.name for i in LIVE + SETTINGS]))
def test_fuzz_answers_from_random_frames_only_raise_protocol_errors(parts, name):
    ans = p.Answer(INSTRUCTIONS[name], 1)
    for event in p.FrameParser().events(b"".join(parts)):
        if isinstance(event, ProtocolError):
            continue
        try:
            if ans.add(event):
                break
        except ProtocolError:
            pass
    try:
        ans.result()
    except ProtocolError:
        pass
