"""When an accuracy check fails: the first module whose output left the reference.

The accuracy gate compares final outputs, so it says *that* a stack diverges, not *where*. This
module hooks the named stages of CSM (the backbone's embeddings, each layer's attention and MLP,
final norm and codebook-0 head; the depth decoder's embeddings, input projector, layers, norm and
codebook heads; Mimi's upsample, decoder-transformer layers and decoder conv blocks), runs the very
inputs of the accuracy probes through the device model and the CPU float32 reference, and compares
every captured output (flattened, float64): cosine, norm-wise relative error, max |diff|.

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

Module keys are canonical (transformers 4.x checkpoint) names, e.g. `codec_model.upsample` on 5.x
too, so that dumps taken on two transformers versions compare key by key. A module that runs more
than once in a probe gets `#2`, `#3`, ... on its later calls.

Local errors (live runs only): the accumulated error above hides a fault that is small next to
the noise accumulated before it (in bfloat16 a 1 % weight error in one layer). So every hooked
device module is also run on the *reference's* inputs of the same call (teacher forcing), and its
output compared with the reference's: the error that module adds by itself. A module whose local
error exceeds JUMP_FACTOR x max(eps(float32), the median local error of its component) diverges
too (the median is the dtype's own noise: a clean bfloat16 module adds about half an eps). The
accuracy gate bounds the same figures per module (the module_local check); dumps hold outputs
only, so an offline compare uses the jump rule alone.

This is a diagnostic: it names a place. Pass and fail remain the accuracy gate's.

Offline: `python -m csm_conformance.localize compare DUMP_A DUMP_B [--output DIR]` compares two
dumps written with `--csm-dump` (A is the baseline) with the same rule; exit 0 when nothing
diverges, 1 when a module does, 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import math
import re
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import metrics

JUMP_FACTOR = 2.0
SCHEMA = 1
META_KEY = "csm_localize"

# Components in execution order; each pattern matches canonical module names.
COMPONENTS: dict[str, re.Pattern] = {
    "backbone": re.compile(r"^(embed_text_tokens|backbone_model\.embed_tokens|backbone_model\.layers\.\d+\.(self_attn|mlp)|backbone_model\.norm|lm_head)$"),
    "depth_decoder": re.compile(r"^depth_decoder\.(model\.(embed_tokens|inputs_embeds_projector|norm|layers\.\d+\.(self_attn|mlp))|codebooks_head)$"),
    "codec": re.compile(r"^codec_model\.(upsample|decoder_transformer\.layers\.\d+|decoder\.layers\.\d+)$"),
}


class DumpError(ValueError):
    """A dump cannot be read or compared; the message is one line."""


# ---- capture ---------------------------------------------------------------------------------
def module_name(live_name: str) -> str:
    """The canonical name of a live module (transformers 5 renamed Mimi's submodules)."""
    from .tiny_model import canonical_name

    return canonical_name(live_name + ".")[:-1]


def component_of(name: str) -> str:
    base = name.split("#", 1)[0]
    for component, pattern in COMPONENTS.items():
        if pattern.match(base):
            return component
    return "other"


def _first_tensor(output):
    """The primary output: attention layers return (output, weights), layers may return tuples."""
    if torch.is_tensor(output):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for item in values:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def capturing(model: torch.nn.Module, component: str):
    """While active, the outputs of `component`'s modules land in the yielded dict (CPU float32
    copies, in the order the modules ran). Modules without weights (ELU, Identity) are skipped."""
    return _hooked_calls(model, component, with_inputs=False)


def capture_prompt(loaded, case, codes: torch.Tensor, context_codec=None) -> dict[str, torch.Tensor]:
    """Backbone stages on the backbone-logits probe, then depth-decoder stages on the teacher-forced
    depth probe, with exactly the inputs the accuracy checks use."""
    from . import probes

    with capturing(loaded.model, "backbone") as backbone:
        probes.backbone_logits(loaded, case, context_codec=context_codec)
    with capturing(loaded.model, "depth_decoder") as depth:
        probes.depth_decoder_logits(loaded, case, codes, context_codec=context_codec)
    return {**backbone, **depth}


def capture_decode(loaded, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mimi decoder stages on the decode probe's seeded codes."""
    from . import probes

    with capturing(loaded.model, "codec") as codec:
        probes.mimi_decode(loaded, codes)
    return codec


def capture_case(session, case) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(reference, device) captures of one catalogue case of a loaded ConformanceSession."""
    from .cases import PromptCase

    if isinstance(case, PromptCase):
        codes = session.ref_codes(case)
        return (capture_prompt(session.reference, case, codes),
                capture_prompt(session.target, case, codes, context_codec=session.reference))
    codes = session.codec_codes(case)
    return capture_decode(session.reference, codes), capture_decode(session.target, codes)


# ---- module-local errors (teacher-forced) ------------------------------------------------------
# The captures above compare accumulated outputs: each device module gets the device's own inputs,
# so its error includes everything before it. The local error below gives every device module the
# *reference's* inputs (cast to the device's dtype) and compares its output with the reference's
# output of the same call, so it measures what that module adds by itself. A perturbed weight or a
# matmul in lower precision shows up in that one module and nowhere else, however much bfloat16
# noise the modules before it accumulated. Inputs built outside the hooked modules (RoPE cos/sin,
# the attention mask, position ids) are the reference's too: a fault in building them (a RoPE
# scaling lost, a mask built wrong) is not local to any module, and is the end-to-end checks' and
# the jump rule's to find. (The planted mask:N fault shows here only because it is planted as a
# pre-hook of the attention modules themselves.)

def _cache_types() -> tuple[type, ...]:
    try:
        from transformers.cache_utils import Cache

        return (Cache,)
    except ImportError:  # pragma: no cover - every supported transformers has it
        return ()


def _rebuild(container, items: list):
    return type(container)(*items) if hasattr(container, "_fields") else type(container)(items)  # namedtuples too


def _copy_inputs(obj, caches: tuple[type, ...]):
    """CPU copies of a module call's inputs. Every probe is one full-sequence forward, so the
    caches a call receives are empty: they are dropped (None), and the replay computes the same."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if caches and isinstance(obj, caches):
        return None
    if isinstance(obj, (tuple, list)):
        return _rebuild(obj, [_copy_inputs(o, caches) for o in obj])
    if isinstance(obj, dict):
        return {k: _copy_inputs(v, caches) for k, v in obj.items()}
    return obj


def _to_target(obj, device, dtype, key: str = ""):
    """Inputs for the device module: floating tensors in its dtype (an additive mask clamped to
    that dtype's range), integer and bool tensors as they are."""
    if torch.is_tensor(obj):
        if obj.is_floating_point():
            if "mask" in key:
                info = torch.finfo(dtype)
                obj = obj.clamp(info.min, info.max)
            return obj.to(device, dtype)
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return _rebuild(obj, [_to_target(o, device, dtype, key) for o in obj])
    if isinstance(obj, dict):
        return {k: _to_target(v, device, dtype, k) for k, v in obj.items()}
    return obj


def recording_calls(model: torch.nn.Module, component: str):
    """Like `capturing`, but each entry is (args, kwargs, output) of one call, on the CPU."""
    return _hooked_calls(model, component, with_inputs=True)


@contextmanager
def _hooked_calls(model: torch.nn.Module, component: str, with_inputs: bool):
    """Forward hooks on `component`'s modules with weights; each call with a floating-point output
    adds an entry under its module name (`#2`, `#3`, ... for later calls): the output as a CPU
    float32 copy, or (args, kwargs, output) with CPU copies of the inputs."""
    entries: dict[str, object] = {}
    counts: dict[str, int] = {}
    caches = _cache_types() if with_inputs else ()

    def recorder(name: str):
        def hook(_module, args, kwargs, output):
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            counts[name] = counts.get(name, 0) + 1
            key = name if counts[name] == 1 else f"{name}#{counts[name]}"
            out = tensor.detach().to("cpu", torch.float32, copy=True)
            entries[key] = (_copy_inputs(args, caches), _copy_inputs(kwargs, caches), out) if with_inputs else out

        return hook

    handles = []
    for live, module in model.named_modules():
        name = module_name(live)
        if COMPONENTS[component].match(name) and next(module.parameters(recurse=True), None) is not None:
            handles.append(module.register_forward_hook(recorder(name), with_kwargs=True))
    try:
        yield entries
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def replay_local(calls: dict[str, tuple], target) -> dict[str, float]:
    """{module: relative error of the target's module on the reference's inputs} (NaN when its
    output has NaN/Inf, inf when its shape differs or the target has no such module), in the
    order the reference ran them.

    What teacher forcing cannot see: inputs built outside the hooked modules (RoPE cos/sin, the
    attention mask, position ids) come from the reference, so a fault in how they are built is
    not local to any module here; the end-to-end checks and the jump rule judge those."""
    modules = {module_name(live): m for live, m in target.model.named_modules()}
    errors: dict[str, float] = {}
    for key, (args, kwargs, ref_out) in calls.items():
        module = modules.get(key.split("#", 1)[0])
        if module is None:
            errors[key] = math.inf
            continue
        out = _first_tensor(module(*_to_target(args, target.device, target.dtype),
                                   **_to_target(kwargs, target.device, target.dtype)))
        out = out.detach().to("cpu", torch.float32)
        if out.shape != ref_out.shape:
            errors[key] = math.inf
        elif metrics.nonfinite_count(out) > metrics.nonfinite_count(ref_out):
            errors[key] = math.nan
        else:
            errors[key] = _measure(ref_out, out)[1]
    return errors


def local_errors_prompt(reference, target, case, codes: torch.Tensor) -> dict[str, float]:
    """Module-local errors of the backbone (on the backbone-logits probe) and of the depth
    decoder (on the teacher-forced depth probe), with the accuracy checks' inputs."""
    from . import probes

    with recording_calls(reference.model, "backbone") as backbone:
        probes.backbone_logits(reference, case)
    with recording_calls(reference.model, "depth_decoder") as depth:
        probes.depth_decoder_logits(reference, case, codes)
    return {**replay_local(backbone, target), **replay_local(depth, target)}


def local_errors_decode(reference, target, codes: torch.Tensor) -> dict[str, float]:
    """Module-local errors of Mimi's decoder stages on the decode probe's seeded codes."""
    from . import probes

    with recording_calls(reference.model, "codec") as codec:
        probes.mimi_decode(reference, codes)
    return replay_local(codec, target)


# ---- comparison ------------------------------------------------------------------------------
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


@dataclass
class Localization:
    case: str
    dtype: str  # the dtype whose eps is the floor (the coarser side)
    baseline_label: str
    candidate_label: str
    rows: list[Row]
    jump_factor: float = JUMP_FACTOR
    notes: list[str] = field(default_factory=list)
    local_bounded: bool = False  # local thresholds are the gate's stored per-module bounds

    @property
    def first(self) -> Row | None:
        return next((r for r in self.rows if r.diverged), None)

    @property
    def largest_jump(self) -> Row | None:
        rows = [r for r in self.rows if r.jump is not None and math.isfinite(r.jump)]
        return max(rows, key=lambda r: r.jump) if rows else None

    @property
    def rule(self) -> str:
        local = ("its stored module_local bound" if self.local_bounded else
                 f"{self.jump_factor:g} x max(eps(float32), its component's median local_err)")
        return (f"a module diverges when its rel err > {self.jump_factor:g} x max(eps({self.dtype}) = {dtype_eps(self.dtype):.3g}, "
                f"the largest rel err of the preceding modules of its component), its output has NaN/Inf the "
                f"baseline's lacks, or its shape differs; in a live run also when the rel err it adds on the "
                f"reference's own inputs (local_err) > {local}")

    def summary(self) -> str:
        first = self.first
        if first is None:
            largest = self.largest_jump
            if largest is None or largest.jump == 0:
                return "first diverging module: none (every module's output is identical)"
            text = (f"first diverging module: none (largest jump: {largest.module}, rel err {largest.rel_error:.3g} = "
                    f"{largest.jump:.2f} x max(eps, running max)")
            local = [r for r in self.rows if r.local_error is not None and r.local_threshold and math.isfinite(r.local_error)]
            if local:
                top = max(local, key=lambda r: r.local_error / r.local_threshold)
                if self.local_bounded:
                    text += f"; largest local: {top.module}, {top.local_error / top.local_threshold:.2f} x its stored bound"
                else:
                    text += f"; largest local: {top.module}, {self.jump_factor * top.local_error / top.local_threshold:.2f} x its component's median"
            return text + f"; diverging takes > {self.jump_factor:g})"
        if first.verdict == "shape":
            return f"first diverging module: {first.module} (shape {first.shape[0]} vs {first.shape[1]})"
        if first.verdict == "nonfinite":
            return f"first diverging module: {first.module} ({first.nonfinite} NaN/Inf values in its output)"
        if first.verdict == "FIRST local":
            over = "its stored bound" if self.local_bounded else f"{self.jump_factor:g} x its component's median"
            return (f"first diverging module: {first.module} (on the reference's inputs it adds rel err {first.local_error:.3g}, "
                    f"over {first.local_threshold:.3g} = {over})")
        return f"first diverging module: {first.module} (cosine {first.cosine:.6g}, rel err {first.rel_error:.3g})"

    def table(self) -> list[str]:
        head = ["#", "module", "shape", "cosine", "1-cosine", "rel_err", "max_abs", "rel_thresh", "jump", "local_err", "local_thresh", "verdict"]
        lines = []
        for i, r in enumerate(self.rows):
            shape = "x".join(map(str, r.shape)) if r.shape and isinstance(r.shape[0], int) else " vs ".join("x".join(map(str, s)) for s in r.shape)
            lines.append([str(i), r.module, shape,
                          "-" if math.isnan(r.cosine) else f"{r.cosine:.8f}",
                          "-" if math.isnan(r.cosine) else f"{max(0.0, 1.0 - r.cosine):.2e}",
                          "-" if math.isnan(r.rel_error) else f"{r.rel_error:.3e}",
                          "-" if math.isnan(r.max_abs) else f"{r.max_abs:.3e}",
                          "-" if r.threshold is None else f"{r.threshold:.3e}",
                          "-" if r.jump is None else f"{r.jump:.2f}",
                          "-" if r.local_error is None else f"{r.local_error:.3e}",
                          "-" if r.local_threshold is None else f"{r.local_threshold:.3e}",
                          r.verdict])
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return [f"localize {self.case}: {self.candidate_label}  vs  {self.baseline_label} (baseline)",
                f"rule: {self.rule}", *[f"note: {n}" for n in self.notes], "",
                fmt(head), fmt(["-" * w for w in widths]), *[fmt(r) for r in lines], "", self.summary()]

    def as_dict(self) -> dict:
        first = self.first
        return {"case": self.case, "baseline": self.baseline_label, "candidate": self.candidate_label,
                "dtype": self.dtype, "eps": dtype_eps(self.dtype), "jump_factor": self.jump_factor, "rule": self.rule,
                "first_diverging": first.module if first else None, "summary": self.summary(), "notes": self.notes,
                "rows": [r.as_dict() for r in self.rows]}

    def plot_png(self) -> bytes:
        """1 - cosine and relative error per module (log scale), their thresholds, and the first
        diverging module; exact agreement (0) is drawn at the bottom of the axis."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if r.threshold is not None]
        x = list(range(len(rows)))
        fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.32 * len(rows) + 3), 8), sharex=True)
        series = [
            (axes[0], "1 - cosine", [1.0 - r.cosine for r in rows], [r.cosine_threshold for r in rows], True),
            (axes[1], "relative error", [r.rel_error for r in rows], [r.threshold for r in rows], False),
        ]
        first = self.first
        for ax, label, values, thresholds, is_cos in series:
            finite = [v for v in values + [1.0 - t if is_cos else t for t in thresholds] if math.isfinite(v) and v > 0]
            bottom = min(finite) / 10 if finite else 1e-12
            shown = [v if math.isfinite(v) and v > 0 else (bottom if v == 0 or (math.isfinite(v) and v <= 0) else math.nan) for v in values]
            colors = ["#c0392b" if r.diverged else "#2e86c1" for r in rows]
            ax.scatter(x, shown, c=colors, zorder=3, s=22)
            ax.plot(x, shown, color="#2e86c1", linewidth=0.8, alpha=0.6)
            ax.step(x, [1.0 - t if is_cos else t for t in thresholds], where="mid", color="#e67e22", linestyle="--",
                    label=("cosine threshold, t²/2 (information)" if is_cos else f"threshold t = {self.jump_factor:g} x max(eps, running max)"))
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    ax.annotate("NaN/Inf", (i, bottom), color="#c0392b", fontsize=7, rotation=90)
            if not is_cos and any(r.local_error is not None for r in rows):
                local = [r.local_error if r.local_error is not None and r.local_error > 0 else math.nan for r in rows]
                ax.scatter(x, local, marker="x", color="#27ae60", zorder=4, s=22, label="local rel err (on the reference's inputs)")
                ax.step(x, [r.local_threshold if r.local_threshold is not None else math.nan for r in rows], where="mid",
                        color="#27ae60", linestyle=":", label="local threshold")
            if first is not None and first in rows:
                ax.axvline(rows.index(first), color="#c0392b", linewidth=1.2, alpha=0.7)
            ax.set_yscale("log")
            ax.set_ylim(bottom=bottom)
            ax.set_ylabel(label)
            ax.grid(True, which="both", axis="y", alpha=0.25)
            ax.legend(loc="upper left", fontsize=8)
        boundaries = [i for i in range(1, len(rows)) if rows[i].component != rows[i - 1].component]
        for ax in axes:
            for b in boundaries:
                ax.axvline(b - 0.5, color="#7f8c8d", linewidth=0.8, linestyle=":")
        axes[1].set_xticks(x)
        axes[1].set_xticklabels([r.module for r in rows], rotation=75, ha="right", fontsize=7)
        title = [f"{self.case}: {self.summary()}", self.candidate_label, f"vs {self.baseline_label}"]
        axes[0].set_title("\n".join(textwrap.fill(t, 110) for t in title), fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return buffer.getvalue()

    def write(self, directory: Path, stem: str) -> list[Path]:
        """<stem>.txt (table), <stem>.png (plot), <stem>.json (every figure) under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{stem}.txt", directory / f"{stem}.png", directory / f"{stem}.json"]
        paths[0].write_text("\n".join(self.table()) + "\n", encoding="utf-8")
        paths[1].write_bytes(self.plot_png())
        paths[2].write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return paths


def localize(case: str, baseline: dict, candidate: dict, dtype: str, baseline_label: str, candidate_label: str,
             jump_factor: float = JUMP_FACTOR, local: dict[str, float] | None = None,
             local_bounds: dict[str, float] | None = None) -> Localization:
    return Localization(case, dtype, baseline_label, candidate_label,
                        compare_captures(baseline, candidate, dtype, jump_factor, local, local_bounds), jump_factor,
                        local_bounded=bool(local_bounds))


# ---- live runs and dumps ---------------------------------------------------------------------
def _side_meta(session, side: str, case_id: str, kind: str, order: list[str]) -> dict:
    meta = session.run_meta()
    if side == "reference":
        meta["device"] = {"device": "cpu", "type": "cpu", "name": "cpu", "spec": "cpu", "count": 1}
        meta["dtype"] = "float32"
    return {"schema": SCHEMA, "side": side, "case": case_id, "kind": kind, "model": meta["model"],
            "device": meta["device"], "dtype": meta["dtype"], "versions": meta["versions"],
            "faults": list(session.fault_notes) if side == "device" else [], "order": order}


def _label(meta: dict) -> str:
    versions = meta.get("versions") or {}
    stack = ", ".join(f"{k} {versions[k]}" for k in ("torch", "torch_npu", "transformers") if k in versions)
    device = (meta.get("device") or {}).get("device", "?")
    faults = " [PLANTED FAULT]" if meta.get("faults") else ""
    return f"{meta.get('side', '?')} {device} {meta.get('dtype', '?')} ({stack}){faults}"


def localize_case(session, case) -> tuple[Localization, dict]:
    """Capture and compare one case live; returns the localization and the captures with their
    metadata ({side: (tensors, meta)}) for `save_dump`."""
    reference, device = capture_case(session, case)
    kind = "prompt" if hasattr(case, "text") else "decode"
    sides = {"reference": (reference, _side_meta(session, "reference", case.id, kind, list(reference))),
             "device": (device, _side_meta(session, "device", case.id, kind, list(device)))}
    notes = [f"planted fault: {n}" for n in session.fault_notes]
    try:
        local = session.module_local_errors(case)
    except Exception as exc:  # the jump rule still has its say
        local = None
        notes.append(f"local errors could not be computed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
    loc = localize(case.id, reference, device, coarser("float32", session.dtype_name),
                   _label(sides["reference"][1]), _label(sides["device"][1]), local=local,
                   local_bounds=session.module_local_bounds(case.id) if local else None)
    loc.notes.extend(notes)
    return loc, sides


def save_dump(directory: Path, sides: dict) -> list[Path]:
    """<dir>/reference.safetensors and device.safetensors (keys: module names, float32; the
    metadata key `csm_localize` holds the side's JSON metadata with the module order), and
    dump.json, a readable copy of both sides' metadata."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    sidecar = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "sides": {}}
    for side, (tensors, meta) in sides.items():
        path = directory / f"{side}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={META_KEY: json.dumps(meta)})
        tmp.replace(path)
        paths.append(path)
        sidecar["sides"][side] = {"file": path.name, **{k: v for k, v in meta.items() if k != "order"},
                                  "modules": [{"name": n, "component": component_of(n), "shape": list(tensors[n].shape)} for n in meta["order"]]}
        sidecar.setdefault("case", meta["case"])
    (directory / "dump.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return paths + [directory / "dump.json"]


def load_side(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """One side of a dump: a dump directory means its device side; a .safetensors file is that side."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "device.safetensors"
    if not path.exists():
        raise DumpError(f"{path} does not exist (give a dump directory <dump>/<case> or one of its .safetensors files)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for garbled files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DumpError(f"{path} is not a readable safetensors dump: {first}") from None
    if raw is None:
        raise DumpError(f"{path} has no '{META_KEY}' metadata: it was not written by --csm-dump")
    try:
        meta = json.loads(raw)
        order = list(meta["order"])
        dtype_eps(meta["dtype"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DumpError(f"{path}: its '{META_KEY}' metadata is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in order if k not in tensors]
    if missing:
        raise DumpError(f"{path}: module {missing[0]} is listed in its metadata but has no tensor")
    return {k: tensors[k] for k in order}, meta


def compare_dumps(path_a: str | Path, path_b: str | Path) -> Localization:
    (a, meta_a), (b, meta_b) = load_side(path_a), load_side(path_b)
    if meta_a.get("case") != meta_b.get("case"):
        raise DumpError(f"the dumps are of different cases: {meta_a.get('case')} vs {meta_b.get('case')}")
    digest_a = (meta_a.get("model") or {}).get("weights_digest")
    digest_b = (meta_b.get("model") or {}).get("weights_digest")
    if digest_a and digest_b and digest_a != digest_b:
        raise DumpError(f"the dumps are of different weights: {digest_a} vs {digest_b}")
    if not set(a) & set(b):
        raise DumpError("the dumps share no module name")
    loc = localize(meta_a["case"], a, b, coarser(meta_a["dtype"], meta_b["dtype"]), "A: " + _label(meta_a), "B: " + _label(meta_b))
    loc.notes.extend(f"{who} planted fault: {n}" for who, m in (("A", meta_a), ("B", meta_b)) for n in m.get("faults") or [])
    return loc


# ---- command line ----------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like the dump errors
        self.exit(2, f"error: csm_conformance.localize: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m csm_conformance.localize",
                     description="Compare two per-module dumps written with --csm-dump and name the first diverging module.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="compare dump B against dump A (the baseline)")
    cmp.add_argument("dump_a", help="baseline: a dump directory <dump>/<case> (its device side) or one of its .safetensors files")
    cmp.add_argument("dump_b", help="candidate, same forms")
    cmp.add_argument("--output", help="also write compare.txt, compare.png and compare.json here")
    args = parser.parse_args(argv)
    try:
        loc = compare_dumps(args.dump_a, args.dump_b)
        print("\n".join(loc.table()))
        if args.output:
            for path in loc.write(Path(args.output), "compare"):
                print(f"report: {path}")
    except DumpError as exc:
        print(f"error: csm_conformance.localize: {exc}", file=sys.stderr)
        return 2
    return 1 if loc.first is not None else 0


if __name__ == "__main__":
    sys.exit(main())
