"""What a pair of rounds is judged on: the figures of one round, each as a slowdown ratio.

Every figure is turned into "candidate / current, > 1 is worse", so one interval rule serves all:
times as they are, throughput (higher is better) inverted.
"""

from __future__ import annotations

import math

from csm_conformance.catalogue.workloads import FRAME_RATE_HZ

# figure -> (tolerance class, better, unit, which batch sizes it is judged at)
FIGURES = {
    "frame_ms_median": ("time", "lower", "ms", "any"),
    "frame_ms_p90": ("time", "lower", "ms", "any"),
    "ttfa_ms": ("time", "lower", "ms", "any"),
    "prefill_ms": ("time", "lower", "ms", "any"),
    "rtf": ("time", "lower", "", "single"),
    "throughput_fps": ("time", "higher", "frames/s", "batched"),
}


def figures_for(batch: int) -> list[str]:
    return [name for name, (_c, _b, _u, at) in FIGURES.items() if at == "any" or (at == "single") == (batch == 1)]


def round_figures(reply: dict) -> dict[str, float]:
    """A worker's round reply as figures (ms, RTF, frames/s)."""
    audio_s = reply["frames"] / FRAME_RATE_HZ
    return {
        "frame_ms_median": reply["frame_median_s"] * 1e3,
        "frame_ms_p90": reply["frame_p90_s"] * 1e3,
        "ttfa_ms": reply["ttfa_s"] * 1e3,
        "prefill_ms": reply["prefill_s"] * 1e3,
        "rtf": reply["wall_s"] / audio_s,
        "throughput_fps": reply["batch"] * reply["frames"] / reply["wall_s"],
    }


def log_slowdown(name: str, before: float, after: float) -> float:
    """log(candidate / current) as a slowdown: positive when the candidate is worse."""
    if not (before > 0 and after > 0 and math.isfinite(before) and math.isfinite(after)):
        return float("nan")
    ratio = math.log(after / before)
    return ratio if FIGURES[name][1] == "lower" else -ratio
