"""A planted kernel fault: one aten operator returns its outputs x (1 + relative) for the calls in
one dtype (and, optionally, one input shape), in this whole process, as a wrong kernel would.

The device model runs in bfloat16 (or float16) and the CPU reference in float32, so a fault in the
device dtype's kernel is the device's alone, also when the "device" is the CPU. It lives below the
model, in the dispatcher (a TorchDispatchMode pushed for good), so the module-level localizer sees
only the module it ran in, and the operator report (accuracy/ops) must name the operator.

This module imports only torch: `environment()` copies its source into a sitecustomize.py, so a
process started with that directory on PYTHONPATH (a standalone repro.py, a candidate stack's
interpreter) runs the same fault from its first import of torch on.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class KernelFault(TorchDispatchMode):
    """Outputs of `name` (any overload, e.g. "silu", "scaled_dot_product_attention") x (1 + relative)
    when its first tensor input has `dtype` and, if given, `shape`. `hits` counts the calls changed."""

    def __init__(self, name: str, relative: float, dtype: torch.dtype, shape: tuple[int, ...] | None = None):
        super().__init__()
        self.name, self.relative, self.dtype, self.shape = name, relative, dtype, shape
        self.hits = 0

    def _applies(self, func, args) -> bool:
        if func._schema.name.split("::")[-1] != self.name:
            return False
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        return first is not None and first.dtype == self.dtype and (self.shape is None or tuple(first.shape) == self.shape)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self._applies(func, args):
            return out
        self.hits += 1
        scale = lambda t: t * (1.0 + self.relative) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
        return type(out)(scale(t) for t in out) if isinstance(out, (tuple, list)) else scale(out)


def plant(name: str, relative: float, dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> KernelFault:
    """The fault, active in this thread from now on (the mode is entered and never left, until
    remove_planted())."""
    fault = KernelFault(name, relative, dtype, shape)
    fault.__enter__()
    return fault


def planted() -> list[KernelFault]:
    """The kernel faults active in this thread (on the dispatch mode stack)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return [mode for mode in _get_current_dispatch_mode_stack() if isinstance(mode, KernelFault)]


def remove_planted() -> int:
    """Leave every kernel fault planted in this thread (a process that plants one and goes on, as
    the self-tests do, must not carry it into the next test); how many were removed. They must be
    on top of the mode stack, as plant() leaves them."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    removed = 0
    while isinstance(_get_current_dispatch_mode(), KernelFault):
        _get_current_dispatch_mode().__exit__(None, None, None)
        removed += 1
    if planted():
        raise RuntimeError("a kernel fault is below another dispatch mode: it cannot be removed")
    return removed


def environment(directory, name: str, relative: float, dtype: str = "bfloat16", shape: tuple[int, ...] | None = None):
    """Write `directory`/sitecustomize.py: any Python started with `directory` on PYTHONPATH plants
    this fault when it starts. Returns the file's path."""
    import inspect
    from pathlib import Path

    source = inspect.getsource(KernelFault)
    text = (f'"""A planted kernel fault (csm-conformance faults/op_kernel.py): aten {name} x (1 + {relative!r}) '
            f'for {dtype} inputs{"" if shape is None else " of shape " + str(list(shape))}."""\n'
            "import torch\nfrom torch.utils._python_dispatch import TorchDispatchMode\n\n\n"
            f"{source}\n\n_FAULT = KernelFault({name!r}, {relative!r}, torch.{dtype}, {shape!r})\n_FAULT.__enter__()\n")
    path = Path(directory) / "sitecustomize.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# The operators whose CPU kernel a slowed environment can replace: the replacement computes the same
# function from other operators (the original kernel cannot be called once it is overridden).
SLOW_FORMULAS = {"silu": "x * torch.sigmoid(x)"}


def slow_environment(directory, name: str, microseconds: float, python: str):
    """A candidate stack whose CPU kernel of aten `name` spends `microseconds` more per call, as a
    slower kernel in a new release would: `directory`/sitecustomize.py overrides the kernel
    (torch.library, CPU key; no dispatch mode, so no other operator pays anything), and
    `directory`/python runs `python` with it. Returns that interpreter's path, for --after."""
    import shlex
    from pathlib import Path

    if name not in SLOW_FORMULAS:
        raise ValueError(f"no CPU replacement for aten {name}: slowed kernels are {', '.join(SLOW_FORMULAS)}")
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        f'"""A slowed kernel (csm-conformance faults/op_kernel.py): aten {name} on the CPU spends {microseconds:g} us more per call."""\n'
        "import time\n\nimport torch\n\n_LIB = torch.library.Library('aten', 'IMPL')\n\n\n"
        "def _slowed(x):\n"
        f"    deadline = time.perf_counter() + {microseconds / 1e6!r}\n"
        "    while time.perf_counter() < deadline:\n        pass\n"
        f"    return {SLOW_FORMULAS[name]}\n\n\n"
        f"_LIB.impl({name!r}, _slowed, 'CPU')\n")
    wrapper = directory / "python"
    here, real = shlex.quote(str(directory)), shlex.quote(str(Path(python).absolute()))
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={here}${{PYTHONPATH:+:$PYTHONPATH}} exec {real} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
