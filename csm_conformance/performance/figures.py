"""The figures of a timed workload, derived from its rounds' frame stamps, and the best of several
measurements of them (the confirmation rule, in run.py's docstring, gates the best).

Split from the run (issue 12): PerformanceRun (run.py) times the rounds, this module turns them into
the gated figures. A figure is {"value", "cv"}, plus "host_us" when the host-speed probe ran.
"""

from __future__ import annotations

import math

from csm_conformance.catalogue.workloads import PerfCase
from csm_conformance.performance import timing
from csm_conformance.performance.baselines import GATED
from csm_conformance.runtime import devices

MIB = 2**20


def _figure(values: list[float], value: float | None = None) -> dict:
    return {"value": timing.median(values) if value is None else value, "cv": timing.cv(values)}


def _best_of(measurements: list[dict], host_units: frozenset[str] | set[str] = frozenset()) -> dict:
    """Per figure, the best measurement (lowest: every gated figure is lower-is-better), with its
    own CV and host probe; a NaN never wins over a number. The figures in `host_units` (those the
    gate compares in host units: both the baseline and today's figure carry a probe) are ranked in
    host units too; the others raw, as the gate compares them."""
    best = {}
    for name in measurements[0]:
        candidates = [m[name] for m in measurements if name in m]
        finite = [f for f in candidates if math.isfinite(f["value"])] or candidates
        if name in host_units and all(f.get("host_us") for f in finite):
            key = lambda f: f["value"] / f["host_us"]  # noqa: E731
        else:
            key = lambda f: f["value"]  # noqa: E731
        best[name] = dict(min(finite, key=key) if GATED.get(name, ("", "lower"))[1] == "lower" else max(finite, key=key))
    return best


def generation_figures(case: PerfCase, timed: list, walls: list[float], memory: devices.PeakMemory, model) -> dict:
    """The gated figures of one measurement: its timed rounds, their walls and the peak memory of
    its extra round (`model`: the device model, whose weights count on a CPU)."""
    intervals = [i for r in timed for i in r.frame_intervals_s]
    per_round_median = [timing.median(r.frame_intervals_s) for r in timed]
    per_round_p90 = [timing.percentile(r.frame_intervals_s, 90) for r in timed]
    ms = lambda xs: [x * 1e3 for x in xs]  # noqa: E731
    times = {
        "rtf": _figure([w / case.workload.audio_seconds for w in walls]),
        "ttfa_ms": _figure(ms([r.ttfa_s for r in timed])),
        "prefill_ms": _figure(ms([r.prefill_s for r in timed])),
        "frame_ms_median": {"value": timing.median(intervals) * 1e3, "cv": timing.cv(per_round_median)},
        "frame_ms_p90": {"value": timing.percentile(intervals, 90) * 1e3, "cv": timing.cv(per_round_p90)},
    }
    probes = [r.host_us for r in timed if r.host_us is not None]
    if probes:  # every time figure carries the host speed it was timed at (host_speed.py)
        for figure in times.values():
            figure["host_us"] = timing.median(probes)
    return {**times, "peak_memory_mb": {"value": _peak_memory(memory, model) / MIB, "cv": 0.0}}


def _peak_memory(memory: devices.PeakMemory, model) -> float:
    peak = timing.peak_memory_bytes(memory, model)
    return float(peak) if peak is not None else float("nan")
