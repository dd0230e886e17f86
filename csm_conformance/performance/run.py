"""The performance gate: time a workload with pytest-benchmark, derive its figures, judge them
against the stored baseline for this machine, and keep every verdict for the reports.

pytest-benchmark owns the rounds (`benchmark.pedantic`: warm-up rounds, timed rounds, one call per
round) and their statistics; each round is a whole fixed-length generation whose frame stamps give
TTFA, prefill and per-frame latency. Peak memory is measured in one extra round after the timed
ones, because the CPU's sampler would otherwise steal time from the rounds it measures.

A regression must be confirmed (`--csm-perf-confirm`, 1 by default): a workload whose figures
regressed is timed again, in the same mode, right away, and a figure fails only when every
measurement of it regressed, i.e. the gate judges the best of the measurements. Interference on a
shared machine only ever adds time and comes and goes; a slower stack is slower every time. The
within-run CV cannot see this: on the 2-core CI CPU the rounds of one run agreed to 1-2 % while
two runs minutes apart differed by up to 33 % in one compiled prefill. pytest-benchmark's stats
are those of the first measurement; the figures (`extra_info`) are the gate's, with every
measurement listed under info.confirmation.

Split (issue 12): this module times the rounds; figures.py derives the figures from them and
picks the best of several measurements, judge.py judges figures against the baselines.
time_generation and time_load stay here as they were (same call depth, same frame size), because
where the timed loop sits on the stack is part of what it measures (docs/performance.md, the
CPython caveat).
"""

from __future__ import annotations

import gc

from csm_conformance.baseline_files import BaselineError
from csm_conformance.catalogue.workloads import PerfCase, Workload, load_workloads, perf_cases, tier_selection
from csm_conformance.performance import stored_profile, timing
from csm_conformance.performance.baselines import GATED
from csm_conformance.performance.figures import MIB, _best_of, _figure, generation_figures
from csm_conformance.performance.judge import PerfJudge, PerfResult, _confirmation_note
from csm_conformance.results import Status
from csm_conformance.runtime import bandwidth, devices

SEED = 0


def _stack_depth() -> int:
    """Python frames below this call. CPython (3.11-3.13) keeps frames in 16 KiB chunks that it maps
    and unmaps as a deep call crosses a chunk boundary; a hot loop that straddles one pays page
    faults on every crossing. Measured here: the embedded model's CPU frame time moved from 11 to
    15-21 ms with nothing but the caller's stack depth changed. Timings are only comparable at
    the same harness depth, so it is recorded and a change is reported."""
    import sys

    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _device_bandwidth(session) -> tuple[float | None, str]:
    """The device's bandwidth for the floor: the option, a conftest's hook (set on the session by the
    pytest plugin; absent for tools run without pytest), else the suite's table."""
    hook = getattr(session, "bandwidth_hook", None)
    from_hook = hook(device_name=session.device.name, device_type=session.device.type) if hook else None
    return bandwidth.device_bandwidth_gbps(session.device.name, session.settings.csm_memory_bandwidth, from_hook)


class PerformanceRun:
    """The performance half of a conformance session (the accuracy half is ConformanceSession)."""

    def __init__(self, session):
        self.session = session
        self.settings = settings = session.settings
        self.workloads: list[Workload] = load_workloads(settings.csm_workloads or None)
        ids, modes, batches = tier_selection(settings.csm_workloads or None, settings.csm_perf_tier, settings.csm_workload, settings.csm_perf_modes)
        self.cases: list[PerfCase] = perf_cases(self.workloads, modes, ids, batches)
        self.judging = PerfJudge(session)  # reads the tolerances and the host-speed setting
        self.tolerances, self.host_correction = self.judging.tolerances, self.judging.host_correction
        self.results: list[PerfResult] = []
        self.benchmarks: list[dict] = []

    # ---- baselines and verdicts: PerfJudge (judge.py) -------------------------------
    def baseline_file(self, mode: str):
        return self.judging.baseline_file(mode)

    def load_baselines(self) -> None:
        """Read every baseline the selected tests need; a corrupt one raises BaselineError."""
        self.judging.load_baselines({c.mode for c in self.cases})

    def judge(self, case_id: str, mode: str, digest: str | None, figures: dict, info: dict) -> PerfResult:
        """Judge one measurement and keep its verdict."""
        result = self.judging.judge(case_id, mode, digest, figures, info)
        self.results.append(result)
        return result

    # ---- measurements ---------------------------------------------------------------------
    def time_generation(self, case: PerfCase, benchmark) -> PerfResult:
        loaded = self.session.target
        device = loaded.device
        frames, rounds, warmup = case.workload.frames, self.settings.csm_perf_rounds, self.settings.csm_perf_warmup
        inputs = timing.workload_inputs(loaded, case)
        log: list[timing.RoundTiming] = []
        with timing.generation_mode(loaded, case.mode) as mode_label:
            benchmark.pedantic(
                lambda: log.append(timing.generate_round(loaded, inputs, frames, SEED, probe_host=self.host_correction)),
                setup=lambda: devices.synchronize(device),
                rounds=rounds, warmup_rounds=warmup, iterations=1,
            )
            with devices.PeakMemory(device) as memory:
                timing.generate_round(loaded, inputs, frames, SEED)
            timed = log[warmup:]
            walls = [r.wall_s for r in timed]  # the clock's: a host probe's time is not in them
            figures = generation_figures(case, timed, walls, memory, loaded.model)
            judged = self.judge(case.id, case.mode, case.workload.digest, figures, {})
            self.results.pop()  # judge() kept it; it is judged again below, with any confirmations
            measurements = [figures]
            first_regressed = [c.metric for c in judged.comparisons if c.verdict == "regressed"]
            while judged.status is Status.REGRESSED and len(measurements) <= self.settings.csm_perf_confirm:
                again: list[timing.RoundTiming] = []
                for _ in range(rounds):
                    devices.synchronize(device)
                    again.append(timing.generate_round(loaded, inputs, frames, SEED, probe_host=self.host_correction))
                with devices.PeakMemory(device) as memory_again:
                    timing.generate_round(loaded, inputs, frames, SEED)
                measurements.append(generation_figures(case, again, [r.wall_s for r in again], memory_again, loaded.model))
                figures = _best_of(measurements, {c.metric for c in judged.comparisons if c.host_factor})
                judged = self.judge(case.id, case.mode, case.workload.digest, figures, {})
                self.results.pop()
        wall = timing.median(walls)
        weights = bandwidth.weight_bytes_per_frame(loaded.model, loaded.dtype)
        bw, bw_source = _device_bandwidth(self.session)
        floor = bandwidth.floor_figures(weights["total"], figures["frame_ms_median"]["value"] / 1e3, bw)
        info = {
            "mode_label": mode_label,
            "harness_stack_depth": _stack_depth(),
            "batch": case.batch,
            "frames": frames,
            "audio_seconds": case.workload.audio_seconds,
            "wall_s": wall,
            "wall_cv": timing.cv(walls),
            "frames_per_second": case.batch * frames / wall,
            "rounds": len(walls),
            "warmup_rounds": warmup,
            "compile_s": max(0.0, log[0].wall_s - wall) if (case.mode == "compiled" and warmup) else None,
            "confirmation": None if len(measurements) == 1 else {
                "rule": "a figure fails only when every measurement of it regressed: the best measurement is gated",
                "measurements": measurements},
            "memory_method": memory.method if memory.is_cpu is False else "device model weights + growth of the " + memory.method,
            "memory_growth_mb": None if memory.growth_bytes is None else memory.growth_bytes / MIB,
            "weight_bytes_per_frame": weights,
            "device_bandwidth_gbps": bw,
            "bandwidth_source": bw_source,
            **floor,
        }
        result = self.judge(case.id, case.mode, case.workload.digest, figures, info)
        if len(measurements) > 1:
            result.messages.append(_confirmation_note(result, first_regressed, measurements))
        stored_profile.attribute(self, case, inputs, result, SEED)
        result.bench = _bench_entry(benchmark, _extra(case.id, case.mode, case.workload.digest, figures, info))
        self.benchmarks.append(result.bench)
        return result

    def time_load(self, benchmark) -> PerfResult:
        session = self.session
        device = session.device.device

        def load_once():
            loaded = session.source.load(device, session.dtype)
            devices.synchronize(device)
            del loaded
            gc.collect()
            devices.empty_cache(device)

        benchmark.pedantic(load_once, rounds=self.settings.csm_perf_load_rounds, warmup_rounds=0, iterations=1)
        stats = benchmark.stats.stats
        figures = {"load_s": _figure(list(stats.data))}
        info = {"what": f"{session.source.kind} model to {device} in {session.dtype_name}"
                + (" (random-full: built from seeded random init, not read from disk)" if session.source.kind == "random-full" else ""),
                "rounds": len(stats.data)}
        result = self.judge("model_load", "load", None, figures, info)
        result.bench = _bench_entry(benchmark, _extra("model_load", "load", None, figures, info))
        self.benchmarks.append(result.bench)
        return result

    # ---- for reports ----------------------------------------------------------------------
    def meta(self) -> dict:
        return _report_meta(self)


def _bench_entry(benchmark, extra: dict) -> dict:
    """The pytest-benchmark entry of a timed workload, with the gate's figures as its extra_info."""
    benchmark.extra_info.update(extra)
    return benchmark.stats.as_dict(include_data=True, flat=False, stats=True)


def _extra(case_id: str, mode: str, digest: str | None, figures: dict, info: dict) -> dict:
    return {"case": case_id, "mode": mode, "workload_digest": digest, "figures": figures, "info": info}


def _report_meta(run: PerformanceRun) -> dict:
    """The run as the performance reports describe it: model, device, settings, verdicts."""
    s = run.session
    return {
        "model": s.identity.as_dict() if s.identity else {"key": s.model_key},
        "device": {"spec": s.device.spec, "device": s.device.device, "type": s.device.type, "name": s.device.name,
                   "count": s.device.count, "fingerprint": s.device.fingerprint},
        "dtype": s.dtype_name,
        "versions": devices.software_versions(),
        "planted_faults": s.fault_notes,
        "settings": {
            "rounds": run.settings.csm_perf_rounds,
            "warmup_rounds": run.settings.csm_perf_warmup,
            "load_rounds": run.settings.csm_perf_load_rounds,
            "modes": sorted({c.mode for c in run.cases}),
            "tolerances": run.tolerances,
            "noise_factor": run.settings.csm_perf_noise_factor,
            "noise_cap": run.settings.csm_perf_noise_cap,
            "host_correction": run.host_correction,
            "tier": run.settings.csm_perf_tier,
            "strict": run.settings.csm_strict,
            "baselines": {m: str(run.baseline_file(m)) for m in sorted({c.mode for c in run.cases} | {"load"})},
        },
        "gated_figures": {k: {"class": v[0], "better": v[1], "unit": v[2]} for k, v in GATED.items()},
        "results": [r.as_dict() for r in run.results],
    }


__all__ = ["PerformanceRun", "PerfResult", "BaselineError"]
