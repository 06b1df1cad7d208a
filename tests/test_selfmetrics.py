"""The ``bmslogger`` measurement's declaration (`bmslogger.selfmetrics`) against what the
logger really writes: real polls of simulated devices through the real runtime and
pipeline into the real CSV sink, plus `sink_metrics()`. Every field written must be
declared (by name, or by the ``errors_`` prefix) with the declared type, and every
declared field must be written."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from bmslogger import selfmetrics
from bmslogger.model import FieldSpec, Point

CONFIG = """\
[logger]
interval = "10s"
state_dir = "{d}/state"
spool_dir = "{d}/spool"
lock_dir = "{d}/locks"
spool_fsync = "never"

[[devices.daly]]
name = "bank"
port = "sim://daly?cells=4&fault=checksum,noise&fault_rate=0.3&seed=4"

[[devices.tristar]]
name = "mppt"
port = "sim://tristar"

[sinks.csv]
directory = "{d}/data"
"""

PY_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Any]:
    """Two polls of each device, each device's scheduled tasks, then the sink metrics of
    a pipeline that has written: every ``bmslogger`` point the logger made."""
    from bmslogger.config import load_config
    from bmslogger.manager import build_registry
    from bmslogger.runtime import LoggerService
    from bmslogger.simline import forget_sim_ports

    forget_sim_ports()
    folder = tmp_path_factory.mktemp("selfmetrics")
    path = folder / "logger.toml"
    path.write_text(CONFIG.format(d=folder))
    registry = build_registry()
    service = LoggerService(load_config(str(path), registry), registry)
    points: list[Point] = []
    service.pipeline.start()
    try:
        for _ in range(2):
            for poller in service.pollers:
                points += service.poll_and_submit(poller).points
        for poller in service.pollers:
            for task in registry.device(poller.device.plugin).tasks:
                points += service.poll_and_submit(poller, task.name).points
        assert service.pipeline.flush(30), "the CSV sink did not take the polls"
        sink_points = service.sink_metrics()
        service.pipeline.submit(sink_points)
        points += sink_points
    finally:
        service.pipeline.close(30)
    forget_sim_ports()
    return {"points": [p for p in points if p.measurement == "bmslogger"],
            "csv": folder / "data" / "bmslogger"}


def declared_spec(name: str) -> FieldSpec | None:
    for spec in selfmetrics.FIELDS:
        if spec.field == name:
            return spec
    for spec in selfmetrics.PATTERNS:
        if name.startswith(spec.field.rstrip("*")):
            return spec
    return None


def test_every_written_field_is_declared_with_its_type(written):
    assert written["points"], "no bmslogger points"
    for p in written["points"]:
        assert set(p.tags) <= set(selfmetrics.TAGS), p.tags
        for name, value in p.fields.items():
            spec = declared_spec(name)
            assert spec is not None, f"bmslogger.{name} is written but not declared"
            assert selfmetrics.is_declared(name)
            assert type(value) is PY_TYPES[spec.type], (name, value, spec.type)


def test_every_declared_field_and_tag_is_written(written):
    names = {n for p in written["points"] for n in p.fields}
    # stale bytes need a device answering after its deadline, which this run may not see
    optional = {"stale_bytes_dropped"}
    for spec in selfmetrics.FIELDS:
        assert spec.field in names or spec.field in optional, (
            f"bmslogger.{spec.field} is declared but never written")
    # a retry is not a failure: it has its own field, not an errors_ one
    assert "request_retries" in names and "errors_retry" not in names
    for spec in selfmetrics.PATTERNS:
        prefix = spec.field.rstrip("*")
        assert any(n.startswith(prefix) for n in names), spec.field
    # the faulty simulator's checksum errors appear under their kind's name
    assert "errors_checksum" in names and "checksum" in selfmetrics.ERROR_KINDS
    tags = {t for p in written["points"] for t in p.tags}
    # clock is set only while the wall clock cannot be trusted
    assert tags == set(selfmetrics.TAGS) - {"clock"}


def test_device_and_sink_points_are_told_apart_by_their_tags(written):
    device_names = {f.field for f in selfmetrics.DEVICE_FIELDS}
    sink_names = {f.field for f in selfmetrics.SINK_FIELDS}
    assert not device_names & sink_names
    for p in written["points"]:
        fixed = set(p.fields) - {n for n in p.fields if n.startswith("errors_")}
        if "sink" in p.tags:
            assert p.tags == {"sink": "csv"} and fixed <= sink_names
            assert p.fields["written"] > 0 and "last_success" in p.fields
        else:
            # the counters that are not failures appear once they have counted something
            optional = set(selfmetrics.COUNTER_FIELDS.values())
            assert p.tags["device"] in ("bank", "mppt")
            assert device_names - optional <= fixed <= device_names


def test_the_csv_file_holds_only_declared_columns(written):
    files = sorted(Path(written["csv"]).glob("bmslogger-*.csv"))
    assert files
    columns = set()
    for path in files:
        with open(path, newline="", encoding="utf-8") as fh:
            columns |= set(next(csv.reader(fh)))
    columns.discard("time")
    undeclared = {c for c in columns
                  if c not in selfmetrics.TAGS and not selfmetrics.is_declared(c)}
    assert not undeclared
    assert {"poll_duration_s", "queued", "spool_bytes", "errors_checksum"} <= columns


def test_declaration_is_complete_and_helpers_agree():
    for spec in selfmetrics.FIELDS + selfmetrics.PATTERNS:
        assert spec.measurement == "bmslogger" and spec.description
        assert spec.type in PY_TYPES
    assert selfmetrics.is_declared("errors_timeout") and not selfmetrics.is_declared("errors_")
    assert not selfmetrics.is_declared("poll_duration")  # names carry their unit
    assert selfmetrics.unit_of("poll_duration_s") == "s"
    assert selfmetrics.unit_of("spool_bytes") == "B" and selfmetrics.unit_of("nope") == ""
    # every error kind the core's error types count is documented
    errors_module_kinds = {c.kind for c in _error_types() if "kind" in c.__dict__}
    assert errors_module_kinds <= set(selfmetrics.ERROR_KINDS), (
        errors_module_kinds - set(selfmetrics.ERROR_KINDS))


def _error_types() -> list[type]:
    import bmslogger.errors as errors

    return [v for v in vars(errors).values()
            if isinstance(v, type) and issubclass(v, Exception)
            and v.__module__ == "bmslogger.errors"]
