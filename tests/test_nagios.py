"""Nagios ranges and check output for ``read --check``."""

from __future__ import annotations

import pytest

from bmslogger.model import Point
from bmslogger.nagios import CRITICAL, OK, UNKNOWN, WARNING, Range, Threshold, evaluate


@pytest.mark.parametrize(
    ("spec", "alerting", "quiet"),
    [("10", [-1, 11], [0, 5, 10]), ("10:", [9.9], [10, 1e9]), ("~:10", [10.1], [-1e9, 10]),
     ("10:20", [9, 21], [10, 15, 20]), ("@10:20", [10, 15, 20], [9, 21])],
)
def test_range_follows_nagios_guidelines(spec: str, alerting: list, quiet: list) -> None:
    rng = Range.parse(spec)
    assert all(rng.alerts(v) for v in alerting)
    assert not any(rng.alerts(v) for v in quiet)


def test_bad_range_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a Nagios range"):
        Range.parse("ten")
    with pytest.raises(ValueError, match="start above its end"):
        Range.parse("20:10")


def _points(soc: float, alarms: int = 0) -> list[Point]:
    return [
        Point("battery", {"device": "d"}, {"voltage_v": 52.1, "current_a": -3.5, "soc_pct": soc},
              0),
        Point("alarm", {"device": "d"}, {"active_count": alarms}, 0),
    ]


def test_levels_and_perfdata() -> None:
    warn = [Threshold.parse("soc_pct=30:")]
    crit = [Threshold.parse("soc_pct=10:")]
    status, text = evaluate("daly", _points(76.5), warn, crit, silent=False)
    assert status == OK
    assert text.startswith("DALY OK - 52.1 V, -3.5 A, 76.5 %")
    assert "| voltage_v=52.1 current_a=-3.5 soc_pct=76.5" in text
    assert evaluate("daly", _points(20), warn, crit, silent=False)[0] == WARNING
    status, text = evaluate("daly", _points(5), warn, crit, silent=False)
    assert status == CRITICAL and "soc_pct=5 (CRITICAL range 10:)" in text


def test_active_alarm_warns_and_silence_is_unknown() -> None:
    status, text = evaluate("daly", _points(80, alarms=2), [], [], silent=False)
    assert status == WARNING and "2 alarm(s) active" in text
    assert evaluate("daly", [], [], [], silent=True)[0] == UNKNOWN
    missing = [Threshold.parse("battery.soh_pct=80:")]
    assert evaluate("daly", _points(80), missing, [], silent=False)[0] == UNKNOWN
