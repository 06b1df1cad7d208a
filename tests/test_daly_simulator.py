"""The Daly simulator on its own: answers, quirks, writes, silence, drift, faults.

Bytes in, `Transmission`s out: no line, no driver. Captured replies from real units
(published in public Daly projects) are reproduced byte for byte from a loaded state.
"""

from __future__ import annotations

from typing import Any

import pytest

from bmslogger.errors import ChecksumError
from bmslogger.options import resolve_options
from bmslogger.plugins.daly import protocol as p
from bmslogger.plugins.daly.simulator import DalySimulator


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Any = None, **options: Any) -> DalySimulator:
    opts = resolve_options(DalySimulator.all_options(), options)
    return DalySimulator(opts, clock=clock) if clock else DalySimulator(opts)


def frames(data: bytes) -> list[p.Frame]:
    events = list(p.FrameParser().events(data))
    assert all(isinstance(e, p.Frame) for e in events), events
    return events


def ask(sim: DalySimulator, data_id: int, address: int = 0x40) -> list[p.Frame]:
    txs = sim.handle(p.read_request(data_id, address))
    return [f for tx in txs for f in frames(tx.data)]


# --- answers ------------------------------------------------------------------------------


def test_every_read_id_is_answered_with_valid_frames_from_the_board():
    sim = make(drift=False, board=3, hosts=[0x42])
    counts = {
        p.CELL_VOLTAGES: 6,
        p.TEMPERATURES: 1,
        p.BATTERY_CODE: 5,
        p.SOFTWARE_VERSION: 2,
        p.HARDWARE_VERSION: 2,
    }
    for data_id in p.READ_IDS:
        got = ask(sim, data_id, 0x42)
        assert len(got) == counts.get(data_id, 1), hex(data_id)
        assert {f.address for f in got} == {3}
        assert {f.data_id for f in got} == {data_id}
    assert sim.writes_received == []


def test_answer_latency_is_the_turnaround_of_a_real_unit():
    sim = make()
    [tx] = sim.handle(p.read_request(p.PACK))
    assert 0.05 - 1e-9 <= tx.delay_s <= 0.08


def test_values_match_state():
    sim = make(drift=False, cells=8, sensors=3, soc=42.0, capacity=50.0, cycles=99)
    s = sim.state
    s.current_da = -123  # discharging 12.3 A
    pack = p.decode_pack(ask(sim, p.PACK)[0])
    assert pack.voltage_dv == s.voltage_dv == round(sum(s.cells_mv) / 100)
    assert pack.current_a() == -12.3 and pack.current_raw == 30123
    assert pack.soc_pct == 42.0
    status = p.decode_status(ask(sim, p.STATUS)[0])
    assert (status.cells, status.sensors, status.cycles) == (8, 3, 99)
    cells = p.assemble_cells(
        {f.data[0]: p.decode_cell_frame(f) for f in ask(sim, p.CELL_VOLTAGES)}, 8
    )
    assert list(cells) == s.cells_mv
    temps = p.assemble_temps(
        {f.data[0]: p.decode_temp_frame(f) for f in ask(sim, p.TEMPERATURES)}, 3
    )
    assert list(temps) == s.temps_c
    ext = p.decode_cell_extremes(ask(sim, p.CELL_EXTREMES)[0])
    assert (ext.max_mv, ext.min_mv) == (max(s.cells_mv), min(s.cells_mv))
    assert s.cells_mv[ext.max_cell - 1] == ext.max_mv and s.cells_mv[ext.min_cell - 1] == ext.min_mv
    assert all(3100 < mv < 3500 for mv in s.cells_mv)
    assert max(s.cells_mv) - min(s.cells_mv) <= 20


def test_sign_option_flips_the_wire_current():
    normal, inverted = make(drift=False), make(drift=False, sign="inverted")
    normal.state.current_da = inverted.state.current_da = 50  # charging 5 A
    assert p.decode_pack(ask(normal, p.PACK)[0]).current_raw == 29950
    assert p.decode_pack(ask(inverted, p.PACK)[0]).current_raw == 30050


def test_alarm_bits_and_fault_code_options():
    sim = make(alarm_bits=(1 << 1) | (1 << 52), fault_code=9)
    fail = p.decode_failures(ask(sim, p.FAILURES)[0])
    assert fail.active == ("cell_volt_high_l2",)
    assert fail.unknown == ("byte 6 bit 4",)
    assert fail.fault_code == 9


def test_heartbeat_moves_on_each_0x93_and_wraps():
    sim = make(drift=False)
    beats = [p.decode_mosfet(ask(sim, p.MOSFET)[0]).heartbeat for _ in range(30)]
    steps = [(b - a) % 256 for a, b in zip(beats, beats[1:])]
    assert all(5 <= s < 40 for s in steps)
    assert any(b < a for a, b in zip(beats, beats[1:]))  # wrapped at least once
    assert beats[-1] == sim.state.heartbeat


# --- quirks -------------------------------------------------------------------------------


def test_frames_needed_versus_all():
    needed = ask(make(cells=16, sensors=2, frames="needed"), p.CELL_VOLTAGES)
    everything = ask(make(cells=16, sensors=2, frames="all"), p.CELL_VOLTAGES)
    assert [f.data[0] for f in needed] == list(range(1, 7))
    assert [f.data[0] for f in everything] == list(range(1, 17))
    assert all(f.data[1:7] == bytes(6) for f in everything[6:])
    assert len(ask(make(sensors=2, frames="all"), p.TEMPERATURES)) == 3


def test_extra_cell_slots_are_non_zero_but_beyond_the_cell_count():
    sim = make(cells=16, extra_cell_slots=True, drift=False)
    last = p.decode_cell_frame(ask(sim, p.CELL_VOLTAGES)[5])
    assert last.millivolts[0] == sim.state.cells_mv[15]
    assert last.millivolts[1] > 3000 and last.millivolts[2] > 3000


def test_reserved_bytes_stale_versus_zero():
    stale = make(reserved="stale", filler=0x3A, drift=False)
    ext = ask(stale, p.CELL_EXTREMES)[0]
    assert ext.data[6:8] == stale.state.soc_permille.to_bytes(2, "big")
    assert ask(stale, p.TEMP_EXTREMES)[0].data[4:8] == ext.data[4:8]
    assert ask(stale, p.STATUS)[0].data[7] == 0x3A
    assert {f.data[7] for f in ask(stale, p.CELL_VOLTAGES)} == {0x3A}
    zero = make(reserved="zero", drift=False)
    assert ask(zero, p.CELL_EXTREMES)[0].data[6:8] == bytes(2)
    assert ask(zero, p.TEMP_EXTREMES)[0].data[4:8] == bytes(4)
    assert ask(zero, p.STATUS)[0].data[7] == 0


def load_capture_session(sim: DalySimulator) -> None:
    """The 16S session of the mpp-solar captures: 53.2 V, raw 30021, SOC 88.8 %."""
    s = sim.state
    s.cells_mv = [3326] * 14 + [3328, 3326]
    s.temps_c = [15]
    s.current_da = -21
    s.capacity_mah = 280_000
    s.remaining_mah = 248_640
    s.cycles = 3
    s.heartbeat = 0x78
    s.dio = 0
    s.charger_connected = s.load_connected = False


def test_captured_replies_reproduced_byte_for_byte():
    sim = make(cells=16, sensors=1, reserved="stale", filler=0x40, drift=False)
    load_capture_session(sim)
    assert sim.answer(p.PACK) == bytes.fromhex("a5019008021400007545037889")
    assert sim.answer(p.CELL_EXTREMES) == bytes.fromhex("a50191080d000f0cfe010378e1")
    assert sim.answer(p.TEMP_EXTREMES) == bytes.fromhex("a501920837013701fe0103782a")
    assert sim.answer(p.MOSFET) == bytes.fromhex("a5019308020101780003cb40cb")
    assert sim.answer(p.STATUS) == bytes.fromhex("a5019408100100000000034096")


def test_captured_all_frames_cell_reply_reproduced():
    sim = make(cells=16, frames="all", reserved="stale", filler=0x40, drift=False)
    sim.state.cells_mv = (
        [0xCFD, 0xCFE, 0xCFE] + [0xCFE] * 6 + [0xCFE, 0xCFC, 0xCFE, 0xCFE, 0xCFF, 0xCFE, 0xCFC]
    )
    captured = (
        "a5019508010cfd0cfe0cfe40a1a5019508020cfe0cfe0cfe40a3a5019508030cfe0cfe0cfe40a4"
        "a5019508040cfe0cfc0cfe40a3a5019508050cfe0cff0cfe40a7a5019508060cfc000000004091"
        + "".join(
            f"a5019508{n:02x}000000000000{0x40:02x}{(0x8A + n - 7):02x}" for n in range(7, 17)
        )
    )
    assert sim.answer(p.CELL_VOLTAGES) == bytes.fromhex(captured)


def test_captured_temperature_reply_with_zeroed_slots():
    sim = make(sensors=1, frames="all", reserved="zero", drift=False)
    sim.state.temps_c = [15]
    # this unit sent two frames: the first sensor, then an all-zero frame 2
    assert sim.answer(p.TEMPERATURES)[:26] == bytes.fromhex(
        "a50196080137000000000000 7c a501960802000000000000 0046"
    )


def test_requests_in_any_chunking_and_with_trailing_newline():
    sim = make(drift=False)
    request = p.read_request(p.PACK) + b"\n" + p.read_request(p.STATUS, filler=0xAA)
    answers = []
    for byte in request:
        answers += sim.handle(bytes((byte,)))
    assert [frames(tx.data)[0].data_id for tx in answers] == [p.PACK, p.STATUS]


# --- silence and sleep ----------------------------------------------------------------------


def test_silence_for_bad_checksum_unknown_id_and_foreign_address():
    sim = make(board=2)
    bad = bytearray(p.read_request(p.PACK, 0x41))
    bad[-1] ^= 1
    assert sim.handle(bytes(bad)) == []
    assert sim.handle(p.read_request(0x77, 0x41)) == []
    assert sim.handle(p.read_request(p.PACK, 0x40)) == []  # board 1's address
    assert sim.ignored["checksum"] == 1 and sim.ignored["unknown_id"] == 1
    assert sim.ignored["address"] == 1
    assert len(sim.handle(p.read_request(p.PACK, 0x41))) == 1
    assert len(sim.handle(p.read_request(p.PACK, 0x80))) == 1


def test_hosts_option_limits_accepted_addresses():
    sim = make(hosts=[0x40])
    assert sim.handle(p.read_request(p.PACK, 0x80)) == []
    assert len(sim.handle(p.read_request(p.PACK, 0x40))) == 1


def test_sleep_silent_and_echo():
    assert make(sleep="silent").handle(p.read_request(p.PACK)) == []
    sim = make(sleep="echo")
    request = p.read_request(p.PACK)
    [tx] = sim.handle(request)
    assert tx.data == request and 0.001 <= tx.delay_s <= 0.005
    sim.sleep_mode = "none"  # wakes up
    assert frames(sim.handle(request)[0].data)[0].address == 1


# --- writes ---------------------------------------------------------------------------------


def test_writes_are_applied_counted_and_acknowledged():
    sim = make(drift=False, capacity=100.0)
    [tx] = sim.handle(p.set_soc_request(80.0))
    assert frames(tx.data)[0].data[0] == 1
    assert sim.state.soc_permille == 800
    [tx] = sim.handle(p.mosfet_request(p.CHARGE_MOSFET, False))
    assert frames(tx.data)[0].data[0] == 0
    assert sim.state.charge_mosfet is False and sim.state.discharge_mosfet is True
    sim.handle(p.mosfet_request(p.DISCHARGE_MOSFET, False))
    assert sim.state.discharge_mosfet is False
    assert p.decode_mosfet(ask(sim, p.MOSFET)[0]).charge_mosfet is False
    sim.handle(p.reset_request())
    assert [w[0] for w in sim.writes_received] == [
        p.SET_SOC,
        p.CHARGE_MOSFET,
        p.DISCHARGE_MOSFET,
        p.RESET,
    ]


def test_mosfet_switch_refused_while_in_protection():
    sim = make(refuse_mos_on_alarm=True, alarm_bits=1)
    [tx] = sim.handle(p.mosfet_request(p.CHARGE_MOSFET, False))
    assert frames(tx.data)[0].data[0] == 0  # acknowledged...
    assert sim.state.charge_mosfet is True  # ...and ignored


def test_set_soc_above_100_is_not_applied():
    sim = make(drift=False, soc=50.0)
    raw = p.build_frame(0x40, p.SET_SOC, bytes(6) + (1001).to_bytes(2, "big"))
    [tx] = sim.handle(raw)
    assert frames(tx.data)[0].data[0] == 0
    assert sim.state.soc_permille == 500


# --- drift ----------------------------------------------------------------------------------


def test_values_drift_and_soc_follows_the_current():
    clock = FakeClock()
    sim = make(clock=clock, current=50.0, period=150.0, capacity=10.0, soc=50.0)
    seen = []
    for _ in range(40):
        clock.now += 5.0
        before = sim.state.remaining_mah
        pack = p.decode_pack(ask(sim, p.PACK)[0])
        seen.append((pack.current_a(), pack.soc_pct))
        delta = sim.state.remaining_mah - before
        if sim.state.current_da > 0:
            assert delta > 0
        elif sim.state.current_da < 0:
            assert delta < 0
    currents = [c for c, _ in seen]
    assert max(currents) > 20 and min(currents) < -20
    assert len({soc for _, soc in seen}) > 10
    assert sim.state.state in (0, 1, 2)


def test_frozen_state_does_not_drift():
    clock = FakeClock()
    sim = make(clock=clock, drift=False)
    before = (list(sim.state.cells_mv), sim.state.remaining_mah, sim.state.current_da)
    clock.now += 100
    ask(sim, p.PACK)
    ask(sim, p.CELL_VOLTAGES)
    assert (sim.state.cells_mv, sim.state.remaining_mah, sim.state.current_da) == before


# --- faults -------------------------------------------------------------------------------


def test_corrupt_checksum_breaks_exactly_one_frame():
    sim = make(drift=False)
    good = sim.answer(p.CELL_VOLTAGES)
    bad = sim.corrupt_checksum(good)
    events = list(p.FrameParser().events(bad))
    assert sum(isinstance(e, ChecksumError) for e in events) == 1
    assert sum(isinstance(e, p.Frame) for e in events) == 5


def test_wrong_answer_is_a_valid_frame_for_another_id():
    sim = make(drift=False)
    for data_id in (p.PACK, p.STATUS, p.FAILURES):
        [frame] = frames(sim.wrong_answer(sim.answer(data_id)))
        assert frame.data_id != data_id and frame.address == 1


@pytest.mark.parametrize("fault", ["checksum", "truncate", "noise", "silence", "wrong"])
def test_common_faults_apply(fault):
    sim = make(drift=False, fault=[fault], fault_rate=1.0)
    request = p.read_request(p.PACK)
    txs = sim.handle(request)
    assert sim.faults_injected == {fault: 1}
    good = sim.answer(p.PACK)
    if fault == "silence":
        assert txs == []
    else:
        assert txs[0].data != good
