"""Dumps: one case's per-module captures on disk, and the offline comparison of two of them.

A fault seen on one machine is often to be compared with a run on another (another device, another
stack); `--csm-dump` writes each side's captures with the metadata that labels them, and this
module writes, reads and checks those files and compares two dumps with the same rule as a live run.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from csm_conformance.accuracy.localize.hooks import component_of
from csm_conformance.accuracy.localize.report import Localization, localize
from csm_conformance.accuracy.localize.rule import DumpError, coarser, dtype_eps

SCHEMA = 1
META_KEY = "csm_localize"


def _side_meta(session, side: str, case_id: str, kind: str, order: list[str]) -> dict:
    meta = session.run_meta()
    if side == "reference":
        meta["device"] = {"device": "cpu", "type": "cpu", "name": "cpu", "spec": "cpu", "count": 1}
        meta["dtype"] = "float32"
    return {"schema": SCHEMA, "side": side, "case": case_id, "kind": kind, "model": meta["model"],
            "device": meta["device"], "dtype": meta["dtype"], "versions": meta["versions"],
            "faults": list(session.fault_notes) if side == "device" else [], "order": order}


def _label(meta: dict) -> str:
    versions = meta.get("versions") or {}
    stack = ", ".join(f"{k} {versions[k]}" for k in ("torch", "torch_npu", "transformers") if k in versions)
    device = (meta.get("device") or {}).get("device", "?")
    faults = " [PLANTED FAULT]" if meta.get("faults") else ""
    return f"{meta.get('side', '?')} {device} {meta.get('dtype', '?')} ({stack}){faults}"


def save_dump(directory: Path, sides: dict) -> list[Path]:
    """<dir>/reference.safetensors and device.safetensors (keys: module names, float32; the
    metadata key `csm_localize` holds the side's JSON metadata with the module order), and
    dump.json, a readable copy of both sides' metadata."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    sidecar = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "sides": {}}
    for side, (tensors, meta) in sides.items():
        path = directory / f"{side}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={META_KEY: json.dumps(meta)})
        tmp.replace(path)
        paths.append(path)
        sidecar["sides"][side] = {"file": path.name, **{k: v for k, v in meta.items() if k != "order"},
                                  "modules": [{"name": n, "component": component_of(n), "shape": list(tensors[n].shape)} for n in meta["order"]]}
        sidecar.setdefault("case", meta["case"])
    (directory / "dump.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return paths + [directory / "dump.json"]


def load_side(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """One side of a dump: a dump directory means its device side; a .safetensors file is that side."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "device.safetensors"
    if not path.exists():
        raise DumpError(f"{path} does not exist (give a dump directory <dump>/<case> or one of its .safetensors files)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for garbled files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DumpError(f"{path} is not a readable safetensors dump: {first}") from None
    if raw is None:
        raise DumpError(f"{path} has no '{META_KEY}' metadata: it was not written by --csm-dump")
    try:
        meta = json.loads(raw)
        order = list(meta["order"])
        dtype_eps(meta["dtype"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DumpError(f"{path}: its '{META_KEY}' metadata is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in order if k not in tensors]
    if missing:
        raise DumpError(f"{path}: module {missing[0]} is listed in its metadata but has no tensor")
    return {k: tensors[k] for k in order}, meta


def compare_dumps(path_a: str | Path, path_b: str | Path) -> Localization:
    (a, meta_a), (b, meta_b) = load_side(path_a), load_side(path_b)
    if meta_a.get("case") != meta_b.get("case"):
        raise DumpError(f"the dumps are of different cases: {meta_a.get('case')} vs {meta_b.get('case')}")
    digest_a = (meta_a.get("model") or {}).get("weights_digest")
    digest_b = (meta_b.get("model") or {}).get("weights_digest")
    if digest_a and digest_b and digest_a != digest_b:
        raise DumpError(f"the dumps are of different weights: {digest_a} vs {digest_b}")
    if not set(a) & set(b):
        raise DumpError("the dumps share no module name")
    loc = localize(meta_a["case"], a, b, coarser(meta_a["dtype"], meta_b["dtype"]), "A: " + _label(meta_a), "B: " + _label(meta_b))
    loc.notes.extend(f"{who} planted fault: {n}" for who, m in (("A", meta_a), ("B", meta_b)) for n in m.get("faults") or [])
    return loc
