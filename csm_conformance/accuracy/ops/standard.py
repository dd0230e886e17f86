"""The standard one aten operator call is judged by, and the call's arguments written down.

Why a standard of its own, and not the CPU's float32 kernel: on the CI machine the "device" is the
CPU, so a standard computed by a kernel of the same family would share a fault of that kernel. The
standard here is the correctly rounded result: the call's own inputs (already in the device's
dtype), the op computed on the CPU in float64 (float32 where the op has no float64 kernel), the
result rounded to the dtype the device returned. A kernel that rounds once after a wider
accumulation errs about as much as that rounding; the standard allows

    relative error (norm-wise)  <= 2 x max(correctly rounded's, u)          + 4 x u_acc x sqrt(K)
    max |error|                 <= 2 x max(correctly rounded's, ulp(max|exact|)) + 4 x u_acc x sqrt(K) x max|exact|

u: the output dtype's unit roundoff, ulp(x) its spacing at x (the floors per dtype: an exact op,
whose correctly rounded result has no error, still gets a rounding's worth; a faithful kernel, 1
ulp off anywhere, passes); u_acc: the unit roundoff of the accumulator
a kernel of that dtype is expected to use (float32 for bfloat16, float16 and float32; float64 for
float64); K: the op's reduction length (matmul K, softmax width, attention's key length, a
convolution's in_channels x kernel; 1 for elementwise ops): summing K terms in u_acc errs by about
sqrt(K) x u_acc. The factor 2 allows one extra rounding inside a kernel (e.g. attention rounding
its probabilities to the input dtype before the second matmul); 4 is sqrt(K)'s spread. docs/ops.md
says where the numbers come from and how they differ from msprobe's.

This module imports only torch and the standard library: repro bundles (bundle.py) copy its source
into their repro.py, so a bundle computes exactly what the suite computed, with no dependency on the
suite or transformers.
"""

from __future__ import annotations

import math

import torch

UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
ROUNDINGS = 2.0  # extra roundings a correct kernel may make
SPREAD = 4.0  # how far a sum's error may spread past sqrt(K) x u_acc


def ulp(value: float, dtype: torch.dtype) -> float:
    """The spacing of `dtype`'s values at |value| (normal range)."""
    return 2.0 * UNIT_ROUNDOFF[dtype] * 2.0 ** math.floor(math.log2(value)) if value > 0 else 0.0


def accumulator_roundoff(dtype: torch.dtype) -> float:
    return UNIT_ROUNDOFF[torch.float64] if dtype == torch.float64 else UNIT_ROUNDOFF[torch.float32]


# ---- arguments written down: JSON-able structures, tensors by name ----------------------------

def encode(value, tensors: dict):
    """A call's argument as JSON-able data; each tensor goes into `tensors` under a new name."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, (list, tuple)):
        return {"list": [encode(v, tensors) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        return {"dict": {k: encode(v, tensors) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, (torch.layout, torch.memory_format)):
        return {"torch": str(value).replace("torch.", "")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write down an argument of type {type(value).__name__}")


def decode(value, tensors: dict, device: str, dtype_for=None):
    """The argument back: tensors from `tensors` on `device` (dtype_for(name, tensor) picks their
    dtype, None keeps it), devices as `device`."""
    if isinstance(value, dict):
        if "tensor" in value:
            t = tensors[value["tensor"]]
            want = dtype_for(value["tensor"], t) if dtype_for else None
            return t.to(device=device, dtype=want or t.dtype, copy=True)
        if "list" in value:
            items = [decode(v, tensors, device, dtype_for) for v in value["list"]]
            return tuple(items) if value["tuple"] else items
        if "dict" in value:
            return {k: decode(v, tensors, device, dtype_for) for k, v in value["dict"].items()}
        if "dtype" in value:
            return getattr(torch, value["dtype"])
        if "device" in value:
            return torch.device(device)
        if "torch" in value:
            return getattr(torch, value["torch"])
        if "float" in value:
            return float(value["float"])
    return value


def resolve(op: str):
    """`aten.silu.default` -> torch.ops.aten.silu.default."""
    namespace, name, overload = op.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), name), overload)


# ---- the standard --------------------------------------------------------------------------

def _floating(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _floating(v)]
    return []


# Ops that reduce, and where their reduction length is: (argument index, "last" dim | "dim" arg).
_ATTENTION = ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
              "_scaled_dot_product_attention_math", "_scaled_dot_product_fused_attention_overrideable")


def reduction_length(op: str, args: tuple, kwargs: dict) -> int:
    """K: how many terms one output element sums (1 for elementwise ops)."""
    name = op.split(".")[1]
    shape = lambda i: list(args[i].shape) if len(args) > i and isinstance(args[i], torch.Tensor) else []  # noqa: E731
    if name in ("mm", "bmm", "matmul", "linear", "_weight_int8pack_mm", "mv", "dot", "vdot", "_cdist_forward", "cdist"):
        return shape(0)[-1] if shape(0) else 1
    if name in ("addmm", "baddbmm", "addbmm", "addmv"):
        return shape(1)[-1] if shape(1) else 1
    if name in ("convolution", "_convolution") and len(args) > 6 and args[6] is True:  # transposed
        weight = shape(1)  # [in, out / groups, *kernel]; each output sums in / groups x kernel terms
        groups = args[8] if len(args) > 8 and isinstance(args[8], int) else 1
        return max(1, weight[0] // max(groups, 1) * math.prod(weight[2:])) if weight else 1
    if name in ("convolution", "_convolution", "conv1d", "conv2d", "mkldnn_convolution", "_slow_conv2d_forward"):
        weight = shape(1)  # [out, in / groups, *kernel]
        return max(1, math.prod(weight[1:])) if weight else 1
    if name in ("conv_transpose1d", "conv_transpose2d"):  # (input, weight, bias, stride, padding, output_padding, groups, ...)
        weight = shape(1)  # [in, out / groups, *kernel]; each output sums in / groups x kernel terms
        groups = args[6] if len(args) > 6 and isinstance(args[6], int) else kwargs.get("groups", 1)
        return max(1, weight[0] // max(groups, 1) * math.prod(weight[2:])) if weight else 1
    if name in _ATTENTION or name.startswith("npu_fusion_attention"):
        q, k = shape(0), shape(1)
        return max(q[-1] if q else 1, k[-2] if len(k) >= 2 else 1)
    if name in ("_softmax", "softmax", "_log_softmax", "log_softmax", "cumsum", "logsumexp"):
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        return max(1, math.prod(shape(0)[d] for d in dims)) if shape(0) else 1
    if name in ("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm"):
        return max(1, math.prod(args[1])) if len(args) > 1 and isinstance(args[1], (list, tuple)) else 1
    if name in ("native_group_norm",):  # (input, weight, bias, N, C, HxW, group, eps)
        return max(1, (args[4] // max(args[6], 1)) * args[5]) if len(args) > 6 else 1
    if name in ("group_norm",):  # (input, num_groups, ...)
        full = shape(0)
        return max(1, math.prod(full[1:]) // max(args[1], 1)) if len(full) > 1 and len(args) > 1 else 1
    if name in ("sum", "mean", "var", "std", "norm", "linalg_vector_norm", "var_mean", "std_mean", "prod", "nansum"):
        full = shape(0)
        at = 2 if name in ("norm", "linalg_vector_norm") else 1  # norms: (input, ord, dim, ...); the others: (input, dim, ...)
        dims = args[at] if len(args) > at else kwargs.get("dim")
        if isinstance(dims, int) and not isinstance(dims, bool):
            dims = [dims]
        if not isinstance(dims, (list, tuple)) or len(dims) == 0 or not full:
            return max(1, math.prod(full)) if full else 1
        return max(1, math.prod(full[d] for d in dims))
    return 1


def _math_attention(args: tuple, kwargs: dict, with_bias: bool):
    """Attention by its definition (aten's math kernel), for fused kernels with no CPU float64 one."""
    q, k, v = args[:3]
    rest = list(args[3:])
    bias = rest.pop(0) if with_bias and rest else kwargs.get("attn_bias")
    if with_bias and rest:
        rest.pop(0)  # compute_log_sumexp
    dropout = rest.pop(0) if rest else kwargs.get("dropout_p", 0.0)
    causal = rest.pop(0) if rest else kwargs.get("is_causal", False)
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    return torch.ops.aten._scaled_dot_product_attention_math.default(q, k, v, bias, dropout, causal, None, scale=kwargs.get("scale"))[0]


# Device kernels the CPU lacks: computed from their definition instead (first output only).
CPU_EQUIVALENTS = {
    "aten._scaled_dot_product_flash_attention.default": lambda a, k: _math_attention(a, k, with_bias=False),
    "aten._scaled_dot_product_efficient_attention.default": lambda a, k: _math_attention(a, k, with_bias=True),
    "aten._scaled_dot_product_cudnn_attention.default": lambda a, k: _math_attention(a, k, with_bias=True),
}


def _widened(value, dtype: torch.dtype):
    """Copies (an in-place op must not write into the recorded inputs), floating ones in `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", dtype, copy=True) if value.is_floating_point() else value.detach().to("cpu", copy=True)
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return dtype
    if isinstance(value, torch.device):
        return torch.device("cpu")
    if isinstance(value, (list, tuple)):
        return type(value)(_widened(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _widened(v, dtype) for k, v in value.items()}
    return value


def exact_result(op: str, args: tuple, kwargs: dict) -> tuple[list[torch.Tensor], str] | tuple[None, str]:
    """The op on the CPU, widened: (floating outputs in float64, where they came from)."""
    func = resolve(op)
    for dtype in (torch.float64, torch.float32):
        wide_args, wide_kwargs = _widened(args, dtype), _widened(kwargs, dtype)
        try:
            with torch.inference_mode():
                if op in CPU_EQUIVALENTS:
                    outs, how = [CPU_EQUIVALENTS[op](wide_args, wide_kwargs)], f"its definition (aten math) on the CPU in {str(dtype)[6:]}"
                else:
                    outs, how = _floating(func(*wide_args, **wide_kwargs)), f"the CPU in {str(dtype)[6:]}"
        except (RuntimeError, NotImplementedError, TypeError):
            continue
        return [o.to(torch.float64) for o in outs], how
    return None, "no CPU kernel in float64 or float32"


def judge(device_outputs: list[torch.Tensor], exact: list[torch.Tensor], k: int) -> dict:
    """The device's floating outputs against the exact ones: metrics of the worst output and its
    standard. `excess` is how far past the standard (error / allowed; > 1: past it)."""
    worst = None
    for out, ref in zip(device_outputs, exact):
        if out.shape != ref.shape:
            return {"excess": math.inf, "problem": f"shape {list(out.shape)} instead of {list(ref.shape)}"}
        dtype = out.dtype if out.dtype in UNIT_ROUNDOFF else torch.float32
        got, ref = out.detach().to("cpu", torch.float64).flatten(), ref.flatten()
        if not torch.isfinite(ref).all():
            continue  # no standard for non-finite exact results (their inputs were)
        if not torch.isfinite(got).all():
            row = {"excess": math.inf, "problem": f"{int((~torch.isfinite(got)).sum())} non-finite values where the exact result is finite"}
        else:
            rounded = ref.to(dtype).to(torch.float64)
            scale, norm = float(ref.abs().max()) if ref.numel() else 0.0, float(ref.norm())
            u, acc = UNIT_ROUNDOFF[dtype], accumulator_roundoff(dtype) * math.sqrt(max(k, 1))
            diff, cr = got - ref, rounded - ref
            max_abs, cr_abs = float(diff.abs().max()) if diff.numel() else 0.0, float(cr.abs().max()) if cr.numel() else 0.0
            rel = float(diff.norm()) / norm if norm > 0 else (0.0 if max_abs == 0 else math.inf)
            cr_rel = float(cr.norm()) / norm if norm > 0 else 0.0
            allowed_rel = ROUNDINGS * max(cr_rel, u) + SPREAD * acc
            allowed_abs = ROUNDINGS * max(cr_abs, ulp(scale, dtype)) + SPREAD * acc * scale
            denominator = float(got.norm()) * norm
            cosine = float(got @ ref) / denominator if denominator > 0 else (1.0 if max_abs == 0 else 0.0)
            excess = max(rel / allowed_rel if allowed_rel > 0 else (0.0 if rel == 0 else math.inf),
                         max_abs / allowed_abs if allowed_abs > 0 else (0.0 if max_abs == 0 else math.inf))
            row = {"excess": excess, "max_abs_error": max_abs, "rel_error": rel, "cosine": cosine,
                   "rounded_rel_error": cr_rel, "rounded_max_abs_error": cr_abs,
                   "allowed_rel_error": allowed_rel, "allowed_max_abs_error": allowed_abs,
                   "out_dtype": str(dtype).replace("torch.", ""), "reduction": int(k)}
        if worst is None or row["excess"] > worst["excess"]:
            worst = row
    return worst or {"excess": 0.0, "problem": "no finite floating output to judge"}


def run_call(op: str, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The call itself (inputs already where and in the dtype they should be): its floating outputs.
    In inference mode, as it was recorded (composite operators such as attention stay whole)."""
    with torch.inference_mode():
        return _floating(resolve(op)(*args, **kwargs))
