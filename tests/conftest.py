"""Suite-wide rules.

Tests that need a real server (InfluxDB, MariaDB, Mosquitto, ...) are marked
``@pytest.mark.servers`` and skip with a reason on a machine without it. CI sets
``BMSLOGGER_REQUIRE_SERVERS=1``: there such a skip is turned into a failure, so a missing
install step can never pass as green.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("BMSLOGGER_REQUIRE_SERVERS") == "1"
        and item.get_closest_marker("servers") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"BMSLOGGER_REQUIRE_SERVERS=1 but the test skipped: {reason}"
