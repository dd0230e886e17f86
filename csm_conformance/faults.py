"""Planted faults for the device model, so the suite can prove its gates are not blind.

Each fault is small and of a kind a real upgrade can cause. It is applied to the device model only
(after loading, before any test), so the CPU reference stays clean and the comparison must see it.

Specs (`--csm-fault`, repeatable):
  weight:<parameter name>[:<relative scale>]   multiply one tensor by (1 + scale * N(0, 1)), seed 0
  rope                                          drop the RoPE scaling (plain RoPE frequencies)
  nan:<module name>                             a NaN in one activation of that module's output
  sleep:<milliseconds>                          every frame takes that much longer (a host sleep)
  slowdown:<fraction>                           every frame takes that fraction longer than it did
  leak:<MiB>                                    every frame keeps that much more device memory alive

The performance faults hook the backbone's forward, which runs once per generated frame.
"""

from __future__ import annotations

import time

import torch

from . import devices


class FaultError(ValueError):
    """The fault spec cannot be applied; the message is one line."""


def _perturb_weight(model: torch.nn.Module, name: str, scale: float) -> str:
    from .tiny_model import canonical_name

    params = dict(model.named_parameters())
    if name not in params:  # accept checkpoint (4.x) names too, e.g. codec_model.decoder.layers.0...
        params.update({canonical_name(live): p for live, p in list(params.items())})
    if name not in params:
        near = [p for p in params if name.split(".")[-1] in p][:3]
        raise FaultError(f"fault weight:{name}: no such parameter (e.g. {', '.join(near) or 'see model.named_parameters()'})")
    param = params[name]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(param.shape, generator=generator).to(param.device, torch.float32)
    with torch.no_grad():
        param.copy_((param.float() * (1.0 + scale * noise)).to(param.dtype))
    return f"weight {name} perturbed by relative {scale:g}"


def _drop_rope_scaling(model: torch.nn.Module) -> str:
    changed = []
    for name, module in model.named_modules():
        if not name.endswith("rotary_emb") or not hasattr(module, "inv_freq"):
            continue
        inv = module.inv_freq
        dim = inv.numel() * 2
        config = getattr(module, "config", None)
        theta = None
        if config is not None:
            theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(config, "rope_theta", None)
        theta = float(theta or 500000.0)
        plain = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=inv.device) / dim))
        module.inv_freq = plain.to(inv.dtype)
        if hasattr(module, "original_inv_freq"):
            module.original_inv_freq = module.inv_freq
        changed.append(name)
    if not changed:
        raise FaultError("fault rope: the model has no rotary embedding module")
    return f"RoPE scaling dropped in {', '.join(changed)}"


def _nan_activation(model: torch.nn.Module, name: str) -> str:
    modules = dict(model.named_modules())
    if name not in modules:
        raise FaultError(f"fault nan:{name}: no such module")

    def hook(_module, _inputs, output):
        target = output[0] if isinstance(output, tuple) else output
        if torch.is_tensor(target) and target.is_floating_point():
            target.view(-1)[0] = float("nan")
        return output

    modules[name].register_forward_hook(hook)
    return f"NaN planted in the output of {name}"


def _number(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultError(f"fault {spec}: '{text}' is not a number") from None
    if not value > 0:
        raise FaultError(f"fault {spec}: the amount must be > 0")
    return value


def _per_frame_sleep(model: torch.nn.Module, seconds: float) -> None:
    model.backbone_model.register_forward_hook(lambda *_: time.sleep(seconds))


def _per_frame_slowdown(model: torch.nn.Module, fraction: float) -> None:
    """Sleep `fraction` of the time since the previous backbone call ended, i.e. of one frame."""
    state = {"last": None}
    device = str(next(model.parameters()).device)

    def hook(*_):
        devices.synchronize(device)
        now = time.perf_counter()
        if state["last"] is not None and now - state["last"] < 5.0:
            time.sleep(fraction * (now - state["last"]))
        state["last"] = time.perf_counter()

    model.backbone_model.register_forward_hook(hook)


def _per_frame_leak(model: torch.nn.Module, mib: float) -> None:
    kept: list[torch.Tensor] = []
    model._planted_leak = kept  # lives as long as the model
    elements = int(mib * 2**20 / 4)

    def hook(module, *_):
        device = next(module.parameters()).device
        kept.append(torch.ones(elements, dtype=torch.float32, device=device))  # ones: pages are touched

    model.backbone_model.register_forward_hook(hook)


def apply_fault(model: torch.nn.Module, spec: str) -> str:
    kind, _, rest = spec.partition(":")
    if kind == "weight":
        name, _, scale = rest.rpartition(":") if rest.count(":") else (rest, "", "")
        try:
            value = float(scale) if scale else 1e-2
        except ValueError:
            raise FaultError(f"fault {spec}: scale '{scale}' is not a number") from None
        return _perturb_weight(model, name or rest, value)
    if kind == "rope":
        return _drop_rope_scaling(model)
    if kind == "nan":
        return _nan_activation(model, rest)
    if kind == "sleep":
        ms = _number(spec, rest)
        _per_frame_sleep(model, ms / 1000.0)
        return f"every frame sleeps {ms:g} ms longer (backbone forward hook)"
    if kind == "slowdown":
        fraction = _number(spec, rest)
        _per_frame_slowdown(model, fraction)
        return f"every frame is {fraction:.0%} slower (backbone forward hook)"
    if kind == "leak":
        mib = _number(spec, rest)
        _per_frame_leak(model, mib)
        return f"every frame leaks {mib:g} MiB of device memory (backbone forward hook)"
    raise FaultError(f"unknown fault '{spec}': use weight:<param>[:<scale>], rope, nan:<module>, sleep:<ms>, slowdown:<fraction> or leak:<MiB>")
