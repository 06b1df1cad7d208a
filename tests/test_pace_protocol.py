"""The PACE codec: both checksums, frames, the incremental parser, the per-pack length
solver and every decoder.

Worked examples come from the protocol reference (pace.md §3, §4, §5, §15); "captured"
frames are real replies published with public PACE projects (facts only, re-checked here
by the codec's own checksums). Multi-pack replies are built here by hand, byte by byte,
independently of the simulator.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.checksums import ydt1363_chksum, ydt1363_lchksum
from bmslogger.errors import (
    ChecksumError,
    DeviceReportedError,
    FramingError,
    ProtocolError,
    UnexpectedAnswerError,
)
from bmslogger.plugins.pace import protocol as p

ANALOG_PACK1 = (
    b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC60CC706"
    b"0B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4\r"
)
STATUS_PACK1 = (
    b"~25014600004C000110000000000000000000000000000000000600000000000000000000000E000000"
    b"000000EF3A\r"
)
VERSION_REPLY = b"~25014600602850313653313030412D313831322D312E30302000F58E\r"
PACK_COUNT_REPLY = b"~25014600E00202FD35\r"
CAPACITY_REPLY = b"~25004600400C183C286A2710FB0E\r"
GENERIC_OK = b"~250046000000FDAF\r"
RTN09_REPLY = b"~25004609E00204FD2B\r"
CONTROL_REPLY = b"~25004600C0040D01FCC3\r"


def one(frame: bytes) -> p.Frame:
    events = list(p.FrameParser().events(frame))
    assert len(events) == 1 and isinstance(events[0], p.Frame), events
    return events[0]


# --- checksums ------------------------------------------------------------------------------


def test_chksum_worked_example_1_document_body():
    assert sum(b"1203400356ABCEFE") == 910
    assert ydt1363_chksum(b"1203400356ABCEFE") == 0xFC72


def test_chksum_worked_examples_2_and_3_requests():
    assert ydt1363_chksum(b"25014642E00201") == 0xFD30
    assert p.pack_request(p.ANALOG, 1, adr=1) == b"~25014642E00201FD30\r"
    assert ydt1363_chksum(b"250146C10000") == 0xFD9A
    assert p.request(p.VERSION, adr=1) == b"~250146C10000FD9A\r"


def test_chksum_wraps_and_is_zero_padded():
    assert ydt1363_chksum(b"\xff" * 257) == 0x0001  # sum 65535 wraps
    assert ydt1363_chksum(b"\x00" * 3) == 0  # a multiple of 65536 gives 0000
    # find a real frame whose checksum is below 0x1000: it must still be four digits
    for n in range(1, 2000):
        frame = p.build_frame(0x00, b"\xff" * n)
        if frame[-5:-1].startswith(b"0"):
            assert one(frame).info == b"\xff" * n
            break
    else:  # pragma: no cover - the sweep always finds one
        pytest.fail("no checksum below 0x1000 found")


@pytest.mark.parametrize("lenid,lchk,field", [
    (0x000, 0x0, "0000"), (0x002, 0xE, "E002"), (0x012, 0xD, "D012"), (0x028, 0x6, "6028"),
    (0x04C, 0x0, "004C"), (0x050, 0xB, "B050"), (0x07A, 0xF, "F07A"), (0x096, 0x1, "1096"),
    (0x0F4, 0xD, "D0F4"), (0x128, 0x5, "5128"), (0x402, 0xA, "A402"),
    (0x5B8, 0x8, "85B8"),
])
def test_lchksum_table(lenid, lchk, field):
    assert ydt1363_lchksum(lenid) == lchk
    assert f"{p.length_field(lenid):04X}" == field


def test_lchksum_rejects_more_than_12_bits():
    with pytest.raises(ValueError):
        ydt1363_lchksum(0x1000)


# --- known-good frames (§15) ------------------------------------------------------------------


@pytest.mark.parametrize("built,wire", [
    (p.pack_request(p.ANALOG, p.ALL_PACKS, adr=0), b"~25004642E002FFFD06\r"),
    (p.pack_request(p.ANALOG, 1, adr=1), b"~25014642E00201FD30\r"),
    (p.pack_request(p.STATUS, 1, adr=1), b"~25014644E00201FD2E\r"),
    (p.pack_request(p.ANALOG, p.ALL_PACKS, adr=1), b"~25014642E002FFFD05\r"),
    (p.pack_request(p.STATUS, p.ALL_PACKS, adr=1), b"~25014644E002FFFD03\r"),
    (p.pack_request(p.ANALOG, p.ALL_PACKS, adr=0xFF), b"~25FF4642E002FFFCDA\r"),
    (p.request(p.VERSION, adr=1), b"~250146C10000FD9A\r"),
    (p.request(p.PACK_COUNT, adr=0), b"~250046900000FDA6\r"),
    (p.request(p.CAPACITY, adr=0), b"~250046A60000FD98\r"),
    (p.request(0xEB, adr=0), b"~250046EB0000FD88\r"),
    (p.request(0x90, adr=0x0B), b"~250B46900000FD94\r"),
    (p.request(0x9B, b"\x01", adr=0), b"~2500469BE00201FD1C\r"),
    (p.build_frame(0x00, adr=0), GENERIC_OK),
])
def test_reference_frames_are_built_byte_for_byte(built, wire):
    assert built == wire
    assert one(wire).raw == wire


def test_captured_analog_reply_decodes_to_its_values():
    frame = one(ANALOG_PACK1)
    assert (frame.ver, frame.adr, frame.cid1, frame.rtn) == (0x25, 0x01, 0x46, 0x00)
    reply = p.decode_analog(frame.info, command=1)
    assert reply.infoflag == 0 and reply.echo == 1 and reply.tail_bytes == 6
    [pack] = reply.packs
    assert pack.cells_mv == (3271, 3272, 3271, 3271, 3271, 3269, 3270, 3271, 3271, 3270, 3271,
                             3270, 3270, 3271, 3270, 3271)
    assert pack.temperatures_c() == (24.1, 23.9, 23.9, 23.9, 26.5, 27.4)
    assert p.current_a(pack.current_raw) == -2.25
    assert pack.voltage_mv == 52429
    assert pack.remaining_10mah == 4819 and pack.full_10mah == 10346
    assert pack.cycles == 140 and pack.design_10mah == 10000
    assert pack.p_value == 3 and pack.layout == "classic" and not pack.offline
    assert pack.soc_pct is None and pack.soh_pct is None


def test_captured_status_reply_decodes():
    reply = p.decode_status(one(STATUS_PACK1).info, command=1)
    [pack] = reply.packs
    assert pack.cells == 16 and pack.sensors == 6 and reply.extra_bytes == 0
    assert pack.indicator == 0x0E
    assert pack.status["charge_fet_on"] and pack.status["discharge_fet_on"]
    assert pack.status["pack_supplying"] and not pack.status["ac_in"]
    assert not any(pack.alarms.values())
    assert pack.balance_bits == 0


def test_captured_identity_count_capacity_and_control_replies():
    assert p.decode_version(one(VERSION_REPLY).info) == p.Version("P16S100A-1812-1.00")
    assert p.decode_pack_count(one(PACK_COUNT_REPLY).info) == 2
    cap = p.decode_capacity(one(CAPACITY_REPLY).info)
    assert (cap.remaining_10mah, cap.full_10mah, cap.design_10mah) == (6204, 10346, 10000)
    ok = one(GENERIC_OK)
    assert ok.info == b"" and p.check_rtn(ok) is ok
    assert one(CONTROL_REPLY).info == bytes((0x0D, 0x01))


def test_error_rtn_becomes_a_clear_device_error():
    frame = one(RTN09_REPLY)
    assert frame.rtn == 0x09 and frame.info == b"\x04"  # an error reply may carry INFO
    with pytest.raises(DeviceReportedError, match=r"RTN 0x09 \(operation or write error\)"):
        p.check_rtn(frame, "0x9B discharge FET")
    with pytest.raises(DeviceReportedError, match="not supported"):
        p.check_rtn(p.decode_frame(p.build_frame(0x04)))


def test_temperature_and_current_encodings():
    assert p.temperature_c(2985) == 25.5
    assert p.temperature_c(2606) == -12.4
    assert p.temperature_c(0x0BB7) == 26.9  # the 2018 document's example
    assert p.temperature_c(0x0BBD) == 27.5  # 3005, which that document misprints as 2994
    assert p.temperature_c(0x0AAA) == 0.0
    assert p.temperature_c(p.TEMP_ABSENT) is None
    assert p.temperature_c(2985, offset=2731) == 25.4
    assert p.current_a(0xFFFF) == -0.01  # bmspace's formula gives 0.00 here
    assert p.current_a(0x8000) == -327.68
    assert p.current_a(0x7FFF) == 327.67
    assert p.current_a(0x03E8) == 10.0


def test_strings_are_trimmed_of_spaces_and_nul():
    assert p.decode_product(b"SN123".ljust(19, b" ") + b"\0" + b"2024-01-05".ljust(20, b"\0")
                            ) == p.Product("SN123", "2024-01-05")
    assert p.decode_version(b"V1".ljust(20) + b"BT-NAME".ljust(20, b"\0")) == p.Version(
        "V1", "BT-NAME")
    assert p.decode_datetime(bytes.fromhex("180815051D1F")) == "2024-08-21 05:29:31"
    for bad, decode in ((b"x" * 19, p.decode_version), (b"\x02\x03", p.decode_pack_count),
                        (b"\x00", p.decode_pack_count), (bytes(6), p.decode_datetime),
                        (bytes(5), p.decode_capacity)):
        with pytest.raises(UnexpectedAnswerError):
            decode(bad)


# --- multi-pack records, built by hand --------------------------------------------------------


def analog_record(cells, temps, current=-225, voltage=52000, remaining=5000, p_value=3,
                  tail=b""):
    out = bytes((len(cells),)) + b"".join(v.to_bytes(2, "big") for v in cells)
    out += bytes((len(temps),)) + b"".join(t.to_bytes(2, "big") for t in temps)
    out += (current & 0xFFFF).to_bytes(2, "big") + voltage.to_bytes(2, "big")
    return out + remaining.to_bytes(2, "big") + bytes((p_value,)) + tail


CLASSIC_TAIL = bytes.fromhex("2710 0064 2710")  # full 100 Ah, 100 cycles, design 100 Ah
TAILS = {
    "pylon": bytes.fromhex("2710 0064"),
    "classic": CLASSIC_TAIL,
    "soc": CLASSIC_TAIL + bytes((16,)),  # SOC 16 % on a 16-cell pack: bmspace's blind spot
    "enersol": CLASSIC_TAIL + bytes.fromhex("10 00002710 00002710 64"),
    "extended": CLASSIC_TAIL + bytes.fromhex("10 00002710 00002710 5F CB20 FF1F"),
    "extended_summary": CLASSIC_TAIL + bytes.fromhex(
        "10 00002710 00002710 5F CB20 FF1F 00001388 00002710"),
}


@pytest.mark.parametrize("layout", list(TAILS))
@pytest.mark.parametrize("packs", [1, 2, 3, 10])
def test_every_layout_solves_for_any_pack_count(layout, packs):
    cells = [3300 + i for i in range(16)]
    records = [analog_record(cells, [2980 + n] * 6, remaining=4000 + n, tail=TAILS[layout])
               for n in range(packs)]
    info = bytes((0, packs)) + b"".join(records)
    reply = p.decode_analog(info)
    assert reply.tail_bytes == len(TAILS[layout])
    assert [r.remaining_10mah for r in reply.packs] == [4000 + n for n in range(packs)]
    for n, rec in enumerate(reply.packs):
        assert rec.layout == layout and rec.cells_mv == tuple(cells)
        assert rec.temps_raw == (2980 + n,) * 6
        assert rec.full_10mah == 10000 and rec.cycles == 100
    first = reply.packs[0]
    if layout == "pylon":
        assert first.design_10mah is None
    else:
        assert first.design_10mah == 10000
    if layout in ("soc", "extended", "extended_summary"):
        assert first.soc_pct == 16
    if layout.startswith("extended"):
        assert first.soh_pct == 95 and first.independent_voltage_mv == 0xCB20
        assert p.current_a(first.independent_current_raw) == -2.25
        assert first.cumulative_charge == first.cumulative_discharge == 10000
    if layout == "extended_summary":
        assert (first.summary_remaining_10mah, first.summary_full_10mah) == (5000, 10000)
    if layout == "enersol":
        assert first.extra == bytes.fromhex("10 00002710 00002710 64")


def test_mixed_cell_counts_and_an_offline_slave_in_one_reply():
    records = [
        analog_record([3300] * 16, [2980] * 6, tail=TAILS["extended"]),
        analog_record([0] * 16, [0x0AAA] * 6, current=0, voltage=0, remaining=0,
                      tail=bytes(20)),
        analog_record([3300] * 15, [2980] * 4, tail=TAILS["extended"]),
    ]
    reply = p.decode_analog(bytes((0, 3)) + b"".join(records))
    assert [r.offline for r in reply.packs] == [False, True, False]
    assert [len(r.cells_mv) for r in reply.packs] == [16, 16, 15]
    assert reply.packs[1].temperatures_c() == (0.0,) * 6


def test_forced_tail_overrides_the_solver_and_a_wrong_one_fails():
    info = bytes((0, 2)) + analog_record([3300] * 8, [2980] * 4, tail=TAILS["soc"]) * 2
    assert p.decode_analog(info, tail_bytes=7).tail_bytes == 7
    with pytest.raises(FramingError):
        p.decode_analog(info, tail_bytes=6)


def test_implausible_counts_are_refused():
    bad_cells = bytes((0, 1)) + analog_record([3300] * 33, [2980] * 2, tail=CLASSIC_TAIL)
    with pytest.raises(FramingError):
        p.decode_analog(bad_cells)
    with pytest.raises(FramingError):  # says 3 packs, carries 2
        p.decode_analog(bytes((0, 3)) + analog_record([3300] * 8, [2980], tail=CLASSIC_TAIL) * 2)


def test_single_pack_echo_must_match_the_pack_asked():
    info = bytes((0, 2)) + analog_record([3300] * 8, [2980] * 2, tail=CLASSIC_TAIL)
    assert p.decode_analog(info, command=2).echo == 2
    with pytest.raises(UnexpectedAnswerError):
        p.decode_analog(info, command=3)
    with pytest.raises(UnexpectedAnswerError):
        p.decode_analog(bytes((7,)) + info[1:], command=2)  # INFOFLAG must be 00 or 01


def status_record(cells=16, sensors=6, fixed=bytes(12), extra=b"", cell_warn=None,
                  temp_warn=None):
    cw = bytes(cell_warn or [0] * cells)
    tw = bytes(temp_warn or [0] * sensors)
    return bytes((cells,)) + cw + bytes((sensors,)) + tw + fixed + extra


@pytest.mark.parametrize("extra", [0, 1, 3, 5])
def test_status_extra_bytes_are_solved(extra):
    info = bytes((0, 3)) + status_record(extra=bytes(range(1, extra + 1))) * 3
    reply = p.decode_status(info)
    assert reply.extra_bytes == extra and len(reply.packs) == 3
    assert reply.packs[2].extra == bytes(range(1, extra + 1))


def test_status_flags_by_name():
    # charge/volt/discharge warnings, protect1, protect2, indicator, control, fault,
    # balance1, balance2, warn1, warn2
    fixed = bytes((2, 1, 0xF0, 0x41, 0x90, 0x26, 0x31, 0x14, 0x81, 0x02, 0x03, 0x80))
    rec = status_record(fixed=fixed, cell_warn=[0] * 15 + [2], temp_warn=[1, 0, 0, 0, 0, 0x85])
    [pack] = p.decode_status(bytes((0, 1)) + rec).packs
    alarms, status = pack.alarms, pack.status
    on = {k for k, v in alarms.items() if v}
    assert on == {
        "cell_overvoltage_protect", "short_circuit_protect",  # protect1 0x41
        "mosfet_overtemp_protect",  # protect2 0x90 (bit 7 is "fully charged")
        "temp_sensor_fault", "cell_fault",  # fault 0x14
        "cell_overvoltage_warn", "cell_undervoltage_warn",  # warn1 0x03
        "low_soc_warn",  # warn2 0x80
        "cell_voltage_above_limit", "temperature_below_limit", "temperature_other_warning",
        "charge_current_above_limit", "pack_voltage_below_limit",
        "discharge_current_other_warning",
    }
    assert status["fully_charged"] and status["charge_fet_on"] and status["discharge_fet_on"]
    assert status["ac_in"] and not status["pack_supplying"]
    assert status["buzzer_enabled"] and status["charge_current_limit_disabled"]
    assert status["led_warning_disabled"] and not status["test_mode"]
    assert [pack.balancing(c) for c in (1, 8, 9, 10, 16)] == [True, True, False, True, False]
    assert set(alarms) <= set(p.ALARM_NAMES) and set(status) <= set(p.STATUS_FLAGS)
    assert "master_slave_offline" not in alarms  # V3.1 bytes only when all five are there


def test_v31_extra_bytes_decoded_only_when_all_five_are_present():
    five = bytes((0x20, 0x01, 0, 0, 0x01))
    [pack] = p.decode_status(bytes((0, 1)) + status_record(extra=five)).packs
    assert pack.v31 and pack.alarms["master_slave_offline"] and pack.alarms["supply_12v_fault"]
    assert pack.status["bluetooth_connected"]
    [one_extra] = p.decode_status(bytes((0, 1)) + status_record(extra=b"\x11")).packs
    assert not one_extra.v31 and "master_slave_offline" not in one_extra.alarms


def test_status_record_rejects_values_that_are_no_warning_codes():
    # a 0x42 record read as 0x44 carries voltage bytes (0x0C ...) where warnings belong
    analog = bytes((0, 1)) + analog_record([3300] * 16, [2980] * 6, tail=CLASSIC_TAIL)
    with pytest.raises(ProtocolError):
        p.decode_status(analog)
    status = bytes((0, 1)) + status_record()
    with pytest.raises(ProtocolError):
        p.decode_analog(status)


# --- the parser -------------------------------------------------------------------------------


def test_parser_byte_by_byte():
    parser = p.FrameParser()
    events = [e for b in ANALOG_PACK1 for e in parser.events(bytes((b,)))]
    assert events == [p.decode_frame(ANALOG_PACK1)]
    assert parser.close() is None


def test_parser_leading_and_trailing_garbage_reported_once_per_run():
    for chunk in (1, 3, 1000):
        stream = b"\x00\xffAB\n" + PACK_COUNT_REPLY + b"\n"
        parser = p.FrameParser()
        events = [e for i in range(0, len(stream), chunk)
                  for e in parser.events(stream[i:i + chunk])]
        assert [type(e) for e in events] == [FramingError, p.Frame]
        assert events[0].data == b"\x00\xffAB\n"
        assert isinstance(parser.close(), FramingError)


def test_bad_chksum_rejected_and_next_good_frame_found():
    bad = PACK_COUNT_REPLY[:-2] + b"6\r"
    events = list(p.FrameParser().events(bad + VERSION_REPLY))
    assert isinstance(events[0], ChecksumError) and not isinstance(events[0],
                                                                   p.LengthChecksumError)
    assert events[1] == p.decode_frame(VERSION_REPLY)


def test_bad_lchksum_and_wrong_lenid():
    bad_l = b"~25014600F0020" + b"2" + PACK_COUNT_REPLY[15:]
    [err] = p.FrameParser().events(bad_l)
    assert isinstance(err, p.LengthChecksumError)
    # LENGTH C004 is self-consistent but the frame holds 2 INFO characters
    body = b"25014600C00402"
    short = b"~" + body + b"%04X\r" % ydt1363_chksum(body)
    [err] = p.FrameParser().events(short)
    assert isinstance(err, FramingError) and "LENID" in str(err)


def test_truncated_frame_then_a_good_one():
    events = list(p.FrameParser().events(ANALOG_PACK1[:60] + STATUS_PACK1))
    assert isinstance(events[0], FramingError) and "cut short" in str(events[0])
    assert events[1] == p.decode_frame(STATUS_PACK1)


def test_lowercase_hex_is_tolerated():
    low = b"~" + PACK_COUNT_REPLY[1:-1].lower() + b"\r"
    assert one(low).info == b"\x02"


def test_non_hex_and_overlong_candidates():
    [err] = p.FrameParser().events(b"~25014600E00202FZ35\r")
    assert isinstance(err, FramingError)
    parser = p.FrameParser(max_frame=40)
    events = list(parser.events(b"~" + b"0" * 60))
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert parser.buffered == 0
    assert list(parser.events(PACK_COUNT_REPLY)) == [p.decode_frame(PACK_COUNT_REPLY)]


def test_echo_detection():
    req = p.pack_request(p.ANALOG, p.ALL_PACKS, adr=0xFF)
    assert p.is_echo(one(req), req)
    assert not p.is_echo(one(ANALOG_PACK1), p.pack_request(p.ANALOG, 1))
    assert p.is_echo(one(p.request(p.ANALOG, b"\x01", adr=3)), p.pack_request(p.ANALOG, 1))


# --- fuzzing ----------------------------------------------------------------------------------


@st.composite
def chunked(draw, data: bytes):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


DECODERS = (
    lambda i: p.decode_analog(i), lambda i: p.decode_analog(i, 1),
    lambda i: p.decode_status(i), lambda i: p.decode_status(i, 2), p.decode_pack_count,
    p.decode_version, p.decode_product, p.decode_capacity, p.decode_datetime,
)

alphabet = st.sampled_from(b"~\r0123456789ABCDEF\x00\xff")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.lists(alphabet, max_size=400).map(bytes)),
       st.data())
def test_random_bytes_only_give_frames_or_protocol_errors(data, draw):
    parser = p.FrameParser(max_frame=200)
    for chunk in draw.draw(chunked(data)):
        for event in parser.events(chunk):
            assert isinstance(event, (p.Frame, ProtocolError))
    end = parser.close()
    assert end is None or isinstance(end, ProtocolError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_on_random_info_raise_only_protocol_errors(info):
    for decode in DECODERS:
        try:
            decode(info)
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=60)), min_size=1,
                max_size=5),
       st.lists(st.binary(max_size=15).map(lambda b: b.replace(b"~", b"-")), min_size=6,
                max_size=6),
       st.data())
def test_valid_frames_embedded_in_noise_are_all_recovered(frames, noises, draw):
    stream = b""
    expected = []
    for (rtn, info), noise in zip(frames, noises):
        stream += noise + p.build_frame(rtn, info, adr=1)
        expected.append(p.Frame(0x25, 1, 0x46, rtn, info))
    stream += noises[-1]
    parser = p.FrameParser()
    got = []
    for chunk in draw.draw(chunked(stream)):
        got.extend(e for e in parser.events(chunk) if isinstance(e, p.Frame))
    assert got == expected
