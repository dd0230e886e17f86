"""Units of the performance gate: tolerances, the comparison, baseline files, promotion,
workloads, statistics and the bandwidth floor."""

from __future__ import annotations

import json

import pytest

from csm_conformance.baseline_files import BaselineError
from csm_conformance.catalogue.workloads import WorkloadError, load_workloads, perf_cases
from csm_conformance.performance import timing
from csm_conformance.performance.baselines import BaselineFile, baseline_path, compare_figures, fingerprint_slug, parse_tolerances, promote
from csm_conformance.runtime import bandwidth

pytestmark = pytest.mark.selftest


def fig(value, cv=0.0):
    return {"value": value, "cv": cv}


def test_tolerances_parse_with_device_overrides_and_slack():
    tol = parse_tolerances(["time=5%", "memory=0.03", "cpu.time=30%", "cpu.memory=10%+16MiB"])
    assert tol == {"time": (0.05, 0.0), "memory": (0.03, 0.0), "cpu.time": (0.30, 0.0), "cpu.memory": (0.10, 16.0)}
    for bad in ("speed=5%", "time", "time=fast", "time=5%+3MiB", "memory=5%+3GB"):
        with pytest.raises(ValueError, match="bad tolerance"):
            parse_tolerances([bad])


def test_comparison_regression_improvement_and_noise_widening():
    tol = parse_tolerances(["time=5%", "memory=3%", "cpu.time=30%"])
    base = {"rtf": fig(1.0, 0.01), "peak_memory_mb": fig(1000.0)}
    rows = {r.metric: r for r in compare_figures(base, {"rtf": fig(1.06, 0.01), "peak_memory_mb": fig(1020.0)}, tol, "cuda", 3.0)}
    assert rows["rtf"].verdict == "regressed" and rows["rtf"].tolerance == pytest.approx(0.05)
    assert rows["peak_memory_mb"].verdict == "ok"
    assert compare_figures(base, {"rtf": fig(0.90, 0.01)}, tol, "cuda", 3.0)[0].verdict == "improved"
    # the CPU's own tolerance applies on the CPU
    assert compare_figures(base, {"rtf": fig(1.25, 0.01)}, tol, "cpu", 3.0)[0].verdict == "ok"
    # a noisy figure widens its tolerance to 3 x CV: never a gate below its own noise
    noisy = compare_figures({"rtf": fig(1.0, 0.04)}, {"rtf": fig(1.10, 0.01)}, tol, "cuda", 3.0)[0]
    assert noisy.tolerance == pytest.approx(0.12) and noisy.widened and noisy.verdict == "ok"


def test_memory_slack_is_absolute():
    tol = parse_tolerances(["memory=3%", "cpu.memory=10%+16MiB"])
    small = {"peak_memory_mb": fig(1.3)}
    assert compare_figures(small, {"peak_memory_mb": fig(12.0)}, tol, "cpu", 3.0)[0].verdict == "ok"
    assert compare_figures(small, {"peak_memory_mb": fig(40.0)}, tol, "cpu", 3.0)[0].verdict == "regressed"


def run_doc(status="passed", faults=(), mode="eager", case="short_32t-b1-eager"):
    return {
        "machine_info": {}, "commit_info": {}, "datetime": "2026-11-25T00:00:00+00:00", "version": "5.3.1",
        "benchmarks": [{"name": "t", "stats": {"median": 1.0}, "extra_info": {"case": case, "mode": mode, "workload_digest": "abc",
                                                                            "figures": {"rtf": fig(0.5)}, "info": {}}}],
        "csm": {"model": {"key": "embedded-tiny-csm"}, "device": {"fingerprint": "cpu|X|x2"}, "dtype": "bfloat16",
                "versions": {"torch": "2.13.0"}, "planted_faults": list(faults), "results": [{"case": case, "status": status}]},
    }


def test_promote_writes_per_mode_merges_and_refuses(tmp_path):
    written = promote(run_doc(), tmp_path)
    assert written == [baseline_path(tmp_path, "embedded-tiny-csm", "cpu|X|x2", "bfloat16", "eager")]
    promote(run_doc(case="short_128t-b1-eager"), tmp_path)
    book = BaselineFile.load(written[0])
    assert set(book.entries) == {"short_32t-b1-eager", "short_128t-b1-eager"}  # merged, not replaced
    assert book.entry("short_32t-b1-eager", "abc")[0] is not None
    assert book.entry("short_32t-b1-eager", "changed")[1].endswith("different workload definition")
    with pytest.raises(BaselineError, match="planted faults"):
        promote(run_doc(faults=["rope"]), tmp_path)
    with pytest.raises(BaselineError, match="failed"):
        promote(run_doc(status="failed"), tmp_path)
    with pytest.raises(BaselineError, match="--allow-regressions"):
        promote(run_doc(status="regressed"), tmp_path)
    assert promote(run_doc(status="regressed"), tmp_path, allow_regressions=True)


def test_baseline_file_errors_are_one_line(tmp_path):
    assert BaselineFile.load(tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(BaselineError, match="not valid JSON"):
        BaselineFile.load(bad)
    bad.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(BaselineError, match="not written by the promote command"):
        BaselineFile.load(bad)


def test_fingerprint_slug():
    assert fingerprint_slug("cuda|NVIDIA H100 80GB HBM3|x1") == "cuda-nvidia-h100-80gb-hbm3-x1"


def test_workload_catalogue_and_selection(tmp_path):
    workloads = load_workloads()
    assert [w.id for w in workloads] == ["short_32t", "short_128t", "short_256t", "medium_256t", "medium_512t", "long_512t"]
    assert workloads[0].audio_seconds == pytest.approx(32 / 12.5)
    cases = perf_cases(workloads, ["eager", "compiled"])
    assert cases[0].id == "short_32t-b1-eager" and cases[-1].mode == "compiled"
    assert "short_128t-b4-eager" in [c.id for c in cases]
    with pytest.raises(WorkloadError, match="unknown workload id 'x'"):
        perf_cases(workloads, ["eager"], ["x"])
    with pytest.raises(WorkloadError, match="unknown performance mode"):
        perf_cases(workloads, ["fast"])
    bad = tmp_path / "w.yaml"
    bad.write_text("texts: {a: hi}\nworkloads:\n  - {id: w, text: a, frames: 0}\n")
    with pytest.raises(WorkloadError, match="'frames' must be a positive integer"):
        load_workloads(bad)


def test_statistics():
    assert timing.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert timing.median([3, 1, 2]) == 2
    assert timing.cv([1.0]) == 0.0
    assert timing.cv([1.0, 1.0, 1.0]) == 0.0
    assert timing.cv([0.9, 1.1]) == pytest.approx(0.1414, rel=1e-3)


def test_bandwidth_floor_of_full_size_csm():
    import torch
    from transformers import CsmForConditionalGeneration

    from csm_conformance.runtime.models import random_full_config

    with torch.device("meta"):
        model = CsmForConditionalGeneration(random_full_config())
    parts = bandwidth.weight_bytes_per_frame(model, torch.bfloat16)
    assert parts["depth_steps"] == 31
    assert parts["total"] / 1e9 == pytest.approx(9.107, abs=0.01)  # backbone once + depth decoder 31 times
    assert parts["depth_decoder"] / parts["total"] == pytest.approx(0.771, abs=0.01)
    gbps, source = bandwidth.device_bandwidth_gbps("NVIDIA H100 80GB HBM3")
    assert gbps == 3350.0 and "H100" in source
    assert bandwidth.device_bandwidth_gbps("NVIDIA H100 PCIe")[0] == 2000.0
    assert bandwidth.device_bandwidth_gbps("Intel(R) Xeon(R) Processor")[0] is None
    assert bandwidth.device_bandwidth_gbps("anything", override=100.0) == (100.0, "--csm-memory-bandwidth")
    floor = bandwidth.floor_figures(parts["total"], 0.010, 3350.0)
    assert floor["floor_frame_ms"] == pytest.approx(2.72, abs=0.01)
    assert floor["bandwidth_fraction"] == pytest.approx(0.272, abs=0.01)


def test_best_of_measurements_takes_each_figures_best_with_its_own_cv():
    from csm_conformance.performance.run import _best_of

    first = {"rtf": {"value": 0.9, "cv": 0.01}, "frame_ms_median": {"value": 8.0, "cv": 0.02}, "peak_memory_mb": {"value": 10.0, "cv": 0.0}}
    second = {"rtf": {"value": 0.7, "cv": 0.05}, "frame_ms_median": {"value": float("nan"), "cv": 0.0}, "peak_memory_mb": {"value": 12.0, "cv": 0.0}}
    best = _best_of([first, second])
    assert best["rtf"] == {"value": 0.7, "cv": 0.05}  # lower is better, and its own CV comes along
    assert best["frame_ms_median"] == {"value": 8.0, "cv": 0.02}  # a NaN never wins
    assert best["peak_memory_mb"]["value"] == 10.0
    assert first["rtf"]["value"] == 0.9  # the measurements themselves are left as they were


def timed(value, host_us):
    return {"value": value, "cv": 0.0, "host_us": host_us}


def test_host_correction_compares_time_figures_in_host_units():
    """A baseline timed on a host 1.5x faster (probe 200 vs 300 us): a clean run 1.5x slower in
    raw time is unchanged in host units; a 2x slowdown on top is still +100 %; memory is never
    corrected; a baseline without a probe is compared raw."""
    tol = parse_tolerances(["cpu.time=30%", "cpu.memory=10%"])
    base = {"frame_ms_median": timed(20.0, 200.0), "peak_memory_mb": fig(100.0)}
    clean = {"frame_ms_median": timed(30.0, 300.0), "peak_memory_mb": fig(100.0)}
    raw = compare_figures(base, clean, tol, "cpu", 3.0)[0]
    assert raw.verdict == "regressed" and raw.change == pytest.approx(0.5) and raw.host_factor is None
    corrected = {r.metric: r for r in compare_figures(base, clean, tol, "cpu", 3.0, host_correction=True)}
    assert corrected["frame_ms_median"].verdict == "ok" and corrected["frame_ms_median"].change == pytest.approx(0.0)
    assert corrected["frame_ms_median"].host_factor == pytest.approx(1.5) and corrected["frame_ms_median"].now == 30.0
    assert corrected["peak_memory_mb"].host_factor is None
    doubled = compare_figures(base, {"frame_ms_median": timed(60.0, 300.0)}, tol, "cpu", 3.0, host_correction=True)[0]
    assert doubled.verdict == "regressed" and doubled.change == pytest.approx(1.0)
    unprobed = compare_figures({"frame_ms_median": fig(20.0)}, clean, tol, "cpu", 3.0, host_correction=True)[0]
    assert unprobed.host_factor is None and unprobed.verdict == "regressed"
    from csm_conformance.performance.baselines import comparison_table

    table = "\n".join(comparison_table(list(corrected.values())))
    assert "host now/then" in table and "x1.500" in table


def test_best_of_ranks_host_probed_figures_in_host_units():
    """The faster raw measurement was taken on a faster host and is the worse one in host units,
    where the gate compares in host units; raw otherwise."""
    from csm_conformance.performance.run import _best_of

    fast_host = {"frame_ms_median": timed(20.0, 100.0)}
    slow_host = {"frame_ms_median": timed(24.0, 200.0)}
    assert _best_of([fast_host, slow_host], {"frame_ms_median"})["frame_ms_median"] == timed(24.0, 200.0)
    # against a baseline without a probe the gate compares raw, and so does the ranking
    assert _best_of([fast_host, slow_host])["frame_ms_median"] == timed(20.0, 100.0)


@pytest.mark.timing
def test_host_probe_is_out_of_the_frame_clock(monkeypatch):
    """The probe runs between frames; its time must not land in the frames it corrects. Planted: a
    probe that spins 100 ms, several times the embedded model's frame on this VM (20-40 ms)."""
    import time as _time

    from csm_conformance.runtime import host_speed
    from csm_conformance.tools.synthesis import load

    loaded, _device = load("tiny", "cpu", "bfloat16")
    (case,) = perf_cases(load_workloads(None), ["eager"], ["short_32t"], (1,))
    inputs = timing.workload_inputs(loaded, case)
    timing.generate_round(loaded, inputs, 8, 0)  # warm-up
    plain = timing.generate_round(loaded, inputs, 8, 0)
    assert plain.host_us is None

    def spin_100ms():
        end = _time.perf_counter() + 0.1
        while _time.perf_counter() < end:
            pass
        return 0.1

    monkeypatch.setattr(host_speed, "probe_s", spin_100ms)
    probed = timing.generate_round(loaded, inputs, 8, 0, probe_host=True)
    assert probed.host_us == pytest.approx(1e5)
    assert timing.median(probed.frame_intervals_s) < 0.1, probed.frame_intervals_s
    assert probed.wall_s < 0.1 * 8, probed.wall_s
    with pytest.raises(ValueError, match="not combined"):
        timing.generate_round(loaded, inputs, 8, 0, on_put=lambda: None, probe_host=True)


def test_host_reference_applies_on_the_cpu_by_default():
    from csm_conformance.runtime import host_speed

    assert host_speed.applies("auto", "cpu") and not host_speed.applies("auto", "npu") and not host_speed.applies("auto", "cuda")
    assert host_speed.applies("on", "npu") and not host_speed.applies("off", "cpu")
    assert host_speed.factor({"host_us": 200.0}, {"host_us": 300.0}) == pytest.approx(1.5)
    assert host_speed.factor({}, {"host_us": 300.0}) is None and host_speed.factor({"host_us": 0}, {"host_us": 3.0}) is None
    assert 1e-5 < host_speed.probe_s() < 0.1


def test_a_conftest_teaches_the_bandwidth_of_an_unknown_device(run_suite, pytester, monkeypatch, tmp_path):
    """The pytest_csm_memory_bandwidth_gbps hook (plugin/hookspecs.py), implemented by a plugin of the
    user's, gives the bandwidth floor a device the table lacks; --csm-memory-bandwidth still wins."""
    (pytester.path / "my_device_bandwidth.py").write_text(
        "def pytest_csm_memory_bandwidth_gbps(device_name, device_type):\n    return 123.0 if device_type == 'cpu' else None\n")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    quick = ["-p", "my_device_bandwidth", "-k", "test_generation", "--csm-workload", "short_32t", "--csm-perf-modes", "eager",
             "--csm-perf-rounds", "1", "--csm-perf-warmup", "0", "--csm-perf-confirm", "0", f"--csm-baselines={tmp_path}"]
    infos = []
    for extra in ([], ["--csm-memory-bandwidth", "50"]):
        result = run_suite(pytester, *quick, *extra, marker="performance")
        assert result.ret == 0, result.stdout.str()[-3000:]
        report = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
        infos.append(next(r["info"] for r in report["csm"]["results"] if r["case"] == "short_32t-b1-eager"))
    assert (infos[0]["device_bandwidth_gbps"], infos[0]["bandwidth_source"]) == (123.0, "the pytest_csm_memory_bandwidth_gbps hook")
    assert (infos[1]["device_bandwidth_gbps"], infos[1]["bandwidth_source"]) == (50.0, "--csm-memory-bandwidth")
