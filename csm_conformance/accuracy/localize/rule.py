"""The divergence rule: which module, of two per-module captures, first left the baseline.

Live runs and offline dump comparisons judge captures the same way; this module holds that one
rule (the per-module figures, the jump threshold, the module-local threshold) and its rows, apart
from how the captures were taken and how the result is reported.

Why a jump rule and not a fixed per-module floor: in bfloat16 every module differs from float32 a
little, and the difference grows along the network (measured on the tiny model, CPU bf16 vs fp32:
1.7e-3 at the embeddings, 6e-3 at the first attention, up to 1.2e-2 at the last MLP). A fixed floor
tight enough to catch a fault deep in the network would flag clean early modules, and vice versa.
So a module *diverges* when its relative error exceeds

    JUMP_FACTOR x max(eps(dtype), largest relative error of the preceding modules of its component)

(or its output has NaN/Inf the reference's lacks, or its shape differs). eps(dtype) is the machine
epsilon of the coarser of the two sides (bfloat16 2^-7, float16 2^-10, float32 2^-23): below it a
difference is rounding noise of that dtype. The running maximum restarts at each component
(backbone, depth decoder, codec) because each starts from its own inputs. A module that repeats
the error it was fed does not jump; the module that adds a large error of its own does. The
equivalent cosine threshold, 1 - t^2/2 for a relative-error threshold t, is what an error of that
size perpendicular to the output gives; since 1 - cosine <= ~e^2/2 for any relative error e, the
cosine can never cross it first. It is reported and plotted, and gives no separate verdict (at
float32's tiny thresholds it would only judge the float64 rounding of the cosine itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from csm_conformance.accuracy import metrics
from csm_conformance.accuracy.localize.hooks import component_of
from csm_conformance.errors import UserError

JUMP_FACTOR = 2.0


class DumpError(UserError, ValueError):
    """A dump cannot be read or compared; the message is one line."""


def dtype_eps(dtype: str) -> float:
    try:
        return float(torch.finfo(getattr(torch, dtype)).eps)
    except (AttributeError, TypeError):
        raise DumpError(f"unknown dtype '{dtype}'") from None


def coarser(dtype_a: str, dtype_b: str) -> str:
    return dtype_a if dtype_eps(dtype_a) >= dtype_eps(dtype_b) else dtype_b


@dataclass
class Row:
    module: str
    component: str
    shape: list[int]
    cosine: float = math.nan
    rel_error: float = math.nan
    max_abs: float = math.nan
    threshold: float | None = None  # relative-error threshold; the cosine one is 1 - t^2/2
    jump: float | None = None  # rel_error / max(eps, running max): the quantity the rule bounds by JUMP_FACTOR
    verdict: str = "ok"  # ok | FIRST | over | FIRST local | local | nonfinite | shape | only in A | only in B
    nonfinite: int = 0  # NaN/Inf values in the candidate's output
    local_error: float | None = None  # live runs: rel err the module adds on the reference's inputs
    local_threshold: float | None = None  # JUMP_FACTOR x max(eps, median local error of its component)

    @property
    def diverged(self) -> bool:
        return self.verdict in ("FIRST", "over", "FIRST local", "local", "nonfinite", "shape")

    @property
    def cosine_threshold(self) -> float | None:
        return None if self.threshold is None else 1.0 - self.threshold**2 / 2.0

    def as_dict(self) -> dict:
        clean = lambda v: v if v is None or math.isfinite(v) else str(v)  # noqa: E731
        return {"module": self.module, "component": self.component, "shape": self.shape,
                "cosine": clean(self.cosine), "rel_error": clean(self.rel_error), "max_abs": clean(self.max_abs),
                "threshold_rel_error": clean(self.threshold),
                "threshold_cosine": clean(self.cosine_threshold), "jump": clean(self.jump), "nonfinite": self.nonfinite,
                "local_rel_error": clean(self.local_error), "local_threshold": clean(self.local_threshold),
                "verdict": self.verdict}


def _measure(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    a64, b64 = a.detach().to(torch.float64).flatten(), b.detach().to(torch.float64).flatten()
    diff = b64 - a64
    ref_norm = float(a64.norm())
    rel = float(diff.norm()) / ref_norm if ref_norm > 0 else (0.0 if torch.equal(a64, b64) else math.inf)
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    return metrics.cosine(a64, b64), rel, max_abs


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else 0.0


def compare_captures(baseline: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor], dtype: str,
                     jump_factor: float = JUMP_FACTOR, local: dict[str, float] | None = None,
                     local_bounds: dict[str, float] | None = None) -> list[Row]:
    """One row per module, in the baseline's execution order (modules only the candidate has
    come last), with the verdict of the jump rule described in the module docstring. With
    `local` (module-local errors of a live run, see replay_local), a module that passes the jump
    rule still diverges when the error it adds on the reference's inputs exceeds JUMP_FACTOR x
    max(eps(float32), the median local error of its component): a fault too small to show through the
    noise the modules before it accumulated still stands out among its peers. Where the gate has a
    stored bound for a module's local error (`local_bounds`, the module_local check's), that bound
    is its threshold instead: it was measured on this device and dtype, module by module."""
    eps = dtype_eps(dtype)
    local, local_bounds = local or {}, local_bounds or {}
    peers: dict[str, list[float]] = {}
    for name, error in local.items():
        if math.isfinite(error):
            peers.setdefault(component_of(name), []).append(error)
    # The peers' median is the dtype's own noise here (a clean bfloat16 module adds ~0.5 eps, a
    # perturbed one ~1.5 eps), so eps(dtype) would be too coarse a floor; float32's eps only keeps
    # an exact-match component (float32 on the CPU against itself) from flagging 1e-12.
    floor = dtype_eps("float32")
    local_limit = {c: jump_factor * max(floor, _median(v)) for c, v in peers.items()}
    rows: list[Row] = []
    running: dict[str, float] = {}
    first_seen = False
    for name in list(baseline) + [n for n in candidate if n not in baseline]:
        component = component_of(name)
        a, b = baseline.get(name), candidate.get(name)
        if a is None or b is None:
            rows.append(Row(name, component, list((a if a is not None else b).shape), verdict="only in A" if b is None else "only in B"))
            continue
        row = Row(name, component, list(a.shape))
        prior = running.get(component, 0.0)
        row.threshold = jump_factor * max(eps, prior)
        if a.shape != b.shape:
            row.verdict = "shape"
            row.shape = [list(a.shape), list(b.shape)]
        else:
            row.cosine, row.rel_error, row.max_abs = _measure(a, b)
            row.nonfinite = metrics.nonfinite_count(b)
            if row.nonfinite > metrics.nonfinite_count(a):
                row.verdict = "nonfinite"
            else:
                row.jump = row.rel_error / max(eps, prior)
                if not row.rel_error <= row.threshold:  # NaN included
                    row.verdict = "over"
            if math.isfinite(row.rel_error):
                running[component] = max(prior, row.rel_error)
            if name in local:
                row.local_error = local[name]
                row.local_threshold = local_bounds.get(name, local_limit.get(component, jump_factor * floor))
                if row.verdict == "ok" and not row.local_error <= row.local_threshold:  # NaN and inf included
                    row.verdict = "local"
        if row.diverged and not first_seen:
            first_seen = True
            if row.verdict in ("over", "local"):
                row.verdict = "FIRST" if row.verdict == "over" else "FIRST local"
        rows.append(row)
    return rows
