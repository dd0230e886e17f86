"""A workload's figures judged against the stored baseline for this machine: its verdict
(PerfResult), the host-speed note, and the note on what a confirmation saw.

Split from the run (issue 12): PerformanceRun (run.py) measures and keeps the verdicts, PerfJudge
reads the baselines and compares. run.py still exports PerfResult.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from csm_conformance.performance.baselines import GATED, BaselineFile, Comparison, baseline_path, compare_figures, comparison_table, parse_tolerances
from csm_conformance.results import GateResult, Status
from csm_conformance.runtime import host_speed


@dataclass
class PerfResult(GateResult):
    """The performance gate's result for one workload case (status: passed, improved, regressed,
    no-baseline, failed, skipped)."""

    case: str
    mode: str
    status: Status
    figures: dict = field(default_factory=dict)  # gated: name -> {"value", "cv"}
    info: dict = field(default_factory=dict)  # reported, never gated
    comparisons: list[Comparison] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    baseline_file: str | None = None
    bench: dict | None = None  # the pytest-benchmark entry (stats + extra_info)

    def failure_text(self) -> str:
        lines = [super().failure_text()]
        if self.comparisons:
            lines += comparison_table(self.comparisons)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "case": self.case,
            "mode": self.mode,
            "status": self.status.value,
            "messages": self.messages,
            "figures": self.figures,
            "info": self.info,
            "baseline_file": self.baseline_file,
            "comparisons": [c.as_dict() for c in self.comparisons],
        }


class PerfJudge:
    """The baselines, tolerances and host-speed correction of one session's performance gate.
    A ValueError from the settings (a bad tolerance) reaches the session, which reports it."""

    def __init__(self, session):
        self.session = session
        self.settings = session.settings
        self.tolerances = parse_tolerances(self.settings.csm_perf_tolerance)
        self.host_correction = host_speed.applies(self.settings.csm_host_reference, session.device.type)
        self._baselines: dict[str, BaselineFile | None] = {}

    def baseline_file(self, mode: str):
        s = self.session
        return baseline_path(s.settings.baselines_dir, s.model_key, s.device.fingerprint, s.dtype_name, mode)

    def load_baselines(self, modes: set[str]) -> None:
        """Read every baseline the selected tests need (`modes`, and always "load"); a corrupt one
        raises BaselineError."""
        for mode in sorted(modes | {"load"}):
            if mode not in self._baselines:
                self._baselines[mode] = BaselineFile.load(self.baseline_file(mode))

    def stored_profile(self, case_id: str, mode: str, digest: str | None) -> tuple[dict | None, str]:
        """The per-operator summary promoted with this workload's baseline, and when it was recorded."""
        baseline = self._baselines.get(mode)
        entry = baseline.entry(case_id, digest)[0] if baseline is not None else None
        if entry is None:
            return None, ""
        return (entry["extra_info"].get("info") or {}).get("operator_profile"), baseline.recorded

    def judge(self, case_id: str, mode: str, digest: str | None, figures: dict, info: dict) -> PerfResult:
        """The verdict on one measurement's figures; the caller keeps it (or not)."""
        result = PerfResult(case_id, mode, Status.PASSED, figures, info)
        nonfinite = [k for k, f in figures.items() if not math.isfinite(f["value"])]
        if nonfinite:
            result.status = Status.FAILED
            result.messages.append(f"non-finite figures: {', '.join(nonfinite)}")
            return result
        path = self.baseline_file(mode)
        result.baseline_file = str(path)
        if self.session.fault_notes:
            result.messages.append("PLANTED FAULT: " + "; ".join(self.session.fault_notes))
        baseline = self._baselines.get(mode)
        why = None
        entry = None
        if baseline is None:
            why = f"no performance baseline for this machine ({self.session.device.fingerprint}): {path} does not exist"
        else:
            entry, why = baseline.entry(case_id, digest)
        if entry is None:
            result.status = Status.FAILED if self.settings.csm_strict else Status.NO_BASELINE
            result.messages.append(f"{why}; promote one with: csm-conformance promote")
            return result
        old_depth = entry["extra_info"].get("info", {}).get("harness_stack_depth")
        if old_depth is not None and info.get("harness_stack_depth") not in (None, old_depth):
            result.messages.append(f"note: the harness call depth changed ({old_depth} -> {info['harness_stack_depth']} frames); "
                                   "CPython's frame-chunk boundary can shift Python-bound timings (see docs/performance.md)")
        result.comparisons = compare_figures(entry["extra_info"]["figures"], figures, self.tolerances, self.session.device.type,
                                             self.settings.csm_perf_noise_factor, self.settings.csm_perf_noise_cap, self.host_correction)
        host_note = self._host_note(result.comparisons)
        if host_note:
            result.messages.append(host_note)
        regressed = [c for c in result.comparisons if c.verdict == "regressed"]
        improved = [c for c in result.comparisons if c.verdict == "improved"]
        if regressed:
            result.status = Status.REGRESSED
            result.messages.insert(0, "performance regressed in " + ", ".join(
                f"{c.metric} {c.change:+.1%} > {c.tolerance:.1%}" for c in regressed) + f" (baseline {baseline.recorded})")
        elif improved:
            result.status = Status.IMPROVED
            result.messages.insert(0, "improved: " + ", ".join(f"{c.metric} {c.change:+.1%}" for c in improved)
                                   + "; promote this run to make it the new baseline")
        return result

    def _host_note(self, comparisons: list[Comparison]) -> str | None:
        """What the host-speed correction did, so that a reader sees which numbers were compared."""
        if not self.host_correction or not any(GATED[c.metric][0] == "time" for c in comparisons):
            return None
        factors = [c.host_factor for c in comparisons if c.host_factor]
        if not factors:
            return ("note: the baseline has no host-speed probe (promoted before it was recorded): time figures compared "
                    "uncorrected; promote a new baseline to correct them for the host's speed")
        frame = next((c for c in comparisons if c.metric == "frame_ms_median" and c.host_factor), None)
        shown = f"x{frame.host_factor:.3f} for the frame median" if frame else f"x{factors[0]:.3f}"
        return (f"host-speed probe: time changes are corrected by how much slower the host ran than at the baseline, "
                f"{shown} (each figure's factor: the host now/then column; --csm-host-reference off to compare raw times)")


def _confirmation_note(result: PerfResult, first_regressed: list[str], measurements: list[dict]) -> str:
    """What the confirmation saw: each figure the first measurement regressed in, every value."""
    gated = {c.metric: c for c in result.comparisons}
    parts = [f"{name} " + " -> ".join(f"{m[name]['value']:.4g}" for m in measurements)
             + (f" (gated {gated[name].change:+.1%}, {gated[name].verdict})" if name in gated else "")
             for name in first_regressed]
    verdict = "confirmed" if result.status is Status.REGRESSED else "not confirmed: transient, the best measurement passes"
    return (f"regression in the first measurement {verdict} ({len(measurements) - 1} more measurement(s)): "
            + "; ".join(parts))
