"""The accuracy gate: judge a check's metrics against the global cosine floor, the stored per-case
bounds and strict mode, keep the verdict, and at the end of a clean recording run write the bounds
from what was measured.

Split from the session (issue 12), which keeps loading the models and forwards its `evaluate`,
`check_logits`, ... here, because the tests and the localizer call them on the session. The gate
reads its settings, bounds and models from the session, and keeps every verdict in the session's
`results` (and every bounded measurement in its `measured`), where the reports read them.
"""

from __future__ import annotations

import torch

from csm_conformance.accuracy import metrics
from csm_conformance.accuracy.bounds import build_bounds, write_bounds
from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.accuracy.model_checks import load_integrity_result
from csm_conformance.results import Status


class AccuracyGate:
    """The verdicts of one conformance session (the session is passed in, as to PerformanceRun)."""

    def __init__(self, session):
        self.session = session

    def check_load_integrity(self) -> CheckResult | None:
        """The `load_integrity` check of both loads (None: nothing was loaded from a checkpoint).
        Its message blames the stack when the checkpoint is the suite's fixed embedded one."""
        s = self.session
        result = load_integrity_result(s.reference, s.target, s.source)
        if result is not None:
            s.results.append(result)
        return result

    def nonfinite_result(self, case: str, check: str, **tensors: torch.Tensor) -> CheckResult | None:
        """A failed result naming every output (by its keyword) that holds NaN or Inf, or None."""
        bad = {name: metrics.describe_nonfinite(t) for name, t in tensors.items()}
        bad = {name: what for name, what in bad.items() if what}
        if not bad:
            return None
        result = CheckResult(case, check, status=Status.FAILED)
        for name, what in bad.items():
            result.messages.append(f"{name} has non-finite values (NaN/Inf): {what}")
        self.session.results.append(result)
        return result

    def evaluate(self, case: str, check: str, values: dict[str, float], floors: dict[str, float] | None = None,
                 invariants: dict[str, tuple[float, str, float]] | None = None, use_bounds: bool = True,
                 info: dict[str, float] | None = None) -> CheckResult:
        """Judge one check. `floors`: metric -> threshold that holds whatever the bounds say;
        `invariants`: name -> (value, op, required) with op one of >=, <=, ==; `use_bounds=False`
        for checks judged by fixed thresholds alone (golden drift), whose other metrics are info."""
        s = self.session
        result = CheckResult(case, check)
        recording = s.settings.csm_record_bounds or not use_bounds
        missing = []
        for name, value in values.items():
            if not use_bounds:
                result.rows.append(MetricRow(name, value, None, "info", None))
                continue
            if recording or s.bounds is None:
                bound = None
            else:
                bound = s.bounds.bound(case, check, name)
            if bound is None:
                missing.append(name)
                result.rows.append(MetricRow(name, value, None, "unbounded", None))
            else:
                ok = metrics.is_within(name, value, bound)
                result.rows.append(MetricRow(name, value, bound, "bound", ok))
        for name, threshold in (floors or {}).items():
            ok = metrics.is_within(name, values[name], threshold)
            result.rows.append(MetricRow(name, values[name], threshold, "floor", ok))
        for name, value in (info or {}).items():  # shown and reported, never judged
            result.rows.append(MetricRow(name, value, None, "info", None))
        for name, (value, op, required) in (invariants or {}).items():
            ok = {">=": value >= required, "<=": value <= required, "==": value == required}[op]
            result.rows.append(MetricRow(name, float(value), float(required), "invariant", bool(ok), op))
        result.messages = [r.describe() for r in result.rows if r.ok is False]
        if result.messages:
            result.status = Status.FAILED
        elif missing and not recording:
            where = s.bounds_file if s.bounds is not None else f"{s.bounds_file} (absent)"
            note = f"no bound stored for {', '.join(missing)} in {where}"
            result.messages.append(note)
            result.status = Status.FAILED if s.settings.csm_strict else Status.NO_BOUND
        if use_bounds:
            s.measured.setdefault(case, {})[check] = {k: v for k, v in values.items() if metrics.known(k)}
        s.results.append(result)
        return result

    def check_logits(self, case: str, check: str, ref: torch.Tensor, dev: torch.Tensor) -> CheckResult:
        bad = self.nonfinite_result(case, check, reference=ref, device=dev)
        if bad is not None:
            return bad
        values = metrics.logits_metrics(ref, dev, self.session.dtype)
        ties = int(metrics.near_ties(ref, self.session.dtype).sum())
        result = self.evaluate(case, check, values, floors={"cosine": self.session.settings.csm_min_cosine},
                               info={"argmax_near_ties": float(ties)})
        return result

    def module_local_bounds(self, case_id: str) -> dict[str, float]:
        """{module: stored bound of its local error} for a case (empty when none are stored or
        the run records bounds)."""
        s = self.session
        if s.bounds is None or s.settings.csm_record_bounds:
            return {}
        stored = s.bounds.bounds_of(case_id, "module_local")
        return {name.split("@", 1)[1]: bound for name, bound in stored.items() if "@" in name}

    # ---- end of session -----------------------------------------------------------------
    def record_bounds(self) -> str | None:
        """Write the bounds measured by a clean recording run; the outcome for the reports, or None
        when this run records nothing."""
        s = self.session
        if not s.settings.csm_record_bounds or not s.results:
            return None
        failed = [r for r in s.results if r.failed]
        if failed:
            return f"bounds NOT recorded: {len(failed)} check(s) failed, e.g. {failed[0].failure_text()}"
        if s.settings.csm_fault:
            return "bounds NOT recorded: a fault is planted in this run"
        keep = None
        if s.bounds is not None and (s.bounds.data.get("model") or {}).get("weights_digest") == s.identity.weights_digest:
            keep = s.bounds
        meta = s.run_meta()
        document = build_bounds(s.measured, s.settings.csm_bound_margin, meta)
        write_bounds(s.bounds_file, document, merge_with=keep)
        return f"bounds recorded for {len(s.measured)} case(s) with margin {s.settings.csm_bound_margin:g} in {s.bounds_file}"
