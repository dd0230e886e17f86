"""Judging: REGRESSED, INCONCLUSIVE or SAFE from the two stacks' evidence (the rules are in the
package docstring).

Kept apart from reading and rendering so that the rules are in one place: what counts as the
candidate getting worse (regressed), what is only missing evidence (missing), and what is a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from csm_conformance.accuracy.metrics import known, to_error
from csm_conformance.performance.baselines import compare_figures
from csm_conformance.runtime import stack
from csm_conformance.tools.verdict.evidence import ACCURACY_FILE, JUNIT_FILE, NO_AB, PERFORMANCE_FILE, Side


@dataclass
class AccuracyRow:
    case: str
    check: str
    before: dict | None
    after: dict | None

    def status(self, which: dict | None) -> str:
        return (which or {}).get("status", "not run")

    def closest_metric(self) -> str | None:
        """The metric of the candidate that uses the largest fraction of its bound."""
        best, use = None, -1.0
        for metric, row in ((self.after or {}).get("metrics") or {}).items():
            value, bound = row.get("value"), row.get("bound")
            if not known(metric) or not isinstance(value, (int, float)) or not isinstance(bound, (int, float)):
                continue
            err, lim = to_error(metric, value), to_error(metric, bound)
            frac = err / lim if lim > 0 else (0.0 if err <= 0 else float("inf"))
            if frac > use:
                best, use = metric, frac
        return best


@dataclass
class PerfRow:
    case: str
    before: dict | None
    after: dict | None
    comparisons: list = field(default_factory=list)

    @property
    def mode(self) -> str | None:
        return (self.after or self.before or {}).get("mode") or (COMPILED if self.case.endswith("-compiled") else None)

    @property
    def verdict(self) -> str:
        if self.before is None or self.after is None:
            return "not compared"
        verdicts = {c.verdict for c in self.comparisons}
        return "regressed" if "regressed" in verdicts else "improved" if "improved" in verdicts else "ok"


@dataclass
class Verdict:
    status: str
    reasons: list[str]
    before: Side
    after: Side
    accuracy: list[AccuracyRow]
    performance: list[PerfRow]
    notes: list[str] = field(default_factory=list)
    ab: dict | None = None  # the A/B comparison's ab.json, when performance was judged by it
    performance_method: str = "gate runs"  # or "ab" (the A/B comparison was asked for)
    stack_diff: list | None = None  # (what, before, after) rows of runtime.stack.diff; None when a side recorded none
    stack_note: str = ""  # one line: what kind of change the stack diff is
    baselines: object | None = None  # tools.baselines_diff.Result, when --base-baselines was given
    compiled_caveat: str | None = None  # set beside every compiled timing that reads SAFE/faster: the compiled loop is red or unchecked
    operators: list = field(default_factory=list)  # operators.CaseOperators per case red only on the candidate (set by the cli)

    def caveat(self, mode: str | None, reads_well: bool) -> str:
        """' (caveat)' for a timing line of `mode` that reads SAFE/ok/faster, else ''."""
        return _caveat(self.compiled_caveat, mode) if reads_well else ""

    @property
    def headline(self) -> str:
        return self.status + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


COMPILED = "compiled"  # the generation mode the performance gate times as <workload>-compiled
COMPILED_LOOP = "decode_loop_compiled"  # test_decode_loop[<case>-compiled]'s check in the accuracy report
_COMPILED_SKIP = re.compile(r"^(?P<case>.+)-compiled(?P<device> \(.+\))?$")  # a skip is recorded as case "<case>-compiled", check "decode_loop"
_COMPILED_TEST = re.compile(r"test_decode_loop\[(?P<case>.+)-compiled\]$")


def compiled_loop_case(case: str, check: str) -> str | None:
    """The case of an accuracy row that is the compiled decode-loop check (run, or skipped), else None."""
    if check == COMPILED_LOOP:
        return case
    match = _COMPILED_SKIP.match(case) if check == "decode_loop" else None
    return match["case"] + (match["device"] or "") if match else None


def _compiled_loops(side: Side) -> dict[str, tuple[str, str]]:
    """case -> (status, first message) of one side's compiled decode-loop check: from its accuracy
    report, else its junit.xml (a check that raised, e.g. in torch.compile, has no accuracy result)."""
    found = {}
    for r in (side.accuracy or {}).get("results", []):
        case = compiled_loop_case(f"{r['case']} ({r['device']})" if r.get("device") else r["case"], r["check"])
        if case is not None:
            found[case] = (r.get("status", "not run"), next(iter(r.get("messages") or []), ""))
    for test, outcome in (side.tests or {}).items():
        match = _COMPILED_TEST.search(test.split("::")[-1])
        if match and match["case"] not in found and outcome in ("failed", "error"):
            found[match["case"]] = ("failed", f"the test {'raised' if outcome == 'error' else 'failed'}, no accuracy result (see junit.xml)")
    return found


def _compiled_findings(before: Side, after: Side, regressed: list[str], missing: list[str]) -> tuple[str | None, set[str]]:
    """The compiled generation loop (static cache + torch.compile) is what the compiled timing runs:
    red on the candidate (and not on the current stack) is REGRESSED, passed on the current stack and
    not checked on the candidate is INCONCLUSIVE, each named in plain words. Returns the caveat to set
    beside the candidate's compiled timings that read SAFE/faster (or None), and the cases said here."""
    old, new = _compiled_loops(before), _compiled_loops(after)
    red = {c: msg for c, (status, msg) in new.items() if status == "failed"}
    only_new = {c: msg for c, msg in red.items() if old.get(c, ("not run", ""))[0] != "failed"}
    lost = {c: new.get(c, ("not run", "not run"))[1] or "skipped" for c, (status, _) in old.items()
            if status == "passed" and new.get(c, ("not run", ""))[0] in ("skipped", "not run")}
    named = lambda found: "; ".join(f"{c} ({m})" if m else c for c, m in found.items())  # noqa: E731
    if only_new:
        regressed.append(f"compiled generation loop wrong on {after.label}: {named(only_new)}; its compiled timing (SAFE/faster) is not to be trusted")
    if lost:
        missing.append(f"compiled generation loop not checked on {after.label} (it passed on {before.label}): {named(lost)}; "
                       "its compiled timing (SAFE/faster) is unverified")
    said = {*only_new, *lost}
    if red:
        return f"not to be trusted: the compiled generation loop is wrong on {after.label} ({', '.join(red)})", said
    if lost:
        return f"unverified: the compiled generation loop was not checked on {after.label} ({', '.join(lost)})", said
    return None, said


def _accuracy_rows(before: Side, after: Side) -> list[AccuracyRow]:
    # under pytest-xdist --dist each, one (case, check) has a result per device
    index = lambda side: {(r.get("device", ""), r["case"], r["check"]): r for r in (side.accuracy or {}).get("results", [])}  # noqa: E731
    b, a = index(before), index(after)
    return [AccuracyRow(case if not device else f"{case} ({device})", check, b.get(key), a.get(key))
            for key in dict.fromkeys([*b, *a]) for device, case, check in [key]]


def _perf_rows(before: Side, after: Side) -> list[PerfRow]:
    index = lambda side: {r["case"]: r for r in ((side.performance or {}).get("csm") or {}).get("results", [])}  # noqa: E731
    b, a = index(before), index(after)
    settings = ((after.performance or before.performance or {}).get("csm") or {}).get("settings") or {}
    tolerances = {k: tuple(v) for k, v in (settings.get("tolerances") or {}).items()}
    noise_factor = float(settings.get("noise_factor", 3.0))
    noise_cap = float(settings.get("noise_cap", 1e9))  # runs from before the cap: uncapped, as they were judged
    device_type = ((after.meta.get("device") or {}).get("type")) or "cpu"
    rows = []
    for case in dict.fromkeys([*b, *a]):
        row = PerfRow(case, b.get(case), a.get(case))
        if row.before and row.after:
            row.comparisons = compare_figures(row.before.get("figures") or {}, row.after.get("figures") or {}, tolerances, device_type, noise_factor, noise_cap)
        rows.append(row)
    return rows


def _ab_findings(ab: dict, before: Side, after: Side) -> tuple[list[str], list[str], list[str]]:
    """(regressed, missing, notes) from the A/B comparison, which must have run the two stacks the
    gate runs describe."""
    regressed, missing, notes = [], [], []
    meta = after.meta or before.meta
    ours = ((meta.get("model") or {}).get("key"), (meta.get("device") or {}).get("type"), meta.get("dtype"))
    theirs = ((ab.get("model") or {}).get("key"), (ab.get("device") or {}).get("type"), ab.get("dtype"))
    if all(ours) and ours != theirs:
        missing.append(f"the A/B comparison ran {'/'.join(map(str, theirs))}, the gate runs {'/'.join(map(str, ours))}")
    for label, side, key in (("before", before, "before"), ("after", after, "after")):
        ran, gated = (ab.get(key) or {}).get("versions") or {}, side.versions
        differ = [f"{pkg} {ran.get(pkg)} vs {gated.get(pkg)}" for pkg in ("torch", "transformers", "torch_npu")
                  if pkg in gated and ran.get(pkg) != gated.get(pkg)]
        if differ:
            missing.append(f"the A/B comparison's {label} side is not the {side.label} stack: {', '.join(differ)}")
        faults = (ab.get(key) or {}).get("fault_notes") or []
        if faults:
            missing.append(f"the A/B comparison planted a fault on its {label} side: {'; '.join(faults)}")
    if ab["verdict"] == "REGRESSED":
        # a comparison of other stacks, another model or with a planted fault cannot condemn the candidate
        (missing if missing else regressed).extend(f"performance (A/B) {r}" for r in ab.get("reasons", []))
    elif ab["verdict"] == "INCONCLUSIVE":
        missing += [f"performance (A/B) undecided: {r}" for r in ab.get("reasons", [])]
    notes.append(f"performance judged by the paired A/B comparison ({ab.get('kind', '?')}; {ab.get('budget', '?')}): {ab['verdict']}")
    return regressed, missing, notes


def stack_view(before: Side, after: Side, ab: dict | None) -> tuple[list | None, str]:
    """(the stack diff, one line saying what kind of change it is), from the gate reports' "stack",
    else the A/B report's per-side fingerprints. A side that recorded none is named, never an error."""
    found, source = {}, []
    for key, side in (("before", before), ("after", after)):
        found[key] = side.stack
        if found[key] is None and isinstance(((ab or {}).get(key) or {}).get("stack"), dict):
            found[key] = ab[key]["stack"]
            source.append(f"{side.label}'s from the A/B report")
    unrecorded = [side.label for key, side in (("before", before), ("after", after)) if found[key] is None]
    if unrecorded:
        return None, f"stack not recorded on {' and '.join(unrecorded)}: only the versions below are known"
    rows = stack.diff(found["before"], found["after"])
    where = f" ({'; '.join(source)})" if source else ""
    if not rows:
        return rows, f"the two stacks are identical (packages, accelerator software, library variables): this verdict is an A/A{where}"
    if all(what.startswith(("accelerator.", "env.")) for what, _, _ in rows):
        changes = ", ".join(f"{what} {old or '-'} -> {new or '-'}" for what, old, new in rows)
        return rows, f"only the accelerator software changed: {changes} (the same Python packages){where}"
    return rows, f"{len(rows)} change(s) between the two stacks{where}"


def _baselines_findings(result, missing: list[str], notes: list[str]) -> None:
    """A bound, golden or baseline loosened against the base and not acknowledged makes the verdict
    INCONCLUSIVE: the candidate was judged against weaker references than the base's."""
    if result is None:
        return
    if result.status == "loosened":
        missing.append(f"{len(result.counted)} bound(s), golden reference(s) or baseline(s) loosened, slower or changed against "
                       f"{result.base} without acknowledgement (see Loosened bounds and baselines)")
    else:
        notes.append(f"baselines against {result.base}: {result.headline()}")


def decide(before: Side, after: Side, ab: dict | None = None, baselines=None) -> Verdict:
    """`baselines`: a tools.baselines_diff.Result of the run's baselines against the base's."""
    regressed, missing, notes = [], [], []
    for side in (before, after):
        if side.accuracy is None and side.performance is None and side.tests is None and side.status is None:
            missing.append(f"no reports in {side.path} ({side.label})")
        for fault in side.planted_faults():
            missing.append(f"{side.label} run has a planted fault: {fault}")
    if before.identity() != after.identity() and all(before.identity()) and all(after.identity()):
        missing.append(f"different runs: {before.label} {'/'.join(before.identity())} vs {after.label} {'/'.join(after.identity())}")

    setup_error = (after.status or {}).get("setup_error")
    if setup_error and not (before.status or {}).get("setup_error"):
        regressed.append(f"{after.label} stopped at setup: {setup_error}")
    elif (before.status or {}).get("setup_error"):
        missing.append(f"{before.label} stopped at setup: {before.status['setup_error']}")

    if before.tests is not None and after.tests is not None:
        before_failed = set(before.failed_tests())
        new_failures = [t for t in after.failed_tests() if t not in before_failed]
        if new_failures:
            regressed.append(f"{len(new_failures)} test(s) fail only on {after.label}: " + ", ".join(t.split("::")[-1] for t in new_failures[:5])
                             + (" ..." if len(new_failures) > 5 else ""))
        both = sorted(t for t in before_failed if after.tests.get(t) in ("failed", "error"))
        if both:
            missing.append(f"{len(both)} test(s) fail on both stacks, so they cannot judge the candidate: "
                           + ", ".join(t.split("::")[-1] for t in both[:3]) + (" ..." if len(both) > 3 else ""))
        fixed = sorted(t for t in before_failed if after.tests.get(t) == "passed")
        if fixed:
            notes.append(f"{len(fixed)} test(s) fail on {before.label} and pass on {after.label}: " + ", ".join(t.split("::")[-1] for t in fixed[:5]))
        not_run = [t for t, s in before.tests.items() if s != "skipped" and after.tests.get(t, "skipped") == "skipped"]
        if not_run:
            missing.append(f"{len(not_run)} test(s) ran on {before.label} but not on {after.label}: " + ", ".join(t.split("::")[-1] for t in not_run[:3]))
        if not any(s != "skipped" for s in before.tests.values()):
            missing.append(f"{before.label} ran no test")
    else:
        missing += [f"no {JUNIT_FILE} in {s.path} ({s.label})" for s in (before, after) if s.tests is None]

    accuracy = _accuracy_rows(before, after)
    compiled_caveat = None
    if before.accuracy is None or after.accuracy is None:
        missing += [f"no accuracy report ({ACCURACY_FILE}) for {s.label}" for s in (before, after) if s.accuracy is None]
    else:
        compiled_caveat, said = _compiled_findings(before, after, regressed, missing)
        for row in accuracy:
            if compiled_loop_case(row.case, row.check) in said:
                continue  # said above, in words about the compiled loop
            if row.status(row.after) == "failed" and row.status(row.before) != "failed":
                regressed.append(f"accuracy {row.case}/{row.check} outside its bound on {after.label}: "
                                 + "; ".join((row.after or {}).get("messages", [])[:1]))
            if row.after is None:
                missing.append(f"accuracy {row.case}/{row.check} not run on {after.label}")

    performance = [] if ab is not None else _perf_rows(before, after)
    method = "gate runs" if ab is None else "ab"
    if ab is NO_AB:
        missing.append("no A/B report: the performance comparison stopped before writing one (see output/verdict/ab/ and its workers' logs)")
        ab = None
    elif ab is not None:
        found = _ab_findings(ab, before, after)
        regressed += found[0]
        missing += found[1]
        notes += found[2]
        fine = [c["case"] for c in ab.get("cases") or [] if c.get("mode") == COMPILED and c.get("decision") == "SAFE"]
        if fine and compiled_caveat:
            notes.append(f"compiled timing (A/B) {', '.join(fine)} reads SAFE: {compiled_caveat}")
    elif before.performance is None or after.performance is None:
        missing += [f"no performance report ({PERFORMANCE_FILE}) for {s.label}" for s in (before, after) if s.performance is None]
    else:
        for row in performance:
            if row.after is None:
                missing.append(f"performance {row.case} not timed on {after.label}")
            bad = [c for c in row.comparisons if c.verdict == "regressed"]
            if bad:
                worst = max(bad, key=lambda c: c.change - c.tolerance)
                regressed.append(f"performance {row.case}: {worst.metric} {worst.change:+.1%} (tolerance +{worst.tolerance:.1%})"
                                 + (f" and {len(bad) - 1} more figure(s)" if len(bad) > 1 else ""))
        better = [r for r in performance if r.verdict == "improved"]
        if better:
            notes.append(f"faster or leaner on {after.label}: " + ", ".join(r.case + _caveat(compiled_caveat, r.mode) for r in better))
        steady = [r.case for r in performance if r.verdict == "ok" and r.mode == COMPILED]
        if steady and compiled_caveat:
            notes.append(f"compiled timing {', '.join(steady)} reads ok on {after.label}: {compiled_caveat}")

    _baselines_findings(baselines, missing, notes)
    status = "REGRESSED" if regressed else "INCONCLUSIVE" if missing else "SAFE"
    reasons = regressed if regressed else missing
    if regressed and missing:
        notes += [f"also: {m}" for m in missing]
    return Verdict(status, reasons, before, after, accuracy, performance, notes, ab, method,
                   *stack_view(before, after, None if ab is NO_AB else ab), baselines, compiled_caveat)


def _caveat(caveat: str | None, mode: str | None) -> str:
    return f" ({caveat})" if caveat and mode == COMPILED else ""
