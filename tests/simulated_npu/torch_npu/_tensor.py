"""The simulated NPU tensor: a wrapper subclass on device `npu:K` whose data is a CPU tensor.

Every aten op that reaches a simulated tensor lands in `NpuTensor.__torch_dispatch__`, which runs
the same op on the CPU data and wraps the results back onto the card, so results are bit-identical
to the CPU's. Aliasing lives in the CPU data: a view's `_data` is a view of its base's `_data`, so
in-place writes (KV-cache `index_copy_`, slice assignment) reach every alias. Ops with no tensor
argument but `device="npu..."` (factories: empty, zeros, arange, randn, ...) never reach
`__torch_dispatch__`; they are registered as PrivateUse1 kernels below.

Like a real accelerator, an op that mixes cards, or mixes a card with a CPU tensor that is not a
0-dim scalar, raises; copies (`copy_`, `.to()`) and indexing with CPU indices are allowed across.
"""

from __future__ import annotations

import functools

import torch

from . import npu

aten = torch.ops.aten


def _device(index: int) -> torch.device:
    return torch.device("npu", index)


class NpuTensor(torch.Tensor):
    """A tensor on a simulated card. `_data` is its CPU value (same shape, strides and offset)."""

    _data: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor, index: int):
        out = torch.Tensor._make_wrapper_subclass(
            cls, data.size(), strides=data.stride(), storage_offset=data.storage_offset(),
            dtype=data.dtype, layout=data.layout, device=_device(index), requires_grad=False)
        out._data = data
        npu._track(data, index)
        return out

    # No subclass behaviour at the torch-function level: results are NpuTensors already.
    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self, *, tensor_contents=None):
        return f"{self._data!r} [simulated on {self.device}]"

    @property
    def data(self):
        return torch._C.TensorBase.data.__get__(self)

    @data.setter
    def data(self, value):
        """`t.data = other` swaps only the outer metadata; `_data` must follow or `t` would keep
        reading its old values."""
        torch._C.TensorBase.data.__set__(self, value)  # raises for a CPU `value`, as on hardware
        self._data = value._data
        npu._track(value._data, value.device.index)

    def __deepcopy__(self, memo):
        """Tensor's default would deep-copy `__dict__` too, replacing the copy's counted `_data`
        with an uncounted one; copy the other attributes (`_is_param`, ...) and keep `_data`."""
        import copy

        if id(self) in memo:
            return memo[id(self)]
        new = NpuTensor(self._data.clone(), self.device.index)
        if self.requires_grad:
            new.requires_grad_()
        for key, value in self.__dict__.items():
            if key != "_data":
                setattr(new, key, copy.deepcopy(value, memo))
        memo[id(self)] = new
        return new

    # Flatten/unflatten make this a "traceable wrapper subclass": Module.to("npu:K") then swaps
    # parameters in place (torch.utils.swap_tensors) instead of `param.data = ...`, which cannot
    # work across tensor types.
    def __tensor_flatten__(self):
        return ["_data"], self.device.index

    @staticmethod
    def __tensor_unflatten__(inner, index, outer_size, outer_stride):
        data = inner["_data"]
        if type(data) is not torch.Tensor:  # FakeTensor / FunctionalTensor: torch.compile is tracing
            raise RuntimeError(
                "torch.compile is not simulated on the simulated NPU (real NPUs compile through TorchAir); run eager")
        return NpuTensor(data, index)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        plan = _plan(func)
        found: set[int] = set()
        has_cpu = [False]

        def unwrap(x):
            if isinstance(x, NpuTensor):
                found.add(x.device.index)
                return x._data
            if isinstance(x, torch.Tensor):
                if x.dim() > 0:
                    has_cpu[0] = True
                return x
            if isinstance(x, (list, tuple)):
                return type(x)(unwrap(y) for y in x)
            return x

        cpu_args = [unwrap(a) for a in args]
        cpu_kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        if func not in _CROSS_DEVICE_OK and (len(found) > 1 or has_cpu[0]):
            where = ", ".join([f"npu:{i}" for i in sorted(found)] + (["cpu"] if has_cpu[0] else []))
            raise RuntimeError(f"Expected all tensors to be on the same device, but found {where} in {func} (simulated npu)")
        if func in _INDEX_OPS and not isinstance(args[0], NpuTensor):
            raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor (cpu), in {func} (simulated npu)")
        index = min(found)
        target = _device_arg(plan, args, kwargs)
        if target is not None:  # _to_copy, to.device, new_empty, empty_like, ... name the result's device
            index = npu._index(target) if target.type == "npu" else None
            if plan.device_pos < len(args):
                cpu_args[plan.device_pos] = torch.device("cpu")
            else:
                cpu_kwargs["device"] = torch.device("cpu")

        out = func(*cpu_args, **cpu_kwargs)
        if target is not None and index not in found and isinstance(out, torch.Tensor) and _shares_storage(out, cpu_args):
            out = out.clone()  # `to` may return its input; across devices that must be a copy
        return _rewrap(func, plan, args, kwargs, out, index)


class _Plan:
    """What __torch_dispatch__ needs to know about an op's schema, computed once per op.

    device_pos: position of its `device` argument (len(arguments) when none).
    returns: per return value, ('arg', i, name) when it is argument i written in place (the caller
    must get that very object back), else ('new', is_view).
    """

    def __init__(self, func):
        schema = func._schema
        names = [a.name for a in schema.arguments]
        self.device_pos = names.index("device") if "device" in names else len(names)
        self.has_device = "device" in names
        returns = []
        for ret in schema.returns:
            info = ret.alias_info
            if info is not None and info.is_write:
                for i, arg in enumerate(schema.arguments):
                    if arg.alias_info is not None and arg.alias_info.before_set == info.before_set:
                        returns.append(("arg", i, arg.name))
                        break
                else:
                    raise NotImplementedError(f"simulated npu: cannot map the in-place result of {func}")
            else:
                returns.append(("new", info is not None))
        self.returns = tuple(returns)


@functools.lru_cache(maxsize=None)
def _plan(func) -> _Plan:
    return _Plan(func)


def _device_arg(plan: _Plan, args, kwargs) -> torch.device | None:
    if not plan.has_device:
        return None
    value = args[plan.device_pos] if plan.device_pos < len(args) else kwargs.get("device")
    return None if value is None else torch.device(value)


def _shares_storage(out: torch.Tensor, cpu_args) -> bool:
    ref = out.untyped_storage()._cdata
    return any(isinstance(a, torch.Tensor) and a.untyped_storage()._cdata == ref for a in cpu_args)


# Ops a real device accepts with tensors on different devices: copies, and CPU index tensors
# into a tensor on the card (not the other way round).
_INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}
_CROSS_DEVICE_OK = {
    aten.copy_.default, aten._to_copy.default, aten._copy_from.default, aten._copy_from_and_resize.default,
    *_INDEX_OPS,
}


def _rewrap(func, plan, args, kwargs, out, index):
    plan = plan.returns
    outs = out if len(plan) > 1 else (out,)
    results = []
    base_is_inference = any(isinstance(a, torch.Tensor) and a.is_inference() for a in args)
    for step, value in zip(plan, outs):
        if step[0] == "arg":
            _, i, name = step
            original = args[i] if i < len(args) else kwargs[name]
            if isinstance(original, NpuTensor):
                data = original._data
                if data.shape != original.shape or data.stride() != original.stride() or data.storage_offset() != original.storage_offset():
                    raise NotImplementedError(
                        f"simulated npu: {func} changed the shape or strides of a tensor in place; not simulated")
            results.append(original)
        elif index is None:
            results.append(value)  # e.g. _to_copy to the CPU: a plain CPU tensor
        elif step[1] and not base_is_inference and torch.is_inference_mode_enabled():
            # A view of a tensor made outside inference_mode must itself be a normal tensor, as on
            # the CPU; a wrapper created here would be an inference tensor and autograd's view
            # bookkeeping would refuse it.
            with torch.inference_mode(False):
                results.append(_wrap(value, index))
        else:
            results.append(_wrap(value, index))
    return tuple(results) if len(plan) > 1 else results[0]


def _wrap(value, index):
    if isinstance(value, torch.Tensor):
        return NpuTensor(value, index)
    if isinstance(value, (list, tuple)):
        return type(value)(_wrap(v, index) for v in value)
    return value


# ---- factories: ops with device="npu..." and no tensor argument ---------------------------------

_FACTORIES = [
    "empty.memory_format", "empty_strided", "empty_permuted", "zeros", "ones", "full", "scalar_tensor",
    "arange", "arange.start", "arange.start_step", "linspace", "logspace", "eye", "eye.m",
    "rand", "rand.generator", "randn", "randn.generator", "randint", "randint.generator",
    "randint.low", "randint.low_generator", "randperm", "randperm.generator",
    "tril_indices", "triu_indices",
]


def _factory(op):
    def kernel(*args, **kwargs):
        index = npu._index(kwargs["device"])
        kwargs["device"] = torch.device("cpu")
        return NpuTensor(op(*args, **kwargs), index)

    return kernel


def _copy_from(src, dst, non_blocking=False):
    """copy_ into or out of a card when the Python key is excluded: `torch.tensor(..., device=...)`
    builds a CPU tensor and copies it with __torch_dispatch__ switched off."""
    (dst._data if isinstance(dst, NpuTensor) else dst).copy_(src._data if isinstance(src, NpuTensor) else src)
    return dst


_lib = torch.library.Library("aten", "IMPL")
for _name in _FACTORIES:
    _packet, _, _overload = _name.partition(".")
    _lib.impl(_name, _factory(getattr(getattr(aten, _packet), _overload or "default")), "PrivateUse1")
_lib.impl("_copy_from", _copy_from, "PrivateUse1")
