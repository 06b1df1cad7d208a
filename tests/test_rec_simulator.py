"""The REC BMS 1Q simulator as a state machine: bytes in, transmissions out (no line)."""

from __future__ import annotations

from typing import Any

import pytest

from bmslogger.options import resolve_options
from bmslogger.plugins.rec import protocol as p
from bmslogger.plugins.rec.instructions import INSTRUCTIONS, SETTABLE
from bmslogger.plugins.rec.simulator import RecSimulator
from bmslogger.simline import build_simulator


def make_sim(**options: Any) -> RecSimulator:
    options.setdefault("drift", False)
    return RecSimulator(resolve_options(RecSimulator.all_options(), options))


def ask(sim: RecSimulator, request: bytes) -> list[p.Frame]:
    """Frames the simulator answers `request` with (all transmissions joined)."""
    out = b"".join(tx.data for tx in sim.handle(request))
    events = list(p.FrameParser().events(out))
    assert all(isinstance(e, p.Frame) for e in events), events
    return events  # type: ignore[return-value]


def value(sim: RecSimulator, name: str, address: int = 1) -> object:
    ans = p.Answer(INSTRUCTIONS[name], address)
    for frame in ask(sim, p.query(name, address)):
        ans.add(frame)
    return ans.result()


def test_default_unit_is_the_captured_one():
    sim = make_sim()
    s = sim.state
    assert len(s.cells_v) == 14 and all(3.9 < v < 4.05 for v in s.cells_v)
    assert value(sim, "CAPA") == 450.0
    assert value(sim, "*IDN") == "REC BMS 1Q VICTRON"
    assert value(sim, "CYCL") == 103
    assert value(sim, "BVOL") == pytest.approx(3.58)
    assert value(sim, "TMIN") == pytest.approx(-10.0)
    frames = ask(sim, p.query("CAPA", 1))
    assert frames[0].payload == b"4.50000e2" and (frames[0].dst, frames[0].src) == (0, 1)
    assert ask(sim, p.query("TMIN", 1))[0].payload == b"-1.00000e1"
    assert ask(sim, p.query("CYCL", 1))[0].payload == b"103"


def test_array_answers_are_two_frames_with_the_state_values():
    sim = make_sim(cells=16, sensors=3, error_code=3, error_location=9)
    s = sim.state
    count, cells = value(sim, "CELL")
    assert count == 1 and list(cells) == s.cells_v
    frames = ask(sim, p.query("LCD1", 1))
    assert [f.payload[:2] for f in frames][:1] == [b"28"] and len(frames[1].payload) == 28
    lcd1 = p.decode_lcd1(value(sim, "LCD1")[1])
    assert (lcd1.min_cell_v, lcd1.max_cell_v) == (min(s.cells_v), max(s.cells_v))
    assert lcd1.soc == s.soc and lcd1.pack_v == s.pack_v
    assert list(value(sim, "PTEM")[1]) == s.temps_c
    assert list(value(sim, "RINT")[1]) == s.rint_ohm
    assert value(sim, "BTEM") == (1, (s.bms_temp_c,))
    assert p.decode_erro(value(sim, "ERRO")[1]) == p.ErrorState(True, 1, 3, 9)
    lcd3 = p.decode_lcd3(value(sim, "LCD3")[1])
    assert s.cells_v[lcd3.max_cell - 1] == max(s.cells_v) and lcd3.ah == s.lcd3_ah


def test_ptem_padding_slots():
    sim = make_sim(sensors=2, ptem_slots=4)
    temps = value(sim, "PTEM")[1]
    assert len(temps) == 4 and list(temps[:2]) == sim.state.temps_c and temps[2] > 3.0


def test_set_persists_and_answers_set():
    sim = make_sim()
    assert ask(sim, p.set_request("CHAR", "3.55", 1))[0].payload == b"SET"
    assert sim.state.settings["CHAR"] == 3.55 and value(sim, "CHAR") == pytest.approx(3.55)
    assert ask(sim, p.set_request("CHEM", "4", 1))[0].payload == b"SET"
    assert value(sim, "CHEM") == 4
    assert ask(sim, p.set_request("SOCS", "0.5", 1))[0].payload == b"SET"
    assert p.decode_lcd1(value(sim, "LCD1")[1]).soc == pytest.approx(0.5)
    assert sim.writes_received == [("CHAR", "3.55"), ("CHEM", "4"), ("SOCS", "0.5")]


@pytest.mark.parametrize("payload", [
    "CHAR 4.5",  # above max
    "CHAR 1.9",  # below min
    "CHAR3.55",  # missing space (REC: ERROR1)
    "CHAR 3.5e0",  # exponent form
    "CHAR abc",
    "CHEM 2.5",  # integer instruction
    "LCD1 3",  # read-only instruction with a value
])
def test_bad_sets_answer_error1_and_change_nothing(payload):
    sim = make_sim()
    before = dict(sim.state.settings)
    [frame] = ask(sim, p.encode(1, payload))
    assert frame.payload == b"ERROR1"
    assert sim.state.settings == before


def test_unknown_instruction_silent_or_error():
    assert ask(make_sim(), p.query("XXXX", 1)) == []
    assert ask(make_sim(unknown="error"), p.query("XXXX", 1))[0].payload == b"ERROR1"


def test_ignores_other_addresses_bad_crc_and_slave_sources():
    sim = make_sim(address=6)
    assert ask(sim, p.query("CAPA", 1)) == []
    assert value(sim, "CAPA", address=6) == 450.0
    bad = bytearray(p.query("CAPA", 6))
    bad[-2] ^= 1
    assert ask(sim, bytes(bad)) == []
    assert ask(sim, p.encode(6, "CAPA?", src=3)) == []
    assert sim.ignored["address"] == 2 and sim.ignored["checksum"] == 1


def test_requests_in_any_chunking():
    sim = make_sim()
    request = p.query("CAPA", 1) + p.query("CYCL", 1)
    out = []
    for b in request:
        out.extend(sim.handle(bytes((b,))))
    assert len(out) == 2 and list(sim.request_log) == ["CAPA", "CYCL"]


def test_busy_moments_silent_and_late():
    silent = make_sim(busy_rate=1.0, busy="silent")
    assert silent.handle(p.query("LCD1", 1)) == []
    late = make_sim(busy_rate=1.0, busy="late", busy_delay=0.7)
    [tx] = late.handle(p.query("LCD1", 1))
    assert tx.delay_s == 0.7
    normal = make_sim()
    [tx] = normal.handle(p.query("LCD1", 1))
    assert 0 < tx.delay_s < 0.35
    mixed = make_sim(busy_rate=1.0, seed=3)
    for _ in range(20):
        mixed.handle(p.query("LCD1", 1))
    assert mixed.busy_events["silent"] > 0 and mixed.busy_events["late"] > 0


def test_first_frame_only():
    sim = make_sim(first_only_rate=1.0)
    frames = ask(sim, p.query("CELL", 1))
    assert [f.payload for f in frames] == [b"1"]
    assert len(ask(sim, p.query("CAPA", 1))) == 1  # single values are whole


def test_aa_values_put_markers_inside_the_cell_data():
    sim = make_sim(aa_values=True)
    data = ask(sim, p.query("CELL", 1))[1].payload
    assert data.count(0xAA) >= 14 and data.count(0x55) >= 14
    assert list(value(sim, "CELL")[1]) == sim.state.cells_v


def test_faults_corrupt_and_wrong_answers_are_detectable():
    sim = make_sim(fault=["checksum"], seed=1)
    for name in ("CELL", "CAPA"):
        out = b"".join(tx.data for tx in sim.handle(p.query(name, 1)))
        events = list(p.FrameParser().events(out))
        assert any(not isinstance(e, p.Frame) for e in events)
    sim = make_sim(fault=["wrong"])
    for name in ("LCD1", "CELL", "ERRO", "CAPA", "BTEM"):
        frames = ask(sim, p.query(name, 1))
        ans = p.Answer(INSTRUCTIONS[name], 1)
        with pytest.raises(p.ProtocolError):
            for frame in frames:
                ans.add(frame)
            ans.result()


def test_drift_moves_values_and_frozen_does_not():
    now = [0.0]
    options = resolve_options(RecSimulator.all_options(), {"current": 50.0, "period": 100})
    sim = RecSimulator(options, clock=lambda: now[0])
    before = list(sim.state.cells_v)
    now[0] = 25.0
    sim.handle(p.query("LCD1", 1))
    assert sim.state.current_a == pytest.approx(50.0, rel=1e-3)
    assert sim.state.cells_v != before
    frozen = make_sim()
    before = list(frozen.state.cells_v)
    frozen.handle(p.query("LCD1", 1))
    assert frozen.state.cells_v == before


def test_every_settable_default_is_inside_its_range():
    sim = make_sim()
    for name, ins in SETTABLE.items():
        assert ins.min <= sim.state.settings[name] <= ins.max, name


def test_built_from_text_options_like_sim_urls():
    sim = build_simulator("rec", {"cells": "16", "address": "3", "baudrate": "38400"})
    assert isinstance(sim, RecSimulator)
    assert len(sim.state.cells_v) == 16 and sim.state.address == 3
    assert sim.port_settings.baudrate == 38400
    assert build_simulator("rec", {}).port_settings.baudrate == 56000
