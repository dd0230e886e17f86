"""Planted faults for the device model, so the suite can prove its gates are not blind.

Each fault is small and of a kind a real upgrade can cause. It is applied to the device model only
(after loading, before any test), so the CPU reference stays clean and the comparison must see it.

Specs (`--csm-fault`, repeatable):
  weight:<parameter name>[:<relative scale>]   multiply one tensor by (1 + scale * N(0, 1)), seed 0
  rope                                          drop the RoPE scaling (plain RoPE frequencies)
  nan:<module name>                             a NaN in one activation of that module's output
  fp16:<Linear module name>                     that Linear's matmul computed in float16 (inputs, weight
                                                and bias cast to float16, the result cast back)
  mask:<offset>                                 the backbone's causal attention mask shifted by <offset>
                                                positions (+1: every query also sees the next, future
                                                token; -1: every query but the first no longer sees
                                                itself)
  sleep:<milliseconds>                          every frame takes that much longer (a host sleep)
  slowdown:<fraction>                           every frame takes that fraction longer than it did
  transient:<milliseconds>:<generations>        every frame of the first <generations> generations sleeps
                                                that much longer, then none (a burst of interference
                                                on a shared machine, which the gate's confirmation
                                                measurement must not mistake for a regression)
  leak:<MiB>                                    every frame keeps that much more device memory alive
  raise:<frame>                                 generation raises PlantedFaultError at that frame
  hang:<frame>                                  generation blocks at that frame (pytest-timeout's case)
  xversion:<rmsnorm|mimi>[:<relative>]          a cross-version numeric change: transformers' CSM RMSNorm
                                                (or Mimi's Conv1d) output scaled by 1 + relative (default
                                                1e-3), patched in the class, so the CPU reference changes
                                                with the device, as when a release changes a function:
                                                only the golden drift gate can see it

The performance faults hook the backbone's forward, which runs once per generated frame.
Every fault's note (what apply_fault returns) names the module it was planted in.
"""

from __future__ import annotations

import time

import torch

from . import clock, devices


class FaultError(ValueError):
    """The fault spec cannot be applied; the message is one line."""


class PlantedFaultError(RuntimeError):
    """Raised by the `raise:<frame>` fault, so a report can tell it from a real crash."""


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


def _fp16_matmul(model: torch.nn.Module, name: str) -> str:
    """Recompute one Linear in float16, the numeric effect of a kernel that silently runs in half
    precision: 11-bit mantissa and a range that ends at 65504. Against a float32 device model it
    is a precision loss of a few 1e-4 (3.6e-4 relative at the tiny model's MLP output); against a
    bfloat16 one it shows only where values leave float16's range (bfloat16 values are exact in
    float16 within it)."""
    modules = dict(model.named_modules())
    module = modules.get(name)
    if not isinstance(module, torch.nn.Linear):
        near = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in n][:3]
        what = "no such module" if module is None else f"{type(module).__name__} is not a Linear"
        raise FaultError(f"fault fp16:{name}: {what} (e.g. {', '.join(near) or 'a q_proj, up_proj or down_proj'})")

    def hook(mod, inputs, output):
        half = lambda t: None if t is None else t.to(torch.float16)  # noqa: E731
        return torch.nn.functional.linear(half(inputs[0]), half(mod.weight), half(mod.bias)).to(output.dtype)

    module.register_forward_hook(hook)
    return f"{name} computes its matmul in float16 (forward hook)"


def _cache_length(cache, layer_idx: int) -> tuple[int, int | None]:
    """(tokens already in this layer's cache, the cache's fixed length if it is static, else None)."""
    if cache is None:
        return 0, None
    seen = int(cache.get_seq_length(layer_idx))
    fixed = None
    if hasattr(cache, "get_max_cache_shape"):
        try:
            shape = cache.get_max_cache_shape(layer_idx)
        except TypeError:
            shape = cache.get_max_cache_shape()
        fixed = int(shape) if shape is not None and int(shape) > 0 else None
    return seen, fixed


def _shifted_mask(kwargs: dict, hidden: torch.Tensor, offset: int, implementation: str, layer_idx: int):
    """The mask the attention would have had, with its causal edge moved by `offset`: key j is
    visible to the query at position p when j <= p + offset. A query left with no key at all (p <
    -offset) keeps key 0, so the fault stays numeric rather than a NaN. Keys that no query could
    see (padding, unfilled static-cache slots) stay hidden."""
    batch, q_len = hidden.shape[0], hidden.shape[1]
    old = kwargs.get("attention_mask")
    cache = kwargs.get("cache", kwargs.get("past_key_values", kwargs.get("past_key_value")))
    seen, fixed = _cache_length(cache, layer_idx)
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = kwargs.get("cache_position")
    if positions is None:
        positions = torch.arange(seen, seen + q_len, device=hidden.device)
    positions = positions.reshape(-1, q_len)[:, :, None].to(hidden.device)  # [B or 1, q, 1]
    if torch.is_tensor(old) and old.dim() == 4:
        kv_len = old.shape[-1]
        allowed = old if old.dtype == torch.bool else old == 0
        valid = allowed.any(dim=-2, keepdim=True)  # [B, 1, 1, kv]
    else:
        kv_len = fixed or seen + q_len
        valid = (torch.arange(kv_len, device=hidden.device) < seen + q_len)[None, None, None, :]
    keys = torch.arange(kv_len, device=hidden.device)[None, None, :]
    shifted = (keys <= positions + offset) | ((positions + offset < 0) & (keys == 0))  # [B or 1, q, kv]
    mask = (shifted[:, None] & valid).expand(batch, 1, q_len, kv_len)
    if implementation == "eager":
        additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device)
        return additive.masked_fill(~mask, torch.finfo(hidden.dtype).min)
    return mask


def _shift_attention_mask(model: torch.nn.Module, offset: int) -> str:
    """An off-by-one in the causal mask of every backbone attention layer, planted with a forward
    pre-hook that replaces the `attention_mask` the layer receives (so it works whether
    transformers built a mask or left causality to SDPA's is_causal)."""
    implementation = getattr(model.backbone_model.config, "_attn_implementation", None) or "eager"
    if implementation not in ("sdpa", "eager"):
        raise FaultError(f"fault mask:{offset}: needs sdpa or eager attention, the model uses {implementation}")
    layers = [(n, m) for n, m in model.backbone_model.named_modules() if n.endswith("self_attn")]
    if not layers:
        raise FaultError(f"fault mask:{offset}: the backbone has no self_attn modules")

    def pre_hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        kwargs["attention_mask"] = _shifted_mask(kwargs, hidden, offset, implementation, getattr(module, "layer_idx", 0))
        return args, kwargs

    for _, module in layers:
        module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    effect = f"also sees the next {offset} (future) token(s)" if offset > 0 else f"misses the last {-offset} token(s) it should see, itself included"
    return (f"causal mask shifted by {offset:+d} in backbone_model.layers.*.self_attn ({len(layers)} layers, "
            f"{implementation}): every query {effect}")


def _number(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultError(f"fault {spec}: '{text}' is not a number") from None
    if not value > 0:
        raise FaultError(f"fault {spec}: the amount must be > 0")
    return value


def _per_frame_sleep(model: torch.nn.Module, seconds: float) -> None:
    model.backbone_model.register_forward_hook(lambda *_: _wait(seconds))


def _wait(seconds: float) -> None:
    """Hold the host for `seconds`, to a few microseconds. time.sleep alone overshoots by 50-100 us
    (timer slack and the scheduler), which on a 6 ms frame turned a planted 2 % into a measured 5 %:
    sleep all but the last millisecond, spin through the rest."""
    deadline = time.perf_counter() + seconds
    if seconds > 2e-3:
        time.sleep(seconds - 1e-3)
    while time.perf_counter() < deadline:
        pass


def _positions(output) -> int | None:
    """Positions a backbone call computed (None if its output is not a [batch, positions, ...]
    tensor): 1 for a decode step, more for the prompt, which starts a generation."""
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    return int(hidden.shape[1]) if torch.is_tensor(hidden) and hidden.dim() >= 2 else None


def _per_frame_slowdown(model: torch.nn.Module, fraction: float, every_other: bool = False):
    """Each decode frame waits `fraction` of its own duration: the time from the end of the
    previous backbone call to the end of this one (the depth decoder's 31 steps, then this
    backbone step). A prefill (more than one position) starts a generation and waits nothing, so
    the gap between two rounds, or the set-up before the first, is never counted as a frame.
    `every_other`: only the 1st, 3rd, ... decode call of a generation waits (ab/planted.py)."""
    state = {"last": None, "calls": 0}
    device = str(next(model.parameters()).device)

    def hook(_module, _inputs, output):
        devices.synchronize(device)
        now = clock.now()  # less any wait for the other side's turn (frame-interleaved A/B)
        if _positions(output) == 1 and state["last"] is not None:
            state["calls"] += 1
            if not every_other or state["calls"] % 2 == 1:
                _wait(fraction * (now - state["last"]))
        else:
            state["calls"] = 0
        state["last"] = clock.now()

    return model.backbone_model.register_forward_hook(hook)


def _transient_sleep(model: torch.nn.Module, seconds: float, generations: int) -> None:
    state = {"started": 0}

    def hook(_module, _inputs, output):
        if _positions(output) not in (None, 1):
            state["started"] += 1  # a prefill: a new generation
        if state["started"] <= generations:
            _wait(seconds)

    model.backbone_model.register_forward_hook(hook)


def _per_frame_leak(model: torch.nn.Module, mib: float) -> None:
    kept: list[torch.Tensor] = []
    model._planted_leak = kept  # lives as long as the model
    elements = int(mib * 2**20 / 4)

    def hook(module, *_):
        device = next(module.parameters()).device
        kept.append(torch.ones(elements, dtype=torch.float32, device=device))  # ones: pages are touched

    model.backbone_model.register_forward_hook(hook)


def _at_frame(model: torch.nn.Module, frame: int, action) -> None:
    """Run `action` on the backbone call that computes frame `frame` (1-based) of each generation.
    The call count restarts whenever more than 5 s passed since the previous call (a new round)."""
    state = {"calls": 0, "last": 0.0}

    def hook(*_):
        now = time.perf_counter()
        state["calls"] = 1 if now - state["last"] > 5.0 else state["calls"] + 1
        state["last"] = now
        if state["calls"] == frame:
            action()

    model.backbone_model.register_forward_hook(hook)


def _raise_at(frame: int) -> None:
    raise PlantedFaultError(f"planted fault: generation raised at frame {frame} (backbone forward)")


def _hang_at(frame: int) -> None:
    while True:  # until pytest-timeout (or the user) ends it
        time.sleep(1.0)


def _cross_version_change(model: torch.nn.Module, target: str, relative: float) -> str:
    class_names = {"rmsnorm": "CsmRMSNorm", "mimi": "MimiConv1d"}  # the same names on 4.x and 5.x
    if target not in class_names:
        raise FaultError(f"fault xversion:{target}: use xversion:rmsnorm or xversion:mimi[:<relative>]")
    cls = next((type(m) for m in model.modules() if type(m).__name__ == class_names[target]), None)
    if cls is None:
        raise FaultError(f"fault xversion:{target}: the model has no {class_names[target]} module")
    original = cls.forward
    if getattr(original, "_csm_xversion", False):
        raise FaultError(f"fault xversion:{target} is planted twice")

    def forward(self, *args, **kwargs):
        return original(self, *args, **kwargs) * (1.0 + relative)

    forward._csm_xversion = True
    cls.forward = forward
    return (f"transformers' {cls.__module__}.{cls.__name__}.forward scales its output by 1 + {relative:g} in this process "
            "(reference and device alike: a cross-version numeric change)")


def apply_fault(model: torch.nn.Module, spec: str) -> str:
    kind, _, rest = spec.partition(":")
    if kind == "xversion":
        target, _, relative = rest.partition(":")
        return _cross_version_change(model, target, _number(spec, relative) if relative else 1e-3)
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
    if kind == "fp16":
        return _fp16_matmul(model, rest)
    if kind == "mask":
        try:
            offset = int(rest)
        except ValueError:
            raise FaultError(f"fault {spec}: the offset must be a whole number of positions, e.g. mask:1 or mask:-1") from None
        if offset == 0:
            raise FaultError(f"fault {spec}: an offset of 0 changes nothing; use mask:1 or mask:-1")
        return _shift_attention_mask(model, offset)
    if kind == "sleep":
        ms = _number(spec, rest)
        _per_frame_sleep(model, ms / 1000.0)
        return f"every frame sleeps {ms:g} ms longer (backbone forward hook)"
    if kind == "slowdown":
        fraction = _number(spec, rest)
        _per_frame_slowdown(model, fraction)
        return f"every frame is {fraction:.0%} slower (backbone forward hook)"
    if kind == "transient":
        ms_text, _, count_text = rest.partition(":")
        ms, count = _number(spec, ms_text), _number(spec, count_text or "x")
        if count != int(count):
            raise FaultError(f"fault {spec}: the number of generations must be a whole number")
        _transient_sleep(model, ms / 1000.0, int(count))
        return f"every frame of the first {int(count)} generations sleeps {ms:g} ms longer (backbone forward hook)"
    if kind == "leak":
        mib = _number(spec, rest)
        _per_frame_leak(model, mib)
        return f"every frame leaks {mib:g} MiB of device memory (backbone forward hook)"
    if kind in ("raise", "hang"):
        frame = _number(spec, rest)
        if frame != int(frame):
            raise FaultError(f"fault {spec}: the frame must be a whole number")
        action = _raise_at if kind == "raise" else _hang_at
        _at_frame(model, int(frame), lambda: action(int(frame)))
        return f"generation {'raises' if kind == 'raise' else 'hangs'} at frame {int(frame)} (backbone forward hook)"
    raise FaultError(f"unknown fault '{spec}': use weight:<param>[:<scale>], rope, nan:<module>, fp16:<Linear>, mask:<offset>, "
                     "sleep:<ms>, slowdown:<fraction>, transient:<ms>:<generations>, leak:<MiB>, raise:<frame>, hang:<frame> "
                     "or xversion:<rmsnorm|mimi>[:<relative>]")
