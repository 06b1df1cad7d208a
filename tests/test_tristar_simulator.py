"""The TriStar simulator as a Modbus device: framing (RTU and TCP, through modbus-tk's own
query classes), exception answers, writes, the day it lives through, and TCP hang-ups."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modbus_tk.modbus_rtu import RtuQuery
from modbus_tk.modbus_tcp import TcpQuery

from bmslogger.errors import ProtocolError
from bmslogger.options import resolve_options
from bmslogger.plugins.tristar import protocol as p
from bmslogger.plugins.tristar.simulator import Request, RequestFramer, TriStarSimulator
from bmslogger.simline import serve_tcp


def make_sim(**options: Any) -> TriStarSimulator:
    options.setdefault("drift", False)
    options.setdefault("start", "12:00")
    return TriStarSimulator(resolve_options(TriStarSimulator.all_options(), options))


def rtu(sim: TriStarSimulator, unit: int, pdu: bytes) -> bytes | None:
    """Send one RTU request; the answer's PDU (CRC checked by modbus-tk), or None."""
    query = RtuQuery()
    out = sim.handle(query.build_request(pdu, unit))
    if not out:
        return None
    assert len(out) == 1
    return query.parse_response(out[0].data)


def read(sim: TriStarSimulator, fc: int, start: int, count: int, unit: int = 1) -> bytes:
    answer = rtu(sim, unit, struct.pack(">BHH", fc, start, count))
    assert answer is not None
    return answer


def words_of(answer: bytes) -> list[int]:
    assert answer[1] == len(answer) - 2
    return list(struct.unpack(f">{answer[1] // 2}H", answer[2:]))


# --- reads --------------------------------------------------------------------------------------


def test_functions_3_and_4_answer_the_same_words():
    sim = make_sim()
    for start, count in p.RANGES:
        assert read(sim, 3, start, count) == bytes((3,)) + read(sim, 4, start, count)[1:]
    ram = words_of(read(sim, 4, 0, 80))
    assert ram[:4] == [180, 0, 80, 0]
    assert p.decode_ram(ram).adc_vb_f_med == sim.state.adc_vb_f_med
    assert sim.unit.requests_received[0] == (3, 0, 0x5C)


@pytest.mark.parametrize("start,count,code", [
    (0x005C, 1, 2),  # just past RAM
    (0x0050, 20, 2),  # crosses the end of RAM
    (0xE021, 2, 2),  # crosses the end of the charge settings
    (0xE022, 1, 2),
    (0x1000, 1, 2),  # network registers: not served
    (0x0000, 126, 3),  # more than 125 words
    (0x0000, 0, 3),
])
def test_exception_answers_for_bad_reads(start, count, code):
    sim = make_sim()
    assert read(sim, 4, start, count) == bytes((0x84, code))


@pytest.mark.parametrize("pdu", [
    struct.pack(">BHHB", 0x10, 0xE000, 1, 2) + b"\x00\x01",  # write multiple registers
    struct.pack(">BHHB", 0x0F, 0, 1, 1) + b"\x01",  # write multiple coils
    struct.pack(">BHHH", 0x16, 0xE000, 0xFFFF, 0),  # mask write
    bytes((0x11,)),  # report slave id
])
def test_functions_the_unit_lacks_get_exception_01(pdu):
    sim = make_sim()
    assert rtu(sim, 1, pdu) == bytes((pdu[0] | 0x80, 1))
    assert sim.state.fault_all == 0


def test_device_identification_basic_objects():
    sim = make_sim()
    answer = rtu(sim, 1, bytes((0x2B, 0x0E, 0x01, 0x00)))
    assert answer is not None and answer[:7] == bytes((0x2B, 0x0E, 1, 0x81, 0, 0, 3))
    body, objects = answer[7:], {}
    while body:
        objects[body[0]] = body[2:2 + body[1]]
        body = body[2 + body[1]:]
    assert objects[0] == b"Morningstar Corp." and objects[1] == b"TS-MPPT-60"
    assert rtu(sim, 1, bytes((0x2B, 0x0E, 0x03, 0x00))) == bytes((0xAB, 3))


def test_other_units_bad_crc_and_broadcast_reads_get_no_answer():
    sim = make_sim(units=[1, 2])
    assert rtu(sim, 3, struct.pack(">BHH", 4, 0, 1)) is None
    assert rtu(sim, 0, struct.pack(">BHH", 4, 0, 1)) is None
    request = RtuQuery().build_request(struct.pack(">BHH", 4, 0, 1), 1)
    assert sim.handle(request[:-1] + bytes((request[-1] ^ 1,))) == []
    assert sim.ignored["unit"] == 1 and sim.ignored["checksum"] >= 1
    # units behind one gateway are separate controllers
    one, two = (p.decode_ram(words_of(read(sim, 4, 0, 80, unit=u))) for u in (1, 2))
    assert one.adc_va_f != two.adc_va_f and one.time_ab_daily != two.time_ab_daily
    assert words_of(read(sim, 4, 0xE019, 1, unit=2)) == [2]  # Emodbus_id


# --- writes -------------------------------------------------------------------------------------


def test_eeprom_write_sets_the_custom_settings_fault_until_a_reset():
    sim = make_sim()
    new = p.encode_voltage(28.6, 180.0)
    assert rtu(sim, 1, struct.pack(">BHH", 6, 0xE000, new)) == struct.pack(">BHH", 6, 0xE000, new)
    sim.advance(60)
    assert sim.state.fault_all == 1 << 6 and sim.state.charge_state == 4
    assert sim.state.adc_ib_f_shadow == 0.0
    assert words_of(read(sim, 3, 0xE000, 1)) == [new]
    assert rtu(sim, 1, struct.pack(">BHH", 5, 0x00FF, 0xFF00)) is not None  # reset coil
    sim.advance(60)
    assert sim.state.fault_all == 0 and sim.state.charge_state != 4
    assert sim.state.flags_daily & 1 and sim.state.alarm & (1 << 19)
    assert sim.writes_received == [(6, 0xE000, new), (5, 0x00FF, 0xFF00)]


def test_write_refusals():
    sim = make_sim()
    assert rtu(sim, 1, struct.pack(">BHH", 6, 0x0018, 1)) == bytes((0x86, 2))  # read-only RAM
    assert rtu(sim, 1, struct.pack(">BHH", 6, 0xE0C0, 1)) == bytes((0x86, 2))  # identity
    assert rtu(sim, 1, struct.pack(">BHH", 5, 0x0014, 0x1234)) == bytes((0x85, 3))
    assert rtu(sim, 1, struct.pack(">BHH", 5, 0x0030, 0xFF00)) == bytes((0x85, 2))
    assert sim.state.fault_all == 0


def test_coils_set_only_read_zero_and_clear_faults():
    sim = make_sim(fault_bits=0x0010)
    sim.advance(60)
    assert sim.state.charge_state == 4 and sim.state.led_state == 12
    rtu(sim, 1, struct.pack(">BHH", 5, 0x0014, 0xFF00))
    rtu(sim, 1, struct.pack(">BHH", 5, 0x0002, 0xFF00))  # charge disconnect
    sim.advance(60)
    assert sim.state.fault_all == 0 and sim.state.charge_state == 2
    assert rtu(sim, 1, struct.pack(">BHH", 1, 0x0000, 0x1A)) == bytes((1, 4, 0x04, 0, 0, 0))


def test_slave_voltage_control_and_its_timeout_fault():
    sim = make_sim()
    rtu(sim, 1, struct.pack(">BHH", 6, p.VB_REF_SLAVE, p.encode_voltage(27.0, 180.0)))
    sim.advance(30)
    assert sim.state.charge_state == 9
    sim.advance(60)
    assert sim.state.fault_all & (1 << 11)


def test_values_are_unsigned_words_and_rts_absent():
    sim = make_sim(start="03:00", rts=False)
    words = words_of(read(sim, 4, 0, 80))
    assert all(0 <= w <= 0xFFFF for w in words)
    assert words[p.ADC_IB_F_SHADOW] > 0x8000  # small negative current at night
    assert words[p.T_RTS] == 0x0080 and words[p.T_BATT] == 25


# --- the day ------------------------------------------------------------------------------------


@pytest.mark.parametrize("start,stage,led", [("03:00", 3, (6, 8, 11)), ("09:00", 5, (6, 8, 11)),
                                             ("12:30", 6, (5,)), ("16:00", 7, (4,))])
def test_time_of_day_gives_the_stage(start, stage, led):
    s = make_sim(start=start).state
    assert s.charge_state == stage and s.led_state in led
    if stage in (5, 6, 7):
        assert s.power_out == pytest.approx(s.adc_vb_f_med * s.adc_ib_f_shadow, rel=0.01, abs=1)
        assert 0.94 < s.power_out / s.power_in < 0.98
        assert s.vb_ref > 0
    else:
        assert s.vb_ref == 0.0 and -1 < s.adc_ib_f_shadow < 0


def test_a_whole_day_cycles_and_counts():
    sim = make_sim(start="00:00")
    stages, last_ah, last_wh, resets = [], sim.state.ahc_t, 0, 0
    for _ in range(24 * 12):
        sim.advance(300)
        s = sim.state
        if not stages or stages[-1] != s.charge_state:
            stages.append(s.charge_state)
        assert s.ahc_t >= last_ah
        assert s.whc_daily % 10 == 0
        if s.whc_daily < last_wh:
            resets += 1
        last_ah, last_wh = s.ahc_t, s.whc_daily
    assert stages == [3, 5, 6, 7, 3]
    assert resets == 0  # one midnight passed, not a dawn: today's values keep growing
    sim.advance(7 * 3600)  # the next dawn
    assert sim.state.charge_state == 5 and sim.state.whc_daily < last_wh
    assert sim.state.hourmeter == 87017 + 31


# --- framing ------------------------------------------------------------------------------------


def test_modbus_tcp_framing_keeps_the_transaction_and_hangs_up():
    sim = make_sim()
    query = TcpQuery()
    request = query.build_request(struct.pack(">BHH", 4, 0, 80), 1)
    (tx,) = sim.handle(request)
    pdu = query.parse_response(tx.data)  # checks transaction, protocol and unit ids
    assert p.decode_ram(words_of(pdu)).charge_state == sim.state.charge_state
    assert sim.hangup_after_answer
    sim.handle(RtuQuery().build_request(struct.pack(">BHH", 4, 0, 1), 1))
    assert not sim.hangup_after_answer  # RTU (over a bridge) keeps the connection


def test_tcp_server_closes_after_every_answer():
    sim = make_sim(turnaround=0.01)
    with serve_tcp(sim) as server, socket.create_connection(server.address, timeout=5) as conn:
        query = TcpQuery()
        conn.sendall(query.build_request(struct.pack(">BHH", 4, 0, 5), 1))
        data = b""
        while True:
            chunk = conn.recv(512)
            if not chunk:
                break
            data += chunk
        assert words_of(query.parse_response(data))[:4] == [180, 0, 80, 0]


def requests_strategy() -> st.SearchStrategy[bytes]:
    pdus = st.builds(lambda fc, a, c: struct.pack(">BHH", fc, a, c),
                     st.sampled_from([1, 2, 3, 4, 5, 6]), st.integers(0, 0xFFFF),
                     st.integers(0, 0xFFFF))
    return st.one_of(
        st.builds(lambda pdu, u: RtuQuery().build_request(pdu, u), pdus, st.integers(0, 255)),
        st.builds(lambda pdu, u: TcpQuery().build_request(pdu, u), pdus, st.integers(0, 255)),
        st.binary(max_size=40),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(requests_strategy(), max_size=6), st.randoms(use_true_random=False),
       st.sampled_from(["auto", "rtu", "tcp"]))
def test_framer_yields_only_requests_or_protocol_errors(parts, rnd, framing):
    stream = b"".join(parts)
    framer = RequestFramer(framing)
    i = 0
    while i < len(stream):
        n = rnd.randint(1, 9)
        for event in framer.events(stream[i:i + n]):
            assert isinstance(event, (Request, ProtocolError))
        i += n
    framer.close()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60))
def test_simulator_survives_any_bytes(data):
    sim = make_sim()
    for tx in sim.handle(data):
        assert isinstance(tx.data, bytes)


def test_valid_requests_in_one_chunk_are_all_found():
    framer = RequestFramer("auto")
    rtu_req = RtuQuery().build_request(struct.pack(">BHH", 4, 0, 80), 1)
    tcp_req = TcpQuery().build_request(struct.pack(">BHH", 3, 0xE000, 34), 7)
    events = list(framer.events(b"\x00\xff" + rtu_req + tcp_req + rtu_req))
    found = [(e.framing, e.unit) for e in events if isinstance(e, Request)]
    assert found == [("rtu", 1), ("tcp", 7), ("rtu", 1)]
