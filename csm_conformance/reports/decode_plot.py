"""The decode-loop check's figure: 1 - cosine and relative error against the step, per mode.

A loop's error that drifts along the steps (a cache, a position) is read faster off a curve than
off a table of worst-step figures: this draws, for one case, the backbone's codebook-0 steps and
the depth decoder's steps, each generation mode judged so far a line, with its worst-step bounds
dashed where stored and the first step out of them marked. suite/loop_checks.decode_loop writes it to
<output>/decode/<case>.png and attaches it to the Allure report.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

COLORS = {"eager": "#2e86c1", "compiled": "#8e44ad"}
PARTS = (("", "backbone (codebook 0)"), ("@depth", "depth decoder"))


@dataclass
class ModeCurves:
    """One mode's per-step figures of a case: `series` per part ('' backbone, '@depth'), objects
    with `cosine` and `rel_error` tensors (accuracy/decode.StepSeries); `bounds` the stored
    worst-step bounds by metric name (worst_step_cosine[@depth], worst_step_rel_error[@depth]);
    `first_out` the first step out of them per part, as decode.first_step_out gives it ((step,
    what): what starts with the metric, 'cosine' or 'rel_error'; None: every step inside)."""

    series: dict
    bounds: dict[str, float] = field(default_factory=dict)
    first_out: dict[str, tuple[int, str] | None] = field(default_factory=dict)
    failed: bool = False


def _shown(values: list[float], bottom: float) -> list[float]:
    """Exact agreement (0, or a negative 1 - cosine from float64 rounding) at the axis' bottom."""
    return [v if math.isfinite(v) and v > 0 else (bottom if math.isfinite(v) else math.nan) for v in values]


def plot_png(case_id: str, modes: dict[str, ModeCurves], min_cosine: float | None = None, subtitle: str = "") -> bytes:
    """2 x 2 panels: 1 - cosine (top) and relative error (bottom), log y, against the step, for the
    backbone (left) and the depth decoder (right); each mode a line, its bounds dashed in its
    colour, the cosine floor dotted, the first step out marked with an x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    for col, (suffix, part) in enumerate(PARTS):
        for row, (metric, label) in enumerate((("cosine", "1 - cosine"), ("rel_error", "relative error ‖Δ‖/‖ref‖"))):
            ax = axes[row][col]
            curves, limits = {}, []
            for mode, m in modes.items():
                s = m.series.get(suffix)
                if s is None:
                    continue
                raw = [float(v) for v in getattr(s, metric)]
                curves[mode] = [1.0 - v for v in raw] if metric == "cosine" else raw
                bound = m.bounds.get(f"worst_step_{metric}{suffix}")
                if bound is not None and math.isfinite(bound):
                    limits.append((mode, 1.0 - bound if metric == "cosine" else bound))
            floor = 1.0 - min_cosine if metric == "cosine" and min_cosine is not None else None
            finite = [v for c in curves.values() for v in c if math.isfinite(v) and v > 0]
            finite += [v for _, v in limits if v > 0] + ([floor] if floor and floor > 0 else [])
            bottom = min(finite) / 1.6 if finite else 1e-12
            for mode, values in curves.items():
                color = COLORS.get(mode, None)
                steps = list(range(len(values)))
                shown = _shown(values, bottom)
                line, = ax.plot(steps, shown, color=color, linewidth=1.2, marker="." if len(steps) <= 64 else None,
                                markersize=4, label=f"{mode}{' (failed)' if modes[mode].failed else ''}")
                out = modes[mode].first_out.get(suffix)
                if out is not None and out[1].startswith(metric) and 0 <= out[0] < len(shown):
                    ax.plot([out[0]], [shown[out[0]]], marker="x", color=color, markersize=10, mew=2.5, linestyle="none",
                            label=f"{mode}: first step out")
            for mode, value in limits:
                if value > 0:
                    ax.axhline(value, color=COLORS.get(mode, "#7f8c8d"), linestyle="--", linewidth=1.0,
                               label=f"{mode}: worst-step bound")
            if floor is not None and floor > 0:
                ax.axhline(floor, color="#7f8c8d", linestyle=":", linewidth=1.0, label=f"cosine floor {min_cosine:g}")
            ax.set_yscale("log")
            # 1, 2 and 5 per decade, labelled, and no minor ticks: a log axis' 8 minor ticks per decade
            # are most of the drawing time, and the curves often span less than a decade
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
            ax.yaxis.set_minor_locator(NullLocator())
            top = max(finite) * 1.6 if finite else 1.0
            ax.set_ylim(bottom=bottom, top=top)
            ax.grid(True, which="major", axis="y", alpha=0.25)
            if row == 0:
                ax.set_title(part, fontsize=10)
            else:
                ax.set_xlabel("step (frame)")
            if col == 0:
                ax.set_ylabel(label)
    legend: dict = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 5) or 1, fontsize=8, frameon=False)
    fig.suptitle(f"{case_id}: decode loop, device forced along the reference's codes" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.subplots_adjust(left=0.085, right=0.985, top=0.88, bottom=0.16, hspace=0.1, wspace=0.14)  # fixed: tight_layout doubles the cost
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def write_plot(output_dir: Path, case_id: str, png: bytes) -> Path:
    """<output_dir>/decode/<case>.png (replaced whole: a reader never sees half a file)."""
    directory = Path(output_dir) / "decode"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{case_id}.png"
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return path
