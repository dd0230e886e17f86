"""SIMULATED torch_npu: a pure-Python stand-in for Huawei's torch_npu that runs every op on the CPU.

What it proves: the conformance suite's NPU plumbing works end to end without Ascend hardware:
`--csm-device npu[:K]` resolution through `import transformers` then `import torch_npu`, one
`npu:K` per pytest-xdist worker, moving models and inputs with `.to("npu:K")`, `torch.npu`
synchronize and memory statistics (counted honestly, per live storage and per card), and the
reports that name the device. What it cannot prove: anything about Ascend kernels, CANN, HCCL,
TorchAir / `torch.compile` on the NPU, or real NPU timings and memory footprints; every number it
produces is a CPU number, and every op computes exactly what the CPU computes.

Usage: put the directory that holds this package first on PYTHONPATH
(`PYTHONPATH=tests/simulated_npu`); the simulation is then what `import torch_npu` finds.
`SIMULATED_NPU_COUNT` sets how many cards it offers (8 by default).
"""

import torch

__version__ = f"{torch.__version__.split('+')[0]}.simulated"
SIMULATED = True  # real torch_npu has no such attribute: code can test for the stand-in

from . import npu  # noqa: E402,F401  (renames PrivateUse1 to "npu" and registers torch.npu)
from . import _tensor  # noqa: E402,F401  (the tensor type and its factory kernels)
from ._tensor import NpuTensor  # noqa: E402,F401
from . import profiler  # noqa: E402,F401  (torch_npu.profiler over torch.profiler, writing the *_ascend_pt layout)


def _not_simulated(name: str):
    """A torch_npu fused-kernel entry point that exists so imports succeed (transformers imports
    `npu_fusion_attention` as soon as torch_npu is importable) but refuses to run: an Ascend
    kernel has no honest CPU stand-in here, and silently computing something else would hide it."""

    def kernel(*args, **kwargs):
        raise NotImplementedError(f"torch_npu.{name} is an Ascend kernel; the simulated torch_npu does not implement it")

    kernel.__name__ = kernel.__qualname__ = name
    return kernel


npu_fusion_attention = _not_simulated("npu_fusion_attention")
npu_fusion_attention_grad = _not_simulated("npu_fusion_attention_grad")
npu_rms_norm = _not_simulated("npu_rms_norm")
npu_rotary_mul = _not_simulated("npu_rotary_mul")
npu_swiglu = _not_simulated("npu_swiglu")
npu_incre_flash_attention = _not_simulated("npu_incre_flash_attention")
npu_prompt_flash_attention = _not_simulated("npu_prompt_flash_attention")
npu_format_cast = _not_simulated("npu_format_cast")
