"""The operator report: output/ops/ops.json (schema ops-1), its console table, and its one line.

Rows are sorted by how far past its standard each distinct call is (`excess`, error / allowed), so
the first row of a red case is the operator to file. Every distinct call is kept, not only the ones
past their standard: the verdict compares a call's excess on two stacks (an operator whose error
grew while still inside its standard is a lead, not a failure).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

from csm_conformance.reports import schema as report_schema

STANDARD = ("correctly rounded: the call's inputs (in the device's dtypes), the op on the CPU in float64 (float32 where it has no "
            "float64 kernel), rounded to the output's dtype; allowed: 2 x max(its error, u) + 4 x u_acc x sqrt(K) (docs/ops.md)")
ROW_KEYS = ("max_abs_error", "rel_error", "cosine", "rounded_rel_error", "rounded_max_abs_error", "allowed_rel_error",
            "allowed_max_abs_error", "out_dtype", "reduction", "standard_source", "problem")


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else (None if math.isnan(value) else "inf")


def call_row(rank: int, judged, repro: str | None) -> dict:
    call, result = judged.call, judged.result
    row = {"rank": rank, "op": call.op, "module": call.module, "phase": call.phase, "shapes": call.shapes, "dtypes": call.dtypes,
           "calls": call.calls, "excess": _finite(float(judged.excess)), "past_standard": judged.past, "repro": repro}
    row.update({k: _finite(result[k]) for k in ROW_KEYS if k in result})
    return row


def case_document(case_ops, trigger: str, repros: dict[int, str] | None = None) -> dict:
    """One case's entry; `repros`: rank -> the repro script's path (relative to ops.json)."""
    repros = repros or {}
    unjudged: dict[str, int] = {}
    for _call, why in case_ops.unjudged:
        unjudged[why] = unjudged.get(why, 0) + 1
    ranked = case_ops.ranked
    return {"case": case_ops.case, "trigger": trigger, "device": case_ops.device, "recorded_calls": case_ops.recorded,
            "distinct_calls": len(ranked) + len(case_ops.unjudged), "judged": len(ranked), "unjudged": unjudged,
            "past_standard": sum(1 for j in ranked if j.past),
            "record_seconds": round(case_ops.record_seconds, 3), "judge_seconds": round(case_ops.judge_seconds, 3),
            "operators": [call_row(rank, j, repros.get(rank)) for rank, j in enumerate(ranked, 1)]}


def document(meta: dict, cases: list[dict]) -> dict:
    """ops.json: `meta` as ConformanceSession.run_meta() gives it (model, device, dtype, versions)."""
    return {"report_schema": report_schema.VERSIONS["ops"], "suite": "csm-conformance operators",
            "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": meta.get("model"), "device": meta.get("device"), "dtype": meta.get("dtype"), "versions": meta.get("versions"),
            "standard": STANDARD, "cases": cases}


def write(path: Path, meta: dict, cases: list[dict]) -> Path:
    """Write (replace) ops.json with these cases, checked against its schema first."""
    doc = document(meta, cases)
    report_schema.validate(doc, "ops", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read(path: Path) -> dict | None:
    """ops.json read and checked (ReportSchemaError when damaged); None when there is none."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise report_schema.ReportSchemaError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    report_schema.validate(doc, "ops", str(path))
    return doc


def where(row: dict) -> str:
    """`aten.silu.default at backbone_model.layers.0.mlp.act_fn (prefill; 1x21x128; bfloat16)`."""
    shapes = ", ".join("x".join(map(str, s)) or "scalar" for s in row["shapes"][:3])
    return f"{row['op']} at {row['module'] or '(top level)'} ({row['phase']}; {shapes}; {'/'.join(sorted(set(row['dtypes'])))})"


def _number(value, spec: str = ".3g") -> str:
    """A row's number as text: ops.json writes an infinite one as "inf" and a NaN as null."""
    return value if isinstance(value, str) else "-" if value is None else format(value, spec)


def _error(row: dict) -> str:
    if row.get("problem"):
        return row["problem"]
    return (f"rel err {_number(row.get('rel_error'))}, max |err| {_number(row.get('max_abs_error'))}: "
            f"{_number(row['excess'], '.2g')} x its standard")


def summary_line(entry: dict, ops_json: Path) -> str:
    """The one line a red check adds: the first operator past its standard, or that none is."""
    ops = entry["operators"]
    if not entry["past_standard"]:
        worst = f"; closest: {where(ops[0])}, {_error(ops[0])}" if ops else ""
        return (f"operators: none of {entry['judged']} distinct calls is past its standard{worst} "
                f"(the error is not one kernel's: compare the stacks, {ops_json})")
    first = ops[0]
    repro = f"; repro: {ops_json.parent / first['repro']}" if first.get("repro") else ""
    return f"first operator past its standard: {where(first)}, {_error(first)} ({entry['past_standard']} of {entry['judged']} past){repro}"


def table(entry: dict, rows: int = 10) -> str:
    """The console table: the rows past their standard (at least the closest three)."""
    shown = [r for r in entry["operators"] if r["past_standard"]][:rows] or entry["operators"][:3]
    lines = [f"operators of {entry['case']} ({entry['trigger']}): {entry['recorded_calls']} calls, {entry['judged']} distinct judged, "
             f"{entry['past_standard']} past their standard",
             f"  {'x std':>7}  {'rel err':>9}  {'max|err|':>9}  {'cosine':>10}  operator / module / phase / shapes"]
    for r in shown:
        excess = "inf" if r["excess"] == "inf" else f"{r['excess']:.2f}"
        cos = f"{r['cosine']:.7f}" if isinstance(r.get("cosine"), float) else "-"
        rel = f"{r['rel_error']:.3g}" if isinstance(r.get("rel_error"), float) else "-"
        mx = f"{r['max_abs_error']:.3g}" if isinstance(r.get("max_abs_error"), float) else "-"
        lines.append(f"  {excess:>7}  {rel:>9}  {mx:>9}  {cos:>10}  {where(r)}" + (f"  -> {r['repro']}" if r.get("repro") else ""))
    return "\n".join(lines)
