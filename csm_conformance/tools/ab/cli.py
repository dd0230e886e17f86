"""csm-conformance ab: is the candidate stack slower than the current one, by how much,
and how sure are we? (paired, interleaved A/B; docs/ab.md explains the method)

Usage: csm-conformance ab --before PYTHON --after PYTHON [--workload ID ...] [--tier quick|full]
           [--tolerance time=5%] [--budget 60,240s] [--after-fault SPEC] [--device D] [--model M] --output DIR
Exit codes: 0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from csm_conformance.catalogue.workloads import MODES, TIERS, WorkloadError, load_workloads, perf_cases, tier_selection
from csm_conformance.errors import UserError
from csm_conformance.performance import paired_stats as stats
from csm_conformance.performance.baselines import parse_tolerances
from csm_conformance.runtime import stack
from csm_conformance.suite.options import OPTIONS, resolve_option
from csm_conformance.tools.ab import profiled, report
from csm_conformance.tools.ab.controller import Budget, run_case
from csm_conformance.tools.ab.workers import TurnPipes, WorkerError, WorkerProcess

EXIT = {"SAFE": 0, "REGRESSED": 1, "INCONCLUSIVE": 3}
BAD_INPUT = 2
# 5 % on every time figure. On the CPU, TTFA and prefill are one short burst each (3-7 ms of prefill
# on the embedded model), not a median over frames, and scatter by 9-30 % (sd) per pair even
# frame-interleaved on the shared 2-core CI VM: 25 % and 50 % there decide within the quick budget.
# The frame figures scatter by about 4 % there (docs/ab.md). Planted-fault runs set --tolerance.
DEFAULT_TOLERANCES = ["time=5%", "memory=3%", "cpu.ttfa_ms=25%", "cpu.prefill_ms=50%", "cpu.memory=10%+16MiB"]
DEFAULT_BUDGET = {"quick": "100,240s", "full": "100,120m"}


class BadInput(UserError, ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise BadInput(message)


def parse_budget(text: str) -> Budget:
    """'60' pairs per case, '240s' or '4m' of timed pairs in all, or both: '60,240s'."""
    pairs, seconds = 60, math.inf
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|pairs)?", part)
        if not m:
            raise BadInput(f"--budget {text!r}: use <pairs per case>, <seconds>s, <minutes>m or both, e.g. 60,240s")
        value, unit = float(m.group(1)), m.group(2) or "pairs"
        if unit == "pairs":
            if value < 1 or value != int(value):
                raise BadInput(f"--budget {text!r}: the pair count must be a whole number >= 1")
            pairs = int(value)
        else:
            seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    return Budget(pairs, seconds)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="csm-conformance ab", description=__doc__.split("\n\n")[0].replace("%", "%%"))
    p.add_argument("--before", required=True, help="interpreter of the current stack (e.g. .tox/current/bin/python)")
    p.add_argument("--after", required=True, help="interpreter of the candidate stack; the same as --before is an A/A run")
    p.add_argument("--output", required=True, help="directory for ab.md, ab.json and the workers' logs")
    p.add_argument("--tier", choices=TIERS, default="quick", help="quick (default) or full: which workloads and modes")
    p.add_argument("--workload", action="extend", nargs="+", default=[], help="time only these workload ids (--workload A B, or repeated)")
    p.add_argument("--batch", action="append", type=int, default=[], help="time only this batch size (repeatable; default: the workload's)")
    p.add_argument("--mode", action="append", default=[], choices=MODES, help="timing mode (repeatable; default: the tier's)")
    p.add_argument("--workloads", default=None, help="workload catalogue YAML (default: the package's)")
    p.add_argument("--tolerance", action="append", default=[],
                   help=f"[<device type>.]<time|memory|figure>=<percent> (repeatable; default {' '.join(DEFAULT_TOLERANCES).replace('%', '%%')})")
    p.add_argument("--budget", default=None,
                   help=f"pairs per case and/or total seconds of pairs (default quick {DEFAULT_BUDGET['quick']}, full {DEFAULT_BUDGET['full']})")
    p.add_argument("--alpha", type=float, default=0.05, help="chance of a wrong decision per figure over all looks (default 0.05)")
    p.add_argument("--before-fault", action="append", default=[], help="plant a fault in the current stack's model (--csm-fault's specs)")
    p.add_argument("--after-fault", action="append", default=[], help="plant a fault in the candidate's model, e.g. slowdown:0.05")
    # The gate's options, from its one table (suite/options.py): these four are this command's
    # --model/--device/--dtype/--require-device too, with the same environment twins; every other
    # --csm-* option is taken and ignored (named once on stderr), so `tox -e verdict -- <the gate's
    # arguments>` hands one argument list to the gate runs and to this command alike.
    shared = {"csm_model": "both workers", "csm_device": "both workers, unless --after-device", "csm_dtype": "both models",
              "csm_require_device": "both workers"}
    for option in OPTIONS:
        if option.dest in shared:
            name = option.dest.removeprefix("csm_")
            flags, dest = (f"--{name.replace('_', '-')}", option.flag), name
            text = f"{option.help} ({shared[option.dest]}; default ${option.env} or {option.default})"
            default = resolve_option(option, None, os.environ, None)
        else:
            flags, dest, text, default = (option.flag,), f"gate_only_{option.dest}", argparse.SUPPRESS, None
        action = {"bool": "store_true", "list": "append"}.get(option.kind, "store")
        p.add_argument(*flags, dest=dest, action=action, default=default, help=text)
    p.add_argument("--after-device", default=None, help="the candidate's device when it is not --device (e.g. npu:1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: 1 on the CPU, where an idle worker's spinning OpenMP threads would "
                        "steal cores from the round being timed; torch's own elsewhere)")
    p.add_argument("--pin-cpu", default="auto",
                   help="run both workers on one CPU core: auto (on the CPU device: the last core this process may use), "
                        "none, or a core number (also on accelerators, for the host side)")
    p.add_argument("--interleave", choices=("auto", "frame", "round"), default="auto",
                   help="frame: a pair's two rounds run at once, the workers taking turns frame by frame (the CPU's default: "
                        "it cancels what the host does within a second); round: one round, then the other (the default on "
                        "accelerators, where it has not been measured)")
    p.add_argument("--profile", action="store_true",
                   help="profile every case on both stacks and write attribution.json/.md (a REGRESSED case is always profiled)")
    p.add_argument("--profile-rounds", type=int, default=profiled.DEFAULT_ROUNDS,
                   help=f"profiled rounds per side and case, in ABBA order (default {profiled.DEFAULT_ROUNDS}; 0: never profile)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds per worker and case before the pairs (default 1)")
    return p


def _check_python(label: str, python: str) -> str:
    found = shutil.which(python) if not Path(python).exists() else python
    if not found:
        raise BadInput(f"--{label} {python}: no such interpreter")
    return str(Path(found).absolute())


def stack_rows(setups: dict) -> list | None:
    """The two workers' stack fingerprints compared (runtime.stack.diff); None when a side sent none
    (it could not set up)."""
    b, a = setups["before"].get("stack"), setups["after"].get("stack")
    return None if b is None or a is None else stack.diff(b, a)


def _kind(setups: dict) -> str:
    """A/A only when the two fingerprints are equal: packages and versions, accelerator software,
    library variables (one interpreter given another LD_LIBRARY_PATH is two stacks); otherwise A/B,
    naming what differs. Without fingerprints, the interpreter and versions decide, as before."""
    b, a = setups["before"], setups["after"]
    rows = stack_rows(setups)
    if rows is None:
        same = b["versions"] == a["versions"] and b["python"] == a["python"]
        kind = "A/A (the same interpreter on both sides)" if same else "A/B (two stacks)"
    else:
        named = ", ".join(f"{what} {old or '-'} -> {new or '-'}" for what, old, new in rows[:4]) + (f" and {len(rows) - 4} more" if len(rows) > 4 else "")
        kind = "A/A (the same stack on both sides)" if not rows else f"A/B (two stacks: {named})"
    faults = [f"{side} fault {'; '.join(s['fault_notes'])}" for side, s in setups.items() if s["fault_notes"]]
    return kind + (f", planted: {', '.join(faults)}" if faults else "")


def _arguments(argv):
    """Everything that can be checked before a worker starts; BadInput (one line) otherwise."""
    args = parser().parse_args(argv)
    ignored = [option.flag for option in OPTIONS if getattr(args, f"gate_only_{option.dest}", None) is not None]
    if ignored:
        print(f"csm-conformance ab: ignoring gate-only options: {', '.join(ignored)}", file=sys.stderr)
    budget = parse_budget(args.budget or DEFAULT_BUDGET[args.tier])
    tolerances = parse_tolerances(args.tolerance or DEFAULT_TOLERANCES)
    if not 0 < args.alpha < 1:
        raise BadInput(f"--alpha must be in (0, 1), got {args.alpha}")
    looks = len(stats.look_schedule(budget.max_pairs))
    if stats._order_statistic_index(budget.max_pairs, args.alpha / looks) == 0:
        least = next(n for n in range(2, 200) if stats._order_statistic_index(n, args.alpha / len(stats.look_schedule(n))) > 0)
        raise BadInput(f"--budget {budget.max_pairs} pairs can never decide at alpha {args.alpha}: use at least {least}")
    ids, modes, batches = tier_selection(args.workloads, args.tier, args.workload, args.mode)
    if args.profile_rounds < 0 or 0 < args.profile_rounds < 6 or (args.profile and not args.profile_rounds):
        raise BadInput(f"--profile-rounds {args.profile_rounds}: use 6 or more (fewer rounds can never decide a row), or 0 to never profile "
                       "(not with --profile)")
    if args.warmup < 0 or ("compiled" in modes and args.warmup < 1):
        raise BadInput("--warmup must be >= 0, and >= 1 when compiled mode is timed (it compiles there)")
    cases = [c for c in perf_cases(load_workloads(args.workloads), modes, ids, batches) if not args.batch or c.batch in args.batch]
    if not cases:
        raise BadInput(f"no workload of {', '.join(ids)} runs at batch {', '.join(map(str, args.batch))}")
    pythons = {"before": _check_python("before", args.before), "after": _check_python("after", args.after)}
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ab.json").unlink(missing_ok=True)  # a report left from an earlier run must not be read as this one's
    except OSError as exc:
        raise BadInput(f"--output {out}: cannot write there ({exc.strerror or exc})") from None
    return args, budget, tolerances, cases, pythons, out


def _pinning(spec: str) -> dict:
    """Both workers on one core: a process that the scheduler keeps on a core of its own takes that
    core's speed with it, and on a shared VM two cores differ (measured in docs/ab.md)."""
    if spec == "none" or not hasattr(os, "sched_getaffinity"):
        return {"pin_cpu": None}
    if spec == "auto":
        return {"pin_cpu": max(os.sched_getaffinity(0)), "pin_when": "cpu"}
    try:
        cpu = int(spec)
    except ValueError:
        raise BadInput(f"--pin-cpu {spec!r}: use auto, none or a core number") from None
    if cpu not in os.sched_getaffinity(0):
        raise BadInput(f"--pin-cpu {cpu}: this process may use cores {sorted(os.sched_getaffinity(0))}")
    return {"pin_cpu": cpu, "pin_when": "always"}


def _setup(sides: dict[str, WorkerProcess], args, pythons: dict) -> tuple[dict, dict | None]:
    """Both workers load the model; (what each reported, the failure of one side or None). Both
    failing, or a fault spec that does not apply, is bad input; one stack failing to load what the
    other loads is that stack's result."""
    for label in ("before", "after"):
        faults = args.before_fault if label == "before" else args.after_fault
        device = args.after_device if (label == "after" and args.after_device) else args.device
        sides[label].send("setup", model=args.model, device=device, dtype=args.dtype, faults=faults, threads=args.threads, seed=0,
                          workloads=args.workloads, require_device=args.require_device, **_pinning(args.pin_cpu))
    setups, errors = {}, {}
    for label in ("before", "after"):
        try:
            setups[label] = sides[label].receive()
        except WorkerError as exc:
            errors[label] = exc
    if len(errors) == 2 or any("FaultError" in str(e) for e in errors.values()):
        raise BadInput("; ".join(map(str, errors.values())))
    for label, exc in errors.items():
        other = setups["after" if label == "before" else "before"]
        setups[label] = {**other, "python": pythons[label], "versions": {}, "stack": None, "fault_notes": [], "threads": None, "load_s": None}
        return setups, {"case": "setup", "side": label, "error": str(exc), "log": str(sides[label].log_path)}
    b, a = setups["before"], setups["after"]
    if b["identity"]["key"] != a["identity"]["key"] or b["device"]["type"] != a["device"]["type"]:
        raise BadInput(f"the two sides differ: {b['identity']['key']} on {b['device']['device']} vs {a['identity']['key']} on {a['device']['device']}")
    return setups, None


def interleave_mode(spec: str, device_type: str) -> str:
    return spec if spec != "auto" else ("frame" if device_type == "cpu" else "round")


def _compare(sides, setups, args, budget: Budget, tolerances: dict, cases: list, out: Path,
             frame_pipes: TurnPipes | None, tables: list[dict]) -> tuple[list[dict], dict | None]:
    """Every case in turn; `frame_pipes` when pairs are frame-interleaved, else None. A case that
    regressed (every case, with --profile) is profiled on both stacks into `tables`."""
    device_type = setups["after"]["device"]["type"]
    results, spent = [], 0.0
    for i, case in enumerate(cases):
        share = (budget.seconds - spent) / (len(cases) - i)
        try:
            result = run_case(case, sides, tolerances, device_type, budget.max_pairs, share, args.alpha, args.warmup,
                              1 if device_type != "cpu" else 2, progress=lambda line: print(line, flush=True), pipes=frame_pipes)
        except WorkerError as exc:  # a stack that crashes or hangs while timing is judged, not bad input
            if getattr(exc, "partial", None) is not None and exc.partial.pairs:
                results.append(exc.partial.as_dict())
            return results, {"case": case.id, "side": exc.side, "error": str(exc), "log": str(out / f"worker-{exc.side}.log")}
        spent += result.seconds
        results.append(result.as_dict())
        if args.profile_rounds and (args.profile or result.decision == "REGRESSED"):
            try:
                tables.append(profiled.profile_case(case, sides, args.profile_rounds, out, progress=lambda line: print(line, flush=True)))
            except (WorkerError, KeyError, TypeError) as exc:  # the timing stands; ab.md and the console say why the attribution is missing
                why = str(exc) if isinstance(exc, WorkerError) else f"a worker's profile reply was not understood ({type(exc).__name__}: {exc})"
                results[-1]["attribution_error"] = why
                print(f"  {case.id}: profiling failed: {why}", flush=True)
                dead = [label for label, side in sides.items() if side.proc.poll() is not None]
                if dead:  # a worker that died (or was stopped, hung) while profiling cannot time the next case
                    return results, {"case": case.id, "side": dead[0], "stage": "profiling", "error": why,
                                     "log": str(out / f"worker-{dead[0]}.log")}
    return results, None


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    sides: dict[str, WorkerProcess] = {}
    pipes = None
    try:
        args, budget, tolerances, cases, pythons, out = _arguments(argv)
        pipes = TurnPipes()
        for label in ("before", "after"):
            sides[label] = WorkerProcess(label, pythons[label], out / f"worker-{label}.log", turn_fds=pipes.worker_fds(label))
        pipes.started()
        setups, failure = _setup(sides, args, pythons)
        interleave = interleave_mode(args.interleave, setups["after"]["device"]["type"])
        results, tables = [], []
        if failure is None:
            a = setups["after"]
            print(f"csm-conformance ab: {_kind(setups)}; model {a['identity']['key']} on {a['device']['device']} ({a['device']['name']}); "
                  f"{len(cases)} case(s), {budget.describe()}", flush=True)
            results, failure = _compare(sides, setups, args, budget, tolerances, cases, out, pipes if interleave == "frame" else None, tables)
    except (BadInput, ValueError, WorkloadError, WorkerError) as exc:
        print(f"csm-conformance ab: {exc}", file=sys.stderr)
        return BAD_INPUT
    finally:
        for side in sides.values():
            side.close()
        if pipes is not None:
            pipes.close()
    b, a = setups["before"], setups["after"]
    looks = len(stats.look_schedule(budget.max_pairs))
    rows = stack_rows(setups)
    meta = {
        "kind": _kind(setups),
        "stack_diff": None if rows is None else [{"what": w, "before": old, "after": new} for w, old, new in rows],
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": a["identity"], "device": a["device"], "dtype": args.dtype,
        "before": {k: b.get(k) for k in ("python", "versions", "stack", "fault_notes", "threads", "cpus", "load_s")},
        "after": {k: a.get(k) for k in ("python", "versions", "stack", "fault_notes", "threads", "cpus", "load_s")},
        "interleave": interleave,
        "tier": args.tier, "budget": budget.describe(), "tolerances": tolerances, "alpha": args.alpha,
        "looks": looks, "look_schedule": stats.look_schedule(budget.max_pairs), "level": 1 - args.alpha / looks,
        "method": f"paired rounds in ABBA order ({'frame-interleaved' if interleave == 'frame' else 'one after the other'}); "
                  "Hodges-Lehmann ratio with a Wilcoxon signed-rank interval of the log-ratios, "
                  "Bonferroni over the planned looks (alpha per figure)",
        "seconds": time.perf_counter() - started,
    }
    doc = report.document(meta, results, failure)
    if tables:
        try:
            attribution = profiled.document(tables, {k: meta[k] for k in ("kind", "model", "device", "dtype")} | {"output": str(out)})
            profiled.write(out, attribution)
            doc["attribution"] = {"file": "attribution.json", "case": attribution["case"], "headline": attribution["headline"],
                                  "open": profiled.open_commands(attribution["cases"][0]["traces"], a["device"]["type"], out)}
        except (OSError, ValueError) as exc:  # the timing's verdict is still written; the attribution's failure beside it
            doc["attribution_error"] = f"attribution.json not written: {exc}"
    try:
        report.write(out, doc)
    except OSError as exc:
        print(f"csm-conformance ab: cannot write the report to {out} ({exc.strerror or exc})", file=sys.stderr)
        return BAD_INPUT
    print(f"csm-conformance ab: {doc['verdict']}" + (f" ({'; '.join(doc['reasons'][:3])})" if doc["reasons"] else ""))
    for line in (doc.get("attribution") or {}).get("headline", []):
        print(f"  where: {line}")
    for line in report.attribution_errors(doc):
        print(f"  where: {line}")
    print(f"report: {out / 'ab.md'}" + (f" and {out / 'attribution.md'}" if doc.get("attribution") else ""))
    return EXIT[doc["verdict"]]


if __name__ == "__main__":
    sys.exit(main())
