"""Module-local errors: what each device module adds by itself, on the reference's own inputs.

The jump rule (rule.py) judges accumulated outputs, which is all a dump holds; a live run can
measure one more figure per module, and this module does: it records the reference's calls of the
hooked modules and replays them on the device's modules.

Local errors (live runs only): the accumulated error hides a fault that is small next to the
noise accumulated before it (in bfloat16 a 1 % weight error in one layer). So every hooked
device module is also run on the *reference's* inputs of the same call (teacher forcing), and its
output compared with the reference's: the error that module adds by itself. A module whose local
error exceeds JUMP_FACTOR x max(eps(float32), the median local error of its component) diverges
too (the median is the dtype's own noise: a clean bfloat16 module adds about half an eps). The
accuracy gate bounds the same figures per module (the module_local check); dumps hold outputs
only, so an offline compare uses the jump rule alone.
"""

from __future__ import annotations

import math

import torch

from csm_conformance.accuracy import metrics
from csm_conformance.accuracy.localize.hooks import _first_tensor, _hooked_calls, _rebuild, module_name
from csm_conformance.accuracy.localize.rule import _measure

# The captures (capture.py) compare accumulated outputs: each device module gets the device's own inputs,
# so its error includes everything before it. The local error below gives every device module the
# *reference's* inputs (cast to the device's dtype) and compares its output with the reference's
# output of the same call, so it measures what that module adds by itself. A perturbed weight or a
# matmul in lower precision shows up in that one module and nowhere else, however much bfloat16
# noise the modules before it accumulated. Inputs built outside the hooked modules (RoPE cos/sin,
# the attention mask, position ids) are the reference's too: a fault in building them (a RoPE
# scaling lost, a mask built wrong) is not local to any module, and is the end-to-end checks' and
# the jump rule's to find. (The planted mask:N fault shows here only because it is planted as a
# pre-hook of the attention modules themselves.)


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
    from csm_conformance.runtime import probes

    with recording_calls(reference.model, "backbone") as backbone:
        probes.backbone_logits(reference, case)
    with recording_calls(reference.model, "depth_decoder") as depth:
        probes.depth_decoder_logits(reference, case, codes)
    return {**replay_local(backbone, target), **replay_local(depth, target)}


def local_errors_decode(reference, target, codes: torch.Tensor) -> dict[str, float]:
    """Module-local errors of Mimi's decoder stages on the decode probe's seeded codes."""
    from csm_conformance.runtime import probes

    with recording_calls(reference.model, "codec") as codec:
        probes.mimi_decode(reference, codes)
    return replay_local(codec, target)
