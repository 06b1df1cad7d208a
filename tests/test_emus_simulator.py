"""The EMUS simulator on its own: answers, group lines, both modes, writes, silence, drift,
faults. Bytes in, `Transmission`s out: no line, no driver (except the sim:// URL check)."""

from __future__ import annotations

from typing import Any

import pytest

from bmslogger.errors import ChecksumError
from bmslogger.options import resolve_options
from bmslogger.plugins.emus import protocol as p
from bmslogger.plugins.emus.simulator import EmusSimulator
from bmslogger.simline import forget_sim_ports, open_sim_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Any = None, **options: Any) -> EmusSimulator:
    opts = resolve_options(EmusSimulator.all_options(), options)
    return EmusSimulator(opts, clock=clock) if clock else EmusSimulator(opts)


def lines(data: bytes) -> list[p.Sentence]:
    events = list(p.SentenceParser().events(data))
    assert all(isinstance(e, p.Sentence) for e in events), events
    return events


def ask(sim: EmusSimulator, name: str, arg: str = "?") -> list[p.Sentence]:
    txs = sim.handle(p.request(name, arg))
    return [s for tx in txs for s in lines(tx.data)]


def one(sim: EmusSimulator, name: str) -> p.Summary:
    [s] = ask(sim, name)
    d = p.decode(s)
    assert isinstance(d, p.Summary)
    return d


# --- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("cells", [1, 8, 16, 20, 24, 255])
def test_every_read_is_answered_with_the_right_number_of_lines(cells):
    sim = make(drift=False, cells=cells, cell_sensors=min(cells, 12))
    for name in p.READS:
        got = ask(sim, name)
        assert {s.name for s in got} == {name}
        if name in ("BV2", "BT2", "BB2"):
            assert len(got) == -(-cells // 8)
            assert sum(p.decode(s).size for s in got) == cells
        elif name == "BT4":
            assert len(got) == -(-min(cells, 12) // 8)
        elif name == "LG1":
            assert len(got) == len(sim.state.events)
        elif name == "SS1":
            assert len(got) == len(p.STATISTICS)
        else:
            assert len(got) == 1
        for s in got:
            p.decode(s)
    assert sim.writes_received == [] and not sim.ignored


def test_values_match_state():
    sim = make(drift=False, cells=24, soc=42.0, capacity=50.0)
    s = sim.state
    s.current_da = -123
    sim._shape(0.0)
    bc1 = one(sim, "BC1").values
    assert bc1 == {"charge_c": 75600, "capacity_c": 180000, "soc_pct": 42.0}
    cv1 = one(sim, "CV1").values
    assert cv1["current_a"] == -12.3 and cv1["voltage_v"] == s.total_cv / 100
    bv1 = one(sim, "BV1").values
    assert bv1["cells"] == 24 and bv1["total_v"] == cv1["voltage_v"]
    assert bv1["min_v"] == p.cell_voltage(min(s.cells_raw))
    assert bv1["max_v"] == p.cell_voltage(max(s.cells_raw))
    volts = [v for line in ask(sim, "BV2") for v in p.decode(line).raw]
    assert volts == s.cells_raw
    assert all(3.1 < p.cell_voltage(r) < 3.5 for r in volts)
    temps = [v for line in ask(sim, "BT2") for v in p.decode(line).raw]
    assert temps == s.module_temps_raw and all(15 < r - 100 < 40 for r in temps)
    st1 = one(sim, "ST1").values
    assert st1["stage"] == 0 and st1["status_flags"] == sim.status_flags


def test_charging_balances_cells_and_sets_the_stage():
    sim = make(drift=False, cells=16, seed=3)
    sim.state.current_da = 150
    sim._shape(0.0)
    rates = [v for line in ask(sim, "BB2") for v in p.decode(line).raw]
    assert rates == sim.state.balancing_raw and any(rates)
    assert one(sim, "ST1").values["stage"] == 4
    assert one(sim, "CS1").values["set_current_a"] == 15.0


def test_several_requests_at_once_are_answered_in_a_shuffled_order():
    sim = make(drift=False, seed=1)
    names = ["BV1", "BC1", "CV1", "ST1", "BT1", "BB1", "DT1", "OT1"]
    orders = set()
    for _ in range(5):
        txs = sim.handle(b"".join(p.request(n) for n in names))
        orders.add(tuple(lines(tx.data)[0].name for tx in txs))
    assert all(sorted(o) == sorted(names) for o in orders)
    assert len(orders) > 1
    calm = make(drift=False, shuffle=False)
    txs = calm.handle(b"".join(p.request(n) for n in names))
    assert [lines(tx.data)[0].name for tx in txs] == names


def test_answer_latency_is_the_turnaround():
    sim = make()
    [tx] = sim.handle(p.request("BV1"))
    assert 0.025 - 1e-9 <= tx.delay_s <= 0.05


def test_requests_in_any_chunking():
    sim = make(drift=False)
    data = p.request("BV1") + p.request("BC1")
    out = []
    for i in range(len(data)):
        out += sim.handle(data[i:i + 1])
    assert sorted(lines(tx.data)[0].name for tx in out) == ["BC1", "BV1"]


def test_silence_for_bad_crc_unknown_names_and_odd_arguments():
    sim = make(drift=False)
    for request in (b"BV1,?,4E\r\n", b"XY1,?,00\r\n", p.encode_sentence("XY1", ("?",)),
                    p.encode_sentence("BV1", ("1",)), p.encode_sentence("BV1", ()),
                    p.encode_sentence("SS1", ("ZZ",)), p.encode_sentence("SS1", ("7F",))):
        assert sim.handle(request) == []
    assert sum(sim.ignored.values()) == 7 and sim.writes_received == []


def test_one_statistic_by_id():
    sim = make(drift=False)
    [line] = ask(sim, "SS1", "0A")
    stat = p.decode(line)
    assert stat.id == 10 and stat.value == sim.state.statistics[10][0]
    assert 3.0 <= stat.scaled <= 3.6


def test_extra_fields_and_no_cell_comm():
    sim = make(drift=False, extra_fields=2)
    d = one(sim, "BV1")
    assert d.extra == ("0000", "0000") and d.values["cells"] == 16
    lost = make(drift=False, no_cell_comm=True)
    assert ask(lost, "BV1")[0].raw.startswith(b"BV1,,,,,,,")
    assert all(v is None for v in one(lost, "BV1").values.values())
    assert all(p.decode(line).raw is None for line in ask(lost, "BV2"))


def test_no_cell_sensors_means_bt3_count_zero_and_no_bt4_lines():
    sim = make(drift=False, cell_sensors=0)
    assert one(sim, "BT3").values == {"cells": 0, "min_c": None, "max_c": None, "avg_c": None}
    assert ask(sim, "BT4") == []


# --- modes ----------------------------------------------------------------------------------


def test_broadcast_mode_sends_the_summary_sentences_every_period():
    sim = make(drift=False, mode="broadcast", broadcast_period="2s", cell_sensors=3)
    assert sim.broadcast_interval_s == 2.0
    names = [lines(tx.data)[0].name for tx in sim.broadcast()]
    assert names == ["BB1", "BC1", "BT1", "BT3", "BV1", "CV1", "DT1", "OT1", "ST1"]
    assert make(mode="request").broadcast_interval_s is None
    assert [lines(tx.data)[0].name for tx in make(cell_sensors=0).broadcast()][2:4] == [
        "BT1", "BV1"]
    assert ask(sim, "BV1")  # still answers requests


def test_sim_url_in_broadcast_mode_works():
    forget_sim_ports()
    try:
        port = open_sim_port("sim://emus?cells=24&mode=broadcast&broadcast_period=0.2")
        try:
            port.timeout = 1.5
            data = b""
            while data.count(b"\n") < 12:
                chunk = port.read(64)
                assert chunk, data
                data += chunk
        finally:
            port.close()
    finally:
        forget_sim_ports()
    names = [s.name for s in p.SentenceParser(skip_first_partial=True).events(data)
             if isinstance(s, p.Sentence)]
    assert {"BV1", "CV1", "ST1", "BC1"} <= set(names)
    bv1 = next(s for s in p.SentenceParser().events(data[data.index(b"BV1"):])
               if isinstance(s, p.Sentence))
    assert p.decode(bv1).values["cells"] == 24


# --- writes ---------------------------------------------------------------------------------


def test_writes_are_applied_recorded_and_echoed():
    sim = make(drift=False, capacity=100.0, password="secret")
    [tx] = sim.handle(p.write_sentence("SC1", (p.soc_field(80.0),)))
    assert lines(tx.data)[0] == p.Sentence("SC1", ("1F40",))
    assert one(sim, "BC1").values["soc_pct"] == 80.0
    sim.state.current_da = 42
    sim.handle(p.write_sentence("RC1"))
    assert one(sim, "CV1").values["current_a"] == 0.0
    [tx] = sim.handle(p.write_sentence("PW1", ("wrong",)))
    assert lines(tx.data)[0].fields == ("0",) and not sim.state.logged_in
    [tx] = sim.handle(p.write_sentence("PW1", ("secret",)))
    assert lines(tx.data)[0].fields == ("1",) and sim.state.logged_in
    sim.handle(p.write_sentence("LG1", ("c",)))
    assert ask(sim, "LG1") == []
    sim.handle(p.write_sentence("SS1", ("c",)))
    assert all(p.decode(s).value == 0 for s in ask(sim, "SS1"))
    sim.handle(p.write_sentence("RS1"))
    assert [p.decode(s).text for s in ask(sim, "LG1")] == ["bms_started"]
    assert [w[0] for w in sim.writes_received] == ["SC1", "RC1", "PW1", "PW1", "LG1", "SS1",
                                                    "RS1"]


def test_set_soc_out_of_range_is_ignored():
    sim = make(drift=False)
    assert sim.handle(p.write_sentence("SC1", ("FFFF",))) == []
    assert one(sim, "BC1").values["soc_pct"] == 60.0


# --- drift ----------------------------------------------------------------------------------


def test_values_drift_and_charge_follows_the_current():
    clock = FakeClock()
    sim = make(clock=clock, current=50.0, period="100s")
    start = sim.state.charge_c
    clock.now += 25  # a quarter period: charging at the peak
    one(sim, "BV1")
    assert sim.state.current_da == 500 and sim.state.charge_c > start
    assert sim.state.stage in (3, 4)
    clock.now += 50  # three quarters: discharging
    one(sim, "BV1")
    assert sim.state.current_da == -500 and sim.state.stage == 0
    assert sim.state.uptime_s > 0


def test_frozen_state_does_not_drift():
    clock = FakeClock()
    sim = make(clock=clock, drift=False)
    before = ask(sim, "BV2") + ask(sim, "BC1") + ask(sim, "TD1")
    clock.now += 500
    assert ask(sim, "BV2") + ask(sim, "BC1") + ask(sim, "TD1") == before


# --- faults ---------------------------------------------------------------------------------


def test_corrupt_checksum_breaks_one_line_only():
    sim = make(drift=False, cells=24)
    data = sim.answer("BV2")
    bad = sim.corrupt_checksum(data)
    events = list(p.SentenceParser().events(bad))
    assert [type(e) for e in events].count(ChecksumError) == 1
    assert len([e for e in events if isinstance(e, p.Sentence)]) == 2


def test_wrong_answer_is_a_valid_sentence_of_another_name():
    sim = make(drift=False)
    data = sim.answer("BC1")
    wrong = lines(sim.wrong_answer(data))
    assert len(wrong) == 1 and wrong[0].name != "BC1"


@pytest.mark.parametrize("fault", ["checksum", "truncate", "noise", "silence", "wrong",
                                   "slow", "late"])
def test_common_faults_apply(fault):
    sim = make(drift=False, fault=[fault], fault_rate=1.0)
    clean = make(drift=False).answer("BV1")
    txs = sim.handle(p.request("BV1"))
    assert sim.faults_injected == {fault: 1}
    if fault == "silence":
        assert txs == []
        return
    [tx] = txs
    if fault == "slow":  # on time, trickling
        assert tx.data == clean and tx.gap_s > 0
    elif fault == "late":
        assert tx.data == clean and tx.delay_s > 1.0
    elif fault == "noise":
        assert tx.data.endswith(clean) and len(tx.data) > len(clean)
    else:
        assert tx.data != clean


def test_broadcasts_go_through_the_faults():
    sim = make(drift=False, mode="broadcast", fault=["silence"], fault_rate=1.0)
    assert sim.broadcast() == []
    assert sim.faults_injected["silence"] == 9
