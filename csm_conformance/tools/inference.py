"""The seed's command lines over the package: `inference.py` (speech from text, or a part of the
suite), `eval_accuracy.py`, `eval_performance.py` and `run_all.sh` (the suite's parts, reports in
output/). Nothing here measures or judges anything: the suite and `synthesis` do.

The root scripts call pytest's console entry point themselves, at module level, as the `pytest`
command does, so the conformance tests run at the same Python call depth as under that command.
CPython's frame chunks make Python-bound timings depend on that depth (docs/performance.md, "Caveat
(CPython)"), and a wrapper must not move the gate's figures away from baselines timed by `pytest`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "conformance"
PARTS = {"accuracy": "accuracy", "performance": "performance", "all": "accuracy or performance"}
EXIT_BAD_INPUT = 2


class SuiteRun:
    """One run of a part of the suite, prepared here and started by the root script.

    The root script calls `run.command()()` itself, at module level, because that is where the
    `pytest` console script calls it: the tests then run at the command's own call depth.
    """

    def __init__(self, part: str, argv: list[str], prog: str):
        self.prog = prog
        self.argv = [str(TESTS), "-m", PARTS[part], *argv]  # the test path, not the cwd, finds pytest.ini and conftest.py
        self.output = _output_dir(argv)
        self.started = time.time()  # reset when the run starts

    def command(self):
        """pytest's console entry point, with sys.argv set to this run's arguments (it reads them there)."""
        sys.argv[1:] = self.argv
        self.started = time.time()
        return pytest_command()

    def finish(self, code) -> int:
        """Name the report files this run wrote; pytest's exit code."""
        fresh = sorted(p for p in self.output.glob("*") if p.is_file() and p.stat().st_mtime >= self.started - 1.0)
        if fresh:
            print(f"{self.prog}: reports in {self.output.resolve()}: " + ", ".join(p.name for p in fresh))
        else:
            print(f"{self.prog}: no report was written to {self.output.resolve()} (pytest exit code {int(code)})")
        return int(code)


def _output_dir(argv: list[str]) -> Path:
    """Where the suite writes its reports: --csm-output among the pytest arguments, else its
    environment twin, else the default, resolved by the suite's own option table."""
    from csm_conformance.suite.options import settings_from

    found = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    found.add_argument("--csm-output", action="append")
    given = found.parse_known_args(argv)[0].csm_output
    try:
        return settings_from({"csm_output": given[-1] if given else None}).output_dir
    except ValueError:  # an unusable option elsewhere: pytest will say which, in one line
        return Path(given[-1] if given else "output")


def pytest_command():
    """The function the `pytest` console script runs (its entry point), which reads sys.argv."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="console_scripts", name="pytest"):
        return entry.load()
    return pytest.main  # no console script installed: same tests, possibly one frame deeper


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def inference_parser(prog: str = "inference.py") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, allow_abbrev=False, description=(
        "Speak --text with CSM and write a 24 kHz mono WAV; or, with --benchmark/--accuracy/--all, run "
        "that part of the conformance suite (arguments this command does not know go to pytest)."))
    parser.add_argument("--text", help="what to say")
    parser.add_argument("--output", default="output.wav", help="WAV file to write (default: output.wav)")
    parser.add_argument("--speaker", default="0", help="speaker id of the text, 0 or 1 (default: 0)")
    parser.add_argument("--context", nargs=3, action="append", metavar=("AUDIO", "TEXT", "SPEAKER"),
                        help="an earlier turn of the conversation: a recording (resampled to 24 kHz), what it says, its speaker (repeatable)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="most Mimi frames to generate, 12.5 per second of audio (default: 1024)")
    parser.add_argument("--temperature", type=float, default=0.9, help="sampling temperature, 0 for greedy (default: 0.9)")
    parser.add_argument("--top-k", type=int, default=50, help="top-k sampling (default: 50)")
    parser.add_argument("--seed", type=int, help="seed for sampling (default: unseeded)")
    parser.add_argument("--compile", action="store_true", help="static caches + torch.compile, the benchmark's compiled mode (the first call compiles)")
    parser.add_argument("--model", help="tiny (default), random-full, a local directory or a hub id; as the suite's --csm-model [env CSM_MODEL]")
    parser.add_argument("--device", help="auto (default), cpu, npu[:i], cuda[:i], ...; as the suite's --csm-device [env CSM_DEVICE]")
    parser.add_argument("--dtype", help="bfloat16 (default), float16 or float32; as the suite's --csm-dtype [env CSM_DTYPE]")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--benchmark", dest="part", action="store_const", const="performance", help="run the performance gate (pytest -m performance)")
    part.add_argument("--accuracy", dest="part", action="store_const", const="accuracy", help="run the accuracy checks (pytest -m accuracy)")
    part.add_argument("--all", dest="part", action="store_const", const="all", help="run both")
    return parser


def inference(argv: list[str] | None = None, prog: str = "inference.py") -> int | SuiteRun:
    """Speak --text (the exit code), or prepare the suite run that --benchmark/--accuracy/--all ask
    for, with --model/--device/--dtype mapped to the suite's options and unknown arguments kept."""
    parser = inference_parser(prog)
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.part:
        mapped = [f"--csm-{name}={value}" for name, value in (("model", args.model), ("device", args.device), ("dtype", args.dtype))
                  if value is not None]
        return SuiteRun(args.part, mapped + extra, prog)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.text is None:
        parser.error("--text is required (or one of --benchmark, --accuracy, --all)")
    from csm_conformance.suite.options import OptionError
    from csm_conformance.suite.session import ConformanceError

    try:
        return _speak(args, prog)
    except (ConformanceError, OptionError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _speak(args: argparse.Namespace, prog: str) -> int:
    from csm_conformance.runtime import probes
    from csm_conformance.suite.options import settings_from
    from csm_conformance.suite.session import ConformanceError
    from csm_conformance.tools import synthesis

    settings = settings_from({"csm_model": args.model, "csm_device": args.device, "csm_dtype": args.dtype})  # CSM_* env twins apply
    case = synthesis.prompt(args.text, args.speaker, args.context or [])
    synthesis.check_sampling(args.max_tokens, args.temperature, args.top_k)
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise ConformanceError(f"--output {output} is a directory; name a .wav file")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConformanceError(f"--output {output}: cannot create its directory ({exc.strerror})") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor loading bars would bury the figures below
    loaded, device = synthesis.load(settings.csm_model, settings.csm_device, settings.csm_dtype, settings.csm_require_device)
    print(f"model: {loaded.identity.describe()}")
    print(f"device: {device.device} ({device.name}) | dtype {settings.csm_dtype} | loaded in {loaded.load_seconds:.1f} s"
          + "".join(f" | {note}" for note in loaded.notes))
    if case.context:
        seconds = sum(turn.audio.waveform().size for turn in case.context) / synthesis.SAMPLE_RATE
        print(f"context: {len(case.context)} turn(s), {seconds:.2f} s of audio")
    try:
        result = synthesis.synthesize(loaded, case, args.max_tokens, args.temperature, args.top_k, args.seed, args.compile)
    except ConformanceError:
        raise
    except probes.UndecodableCodesError as exc:  # ids past Mimi's codebook (random full-size weights): counted, not IndexError
        print(f"{prog}: error: generation failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a crash inside generate (NaN in sampling, a backend error): one line, not a traceback
        from csm_conformance.runtime.known_issues import known_issue

        issue = known_issue("compiled" if args.compile else "eager", exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{prog}: error: generation failed: " + (issue.reason + " (run without --compile)" if issue else f"{type(exc).__name__}: {first}"),
              file=sys.stderr)
        return 1
    from csm_conformance.reports.accuracy_report import wav_bytes

    output.write_bytes(wav_bytes(result.audio.numpy(), result.sample_rate))
    stop = "stopped at the end-of-speech frame" if result.stopped_at_eos else f"reached --max-tokens {args.max_tokens}"
    print(f"mode: {result.mode_label}" + ("; the generation time includes compiling" if args.compile else ""))
    print(f"frames generated: {result.frames} ({stop})")
    print(f"audio seconds: {result.audio_seconds:.2f} ({result.audio.numel()} samples, {result.sample_rate} Hz mono)")
    print(f"generation seconds: {result.seconds:.2f} (codes {result.generate_s:.2f} + Mimi decode {result.decode_s:.2f})")
    print(f"RTF: {result.rtf:.3f} (generation seconds / audio seconds)")
    if result.peak_bytes is None:
        print(f"peak memory: unknown ({device.type} reports no peak statistic)")
    else:
        print(f"peak memory: {result.peak_bytes / 2**20:.1f} MiB ({result.memory_method})")
    print(f"wrote {output.resolve()}")
    return 0
