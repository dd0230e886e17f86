"""Per-case accuracy bounds stored under baselines/accuracy/, keyed by (model, device type, dtype).

A bound is recorded from a clean run as `error * (1 + margin) + floor`, in each metric's error
form (1 - cosine, 1 - agreement, noise/signal for SNR, the value itself for errors), and stored
in the metric's natural unit. The floor keeps a bound recorded from an exact match (float32 on
the CPU against itself) from demanding exactness forever.

Bounds remember the weights they were measured on: bounds for other weights are an error, not a
silent comparison against numbers that mean something else.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.accuracy.metrics import better, floor, from_error, kind, known, to_error
from csm_conformance.baseline_files import BaselineError, read_baseline_json

SCHEMA = 1
def bounds_path(baselines_dir: Path, model_key: str, device_type: str, dtype: str) -> Path:
    return Path(baselines_dir) / "accuracy" / model_key / f"{device_type}-{dtype}.json"


def bound_from_measurement(metric: str, value: float, margin: float) -> float:
    error = to_error(metric, value)
    bound = from_error(metric, error * (1.0 + margin) + floor(metric))
    if better(metric) == "higher" and kind(metric) != "snr_db":
        bound = max(bound, 0.0)
    return bound


@dataclass
class BoundsBook:
    path: Path
    data: dict

    @classmethod
    def load(cls, path: Path) -> "BoundsBook | None":
        """The stored bounds, None when there is no file, BaselineError when it is unusable."""
        path = Path(path)
        data = read_baseline_json(path, "bounds file {path} is corrupt: {exc}")
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("cases"), dict):
            raise BaselineError(f"bounds file {path} is not a schema-{SCHEMA} bounds file (re-record with --csm-record-bounds)")
        for case, checks in data["cases"].items():
            for check, metrics in (checks or {}).items():
                for metric, entry in (metrics or {}).items():
                    if not known(metric) or not isinstance(entry, dict) or not isinstance(entry.get("bound"), (int, float)):
                        raise BaselineError(f"bounds file {path} has a bad entry at {case}/{check}/{metric}")
                    if not math.isfinite(entry["bound"]):  # an infinite bound would pass anything
                        raise BaselineError(f"bounds file {path} has {entry['bound']} at {case}/{check}/{metric}")
        return cls(path, data)

    def check_weights(self, weights_digest: str | None) -> None:
        stored = (self.data.get("model") or {}).get("weights_digest")
        if stored and weights_digest and stored != weights_digest:
            raise BaselineError(
                f"bounds in {self.path} were recorded on weights {stored}, but this model's are {weights_digest}: "
                "re-record with --csm-record-bounds"
            )

    def bounds_of(self, case: str, check: str) -> dict[str, float]:
        """{metric: bound} of every metric stored for one check of one case."""
        return {m: float(e["bound"]) for m, e in ((self.data["cases"].get(case) or {}).get(check) or {}).items()}

    def bound(self, case: str, check: str, metric: str) -> float | None:
        entry = ((self.data["cases"].get(case) or {}).get(check) or {}).get(metric)
        return None if entry is None else float(entry["bound"])


def build_bounds(measured: dict, margin: float, meta: dict) -> dict:
    """`measured` is {case: {check: {metric: value}}}; returns the JSON document to store."""
    cases = {
        case: {
            check: {
                metric: {"measured": value, "bound": bound_from_measurement(metric, value, margin)}
                for metric, value in sorted(metrics.items())
                if known(metric) and math.isfinite(value)
            }
            for check, metrics in sorted(checks.items())
        }
        for case, checks in sorted(measured.items())
    }
    return {
        "schema": SCHEMA,
        "margin": margin,
        "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "cases": cases,
    }


def write_bounds(path: Path, document: dict, merge_with: "BoundsBook | None" = None) -> None:
    """Write bounds; every check not measured in this run keeps its stored bounds (a run with
    `-k decode_loop` adds that check and leaves the case's others alone). When stored bounds are
    kept, so is the stored file's description (when, where and on which stack it was recorded, its
    notes), with a note naming what this run recorded, where and on which stack."""
    if merge_with is not None:
        old = merge_with.data
        merged = {case: dict(checks or {}) for case, checks in old["cases"].items()}
        for case, checks in document["cases"].items():
            merged.setdefault(case, {}).update(checks)
        measured = document["cases"]
        kept = any(check not in measured.get(case, {}) for case, checks in old["cases"].items() for check in (checks or {}))
        if kept:
            checks = sorted({check for per_case in measured.values() for check in per_case})
            where = (document.get("device") or {}).get("name", "an unnamed device")
            note = (f"{document['recorded']}: {', '.join(checks) or 'no'} bounds of {len(measured)} case(s) recorded on {where} "
                    f"({document.get('versions')}) with margin {document['margin']:g}, merged into this file; the other bounds are as they were")
            document = {**old, "notes": [*old.get("notes", []), note]}
        document = {**document, "cases": dict(sorted(merged.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
