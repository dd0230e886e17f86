"""Every aten operator a model runs, recorded with its inputs, the module it ran under and the phase.

Why on the device model and not on the reference: the device runs kernels the CPU has not (flash
attention on CUDA, fused operators on an NPU) and the CPU runs ones the device has not; an upstream
kernel bug report needs the device's own operator, dtypes and shapes. Each call is later judged on
its own inputs (standard.py), so an error made upstream does not count against it.

A `TorchDispatchMode` sees the operators after autograd and composite decompositions, as the
device's dispatcher does. Calls are kept once per signature (operator, module, phase, shapes,
dtypes, the other arguments); parameters are shared, not copied per call. Views, factories and
random ops compute nothing a kernel can get wrong (or nothing repeatable) and are not kept; ops
without a floating output are counted only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from csm_conformance.accuracy.localize.hooks import module_name


@dataclass
class OpCall:
    op: str  # aten.silu.default
    module: str  # canonical module path it ran under ("" outside any)
    phase: str  # prefill | decode | codec
    args: tuple
    kwargs: dict
    calls: int = 1  # calls with this signature

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in _tensors((self.args, self.kwargs))]

    @property
    def dtypes(self) -> list[str]:
        return [str(t.dtype).replace("torch.", "") for t in _tensors((self.args, self.kwargs))]


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _signature(value):
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), str(value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _signature(v)) for k, v in value.items()))
    return repr(value)


def _skipped(func) -> bool:
    """Views, factories and random ops (attention is tagged random for its dropout, which inference
    runs at 0: it is kept)."""
    seeded = torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()) and "attention" not in func._schema.name
    return bool(func.is_view or seeded or func._schema.name in _NOT_KERNELS)


_NOT_KERNELS = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::zeros", "aten::ones", "aten::full", "aten::arange",
                "aten::lift_fresh", "aten::detach", "aten::alias", "aten::_local_scalar_dense", "aten::item", "aten::set_",
                "aten::resize_", "aten::scalar_tensor", "aten::zeros_like", "aten::ones_like", "aten::full_like", "aten::new_empty",
                "aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::fill_", "aten::zero_", "aten::is_nonzero"}


class OpRecorder(TorchDispatchMode):
    """While active, keeps one OpCall per distinct signature (`calls`), CPU copies of its inputs;
    `counts` holds every call seen, kept or not."""

    def __init__(self, parameters: dict[int, torch.Tensor]):
        super().__init__()
        self.calls: dict[tuple, OpCall] = {}
        self.total = 0
        self.skipped = 0
        self.where = ("", "prefill")
        self._parameters = parameters  # data_ptr -> CPU copy, shared by every call that reads it
        self._param_ptrs = {ptr for ptr in parameters}

    def _copy(self, value):
        if not isinstance(value, torch.Tensor):
            return value
        if value.device.type != "meta" and value.data_ptr() in self._param_ptrs and value.is_contiguous():
            cpu = self._parameters[value.data_ptr()]
            if cpu.shape == value.shape and cpu.dtype == value.dtype:
                return cpu
        return value.detach().to("cpu", copy=True)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.total += 1
        if _skipped(func):
            self.skipped += 1
            return func(*args, **kwargs)
        module, phase = self.where
        key = (str(func), module, phase, _signature(args), _signature(kwargs))
        if key in self.calls:
            self.calls[key].calls += 1
        else:  # copied before the call runs: an in-place op overwrites its own input
            self.calls[key] = OpCall(str(func), module, phase, tree_map(self._copy, args), tree_map(self._copy, kwargs))
        return func(*args, **kwargs)


def _parameter_copies(model: torch.nn.Module) -> dict[int, torch.Tensor]:
    """data_ptr -> a CPU copy (the tensor itself on the CPU) of every parameter and buffer."""
    found = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.device.type != "meta" and tensor.data_ptr() not in found and tensor.is_contiguous():
            found[tensor.data_ptr()] = tensor.detach() if tensor.device.type == "cpu" else tensor.detach().to("cpu")
    return found


@contextmanager
def recording(model: torch.nn.Module):
    """While active, every operator `model` (or anything else in this thread) runs is recorded in
    the yielded OpRecorder, each call under the innermost module it ran in. The phase: `prefill`
    for the model's first top-level forward (with what generation runs after it, the depth decoder
    included), `decode` for later ones, `codec` for the codec called on its own."""
    recorder = OpRecorder(_parameter_copies(model))
    stack: list[str] = []
    forwards = [0]
    names = {module: module_name(name) for name, module in model.named_modules()}

    def pre(module, _args):
        if module is model:
            forwards[0] += 1
        phase = recorder.where[1]
        if not stack:
            phase = "codec" if names[module].startswith("codec_model") else "prefill" if forwards[0] <= 1 else "decode"
        stack.append(names[module])
        recorder.where = (names[module], phase)

    def post(module, _args, _output):
        if stack:
            stack.pop()
        recorder.where = (stack[-1] if stack else "", recorder.where[1])

    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post, always_call=True) for m in names]
    try:
        with recorder:
            yield recorder
    finally:
        for handle in handles:
            handle.remove()
