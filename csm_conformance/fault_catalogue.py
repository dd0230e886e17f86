"""The planted-fault catalogue: proof that the gates go red on the faults they exist to catch.

Each entry plants one fault (`--csm-fault`) in the device model and runs the real suite in a
subprocess, as a user would, on the embedded tiny model. An entry is *caught* when the run ends
with failed tests (exit 1) in the gate the entry names. Its *place is named* when the failure text,
with the "PLANTED FAULT" notes removed (they would give the answer away), contains the entry's
`place`: the module, figure or function a user must be pointed at.

Some entries cannot be judged against the committed baselines, and run as a self-contained A/B
on the same machine instead: a clean run of the same selection is recorded into a scratch
baselines directory (bounds with --csm-record-bounds, a performance baseline with the promote
command), and the faulty run, made right after it, is judged against that.

- Performance entries, always. The committed CPU baselines carry CI's loose CPU tolerance for time
  (30 %, for shared machines), which a 5 % slowdown cannot cross. The A/B uses the accelerator
  tolerance (`time=5%`), 5 rounds, and the suite's usual widening to 3 x the larger CV; on a busy
  machine that widening, not the 5 %, decides.
- The float16-matmul entry: bfloat16 values are exact in float16, so against a bfloat16 device
  model the fault changes nothing until a value leaves float16's range. It runs on a float32
  device model, against float32 bounds recorded from a clean float32 run.

Clean runs of every set-up used are part of the result: any failure there is a false alarm.

    python -m csm_conformance.fault_catalogue [--output DIR] [--only ID ...] [--clean-reruns N] [--sweep]

Exit 0 when every planted fault was caught with its place named and no clean run failed; 1
otherwise; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .options import ROOT

GATES = ("accuracy", "performance")
ACCURACY_ARGS = ("-m", "accuracy", "--csm-case", "short_en")
GENERATION_ONLY = (*ACCURACY_ARGS, "-k", "test_seeded_generation")
FLOAT32_ARGS = (*ACCURACY_ARGS, "--csm-dtype", "float32", "-k", "not drift")
# One short eager workload, generation only (model load time is not what these faults change).
PERF_ARGS = ("-m", "performance", "--csm-workload", "short_32t", "--csm-perf-modes", "eager", "-k", "test_generation")
# The A/B setting: the accelerator tolerance for time, pytest.ini's CPU one for memory (the CPU's
# memory figure is weights + resident-set growth, whose page-level noise needs the MiB slack).
AB_TOLERANCES = ("time=5%", "memory=10%+16MiB", "load=25%")
AB_ROUNDS = 5
LAYER = "backbone_model.layers.0"
SWEEP_WEIGHT = f"{LAYER}.mlp.down_proj.weight"
SWEEP_WEIGHT_SCALES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SWEEP_SLOWDOWNS = (0.02, 0.05, 0.1, 0.2, 0.5)
HANG_TIMEOUT_S = 15


@dataclass(frozen=True)
class Entry:
    id: str
    faults: tuple[str, ...]  # --csm-fault specs
    gate: str  # the gate that must catch it: accuracy | performance
    args: tuple[str, ...]  # the pytest selection
    place: str  # what the failure text must name
    why: str = ""
    timeout_s: float | None = None  # pytest-timeout's per-test limit for this entry
    ab: bool = False  # judged against a clean run recorded just before (always so for performance)

    @property
    def needs_ab(self) -> bool:
        return self.ab or self.gate == "performance"


CATALOGUE: tuple[Entry, ...] = (
    Entry("weight_1e-3", (f"weight:{SWEEP_WEIGHT}:1e-3",), "accuracy", FLOAT32_ARGS, f"{LAYER}.mlp",
          "one backbone layer's weights off by 0.1 % (a bad conversion, a kernel reading stale data), on a float32 "
          "device model: in bfloat16 the perturbed values round back to the stored ones (1.2 % of them change)", ab=True),
    Entry("weight_1e-2", (f"weight:{SWEEP_WEIGHT}:1e-2",), "accuracy", ACCURACY_ARGS, f"{LAYER}.mlp",
          "one backbone layer's weights off by 1 %, on the CI configuration (bfloat16, committed bounds): one logits "
          "bound fails by 0.5 %; the module_local check sees that layer's MLP add 2x its clean error"),
    Entry("rope", ("rope",), "accuracy", ACCURACY_ARGS, f"{LAYER}.self_attn",
          "llama3 RoPE scaling dropped (a config field renamed between transformers versions)"),
    Entry("fp16_matmul", (f"fp16:{LAYER}.mlp.down_proj",), "accuracy", FLOAT32_ARGS, f"{LAYER}.mlp",
          "one matmul computed in float16 (an autocast or kernel-dispatch change), on a float32 device model", ab=True),
    Entry("mask_off_by_one", ("mask:1",), "accuracy", ACCURACY_ARGS, f"{LAYER}.self_attn",
          "the causal attention mask shifted by one position (every query sees the next token)"),
    Entry("nan", (f"nan:{LAYER}",), "accuracy", ACCURACY_ARGS, "backbone_logits: device has non-finite",
          "a NaN in one activation"),
    Entry("raise", ("raise:2",), "accuracy", GENERATION_ONLY, "PlantedFaultError",
          "an exception in the middle of generation"),
    Entry("hang", ("hang:2",), "accuracy", GENERATION_ONLY, "_hang_at",
          "generation never returns; pytest-timeout (signal method) must end the test and show where it hung",
          timeout_s=HANG_TIMEOUT_S),
    Entry("slowdown_5pct", ("slowdown:0.05",), "performance", PERF_ARGS, "frame_ms_median", "every frame 5 % slower"),
    Entry("slowdown_20pct", ("slowdown:0.2",), "performance", PERF_ARGS, "frame_ms_median", "every frame 20 % slower"),
    Entry("leak", ("leak:1",), "performance", PERF_ARGS, "peak_memory_mb",
          "1 MiB of device memory kept alive per frame (32 MiB over the workload)"),
)


class CatalogueRunError(RuntimeError):
    """The runner could not set up a comparison; the message is one line."""


@dataclass
class Run:
    """What one subprocess run of the suite left behind."""
    exit_code: int
    seconds: float
    failures: list[tuple[str, str, str]]  # (gate, test id, failure text)
    output: str
    perf_report: dict | None


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


def _gate_of(classname: str) -> str:
    return "performance" if "test_performance" in classname else "accuracy" if "test_accuracy" in classname else classname


def run_suite(workdir: Path, args: list[str], faults: list[str] = (), baselines: Path | None = None,
              timeout_s: float | None = None, extra: list[str] = ()) -> Run:
    """The real conformance suite in a subprocess, writing everything under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "conformance"), "-c", str(ROOT / "pytest.ini"),
           "--rootdir", str(ROOT), "-p", "no:cacheprovider", f"--csm-output={workdir / 'output'}",
           f"--junitxml={junit}", *args, *extra]
    cmd += [f"--csm-fault={f}" for f in faults]
    if baselines is not None:
        cmd.append(f"--csm-baselines={baselines}")
    if timeout_s:  # the test body only: a model load slowed by a busy machine is not the hang
        cmd += ["--timeout", f"{timeout_s:g}", "-o", "timeout_method=signal", "-o", "timeout_func_only=true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}  # the catalogue's settings only
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    (workdir / "pytest.log").write_text(" ".join(shlex.quote(c) for c in cmd) + "\n\n" + output)
    failures = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            for bad in list(case.iter("failure")) + list(case.iter("error")):
                text = (bad.get("message") or "") + "\n" + (bad.text or "")
                failures.append((_gate_of(case.get("classname", "")), f"{case.get('name')}", text))
    report_path = workdir / "output" / "performance_benchmark.json"
    perf = json.loads(report_path.read_text()) if report_path.is_file() else None
    return Run(proc.returncode, seconds, failures, output, perf)


def _first_line(run: Run, gate: str) -> str:
    """The first failure's first line in `gate` ("any": in any gate), else the setup error's line."""
    for failed_gate, _test, text in run.failures:
        if gate in (failed_gate, "any"):
            line = text.strip().splitlines()[0] if text.strip() else ""
            return line.removeprefix("Failed: ")
    lines = run.output.splitlines()
    for line in lines:  # a setup error: the one line the suite printed
        if "csm-conformance:" in line and ("ERROR" in line or "Exit" in line):
            return line.strip(" !")
    if run.exit_code != 0:  # something else broke the run: the last exception line it printed
        crash = next((ln.strip() for ln in reversed(lines) if re.match(r"^(INTERNALERROR> )?\w*(Error|Exception)\b", ln.strip())), None)
        if crash:
            return f"the run crashed (exit {run.exit_code}): {crash}"
    return f"no failure (exit {run.exit_code})"


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
    cv, change = _perf_numbers(run)
    return Outcome(entry.id, list(entry.faults), entry.gate, caught, entry.place, named, _first_line(run, entry.gate),
                   round(run.seconds, 1), run.exit_code, [t for t, _ in in_gate], cv, change, baseline_cv or {},
                   red, after, _perf_numbers(clean_after)[1] if clean_after is not None else {})


def suite_args(gate: str, selection: tuple[str, ...], rounds: int = AB_ROUNDS) -> list[str]:
    """A performance selection gets the A/B setting: strict time tolerance, enough rounds."""
    if gate != "performance":
        return list(selection)
    return [*selection, "--csm-perf-rounds", str(rounds), *[f"--csm-perf-tolerance={t}" for t in AB_TOLERANCES]]


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
        done = subprocess.run([sys.executable, "-m", "csm_conformance.promote", "--run",
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


# ---- the report and the CLI ---------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


def _caught(o: dict) -> str:
    if o["caught"]:
        return "yes"
    return "NO: the clean run after it drifted as far" if o["red"] else "NO"


def _cvs(cv: dict, base: dict) -> str:
    return ", ".join(f"{k} {base.get(k, 0):.1%} / {v:.1%}" for k, v in cv.items()) or "-"


def markdown(doc: dict) -> str:
    lines = ["# Planted-fault catalogue", "",
             f"**{doc['caught']} of {doc['planted']} planted faults caught**, {doc['named']} with the place named; "
             f"**{doc['false_alarms']} false alarm(s)** in {doc['clean_runs']} clean run(s) (the table below, and the "
             f"clean run after each performance entry). Exit {doc['exit_code']}.", "",
             f"Embedded tiny CSM on {doc['machine']}; {doc['versions']}. A/B entries are judged against a clean run of the "
             f"same selection recorded just before them (performance: {doc['ab']['rounds']} rounds, tolerances "
             f"{', '.join(doc['ab']['tolerances'])}, each widened to 3 x the larger CV).", "",
             "| fault | spec | gate | caught | failure (first line) | place named | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for o in doc["entries"]:
        lines.append(f"| {o['id']} | `{' '.join(o['faults'])}` | {o['gate']} | {_caught(o)} | "
                     f"{_cell(o['first_line'])} | {'yes' if o['place_named'] else 'NO'} (`{o['place']}`) | {o['seconds']} |")
    lines += ["", "## Clean runs", "", "| run | result | CVs of gated figures (baseline / run) | seconds |", "| --- | --- | --- | --- |"]
    for c in doc["clean"]:
        result = f"FALSE ALARM: {_cell(c['first_line'])}" if c["false_alarm"] else "passed"
        if c["ungated_performance"]:
            result += f" ({c['ungated_performance']} performance case(s) had no baseline for this machine)"
        lines.append(f"| {c['run']} | {result} | {_cvs(c['cv'], c['baseline_cv'])} | {c['seconds']} |")
    sweep_doc = doc.get("sweep") or {}
    perf = [o for o in doc["entries"] + sweep_doc.get("slowdown", []) if o["gate"] == "performance"]
    if perf:
        lines += ["", "Performance entries: change of each figure against the entry's A/B baseline, with the CVs "
                  "(baseline / faulty run) and the change in the clean run made right after:", ""]
        lines += [f"- {o['id']} (clean run after: {o['clean_after'] or 'not run'}): " + ", ".join(
            f"{k} {v:+.1%} (CV {o['baseline_cv'].get(k, 0):.1%} / {o['cv'].get(k, 0):.1%}; clean after "
            + (f"{o['clean_after_change'][k]:+.1%})" if k in o["clean_after_change"] else "-)")
            for k, v in o["change"].items()) for o in perf]
    if sweep_doc:
        lines += ["", "## Sensitivity sweep", "",
                  f"Smallest relative perturbation of `{sweep_doc['weight_param']}` caught: "
                  f"{sweep_doc['smallest_weight_bfloat16_caught']} on the committed bfloat16 bounds, "
                  f"{sweep_doc['smallest_weight_float32_caught']} on a float32 device model (A/B); smallest per-frame "
                  f"slowdown caught (A/B): {sweep_doc['smallest_slowdown_caught']}"
                  + (f" (measured: frame_ms_median {sweep_doc['smallest_slowdown_caught_measured']:+.1%})"
                     if sweep_doc.get("smallest_slowdown_caught_measured") is not None else "") + ".", "",
                  "| run | fault | caught | failure (first line) | seconds |", "| --- | --- | --- | --- | --- |"]
        for o in sweep_doc["weight_bfloat16"] + sweep_doc["weight_float32"] + sweep_doc["slowdown"]:
            lines.append(f"| {o['id']} | `{o['faults'][0]}` | {_caught(o)} | {_cell(o['first_line'])} | {o['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csm_conformance.fault_catalogue", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/fault_catalogue", help="where the table (Markdown and JSON) and each run's logs go (default: %(default)s)")
    parser.add_argument("--only", nargs="+", metavar="ID", help=f"run only these entries: {', '.join(e.id for e in CATALOGUE)}")
    parser.add_argument("--clean-reruns", type=int, default=0, metavar="N",
                        help="also run the full gate (plain `pytest`) N times clean, and each A/B set-up N times clean, and count false alarms")
    parser.add_argument("--sweep", action="store_true", help="find the smallest weight perturbation and per-frame slowdown the gate catches")
    parser.add_argument("--rounds", type=int, default=AB_ROUNDS, help="timed rounds of the A/B performance runs (default: %(default)s)")
    parser.add_argument("--pytest-args", default="", help="extra arguments for every suite run, given with '=', e.g. --pytest-args=\"--csm-device cuda:0\"")
    args = parser.parse_args(argv)
    known = {e.id: e for e in CATALOGUE}
    unknown = [i for i in args.only or [] if i not in known]
    if unknown or args.clean_reruns < 0 or args.rounds < 1:
        problem = f"unknown entry {', '.join(unknown)} (known: {', '.join(known)})" if unknown else "--clean-reruns must be >= 0 and --rounds >= 1"
        print(f"csm-conformance fault_catalogue: {problem}", file=sys.stderr)
        return 2
    entries = [known[i] for i in args.only] if args.only else list(CATALOGUE)
    extra = shlex.split(args.pytest_args)
    out = Path(args.output).resolve()  # the runs use their own cwd
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="runs-", dir=out))
    clean: list[dict] = []
    outcomes: list[Outcome] = []
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        setups = clean_setups(entries)
        for i, setup in enumerate(setups):
            clean.append(run_clean(setup.id, setup, work / f"clean-{i + 1}", extra, args.rounds))
            say(f"{setup.id}: {'FALSE ALARM' if clean[-1]['false_alarm'] else 'passed'} in {clean[-1]['seconds']} s")
        for entry in entries:
            outcomes.append(run_entry(entry, work, None, extra, args.rounds))
            o = outcomes[-1]
            say(f"{entry.id}: {'caught' if o.caught else 'NOT caught'} in {o.seconds} s: {o.first_line}")
        for n in range(1, args.clean_reruns + 1):
            clean.append(run_clean(f"full gate #{n}", None, work / f"full-{n}", extra))
            say(f"full gate #{n}: {'FALSE ALARM' if clean[-1]['false_alarm'] else 'passed'} in {clean[-1]['seconds']} s")
            for i, setup in enumerate(s for s in setups if s.needs_ab):
                clean.append(run_clean(f"{setup.id} #{n}", setup, work / f"clean-{i + 1}-{n}", extra, args.rounds))
                say(f"{setup.id} #{n}: {'FALSE ALARM' if clean[-1]['false_alarm'] else 'passed'}")
        swept = sweep(work / "sweep", extra, args.rounds) if args.sweep else None
    except CatalogueRunError as exc:
        print(f"csm-conformance fault_catalogue: {exc}", file=sys.stderr)
        return 1
    from . import devices

    caught = sum(o.caught for o in outcomes)
    named = sum(o.caught and o.place_named for o in outcomes)
    brackets = [o.clean_after for o in outcomes if o.clean_after is not None]
    false_alarms = sum(c["false_alarm"] for c in clean) + sum(b != "passed" for b in brackets)
    ok = caught == len(outcomes) and named == len(outcomes) and false_alarms == 0
    versions = ", ".join(f"{k} {v}" for k, v in devices.software_versions().items())
    doc = {"planted": len(outcomes), "caught": caught, "named": named, "false_alarms": false_alarms,
           "clean_runs": len(clean) + len(brackets),
           "exit_code": 0 if ok else 1, "machine": devices.resolve("auto").name, "versions": versions,
           "ab": {"rounds": args.rounds, "tolerances": list(AB_TOLERANCES)},
           "entries": [asdict(o) for o in outcomes], "clean": clean, "sweep": swept, "runs": str(work)}
    (out / "fault_catalogue.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "fault_catalogue.md").write_text(markdown(doc))
    say(markdown(doc))
    say(f"report: {out / 'fault_catalogue.md'}\nreport: {out / 'fault_catalogue.json'}\nruns: {work}")
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
