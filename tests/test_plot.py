"""`bmslogger plot`: a readable PNG from the export selection (matplotlib, optional extra).

The picture is checked as a PNG (signature, size from the IHDR chunk, not blank) and the
figure's own labels, legend and date ticks are checked by drawing the same table in
process.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from bmslogger.export import SelectionError, aggregate, make_selection, parse_time
from bmslogger.model import Point, SinkConfig
from bmslogger.options import resolve_options

pytest.importorskip("matplotlib", reason="plot needs the optional extra bmslogger[plot]")

DAY = "2026-11-20"
T0 = parse_time(DAY)
MIN = 60 * 10**9


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    from bmslogger.sinks.csvfile import SINK_TYPE, CsvSink

    folder = tmp_path_factory.mktemp("plot") / "data"
    points = []
    for minute in range(0, 24 * 60, 5):
        if 12 * 60 <= minute < 13 * 60:
            continue  # an outage: the line must break, not drop to zero
        for cell in range(1, 5):
            points.append(Point("cell", {"device": "bank", "plugin": "daly", "cell": str(cell)},
                                {"voltage_v": 3.25 + cell / 100 + (minute % 60) / 6000},
                                T0 + minute * MIN))
    sink = CsvSink(SinkConfig(name="csv", plugin="csv", options=resolve_options(
        SINK_TYPE.options, {"directory": str(folder)})))
    sink.open()
    sink.write(points)
    sink.close()
    return folder


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmslogger", "plot", *args],
                          capture_output=True, text=True, timeout=180)


def test_plot_writes_a_readable_png(csv_dir, tmp_path):
    out = tmp_path / "cells.png"
    r = plot("--directory", str(csv_dir), "--from", DAY, "--to", "2026-11-21",
             "--interval", "15m", "--field", "cell.voltage_v", "-o", str(out),
             "--title", "Cells of bank", "--ylabel", "cell voltage [V]",
             "--date-format", "%H:%M", "--marker", ".", "--size", "10x5", "--dpi", "80",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "4 lines" in r.stderr
    data = out.read_bytes()
    assert png_size(data) == (800, 400)
    assert len(data) > 20_000  # four lines, labels, legend: far from a blank canvas
    assert not (tmp_path / "cells.png.tmp.png").exists()


def test_figure_has_labels_dates_legend_and_a_gap(csv_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmslogger.export import csv_samples, units_from_registry
    from bmslogger.plot import PlotOptions, plot_table

    units, declared = units_from_registry()
    sel = make_selection(DAY, "2026-11-21", "1h", "mean", ["cell.voltage_v"])
    table = aggregate(csv_samples(str(csv_dir), sel, declared), sel, units)
    captured = {}
    real_close = plt.close

    def keep(fig=None):  # look at the figure before plot_table closes it
        captured["fig"] = fig
        real_close(fig)

    plt.close = keep
    try:
        plot_table(table, str(tmp_path / "p.png"),
                   PlotOptions(date_format="%d %b %H:%M", log=True, style="ggplot"))
    finally:
        plt.close = real_close
    ax = captured["fig"].axes[0]
    assert ax.get_xlabel() == "time (UTC)"
    assert ax.get_ylabel() == "cell.voltage_v [V]"
    assert "cell.voltage_v [V] (mean)" in ax.get_title()
    assert ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"bank cell {c} cell.voltage_v [V]" for c in (1, 2, 3, 4)]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert any(t.startswith("20 Nov") for t in ticks), ticks
    ys = ax.get_lines()[0].get_ydata()
    assert len(ys) == 24 and ys[12] != ys[12]  # NaN at 12:00: a gap, not a zero
    assert ys[11] == pytest.approx(3.26 + 27.5 / 6000)


PLOT_MISTAKES = [
    (("--style", "no-such-style"), "--style: unknown style 'no-such-style' (expected one of:"),
    (("--size", "big"), "--size: expected WxH in inches, e.g. 12x6, not 'big'"),
    (("--size", "500x5"), "--size: expected 1..100 inches a side"),
    (("--dpi", "5"), "--dpi: expected 20..1200, not 5"),
    (("--aggregate", "median"), "--aggregate: expected one of mean, min, max, last"),
    (("--from", "soon"), "--from: bad time 'soon'"),
    (("--interval=-5m",), "--interval: "),
    (("--field", "cell.volts"), "--field cell.volts: cell has no field 'volts'"),
    (("--device", "nobody"), "--device nobody: no such device"),
    (("--source", "mysql"), "--source mysql: "),
]


@pytest.mark.parametrize("extra,message", PLOT_MISTAKES,
                         ids=[" ".join(a) for a, _ in PLOT_MISTAKES])
def test_usage_mistakes_exit_2_with_one_line(csv_dir, tmp_path, extra, message):
    config = tmp_path / "logger.toml"
    config.write_text('[[devices.daly]]\nname = "bank"\nport = "sim://daly"\n\n'
                      f'[sinks.csv]\ndirectory = "{csv_dir}"\n', encoding="utf-8")
    r = plot("-c", str(config), "--from", DAY, "--to", "2026-11-21", "--field",
             "cell.voltage_v", "-o", str(tmp_path / "x.png"), "--no-progress", *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("bmslogger plot: " + message), lines[0]
    assert not (tmp_path / "x.png").exists()


def test_unwritable_output_and_unreachable_source(csv_dir, tmp_path):
    base = ["--from", DAY, "--to", "2026-11-21", "--field", "cell.voltage_v", "--no-progress"]
    r = plot("--directory", str(csv_dir), *base, "-o", str(tmp_path / "no" / "x.png"))
    assert r.returncode == 2 and r.stderr.startswith("bmslogger plot: -o "), r.stderr
    assert "cannot write" in r.stderr and r.stderr.count("\n") == 1
    r = plot("--source", "influxdb", "--url", "http://127.0.0.1:9", *base,
             "-o", str(tmp_path / "x.png"))
    assert r.returncode == 1 and "cannot reach InfluxDB at http://127.0.0.1:9" in r.stderr
    assert r.stderr.count("\n") == 1


def test_only_text_is_refused():
    from bmslogger.plot import PlotOptions, plot_table

    sel = make_selection(DAY, "2026-11-20T01:00:00Z", "1h", "last", ["charger.charge_state"])
    table = aggregate([(T0, "charger", (("device", "m"),), "charge_state", "float")], sel)
    with pytest.raises(SelectionError, match="--field: nothing numeric"):
        plot_table(table, "/nonexistent/x.png", PlotOptions())


def test_png_checker_rejects_non_png():
    with pytest.raises(AssertionError):
        png_size(b"GIF89a" + zlib.compress(b"x" * 40))
