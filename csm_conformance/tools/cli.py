"""`csm-conformance <verb> ...` (and `python -m csm_conformance <verb> ...`): the one command line
of every tool.

The verb picks the tool; the rest of the command line goes to that tool's own `main(argv)`, which
keeps its own parser (named `csm-conformance <verb>`), its own options and its own exit codes. A
tool's module is imported only when its verb runs, so one tool's missing module or heavy imports
never cost another verb anything: a verb whose module is not installed says so in one line.
`csm-conformance --help` lists the verbs; `csm-conformance <verb> --help` is the tool's own help,
followed by the verb's worked examples (pytest-benchmark's `pytest-benchmark compare --help` does
the same with its `epilog`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

PROG = "csm-conformance"
BAD_INPUT = 2


@dataclass(frozen=True)
class Verb:
    name: str
    module: str  # imported when the verb runs
    summary: str  # the verb's line in `csm-conformance --help`
    examples: str  # worked examples, shown after the tool's own --help
    function: str = "main"  # main(argv) -> exit code


VERBS = [
    Verb("ab", "csm_conformance.tools.ab.cli", "time the current and the candidate stack side by side (paired, interleaved A/B)", """\
  csm-conformance ab --before .tox/current/bin/python --after .tox/candidate/bin/python --output output/ab
      is the candidate slower, with an interval? exit 0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE, 2 bad input
  csm-conformance ab --before .venv/bin/python --after .venv/bin/python --csm-device npu:0 --output output/aa
      an A/A run on one card; the gate's --csm-model/--csm-device/--csm-dtype/--csm-require-device work here
  csm-conformance ab --before A/bin/python --after B/bin/python --tier full --budget 100,120m --output output/ab
      every workload and mode (docs/ab.md)"""),
    Verb("verdict", "csm_conformance.tools.verdict.cli", "SAFE / REGRESSED / INCONCLUSIVE: may the candidate stack replace the current one", """\
  csm-conformance verdict --before output/current --after output/candidate --ab output/verdict/ab --output output/verdict
      accuracy from the two gate runs, performance from the A/B report; exit 0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE
  tox -e current,candidate,verdict -- --csm-device npu:0 --csm-require-device
      the whole upgrade check, as README.md runs it (docs/verdict.md)"""),
    Verb("promote", "csm_conformance.tools.promote", "promote a performance run to this machine's stored baseline", """\
  pytest -m performance && csm-conformance promote
      output/performance_benchmark.json becomes baselines/performance/<model>/<device>/<dtype>-<mode>.json
  csm-conformance promote --run RUN.json --baselines DIR --allow-regressions
      accept a slower stack on purpose (docs/performance.md)"""),
    Verb("first-run", "csm_conformance.tools.first_run", "bounds, golden references and baselines for a new checkpoint, on a stack you trust", """\
  csm-conformance first-run --csm-model /data/csm-1b --csm-device npu:0 --repeats 3
      records everything the gate compares against, checks it strictly, prints what to commit"""),
    Verb("stack-range", "csm_conformance.tools.stack_range", "the accuracy gate across transformers and torch releases, a fresh venv per row", """\
  csm-conformance stack-range --output docs/stack-range.md
      every transformers minor on the default torch (docs/supported-stacks.md)
  csm-conformance stack-range --transformers ci --output output/stack-range-ci.md
      the CI sample"""),
    Verb("localize", "csm_conformance.accuracy.localize.cli", "compare two --csm-dump dumps offline and name the first diverging module", """\
  csm-conformance localize compare dumps/current/short_en dumps/candidate/short_en --output cmp/
      exit 0 when nothing diverges, 1 when a module does, 2 on bad input (docs/localizer.md)"""),
    Verb("fault-catalogue", "csm_conformance.tools.fault_catalogue.cli", "every planted fault through the real gate: is each caught and named", """\
  csm-conformance fault-catalogue --output output/fault_catalogue
      the whole catalogue (docs/proof.md)
  csm-conformance fault-catalogue --only weight --clean-reruns 0
      one entry"""),
    Verb("ab-planted", "csm_conformance.tools.ab.planted", "the ratio a planted slowdown really adds here: the reference an A/B interval must hold", """\
  csm-conformance ab-planted --fraction 0.05 --rounds 100
      slowdown:0.05 timed without the A/B machinery (docs/ab.md)"""),
    Verb("baselines-diff", "csm_conformance.tools.baselines_diff", "did a change loosen a bound, a golden reference or a baseline without saying so", """\
  csm-conformance baselines-diff --base-ref origin/main
      baselines/ against its copy at origin/main; exit 0 nothing loosened or all acknowledged, 1 not acknowledged
  csm-conformance baselines-diff --baselines DIR --base-baselines OLD_DIR --output output/baselines-diff
      two directories; writes baselines-diff.md and baselines-diff.json (docs/verdict.md)"""),
    Verb("ops", "csm_conformance.tools.ops_cli", "judge every aten operator a case runs on the device against its correctly rounded standard", """\
  csm-conformance ops --case short_en --device npu:0
      output/ops/ops.json: each distinct operator call, worst first; exit 0 none past its standard, 1 one is, 2 bad input
  csm-conformance ops --case all --model /data/csm-1b --dtype float16 --output output/ops --repro all
      every case; a repro bundle (repro.py) for the first operators of each, past their standard or not"""),
    Verb("inference", "csm_conformance.tools.inference", "speak a text with CSM into a WAV file (the seed's inference.py)", """\
  csm-conformance inference --text "Hello from CSM." --output output.wav --device cpu --seed 0
      the embedded tiny model: never a real-weight result (docs/seed-commands.md)
  csm-conformance inference --accuracy --csm-case short_en
      a part of the suite; for the performance gate's figures use `pytest -m performance` or
      eval_performance.py, which run the tests at the pytest command's own call depth""", function="inference"),
]
BY_NAME = {verb.name: verb for verb in VERBS}


def parser() -> argparse.ArgumentParser:
    """The help page: every verb with its line, and each verb's description and examples."""
    p = argparse.ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Sesame CSM-1B conformance on NPU, GPU and CPU: the suite's command-line tools.",
                                epilog=f"`{PROG} <verb> --help` shows a verb's options and worked examples; "
                                       f"`python -m csm_conformance <verb>` is the same command.\n"
                                       "The conformance suite itself runs under pytest: `pytest --csm-device npu:0` (README.md).")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = p.add_subparsers(title="verbs", dest="verb", metavar="<verb>")
    for verb in VERBS:
        verbs.add_parser(verb.name, help=verb.summary, description=verb.summary, epilog=f"examples:\n{verb.examples}",
                         formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    return p


def _version() -> str:
    from csm_conformance import __version__

    return __version__


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return BAD_INPUT


def _load(verb: Verb):
    """The verb's entry function, or None when its module is not installed."""
    try:
        module = importlib.import_module(verb.module)
    except ModuleNotFoundError as exc:
        if exc.name == verb.module or verb.module.startswith(f"{exc.name}."):
            return None
        raise  # a module the tool itself needs is missing: a bug or a broken install, with its traceback
    return getattr(module, verb.function)


def _call(verb: Verb, entry, argv: list[str]):
    prog = f"{PROG} {verb.name}"
    if verb.function == "inference":  # the seed's command: speech, or a part of the suite run here
        from csm_conformance.tools.inference import SuiteRun

        outcome = entry(argv, prog=prog)
        return outcome.finish(outcome.command()()) if isinstance(outcome, SuiteRun) else outcome
    saved, sys.argv[0] = sys.argv[0], prog  # argparse's default prog, for a tool whose parser names none
    try:
        return entry(argv)
    finally:
        sys.argv[0] = saved


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"]:  # `csm-conformance help ab` is `csm-conformance ab --help`
        argv = [argv[1], "--help"] if argv[1:] else ["--help"]
    if not argv:
        print(parser().format_usage().rstrip(), file=sys.stderr)
        return _fail(f"missing verb (choose from {', '.join(BY_NAME)}; `{PROG} --help` says what each does)")
    if argv[0] in ("-h", "--help", "--version"):
        parser().parse_args(argv[:1])  # prints the help or the version, and exits 0
    name, rest = argv[0], argv[1:]
    verb = BY_NAME.get(name)
    if verb is None:
        return _fail(f"unknown verb '{name}' (choose from {', '.join(BY_NAME)})")
    entry = _load(verb)
    if entry is None:
        return _fail(f"verb '{name}' is not available in this installation (its module {verb.module} is missing)")
    wants_help = any(arg in ("-h", "--help") for arg in rest[: rest.index("--") if "--" in rest else len(rest)])
    try:
        code = _call(verb, entry, rest)
    except SystemExit as exc:
        if wants_help and exc.code in (0, None):
            print(f"\nexamples:\n{verb.examples}")
        raise
    if wants_help and code in (0, None):
        print(f"\nexamples:\n{verb.examples}")
    return 0 if code is None else code
