"""First run on a real checkpoint: record everything the gate compares against, on a stack you trust.

    csm-conformance first-run --csm-model /data/csm-1b --csm-device npu:0 [--repeats 3]

What it does, each step an ordinary pytest run from the current directory (the repository):
  1. the accuracy checks `--repeats` times, each recording bounds into a scratch directory; the
     bound kept for every metric is the worst of the repeats (plus the margin), so a device whose
     kernels are not bit-reproducible does not get bounds that only its luckiest run meets;
  2. the golden references of this stack's CPU reference (`--csm-save-golden`);
  3. the performance workloads, promoted to this machine's baseline (`promote`);
  4. a strict accuracy run against what was just written, which must pass;
then prints the files to commit. Nothing is written on a stack with a planted fault, and nothing
on a simulated device (the suite refuses: its numbers are the CPU's).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from csm_conformance.accuracy.bounds import bound_from_measurement
from csm_conformance.accuracy.metrics import known, to_error


def worst_of(documents: list[dict], margin: float) -> dict:
    """One bounds document from several recordings of the same stack: per metric the worst
    measured value of any repeat (in its error form), and its bound."""
    base = json.loads(json.dumps(documents[0]))
    for case, checks in base["cases"].items():
        for check, metrics in checks.items():
            for metric, entry in metrics.items():
                values = [d["cases"].get(case, {}).get(check, {}).get(metric, {}).get("measured") for d in documents]
                values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
                if not values or not known(metric):
                    continue
                worst = max(values, key=lambda v: to_error(metric, v))
                entry["measured"] = worst
                entry["bound"] = bound_from_measurement(metric, worst, margin)
                entry["repeats"] = len(values)
    base["notes"] = [f"recorded by csm_conformance.tools.first_run: worst of {len(documents)} repeats per metric, margin {margin:g}"]
    return base


def _pytest(args: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csm-conformance first-run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="accuracy recordings whose worst case sets each bound (default 3)")
    parser.add_argument("--baselines", type=Path, default=Path("baselines"), help="where to write (default ./baselines)")
    parser.add_argument("--output", type=Path, default=Path("output/first-run"), help="reports of each step")
    parser.add_argument("--skip-performance", action="store_true", help="record accuracy bounds and golden references only")
    args, suite_args = parser.parse_known_args(argv)
    if args.repeats < 1:
        print("csm-conformance first_run: --repeats must be at least 1", file=sys.stderr)
        return 2
    if any(a.startswith("--csm-fault") for a in suite_args):
        print("csm-conformance first_run: refusing to record with a planted fault (--csm-fault)", file=sys.stderr)
        return 2
    margin_args = [a for a in suite_args if a.startswith("--csm-bound-margin")]
    documents = []
    with tempfile.TemporaryDirectory(prefix="csm-first-run-") as scratch:
        for i in range(args.repeats):
            where = Path(scratch) / f"repeat-{i}"
            rc = _pytest(["-m", "accuracy", "-k", "not drift", "--csm-record-bounds", f"--csm-baselines={where}",
                          f"--csm-output={args.output / f'record-{i}'}", *suite_args])
            found = list((where / "accuracy").rglob("*.json"))
            if rc != 0 or len(found) != 1:
                print(f"csm-conformance first_run: recording {i + 1} of {args.repeats} failed (exit {rc}): nothing was written", file=sys.stderr)
                return 1
            documents.append(json.loads(found[0].read_text()))
        relative = found[0].relative_to(where)
    margin = documents[0].get("margin", 0.5)
    merged = worst_of(documents, margin)
    target = args.baselines / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    print(f"bounds: {target} (worst of {args.repeats} repeats{', ' + margin_args[0] if margin_args else ''})")
    model_key = relative.parts[1]
    rc = _pytest(["-m", "accuracy", "-k", "drift", "--csm-save-golden", f"--csm-baselines={args.baselines}",
                  f"--csm-output={args.output / 'golden'}", *suite_args])
    if rc != 0:
        print("csm-conformance first_run: saving the golden references failed", file=sys.stderr)
        return 1
    written = [target, args.baselines / "golden" / model_key]
    if not args.skip_performance:
        perf_out = args.output / "performance"
        rc = _pytest(["-m", "performance", f"--csm-baselines={args.baselines}", f"--csm-output={perf_out}", *suite_args])
        if rc != 0:
            print("csm-conformance first_run: the performance run failed: no performance baseline written", file=sys.stderr)
            return 1
        from csm_conformance.tools.promote import main as promote_main

        if promote_main(["--run", str(perf_out / "performance_benchmark.json"), "--baselines", str(args.baselines)]) != 0:
            return 1
        written.append(args.baselines / "performance" / model_key)
    rc = _pytest(["-m", "accuracy", "--csm-strict", f"--csm-baselines={args.baselines}", f"--csm-output={args.output / 'check'}", *suite_args])
    if rc != 0:
        print("csm-conformance first_run: the strict check against the new baselines failed: do not commit them", file=sys.stderr)
        return 1
    print("\nrecorded and checked. Commit:")
    print("  git add " + " ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
