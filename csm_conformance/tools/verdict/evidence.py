"""Reading the two stacks' run directories, and the A/B report, into what the judgement needs.

Kept apart from the judgement because the two fail differently: a report that exists but cannot be
read is bad input (VerdictError, one line, exit 2), raised before anything is judged; a report that
is missing is only missing evidence, which judge.decide turns into INCONCLUSIVE.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.errors import UserError
from csm_conformance.reports import ops_report
from csm_conformance.reports import schema as report_schema

ACCURACY_FILE = "accuracy_evaluation.json"
PERFORMANCE_FILE = "performance_benchmark.json"
JUNIT_FILE = "junit.xml"
STATUS_FILE = "run_status.json"
OPS_FILE = "ops/ops.json"  # the operator report, written by the gate for a red logits or decode-loop check (accuracy/ops)


class VerdictError(UserError, ValueError):
    """A report that exists but cannot be read; the message is one line."""


@dataclass
class Side:
    """One stack's run, as its reports describe it."""

    label: str
    path: Path
    accuracy: dict | None = None
    performance: dict | None = None
    status: dict | None = None
    tests: dict[str, str] | None = None  # junit: test id -> passed | failed | error | skipped
    ops: dict | None = None  # ops/ops.json (schema ops-1), when the run wrote one

    @property
    def meta(self) -> dict:
        return self.accuracy or (self.performance or {}).get("csm") or {}

    @property
    def versions(self) -> dict:
        return self.meta.get("versions") or (self.status or {}).get("versions") or {}

    @property
    def stack(self) -> dict | None:
        """The stack fingerprint the run recorded (runtime/stack.py: "stack" in its accuracy report,
        else its performance report); None in reports written before it was recorded."""
        for doc in (self.accuracy, self.performance, (self.performance or {}).get("csm")):
            if isinstance((doc or {}).get("stack"), dict):
                return doc["stack"]
        return None

    def identity(self) -> tuple:
        meta = self.meta
        return ((meta.get("model") or {}).get("key"), (meta.get("device") or {}).get("device"), meta.get("dtype"))

    def planted_faults(self) -> list[str]:
        faults = list(((self.accuracy or {}).get("settings") or {}).get("planted_faults") or [])
        faults += ((self.performance or {}).get("csm") or {}).get("planted_faults") or []
        return sorted(set(faults))

    def failed_tests(self) -> list[str]:
        return sorted(t for t, s in (self.tests or {}).items() if s in ("failed", "error"))


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerdictError(f"{path} is not readable JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(document, dict):
        raise VerdictError(f"{path} is not a JSON object")
    return document


def _read_junit(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise VerdictError(f"{path} is not readable JUnit XML ({exc})") from None
    tests = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        tests[name] = ("error" if "error" in kinds else "failed" if "failure" in kinds
                       else "skipped" if "skipped" in kinds else "passed")
    return tests


def read_ops(path: Path) -> dict | None:
    """An operator report (ops-1), checked; None when there is none; a damaged one is a VerdictError."""
    try:
        return ops_report.read(path)
    except report_schema.ReportSchemaError as exc:
        raise VerdictError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VerdictError(f"{path} is not readable ({exc.__class__.__name__}: {exc})") from None


def read_run_ops(path: Path) -> dict | None:
    """The run's operator report: <run>/ops/ops.json, or under pytest-xdist (no merged one) every
    worker's <run>/gwK/ops/ops.json, their cases together, each repro path made relative to <run>/ops."""
    whole = read_ops(path / OPS_FILE)
    if whole is not None:
        return whole
    merged = None
    for worker_file in sorted(path.glob(f"gw*/{OPS_FILE}")):
        doc = read_ops(worker_file)
        worker = worker_file.parent.parent.name
        for entry in doc["cases"]:
            for row in entry["operators"]:
                row["repro"] = f"../{worker}/ops/{row['repro']}" if row.get("repro") else row.get("repro")
        if merged is None:
            merged = doc
        else:
            merged["cases"] += doc["cases"]
    return merged


def read_side(label: str, path: Path) -> Side:
    path = Path(path)
    if not path.is_dir():
        raise VerdictError(f"{label}: {path} is not a directory (run the gate for that stack first)")
    side = Side(label, path, _read_json(path / ACCURACY_FILE), _read_json(path / PERFORMANCE_FILE),
                 _read_json(path / STATUS_FILE), _read_junit(path / JUNIT_FILE), read_run_ops(path))
    if side.performance is not None and not isinstance(side.performance.get("csm"), dict):
        raise VerdictError(f"{path / PERFORMANCE_FILE} has no 'csm' block: not written by csm-conformance")
    try:  # the written schemas (csm_conformance/reports/schemas/): a damaged or foreign report is one line, not a KeyError
        if side.accuracy is not None:
            report_schema.validate(side.accuracy, "accuracy", str(path / ACCURACY_FILE))
        if side.performance is not None:
            report_schema.validate(side.performance["csm"], "performance", str(path / PERFORMANCE_FILE))
    except report_schema.ReportSchemaError as exc:
        raise VerdictError(str(exc)) from None
    return side


AB_KEYS = {"document": ("verdict", "reasons", "cases", "before", "after", "model", "device", "dtype", "kind", "budget"),
           "case": ("case", "decision", "pairs", "stop_reason", "figures"),
           "figure": ("figure", "decision", "tolerance")}


def read_ab(path: Path) -> dict | None:
    """ab.json from an A/B output directory (or the file itself); None when the comparison wrote
    none (it stopped on bad input: the verdict then lacks performance evidence, INCONCLUSIVE)."""
    path = Path(path)
    path = path / "ab.json" if path.is_dir() or not path.suffix else path
    document = _read_json(path)
    if document is None:
        return None
    missing = [k for k in AB_KEYS["document"] if k not in document]
    missing += [f"cases[{i}].{k}" for i, c in enumerate(document.get("cases") or []) for k in AB_KEYS["case"] if k not in c]
    missing += [f"cases[{i}].figures[{j}].{k}" for i, c in enumerate(document.get("cases") or []) for j, f in enumerate(c.get("figures") or [])
                for k in AB_KEYS["figure"] if k not in f]
    if missing or document.get("verdict") not in ("SAFE", "REGRESSED", "INCONCLUSIVE"):
        raise VerdictError(f"{path} is not a complete A/B report (missing: {', '.join(missing[:4]) or 'a verdict'})")
    document["_path"] = str(path)
    return document


NO_AB = {"missing": True}  # --ab was given and the comparison wrote no report
