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
from csm_conformance.faults.per_frame import _at_frame, _hang_at, _per_frame_leak, _per_frame_sleep, _per_frame_slowdown, _raise_at, _transient_sleep


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
    if kind in _PER_FRAME:
        return _PER_FRAME[kind](spec, rest)
    raise FaultError(f"unknown fault '{spec}': use weight:<param>[:<scale>], rope, nan:<module>, fp16:<Linear>, mask:<offset>, "
                     "sleep:<ms>, slowdown:<fraction>, transient:<ms>:<generations>, leak:<MiB>, raise:<frame>, hang:<frame>, "
                     "xversion:<rmsnorm|mimi>[:<relative>], decode_attn:<factor>, cache_path:<relative> or compiled:<relative>")


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
