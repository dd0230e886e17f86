"""The localization's figure: 1 - cosine and relative error per module, with their thresholds.

A table of dozens of modules hides the shape of the error along the network; the plot shows it at
a glance (where the error grows, where it jumps, where the component boundaries are). It is kept
apart from the report's text and JSON (report.py) because it alone needs matplotlib.
"""

from __future__ import annotations

import io
import math
import textwrap


def plot_png(loc) -> bytes:
    """1 - cosine and relative error per module (log scale), their thresholds, and the first
    diverging module; exact agreement (0) is drawn at the bottom of the axis. `loc` is a
    Localization (report.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in loc.rows if r.threshold is not None]
    x = list(range(len(rows)))
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.32 * len(rows) + 3), 8), sharex=True)
    series = [
        (axes[0], "1 - cosine", [1.0 - r.cosine for r in rows], [r.cosine_threshold for r in rows], True),
        (axes[1], "relative error", [r.rel_error for r in rows], [r.threshold for r in rows], False),
    ]
    first = loc.first
    for ax, label, values, thresholds, is_cos in series:
        finite = [v for v in values + [1.0 - t if is_cos else t for t in thresholds] if math.isfinite(v) and v > 0]
        bottom = min(finite) / 10 if finite else 1e-12
        shown = [v if math.isfinite(v) and v > 0 else (bottom if v == 0 or (math.isfinite(v) and v <= 0) else math.nan) for v in values]
        colors = ["#c0392b" if r.diverged else "#2e86c1" for r in rows]
        ax.scatter(x, shown, c=colors, zorder=3, s=22)
        ax.plot(x, shown, color="#2e86c1", linewidth=0.8, alpha=0.6)
        ax.step(x, [1.0 - t if is_cos else t for t in thresholds], where="mid", color="#e67e22", linestyle="--",
                label=("cosine threshold, t²/2 (information)" if is_cos else f"threshold t = {loc.jump_factor:g} x max(eps, running max)"))
        for i, v in enumerate(values):
            if not math.isfinite(v):
                ax.annotate("NaN/Inf", (i, bottom), color="#c0392b", fontsize=7, rotation=90)
        if not is_cos and any(r.local_error is not None for r in rows):
            local = [r.local_error if r.local_error is not None and r.local_error > 0 else math.nan for r in rows]
            ax.scatter(x, local, marker="x", color="#27ae60", zorder=4, s=22, label="local rel err (on the reference's inputs)")
            ax.step(x, [r.local_threshold if r.local_threshold is not None else math.nan for r in rows], where="mid",
                    color="#27ae60", linestyle=":", label="local threshold")
        if first is not None and first in rows:
            ax.axvline(rows.index(first), color="#c0392b", linewidth=1.2, alpha=0.7)
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom)
        ax.set_ylabel(label)
        ax.grid(True, which="both", axis="y", alpha=0.25)
        ax.legend(loc="upper left", fontsize=8)
    boundaries = [i for i in range(1, len(rows)) if rows[i].component != rows[i - 1].component]
    for ax in axes:
        for b in boundaries:
            ax.axvline(b - 0.5, color="#7f8c8d", linewidth=0.8, linestyle=":")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels([r.module for r in rows], rotation=75, ha="right", fontsize=7)
    title = [f"{loc.case}: {loc.summary()}", loc.candidate_label, f"vs {loc.baseline_label}"]
    axes[0].set_title("\n".join(textwrap.fill(t, 110) for t in title), fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
