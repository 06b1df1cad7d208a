"""The Daly A5 codec: checksums, requests, the incremental parser, every decoder.

Worked examples come from the protocol reference (daly.md §2.3, §7); "captured" frames
are real replies published in public Daly projects (facts only, re-checked here).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.errors import ChecksumError, FramingError, ProtocolError, UnexpectedAnswerError
from bmslogger.plugins.daly import protocol as p

EXAMPLE_REPLY = bytes.fromhex("A5 01 90 08 01 E0 00 00 75 AD 02 FD 40")


def frame_bytes(data_id: int, data: bytes, address: int = 1) -> bytes:
    return p.build_frame(address, data_id, data)


def parse_all(data: bytes, chunk: int | None = None) -> list:
    parser = p.FrameParser()
    if chunk is None:
        out = list(parser.events(data))
    else:
        out = []
        for i in range(0, len(data), chunk):
            out.extend(parser.events(data[i : i + chunk]))
    return out


def frames_of(events: list) -> list[p.Frame]:
    return [e for e in events if isinstance(e, p.Frame)]


# --- checksums and requests -------------------------------------------------------------


def test_checksum_worked_example_request():
    assert p.checksum(bytes.fromhex("A5 40 90 08") + bytes(8)) == 0x7D


def test_checksum_worked_example_reply():
    assert p.checksum(EXAMPLE_REPLY[:12]) == 0x40


@pytest.mark.parametrize("data_id,cs40", [(0x90 + i, 0x7D + i) for i in range(9)])
def test_reference_request_frames_for_both_host_addresses(data_id, cs40):
    assert p.read_request(data_id, 0x40) == bytes.fromhex(f"A5 40 {data_id:02X} 08") + bytes(
        8
    ) + bytes((cs40,))
    assert p.read_request(data_id, 0x80)[-1] == cs40 + 0x40


def test_filler_bytes_request_worked_example():
    assert p.read_request(0x90, 0x40, filler=0xAA) == bytes.fromhex(
        "A5 40 90 08 AA AA AA AA AA AA AA AA CD"
    )


def test_write_request_frames_match_reference():
    assert p.mosfet_request(p.CHARGE_MOSFET, True)[-1] == 0xC8
    assert p.mosfet_request(p.CHARGE_MOSFET, False)[-1] == 0xC7
    assert p.mosfet_request(p.DISCHARGE_MOSFET, True)[-1] == 0xC7
    assert p.mosfet_request(p.DISCHARGE_MOSFET, False)[-1] == 0xC6
    assert p.reset_request() == bytes.fromhex("A5 40 00 08") + bytes(8) + b"\xed"
    assert p.set_soc_request(100.0) == bytes.fromhex("A5 40 21 08 00 00 00 00 00 00 03 E8 F9")


def test_set_soc_with_clock_encodes_user_posted_frame_layout():
    frame = p.set_soc_request(30.0, clock=(22, 12, 13, 21, 29, 39))
    assert frame[4:12] == bytes((22, 12, 13, 21, 29, 39, 0x01, 0x2C))


@pytest.mark.parametrize("soc", [-0.1, 100.1, 150])
def test_set_soc_out_of_range_is_a_value_error(soc):
    with pytest.raises(ValueError):
        p.set_soc_request(soc)


def test_request_address_for_boards():
    assert p.request_address(0x40, 1) == 0x40
    assert p.request_address(0x40, 2) == 0x41
    assert p.request_address(0x40, 16) == 0x4F
    assert p.request_address(0x80, 3) == 0x80
    with pytest.raises(ValueError):
        p.request_address(0x40, 0)


# --- the worked reply ---------------------------------------------------------------------


def test_worked_reply_decodes_to_48v_12_5a_offset_76_5pct():
    [frame] = parse_all(EXAMPLE_REPLY)
    pack = p.decode_pack(frame)
    assert pack.voltage_v == 48.0
    assert pack.acquired_voltage_v == 0.0
    assert pack.current_raw == 30125
    assert pack.current_offset_a == 12.5
    assert pack.soc_pct == 76.5
    # most units send raw above 30000 while discharging; bmslogger's + means charging
    assert pack.current_a() == -12.5
    assert pack.current_a(invert=True) == 12.5


def test_current_is_unsigned_above_32767():
    pack = p.decode_pack(p.Frame(1, p.PACK, bytes.fromhex("01E0 0000 9C40 02FD")))
    assert pack.current_raw == 40000
    assert pack.current_a(invert=True) == 1000.0
    assert (
        p.decode_pack(p.Frame(1, p.PACK, bytes.fromhex("01E0 0000 7530 02FD"))).current_a() == 0.0
    )


# --- the parser ---------------------------------------------------------------------------


def test_parser_byte_by_byte_yields_the_frame_once():
    events = parse_all(EXAMPLE_REPLY, chunk=1)
    assert events == [p.Frame(1, 0x90, EXAMPLE_REPLY[4:12])]


def test_parser_needs_data_until_the_frame_is_whole():
    parser = p.FrameParser()
    parser.feed(EXAMPLE_REPLY[:12])
    assert parser.next_event() is p.NEED_DATA
    parser.feed(EXAMPLE_REPLY[12:])
    assert isinstance(parser.next_event(), p.Frame)
    assert parser.next_event() is p.NEED_DATA


def test_parser_leading_and_trailing_garbage():
    for chunk in (1, 2, 100):
        parser = p.FrameParser()
        stream = b"\x00\x11\x22" + EXAMPLE_REPLY + b"\x0a"
        events = [
            e for i in range(0, len(stream), chunk) for e in parser.events(stream[i : i + chunk])
        ]
        # one report per run of stray bytes, however the bytes were chunked
        assert [type(e) for e in events] == [FramingError, p.Frame]
        assert events[0].data == b"\x00\x11\x22"
        assert events[1] == p.Frame(1, 0x90, EXAMPLE_REPLY[4:12])
        trailing = parser.close()
        assert isinstance(trailing, FramingError) and trailing.data == b"\x0a"


def test_parser_a5_inside_data_is_not_a_start():
    # cell value 0x0CA5 puts A5 in the data, followed by a byte that is not 8
    cells = frame_bytes(p.CELL_VOLTAGES, bytes.fromhex("01 0CA5 0CA5 0CA5 40"))
    events = parse_all(b"\xa5\x01" + cells + cells, chunk=3)
    assert frames_of(events) == [p.Frame(1, p.CELL_VOLTAGES, cells[4:12])] * 2
    assert p.decode_cell_frame(frames_of(events)[0]).millivolts == (0x0CA5,) * 3


def test_parser_bad_checksum_rejected_next_good_frame_found():
    bad = bytearray(EXAMPLE_REPLY)
    bad[8] ^= 0x10
    for chunk in (None, 1, 5):
        events = parse_all(bytes(bad) + EXAMPLE_REPLY, chunk=chunk)
        assert [type(e) for e in events] == [ChecksumError, p.Frame]
        assert events[0].kind == "checksum"
        assert events[0].data == bytes(bad)


def test_parser_truncated_frame_then_good_frame_is_a_framing_error():
    for chunk in (None, 1, 4):
        events = parse_all(EXAMPLE_REPLY[:9] + EXAMPLE_REPLY, chunk=chunk)
        assert [type(e) for e in events] == [FramingError, p.Frame], chunk


def test_parser_real_frame_hidden_inside_a_corrupt_candidate_is_found():
    # a bogus A5 .. 08 header whose 13 bytes swallow the start of a real frame
    junk = bytes.fromhex("A5 00 00 08 00")
    events = parse_all(junk + EXAMPLE_REPLY, chunk=2)
    assert frames_of(events) == [p.Frame(1, 0x90, EXAMPLE_REPLY[4:12])]
    assert all(isinstance(e, ProtocolError) for e in events if not isinstance(e, p.Frame))


def test_parser_close_reports_a_partial_frame():
    parser = p.FrameParser()
    assert list(parser.events(EXAMPLE_REPLY[:7])) == []
    err = parser.close()
    assert isinstance(err, FramingError)
    assert err.data == EXAMPLE_REPLY[:7]
    assert parser.close() is None


def test_parser_buffer_is_bounded():
    parser = p.FrameParser(max_buffer=64)
    # an A5 + 08 header with nothing else keeps the parser waiting for bytes
    for _ in range(40):
        parser.feed(b"\xa5\x01\x90")
    assert parser.buffered <= 64
    assert isinstance(parser.next_event(), FramingError)


def test_parser_stream_of_many_frames_in_one_chunk():
    stream = b"".join(frame_bytes(p.CELL_VOLTAGES, bytes((n,)) + bytes(7)) for n in range(1, 17))
    assert [f.data[0] for f in frames_of(parse_all(stream))] == list(range(1, 17))


# --- hypothesis ---------------------------------------------------------------------------


@st.composite
def chunked(draw, data: bytes):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.data())
def test_random_bytes_only_give_frames_or_protocol_errors(data, draw):
    parser = p.FrameParser(max_buffer=128)
    for chunk in draw.draw(chunked(data)):
        for event in parser.events(chunk):
            assert isinstance(event, (p.Frame, ProtocolError))
            if isinstance(event, p.Frame):
                assert p.checksum(event.raw[:12]) == event.raw[12]
                for decode in (
                    p.decode_pack,
                    p.decode_cell_extremes,
                    p.decode_temp_extremes,
                    p.decode_mosfet,
                    p.decode_status,
                    p.decode_cell_frame,
                    p.decode_temp_frame,
                    p.decode_balancing,
                    p.decode_failures,
                ):
                    try:
                        decode(event)
                    except ProtocolError:
                        pass
    end = parser.close()
    assert end is None or isinstance(end, ProtocolError)


frames_strategy = st.lists(
    st.tuples(st.integers(0, 15), st.sampled_from(p.READ_IDS), st.binary(min_size=8, max_size=8)),
    min_size=1,
    max_size=6,
)
# noise that cannot complete a frame with the next real one: no A5 in it
noise_strategy = st.binary(max_size=20).map(lambda b: b.replace(b"\xa5", b"\x5a"))


@settings(max_examples=300, deadline=None)
@given(frames_strategy, st.lists(noise_strategy, min_size=7, max_size=7), st.data())
def test_valid_frames_embedded_in_noise_are_all_recovered(frames, noises, draw):
    stream = b""
    expected = []
    for (address, data_id, data), noise in zip(frames, noises):
        stream += noise + p.build_frame(address, data_id, data)
        expected.append(p.Frame(address, data_id, data))
    stream += noises[-1]
    parser = p.FrameParser()
    got = []
    for chunk in draw.draw(chunked(stream)):
        got.extend(e for e in parser.events(chunk) if isinstance(e, p.Frame))
    assert got == expected


# --- decoders -----------------------------------------------------------------------------


def test_decoders_reject_the_wrong_data_id():
    with pytest.raises(UnexpectedAnswerError):
        p.decode_mosfet(p.Frame(1, p.PACK, bytes(8)))


def test_captured_0x90_0x91_0x92_0x93_0x94_replies_decode():
    # a 16S unit, one session (mpp-solar test responses)
    pack = p.decode_pack(frames_of(parse_all(bytes.fromhex("a5019008021400007545037889")))[0])
    assert (pack.voltage_v, pack.current_raw, pack.soc_pct) == (53.2, 30021, 88.8)
    ext = p.decode_cell_extremes(
        frames_of(parse_all(bytes.fromhex("a50191080d000f0cfe010378e1")))[0]
    )
    assert ext == p.CellExtremes(3328, 15, 3326, 1)
    temps = p.decode_temp_extremes(
        frames_of(parse_all(bytes.fromhex("a501920837013701fe0103782a")))[0]
    )
    assert temps == p.TempExtremes(15, 1, 15, 1)
    mos = p.decode_mosfet(frames_of(parse_all(bytes.fromhex("a5019308020101780003cb40cb")))[0])
    assert mos == p.MosfetStatus(2, True, True, 0x78, 248640)
    assert mos.state_name == "discharging"
    status = p.decode_status(frames_of(parse_all(bytes.fromhex("a5019408100100000000034096")))[0])
    assert (status.cells, status.sensors, status.cycles) == (16, 1, 3)
    assert not status.charger_connected and not status.load_connected


def test_status_di_do_bits():
    status = p.decode_status(p.Frame(1, p.STATUS, bytes((8, 2, 1, 1, 0b1001_0010, 0, 5, 0))))
    assert status.di == (False, True, False, False)
    assert status.do == (True, False, False, True)
    assert status.charger_connected and status.load_connected
    assert status.cycles == 5


def test_cell_frames_assemble_and_cut_extra_slots():
    frames = {
        n: p.decode_cell_frame(
            p.Frame(
                1,
                p.CELL_VOLTAGES,
                bytes((n,))
                + bytes.fromhex(f"{3300 + 3 * n:04X}{3301 + 3 * n:04X}{3302 + 3 * n:04X}")
                + b"\x40",
            )
        )
        for n in range(1, 7)
    }
    cells = p.assemble_cells(frames, 16)
    assert len(cells) == 16
    assert cells[0] == 3303 and cells[15] == 3318
    with pytest.raises(KeyError):
        p.assemble_cells({1: frames[1]}, 16)
    assert p.cell_frames_needed(16) == 6 and p.cell_frames_needed(3) == 1


@pytest.mark.parametrize("number", [0, 17, 0xFF])
def test_cell_frame_number_out_of_range_is_rejected(number):
    with pytest.raises(UnexpectedAnswerError):
        p.decode_cell_frame(p.Frame(1, p.CELL_VOLTAGES, bytes((number,)) + bytes(7)))


def test_temperature_frames_offset_and_count():
    f1 = p.decode_temp_frame(p.Frame(1, p.TEMPERATURES, bytes((1, 0x37, 0, 0xFF, 40, 41, 42, 43))))
    f2 = p.decode_temp_frame(p.Frame(1, p.TEMPERATURES, bytes((2, 65, 0, 0, 0, 0, 0, 0))))
    assert f1.celsius == (15, -40, 215, 0, 1, 2, 3)
    assert p.assemble_temps({1: f1, 2: f2}, 8) == (15, -40, 215, 0, 1, 2, 3, 25)
    assert p.temp_frames_needed(7) == 1 and p.temp_frames_needed(8) == 2


def test_balancing_bitmap_is_lsb_first():
    assert p.decode_balancing(p.Frame(1, p.BALANCING, bytes((1, 1)) + bytes(6))).cells(16) == tuple(
        n in (1, 9) for n in range(1, 17)
    )
    # 8S capture: 0x90 -> cells 5 and 8
    bal = p.decode_balancing(p.Frame(1, p.BALANCING, bytes((0x90,)) + bytes(7)))
    assert [n for n in range(1, 9) if bal.cell(n)] == [5, 8]
    assert p.decode_balancing(p.Frame(1, p.BALANCING, bytes(5) + b"\x80" + bytes(2))).cell(48)


def test_every_alarm_bit_by_name_and_unknown_bits():
    names = [n for row in p.ALARM_BITS for n in row]
    assert len(names) == 56
    for index, name in enumerate(names):
        fail = p.decode_failures(
            p.Frame(1, p.FAILURES, (1 << index).to_bytes(7, "little") + b"\x00")
        )
        if name is None:
            assert fail.active == ()
            assert fail.unknown == (f"byte {index // 8} bit {index % 8}",)
        else:
            assert fail.active == (name,)
            assert fail.flags[name] is True
            assert sum(fail.flags.values()) == 1
            assert fail.unknown == ()
    assert len(p.ALARM_NAMES) == 48


def test_alarm_capture_byte6_bit4_and_fault_code():
    fail = p.decode_failures(p.Frame(1, p.FAILURES, bytes((0x02, 0, 0x80, 0, 0, 0, 0x10, 7))))
    assert fail.active == ("cell_volt_high_l2", "soc_low_l2")
    assert fail.unknown == ("byte 6 bit 4",)
    assert fail.fault_code == 7
    assert fail.flag("short_circuit_fault") is False


def test_info_decoders():
    rated = p.decode_rated(
        p.Frame(1, p.RATED, (280000).to_bytes(4, "big") + (3200).to_bytes(4, "big"))
    )
    assert rated == p.Rated(280000, 3200)
    info = p.decode_battery_info(p.Frame(1, p.BATTERY_INFO, bytes((1, 0, 23, 5, 17, 0, 0, 0))))
    assert info.production_date == "2023-05-17"
    cells = p.decode_cell_thresholds(
        p.Frame(1, p.CELL_THRESHOLDS, bytes.fromhex("0E42 0EA6 0AF0 09C4"))
    )
    assert cells == p.Thresholds(3.65, 3.75, 2.8, 2.5)
    pack = p.decode_pack_thresholds(
        p.Frame(1, p.PACK_THRESHOLDS, bytes.fromhex("0248 0258 01C0 0190"))
    )
    assert pack == p.Thresholds(58.4, 60.0, 44.8, 40.0)
    cur = p.decode_current_thresholds(
        p.Frame(1, p.CURRENT_THRESHOLDS, bytes.fromhex("7918 79E0 7B0C 7D00"))
    )
    assert cur == p.CurrentThresholds(100.0, 120.0, 150.0, 200.0)
    assert p.decode_delta_thresholds(
        p.Frame(1, p.DELTA_THRESHOLDS, bytes.fromhex("012C 01F4 08 0F 0000"))
    ) == p.DeltaThresholds(300, 500, 8, 15)
    assert p.decode_balance_thresholds(
        p.Frame(1, p.BALANCE_THRESHOLDS, bytes.fromhex("0D48 001E 00000000"))
    ) == p.BalanceThresholds(3400, 30)


def test_text_frames_round_trip_and_capture():
    # one unit returned "DL-BMS-" + "R32-01E" for 0x63
    raw = p.encode_text("DL-BMS-R32-01E", p.HARDWARE_VERSION, 1)
    parts = dict(p.decode_text_frame(f, p.HARDWARE_VERSION) for f in frames_of(parse_all(raw)))
    assert parts[1] == b"DL-BMS-" and parts[2] == b"R32-01E"
    assert p.assemble_text(parts, p.HARDWARE_VERSION) == "DL-BMS-R32-01E"
    code = p.encode_text("ABC", p.BATTERY_CODE, 1)
    assert len(code) == 5 * 13
    parts = dict(p.decode_text_frame(f, p.BATTERY_CODE) for f in frames_of(parse_all(code)))
    assert p.assemble_text(parts, p.BATTERY_CODE) == "ABC"


def test_echo_detection():
    request = p.read_request(0x90, 0x40)
    [echo] = parse_all(request)
    assert p.is_echo(echo, request)
    [answer] = parse_all(EXAMPLE_REPLY)
    assert not p.is_echo(answer, request)
    assert p.is_echo(p.Frame(0x80, 0x90, bytes(8)), request)
