"""The PACE simulator on its own: answers, firmware variants, quirks, faults, drift.

Bytes in, `Transmission`s out: no line, no driver. Captured replies of real packs are
reproduced byte for byte from a loaded state.
"""

from __future__ import annotations

from typing import Any

import pytest

from bmslogger.errors import ChecksumError
from bmslogger.options import resolve_options
from bmslogger.plugins.pace import protocol as p
from bmslogger.plugins.pace.simulator import VARIANTS, PaceSimulator


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Any = None, **options: Any) -> PaceSimulator:
    options.setdefault("drift", False)
    opts = resolve_options(PaceSimulator.all_options(), options)
    return PaceSimulator(opts, clock=clock) if clock else PaceSimulator(opts)


def frames(data: bytes) -> list[p.Frame]:
    events = list(p.FrameParser().events(data))
    assert all(isinstance(e, p.Frame) for e in events), events
    return events


def ask(sim: PaceSimulator, request: bytes) -> list[p.Frame]:
    return [f for tx in sim.handle(request) for f in frames(tx.data)]


def test_supported_commands_answer_unknown_get_rtn_04():
    sim = make(packs=2, variant="extended")
    [count] = ask(sim, p.request(p.PACK_COUNT))
    assert count.rtn == 0 and p.decode_pack_count(count.info) == 2
    [version] = ask(sim, p.request(p.VERSION))
    assert p.decode_version(version.info) == p.Version(sim.state.software_version,
                                                       sim.state.bluetooth_name)
    [product] = ask(sim, p.request(p.PRODUCT))
    assert p.decode_product(product.info) == p.Product(sim.state.bms_info, sim.state.pack_info)
    [cap] = ask(sim, p.request(p.CAPACITY))
    first = sim.state.packs[0]
    assert p.decode_capacity(cap.info) == p.Capacity(first.remaining, first.full, first.design)
    [clock] = ask(sim, p.request(p.DATETIME))
    assert p.decode_datetime(clock.info) == "2024-08-21 05:29:31"
    for cid2 in (0x47, 0x4F, 0x9C, 0xD1):
        [reply] = ask(sim, p.request(cid2))
        assert reply.rtn == 0x04
    assert sim.writes_received == []


def test_damaged_requests_get_rtn_02_and_03():
    sim = make()
    good = p.request(p.PACK_COUNT)
    [r] = ask(sim, good[:-2] + (b"0" if good[-2:-1] != b"0" else b"1") + b"\r")
    assert r.rtn == 0x02
    bad_l = b"~25014690F000" + b"FD00\r"
    [r] = ask(sim, bad_l)
    assert r.rtn == 0x03


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_round_trips_through_the_codec(variant):
    sim = make(packs=3, variant=variant, cells=15, sensors=4)
    [frame] = ask(sim, p.pack_request(p.ANALOG))
    assert frame.ver == (0x20 if variant == "pylon" else 0x25)
    reply = p.decode_analog(frame.info)
    tail, p_value = VARIANTS[variant]
    assert reply.tail_bytes == tail and len(reply.packs) == 3
    for rec, pack in zip(reply.packs, sim.state.packs):
        assert list(rec.cells_mv) == pack.cells_mv and list(rec.temps_raw) == pack.temps_raw
        assert rec.voltage_mv == pack.voltage_mv and rec.remaining_10mah == pack.remaining
        assert rec.p_value == p_value and rec.full_10mah == pack.full
        assert rec.cycles == pack.cycles and rec.layout == variant
    [frame] = ask(sim, p.pack_request(p.STATUS))
    status = p.decode_status(frame.info)
    assert status.extra_bytes == sim.status_extra and len(status.packs) == 3


def test_single_pack_requests_and_slots_beyond_the_group():
    sim = make(packs=3)
    for n in (1, 2, 3):
        [frame] = ask(sim, p.pack_request(p.ANALOG, n))
        reply = p.decode_analog(frame.info, n)
        assert reply.packs[0].remaining_10mah == sim.state.packs[n - 1].remaining
    [frame] = ask(sim, p.pack_request(p.ANALOG, 7))
    assert p.decode_analog(frame.info, 7).packs[0].offline
    [frame] = ask(sim, p.pack_request(p.ANALOG, 0x20))
    assert frame.rtn == 0x06


def test_offline_packs_zeros_in_ff_and_zeros_or_silence_alone():
    sim = make(packs=3, offline=[2])
    reply = p.decode_analog(ask(sim, p.pack_request(p.ANALOG))[0].info)
    assert [r.offline for r in reply.packs] == [False, True, False]
    assert reply.packs[1].temps_raw == (0x0AAA,) * 6
    assert p.decode_analog(ask(sim, p.pack_request(p.ANALOG, 2))[0].info, 2).packs[0].offline
    silent = make(packs=3, offline=[2], offline_reply="silent")
    assert silent.handle(p.pack_request(p.ANALOG, 2)) == []
    assert silent.handle(p.pack_request(p.STATUS, 2)) == []


def test_ff_first_only_and_a_non_master_address():
    sim = make(packs=3, ff_first_only=True)
    assert len(p.decode_analog(ask(sim, p.pack_request(p.ANALOG))[0].info).packs) == 1
    assert p.decode_pack_count(ask(sim, p.request(p.PACK_COUNT))[0].info) == 3
    slave = make(packs=3, address=2)
    [count] = ask(slave, p.request(p.PACK_COUNT))
    assert count.adr == 2 and p.decode_pack_count(count.info) == 1


def test_rs232_answers_any_adr_rs485_only_its_own():
    sim = make(address=1)
    [reply] = ask(sim, p.request(p.PACK_COUNT, adr=0))
    assert reply.adr == 1  # its own DIP address, not the request's
    bus = make(address=3, bus="rs485")
    assert bus.handle(p.request(p.PACK_COUNT, adr=1)) == []
    assert len(ask(bus, p.request(p.PACK_COUNT, adr=3))) == 1
    assert make(cid1=0x4F).handle(p.request(p.PACK_COUNT)) == []


def test_echo_sends_the_request_back_first():
    sim = make(echo=True)
    request = p.request(p.PACK_COUNT)
    txs = sim.handle(request)
    assert txs[0].data == request and len(txs) == 2


def test_requests_in_any_chunking():
    sim = make(packs=2)
    request = p.pack_request(p.ANALOG) + p.request(p.PACK_COUNT)
    out = []
    for b in request:
        out.extend(sim.handle(bytes((b,))))
    assert len(out) == 2


def test_captured_replies_reproduced_byte_for_byte():
    sim = make(packs=1)
    pack = sim.state.packs[0]
    pack.cells_mv = [3271, 3272, 3271, 3271, 3271, 3269, 3270, 3271, 3271, 3270, 3271, 3270,
                     3270, 3271, 3270, 3271]
    pack.temps_raw = [2971, 2969, 2969, 2969, 2995, 3004]
    pack.current_raw, pack.voltage_mv, pack.remaining = -225, 52429, 4819
    pack.full, pack.cycles, pack.design = 10346, 140, 10000
    [tx] = sim.handle(p.pack_request(p.ANALOG, 1))
    assert tx.data == (
        b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC60"
        b"CC7060B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4\r")
    pack.indicator, pack.control, pack.balance_bits = 0x0E, 0, 0
    [tx] = sim.handle(p.pack_request(p.STATUS, 1))
    assert tx.data == (b"~25014600004C00011000000000000000000000000000000000060000000000000000"
                       b"0000000E000000000000EF3A\r")
    [tx] = sim.handle(p.request(p.PACK_COUNT))
    sim2 = make(packs=2)
    assert sim2.handle(p.request(p.PACK_COUNT, adr=0))[0].data == b"~25014600E00202FD35\r"


def test_latency_is_within_the_turnaround():
    sim = make()
    [tx] = sim.handle(p.request(p.PACK_COUNT))
    assert 0.05 - 1e-9 <= tx.delay_s <= 0.1


def test_values_drift_and_charging_balances():
    clock = FakeClock()
    sim = make(clock=clock, drift=True, packs=2, period=40.0, current=50.0)
    before = [pk.remaining for pk in sim.state.packs]
    clock.now += 10  # a quarter period: charging at the peak
    ask(sim, p.pack_request(p.ANALOG))
    assert all(pk.current_raw > 4000 for pk in sim.state.packs)
    assert all(pk.remaining > b for pk, b in zip(sim.state.packs, before))
    assert all(pk.indicator & 0x20 for pk in sim.state.packs)
    assert all(pk.voltage_mv == sum(pk.cells_mv) for pk in sim.state.packs)


def test_frozen_state_does_not_drift():
    clock = FakeClock()
    sim = make(clock=clock)
    before = [(list(pk.cells_mv), pk.remaining) for pk in sim.state.packs]
    clock.now += 100
    ask(sim, p.pack_request(p.ANALOG))
    assert [(pk.cells_mv, pk.remaining) for pk in sim.state.packs] == before


def test_alarm_options_reach_every_pack():
    sim = make(packs=2, protect1=0x01, warn2=0x80, fault_state=0x04)
    reply = p.decode_status(ask(sim, p.pack_request(p.STATUS))[0].info)
    for rec in reply.packs:
        assert rec.alarms["cell_overvoltage_protect"] and rec.alarms["low_soc_warn"]
        assert rec.alarms["temp_sensor_fault"]


# --- faults ---------------------------------------------------------------------------------


def test_corrupt_checksum_keeps_hex_but_breaks_the_sum():
    sim = make(packs=2)
    good = sim.answer(p.ANALOG, b"\xff")
    bad = sim.corrupt_checksum(good)
    [err] = p.FrameParser().events(bad)
    assert isinstance(err, ChecksumError)


def test_wrong_answer_is_a_valid_frame_for_another_request():
    sim = make(packs=3)
    sim.handle(p.pack_request(p.ANALOG, 2))
    answer = sim._alternate[0]
    [other] = frames(sim.wrong_answer(answer))
    assert other.info[1] == 3  # pack 3's record while pack 2 was asked
    sim.handle(p.pack_request(p.ANALOG))
    [other] = frames(sim.wrong_answer(sim._alternate[0]))
    assert len(other.info) == 1  # a pack-count reply instead of the analog one


@pytest.mark.parametrize("fault", ["checksum", "truncate", "noise", "silence", "wrong"])
def test_common_faults_apply(fault):
    sim = make(packs=2, fault=[fault], fault_rate=1.0)
    request = p.pack_request(p.ANALOG)
    txs = sim.handle(request)
    assert sim.faults_injected == {fault: 1}
    good = sim.answer(p.ANALOG, b"\xff")
    if fault == "silence":
        assert txs == []
    else:
        assert txs[0].data != good
