"""Numeric faults: a change in what the device model computes, which the accuracy gate (or, for
`xversion`, the golden drift gate) must see. Each returns its note, naming the module it was
planted in.
"""

from __future__ import annotations

import torch

from csm_conformance.faults.errors import FaultError


def _perturb_weight(model: torch.nn.Module, name: str, scale: float) -> str:
    from csm_conformance.runtime.tiny_model import canonical_name

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


def _decode_step_attention(model: torch.nn.Module, factor: float) -> str:
    """Every backbone attention output scaled by `factor` in cached decode steps only (one query
    position), the prefill and every uncached forward untouched: a fault in the decode path (a
    kernel chosen for query length 1, a cache read) that only the generation loop runs. A forward
    hook that keeps no state, so a compiled decode step traces it like any other."""
    layers = [(n, m) for n, m in model.backbone_model.named_modules() if n.endswith("self_attn")]
    if not layers:
        raise FaultError(f"fault decode_attn:{factor:g}: the backbone has no self_attn modules")

    def hook(_module, args, kwargs, output):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None or hidden.shape[1] != 1:
            return output
        if isinstance(output, tuple):
            return (output[0] * factor, *output[1:])
        return output * factor

    for _, module in layers:
        module.register_forward_hook(hook, with_kwargs=True)
    return (f"backbone attention output x {factor:g} in cached decode steps (query length 1) in "
            f"backbone_model.layers.*.self_attn ({len(layers)} layers); prefill untouched")


def _cache_path(relative: float) -> str:
    """The values a KV cache hands back in decode steps (one new position) scaled by 1 + relative,
    patched in transformers' cache classes for the whole process: the reference's loop carries it
    as the device's does, as a cache bug of the stack would. Prefill and every uncached forward are
    untouched, so only the reference's own cache-consistency check (cached against uncached) and
    the golden decode loop can see it."""
    from transformers import cache_utils

    classes = [cls for cls in vars(cache_utils).values()
               if isinstance(cls, type) and issubclass(cls, cache_utils.Cache) and "update" in vars(cls)]
    if not classes:
        raise FaultError("fault cache_path: transformers.cache_utils has no Cache.update to patch")
    if any(getattr(cls.update, "_csm_cache_path", False) for cls in classes):
        raise FaultError("fault cache_path is planted twice")
    for cls in classes:
        original = cls.update

        def update(self, key_states, value_states, *args, _original=original, **kwargs):
            keys, values = _original(self, key_states, value_states, *args, **kwargs)
            if key_states.shape[-2] == 1:  # a decode step: attention reads the cache
                values = values * (1.0 + relative)
            return keys, values

        update._csm_cache_path = True
        cls.update = update
    return (f"KV-cache values read in decode steps x (1 + {relative:g}), patched in transformers.cache_utils "
            f"({', '.join(c.__name__ for c in classes)}.update) in this process: reference and device alike")


def _compiled_only(relative: float) -> str:
    """Every graph the compiled mode compiles returns its floating outputs scaled by 1 + relative: a
    compile backend that wraps the real one (inductor) and perturbs what it computes, as a
    miscompiling release would. Eager runs, the prefill (not compiled) and the reference are
    untouched, so only the compiled decode-loop check can see it."""
    import torch

    from csm_conformance.runtime import devices

    real = devices.compile_backend
    if getattr(real, "_csm_compiled_only", False):
        raise FaultError("fault compiled is planted twice")

    def compile_backend(device: str):
        backend, mode, label = real(device)
        if backend == "inductor":  # with its mode, as torch.compile(backend="inductor", mode=mode) builds it
            inner = torch._TorchCompileInductorWrapper(mode, None, False)
        else:
            inner = torch._dynamo.lookup_backend(backend) if isinstance(backend, str) else backend

        def perturbing(graph_module, example_inputs):
            compiled = inner(graph_module, example_inputs)

            def run(*args):
                out = compiled(*args)
                scale = lambda t: t * (1.0 + relative) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
                return type(out)(scale(t) for t in out) if isinstance(out, (list, tuple)) else scale(out)

            return run

        return perturbing, None, f"{label}, outputs x (1 + {relative:g}) (planted)"

    compile_backend._csm_compiled_only = True
    devices.compile_backend = compile_backend
    return f"every compiled graph's floating outputs x (1 + {relative:g}) (a wrapping compile backend; eager and the reference untouched)"
