"""The upgrade verdict: may the candidate stack replace the current one?

The command line (`python -m csm_conformance verdict`, run by `tox -e verdict`): read the two run
directories and the A/B report, decide, write verdict.md and verdict.json, and exit with the
verdict's code. It is a module of its own, not __main__.py, so that the package can re-export
`main` without importing __main__ (runpy warns when `-m` finds __main__ already imported). The
first paragraph above is the --help description.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csm_conformance.tools import baselines_diff
from csm_conformance.tools.verdict.evidence import NO_AB, VerdictError, read_ab, read_side
from csm_conformance.tools.verdict.judge import decide
from csm_conformance.tools.verdict.operators import across_cases
from csm_conformance.tools.verdict.operators import compare as compare_operators
from csm_conformance.tools.verdict.render import to_json, to_markdown

EXIT = {"SAFE": 0, "REGRESSED": 1, "INCONCLUSIVE": 3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csm-conformance verdict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="report directory of the current stack (e.g. output/current)")
    parser.add_argument("--after", required=True, help="report directory of the candidate stack (e.g. output/candidate)")
    parser.add_argument("--ab", default=None, help="the A/B comparison's output directory (python -m csm_conformance ab): it judges performance")
    parser.add_argument("--output", default="output/verdict", help="where verdict.md and verdict.json go")
    parser.add_argument("--before-label", default=None, help="name of the current stack in the report (default: its directory name)")
    parser.add_argument("--after-label", default=None, help="name of the candidate stack in the report")
    parser.add_argument("--base-baselines", default=None,
                        help="the base's baselines directory: list what --baselines loosened against it (docs/verdict.md)")
    parser.add_argument("--baselines", default="baselines", help="the baselines directory the gate runs used (default baselines/)")
    parser.add_argument("--allow-loosened", action="store_true", help="acknowledge loosened baselines (the label baselines-loosened)")
    parser.add_argument("--before-python", default=None, metavar="PY",
                        help="the current stack's interpreter: records its operator report for a case red only on the candidate "
                             "when the current run wrote none (docs/verdict.md)")
    args = parser.parse_args(argv)
    try:
        before = read_side(args.before_label or Path(args.before).name, Path(args.before))
        after = read_side(args.after_label or Path(args.after).name, Path(args.after))
        ab = (read_ab(Path(args.ab)) or NO_AB) if args.ab else None
        loosened = baselines_diff.compare(Path(args.baselines), Path(args.base_baselines), args.allow_loosened) if args.base_baselines else None
    except (VerdictError, baselines_diff.DiffError) as exc:
        print(f"csm-conformance verdict: {exc}", file=sys.stderr)
        return 2
    verdict = decide(before, after, ab, loosened)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    verdict.operators = compare_operators(verdict.accuracy, before, after, out, args.before_python)
    (out / "verdict.md").write_text(to_markdown(verdict))
    (out / "verdict.json").write_text(json.dumps(to_json(verdict), indent=2) + "\n")
    print(f"csm-conformance verdict: {verdict.headline}")
    summary = across_cases(verdict.operators)
    if summary:
        print(f"csm-conformance verdict: {summary}")
    for found in verdict.operators[:1 if summary else None]:  # the rest per case in verdict.md
        print(f"csm-conformance verdict: {found.line}")
    print(f"report: {out / 'verdict.md'}")
    print(f"report: {out / 'verdict.json'}")
    return EXIT[verdict.status]
