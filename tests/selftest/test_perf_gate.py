"""The performance gate end to end with pytester: a baseline is promoted from a clean run, the
clean rerun passes against it, and a planted per-frame slowdown or memory leak fails it with the
regression table. Bad baselines end the run with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.reports import schema as report_schema

pytestmark = pytest.mark.selftest
# The tests judged against a baseline timed on this machine are `timing`: CI runs them alone
# (.ci/run). A missing baseline, a usage error and disabled benchmarks are not timed; they run
# beside other tests.
ROOT = Path(__file__).resolve().parents[2]

# One short workload in eager mode keeps each run to seconds; the gate logic is the same for all.
QUICK = ["--csm-workload", "short_32t", "--csm-perf-modes", "eager"]
# Where a test needs a clean run to *pass*, its time tolerance is 100 %. A clean rerun minutes after
# the promotion came out +31.7 % (frame median, host-corrected, x0.91 probe) and, in another test of
# the same CI run, +65.7 % (prefill, with the probe x2.1 slower): the shared CI machine's own swing,
# which failed those tests at the CPU's 30 %. What they check is the pass path, the reports and the
# host correction's arithmetic. That the CPU's default tolerance catches a fault is asserted by the
# planted-fault runs, which keep it (a fault of 3x, 2x, +8 MiB a frame).
CLEAN = ["--csm-perf-tolerance=cpu.time=100%"]


@pytest.fixture
def run_perf(run_suite, pytester):
    """The quick performance run, against the given baselines directory."""
    return lambda *args, baselines: run_suite(pytester, *QUICK, *args, baselines=baselines, marker="performance")


def promote(run_json: Path, baselines: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "csm_conformance", "promote", "--run", str(run_json), "--baselines", str(baselines), *extra],
        capture_output=True, text=True, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> Path:
    """A baselines directory holding a baseline promoted from a clean quick run on this machine."""
    work = tmp_path_factory.mktemp("perf-baseline")
    baselines = work / "baselines"
    out = work / "output"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "conformance"), "-c", str(ROOT / "pytest.ini"),
           "--rootdir", str(ROOT), "-p", "no:cacheprovider", "-m", "performance", "--csm-output", str(out),
           "--csm-baselines", str(baselines), *QUICK]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "no performance baseline for this machine" in first.stdout
    done = promote(out / "performance_benchmark.json", baselines)
    assert done.returncode == 0, done.stderr
    assert "bfloat16-eager.json" in done.stdout and "bfloat16-load.json" in done.stdout
    return baselines


@pytest.mark.timing
def test_clean_run_passes_against_its_baseline_and_writes_reports(run_perf, pytester, promoted):
    result = run_perf(*CLEAN, baselines=promoted)
    out = result.stdout.str()
    assert result.ret == 0, out[-3000:]
    assert "csm-conformance performance summary" in out
    assert "NOT a real-weight result" in out
    report = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
    report_schema.validate(report["csm"], "performance", "performance_benchmark.json")  # the written schema holds for a real run
    statuses = {r["case"]: r["status"] for r in report["csm"]["results"]}
    assert statuses == {"short_32t-b1-eager": statuses["short_32t-b1-eager"], "model_load": statuses["model_load"]}
    assert set(statuses.values()) <= {"passed", "improved"}, statuses
    bench = report["benchmarks"][0]
    assert bench["stats"]["rounds"] == 3 and len(bench["stats"]["data"]) == 3  # pytest-benchmark's stats
    figures = bench["extra_info"]["figures"]
    assert set(figures) == {"rtf", "ttfa_ms", "prefill_ms", "frame_ms_median", "frame_ms_p90", "peak_memory_mb"}
    assert all("cv" in f for f in figures.values())
    assert report["machine_info"]["csm"]["device_fingerprint"].startswith("cpu|")
    summary = (pytester.path / "output" / "performance_summary.txt").read_text()
    assert "short_32t-b1-eager" in summary and "weights read per frame" in summary
    png = (pytester.path / "output" / "performance_plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timing
def test_planted_per_frame_sleep_fails_the_gate_with_a_table(run_perf, pytester, promoted):
    """60 ms more a frame, about 3x on this VM. It was 20 ms until a CI run promoted its baseline
    while the VM ran slow (39.7 ms frames) and timed the fault when it ran fast (31 ms frames, +20
    ms): +28.5 %, inside the 30 % CPU tolerance, so only prefill flagged it."""
    result = run_perf("--csm-fault", "sleep:60", baselines=promoted)
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    result.stdout.fnmatch_lines(["*_ test_generation?short_32t-b1-eager? _*", "short_32t-b1-eager: performance regressed in*frame_ms_median*",
                                 "metric*baseline*now*change*tolerance*verdict*"])
    assert "metric" in out and "baseline" in out and "tolerance" in out and "REGRESSED" in out
    assert "PLANTED FAULT: every frame sleeps 60 ms longer" in out
    assert "regression in the first measurement confirmed (1 more measurement(s)): " in out  # a real slowdown persists
    refused = promote(pytester.path / "output" / "performance_benchmark.json", promoted)
    assert refused.returncode == 2 and "planted faults" in refused.stderr


@pytest.mark.timing
def test_host_drift_is_corrected_and_a_2x_slowdown_still_fails(run_perf, pytester, promoted, tmp_path):
    """The baseline rewritten as if it had been timed on a host four times as fast (its time
    figures and its host probe quartered): a clean run fails it in raw time (--csm-host-reference
    off) and passes in host units (the CPU's default), both at the clean runs' 100 % (raw, the
    change is about +300 %); a planted 2x slowdown fails in host units at the CPU's 30 %."""
    drifted = tmp_path / "baselines"
    shutil.copytree(promoted, drifted)
    (path,) = drifted.rglob("bfloat16-eager.json")
    data = json.loads(path.read_text())
    probed = 0
    for bench in data["benchmarks"]:
        for figure in bench["extra_info"]["figures"].values():
            if "host_us" in figure:
                figure["value"], figure["host_us"], probed = figure["value"] / 4, figure["host_us"] / 4, probed + 1
    assert probed >= 5, "the promoted baseline carries no host probe"
    path.write_text(json.dumps(data))
    clean = run_perf("-k", "test_generation", *CLEAN, baselines=drifted)
    out = clean.stdout.str()
    assert clean.ret == 0, out[-3000:]
    report = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
    gen = next(r for r in report["csm"]["results"] if r["case"] == "short_32t-b1-eager")
    note = next(m for m in gen["messages"] if m.startswith("host-speed probe"))
    # the factor is today's probe over the (quartered) baseline probe; how far from 4 it lands is the VM's drift since promotion
    then = next(b for b in data["benchmarks"] if b["extra_info"]["case"] == "short_32t-b1-eager")["extra_info"]["figures"]["frame_ms_median"]
    frame = next(c for c in gen["comparisons"] if c["metric"] == "frame_ms_median")
    assert frame["host_factor"] == pytest.approx(gen["figures"]["frame_ms_median"]["host_us"] / then["host_us"]), note
    assert frame["change"] == pytest.approx(frame["now"] / frame["host_factor"] / frame["baseline"] - 1)
    assert report["csm"]["settings"]["host_correction"] is True
    raw = run_perf("-k", "test_generation", *CLEAN, "--csm-host-reference", "off", baselines=drifted)
    assert raw.ret == 1 and "performance regressed in" in raw.stdout.str(), raw.stdout.str()[-3000:]
    slowed = run_perf("-k", "test_generation", "--csm-host-reference=on", "--csm-fault", "slowdown:1.0", baselines=drifted)
    out = slowed.stdout.str()
    assert slowed.ret == 1 and "frame_ms_median" in out and "host now/then" in out, out[-3000:]


@pytest.mark.timing
def test_a_transient_slowdown_is_not_confirmed_and_passes(run_perf, pytester, promoted):
    """Interference that slows only the first measurement (5 generations: warm-up, 3 rounds, the
    memory round) regresses it; the confirmation measurement right after is clean, so the gate
    passes and says why. With --csm-perf-confirm 0 the same burst fails: the confirmation, not a
    loose tolerance, is what lets it through. The time tolerance is 100 %: the burst (60 ms a frame)
    at least triples a frame of the tiny model on this VM, whose frames took 10 ms on a quiet day
    and 25-34 ms on a slow one (a 20 ms burst was only +70 % then, inside the tolerance), while the
    clean confirmation must not trip on this shared machine's own drift since the baseline was
    promoted (a +31 % drift failed this test once at 30 %)."""
    burst = ["--csm-perf-rounds", "3", "--csm-fault", "transient:60:5", "-k", "test_generation",
             *CLEAN]
    result = run_perf(*burst, baselines=promoted)
    out = result.stdout.str()
    assert result.ret == 0, out[-3000:]
    report = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
    (gen,) = [r for r in report["csm"]["results"] if r["mode"] == "eager"]
    assert any(m.startswith("regression in the first measurement not confirmed: transient") for m in gen["messages"]), gen
    assert "frame_ms_median" in next(m for m in gen["messages"] if m.startswith("regression in the first"))
    measured = report["benchmarks"][0]["extra_info"]["info"]["confirmation"]["measurements"]
    assert len(measured) == 2 and measured[0]["frame_ms_median"]["value"] > 1.5 * measured[1]["frame_ms_median"]["value"]
    again = run_perf(*burst, "--csm-perf-confirm", "0", baselines=promoted)
    assert again.ret == 1 and "performance regressed in" in again.stdout.str(), again.stdout.str()[-3000:]


@pytest.mark.timing
def test_planted_memory_growth_fails_the_gate(run_perf, pytester, promoted):
    result = run_perf("--csm-fault", "leak:2", baselines=promoted)
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    assert "peak_memory_mb" in out and "REGRESSED" in out
    report = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
    gen = next(r for r in report["csm"]["results"] if r["case"] == "short_32t-b1-eager")
    assert gen["status"] == "regressed"
    assert any(c["metric"] == "peak_memory_mb" and c["verdict"] == "regressed" for c in gen["comparisons"])


def test_missing_baseline_is_reported_and_fails_under_strict(run_perf, pytester, tmp_path):
    empty = tmp_path / "none"
    lenient = run_perf(baselines=empty)
    assert lenient.ret == 0
    assert "no performance baseline for this machine" in lenient.stdout.str()
    strict = run_perf("--csm-strict", baselines=empty)
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["*_ test_generation?short_32t-b1-eager? _*", "short_32t-b1-eager: no performance baseline for this machine*"])


@pytest.mark.timing
def test_corrupt_baseline_is_one_line(run_perf, one_line_error, pytester, promoted, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(promoted, broken)
    target = next(broken.rglob("bfloat16-eager.json"))
    target.write_text("{ not json")
    one_line_error(run_perf(baselines=broken), "is not valid JSON")


def test_zero_rounds_and_bad_tolerance_are_usage_errors(run_perf, one_line_error, pytester, tmp_path):
    one_line_error(run_perf("--csm-perf-rounds", "0", baselines=tmp_path), "must be at least 1")
    one_line_error(run_perf("--csm-perf-tolerance", "speed=5%", baselines=tmp_path), "bad tolerance 'speed=5%'")
    one_line_error(run_perf("--csm-workload", "nope", baselines=tmp_path), "unknown workload id 'nope'")


def test_disabled_benchmarks_skip_and_fail_under_strict(run_perf, pytester, tmp_path):
    skipped = run_perf("--benchmark-disable", baselines=tmp_path)
    assert skipped.ret == 0
    skipped.stdout.fnmatch_lines(["*2 skipped*"])
    strict = run_perf("--benchmark-disable", "--csm-strict", baselines=tmp_path)
    assert strict.ret == 1
