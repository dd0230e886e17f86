"""Golden references: the CPU reference outputs of a known-good stack, kept in baselines/golden/.

The device-vs-CPU comparison is blind to a transformers bug that changes the CPU and the device
alike. Comparing today's CPU reference with one saved on a trusted stack catches that drift.
One safetensors file per case (logits are only vocab x tokens floats), with the stack's versions
and the weights' digest in its metadata.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from csm_conformance.baseline_files import BaselineError


def golden_path(baselines_dir: Path, model_key: str, case_id: str) -> Path:
    return Path(baselines_dir) / "golden" / model_key / f"{case_id}.safetensors"


def save_golden(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"meta": json.dumps({**meta, "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})}
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_golden(path: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata), None when absent, BaselineError when the file is unusable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BaselineError(f"golden file {path} is corrupt: {first}") from None
    return tensors, meta
