"""The operator report around the accuracy checks: run for the case of a red logits, decode or
decode-loop check (once per case), and as a gate of its own under `--csm-ops`.

Why automatic on red only: a green run's cost stays what it was (the report records and replays
every operator of a case: about a second on the embedded model, longer on the full-size one), and
a red check is when a user needs the operator and a repro. Each case's entry goes to
<output>/ops/ops.json (every case reported in this process), its bundles beside it.
"""

from __future__ import annotations

import weakref

import pytest

from csm_conformance.accuracy.check_results import CheckResult
from csm_conformance.accuracy.ops.bundle import write_bundles
from csm_conformance.accuracy.ops.run import case_ops
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.reports import ops_report

# session -> {case id: its ops.json entry, or the one line saying why there is none}
_REPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ops_dir(csm):
    return csm.settings.output_dir / "ops"


def reported(csm) -> dict[str, dict | str]:
    """The entries this session has reported so far (the console summary prints their tables)."""
    return _REPORTED.get(csm, {})


def report_case(csm, case, trigger: str) -> dict | str:
    """The case's ops.json entry (recorded, judged, bundled and written once per session); a report
    that cannot run is a one-line note, never a different failure of the check that asked."""
    done = _REPORTED.setdefault(csm, {})
    if case.id in done:
        return done[case.id]
    try:
        found = case_ops(csm.target, case)
        entry = ops_report.case_document(found, trigger, write_bundles(ops_dir(csm), found, "past"))
        written = [e for e in done.values() if isinstance(e, dict)] + [entry]
        ops_report.write(ops_dir(csm) / "ops.json", csm.run_meta(), written)
        (ops_dir(csm) / f"{case.id}.txt").write_text(ops_report.table(entry, rows=30) + "\n", encoding="utf-8")
        reporting.attach_json(f"{case.id} operators: every distinct aten call against its standard", entry)
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not mask the check's own verdict
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        done[case.id] = f"operator report could not run: {type(exc).__name__}: {first}"
        return done[case.id]
    done[case.id] = entry
    return entry


def explained(csm, case, result: CheckResult, at: int | None = None) -> CheckResult:
    """A red check's messages gain the operator report's line (at index `at`, else last): the first
    operator past its standard and its repro, or that no single operator is."""
    if result.failed:
        entry = report_case(csm, case, f"red check: {case.id}/{result.check}")
        line = entry if isinstance(entry, str) else ops_report.summary_line(entry, ops_dir(csm) / "ops.json")
        result.messages.insert(len(result.messages) if at is None else at, line)
    return result


def operator_conformance(csm, case) -> CheckResult:
    """--csm-ops: every distinct operator call of the case within its standard."""
    entry = report_case(csm, case, "--csm-ops")
    if isinstance(entry, str):
        pytest.fail(f"{case.id}/operators: {entry}", pytrace=False)
    result = csm.evaluate(case.id, "operators", {}, use_bounds=False, invariants={
        "operators_past_standard": (float(entry["past_standard"]), "==", 0.0)},
        info={"operator_calls": float(entry["recorded_calls"]), "distinct_calls_judged": float(entry["judged"]),
              "worst_excess": float(entry["operators"][0]["excess"]) if entry["operators"] and entry["operators"][0]["excess"] != "inf"
              else float("inf") if entry["operators"] else 0.0})
    if result.failed:
        result.messages.insert(0, ops_report.summary_line(entry, ops_dir(csm) / "ops.json"))
    return result
