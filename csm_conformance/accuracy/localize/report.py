"""The localization of one case: its rows, its one-line verdict, and the files it is reported in.

A localization is read by people (the table, the summary line, the plot) and by tools (the JSON,
the attachments of the accuracy checks); this module turns the divergence rule's rows (rule.py)
into all of those, the same for a live run and for an offline comparison of dumps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from csm_conformance.accuracy.localize.plot import plot_png as _plot_png
from csm_conformance.accuracy.localize.rule import JUMP_FACTOR, Row, compare_captures, dtype_eps


@dataclass
class Localization:
    case: str
    dtype: str  # the dtype whose eps is the floor (the coarser side)
    baseline_label: str
    candidate_label: str
    rows: list[Row]
    jump_factor: float = JUMP_FACTOR
    notes: list[str] = field(default_factory=list)
    local_bounded: bool = False  # local thresholds are the gate's stored per-module bounds

    @property
    def first(self) -> Row | None:
        return next((r for r in self.rows if r.diverged), None)

    @property
    def largest_jump(self) -> Row | None:
        rows = [r for r in self.rows if r.jump is not None and math.isfinite(r.jump)]
        return max(rows, key=lambda r: r.jump) if rows else None

    @property
    def rule(self) -> str:
        local = ("its stored module_local bound" if self.local_bounded else
                 f"{self.jump_factor:g} x max(eps(float32), its component's median local_err)")
        return (f"a module diverges when its rel err > {self.jump_factor:g} x max(eps({self.dtype}) = {dtype_eps(self.dtype):.3g}, "
                f"the largest rel err of the preceding modules of its component), its output has NaN/Inf the "
                f"baseline's lacks, or its shape differs; in a live run also when the rel err it adds on the "
                f"reference's own inputs (local_err) > {local}")

    def summary(self) -> str:
        first = self.first
        if first is None:
            largest = self.largest_jump
            if largest is None or largest.jump == 0:
                return "first diverging module: none (every module's output is identical)"
            text = (f"first diverging module: none (largest jump: {largest.module}, rel err {largest.rel_error:.3g} = "
                    f"{largest.jump:.2f} x max(eps, running max)")
            local = [r for r in self.rows if r.local_error is not None and r.local_threshold and math.isfinite(r.local_error)]
            if local:
                top = max(local, key=lambda r: r.local_error / r.local_threshold)
                if self.local_bounded:
                    text += f"; largest local: {top.module}, {top.local_error / top.local_threshold:.2f} x its stored bound"
                else:
                    text += f"; largest local: {top.module}, {self.jump_factor * top.local_error / top.local_threshold:.2f} x its component's median"
            return text + f"; diverging takes > {self.jump_factor:g})"
        if first.verdict == "shape":
            return f"first diverging module: {first.module} (shape {first.shape[0]} vs {first.shape[1]})"
        if first.verdict == "nonfinite":
            return f"first diverging module: {first.module} ({first.nonfinite} NaN/Inf values in its output)"
        if first.verdict == "FIRST local":
            over = "its stored bound" if self.local_bounded else f"{self.jump_factor:g} x its component's median"
            return (f"first diverging module: {first.module} (on the reference's inputs it adds rel err {first.local_error:.3g}, "
                    f"over {first.local_threshold:.3g} = {over})")
        return f"first diverging module: {first.module} (cosine {first.cosine:.6g}, rel err {first.rel_error:.3g})"

    def table(self) -> list[str]:
        head = ["#", "module", "shape", "cosine", "1-cosine", "rel_err", "max_abs", "rel_thresh", "jump", "local_err", "local_thresh", "verdict"]
        lines = []
        for i, r in enumerate(self.rows):
            shape = "x".join(map(str, r.shape)) if r.shape and isinstance(r.shape[0], int) else " vs ".join("x".join(map(str, s)) for s in r.shape)
            lines.append([str(i), r.module, shape,
                          "-" if math.isnan(r.cosine) else f"{r.cosine:.8f}",
                          "-" if math.isnan(r.cosine) else f"{max(0.0, 1.0 - r.cosine):.2e}",
                          "-" if math.isnan(r.rel_error) else f"{r.rel_error:.3e}",
                          "-" if math.isnan(r.max_abs) else f"{r.max_abs:.3e}",
                          "-" if r.threshold is None else f"{r.threshold:.3e}",
                          "-" if r.jump is None else f"{r.jump:.2f}",
                          "-" if r.local_error is None else f"{r.local_error:.3e}",
                          "-" if r.local_threshold is None else f"{r.local_threshold:.3e}",
                          r.verdict])
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return [f"localize {self.case}: {self.candidate_label}  vs  {self.baseline_label} (baseline)",
                f"rule: {self.rule}", *[f"note: {n}" for n in self.notes], "",
                fmt(head), fmt(["-" * w for w in widths]), *[fmt(r) for r in lines], "", self.summary()]

    def as_dict(self) -> dict:
        first = self.first
        return {"case": self.case, "baseline": self.baseline_label, "candidate": self.candidate_label,
                "dtype": self.dtype, "eps": dtype_eps(self.dtype), "jump_factor": self.jump_factor, "rule": self.rule,
                "first_diverging": first.module if first else None, "summary": self.summary(), "notes": self.notes,
                "rows": [r.as_dict() for r in self.rows]}

    def plot_png(self) -> bytes:
        """1 - cosine and relative error per module (log scale), their thresholds, and the first
        diverging module; exact agreement (0) is drawn at the bottom of the axis."""
        return _plot_png(self)

    def write(self, directory: Path, stem: str) -> list[Path]:
        """<stem>.txt (table), <stem>.png (plot), <stem>.json (every figure) under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{stem}.txt", directory / f"{stem}.png", directory / f"{stem}.json"]
        paths[0].write_text("\n".join(self.table()) + "\n", encoding="utf-8")
        paths[1].write_bytes(self.plot_png())
        paths[2].write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return paths


def localize(case: str, baseline: dict, candidate: dict, dtype: str, baseline_label: str, candidate_label: str,
             jump_factor: float = JUMP_FACTOR, local: dict[str, float] | None = None,
             local_bounds: dict[str, float] | None = None) -> Localization:
    return Localization(case, dtype, baseline_label, candidate_label,
                        compare_captures(baseline, candidate, dtype, jump_factor, local, local_bounds), jump_factor,
                        local_bounded=bool(local_bounds))
