"""Running an entry as the CLI does: the A/B set-up (a clean run recorded into scratch baselines
just before the faulty one), the clean stand-ins whose failures are false alarms, and the sweep.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from csm_conformance.tools.fault_catalogue.entries import (
    AB_ROUNDS,
    AB_TOLERANCES,
    ACCURACY_ARGS,
    FLOAT32_ARGS,
    LAYER,
    PERF_ARGS,
    SWEEP_SLOWDOWNS,
    SWEEP_WEIGHT,
    SWEEP_WEIGHT_SCALES,
    Entry,
)
from csm_conformance.tools.fault_catalogue.judge import Outcome, _perf_numbers, judge
from csm_conformance.tools.fault_catalogue.suite import Run, _first_line, run_suite


class CatalogueRunError(RuntimeError):
    """The runner could not set up a comparison; the message is one line."""


def suite_args(gate: str, selection: tuple[str, ...], rounds: int = AB_ROUNDS) -> list[str]:
    """A performance selection gets the A/B setting: strict time tolerance, enough rounds, and no
    host-speed correction. The correction is for a baseline timed in another hour; the two halves
    of a pair here are timed within a minute, and the probe's own scatter (the frame/probe ratio
    wandered between 85 and 110 within ten minutes on the CI VM) would hide a 20 % fault, as it did
    in the first catalogue run after the correction existed (frame median +23 % raw, -4 % corrected)."""
    if gate != "performance":
        return list(selection)
    return [*selection, "--csm-perf-rounds", str(rounds), "--csm-host-reference=off",
            *[f"--csm-perf-tolerance={t}" for t in AB_TOLERANCES]]


def record_clean(gate: str, selection: tuple[str, ...], workdir: Path, rounds: int = AB_ROUNDS,
                 extra: list[str] = ()) -> tuple[Path, Run]:
    """Run `selection` clean and store it in `workdir/baselines` as what later runs are judged
    against: bounds for the accuracy gate, a promoted baseline for the performance gate."""
    baselines = workdir / "baselines"
    args = suite_args(gate, selection, rounds) + (["--csm-record-bounds"] if gate == "accuracy" else [])
    run = run_suite(workdir / "record", args, baselines=baselines, extra=extra)
    if run.exit_code != 0:
        raise CatalogueRunError(f"the clean {gate} run to record from failed (exit {run.exit_code}): "
                                f"{_first_line(run, gate)}; see {workdir / 'record' / 'pytest.log'}")
    if gate == "performance":
        done = subprocess.run([sys.executable, "-m", "csm_conformance.tools.promote", "--run",
                               str(workdir / "record" / "output" / "performance_benchmark.json"), "--baselines", str(baselines)],
                              capture_output=True, text=True, cwd=workdir)
        if done.returncode != 0:
            raise CatalogueRunError(f"promoting the clean run failed: {done.stderr.strip()}")
    return baselines, run


def run_entry(entry: Entry, workdir: Path, baselines: Path | None = None, extra: list[str] = (),
              rounds: int = AB_ROUNDS, bracket: bool = True) -> Outcome:
    """Plant `entry`'s faults and run its selection. An A/B entry is judged against `baselines`,
    or, when None, against a clean run recorded just before it: on a shared machine the load
    drifts from one minute to the next, so the two halves of the pair should be adjacent. A
    performance entry is then bracketed (unless `bracket` is False) by a clean run right after
    it, against the same baseline: see judge."""
    here = workdir / entry.id
    baseline_cv = {}
    if entry.needs_ab and baselines is None:
        baselines, recorded = record_clean(entry.gate, entry.args, here, rounds, extra)
        baseline_cv = _perf_numbers(recorded)[0]
    args = suite_args(entry.gate, entry.args, rounds)
    used = baselines if entry.needs_ab else None
    run = run_suite(here / "run", args, entry.faults, used, entry.timeout_s, extra)
    after = run_suite(here / "clean-after", args, (), used, entry.timeout_s, extra) if bracket and entry.gate == "performance" else None
    return judge(entry, run, baseline_cv, after)


def run_clean(name: str, entry: Entry | None, workdir: Path, extra: list[str] = (), rounds: int = AB_ROUNDS) -> dict:
    """`entry`'s set-up with nothing planted (None: the full gate, plain `pytest`); any failure
    is a false alarm."""
    baselines, baseline_cv = None, {}
    if entry is not None and entry.needs_ab:
        baselines, recorded = record_clean(entry.gate, entry.args, workdir, rounds, extra)
        baseline_cv = _perf_numbers(recorded)[0]
    args = suite_args(entry.gate, entry.args, rounds) if entry is not None else []
    run = run_suite(workdir / "run", args, baselines=baselines, extra=extra)
    gate = entry.gate if entry is not None else "any"
    cv, change = _perf_numbers(run)
    results = (run.perf_report or {}).get("csm", {}).get("results", [])
    return {"run": name, "gate": gate, "exit_code": run.exit_code, "false_alarm": run.exit_code != 0,
            "failed_tests": [f"{g}:{t}" for g, t, _ in run.failures],
            "first_line": _first_line(run, gate) if run.exit_code else "passed",
            "ungated_performance": sum(r.get("status") == "no-baseline" for r in results),
            "seconds": round(run.seconds, 1), "cv": cv, "baseline_cv": baseline_cv, "change": change}


def clean_setups(entries: list[Entry]) -> list[Entry]:
    """One clean stand-in per distinct set-up (gate, selection, A/B) the entries use."""
    seen: dict[tuple, Entry] = {}
    for e in entries:
        key = (e.gate, e.args, e.needs_ab)
        seen.setdefault(key, Entry(f"clean {e.gate} {' '.join(e.args)}{' (A/B)' if e.needs_ab else ''}", (), e.gate, e.args, "", ab=e.ab))
    return list(seen.values())


def sweep(workdir: Path, extra: list[str] = (), rounds: int = AB_ROUNDS) -> dict:
    """The smallest relative perturbation of one backbone tensor that the gate catches, on the
    committed bfloat16 bounds and on the float32 A/B set-up (below ~3e-3 a bfloat16 weight mostly
    rounds back to itself, so there the bfloat16 scan measures the planting, not the gate), and
    the smallest per-frame slowdown caught in the performance A/B."""
    def scan(name, faults, gate, args, place, ab=False):
        return [run_entry(Entry(f"sweep_{name}_{v:g}", (spec,), gate, args, place, ab=ab), workdir, extra=extra, rounds=rounds)
                for v, spec in faults]
    weight = [(v, f"weight:{SWEEP_WEIGHT}:{v:g}") for v in SWEEP_WEIGHT_SCALES]
    rows = {
        "weight_bfloat16": (SWEEP_WEIGHT_SCALES, scan("weight_bf16", weight, "accuracy", ACCURACY_ARGS, f"{LAYER}.mlp")),
        "weight_float32": (SWEEP_WEIGHT_SCALES, scan("weight_fp32", weight, "accuracy", FLOAT32_ARGS, f"{LAYER}.mlp", ab=True)),
        "slowdown": (SWEEP_SLOWDOWNS, scan("slowdown", [(v, f"slowdown:{v:g}") for v in SWEEP_SLOWDOWNS], "performance", PERF_ARGS, "frame_ms_median")),
    }
    doc = {"weight_param": SWEEP_WEIGHT}
    for name, (values, outcomes) in rows.items():
        doc[name] = [asdict(o) for o in outcomes]
        doc[f"smallest_{name}_caught"] = min((v for v, o in zip(values, outcomes) if o.caught), default=None)
    # what the planted slowdown really cost: a host sleep overshoots on short frames
    caught = [o for v, o in zip(SWEEP_SLOWDOWNS, rows["slowdown"][1]) if v == doc["smallest_slowdown_caught"]]
    doc["smallest_slowdown_caught_measured"] = caught[0].change.get("frame_ms_median") if caught else None
    return doc

