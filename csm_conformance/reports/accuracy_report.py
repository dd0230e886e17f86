"""Reports people read: the console table, output/accuracy_evaluation.json, accuracy_summary.txt,
generated audio, and Allure attachments (a no-op when allure-pytest is not recording).

The accuracy reports are built from `Part`s: a plain run is one part, a pytest-xdist run one part
per worker (each worker's device), merged by the controller into one report."""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from csm_conformance.accuracy import metrics
from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.reports import schema as report_schema
from csm_conformance.runtime import devices
from csm_conformance.runtime import stack as runtime_stack
from csm_conformance.runtime.models import ModelIdentity

MARK = {True: " ", False: "!", None: "?"}


def header_lines(session, xdist_devices: list[str] | None = None) -> list[str]:
    versions = session.run_meta()["versions"]
    fp = runtime_stack.run_fingerprint(session.device.type)
    device = f"{session.device.device} ({session.device.name}, {session.device.count} visible)"
    if xdist_devices:
        device = (f"{session.device.type} ({session.device.name}), one per pytest-xdist worker: "
                  + ", ".join(f"gw{k} -> {d}" for k, d in enumerate(xdist_devices)))
    return [
        f"csm-conformance: model {session.settings.csm_model} -> {session.source.describe_spec()}",
        f"csm-conformance: device {device} | dtype {session.dtype_name} | reference cpu float32",
        f"csm-conformance: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"csm-conformance: stack: {runtime_stack.short_line(fp)} ({len(fp['distributions'])} distributions in all: "
        "\"stack\" in accuracy_evaluation.json)",
        f"csm-conformance: suite from {Path(__file__).resolve().parents[1]}, baselines {session.settings.baselines_dir}",
    ]


@dataclass
class Part:
    """The accuracy results of one process: the whole run, or one pytest-xdist worker's share of it.

    A worker cannot hand the controller its session (models, tensors), so it sends this instead,
    as plain data through `config.workeroutput`; the controller merges the parts into one report.
    A plain run is a single part, so both kinds of run are reported by the same code.
    """

    worker: str | None  # "gw3" under pytest-xdist, None in a plain run
    meta: dict  # ConformanceSession.run_meta(): model, device, dtype, versions
    results: list  # CheckResult; skipped gate tests too (status "skipped", or "failed" under --csm-strict)
    fault_notes: list[str] = field(default_factory=list)
    record_outcome: str | None = None
    bounds_file: str = ""
    bounds_present: bool = False
    model_loads: int = 0  # times a session fixture loaded models in this process (1 when all is well)
    setup_error: str | None = None
    stack: dict | None = None  # runtime/stack.py fingerprint of this process's stack

    @classmethod
    def of(cls, session, worker: str | None, skipped: list[dict], model_loads: int, setup_error: str | None = None) -> "Part":
        results = list(session.results) + [
            CheckResult(s["case"], s["check"], status=s["status"], messages=[s["reason"]]) for s in skipped
        ]
        return cls(worker, session.run_meta(), results, list(session.fault_notes), session.record_outcome,
                   str(session.bounds_file), session.bounds is not None, model_loads, setup_error,
                   runtime_stack.run_fingerprint(session.device.type))

    @property
    def device(self) -> str:
        return self.meta["device"]["device"]

    def describe_model(self) -> str | None:
        model = self.meta.get("model")
        if not model:
            return None
        return ModelIdentity(**{k: v for k, v in model.items() if k != "claim"}).describe()

    @property
    def label(self) -> str:
        return f"{self.worker} {self.device}" if self.worker else self.device

    def to_wire(self) -> dict:
        """Plain data for execnet (pytest-xdist's channel), which refuses subclasses of str such as
        torch's version string: a JSON round trip leaves only builtins (NaN included). Every metric
        row is kept, where CheckResult.as_dict keeps one per metric."""
        return json.loads(json.dumps(self._wire()))

    def _wire(self) -> dict:
        return {
            **{k: getattr(self, k) for k in ("worker", "meta", "fault_notes", "record_outcome", "bounds_file",
                                             "bounds_present", "model_loads", "setup_error", "stack")},
            "results": [{"case": r.case, "check": r.check, "status": r.status.value, "messages": list(r.messages),
                         "rows": [asdict(row) for row in r.rows]} for r in self.results],
        }

    @classmethod
    def from_wire(cls, data: dict) -> "Part":
        results = [CheckResult(r["case"], r["check"], [MetricRow(**row) for row in r["rows"]], r["status"], r["messages"])
                   for r in data["results"]]
        return cls(**{k: v for k, v in data.items() if k != "results"}, results=results)


def _worker_number(part: Part) -> int:
    return int(part.worker[2:]) if part.worker and part.worker[2:].isdigit() else -1


def sort_parts(parts: list[Part]) -> list[Part]:
    return sorted(parts, key=_worker_number)


def _rows(parts: list[Part]):
    """(part, result) in report order: worker by worker, each in the order its tests ran."""
    for part in sort_parts(parts):
        for res in part.results:
            yield part, res


def _closeness(row) -> float:
    """How near its limit a row is: error / bound error (NaN counts as infinitely far past it),
    the error itself when there is no bound."""
    error = metrics.to_error(row.metric, row.value) if metrics.known(row.metric) else row.value
    if math.isnan(error):
        return math.inf
    if row.bound is None or not metrics.known(row.metric):
        return error
    return error / max(metrics.to_error(row.metric, row.bound), 1e-300)


def _worse(row, prev) -> bool:
    """Should `row` stand for its metric's column instead of `prev`? A failure over a pass, a
    judged row over an unjudged one, then the row nearest its limit (the worst module of the
    module-local check)."""
    if prev is None:
        return True
    rank = lambda r: (r.ok is False, r.ok is not None)  # noqa: E731
    if rank(row) != rank(prev):
        return rank(row) > rank(prev)
    return _closeness(row) > _closeness(prev)


def console_table(parts: list[Part]) -> list[str]:
    """One row per (case, check), one column per metric; '!' marks a failure, '?' a missing bound.
    With several workers a device column says which card each row ran on."""
    rows_in = list(_rows(parts))
    by_device = len(parts) > 1
    used = [(m, entry.column) for m, entry in metrics.METRICS.items() if any(metrics.kind(r.metric) == m for _, res in rows_in for r in res.rows)]
    head = (["device"] if by_device else []) + ["case", "check", "result"] + [short for _, short in used]
    rows = []
    for part, res in rows_in:
        cells = ([part.label] if by_device else []) + [res.case, res.check, res.status.upper()]
        by_metric = {}
        for row in res.rows:  # several rows of one metric (floor and bound, or one per module): the worst
            key = metrics.kind(row.metric)
            if _worse(row, by_metric.get(key)):
                by_metric[key] = row
        for metric, _ in used:
            row = by_metric.get(metric)
            mark = " " if row is not None and row.rule == "info" else MARK[row.ok] if row is not None else ""
            cells.append("" if row is None else metrics.formatted(metric, row.value) + mark)
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return out


def long_table(parts: list[Part]) -> list[str]:
    by_device = len(parts) > 1
    lead = lambda part: f"{part.label:<14} " if by_device else ""  # noqa: E731
    out = [(f"{'device':<14} " if by_device else "")
           + f"{'case':<16} {'check':<16} {'metric':<22} {'value':>14} {'rule':<9} {'bound':>14}  result"]
    for part, res in _rows(parts):
        if not res.rows:
            out.append(f"{lead(part)}{res.case:<16} {res.check:<16} {'-':<22} {'-':>14} {'-':<9} {'-':>14}  "
                       f"{res.status.upper()}: {'; '.join(res.messages)}")
        for row in res.rows:
            bound = "-" if row.bound is None else f"{row.bound:.7g}"
            verdict = {True: "PASS", False: "FAIL", None: "no bound" if row.rule == "unbounded" else "info"}[row.ok]
            out.append(f"{lead(part)}{res.case:<16} {res.check:<16} {row.metric:<22} {row.value:>14.7g} {row.rule:<9} {bound:>14}  {verdict}")
    return out


def status_counts(parts: list[Part]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, res in _rows(parts):
        counts[res.status.value] = counts.get(res.status.value, 0) + 1
    return counts


def _merged_device(parts: list[Part]) -> dict:
    """The top-level device of a report: the one device of a plain run; under pytest-xdist the first
    worker's description with every device the workers used listed in 'device'."""
    first = dict(sort_parts(parts)[0].meta["device"])
    used = list(dict.fromkeys(p.device for p in sort_parts(parts)))
    first["device"] = ", ".join(used)
    return first


def document(parts: list[Part], settings) -> dict:
    """The accuracy_evaluation.json document for one run, from one part or from every worker's."""
    parts = sort_parts(parts)
    meta = next((p.meta for p in parts if p.meta.get("model")), parts[0].meta)
    faults = list(dict.fromkeys(n for p in parts for n in p.fault_notes))
    return {
        "report_schema": report_schema.VERSIONS["accuracy"],  # csm_conformance/reports/schemas/accuracy-1.schema.json
        "suite": "csm-conformance accuracy",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "stack": next((p.stack for p in parts if p.stack), None),  # the workers share one environment: the first one's
        "device": _merged_device(parts),
        "reference": {"device": "cpu", "dtype": "float32"},
        "workers": [{"worker": p.worker, "device": p.meta["device"], "counts": status_counts([p]),
                     "model_loads": p.model_loads, "setup_error": p.setup_error} for p in parts],
        "settings": {
            "min_cosine": settings.csm_min_cosine,
            "strict": settings.csm_strict,
            "bounds_file": parts[0].bounds_file,
            "bounds_present": parts[0].bounds_present,
            "recording": settings.csm_record_bounds,
            "planted_faults": faults,
        },
        "counts": status_counts(parts),
        "record_outcome": next((p.record_outcome for p in parts if p.record_outcome), None),
        "results": [{**res.as_dict(), "worker": part.worker, "device": part.device} for part, res in _rows(parts)],
    }


def write_reports(parts: list[Part], settings, out_dir: Path | None = None) -> list[Path]:
    """accuracy_evaluation.json and accuracy_summary.txt in `out_dir` (default: the run's output dir)."""
    out_dir = settings.output_dir if out_dir is None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = document(parts, settings)
    json_path = out_dir / "accuracy_evaluation.json"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    model = doc["model"] or {}
    lines = [
        "CSM conformance: accuracy summary",
        f"model:     {model.get('key')} | weights {model.get('weights_digest')} | {model.get('claim')}",
    ]
    if len(parts) > 1:
        lines.append("devices:   " + ", ".join(f"{p.label} ({p.meta['device']['name']})" for p in sort_parts(parts))
                     + f" | dtype {doc['dtype']} | reference cpu float32")
    else:
        lines.append(f"device:    {doc['device']['device']} ({doc['device']['name']}) | dtype {doc['dtype']} | reference cpu float32")
    lines += [
        "stack:     " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
        f"bounds:    {doc['settings']['bounds_file']}{'' if doc['settings']['bounds_present'] else ' (absent)'}",
        "results:   " + ", ".join(f"{v} {k}" for k, v in sorted(doc["counts"].items())),
    ]
    if doc["settings"]["planted_faults"]:
        lines.append("faults:    " + "; ".join(doc["settings"]["planted_faults"]))
    if doc["record_outcome"]:
        lines.append("recording: " + doc["record_outcome"])
    lines += [""] + long_table(parts)
    summary_path = out_dir / "accuracy_summary.txt"
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json_path, summary_path]


def write_run_status(out_dir: Path, exitstatus: int, setup_error: str | None, workers_down: list[str]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "run_status.json"
    status = {"exitstatus": exitstatus, "setup_error": setup_error, "workers_down": workers_down,
              "versions": devices.software_versions(),
              "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    path.write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    return path


def wav_bytes(audio, sample_rate: int = 24000) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def attach_json(name: str, payload) -> None:
    try:
        import allure
    except ImportError:
        return
    allure.attach(json.dumps(payload, indent=2, default=str), name=name, attachment_type=allure.attachment_type.JSON)


def attach_wav(name: str, audio, sample_rate: int = 24000) -> None:
    try:
        import allure
    except ImportError:
        return
    allure.attach(wav_bytes(audio, sample_rate), name=name, attachment_type="audio/wav", extension="wav")


def attach_png(name: str, png: bytes) -> None:
    try:
        import allure
    except ImportError:
        return
    allure.attach(png, name=name, attachment_type=allure.attachment_type.PNG)
