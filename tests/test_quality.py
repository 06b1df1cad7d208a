"""Plausibility checks: values outside physical limits never reach a sink, packs whose
cells do not add up are counted, each problem is logged once; and a real Daly poll over a
pty whose simulated cell reads 0 V loses that cell, not the rest."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bmslogger.manager import build_registry
from bmslogger.model import DeviceConfig, Point
from bmslogger.options import resolve_options
from bmslogger.quality import LIMITS, PlausibilityCheck, out_of_range
from bmslogger.runtime import DevicePoller
from bmslogger.simline import build_simulator, serve_pty

LOG = logging.getLogger("test-quality")
TAGS = {"device": "bank", "plugin": "daly", "pack": "1"}


def cell(n: int, volts: float, **extra: object) -> Point:
    return Point("cell", {**TAGS, "cell": str(n)}, {"voltage_v": volts, **extra}, 1)


def battery(volts: float, **extra: object) -> Point:
    return Point("battery", TAGS, {"voltage_v": volts, **extra}, 1)


def test_an_impossible_value_is_removed_and_the_rest_kept():
    check = PlausibilityCheck(LOG)
    points = [battery(13.2, soc_pct=250.0, current_a=-3.5), cell(1, 3.3), cell(2, 0.0),
              cell(3, 3.3, temperature_c=float("nan")), cell(4, 6.6),
              Point("daly_status", TAGS, {"voltage_v": 0.0, "charging": False}, 1)]
    out, counts = check.apply(points)
    assert counts == {"implausible": 4}
    assert out[0].fields == {"voltage_v": 13.2, "current_a": -3.5}  # soc 250 % removed
    assert [p.tags.get("cell") for p in out if p.measurement == "cell"] == ["1", "3"]
    assert out[2].fields == {"voltage_v": 3.3}  # NaN temperature removed, voltage kept
    # a brand measurement is the plugin's business: its fields are not judged here
    assert out[-1].fields == {"voltage_v": 0.0, "charging": False}


def test_cells_that_do_not_add_up_are_counted_and_kept(caplog):
    check = PlausibilityCheck(LOG)
    good = [battery(13.25), *(cell(n, 3.3) for n in range(1, 5))]
    assert check.apply(good) == (good, {})
    bad = [battery(26.4), *(cell(n, 3.3) for n in range(1, 5))]  # 13.2 V of cells
    with caplog.at_level(logging.WARNING):
        out, counts = check.apply(bad)
    assert out == bad and counts == {"inconsistent": 1}
    assert "cells add up to 13.200 V" in caplog.text
    # a pack with a broken cell is the range check's problem, not a second complaint
    broken = [battery(13.2, cell_min_v=0.0, cell_max_v=3.3), cell(1, 0.0),
              *(cell(n, 3.3) for n in range(2, 5))]
    out, counts = check.apply(broken)
    assert counts == {"implausible": 3}  # the cell, and the min and max taken over it
    assert out[0].fields == {"voltage_v": 13.2}


def test_each_problem_is_logged_once_until_it_recovers(caplog):
    check = PlausibilityCheck(LOG)
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            check.apply([cell(2, 0.0)])
        check.apply([cell(2, 3.3)])
        check.apply([cell(2, 0.0)])
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "cell.voltage_v (pack=1, cell=2) = 0.0" in warnings[0].message
    assert sum("plausible again" in r.message for r in caplog.records) == 1


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(),
                    st.text(max_size=3))


@given(st.lists(st.tuples(st.sampled_from(["battery", "cell", "temperature", "alarm"]),
                          st.dictionaries(st.sampled_from(sorted({f for _, f in LIMITS})),
                                          numbers, min_size=1, max_size=4)), max_size=8))
def test_whatever_comes_in_only_plausible_values_go_out(rows):
    points = [Point(m, {**TAGS, "cell": str(i)}, fields, 1) for i, (m, fields) in enumerate(rows)]
    out, counts = PlausibilityCheck(LOG).apply(points)
    for p in out:
        assert p.fields, "a point without fields is dropped"
        for name, value in p.fields.items():
            assert not out_of_range(p.measurement, name, value)
    removed = sum(len(p.fields) for p in points) - sum(len(p.fields) for p in out)
    assert removed == counts.get("implausible", 0)
    nans = [v for p in points for k, v in p.fields.items()
            if (p.measurement, k) in LIMITS and isinstance(v, float) and math.isnan(v)]
    assert counts.get("implausible", 0) >= len(nans)  # NaN is never a measurement


def test_a_daly_cell_reading_zero_volts_is_not_written(tmp_path: Path):
    registry = build_registry()
    daly = registry.devices["daly"]
    sim = build_simulator("daly", {"cells": "4", "sensors": "1", "drift": "false"}, registry)
    with serve_pty(sim) as server:
        device = DeviceConfig(name="bank", plugin="daly", port=server.path, interval_s=1.0,
                              port_settings=daly.port_defaults,
                              options=resolve_options(daly.options, {}), lock_timeout_s=1.0)
        poller = DevicePoller(device, daly, str(tmp_path / "locks"))
        first = poller.run()
        assert first.complete
        assert len([p for p in first.points if p.measurement == "cell"]) == 4
        sim.state.cells_mv[2] = 0  # cell 3's sense wire came loose, or the frame lies
        second = poller.run()
    cells = {p.tags["cell"]: p.fields["voltage_v"] for p in second.points
             if p.measurement == "cell" and "voltage_v" in p.fields}
    assert sorted(cells) == ["1", "2", "4"] and all(3.0 < v < 3.6 for v in cells.values())
    (metrics,) = [p for p in second.points if p.measurement == "bmslogger"]
    assert metrics.fields["errors_implausible"] >= 1
    (pack,) = [p for p in second.points if p.measurement == "battery"]
    # min/max/avg/delta were computed over the zero: gone too; the pack voltage stays
    assert not {"cell_min_v", "cell_max_v", "cell_avg_v", "cell_delta_v"} & set(pack.fields)
    assert 9.0 < pack.fields["voltage_v"] < 14.0 and "current_a" in pack.fields
