"""The accuracy gate across the supported stack range: one transformers release per minor, on the
torch releases torch_npu is locked to, on the embedded model; a Markdown table of the results.

    csm-conformance stack-range --output docs/stack-range.md
    csm-conformance stack-range --transformers 4.52.4,5.20.2,newest --output output/range.md
    csm-conformance stack-range --transformers newest --torch newest --output output/newest.md

Why it exists: a suite that judges upgrades must itself be known to work (or to fail for a named
reason) on every release a team may be on or move to. Every row gets a FRESH virtual environment
under --workdir, and torch, the suite and the row's transformers release are resolved by ONE pip
call, as a user setting up that stack should. A row's result so depends on nothing but its own
pins: installing the newest release first and downgrading in place would leave behind what the
newest release pulled in (transformers 5.25.0 brought `kernels`, which breaks 4.52-4.55), and the
row would judge that leftover instead of the release. The gate runs from the repository root with
the repository's pytest.ini; the row's reason is the run's own first failure line, so a release
that breaks is named with what broke.

`newest` (for --transformers and --torch) is resolved at run time with `pip index versions`, so a
scheduled job judges a release the day it ships (.github/workflows/newest-releases.yml).

A release that needs a known workaround says so in its row (WORKAROUNDS): releases before 4.56
read context audio through librosa (transformers' `load_audio` requires it even for arrays there),
so those rows install the `librosa` extra, as a user of those releases must.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.runtime.known_issues import LIBROSA_BEFORE, parse_version

REPO = Path(__file__).resolve().parents[2]
FLOOR = (4, 52)  # the first transformers minor with CSM (4.52.0 was yanked: 4.52.1 is the first usable)
DEFAULT_TORCH = "2.13.0"


def newest_per_minor(versions: list[str], floor: tuple[int, int] = FLOOR) -> list[str]:
    """The newest final release of every minor from `floor` on, oldest first."""
    best: dict[tuple[int, int], str] = {}
    for v in versions:
        if not re.fullmatch(r"\d+\.\d+\.\d+", v):
            continue  # pre-releases and local builds
        key = parse_version(v)[:2]
        if key >= floor and (key not in best or parse_version(v) > parse_version(best[key])):
            best[key] = v
    return [best[k] for k in sorted(best)]


def available(package: str) -> list[str]:
    """Every release of `package` the index serves now (so `newest` is today's newest)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Available versions:\s*(.+)", out)
    if not match:
        raise SystemExit(f"stack_range: cannot list {package} releases with pip index ({out.strip()[:200] or 'no output'})")
    return [v.strip() for v in match.group(1).split(",")]


def select(spec: str, releases: list[str]) -> list[str]:
    """'all' (newest of each minor), 'ci' (the floor and the newest 5.x before 5.21: CI's own steps
    already run the newest release, in the main job and the verdict example), or a comma list of
    versions where 'newest' stands for the newest release."""
    per_minor = newest_per_minor(releases)
    if spec == "all":
        return per_minor
    if spec == "ci":
        before_521 = [v for v in per_minor if (5, 0) <= parse_version(v)[:2] < (5, 21)]
        return [per_minor[0], before_521[-1]]
    return [per_minor[-1] if v.strip() == "newest" else v.strip() for v in spec.split(",") if v.strip()]


def select_torch(spec: str) -> list[str]:
    """A comma list of torch versions, where 'newest' stands for the newest final release served."""
    wanted = [t.strip() for t in spec.split(",") if t.strip()]
    if "newest" not in wanted:
        return wanted
    finals = [v for v in available("torch") if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    newest = max(finals, key=parse_version)
    return [newest if t == "newest" else t for t in wanted]


@dataclass(frozen=True)
class KnownBreak:
    """A release range where the gate must fail, and with which check: the suite's correct verdict
    on a broken stack. A row there that passes, or fails for another reason, is a finding."""

    first: tuple[int, int]
    last: tuple[int, int]
    check: str  # "case/check" that must be among the failures
    why: str


KNOWN_BREAKS = [
    KnownBreak((5, 0), (5, 20), "model/load_integrity",
               "CsmConfig forces tie_word_embeddings=False there and v5 ties weights only under that flag, so a checkpoint "
               "storing the codebook embedding once (every 4.x conversion, sesame/csm-1b too) loads with "
               "backbone_model.embed_tokens.embed_audio_tokens.weight initialised at random; 5.21 ties it again"),
]


def known_break(tf: str) -> KnownBreak | None:
    minor = parse_version(tf)[:2]
    return next((k for k in KNOWN_BREAKS if k.first <= minor <= k.last), None)


@dataclass
class Row:
    torch: str
    transformers: str
    result: str  # passed | FAILED | ERROR | install failed
    reason: str
    seconds: float
    as_expected: bool = True


def _run(cmd: list[str], log, cwd: Path | None = None, env: dict | None = None) -> int:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, check=False).returncode


@dataclass(frozen=True)
class Workaround:
    """What a release needs beyond its own pin to run the suite, said in its row."""

    before: tuple[int, int]  # applies to releases older than this minor
    extra: str  # the suite's extra that carries it
    why: str


WORKAROUNDS = [
    Workaround(LIBROSA_BEFORE, "librosa", "installed with the suite's librosa extra: transformers < 4.56 reads context audio through librosa"),
]


def workarounds(tf: str) -> list[Workaround]:
    return [w for w in WORKAROUNDS if parse_version(tf)[:2] < w.before]


def install_row(workdir: Path, torch_spec: str, tf: str, log) -> Path:
    """A fresh venv with torch, the suite and transformers==tf resolved by one pip call; its
    python. An old venv of the same name is removed first: nothing carries over between rows or
    runs."""
    venv = workdir / "venvs" / f"torch-{torch_spec}-tf-{tf}"
    shutil.rmtree(venv, ignore_errors=True)
    if _run([sys.executable, "-m", "venv", str(venv)], log) != 0:
        raise InstallError(f"could not create {venv}")
    python = venv / "bin" / "python"
    extras = ",".join(w.extra for w in workarounds(tf))
    suite = f"{REPO}[{extras}]" if extras else str(REPO)
    if _run([str(python), "-m", "pip", "install", "-q", f"torch=={torch_spec}", "-e", suite, f"transformers=={tf}"], log) != 0:
        raise InstallError(f"pip could not resolve torch=={torch_spec} + the suite + transformers=={tf} in one call (see {log.name})")
    return python


class InstallError(Exception):
    pass


def first_failure(out: Path, console: str) -> str:
    """The run's own first reason: setup error, else the first failed check's message, else the
    last error line pytest printed."""
    status = out / "run_status.json"
    if status.exists():
        setup = json.loads(status.read_text()).get("setup_error")
        if setup:
            return setup
    report = out / "accuracy_evaluation.json"
    if report.exists():
        for r in json.loads(report.read_text()).get("results", []):
            if r.get("status") == "failed":
                return f"{r['case']}/{r['check']}: " + "; ".join(r.get("messages") or [])
    lines = [ln for ln in console.splitlines() if ln.startswith(("ERROR", "FAILED", "E ")) or "csm-conformance:" in ln]
    return lines[-1] if lines else (console.strip().splitlines() or ["no output"])[-1]


def run_release(torch_spec: str, tf: str, workdir: Path, pytest_args: list[str], log, keep_venv: bool = False) -> Row:
    start = time.perf_counter()
    try:
        python = install_row(workdir, torch_spec, tf, log)
    except InstallError as exc:
        return Row(torch_spec, tf, "install failed", str(exc), time.perf_counter() - start)
    try:
        return _gate_row(python, torch_spec, tf, workdir, pytest_args, log, start)
    finally:
        if not keep_venv:  # about 1 GB each: 31 rows would fill a CI disk
            shutil.rmtree(python.parents[1], ignore_errors=True)


def _gate_row(python: Path, torch_spec: str, tf: str, workdir: Path, pytest_args: list[str], log, start: float) -> Row:
    out = workdir / "out" / f"torch-{torch_spec}-tf-{tf}"
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--csm-output={out}", *pytest_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log.write(f"$ (cd {REPO}) {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    log.write(proc.stdout + proc.stderr)
    summary = next((ln.strip("= ") for ln in reversed(proc.stdout.splitlines()) if re.search(r"\b(passed|failed|error)", ln)), "")
    if proc.returncode == 0:
        skips = sorted({re.sub(r"^SKIPPED \[\d+\] [^ ]+: ", "", ln) for ln in proc.stdout.splitlines() if ln.startswith("SKIPPED")})
        reason = summary + "".join(f"; skipped: {skip}" for skip in skips) + "".join(f"; {w.why}" for w in workarounds(tf))
        return Row(torch_spec, tf, "passed", reason.replace("|", "\\|"), time.perf_counter() - start)
    result = "FAILED" if proc.returncode == 1 else "ERROR"
    reason = first_failure(out, proc.stdout + proc.stderr).replace("|", "\\|")
    return Row(torch_spec, tf, result, f"{summary}: {reason}" if summary else reason, time.perf_counter() - start)


def judge_row(row: Row) -> Row:
    """Compare a row with what is known of its release: a known-broken release must fail its named
    check (the suite's verdict on it), every other release must pass."""
    known = known_break(row.transformers)
    if known is None:
        row.as_expected = row.result == "passed"
        return row
    row.as_expected = row.result == "FAILED" and f"{known.check}:" in row.reason
    row.reason = f"{row.reason} -- known break of {'.'.join(map(str, known.first))}-{'.'.join(map(str, known.last))}: {known.why}"
    return row


TITLE = "# The accuracy gate across the supported stack range\n"


def markdown(rows: list[Row], command: str, pytest_args: list[str]) -> str:
    """One section: the command that made it, how, and its table."""
    lines = [
        f"## `{command}`",
        "",
        f"Made {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d} on {platform.machine()} ({os.cpu_count()} cores, no accelerator; "
        "device cpu, bfloat16 against the CPU float32 reference), on the **embedded tiny CSM** (the fixed checkpoint in "
        "`csm_conformance/runtime/assets/embedded-tiny-csm`): seeded random weights, NOT a real-weight result. Each row: "
        "a fresh venv per row, `pip install torch==T -e <suite> transformers==X` in one call, then "
        f"`pytest {' '.join(pytest_args)}` from the repository root; the reason is the run's own first failure line.",
        "A known-broken release must FAIL with its named check (the suite's correct verdict on that stack); every other "
        "release must pass. `as expected` says whether the row did.",
        "",
        "| torch | transformers | result | as expected | reason | s |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    lines += [f"| {r.torch} | {r.transformers} | {r.result} | {'yes' if r.as_expected else '**NO**'} | {r.reason} | {r.seconds:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csm-conformance stack-range", description=__doc__.splitlines()[0])
    parser.add_argument("--transformers", default="all", help="newest, all (newest of every minor from 4.52), ci, or a comma list ('newest' allowed)")
    parser.add_argument("--torch", default=DEFAULT_TORCH, help=f"comma list of torch versions ('newest' allowed; default {DEFAULT_TORCH})")
    parser.add_argument("--workdir", type=Path, default=REPO / ".stack-range", help="venvs, logs and per-run reports (default .stack-range/)")
    parser.add_argument("--output", type=Path, required=True, help="the Markdown table to write")
    parser.add_argument("--eager-workload", default="", help="also time this workload in eager mode (one round), e.g. short_32t")
    parser.add_argument("--compiled", action="store_true", help="time the workload in compiled mode too")
    parser.add_argument("--keep-venvs", action="store_true", help="keep each row's venv under <workdir>/venvs (default: removed after its row)")
    parser.add_argument("--append", action="store_true", help="add this run's section to --output instead of replacing the file")
    args, pytest_extra = parser.parse_known_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    pytest_args = ["-m", "accuracy"]
    if args.eager_workload:
        modes = "eager,compiled" if args.compiled else "eager"
        pytest_args = ["-m", "accuracy or performance", f"--csm-workload={args.eager_workload}", f"--csm-perf-modes={modes}",
                       "--csm-perf-rounds=1", "--csm-perf-confirm=0"]
    pytest_args += pytest_extra
    log_path = args.workdir / "stack-range.log"
    rows: list[Row] = []
    kept = args.output.read_text() if args.append and args.output.exists() else TITLE
    command = "csm-conformance stack-range " + " ".join(sys.argv[1:] if argv is None else argv)
    with open(log_path, "a") as log:
        releases = select(args.transformers, available("transformers"))
        for torch_spec in select_torch(args.torch):
            for tf in releases:
                row = judge_row(run_release(torch_spec, tf, args.workdir, pytest_args, log, args.keep_venvs))
                rows.append(row)
                print(f"torch {row.torch:8} transformers {row.transformers:8} {row.result:8} {'as expected' if row.as_expected else 'NOT AS EXPECTED'} "
                      f"{row.seconds:5.0f} s  {row.reason[:160]}", flush=True)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(kept + "\n" + markdown(rows, command, pytest_args))
    unexpected = [r for r in rows if not r.as_expected]
    print(f"wrote {args.output} ({len(rows)} rows, {len(unexpected)} not as expected; log {log_path})")
    for r in unexpected:  # what a scheduled job's failure names: the release and its first failing check
        print(f"NOT AS EXPECTED: transformers {r.transformers} on torch {r.torch}: {r.result}: {r.reason[:300]}")
    return 0 if not unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
