"""The command line: `csm-conformance localize compare DUMP_A DUMP_B [--output DIR]`.

Two dumps written with `--csm-dump` on different machines or stacks are compared where neither
run is live; this module is that command (the package's __main__.py runs it; it lives here so
that `localize.main` is importable without running it).

`compare` compares two dumps (A is the baseline) with the same rule as a live run; exit 0 when
nothing diverges, 1 when a module does, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csm_conformance.accuracy.localize.dump import compare_dumps
from csm_conformance.accuracy.localize.rule import DumpError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like the dump errors
        self.exit(2, f"error: csm_conformance.accuracy.localize: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="csm-conformance localize",
                     description="Compare two per-module dumps written with --csm-dump and name the first diverging module.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="compare dump B against dump A (the baseline)")
    cmp.add_argument("dump_a", help="baseline: a dump directory <dump>/<case> (its device side) or one of its .safetensors files")
    cmp.add_argument("dump_b", help="candidate, same forms")
    cmp.add_argument("--output", help="also write compare.txt, compare.png and compare.json here")
    args = parser.parse_args(argv)
    try:
        loc = compare_dumps(args.dump_a, args.dump_b)
        print("\n".join(loc.table()))
        if args.output:
            for path in loc.write(Path(args.output), "compare"):
                print(f"report: {path}")
    except DumpError as exc:
        print(f"error: csm_conformance.accuracy.localize: {exc}", file=sys.stderr)
        return 2
    return 1 if loc.first is not None else 0
