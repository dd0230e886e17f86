"""The upgrade verdict: may the candidate stack replace the current one?

Both stacks run the same gate on the same machine (`tox -e current,candidate`), each writing its
reports to a directory: accuracy_evaluation.json, performance_benchmark.json, junit.xml and
run_status.json. This module reads the two directories and decides:

- REGRESSED when the candidate fails a test the current stack passed (an accuracy check outside its
  stored bound or golden reference, a crash, a setup error such as a model that no longer loads),
  or when a gated performance figure of the candidate is worse than the current stack's by more
  than its tolerance (the run's own tolerances, widened to noise_factor x CV as the gate does);
- INCONCLUSIVE when something needed for a judgement is missing: a report, a test the current
  stack ran and the candidate did not, a different model/device/dtype, a planted fault, or a test
  that fails on both stacks (a test the current stack fails and the candidate passes is a note);
- SAFE otherwise.

Performance comes from the paired A/B comparison when one is given (`--ab DIR`, the output of
`python -m csm_conformance.ab` run on the two stacks' interpreters, as `tox -e verdict` does): per
case and figure, the ratio candidate / current with its interval, REGRESSED or SAFE or
INCONCLUSIVE as the A/B decided. Without it, the gate runs' own figures are compared as before
(candidate against the current stack timed minutes earlier, tolerances widened by noise), which
a busy machine can fool either way; the report says which method judged.

Usage: python -m csm_conformance.verdict --before DIR --after DIR [--ab DIR] [--output DIR]
Exit codes: 0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import better, known, to_error
from .perf_baselines import GATED, compare_figures

EXIT = {"SAFE": 0, "REGRESSED": 1, "INCONCLUSIVE": 3}
ACCURACY_FILE = "accuracy_evaluation.json"
PERFORMANCE_FILE = "performance_benchmark.json"
JUNIT_FILE = "junit.xml"
STATUS_FILE = "run_status.json"


class VerdictError(ValueError):
    """A report that exists but cannot be read; the message is one line."""


@dataclass
class Side:
    """One stack's run, as its reports describe it."""

    label: str
    path: Path
    accuracy: dict | None = None
    performance: dict | None = None
    status: dict | None = None
    tests: dict[str, str] | None = None  # junit: test id -> passed | failed | error | skipped

    @property
    def meta(self) -> dict:
        return self.accuracy or (self.performance or {}).get("csm") or {}

    @property
    def versions(self) -> dict:
        return self.meta.get("versions") or (self.status or {}).get("versions") or {}

    def identity(self) -> tuple:
        meta = self.meta
        return ((meta.get("model") or {}).get("key"), (meta.get("device") or {}).get("device"), meta.get("dtype"))

    def planted_faults(self) -> list[str]:
        faults = list(((self.accuracy or {}).get("settings") or {}).get("planted_faults") or [])
        faults += ((self.performance or {}).get("csm") or {}).get("planted_faults") or []
        return sorted(set(faults))

    def failed_tests(self) -> list[str]:
        return sorted(t for t, s in (self.tests or {}).items() if s in ("failed", "error"))


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerdictError(f"{path} is not readable JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(document, dict):
        raise VerdictError(f"{path} is not a JSON object")
    return document


def _read_junit(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise VerdictError(f"{path} is not readable JUnit XML ({exc})") from None
    tests = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        tests[name] = ("error" if "error" in kinds else "failed" if "failure" in kinds
                       else "skipped" if "skipped" in kinds else "passed")
    return tests


def read_side(label: str, path: Path) -> Side:
    path = Path(path)
    if not path.is_dir():
        raise VerdictError(f"{label}: {path} is not a directory (run the gate for that stack first)")
    side = Side(label, path, _read_json(path / ACCURACY_FILE), _read_json(path / PERFORMANCE_FILE),
                 _read_json(path / STATUS_FILE), _read_junit(path / JUNIT_FILE))
    if side.performance is not None and not isinstance(side.performance.get("csm"), dict):
        raise VerdictError(f"{path / PERFORMANCE_FILE} has no 'csm' block: not written by csm-conformance")
    return side


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

    @property
    def headline(self) -> str:
        return self.status + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


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


AB_KEYS = {"document": ("verdict", "reasons", "cases", "before", "after", "model", "device", "dtype", "kind", "budget"),
           "case": ("case", "decision", "pairs", "stop_reason", "figures"),
           "figure": ("figure", "decision", "tolerance")}


def read_ab(path: Path) -> dict | None:
    """ab.json from an A/B output directory (or the file itself); None when the comparison wrote
    none (it stopped on bad input: the verdict then lacks performance evidence, INCONCLUSIVE)."""
    path = Path(path)
    path = path / "ab.json" if path.is_dir() or not path.suffix else path
    document = _read_json(path)
    if document is None:
        return None
    missing = [k for k in AB_KEYS["document"] if k not in document]
    missing += [f"cases[{i}].{k}" for i, c in enumerate(document.get("cases") or []) for k in AB_KEYS["case"] if k not in c]
    missing += [f"cases[{i}].figures[{j}].{k}" for i, c in enumerate(document.get("cases") or []) for j, f in enumerate(c.get("figures") or [])
                for k in AB_KEYS["figure"] if k not in f]
    if missing or document.get("verdict") not in ("SAFE", "REGRESSED", "INCONCLUSIVE"):
        raise VerdictError(f"{path} is not a complete A/B report (missing: {', '.join(missing[:4]) or 'a verdict'})")
    document["_path"] = str(path)
    return document


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


NO_AB = {"missing": True}  # --ab was given and the comparison wrote no report


def decide(before: Side, after: Side, ab: dict | None = None) -> Verdict:
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
    if before.accuracy is None or after.accuracy is None:
        missing += [f"no accuracy report ({ACCURACY_FILE}) for {s.label}" for s in (before, after) if s.accuracy is None]
    else:
        for row in accuracy:
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
        better = [r.case for r in performance if r.verdict == "improved"]
        if better:
            notes.append(f"faster or leaner on {after.label}: " + ", ".join(better))

    status = "REGRESSED" if regressed else "INCONCLUSIVE" if missing else "SAFE"
    reasons = regressed if regressed else missing
    if regressed and missing:
        notes += [f"also: {m}" for m in missing]
    return Verdict(status, reasons, before, after, accuracy, performance, notes, ab, method)


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


def to_markdown(v: Verdict) -> str:
    b, a = v.before, v.after
    lines = [f"# Upgrade verdict: {v.headline}", ""]
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
    lines += ["", "## Why", ""] + [f"- {r}" for r in why]
    lines += [f"- {n}" for n in v.notes]
    if v.accuracy:
        lines += ["", "## Accuracy (device vs CPU float32, per case and check)", "",
                  "The metric shown is the candidate's closest to its bound; every metric is in the JSON.", "",
                  f"| case | check | {b.label} | {a.label} | metric | {b.label} | {a.label} | bound |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in v.accuracy:
            metric, old, new, bound = _metric_cell(row, row.closest_metric())
            lines.append(f"| {row.case} | {row.check} | {row.status(row.before)} | {row.status(row.after)} | {metric} | {old} | {new} | {bound} |")
    if v.ab is not None:
        from .ab.report import to_markdown as ab_markdown

        body = ab_markdown(v.ab).split("\n", 1)[1]  # its own headline is in Why
        lines += ["", f"## Performance: paired A/B comparison, {v.ab['verdict']}", "", body.replace("\n## ", "\n### ")]
    if v.performance:
        lines += ["", "## Performance (candidate against the current stack, same machine)", "",
                  "Tolerance: the run's configured tolerance for the figure's class, widened to noise_factor x the larger CV.", ""]
        for row in v.performance:
            lines += [f"### {row.case}: {row.verdict}", ""]
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
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "before": {"label": v.before.label, "path": str(v.before.path), "versions": v.before.versions, "failed_tests": v.before.failed_tests()},
        "after": {"label": v.after.label, "path": str(v.after.path), "versions": v.after.versions, "failed_tests": v.after.failed_tests()},
        "model": v.after.meta.get("model") or v.before.meta.get("model"),
        "device": v.after.meta.get("device") or v.before.meta.get("device"),
        "dtype": v.after.meta.get("dtype") or v.before.meta.get("dtype"),
        "accuracy": [{"case": r.case, "check": r.check, "before": r.before, "after": r.after} for r in v.accuracy],
        "performance_method": v.performance_method,
        "ab": v.ab,
        "performance": [{"case": r.case, "verdict": r.verdict, "before": (r.before or {}).get("figures"),
                         "after": (r.after or {}).get("figures"), "comparisons": [c.as_dict() for c in r.comparisons]} for r in v.performance],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csm_conformance.verdict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="report directory of the current stack (e.g. output/current)")
    parser.add_argument("--after", required=True, help="report directory of the candidate stack (e.g. output/candidate)")
    parser.add_argument("--ab", default=None, help="the A/B comparison's output directory (python -m csm_conformance.ab): it judges performance")
    parser.add_argument("--output", default="output/verdict", help="where verdict.md and verdict.json go")
    parser.add_argument("--before-label", default=None, help="name of the current stack in the report (default: its directory name)")
    parser.add_argument("--after-label", default=None, help="name of the candidate stack in the report")
    args = parser.parse_args(argv)
    try:
        before = read_side(args.before_label or Path(args.before).name, Path(args.before))
        after = read_side(args.after_label or Path(args.after).name, Path(args.after))
        ab = (read_ab(Path(args.ab)) or NO_AB) if args.ab else None
    except VerdictError as exc:
        print(f"csm-conformance verdict: {exc}", file=sys.stderr)
        return 2
    verdict = decide(before, after, ab)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.md").write_text(to_markdown(verdict))
    (out / "verdict.json").write_text(json.dumps(to_json(verdict), indent=2) + "\n")
    print(f"csm-conformance verdict: {verdict.headline}")
    print(f"report: {out / 'verdict.md'}")
    print(f"report: {out / 'verdict.json'}")
    return EXIT[verdict.status]


if __name__ == "__main__":
    sys.exit(main())
