"""Judging a faulty run: caught (red in the entry's gate, beyond what the clean run after it
drifted) and place named (by the gate's failure text, not by the fault's own note).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from csm_conformance.tools.fault_catalogue.entries import Entry
from csm_conformance.tools.fault_catalogue.suite import Run, _first_line


@dataclass
class Outcome:
    id: str
    faults: list[str]
    gate: str
    caught: bool
    place: str
    place_named: bool
    first_line: str
    seconds: float
    exit_code: int
    failed_tests: list[str] = field(default_factory=list)
    cv: dict = field(default_factory=dict)  # performance: CV of each gated figure in this run
    change: dict = field(default_factory=dict)  # performance: relative change against the A/B baseline
    baseline_cv: dict = field(default_factory=dict)  # performance: CVs of the clean run it is judged against
    red: bool = False  # the faulty run failed in the entry's gate (caught, unless the clean run after it failed too)
    clean_after: str | None = None  # performance: "passed" or the false alarm of the clean run made right after
    clean_after_change: dict = field(default_factory=dict)  # performance: that clean run's change vs the baseline


def _without_fault_notes(text: str) -> str:
    """The fault's own description would name every place; it must not count."""
    return re.sub(r"PLANTED FAULT: [^\n]*", "", text)


def _place_text(gate: str, text: str) -> str:
    """Where a failure may name the place. A performance failure's first line lists the figures
    that regressed; the table under it lists every figure, so a noisy figure's regression would
    otherwise "name" any place. Elsewhere the whole text (a timeout names its place only in the
    traceback), without the fault's own description."""
    if gate == "performance":
        text = text.strip().splitlines()[0] if text.strip() else ""
    return _without_fault_notes(text)


def _perf_tolerances(run: Run) -> dict:
    """The effective tolerance (after noise widening) of each gated figure the run compared."""
    for result in (run.perf_report or {}).get("csm", {}).get("results", []):
        if result.get("mode") != "load":
            return {c["metric"]: c["tolerance"] for c in result.get("comparisons", [])}
    return {}


def _perf_numbers(run: Run) -> tuple[dict, dict]:
    """(CV, relative change vs baseline) per gated figure of the generation benchmark."""
    for result in (run.perf_report or {}).get("csm", {}).get("results", []):
        if result.get("mode") != "load":
            cv = {k: round(f.get("cv", 0.0), 4) for k, f in result.get("figures", {}).items()}
            change = {c["metric"]: round(c["change"], 4) for c in result.get("comparisons", [])}
            return cv, change
    return {}, {}


def judge(entry: Entry, run: Run, baseline_cv: dict | None = None, clean_after: Run | None = None) -> Outcome:
    """Did the faulty `run` go red in the entry's gate, naming the place? With `clean_after` (the
    same set-up run clean right after the faulty one, against the same baseline): when the clean
    run failed too in the same place (or crashed), the machine's drift alone may explain the red,
    and the catch stands only if the faulty run's change in that figure exceeds the clean run's
    change by more than the figure's tolerance. (A clean failure counts as a false alarm of the
    set-up either way.)"""
    in_gate = [(test, text) for g, test, text in run.failures if g == entry.gate]
    red = run.exit_code == 1 and bool(in_gate)
    after, drift_explains = None, False
    if clean_after is not None:
        after = "passed" if clean_after.exit_code == 0 else f"FALSE ALARM (exit {clean_after.exit_code}): {_first_line(clean_after, 'any')}"
        after_texts = [text for g, _test, text in clean_after.failures if g == entry.gate]
        if clean_after.exit_code != 0 and (not after_texts or any(entry.place in _place_text(entry.gate, t) for t in after_texts)):
            fault_change, after_change = _perf_numbers(run)[1].get(entry.place), _perf_numbers(clean_after)[1].get(entry.place)
            tolerance = _perf_tolerances(run).get(entry.place)
            drift_explains = None in (fault_change, after_change, tolerance) or fault_change - after_change <= tolerance
    caught = red and not drift_explains
    named = red and any(entry.place in _place_text(entry.gate, text) for _test, text in in_gate)
    if entry.alone:  # the fault is for these checks only: another red test means the place is not where it was planted
        named = named and all(any(a in test for a in entry.alone) for test, _text in in_gate)
    cv, change = _perf_numbers(run)
    return Outcome(entry.id, list(entry.faults), entry.gate, caught, entry.place, named, _first_line(run, entry.gate),
                   round(run.seconds, 1), run.exit_code, [t for t, _ in in_gate], cv, change, baseline_cv or {},
                   red, after, _perf_numbers(clean_after)[1] if clean_after is not None else {})

