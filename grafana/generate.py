"""Builds the Grafana dashboards in ``grafana/dashboards/`` from one readable description.

Why a generator: seven dashboards share a datasource variable, a device variable, panel
shapes and a grid layout, and hand-editing that much JSON drifts. The JSON files are
committed (importable without Python); ``tests/test_grafana.py`` fails when they differ
from what this script writes, so run ``python grafana/generate.py`` after editing it.

Every query is InfluxQL (InfluxDB 1.x, 2.x through a DBRP mapping, 3.x) and names only
measurements, fields and tags the plugin READMEs declare (the test checks that too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
SCHEMA_VERSION = 39
DS = {"type": "influxdb", "uid": "${datasource}"}
DEV = '"device" =~ /^$device$/'


# --- queries ---------------------------------------------------------------------------------


def select(
    measurement: str,
    fields: list[str],
    agg: str = "mean",
    by: tuple[str, ...] = ("device",),
    where: str = DEV,
    interval: str = "$__interval",
    fill: str = "null",
) -> str:
    """One InfluxQL SELECT: each field aggregated under its own name, grouped by time."""
    cols = ", ".join(f'{agg}("{f}") AS "{f}"' for f in fields)
    group = ", ".join([f"time({interval})"] + [f'"{t}"' for t in by])
    return (f'SELECT {cols} FROM "{measurement}" WHERE {where} AND $timeFilter '
            f"GROUP BY {group} fill({fill})")


def latest(measurement: str, fields: list[str], by: tuple[str, ...] = ("device",),
           where: str = DEV) -> str:
    """The newest value of each field per series (stats and tables)."""
    cols = ", ".join(f'last("{f}") AS "{f}"' for f in fields)
    group = ", ".join(f'"{t}"' for t in by)
    return f'SELECT {cols} FROM "{measurement}" WHERE {where} AND $timeFilter GROUP BY {group}'


def target(query: str, alias: str = "", ref: str = "A", fmt: str = "time_series") -> dict:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "query": query, "rawQuery": True,
                         "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


# --- panels ----------------------------------------------------------------------------------


def panel(kind: str, title: str, targets: list[dict], w: int = 12, h: int = 8,
          unit: str = "", description: str = "", **options: Any) -> dict:
    """A panel without id and position; `Layout` assigns both."""
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    p: dict[str, Any] = {
        "type": kind, "title": title, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "_w": w, "_h": h,
    }
    if description:
        p["description"] = description
    if kind == "timeseries":
        defaults["custom"] = {"spanNulls": False, "showPoints": "never", "lineWidth": 1}
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "value_and_name"}
    elif kind == "state-timeline":
        p["options"] = {"showValue": "never", "mergeValues": True, "rowHeight": 0.9,
                        "legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True}}
    elif kind == "table":
        p["options"] = {"showHeader": True}
        p["transformations"] = [{"id": "merge", "options": {}}]
    p.update(options)
    return p


def ts(title: str, *targets: dict, unit: str = "", w: int = 12, h: int = 8,
       description: str = "") -> dict:
    return panel("timeseries", title, list(targets), w=w, h=h, unit=unit,
                 description=description)


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "_w": 24, "_h": 1}


class Layout:
    """Places panels left to right, wrapping at 24 columns; rows span the width."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[dict] = []

    def add(self, p: dict) -> None:
        w, h = p.pop("_w"), p.pop("_h")
        if self.x + w > 24:
            self.y += self.row_h
            self.x = self.row_h = 0
        p["id"] = self.next_id
        self.next_id += 1
        p["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)


# --- dashboards ------------------------------------------------------------------------------


def device_var(measurement: str, plugin: str = "", key: str = "device",
               label: str = "Device") -> dict:
    where = f" WHERE \"plugin\" = '{plugin}'" if plugin else ""
    query = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"{where}'
    return {
        "name": key, "label": label, "type": "query", "datasource": DS,
        "query": query, "definition": query, "refresh": 2, "sort": 1,
        "multi": True, "includeAll": True, "current": {}, "options": [], "hide": 0,
    }


def dashboard(uid: str, title: str, description: str, variables: list[dict],
              panels: list[dict], tags: tuple[str, ...] = ()) -> dict:
    layout = Layout()
    for p in panels:
        layout.add(p)
    datasource_var = {
        "name": "datasource", "label": "InfluxDB", "type": "datasource", "query": "influxdb",
        "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
    }
    return {
        "__inputs": [{"name": "DS_INFLUXDB", "label": "InfluxDB", "description":
                      "InfluxDB (InfluxQL) with bmslogger data", "type": "datasource",
                      "pluginId": "influxdb", "pluginName": "InfluxDB"}],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
            {"type": "datasource", "id": "influxdb", "name": "InfluxDB", "version": "1.0.0"},
        ],
        "uid": uid, "title": title, "description": description,
        "tags": ["bmslogger", *tags], "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "browser",
        "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [datasource_var, *variables]},
        "annotations": {"list": []}, "links": [
            {"type": "dashboards", "tags": ["bmslogger"], "asDropdown": True,
             "title": "bmslogger", "includeVars": True, "keepTime": True},
        ],
        "panels": layout.panels,
    }


def battery_core(alias: str = "$tag_device") -> list[dict]:
    """Pack voltage, current, power and SOC: the panels every battery has."""
    return [
        ts("Pack voltage", target(select("battery", ["voltage_v"]), alias), unit="volt"),
        ts("Current (+ charging)", target(select("battery", ["current_a"]), alias),
           unit="amp"),
        ts("Power", target(select("battery", ["power_w"]), alias), unit="watt"),
        ts("State of charge", target(select("battery", ["soc_pct"]), alias), unit="percent"),
    ]


def cell_spread() -> list[dict]:
    return [
        ts("Cell min / max",
           target(select("battery", ["cell_min_v"]), "$tag_device min"),
           target(select("battery", ["cell_max_v"]), "$tag_device max"), unit="volt"),
        ts("Cell delta (max - min)", target(select("battery", ["cell_delta_v"]),
                                            "$tag_device"), unit="volt"),
    ]


def cells(by: tuple[str, ...] = ("device", "cell"), alias: str = "$tag_device cell $tag_cell",
          balancing: bool = True) -> list[dict]:
    """Per-cell voltages, and the balancing flag of each cell as a state timeline."""
    out = [ts("Cell voltages", target(select("cell", ["voltage_v"], by=by), alias),
              unit="volt", w=24, h=10)]
    if balancing:
        out.append(panel("state-timeline", "Balancing per cell",
                         [target(select("cell", ["balancing"], agg="last", by=by), alias)],
                         w=24, h=10))
    return out


def temperatures(by: tuple[str, ...] = ("device", "sensor"),
                 alias: str = "$tag_device sensor $tag_sensor") -> dict:
    return ts("Temperature sensors", target(select("temperature", ["temperature_c"], by=by),
                                            alias), unit="celsius")


def alarm_panels(plugin_alarms: list[str] | None = None) -> list[dict]:
    out = [ts("Active alarms", target(select("alarm", ["active_count"], agg="max"),
                                      "$tag_device"), w=12)]
    if plugin_alarms:
        out.append(panel("state-timeline", "Alarm flags",
                         [target(select("alarm", plugin_alarms, agg="last"),
                                 "$tag_device $col")], w=24, h=12))
    return out


def alarm_flags(plugin: str) -> list[str]:
    """The plugin's boolean alarm fields, from its declared field list."""
    from bmslogger.manager import build_registry

    fields = build_registry().device(plugin).load_fields()
    return [f.field for f in fields if f.measurement == "alarm" and f.type == "bool"]


def overview() -> dict:
    stats = [
        panel("stat", "State of charge", [target(latest("battery", ["soc_pct"]),
                                                 "$tag_device")], w=6, h=5, unit="percent"),
        panel("stat", "Pack voltage", [target(latest("battery", ["voltage_v"]),
                                              "$tag_device")], w=6, h=5, unit="volt"),
        panel("stat", "Current", [target(latest("battery", ["current_a"]), "$tag_device")],
              w=6, h=5, unit="amp"),
        panel("stat", "Active alarms", [target(latest("alarm", ["active_count"]),
                                               "$tag_device")], w=6, h=5),
    ]
    panels = [
        row("Now"), *stats,
        row("Pack"), *battery_core(),
        ts("State of health", target(select("battery", ["soh_pct"]), "$tag_device"),
           unit="percent", description="Only BMS that report it (REC, PACE)."),
        ts("Remaining capacity", target(select("battery", ["remaining_ah"]), "$tag_device"),
           unit="Ah"),
        row("Cells and temperatures"), *cell_spread(),
        ts("Temperature min / max",
           target(select("battery", ["temp_min_c"]), "$tag_device min"),
           target(select("battery", ["temp_max_c"]), "$tag_device max"), unit="celsius"),
        temperatures(("device", "pack", "sensor"), "$tag_device $tag_pack/$tag_sensor"),
        row("Alarms"), *alarm_panels(),
        panel("table", "Active alarms now (per pack)",
              [target(latest("alarm", ["active_count"], by=("device", "pack")),
                      fmt="table")], w=12),
    ]
    return dashboard("bmslogger-overview", "bmslogger: batteries overview",
                     "Every battery, any brand: the common battery, cell, temperature and "
                     "alarm schema.", [device_var("battery")], panels)


def family(plugin: str, title: str, extras: list[dict], cell_panels: list[dict] | None = None,
           variables: list[dict] | None = None) -> dict:
    panels = [
        row("Pack"), *battery_core(), *cell_spread(),
        row("Cells"), *(cell_panels if cell_panels is not None else cells()),
        temperatures(),
        row(f"{title} specifics"), *extras,
        row("Alarms"), *alarm_panels(alarm_flags(plugin)),
    ]
    return dashboard(f"bmslogger-{plugin}", f"bmslogger: {title}",
                     f"{title} devices: pack, every cell, balancing and the fields only "
                     f"{title} reports.",
                     [device_var("battery", plugin), *(variables or [])], panels, (plugin,))


def daly() -> dict:
    extras = [
        ts("Balancing cells", target(select("battery", ["balancing_cells"], agg="max"),
                                     "$tag_device")),
        panel("state-timeline", "MOSFETs and connections",
              [target(select("daly_status", ["charge_mosfet", "discharge_mosfet",
                                             "charger_connected", "load_connected"],
                             agg="last"), "$tag_device $col")]),
        panel("state-timeline", "BMS state",
              [target(select("daly_status", ["state"], agg="last"), "$tag_device")]),
        ts("Cycles", target(select("battery", ["cycles"], agg="last"), "$tag_device")),
    ]
    return family("daly", "Daly", extras)


def emus() -> dict:
    extras = [
        ts("Cell temperatures", target(select("cell", ["temperature_c"], by=("device", "cell")),
                                       "$tag_device cell $tag_cell"), unit="celsius"),
        ts("Balancing rate per cell", target(select("emus_cell", ["balancing_pct"],
                                                    by=("device", "cell")),
                                             "$tag_device cell $tag_cell"), unit="percent"),
        ts("Balancing rate min / avg / max",
           target(select("emus_pack", ["balancing_min_pct", "balancing_avg_pct",
                                       "balancing_max_pct"]), "$tag_device $col"),
           unit="percent"),
        panel("state-timeline", "Charging stage",
              [target(select("emus_charging", ["stage"], agg="last"), "$tag_device")]),
        ts("Charger set / actual",
           target(select("emus_charging", ["set_voltage_v", "actual_voltage_v"]),
                  "$tag_device $col"), unit="volt"),
        ts("Charger current set / actual",
           target(select("emus_charging", ["set_current_a", "actual_current_a"]),
                  "$tag_device $col"), unit="amp"),
    ]
    return family("emus", "EMUS G1", extras)


def rec() -> dict:
    extras = [
        ts("State of health", target(select("battery", ["soh_pct"]), "$tag_device"),
           unit="percent"),
        ts("Internal resistance per cell",
           target(select("rec_cell", ["internal_resistance_ohm"], agg="last",
                         by=("device", "cell")), "$tag_device cell $tag_cell"), unit="ohm"),
        ts("BMS temperature", target(select("rec_status", ["bms_temperature_c"]),
                                     "$tag_device"), unit="celsius"),
        ts("Cycles", target(select("battery", ["cycles"], agg="last"), "$tag_device")),
    ]
    return family("rec", "REC BMS 1Q", extras,
                  cell_panels=cells(balancing=False))


def pace() -> dict:
    pack = '"device" =~ /^$device$/ AND "pack" =~ /^$pack$/'
    by = ("device", "pack")
    alias = "$tag_device pack $tag_pack"
    pack_var = {**device_var("battery", key="pack", label="Pack")}
    pack_var["query"] = pack_var["definition"] = (
        'SHOW TAG VALUES FROM "battery" WITH KEY = "pack" WHERE "device" =~ /^$device$/')
    panels = [
        row("Per pack"),
        ts("Pack voltage", target(select("battery", ["voltage_v"], by=by, where=pack), alias),
           unit="volt"),
        ts("Pack current (+ charging)", target(select("battery", ["current_a"], by=by,
                                                      where=pack), alias), unit="amp"),
        ts("Pack SOC", target(select("battery", ["soc_pct"], by=by, where=pack), alias),
           unit="percent"),
        ts("Pack SOH", target(select("battery", ["soh_pct"], by=by, where=pack), alias),
           unit="percent"),
        ts("Cell delta per pack", target(select("battery", ["cell_delta_v"], by=by,
                                                where=pack), alias), unit="volt"),
        ts("Cycles per pack", target(select("battery", ["cycles"], agg="last", by=by,
                                            where=pack), alias)),
        row("Cells"),
        ts("Cell voltages", target(select("cell", ["voltage_v"], by=(*by, "cell"),
                                          where=pack),
                                   "$tag_device $tag_pack/$tag_cell"), unit="volt", w=24, h=10),
        panel("state-timeline", "Balancing per cell",
              [target(select("cell", ["balancing"], agg="last", by=(*by, "cell"),
                             where=pack), "$tag_device $tag_pack/$tag_cell")], w=24, h=10),
        ts("Temperature sensors", target(select("temperature", ["temperature_c"],
                                                by=(*by, "sensor"), where=pack),
                                         "$tag_device $tag_pack/$tag_sensor"),
           unit="celsius"),
        ts("MOSFET / environment temperature",
           target(select("pace_pack", ["mosfet_temperature_c", "environment_temperature_c"],
                         by=by, where=pack), "$tag_device $tag_pack $col"), unit="celsius"),
        row("Status and alarms"),
        panel("state-timeline", "FETs",
              [target(select("pace_status", ["charge_fet_on", "discharge_fet_on"],
                             agg="last", by=by, where=pack), "$tag_device $tag_pack $col")]),
        ts("Active alarms per pack", target(select("alarm", ["active_count"], agg="max",
                                                   by=by, where=pack), alias)),
        panel("state-timeline", "Alarm flags",
              [target(select("alarm", alarm_flags("pace"), agg="last", by=by, where=pack),
                      "$tag_device $tag_pack $col")], w=24, h=12),
    ]
    return dashboard("bmslogger-pace", "bmslogger: PACE", "PACE packs one by one: every "
                     "pack of every parallel group, selectable by the pack variable.",
                     [device_var("battery", "pace"), pack_var], panels, ("pace",))


def tristar() -> dict:
    day = "1d"

    def daily(fields: list[str]) -> str:
        return select("tristar_daily", fields, agg="last", interval=day, fill="none")

    panels = [
        row("Now"),
        panel("stat", "Charge state", [target(latest("charger", ["charge_state"]),
                                              "$tag_device")], w=6, h=5),
        panel("stat", "Output power", [target(latest("charger", ["output_power_w"]),
                                              "$tag_device")], w=6, h=5, unit="watt"),
        panel("stat", "Battery voltage", [target(latest("charger", ["battery_voltage_v"]),
                                                 "$tag_device")], w=6, h=5, unit="volt"),
        panel("stat", "Energy total", [target(latest("tristar_charger", ["kwhc_t_kwh"]),
                                              "$tag_device")], w=6, h=5, unit="kwatth"),
        row("Array, battery, power"),
        ts("Array voltage / current",
           target(select("charger", ["array_voltage_v"]), "$tag_device V"),
           target(select("charger", ["array_current_a"]), "$tag_device A")),
        ts("Battery voltage / target",
           target(select("charger", ["battery_voltage_v", "target_voltage_v"]),
                  "$tag_device $col"), unit="volt"),
        ts("Battery current", target(select("charger", ["battery_current_a"]), "$tag_device"),
           unit="amp"),
        ts("Power in / out", target(select("charger", ["input_power_w", "output_power_w"]),
                                    "$tag_device $col"), unit="watt"),
        panel("state-timeline", "Charge state",
              [target(select("charger", ["charge_state"], agg="last"), "$tag_device")], w=24,
              h=5),
        ts("Temperatures",
           target(select("charger", ["heatsink_temperature_c", "battery_temperature_c"]),
                  "$tag_device $col"), unit="celsius"),
        ts("Ah / kWh counters",
           target(select("tristar_charger", ["ahc_r_ah", "kwhc_r_kwh"], agg="last"),
                  "$tag_device $col")),
        row("Daily values (logged at 23:58)"),
        panel("table", "Daily battery voltage and energy",
              [target(daily(["vb_min_daily_v", "vb_max_daily_v", "va_max_daily_v",
                             "ahc_daily_ah", "whc_daily_wh", "pout_max_daily_w"]),
                      fmt="table")], w=24),
        panel("table", "Daily time in absorption / equalize / float",
              [target(daily(["time_ab_daily_s", "time_eq_daily_s", "time_fl_daily_s"]),
                      fmt="table")], unit="s"),
        panel("table", "Charge settings (EEPROM)",
              [target(latest("tristar_settings", ["ev_absorp_v", "ev_float_v", "ev_eq_v",
                                                  "et_absorp_s", "ev_hvd_v", "ev_hvr_v",
                                                  "ev_tempcomp_v_per_c"]), fmt="table")]),
        row("Alarms"), *alarm_panels(alarm_flags("tristar")),
    ]
    return dashboard("bmslogger-tristar", "bmslogger: TriStar MPPT",
                     "Morningstar TriStar MPPT: array, battery, power, charge state, daily "
                     "values and charge settings.", [device_var("charger", "tristar")],
                     panels, ("tristar",))


def health() -> dict:
    dev = '"device" =~ /^$device$/'
    sink = '"sink" =~ /^$sink$/'
    sink_var = device_var("bmslogger", key="sink", label="Sink")
    panels = [
        row("Devices"),
        ts("Poll duration", target(select("bmslogger", ["poll_duration_s"], agg="max",
                                          where=dev), "$tag_device"), unit="s"),
        ts("Port lock wait", target(select("bmslogger", ["lock_wait_s"], agg="max",
                                           where=dev), "$tag_device"), unit="s"),
        ts("Polls / failed polls",
           target(select("bmslogger", ["polls", "polls_failed"], agg="last", where=dev),
                  "$tag_device $col")),
        ts("Requests answered",
           target(select("bmslogger", ["requests", "answered"], agg="last", where=dev),
                  "$tag_device $col")),
        panel("state-timeline", "Last poll complete",
              [target(select("bmslogger", ["poll_ok"], agg="last", where=dev),
                      "$tag_device")], w=24, h=6),
        ts("Error counters", target(
            f'SELECT last(/^errors_/) FROM "bmslogger" WHERE {dev} AND $timeFilter '
            'GROUP BY time($__interval), "device" fill(null)', "$tag_device $col"), w=16,
            description="errors_<kind> counters since start (timeout, checksum, port_busy, "
                        "...)."),
        ts("Retries and stale bytes", target(
            select("bmslogger", ["request_retries", "stale_bytes_dropped"], agg="last",
                   where=dev), "$tag_device $col"), w=8,
           description="Not failures: requests sent again (the poll may still have "
                       "succeeded) and bytes found waiting on the line and discarded."),
        row("Sinks"),
        ts("Written points", target(select("bmslogger", ["written"], agg="last", where=sink,
                                           by=("sink",)), "$tag_sink")),
        ts("Queue and spool", target(select("bmslogger", ["queued", "spool_points"],
                                            agg="last", where=sink, by=("sink",)),
                                     "$tag_sink $col")),
        ts("Retries, dropped, dead-lettered",
           target(select("bmslogger", ["retries", "dropped", "dead_lettered"], agg="last",
                         where=sink, by=("sink",)), "$tag_sink $col")),
        ts("Spool size", target(select("bmslogger", ["spool_bytes"], agg="last", where=sink,
                                       by=("sink",)), "$tag_sink"), unit="bytes"),
    ]
    return dashboard("bmslogger-health", "bmslogger: logger health",
                     "The logger's own `bmslogger` points: polls, errors, sinks and spool.",
                     [device_var("bmslogger"), sink_var], panels, ("health",))


DASHBOARDS = {
    "bmslogger-overview.json": overview,
    "bmslogger-daly.json": daly,
    "bmslogger-emus.json": emus,
    "bmslogger-rec.json": rec,
    "bmslogger-pace.json": pace,
    "bmslogger-tristar.json": tristar,
    "bmslogger-health.json": health,
}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
