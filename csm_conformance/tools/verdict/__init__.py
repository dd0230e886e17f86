"""The upgrade verdict: may the candidate stack replace the current one?

Both stacks run the same gate on the same machine (`tox -e current,candidate`), each writing its
reports to a directory: accuracy_evaluation.json, performance_benchmark.json, junit.xml and
run_status.json. This module reads the two directories and decides:

- REGRESSED when the candidate fails a test the current stack passed (an accuracy check outside its
  stored bound or golden reference, a crash, a setup error such as a model that no longer loads),
  or when a gated performance figure of the candidate is worse than the current stack's by more
  than its tolerance (the run's own tolerances, widened to noise_factor x CV as the gate does);
  the compiled decode-loop check (decode_loop_compiled) red only on the candidate is said in its own
  words, and any compiled timing that reads SAFE/faster carries "not to be trusted" beside it;
- INCONCLUSIVE when something needed for a judgement is missing: a report, a test the current
  stack ran and the candidate did not (the compiled decode loop named, its compiled timing
  "unverified"), a different model/device/dtype, a planted fault, or a test
  that fails on both stacks (a test the current stack fails and the candidate passes is a note);
- SAFE otherwise.

Performance comes from the paired A/B comparison when one is given (`--ab DIR`, the output of
`python -m csm_conformance ab` run on the two stacks' interpreters, as `tox -e verdict` does): per
case and figure, the ratio candidate / current with its interval, REGRESSED or SAFE or
INCONCLUSIVE as the A/B decided. Without it, the gate runs' own figures are compared as before
(candidate against the current stack timed minutes earlier, tolerances widened by noise), which
a busy machine can fool either way; the report says which method judged.

The report starts with what changed between the two stacks (the reports' "stack" fingerprints,
runtime/stack.py; else the A/B report's), and, given `--base-baselines DIR`, lists every bound,
golden reference or baseline loosened against the base (tools/baselines_diff.py): unacknowledged,
that makes the verdict INCONCLUSIVE.

For every case with a device check red only on the candidate, the verdict lists the operators whose
error grew between the stacks (operators.py), right under the top line and under that check in Why:
each stack's `<run>/ops/ops.json` (the operator report, accuracy/ops: every distinct aten call judged
against its correctly rounded standard), matched call by call. The candidate's gate writes its own
for the red check; for the current stack, whose check passed, `--before-python PY` runs `PY -m
csm_conformance ops` on the candidate's model, device and dtype (into `<output>/ops-before`; a
failure there is said in the line, never a crash). verdict.json: `operators_grew` ({case: rows, or
null when not compared}) and `operators_lines`. The list informs; it does not change the verdict. A
damaged ops.json is bad input, as any damaged report.

Usage: python -m csm_conformance verdict --before DIR --after DIR [--ab DIR] [--base-baselines DIR] [--before-python PY] [--output DIR]
Exit codes: 0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE, 2 bad input (one line on stderr).

The package, one module per job: evidence (reading and checking the run directories and the A/B
report), judge (the decision), operators (the operators whose error grew), render (verdict.md,
verdict.json), cli (the command line). Everything callers used from the former single module is
re-exported here.
"""

from __future__ import annotations

from csm_conformance.tools.verdict.cli import EXIT, main
from csm_conformance.tools.verdict.evidence import (
    AB_KEYS,
    ACCURACY_FILE,
    JUNIT_FILE,
    NO_AB,
    PERFORMANCE_FILE,
    STATUS_FILE,
    Side,
    VerdictError,
    read_ab,
    read_side,
)
from csm_conformance.tools.verdict.judge import AccuracyRow, PerfRow, Verdict, decide
from csm_conformance.tools.verdict.render import to_json, to_markdown

__all__ = [
    "AB_KEYS", "ACCURACY_FILE", "EXIT", "JUNIT_FILE", "NO_AB", "PERFORMANCE_FILE", "STATUS_FILE",
    "AccuracyRow", "PerfRow", "Side", "Verdict", "VerdictError",
    "decide", "main", "read_ab", "read_side", "to_json", "to_markdown",
]
