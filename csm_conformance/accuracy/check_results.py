"""A check's verdict: its metric rows, its status and the messages that explain a failure.

Plain data, split from the session (issue 12): the gate fills it in, the reports read it (and send
it between pytest-xdist processes as `as_dict()`), and neither needs the session's models for it.
`csm_conformance.suite.session` still exports both classes, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from csm_conformance.accuracy import metrics
from csm_conformance.results import GateResult, Status


@dataclass
class MetricRow:
    metric: str
    value: float
    bound: float | None = None
    rule: str = "bound"  # bound | floor | invariant | unbounded (bound missing) | info (never bounded)
    ok: bool | None = None
    op: str | None = None  # for invariants: ">=", "<=" or "=="

    def describe(self) -> str:
        if self.rule == "invariant":
            return f"{self.metric} is {self.value:g}, must be {self.op} {self.bound:g}"
        better = metrics.better(self.metric) if metrics.known(self.metric) else "lower"
        op = ">=" if better == "higher" else "<="
        return f"{self.metric} {self.value:.7g} {'within' if self.ok else 'outside'} {op} {self.bound:.7g} ({self.rule})"


@dataclass
class CheckResult(GateResult):
    """The accuracy gate's result for one check of one case (status: passed, failed, no-bound, saved)."""

    case: str
    check: str
    rows: list[MetricRow] = field(default_factory=list)
    status: Status = Status.PASSED
    messages: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.case}/{self.check}"

    def as_dict(self) -> dict:
        return {
            "case": self.case,
            "check": self.check,
            "status": self.status.value,
            "messages": self.messages,
            "metrics": {
                r.metric: {"value": _json_float(r.value), "bound": _json_float(r.bound), "rule": r.rule, "ok": r.ok,
                           **({"op": r.op} if r.op else {})}
                for r in self.rows
            },
        }


def _json_float(value):
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)
