"""A repro bundle for one judged operator call: `<ops_dir>/<n>-<op>/repro.py`, inputs.safetensors, call.json.

Why a script that stands alone: a kernel team reproduces a bug report on its own machine, without the
suite, the model or transformers; repro.py needs only torch and safetensors (and torch_npu for an
NPU). It carries standard.py's source verbatim, so it replays the call and judges it exactly as the
suite did, and a team can rerun it on a fixed stack and see the same standard met.
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from csm_conformance.accuracy.ops import standard
from csm_conformance.accuracy.ops.record import OpCall


def stack(device: str) -> str:
    """The software and the device a call runs on (copied into repro.py: both ends say it alike)."""
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    parts += [f"torch_npu {getattr(sys.modules['torch_npu'], '__version__', '?')}"] if "torch_npu" in sys.modules else []
    parts += [f"CUDA {torch.version.cuda}"] if torch.version.cuda and device.startswith("cuda") else []
    try:
        kind = torch.device(device).type
        name = platform.machine() if kind == "cpu" else getattr(torch, kind).get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - a name is a courtesy, never a reason to fail
        name = "?"
    return f"{', '.join(parts)} on {device} ({name})"


_DOC = '''"""Repro of one aten operator call: {op}, recorded by csm-conformance (the CSM-1B conformance suite).

Run:  python repro.py [--device cuda|npu:0|cpu]      (default: {device}, where it was recorded)
Needs torch and safetensors (torch_npu for an npu device), and inputs.safetensors beside this file.
Exit status: 0 within its standard, 1 past it (or the call fails on the device), 2 bad input (e.g. the
device is not available).

The standard: the correctly rounded result. The same inputs (in the recorded dtypes) are run through
the op on the CPU in float64 (float32 where it has no float64 kernel) and the result is rounded to the
output's dtype; the device's kernel may err by twice that rounding's error (at least one unit roundoff
u of the output dtype, norm-wise; one ulp of the largest value, element-wise) plus 4 x u_acc x sqrt(K)
for a K-term reduction summed in float32 (u_acc its unit roundoff; float64's for float64 outputs).
`excess` is error / allowed: above 1 the call is past its standard. The code below the imports is
csm_conformance/accuracy/ops/standard.py verbatim (but for its __future__ line): what the suite ran.

Recorded: {op} at {module} ({phase}), {calls} call(s) in case {case}{model}
Shapes: {shapes}; dtypes: {dtypes}
Stack: {stack}
The suite measured excess {excess} there.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

'''

_MAIN = '''

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=f"Replay {CALL['op']} and judge it against its correctly rounded standard.")
    parser.add_argument("--device", default=CALL["device"], help=f"cuda, npu:0, cpu, ... (default {CALL['device']}, where it was recorded)")
    device = parser.parse_args(argv).device
    one_line = lambda exc: f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"  # noqa: E731
    try:
        if device.startswith("npu"):
            import torch_npu  # noqa: F401
        torch.empty(1, device=device)
    except Exception as exc:
        print(f"repro.py: device {device!r} is not available: {one_line(exc)}", file=sys.stderr)
        return 2
    try:
        from safetensors.torch import load_file
        tensors = load_file(str(Path(__file__).with_name("inputs.safetensors")))
    except Exception as exc:
        print(f"repro.py: cannot read inputs.safetensors: {one_line(exc)}", file=sys.stderr)
        return 2
    for name, stride in CALL["strides"].items():  # the recorded layout back (a kernel may take another path for it)
        try:
            tensors[name] = torch.empty_strided(tensors[name].shape, stride, dtype=tensors[name].dtype).copy_(tensors[name])
        except RuntimeError:  # overlapping (expanded) strides cannot be written: the values stay contiguous
            pass
    op, arguments = CALL["op"], CALL["arguments"]
    cpu_args, cpu_kwargs = decode(arguments["args"], tensors, "cpu"), decode(arguments["kwargs"], tensors, "cpu")
    shapes = ", ".join("x".join(map(str, shape)) or "scalar" for shape in CALL["shapes"])
    print(f"{op} at {CALL['module'] or '(top level)'} ({CALL['phase']}); shapes {shapes}; dtypes {', '.join(CALL['dtypes'])}; "
          f"recorded on {CALL['stack']}")
    print(f"running on {stack(device)}")
    try:
        outputs = run_call(op, decode(arguments["args"], tensors, device), decode(arguments["kwargs"], tensors, device))
    except Exception as exc:
        print(f"FAILED on {device}: {one_line(exc)}")
        return 1
    exact, source = exact_result(op, cpu_args, cpu_kwargs)
    if exact is None or not outputs:
        print(f"repro.py: nothing to judge ({source if exact is None else 'no floating output'})", file=sys.stderr)
        return 2
    row = judge(outputs, exact, reduction_length(op, cpu_args, cpu_kwargs))
    excess, recorded = row["excess"], float(CALL["suite_result"]["excess"])
    if "problem" in row:
        print(f"  problem             {row['problem']}")
    else:
        for label, key in (("max |error|", "max_abs_error"), ("rel error (norm)", "rel_error")):
            print(f"  {label:<18}  {row[key]:.4g}   allowed {row['allowed_' + key]:.4g}   (the correctly rounded result's: {row['rounded_' + key]:.4g})")
        print(f"  cosine              {row['cosine']:.7f}")
        print(f"  standard            correctly rounded to {row['out_dtype']} from {source}; reduction length K = {row['reduction']}")
    print(f"  excess              {excess:.3g} x its standard (the suite measured {recorded:.3g} on the recorded stack)")
    print(f"PAST ITS STANDARD (x{excess:.2f})" if excess > 1.0 else f"within its standard (x{excess:.2f})")
    return 1 if excess > 1.0 else 0


if __name__ == "__main__":
    sys.exit(main())
'''


def write_bundle(directory: Path, call: OpCall, device: str, result: dict, *, case: str = "", model: str = "") -> Path:
    """Write the bundle into `directory`; repro.py's path. `case`, `model`: named in its docstring."""
    tensors: dict[str, torch.Tensor] = {}
    arguments = {"args": standard.encode(call.args, tensors), "kwargs": standard.encode(call.kwargs, tensors)}
    saved, storages, strides = {}, set(), {}
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            strides[name] = list(tensor.stride())
        tensor = tensor.detach().cpu().contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in storages:  # one storage per name, as safetensors wants
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        saved[name] = tensor
    finite = {k: v if not isinstance(v, float) or math.isfinite(v) else repr(v) for k, v in result.items()}
    record = {"op": call.op, "module": call.module, "phase": call.phase, "calls": call.calls, "shapes": call.shapes, "dtypes": call.dtypes,
              "case": case, "model": model, "device": device, "stack": stack(device), "suite_result": finite, "arguments": arguments,
              "strides": strides}
    text = "{\n" + ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in record.items()) + "\n}"  # a key a line
    clean = lambda s: str(s).replace("\\", "/").replace('"""', "'''")  # noqa: E731 - nothing may end the docstring
    doc = _DOC.format(op=call.op, device=device, module=clean(call.module or "(top level)"), phase=call.phase, calls=call.calls,
                      case=clean(case or "?"), model=f", model {clean(model)}" if model else "", stack=clean(record["stack"]),
                      shapes=", ".join("x".join(map(str, s)) or "scalar" for s in call.shapes), dtypes=", ".join(call.dtypes),
                      excess=f"{float(result.get('excess', 0.0)):.3g}")
    source = re.sub(r"^from __future__ import annotations\n", "", inspect.getsource(standard), count=1, flags=re.M)
    note = (f"# Inputs {', '.join(f'{n} (strides {s})' for n, s in strides.items())} were not contiguous on the device: saved "
            "contiguous, main() lays them out with those strides again (CALL['strides']).\n") if strides else ""
    script = (f"{doc}\n# ---- csm_conformance/accuracy/ops/standard.py ----\n\n{source}\n\n# ---- the recorded call ----\n\n{note}"
              f'CALL = json.loads(r"""{text}""")\n\n\n{inspect.getsource(stack)}{_MAIN}')
    directory.mkdir(parents=True, exist_ok=True)
    save_file(saved, str(directory / "inputs.safetensors"), metadata={"op": call.op, "module": call.module})
    (directory / "call.json").write_text(text + "\n", encoding="utf-8")
    (directory / "repro.py").write_text(script, encoding="utf-8")
    return directory / "repro.py"


def write_bundles(ops_dir: Path, case_ops, which: str = "past", limit: int = 10, *, model: str = "",
                  match: tuple[str, ...] = (), skip: tuple[int, ...] = ()) -> dict[int, str]:
    """Bundles for the first `limit` ranked rows, past their standard (`past`) or all (`all`), or for
    the first `limit` rows anywhere in the ranking whose "<op> at <module>" contains one of `match`
    (`match`: a bundle on demand for any call), numbered after the `<n>-*` folders already in
    `ops_dir`, so several cases share one; {rank: repro.py relative to ops_dir}. `skip`: ranks already
    bundled."""
    if which not in ("past", "all", "match"):
        raise ValueError(f"which must be 'past', 'all' or 'match', not {which!r}")
    taken = [int(m.group(1)) for p in (ops_dir.iterdir() if ops_dir.is_dir() else []) if p.is_dir() and (m := re.match(r"(\d+)-", p.name))]
    number, written = max(taken, default=0), {}
    ranked = list(enumerate(case_ops.ranked, 1))
    if which == "match":
        ranked = [(r, j) for r, j in ranked if r not in skip and any(text in f"{j.call.op} at {j.call.module}" for text in match)]
    for rank, judged in ranked[:limit]:
        if which == "past" and not judged.past:
            continue
        number += 1
        folder = ops_dir / f"{number}-{judged.call.op.split('.')[1]}"
        written[rank] = write_bundle(folder, judged.call, case_ops.device, judged.result, case=case_ops.case, model=model).relative_to(ops_dir).as_posix()
    return written
