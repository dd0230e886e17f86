"""verdict.md for people and verdict.json for machines, from a decided Verdict.

Kept apart from the judgement so that how the verdict is shown cannot change what it is; the A/B
comparison's own tables are reused (ab.report) rather than drawn a second time.
"""

from __future__ import annotations

import datetime as _dt
import re

from csm_conformance.accuracy.metrics import better
from csm_conformance.performance.baselines import GATED
from csm_conformance.runtime.stack import diff_markdown
from csm_conformance.tools import baselines_diff
from csm_conformance.tools.verdict.judge import AccuracyRow, Verdict
from csm_conformance.tools.verdict.operators import across_cases


def _fmt(value) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _metric_cell(row: AccuracyRow, metric: str | None) -> tuple[str, str, str, str]:
    if metric is None:
        return "-", "-", "-", "-"
    b = ((row.before or {}).get("metrics") or {}).get(metric) or {}
    a = ((row.after or {}).get("metrics") or {}).get(metric) or {}
    op = ">=" if better(metric) == "higher" else "<="
    return metric, _fmt(b.get("value")), _fmt(a.get("value")), f"{op} {_fmt(a.get('bound'))}" if a.get("bound") is not None else "no bound"


def _about(reason: str, case: str) -> bool:
    """Whether `reason` is the red accuracy check (or the compiled loop's) of `case`."""
    return reason.startswith(("accuracy ", "compiled generation loop wrong")) and re.search(rf"(?<![\w-]){re.escape(case)}(?![\w-])", reason) is not None


def _why(v: Verdict, why: list[str]) -> list[str]:
    """The reasons, each case's operator line right under its red accuracy check."""
    lines, said = [], set()
    for reason in why:
        lines.append(f"- {reason}")
        for found in v.operators:
            if found.case not in said and _about(reason, found.case):
                lines.append(f"  - {found.line}")
                said.add(found.case)
    return lines + [f"- {found.line}" for found in v.operators if found.case not in said]


def _where(v: Verdict) -> list[str]:
    """Where the A/B's time went (its paired profiles' first lines), right under the headline."""
    found = (v.ab or {}).get("attribution")
    if not found:
        return []
    return ([f"Where the time went ({found['case']}, paired profiles of both stacks; attribution.md beside ab.json):", ""]
            + [f"{i}. {line}" for i, line in enumerate(found["headline"], 1)] + [""])


def to_markdown(v: Verdict) -> str:
    b, a = v.before, v.after
    summary = across_cases(v.operators)
    lines = [f"# Upgrade verdict: {v.headline}", ""] + _where(v) + ([f"- {summary}"] if summary else []) \
        + ([f"- {found.line}" for found in v.operators] + [""] if v.operators else [])
    lines += ["## What changed in the stack", "", v.stack_note, ""]
    if v.stack_diff:
        lines += diff_markdown(v.stack_diff) + [""]
    meta = a.meta or b.meta
    model = meta.get("model") or {}
    device = meta.get("device") or {}
    lines += [f"- model: {model.get('key', '?')} ({model.get('claim', 'unknown')})",
              f"- device: {device.get('device', '?')} ({device.get('name', '?')}), dtype {meta.get('dtype', '?')}, reference cpu float32",
              f"- before: `{b.path}` ({b.label}); after: `{a.path}` ({a.label})", ""]
    lines += ["## Versions", "", f"| package | {b.label} | {a.label} |", "| --- | --- | --- |"]
    for pkg in dict.fromkeys([*b.versions, *a.versions]):
        old, new = b.versions.get(pkg, "-"), a.versions.get(pkg, "-")
        lines.append(f"| {pkg} | {old} | {new}{' (changed)' if old != new else ''} |")
    why = v.reasons or ["every test that passed before passes after, and " + (
        "every A/B figure's interval lies below 1 + its tolerance" if v.performance_method == "ab"
        else "no gated figure got worse beyond its tolerance")]
    lines += ["", "## Why", ""] + _why(v, why)
    lines += [f"- {n}" for n in v.notes]
    if v.baselines is not None:
        lines += ["", f"## Loosened bounds and baselines (against {v.baselines.base}): {v.baselines.status}", "", v.baselines.headline()]
        lines += [""] + baselines_diff.table(v.baselines.items) if v.baselines.items else []
    if v.accuracy:
        lines += ["", "## Accuracy (device vs CPU float32, per case and check)", "",
                  "The metric shown is the candidate's closest to its bound; every metric is in the JSON.", "",
                  f"| case | check | {b.label} | {a.label} | metric | {b.label} | {a.label} | bound |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in v.accuracy:
            metric, old, new, bound = _metric_cell(row, row.closest_metric())
            lines.append(f"| {row.case} | {row.check} | {row.status(row.before)} | {row.status(row.after)} | {metric} | {old} | {new} | {bound} |")
    if v.ab is not None:
        from csm_conformance.tools.ab import report as ab_report

        body = ab_report.to_markdown(v.ab).split("\n", 1)[1].replace("\n## ", "\n### ")  # its own headline is in Why
        # a compiled case that reads SAFE while the compiled loop is red or unchecked: the caveat beside it
        heads = tuple(f"### {c['case']}: SAFE (" for c in v.ab.get("cases") or [] if v.caveat(c.get("mode"), c["decision"] == "SAFE"))
        body = "\n".join(line + (v.caveat("compiled", True) if line.startswith(heads) else "") for line in body.split("\n"))
        lines += ["", f"## Performance: paired A/B comparison, {v.ab['verdict']}", "", body]
    if v.performance:
        lines += ["", "## Performance (candidate against the current stack, same machine)", "",
                  "Tolerance: the run's configured tolerance for the figure's class, widened to noise_factor x the larger CV.", ""]
        for row in v.performance:
            lines += [f"### {row.case}: {row.verdict}{v.caveat(row.mode, row.verdict in ('ok', 'improved'))}", ""]
            if row.comparisons:
                lines += [f"| figure | {b.label} | {a.label} | change | tolerance | verdict |", "| --- | --- | --- | --- | --- | --- |"]
                for c in row.comparisons:
                    unit = GATED[c.metric][2]
                    tol = f"+{c.tolerance:.1%}" + (" (noise)" if c.widened else "")
                    lines.append(f"| {c.metric} | {c.baseline:.4g}{unit} | {c.now:.4g}{unit} | {c.change:+.1%} | {tol} | {c.verdict} |")
                lines.append("")
    return "\n".join(lines) + "\n"


def to_json(v: Verdict) -> dict:
    return {
        "verdict": v.status,
        "headline": v.headline,
        "reasons": v.reasons,
        "notes": v.notes,
        "compiled_caveat": v.compiled_caveat,
        "operators_grew": {found.case: found.grew for found in v.operators},  # None: the two stacks could not be compared
        "operators_lines": {found.case: found.line for found in v.operators},
        "operators_summary": across_cases(v.operators),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stack_note": v.stack_note,
        "stack_diff": None if v.stack_diff is None else [{"what": w, "before": old, "after": new} for w, old, new in v.stack_diff],
        "baselines": None if v.baselines is None else baselines_diff.to_json(v.baselines),
        "before": {"label": v.before.label, "path": str(v.before.path), "versions": v.before.versions, "failed_tests": v.before.failed_tests(),
                   "stack": v.before.stack},
        "after": {"label": v.after.label, "path": str(v.after.path), "versions": v.after.versions, "failed_tests": v.after.failed_tests(),
                  "stack": v.after.stack},
        "model": v.after.meta.get("model") or v.before.meta.get("model"),
        "device": v.after.meta.get("device") or v.before.meta.get("device"),
        "dtype": v.after.meta.get("dtype") or v.before.meta.get("dtype"),
        "accuracy": [{"case": r.case, "check": r.check, "before": r.before, "after": r.after} for r in v.accuracy],
        "performance_method": v.performance_method,
        "ab": v.ab,
        "attribution": (v.ab or {}).get("attribution"),
        "performance": [{"case": r.case, "verdict": r.verdict, "before": (r.before or {}).get("figures"),
                         "after": (r.after or {}).get("figures"), "comparisons": [c.as_dict() for c in r.comparisons]} for r in v.performance],
    }
