"""A `--csm-fault` spec read and planted: the one place that knows every spec's syntax."""

from __future__ import annotations

import torch

from csm_conformance.faults.errors import FaultError
from csm_conformance.faults.numeric import _cross_version_change, _drop_rope_scaling, _fp16_matmul, _nan_activation, _perturb_weight, _shift_attention_mask
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
