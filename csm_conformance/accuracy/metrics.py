"""Agreement metrics between a device output and the CPU float32 reference.

All arithmetic is done in float64 on the CPU so that the metric itself adds no error. Relative
error is norm-wise (‖Δ‖/‖ref‖): the element-wise form blows up wherever the reference is near
zero, which made the seed's "16.8 %" figures unreadable.

Each metric is registered once, in `METRICS`: its direction, its error form (a value mapped to a
non-negative error, 0 = perfect, so that bounds are recorded and compared the same way for every
metric), the floor a recorded bound may never be tighter than, and its console column. The bounds,
the gate, the console table and the verdict all read it, so a new metric is its function and its
row here (then re-record the bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

_IDENTITY: Callable[[float], float] = lambda v: v  # noqa: E731
_ONE_MINUS: Callable[[float], float] = lambda v: 1.0 - v  # noqa: E731


@dataclass(frozen=True)
class Metric:
    better: str  # "higher" | "lower"
    to_error: Callable[[float], float]
    from_error: Callable[[float], float]
    floor: float  # in error form: the smallest error a recorded bound allows, so that a bound is never tighter than the metric's own resolution
    column: str  # the console table's column header
    fmt: str  # format spec of a value in the console table


# name -> Metric, in the console table's column order
METRICS: dict[str, Metric] = {
    # higher is better: error = 1 - value
    "cosine": Metric("higher", _ONE_MINUS, _ONE_MINUS, 1e-7, "cosine", ".7f"),
    "worst_position_cosine": Metric("higher", _ONE_MINUS, _ONE_MINUS, 1e-7, "worst_pos", ".7f"),
    # lower is better: the value is the error
    "rel_error": Metric("lower", _IDENTITY, _IDENTITY, 1e-6, "rel_err", ".3e"),
    "mae": Metric("lower", _IDENTITY, _IDENTITY, 1e-7, "mae", ".3e"),
    "max_abs_error": Metric("lower", _IDENTITY, _IDENTITY, 1e-6, "max_abs", ".3e"),
    "argmax_agreement": Metric("higher", _ONE_MINUS, _ONE_MINUS, 0.0, "argmax", ".4f"),
    "kl_divergence": Metric("lower", _IDENTITY, _IDENTITY, 1e-9, "kl", ".3e"),
    # SNR in dB: error = noise-to-signal power ratio; the floor is 90 dB
    "snr_db": Metric("higher", lambda v: 10.0 ** (-v / 10.0), lambda e: -10.0 * math.log10(e) if e > 0 else math.inf, 1e-9, "snr_db", ".2f"),
    "code_agreement": Metric("higher", _ONE_MINUS, _ONE_MINUS, 0.0, "codes", ".4f"),
    # the decode loop (accuracy/decode.py): its worst step, and how its error grows from the first
    # quarter of the steps to the last (a ratio near 1 when clean; its error form is the ratio itself)
    "worst_step_cosine": Metric("higher", _ONE_MINUS, _ONE_MINUS, 1e-7, "worst_step", ".7f"),
    "worst_step_rel_error": Metric("lower", _IDENTITY, _IDENTITY, 1e-6, "step_rel_err", ".3e"),
    "error_growth": Metric("lower", _IDENTITY, _IDENTITY, 0.05, "growth", ".3f"),
}


def kind(metric: str) -> str:
    """A metric qualified by what it measures, e.g. `rel_error@backbone_model.layers.0.mlp` (the
    module-local check, one figure per module), is judged as its kind, `rel_error`."""
    return metric.split("@", 1)[0]


def known(metric: str) -> bool:
    return kind(metric) in METRICS


def better(metric: str) -> str:
    """'higher' or 'lower'."""
    return METRICS[kind(metric)].better


def to_error(metric: str, value: float) -> float:
    return METRICS[kind(metric)].to_error(value)


def from_error(metric: str, error: float) -> float:
    return METRICS[kind(metric)].from_error(error)


def floor(metric: str) -> float:
    """The smallest error a recorded bound of this metric allows (0 for a metric not registered)."""
    entry = METRICS.get(kind(metric))
    return entry.floor if entry else 0.0


def formatted(metric: str, value: float) -> str:
    """A value as the console table shows it."""
    return format(value, METRICS[kind(metric)].fmt)


def is_within(metric: str, value: float, bound: float) -> bool:
    if math.isnan(value):
        return False
    return value >= bound if better(metric) == "higher" else value <= bound


def nonfinite_count(tensor: torch.Tensor) -> int:
    if not tensor.is_floating_point():
        return 0
    return int((~torch.isfinite(tensor)).sum())


def describe_nonfinite(tensor: torch.Tensor) -> str | None:
    """'3 NaN and 2 Inf of 1344 values' when the tensor has non-finite values, else None.

    NaN and Inf are told apart because they point at different causes: an Inf is an overflow
    (a float16 matmul, a missing scale), a NaN often follows from one (Inf - Inf, 0 * Inf)."""
    if not tensor.is_floating_point():
        return None
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    if not nan and not inf:
        return None
    return f"{nan} NaN and {inf} Inf of {tensor.numel()} values"


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def cosine(ref: torch.Tensor, dev: torch.Tensor) -> float:
    a, b = _f64(ref).flatten(), _f64(dev).flatten()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 1.0 if torch.equal(a, b) else 0.0
    return float((a @ b) / denom)


def near_ties(ref: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Positions [..., vocab] whose reference top-1/top-2 margin is inside the device dtype's
    resolution there (eps x the larger of the two logits): a device that computes in that dtype may
    rank them either way without being wrong, and another torch release does (one flip in 124
    positions on torch 2.6 against bounds of 1.0 recorded on 2.13). No position is a near tie for a
    float32 device's purposes below float32's own eps, and none when no dtype is given."""
    a = _f64(ref).reshape(-1, ref.shape[-1])
    if dtype is None or a.shape[-1] < 2:
        return torch.zeros(a.shape[0], dtype=torch.bool)
    top = a.topk(2, dim=-1).values
    resolution = torch.finfo(dtype).eps * top.abs().max(dim=-1).values
    return (top[:, 0] - top[:, 1]) <= resolution


def logits_metrics(ref: torch.Tensor, dev: torch.Tensor, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Metrics for logits shaped [..., vocab]: positions are all leading dims. With the device's
    `dtype`, argmax agreement leaves out the reference's near ties (see `near_ties`)."""
    a, b = _f64(ref), _f64(dev)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {tuple(a.shape)} vs device {tuple(b.shape)}")
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    diff = b2 - a2
    per_pos = torch.nn.functional.cosine_similarity(a2, b2, dim=-1, eps=1e-30)
    log_p = torch.log_softmax(a2, dim=-1)
    log_q = torch.log_softmax(b2, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    ref_norm = float(a2.norm())
    return {
        "cosine": cosine(a2, b2),
        "worst_position_cosine": float(per_pos.min()),
        "rel_error": float(diff.norm()) / ref_norm if ref_norm > 0 else float(diff.norm()),
        "mae": float(diff.abs().mean()),
        "max_abs_error": float(diff.abs().max()),
        "argmax_agreement": _agreement(a2.argmax(-1) == b2.argmax(-1), near_ties(a2, dtype)),
        "kl_divergence": max(float(kl), 0.0),
    }


def _agreement(same: torch.Tensor, ties: torch.Tensor) -> float:
    decided = ~ties
    return float(same[decided].double().mean()) if bool(decided.any()) else 1.0


def waveform_metrics(ref: torch.Tensor, dev: torch.Tensor) -> dict[str, float]:
    """Sample-aligned waveforms (the same codes decoded twice): SNR of the difference, and cosine."""
    a, b = _f64(ref).flatten(), _f64(dev).flatten()
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: reference {a.numel()} samples vs device {b.numel()}")
    noise = float(((b - a) ** 2).sum())
    signal = float((a**2).sum())
    snr = math.inf if noise == 0 else 10.0 * math.log10(max(signal, 1e-300) / noise)
    return {
        "snr_db": snr,
        "cosine": cosine(a, b),
        "max_abs_error": float((b - a).abs().max()) if a.numel() else 0.0,
    }


def rel_error(ref: torch.Tensor, dev: torch.Tensor) -> float:
    """Norm-wise ‖dev - ref‖ / ‖ref‖ of two tensors of one shape."""
    a, b = _f64(ref).flatten(), _f64(dev).flatten()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {tuple(ref.shape)} vs device {tuple(dev.shape)}")
    norm = float(a.norm())
    return float((b - a).norm()) / norm if norm > 0 else float((b - a).norm())


def code_agreement(ref: torch.Tensor, dev: torch.Tensor) -> dict[str, float]:
    if ref.shape != dev.shape:
        raise ValueError(f"shape mismatch: reference codes {tuple(ref.shape)} vs device {tuple(dev.shape)}")
    return {"code_agreement": float((ref.cpu() == dev.cpu()).double().mean())}
