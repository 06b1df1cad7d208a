"""`bmslogger plot`: the `export` selection drawn as a PNG, one line per device or cell.

Why: a quick picture of a night's cell drift or a week of SOC without a Grafana server.
matplotlib is an optional extra (``pip install 'bmslogger[plot]'``) because it is large
and the logger itself never needs it; the Agg backend draws without a display, so this
works on a headless Raspberry Pi. Gaps in the data stay gaps in the line (NaN breaks it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bmslogger.export import SelectionError, Table


@dataclass(frozen=True)
class PlotOptions:
    """How the picture looks; every knob `bmslogger plot` offers."""

    title: str = ""
    xlabel: str = "time (UTC)"
    ylabel: str = ""
    #: strftime format of the time axis; "" = concise automatic labels that fit the range
    date_format: str = ""
    style: str = "default"
    tight: bool = True
    log: bool = False
    marker: str = ""
    width_in: float = 12.0
    height_in: float = 6.0
    dpi: int = 100

    @classmethod
    def from_args(cls, args: Any) -> PlotOptions:
        """Checked before any data is read, so a typo fails fast."""
        try:
            w, h = (float(x) for x in str(args.size).lower().split("x"))
        except ValueError:
            raise SelectionError(f"--size: expected WxH in inches, e.g. 12x6, not "
                                 f"{args.size!r}") from None
        if not (1 <= w <= 100 and 1 <= h <= 100):
            raise SelectionError(f"--size: expected 1..100 inches a side, not {args.size!r}")
        if not 20 <= args.dpi <= 1200:
            raise SelectionError(f"--dpi: expected 20..1200, not {args.dpi}")
        try:
            datetime(2026, 1, 1).strftime(args.date_format or "%Y")
        except ValueError as err:
            raise SelectionError(f"--date-format: expected a strftime format such as "
                                 f"%d.%m %H:%M ({err})") from None
        if args.style != "default":
            plt, _ = _matplotlib()
            if args.style not in plt.style.available:
                raise SelectionError(f"--style: unknown style {args.style!r} (expected one "
                                     f"of: {', '.join(sorted(plt.style.available))})")
        return cls(title=args.title or "", xlabel=args.xlabel, ylabel=args.ylabel or "",
                   date_format=args.date_format, style=args.style, tight=args.tight,
                   log=args.log, marker=args.marker, width_in=w, height_in=h, dpi=args.dpi)


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SelectionError("plot needs matplotlib: pip install 'bmslogger[plot]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    return plt, mdates


def _number(v: Any) -> float:
    if v is None or isinstance(v, str):
        return math.nan
    return float(v)


def plot_table(table: Table, path: str, options: PlotOptions) -> None:
    """Draw every column of `table` as a line and save a PNG at `path` (atomically)."""
    plt, mdates = _matplotlib()
    if options.style != "default" and options.style not in plt.style.available:
        raise SelectionError(f"--style: unknown style {options.style!r} (expected one of: "
                          f"{', '.join(sorted(plt.style.available))})")
    buckets = list(table.buckets())
    times = [datetime.fromtimestamp(b / 1e9, tz=timezone.utc) for b in buckets]
    columns = [c for c in table.columns()
               if any(not isinstance(table.value(c, b), str) for b in buckets
                      if table.value(c, b) is not None)]
    if not columns:
        raise SelectionError("--field: nothing numeric to plot (text fields such as charge_state "
                          "have no line)")
    with plt.style.context(options.style):
        fig, ax = plt.subplots(figsize=(options.width_in, options.height_in), dpi=options.dpi)
        try:
            for col in columns:
                ys = [_number(table.value(col, b)) for b in buckets]
                label = table.label(col)
                ax.plot(times, ys, label=label, marker=options.marker or None,
                        markersize=3, linewidth=1.2)
            fields = sorted({f"{m}.{f}" + (f" [{table.units[m, f]}]"
                                             if table.units.get((m, f)) else "")
                             for _, m, f in columns})
            start, end = times[0], datetime.fromtimestamp(table.sel.end_ns / 1e9,
                                                         tz=timezone.utc)
            ax.set_title(options.title or (
                f"{', '.join(fields)} ({table.sel.aggregate}), "
                f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"))
            ax.set_xlabel(options.xlabel)
            ax.set_ylabel(options.ylabel or ", ".join(fields))
            if options.date_format:
                ax.xaxis.set_major_formatter(mdates.DateFormatter(options.date_format,
                                                                  tz=timezone.utc))
            else:  # labels that stay distinct whether the range is minutes or months
                locator = mdates.AutoDateLocator(tz=timezone.utc)
                ax.xaxis.set_major_locator(locator)
                ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator,
                                                                         tz=timezone.utc))
            fig.autofmt_xdate()
            if options.log:
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ncol = 1 if len(columns) <= 12 else 2 if len(columns) <= 32 else 3
            ax.legend(loc="best", fontsize="small", ncol=ncol)
            if options.tight:
                fig.tight_layout()
            tmp = path + ".tmp.png"
            fig.savefig(tmp, format="png")
            os.replace(tmp, path)
        finally:
            plt.close(fig)
