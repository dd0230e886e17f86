"""Reports people read: the console table, output/accuracy_evaluation.json, accuracy_summary.txt,
generated audio, and Allure attachments (a no-op when allure-pytest is not recording)."""

from __future__ import annotations

import datetime as _dt
import io
import json
from pathlib import Path

import numpy as np

CONSOLE_METRICS = [
    ("cosine", "cosine"),
    ("worst_position_cosine", "worst_pos"),
    ("rel_error", "rel_err"),
    ("mae", "mae"),
    ("max_abs_error", "max_abs"),
    ("argmax_agreement", "argmax"),
    ("kl_divergence", "kl"),
    ("snr_db", "snr_db"),
    ("code_agreement", "codes"),
]
MARK = {True: " ", False: "!", None: "?"}


def _fmt(metric: str, value: float) -> str:
    if metric in ("cosine", "worst_position_cosine"):
        return f"{value:.7f}"
    if metric in ("argmax_agreement", "code_agreement"):
        return f"{value:.4f}"
    if metric == "snr_db":
        return f"{value:.2f}"
    return f"{value:.3e}"


def header_lines(session) -> list[str]:
    versions = session.run_meta()["versions"]
    stack = ", ".join(f"{k} {v}" for k, v in versions.items())
    return [
        f"csm-conformance: model {session.settings.csm_model} -> {session.source.describe_spec()}",
        f"csm-conformance: device {session.device.device} ({session.device.name}, {session.device.count} visible) | dtype {session.dtype_name} | reference cpu float32",
        f"csm-conformance: {stack}",
    ]


def console_table(session) -> list[str]:
    """One row per (case, check), one column per metric; '!' marks a failure, '?' a missing bound."""
    results = session.results
    used = [(m, short) for m, short in CONSOLE_METRICS if any(r.metric == m for res in results for r in res.rows)]
    head = ["case", "check", "result"] + [short for _, short in used]
    rows = []
    for res in results:
        cells = [res.case, res.check, res.status.upper()]
        by_metric = {}
        for row in res.rows:  # a floor row and a bound row for the same metric: show the worse verdict
            prev = by_metric.get(row.metric)
            if prev is None or (row.ok is False) or (prev.ok is None and row.ok is not None):
                by_metric[row.metric] = row
        for metric, _ in used:
            row = by_metric.get(metric)
            mark = " " if row is not None and row.rule == "info" else MARK[row.ok] if row is not None else ""
            cells.append("" if row is None else _fmt(metric, row.value) + mark)
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return out


def long_table(session) -> list[str]:
    out = [f"{'case':<16} {'check':<16} {'metric':<22} {'value':>14} {'rule':<9} {'bound':>14}  result"]
    for res in session.results:
        if not res.rows:
            out.append(f"{res.case:<16} {res.check:<16} {'-':<22} {'-':>14} {'-':<9} {'-':>14}  {res.status.upper()}: {'; '.join(res.messages)}")
        for row in res.rows:
            bound = "-" if row.bound is None else f"{row.bound:.7g}"
            verdict = {True: "PASS", False: "FAIL", None: "no bound" if row.rule == "unbounded" else "info"}[row.ok]
            out.append(f"{res.case:<16} {res.check:<16} {row.metric:<22} {row.value:>14.7g} {row.rule:<9} {bound:>14}  {verdict}")
    return out


def status_counts(session) -> dict[str, int]:
    counts: dict[str, int] = {}
    for res in session.results:
        counts[res.status] = counts.get(res.status, 0) + 1
    return counts


def write_reports(session) -> list[Path]:
    out_dir = session.settings.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = session.run_meta()
    document = {
        "suite": "csm-conformance accuracy",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "reference": {"device": "cpu", "dtype": "float32"},
        "settings": {
            "min_cosine": session.settings.csm_min_cosine,
            "strict": session.settings.csm_strict,
            "bounds_file": str(session.bounds_file),
            "bounds_present": session.bounds is not None,
            "recording": session.settings.csm_record_bounds,
            "planted_faults": session.fault_notes,
        },
        "counts": status_counts(session),
        "record_outcome": session.record_outcome,
        "results": [r.as_dict() for r in session.results],
    }
    json_path = out_dir / "accuracy_evaluation.json"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    model = meta["model"] or {}
    lines = [
        "CSM conformance: accuracy summary",
        f"model:     {model.get('key')} | weights {model.get('weights_digest')} | {model.get('claim')}",
        f"device:    {meta['device']['device']} ({meta['device']['name']}) | dtype {meta['dtype']} | reference cpu float32",
        f"stack:     " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"bounds:    {session.bounds_file}{'' if session.bounds is not None else ' (absent)'}",
        f"results:   " + ", ".join(f"{v} {k}" for k, v in sorted(status_counts(session).items())),
    ]
    if session.fault_notes:
        lines.append("faults:    " + "; ".join(session.fault_notes))
    if session.record_outcome:
        lines.append("recording: " + session.record_outcome)
    lines += [""] + long_table(session)
    summary_path = out_dir / "accuracy_summary.txt"
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json_path, summary_path]


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
