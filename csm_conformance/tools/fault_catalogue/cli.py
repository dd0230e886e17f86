"""The planted-fault catalogue: proof that the gates go red on the faults they exist to catch.

The command line (the package's docstring says what caught and named mean, and why some entries
run as an A/B):

    csm-conformance fault-catalogue [--output DIR] [--only ID ...] [--clean-reruns N] [--sweep]

Exit 0 when every planted fault was caught with its place named and no clean run failed; 1
otherwise; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from csm_conformance.tools.fault_catalogue.entries import AB_ROUNDS, AB_TOLERANCES, CATALOGUE
from csm_conformance.tools.fault_catalogue.judge import Outcome
from csm_conformance.tools.fault_catalogue.run import CatalogueRunError, clean_setups, run_clean, run_entry, sweep
from csm_conformance.tools.fault_catalogue.table import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csm-conformance fault-catalogue", description=__doc__.splitlines()[0])
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
    from csm_conformance.runtime import devices

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

