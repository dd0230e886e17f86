"""The operators whose error grew: for every case with a check red only on the candidate, its
operator report (`<run>/ops/ops.json`, accuracy/ops) on the two stacks, compared call by call.

Why: a red logits check says the candidate is wrong, not where. Each distinct aten call is judged
on its own inputs against its correctly rounded standard (`excess`: error / allowed), so the call
whose excess grew between the stacks is the kernel to file, and a case where none grew has an error
that is not one kernel's (an accumulation over many, or a change above the operators).

The candidate's gate writes its report for a red check; the current stack's passed, so it wrote
none. Given `--before-python`, the current stack's interpreter records it here
(`csm-conformance ops`, the candidate's model, device and dtype, into `<verdict output>/ops-before`);
a failure there is said in the case's line, never a crash. Rows are matched by (operator, module,
phase, shapes, dtypes); one grew when it is past its standard on the candidate and not on the
current stack (or not run there), or its excess more than doubled and is above 0.5 on the candidate.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.reports.ops_report import where
from csm_conformance.tools.verdict.evidence import OPS_FILE, Side, VerdictError, read_ops

GREW_FACTOR, GREW_FLOOR = 2.0, 0.5  # "grew": excess more than doubled, and above this on the candidate
NAMED = 3  # operators named in a case's line
TIMEOUT_S = 600  # the current stack's recording, all cases together
_REFERENCE_CHECKS = ("cache_consistency", "golden_")  # checks of the CPU reference alone: no device operator to blame
_DEVICE_SUFFIX = re.compile(r" \([^()]*\)$")  # "<case> (<device>)" under pytest-xdist --dist each


@dataclass
class CaseOperators:
    case: str
    line: str  # the verdict's line for this case
    grew: list[dict] | None  # the rows that grew, worst first; None when the two stacks could not be compared


def red_cases(accuracy: list) -> list[str]:
    """Cases with a device check red on the candidate and not on the current stack (judge.AccuracyRow)."""
    found = [_DEVICE_SUFFIX.sub("", row.case) for row in accuracy
             if row.status(row.after) == "failed" and row.status(row.before) != "failed"
             and row.case != "model" and not row.check.startswith(_REFERENCE_CHECKS)]
    return list(dict.fromkeys(found))


def model_spec(model: dict | None) -> str | None:
    """The --model value that loads the model an ops.json (or a gate report) names (ModelIdentity.as_dict)."""
    model = model or {}
    kind = model.get("kind")
    if kind == "embedded-tiny":
        return "tiny"
    if kind == "random-full":
        return "random-full"
    return model.get("source") if kind == "checkpoint" else None


def _excess(row: dict) -> float | None:
    value = row.get("excess")
    return math.inf if value == "inf" else float(value) if isinstance(value, (int, float)) else None


def _json(value: float | None):
    return "inf" if value == math.inf else value


def _key(row: dict) -> tuple:
    return row["op"], row["module"], row["phase"], tuple(map(tuple, row["shapes"])), tuple(row["dtypes"])


def _worst(entry: dict) -> dict[tuple, tuple[float, dict]]:
    """key -> (its largest excess, that row): calls that differ only in scalar arguments share a key."""
    found: dict[tuple, tuple[float, dict]] = {}
    for row in entry["operators"]:
        excess = _excess(row)
        if excess is not None and excess > found.get(_key(row), (-1.0, None))[0]:
            found[_key(row)] = (excess, row)
    return found


def grown(before: dict, after: dict) -> list[dict]:
    """The candidate's rows whose error grew against the current stack's, worst on the candidate first."""
    old, rows = _worst(before), []
    for key, (new, row) in _worst(after).items():
        was = old.get(key, (None, None))[0]
        if (new > 1.0 and (was is None or was <= 1.0)) or (was is not None and new > GREW_FACTOR * was and new > GREW_FLOOR):
            rows.append({"op": row["op"], "module": row["module"], "phase": row["phase"], "shapes": row["shapes"], "dtypes": row["dtypes"],
                         "before_excess": was, "after_excess": new, "repro": row.get("repro")})
    rows.sort(key=lambda r: -r["after_excess"])
    return [{**r, "before_excess": _json(r["before_excess"]), "after_excess": _json(r["after_excess"])} for r in rows]


def _times(value) -> str:
    return "x" + ("inf" if value in ("inf", math.inf) else "nan" if value is None else f"{value:.2f}")


def _repro(rows: list[dict], side: Side) -> str:
    first = next((r["repro"] for r in rows if r.get("repro")), None)
    return f"; repro: {(side.path / OPS_FILE).parent / first}" if first else ""


def _named(rows: list[dict], text) -> str:
    more = len(rows) - NAMED
    return "; ".join(text(r) for r in rows[:NAMED]) + (f"; {more} more" if more > 0 else "")


def _compared(case: str, old: dict, new: dict, before: Side, after: Side) -> CaseOperators:
    rows = grown(old, new)
    if rows:
        text = lambda r: (f"{where(r)}: " + (_times(r["before_excess"]) if r["before_excess"] is not None  # noqa: E731
                                             else f"not run on {before.label}") + f" -> {_times(r['after_excess'])} its standard")
        return CaseOperators(case, f"operators whose error grew ({case}): {_named(rows, text)}{_repro(rows, after)}", rows)
    closest = max((r for r in new["operators"] if _excess(r) is not None), key=_excess, default=None)
    worst = f"; closest on {after.label}: {where(closest)}, {_times(_excess(closest))} its standard" if closest else ""
    return CaseOperators(case, f"operators whose error grew ({case}): none of {new['judged']} distinct calls, {before.label} against "
                               f"{after.label} (the error is not one kernel's){worst}", [])


def _uncompared(case: str, new: dict, after: Side, why: str) -> CaseOperators:
    past = [r for r in new["operators"] if r["past_standard"]]
    if not past:
        return CaseOperators(case, f"operators ({case}): none of {new['judged']} distinct calls is past its standard on {after.label} "
                                   f"(not compared: {why})", None)
    text = lambda r: f"{where(r)}: {_times(_excess(r))} its standard"  # noqa: E731
    return CaseOperators(case, f"operators past their standard on {after.label} ({case}; not compared: {why}): {_named(past, text)}"
                               f"{_repro(past, after)}", None)


def record_before(python: str, cases: list[str], meta: dict, output: Path) -> tuple[dict | None, str]:
    """(the ops.json the current stack's interpreter wrote for `cases`, '') or (None, why not)."""
    spec, device, dtype = model_spec(meta.get("model")), (meta.get("device") or {}).get("device"), meta.get("dtype")
    if not (spec and device and dtype):
        return None, "the candidate's report does not say which model, device and dtype to record the current stack on"
    target = output / "ops-before"
    (target / "ops.json").unlink(missing_ok=True)  # never read an earlier verdict's
    command = [python, "-m", "csm_conformance", "ops", *(f"--case={c}" for c in cases), f"--model={spec}", f"--device={device}",
               f"--dtype={dtype}", f"--output={target}", "--repro=none", f"--trigger=verdict: the current stack, for {', '.join(cases)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"`{python} -m csm_conformance ops` did not finish within {TIMEOUT_S} s"
    except OSError as exc:
        return None, f"`{python} -m csm_conformance ops` could not start ({exc.strerror or exc})"
    try:
        doc = read_ops(target / "ops.json")
    except VerdictError as exc:
        return None, str(exc)
    if doc is None or done.returncode not in (0, 1):
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return doc, f"`{python} -m csm_conformance ops` exited {done.returncode}: {last}"
    return doc, ""


def _identity(doc: dict) -> tuple:
    return (doc.get("model") or {}).get("key"), (doc.get("device") or {}).get("device"), doc.get("dtype")


def compare(accuracy: list, before: Side, after: Side, output: Path, before_python: str | None = None) -> list[CaseOperators]:
    """One CaseOperators per case red only on the candidate (judge.AccuracyRow list `accuracy`)."""
    if before.accuracy is None or after.accuracy is None:
        return []  # no accuracy check is judged (INCONCLUSIVE), so none is red only on the candidate
    cases = red_cases(accuracy)
    entries = lambda doc: {c["case"]: (c, doc) for c in (doc or {}).get("cases", [])}  # noqa: E731
    new, old = entries(after.ops), entries(before.ops)
    wanted, failed = [c for c in cases if c in new and c not in old], ""
    if wanted and before_python:
        recorded, failed = record_before(before_python, wanted, after.ops, output)
        old.update((c, e) for c, e in entries(recorded).items() if c in wanted)
    found = []
    for case in cases:
        if case not in new:
            found.append(CaseOperators(case, f"operators ({case}): no operator report on {after.label} ({after.path / OPS_FILE} "
                                             f"{'has no entry for it' if after.ops else 'does not exist'}; `csm-conformance ops --case {case}` "
                                             "on that stack writes one)", None))
        elif case not in old:
            why = (f"{before.label}'s operators could not be recorded: {failed}" if failed
                   else f"no operator report on {before.label}; --before-python records one")
            found.append(_uncompared(case, new[case][0], after, why))
        elif _identity(old[case][1]) != _identity(after.ops):
            found.append(_uncompared(case, new[case][0], after, f"{before.label}'s operator report is of {'/'.join(map(str, _identity(old[case][1])))}, "
                                                                f"{after.label}'s of {'/'.join(map(str, _identity(after.ops)))}"))
        else:
            found.append(_compared(case, old[case][0], new[case][0], before, after))
    return found


def across_cases(found: list[CaseOperators]) -> str | None:
    """One line over every case whose operators were compared, each operator that grew anywhere
    once (a kernel fault shows in every case that runs it): the line a reader needs first. None
    for fewer than two compared cases (their own line says it)."""
    compared = [f for f in found if f.grew is not None]
    if len(compared) < 2:
        return None
    by_op: dict[str, list[tuple[str, dict]]] = {}
    for f in compared:
        for row in f.grew:
            by_op.setdefault(row["op"], []).append((f.case, row))
    if not by_op:
        return f"operators whose error grew: none in {len(compared)} cases compared (the error is not one kernel's)"
    def after(row: dict) -> float:
        return math.inf if row["after_excess"] == "inf" else float(row["after_excess"] or 0.0)

    def worst(item):
        return max(after(r) for _, r in item[1])
    parts = []
    for op, rows in sorted(by_op.items(), key=worst, reverse=True)[:NAMED]:
        cases = list(dict.fromkeys(case for case, _ in rows))
        befores = [r["before_excess"] for _, r in rows if isinstance(r["before_excess"], (int, float))]
        was = f"x{min(befores):.2f}-{max(befores):.2f}" if befores else "not run"
        parts.append(f"{op} ({len(cases)} of {len(compared)} cases, {len(rows)} distinct calls: {was} -> up to "
                     f"{_times(max(after(r) for _, r in rows))} its standard)")
    more = len(by_op) - NAMED
    return "operators whose error grew: " + "; ".join(parts) + (f"; {more} more operators" if more > 0 else "") + " (per case below)"

