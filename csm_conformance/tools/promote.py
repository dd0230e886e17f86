"""Promote a performance run to the stored baseline for its machine, model, dtype and mode.

    csm-conformance promote                      # output/performance_benchmark.json
    csm-conformance promote --run RUN.json --baselines DIR [--allow-regressions]

Runs with planted faults or failed tests are refused; a run that regressed is refused unless
--allow-regressions says the slower stack is accepted on purpose. Entries for workloads the run
did not time are kept from the old baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csm_conformance.baseline_files import BaselineError
from csm_conformance.errors import UserError
from csm_conformance.performance.baselines import promote
from csm_conformance.reports import schema as report_schema
from csm_conformance.suite.options import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csm-conformance promote", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="output/performance_benchmark.json", help="the run to promote (default: %(default)s)")
    parser.add_argument("--baselines", default=str(ROOT / "baselines"), help="baselines directory (default: the repo's baselines/)")
    parser.add_argument("--allow-regressions", action="store_true", help="accept a run that regressed as the new baseline")
    args = parser.parse_args(argv)
    run_path = Path(args.run)
    try:
        if not run_path.is_file():
            raise BaselineError(f"{run_path} does not exist: run the performance tests first (pytest -m performance)")
        try:
            run = json.loads(run_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BaselineError(f"{run_path} is not valid JSON ({exc})") from None
        if not isinstance(run, dict) or "csm" not in run:
            raise BaselineError(f"{run_path} is not a csm-conformance performance run (no 'csm' block)")
        report_schema.validate(run["csm"], "performance", str(run_path))
        written = promote(run, Path(args.baselines), allow_regressions=args.allow_regressions)
    except (UserError, KeyError, TypeError) as exc:  # a bad baseline or report (BaselineError, ReportSchemaError): its own line
        message = (str(exc) if isinstance(exc, UserError)
                   else f"{run_path} is not a csm-conformance performance run ({type(exc).__name__}: {exc})")
        print(f"csm-conformance promote: {message}", file=sys.stderr)
        return 2
    csm = run["csm"]
    print(f"promoted {len(run['benchmarks'])} benchmark(s) of {csm['model']['key']} on {csm['device']['fingerprint']} ({csm['dtype']}):")
    for path in written:
        print(f"  {path}")
    bare = [b["extra_info"].get("case") for b in run["benchmarks"]
            if b["extra_info"].get("mode") != "load" and not (b["extra_info"].get("info") or {}).get("operator_profile")]
    if bare:
        print(f"note: no per-operator summary for {', '.join(bare)}: a red check there cannot name the operator that grew; "
              "run with --csm-profile before promoting to store one")
    else:
        print("with each workload's per-operator summary (a red check names the operators that grew against it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
