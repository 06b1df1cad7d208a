"""The Grafana dashboards: valid structure, declared names only, and data behind every query.

The data test runs the real logger (``LoggerService``, the same object ``run`` and
``once`` use) against the simulators of all five device plugins into a real InfluxDB 1.x,
then executes every panel's and every variable's InfluxQL with Grafana's variables
substituted the way Grafana does (multi-value "All" as an escaped regex alternation) and
requires at least one non-null value back.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
TAG_KEYS = {"device", "plugin", "pack", "cell", "sensor", "sink", "task"}
#: the logger's own ``bmslogger`` measurement is declared in bmslogger.selfmetrics, like a
#: plugin's fields.py; errors_<kind> is declared by prefix (and selected by regex)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_queries(dash: dict) -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and every query variable."""
    for p in dash["panels"]:
        for t in p.get("targets", ()):
            yield f"{dash['uid']} panel {p['id']} {p['title']!r} {t['refId']}", t["query"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            yield f"{dash['uid']} variable {v['name']}", v["query"]


def declared_fields() -> dict[str, set[str]]:
    """measurement -> fields, from every installed plugin's declared field list and the
    logger's own declaration (`bmslogger.selfmetrics`)."""
    from bmslogger import selfmetrics
    from bmslogger.manager import build_registry

    out: dict[str, set[str]] = {selfmetrics.MEASUREMENT: selfmetrics.field_names()}
    for dtype in build_registry().devices.values():
        for f in dtype.load_fields():
            out.setdefault(f.measurement, set()).add(f.field)
    return out


def names_in(query: str) -> tuple[list[str], list[str], list[str]]:
    """(measurements, fields, tags) a query names, by its InfluxQL clauses."""
    measurements = re.findall(r'FROM "([^"]+)"', query)
    tags = re.findall(r'WITH KEY = "([^"]+)"', query)
    fields: list[str] = []
    m = re.match(r"SELECT (.*?) FROM ", query)
    if m:
        cols = re.sub(r' AS "[^"]*"', "", m.group(1))
        fields = re.findall(r'"([^"]+)"', cols)
    for clause in re.findall(r"(?:WHERE|GROUP BY) (.*?)(?= GROUP BY | fill\(|$)", query):
        tags += re.findall(r'"([^"]+)"', clause)
    return measurements, fields, tags


# --- structure --------------------------------------------------------------------------------


def test_the_expected_dashboards_exist():
    names = {p.name for p in DASHBOARDS}
    for family in ("overview", "daly", "emus", "rec", "pace", "tristar", "health"):
        assert f"bmslogger-{family}.json" in names


def test_committed_json_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], (
            f"{path.name} is stale: run python grafana/generate.py")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path):
    dash = load(path)
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and len(dash["uid"]) <= 40 and dash["title"]
    # importable: one datasource input, and panels bound to the datasource variable
    assert [i["type"] for i in dash["__inputs"]] == ["datasource"]
    assert dash["__inputs"][0]["pluginId"] == "influxdb"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "influxdb"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[x, y]}"
                cells[x, y] = p["id"]
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']} has no query"
        assert p["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
    # every $variable a query uses is defined (or a Grafana built-in)
    builtins = {"timeFilter", "__interval", "tag_device", "tag_pack", "tag_cell",
                "tag_sensor", "tag_sink", "col"}
    for where, query in all_queries(dash):
        for name in re.findall(r"\$(\w+)", query):
            assert name in variables or name in builtins, f"{where}: ${name} undefined"
        assert "$timeFilter" in query or query.startswith("SHOW "), where


def is_declared(measurement: str, field: str, declared: dict[str, set[str]]) -> bool:
    """By name, or for ``bmslogger`` by a declared prefix (``errors_*``)."""
    from bmslogger import selfmetrics

    if field in declared.get(measurement, ()):
        return True
    return measurement == selfmetrics.MEASUREMENT and selfmetrics.is_declared(field)


def test_dashboards_name_only_declared_measurements_fields_and_tags():
    declared = declared_fields()
    seen_fields: set[tuple[str, str]] = set()
    seen_measurements = set()
    for path in DASHBOARDS:
        for where, query in all_queries(load(path)):
            measurements, fields, tags = names_in(query)
            assert measurements, f"{where}: no measurement in {query}"
            for m in measurements:
                assert m in declared, f"{where}: measurement {m!r} is declared by no plugin"
                seen_measurements.add(m)
                for f in fields:
                    assert is_declared(m, f, declared), f"{where}: {m}.{f} is declared by no " \
                                                        "plugin (nor bmslogger.selfmetrics)"
                    seen_fields.add((m, f))
            for t in tags:
                assert t in TAG_KEYS, f"{where}: unknown tag {t!r}"
    # the parser really sees names: a known-bad query is caught
    assert names_in('SELECT mean("volts") AS "v" FROM "battery" WHERE "device" =~ /^a$/ '
                    'AND $timeFilter GROUP BY time(1m), "device" fill(null)') == (
        ["battery"], ["volts"], ["device", "device"])
    assert {"battery", "cell", "temperature", "alarm", "charger", "bmslogger"} <= seen_measurements
    # the logger-health dashboard's fields really went through the bmslogger declaration
    assert {("bmslogger", "poll_duration_s"), ("bmslogger", "spool_points")} <= seen_fields
    assert not is_declared("bmslogger", "poll_duration", declared)
    assert is_declared("bmslogger", "errors_timeout", declared)


def test_provisioning_files_point_at_the_dashboards():
    ds = (GRAFANA / "provisioning" / "datasources" / "bmslogger.yaml").read_text()
    assert "type: influxdb" in ds and "apiVersion: 1" in ds and "dbName:" in ds
    prov = (GRAFANA / "provisioning" / "dashboards" / "bmslogger.yaml").read_text()
    assert "type: file" in prov and "path: /var/lib/grafana/dashboards/bmslogger" in prov
    readme = (ROOT / "README.md").read_text()
    assert "/var/lib/grafana/dashboards/bmslogger" in readme
    assert "/etc/grafana/provisioning" in readme


# --- against real data ------------------------------------------------------------------------


CONFIG = """\
[logger]
interval = "10s"
state_dir = "{d}/state"
spool_dir = "{d}/spool"
lock_dir = "{d}/locks"
spool_fsync = "never"

[[devices.daly]]
name = "daly-sim"
port = "sim://daly?cells=8&sensors=2&fault=checksum,noise&fault_rate=0.2&seed=3"
read_info = true

[[devices.emus]]
name = "emus-sim"
port = "sim://emus?cells=8"

[[devices.rec]]
name = "rec-sim"
port = "sim://rec?cells=4"
read_settings = true

[[devices.pace]]
name = "pace-sim"
port = "sim://pace?packs=2&cells=8"

[[devices.tristar]]
name = "tristar-sim"
port = "sim://tristar"

[sinks.influxdb]
version = 1
url = "{url}"
database = "{db}"
create_database = true
batch_size = 5000
flush_interval = "100ms"
"""

ROUNDS = 3


@pytest.fixture(scope="module")
def loaded(influx1_server, tmp_path_factory) -> tuple[Any, str]:
    """Five simulated devices logged by the real runtime into a fresh database."""
    from bmslogger.config import load_config
    from bmslogger.manager import build_registry
    from bmslogger.runtime import LoggerService

    folder = tmp_path_factory.mktemp("grafana")
    db = "g" + uuid.uuid4().hex[:10]
    path = folder / "logger.toml"
    path.write_text(CONFIG.format(d=folder, url=influx1_server.url, db=db))
    registry = build_registry()
    config = load_config(str(path), registry)
    service = LoggerService(config, registry)
    service.pipeline.start()
    try:
        for i in range(ROUNDS):
            for poller in service.pollers:
                result = service.poll_and_submit(poller)
                assert result.points, f"{poller.device.name}: {result.errors}"
            if i < ROUNDS - 1:
                time.sleep(1.1)  # distinct timestamps, so series have several points
        for poller in service.pollers:
            for task in registry.device(poller.device.plugin).tasks:
                service.poll_and_submit(poller, task.name)
        service.pipeline.submit(service.sink_metrics())
    finally:
        service.pipeline.close(60)
    assert service.pipeline.unsent() == 0
    return influx1_server, db


def grafana_regex(values: list[str]) -> str:
    """Grafana's InfluxQL formatting of a multi-value variable inside /^...$/."""
    esc = [re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", v) for v in values]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def substitute(query: str, variables: dict[str, list[str]]) -> str:
    q = query.replace("$timeFilter", "time >= now() - 2d AND time <= now() + 1h")
    q = q.replace("$__interval", "1h")
    for name in sorted(variables, key=len, reverse=True):
        q = q.replace("$" + name, grafana_regex(variables[name]))
    return q


def values_of(server: Any, db: str, query: str) -> list[Any]:
    out = []
    for series in server.query(query, db):
        for row in series.get("values", []):
            out.extend(v for v in row[1:] if v is not None)
    return out


@pytest.mark.servers
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_returns_data_from_the_simulators(loaded, path):
    server, db = loaded
    dash = load(path)
    variables: dict[str, list[str]] = {}
    # variables in order, each substituted with "All" of what its own query returns
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = substitute(v["query"], variables)
        found = [row[1] for s in server.query(q, db) for row in s["values"]]
        assert found, f"variable {v['name']} of {dash['uid']} found nothing: {q}"
        variables[v["name"]] = sorted(set(found))
    empty = []
    for where, query in all_queries(dash):
        if where.split()[1] == "variable":
            continue
        if not values_of(server, db, substitute(query, variables)):
            empty.append(f"{where}: {substitute(query, variables)}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    if dash["uid"] == "bmslogger-overview":
        assert set(variables["device"]) == {"daly-sim", "emus-sim", "rec-sim", "pace-sim"}
    if dash["uid"] == "bmslogger-pace":
        assert variables["pack"] == ["1", "2"]
    if dash["uid"] == "bmslogger-health":
        assert "influxdb" in variables["sink"]


@pytest.mark.servers
def test_a_query_for_an_undeclared_field_would_be_caught(loaded):
    """The data check is not vacuous: a misspelt field returns nothing."""
    server, db = loaded
    q = substitute('SELECT mean("voltage") FROM "battery" WHERE "device" =~ /^$device$/ AND '
                   "$timeFilter GROUP BY time($__interval)", {"device": ["daly-sim"]})
    assert values_of(server, db, q) == []
    q = q.replace('"voltage"', '"voltage_v"')
    assert values_of(server, db, q)
