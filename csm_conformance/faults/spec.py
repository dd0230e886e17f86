"""A `--csm-fault` spec read and planted: the one place that knows every spec's syntax."""

from __future__ import annotations

from collections.abc import Callable

import torch

from csm_conformance.faults.errors import FaultError
from csm_conformance.faults.numeric import (
    _cache_path,
    _compiled_only,
    _cross_version_change,
    _decode_step_attention,
    _drop_rope_scaling,
    _fp16_matmul,
    _nan_activation,
    _perturb_weight,
    _shift_attention_mask,
)
from csm_conformance.faults.op_kernel import plant as plant_kernel
from csm_conformance.faults.per_frame import (
    _at_frame,
    _extra_cast,
    _hang_at,
    _per_frame_leak,
    _per_frame_sleep,
    _per_frame_slowdown,
    _raise_at,
    _transient_sleep,
)


def _number(spec: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultError(f"fault {spec}: '{text}' is not a number") from None
    if not value > 0:
        raise FaultError(f"fault {spec}: the amount must be > 0")
    return value


def apply_fault(model: torch.nn.Module, spec: str) -> str:
    """Plant the fault `spec` names in `model`; returns its note."""
    return _plan(spec)(model)


def check_spec(spec: str) -> None:
    """Read `spec` without a model: an unknown kind or a bad number is a FaultError before any model
    loads (the plugin checks every --csm-fault at configuration). What needs the model (a parameter
    or module name) is checked when it is planted."""
    _plan(spec)


def _plan(spec: str) -> Callable[[torch.nn.Module], str]:
    """The spec read: a function that plants it in a model and returns its note."""
    kind, _, rest = spec.partition(":")
    if kind == "xversion":
        target, _, relative = rest.partition(":")
        amount = _number(spec, relative) if relative else 1e-3
        return lambda model: _cross_version_change(model, target, amount)
    if kind == "weight":
        name, _, scale = rest.rpartition(":") if rest.count(":") else (rest, "", "")
        try:
            value = float(scale) if scale else 1e-2
        except ValueError:
            raise FaultError(f"fault {spec}: scale '{scale}' is not a number") from None
        return lambda model: _perturb_weight(model, name or rest, value)
    if kind == "rope":
        return _drop_rope_scaling
    if kind == "nan":
        return lambda model: _nan_activation(model, rest)
    if kind == "fp16":
        return lambda model: _fp16_matmul(model, rest)
    if kind == "mask":
        try:
            offset = int(rest)
        except ValueError:
            raise FaultError(f"fault {spec}: the offset must be a whole number of positions, e.g. mask:1 or mask:-1") from None
        if offset == 0:
            raise FaultError(f"fault {spec}: an offset of 0 changes nothing; use mask:1 or mask:-1")
        return lambda model: _shift_attention_mask(model, offset)
    if kind == "decode_attn":
        factor = _number(spec, rest)
        if factor == 1.0:
            raise FaultError(f"fault {spec}: a factor of 1 changes nothing; use e.g. decode_attn:1.05")
        return lambda model: _decode_step_attention(model, factor)
    if kind in ("cache_path", "compiled"):
        relative = _number(spec, rest) if rest else None
        if relative is None:
            raise FaultError(f"fault {spec}: give the relative error, e.g. {kind}:1e-3")
        return lambda model: (_cache_path if kind == "cache_path" else _compiled_only)(relative)
    if kind == "op":
        return _kernel(spec, rest)
    if kind == "cast":
        if not rest:
            raise FaultError(f"fault {spec}: name a module, e.g. cast:backbone_model.norm")
        return lambda model: _extra_cast(model, rest)
    if kind in _PER_FRAME:
        return _PER_FRAME[kind](spec, rest)
    raise FaultError(f"unknown fault '{spec}': use weight:<param>[:<scale>], rope, nan:<module>, fp16:<Linear>, mask:<offset>, "
                     "sleep:<ms>, slowdown:<fraction>, transient:<ms>:<generations>, leak:<MiB>, raise:<frame>, hang:<frame>, "
                     "xversion:<rmsnorm|mimi>[:<relative>], decode_attn:<factor>, cache_path:<relative>, compiled:<relative>, "
                     "op:<aten op>[:<relative>][@<shape>] or cast:<module>")


def _kernel(spec: str, rest: str) -> Callable[[torch.nn.Module], str]:
    """op:<aten op>[:<relative>][@<shape>]: that operator's kernel in the device model's dtype
    returns x (1 + relative) (default 0.02), for every input shape or the one named (AxBxC)."""
    body, _, shape_text = rest.partition("@")
    name, _, relative_text = body.partition(":")
    if not name or not name.replace("_", "").isalnum():
        raise FaultError(f"fault {spec}: name an aten operator, e.g. op:silu:0.02 or op:scaled_dot_product_attention:0.05@1x4x21x16")
    relative = _number(spec, relative_text) if relative_text else 0.02
    try:
        shape = tuple(int(n) for n in shape_text.split("x")) if shape_text else None
    except ValueError:
        raise FaultError(f"fault {spec}: the shape is the first input's, written AxBxC, e.g. @1x4x21x16") from None
    if not hasattr(torch.ops.aten, name):
        raise FaultError(f"fault {spec}: torch has no aten operator '{name}'")

    def apply(model: torch.nn.Module) -> str:
        dtype = next(model.parameters()).dtype
        plant_kernel(name, relative, dtype, shape)
        where = "" if shape is None else f" for input shape {'x'.join(map(str, shape))}"
        same = " (float32: the CPU reference runs the same kernel, so both sides carry it)" if dtype == torch.float32 else ""
        return (f"aten {name} x (1 + {relative:g}) for {str(dtype)[6:]} inputs{where}: a kernel fault in this process's dispatcher"
                f" (faults/op_kernel.py){same}")

    return apply


def _planted(plant, note: str) -> Callable[[torch.nn.Module], str]:
    def apply(model: torch.nn.Module) -> str:
        plant(model)
        return note
    return apply


def _sleep(spec: str, rest: str):
    ms = _number(spec, rest)
    return _planted(lambda m: _per_frame_sleep(m, ms / 1000.0), f"every frame sleeps {ms:g} ms longer (backbone forward hook)")


def _slowdown(spec: str, rest: str):
    fraction = _number(spec, rest)
    return _planted(lambda m: _per_frame_slowdown(m, fraction), f"every frame is {fraction:.0%} slower (backbone forward hook)")


def _transient(spec: str, rest: str):
    ms_text, _, count_text = rest.partition(":")
    ms, count = _number(spec, ms_text), _number(spec, count_text or "x")
    if count != int(count):
        raise FaultError(f"fault {spec}: the number of generations must be a whole number")
    return _planted(lambda m: _transient_sleep(m, ms / 1000.0, int(count)),
                    f"every frame of the first {int(count)} generations sleeps {ms:g} ms longer (backbone forward hook)")


def _leak(spec: str, rest: str):
    mib = _number(spec, rest)
    return _planted(lambda m: _per_frame_leak(m, mib), f"every frame leaks {mib:g} MiB of device memory (backbone forward hook)")


def _at(spec: str, rest: str):
    kind = spec.partition(":")[0]
    frame = _number(spec, rest)
    if frame != int(frame):
        raise FaultError(f"fault {spec}: the frame must be a whole number")
    action = _raise_at if kind == "raise" else _hang_at
    return _planted(lambda m: _at_frame(m, int(frame), lambda: action(int(frame))),
                    f"generation {'raises' if kind == 'raise' else 'hangs'} at frame {int(frame)} (backbone forward hook)")


_PER_FRAME = {"sleep": _sleep, "slowdown": _slowdown, "transient": _transient, "leak": _leak, "raise": _at, "hang": _at}
