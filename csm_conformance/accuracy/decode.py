"""Per-step agreement of a decode loop (runtime/decode_loop.py): the device's logits at every step
of the generation loop against the reference's, the device forced along the reference's codes.

Per step: cosine, relative error ‖Δ‖/‖ref‖, KL(ref‖dev) and argmax agreement (the reference's near
ties left out, as in metrics.logits_metrics). Per case, the figures the gate bounds: the worst
step's cosine and relative error, argmax agreement and mean KL over all steps, and the error
growth along the loop (the mean relative error of the last quarter of the steps over that of the
first quarter: a cache that drifts grows it, dtype noise does not). The backbone's codebook-0 steps
are named plainly, the depth decoder's with `@depth` (judged as the same kinds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from csm_conformance.accuracy import metrics


@dataclass
class StepSeries:
    """One figure per step of a loop (float64, CPU)."""

    cosine: torch.Tensor
    rel_error: torch.Tensor
    kl: torch.Tensor
    argmax_agreement: float

    def as_dict(self) -> dict:
        return {"cosine": self.cosine.tolist(), "rel_error": self.rel_error.tolist(), "kl_divergence": self.kl.tolist()}


def step_series(ref: torch.Tensor, dev: torch.Tensor, dtype: torch.dtype | None) -> StepSeries:
    """Per-step figures for logits [steps, ..., vocab]: a step's positions (the depth decoder's
    codebooks) are taken together, as one vector per step."""
    if ref.shape != dev.shape:
        raise ValueError(f"shape mismatch: reference {tuple(ref.shape)} vs device {tuple(dev.shape)}")
    a, b = ref.detach().to("cpu", torch.float64), dev.detach().to("cpu", torch.float64)
    steps, vocab = a.shape[0], a.shape[-1]
    flat_a, flat_b = a.reshape(steps, -1), b.reshape(steps, -1)
    cosine = torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=-1, eps=1e-30)
    norm = flat_a.norm(dim=-1)
    rel = (flat_b - flat_a).norm(dim=-1) / torch.where(norm > 0, norm, torch.ones_like(norm))
    rows_a, rows_b = a.reshape(-1, vocab), b.reshape(-1, vocab)
    log_p, log_q = torch.log_softmax(rows_a, dim=-1), torch.log_softmax(rows_b, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).reshape(steps, -1).mean(-1).clamp_min(0.0)
    same = rows_a.argmax(-1) == rows_b.argmax(-1)
    agreement = metrics._agreement(same, metrics.near_ties(rows_a, dtype))
    return StepSeries(cosine, rel, kl, agreement)


def error_growth(rel_error: torch.Tensor) -> float:
    """Mean relative error of the last quarter of the steps over the first quarter's (at least
    one step each); 1.0 when the first quarter has no error at all and neither has the last."""
    quarter = max(1, rel_error.numel() // 4)
    first, last = float(rel_error[:quarter].mean()), float(rel_error[-quarter:].mean())
    if first == 0.0:
        return 1.0 if last == 0.0 else float("inf")
    return last / first


def loop_figures(series: StepSeries, suffix: str = "") -> dict[str, float]:
    """The gated figures of one loop (metric names as METRICS registers them, `suffix` e.g. '@depth')."""
    return {
        f"worst_step_cosine{suffix}": float(series.cosine.min()),
        f"worst_step_rel_error{suffix}": float(series.rel_error.max()),
        f"argmax_agreement{suffix}": series.argmax_agreement,
        f"kl_divergence{suffix}": float(series.kl.mean()),
        f"error_growth{suffix}": error_growth(series.rel_error),
    }


def first_step_out(series: StepSeries, min_cosine: float, cosine_bound: float | None, rel_bound: float | None) -> tuple[int, str] | None:
    """(step, what) of the first step whose cosine is under the floor or its worst-step bound, or
    whose relative error is over its worst-step bound; None when every step is inside."""
    floor = max(min_cosine, cosine_bound if cosine_bound is not None else min_cosine)
    for step in range(series.cosine.numel()):
        cos, rel = float(series.cosine[step]), float(series.rel_error[step])
        if not cos >= floor:
            rule = "the cosine floor" if floor == min_cosine else "its worst-step bound"
            return step, f"cosine {cos:.7f} < {floor:.7f} ({rule})"
        if rel_bound is not None and not rel <= rel_bound:
            return step, f"rel_error {rel:.4g} > {rel_bound:.4g} (its worst-step bound)"
    return None
