"""The console summary at the end of the run (SuiteRun.display, from pytest_terminal_summary): the
accuracy table, the performance table, and the lines that say a worker or the setup failed. Apart
from the run because it is formatting only: it reads the run's state and writes lines."""

from __future__ import annotations

import pytest

from csm_conformance.plugin.state import RunState, _is_xdist_controller
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.reports import ops_report
from csm_conformance.reports import performance_report as perf_reporting
from csm_conformance.results import Status
from csm_conformance.suite import op_checks


def display(tr, conf, state: RunState, config: pytest.Config) -> None:
    """The console summary of the run (SuiteRun.display): accuracy, performance, failed set-ups."""
    if any(p.results for p in state.parts):
        _accuracy_summary(tr, conf, state)
    elif _is_xdist_controller(config) and state.parts:
        tr.write_line("csm-conformance: pytest-xdist workers: " + ", ".join(
            f"{p.label} ({p.meta['device']['name']})" for p in state.parts))
    if op_checks.reported(conf):
        _operators_summary(tr, conf)
    if conf.perf.results or state.perf_skipped:
        _performance_summary(tr, conf, state)
    for part in state.parts:
        if part.setup_error:
            tr.write_line(f"ERROR: csm-conformance: {part.worker}: {part.setup_error}", red=True)
    for line in state.down:
        tr.write_line(f"csm-conformance: {line}", red=True)


def _operators_summary(tr, conf) -> None:
    """Each case whose operators were judged (a red check's case, or --csm-ops): its table."""
    tr.section("csm-conformance operators")
    for case, entry in op_checks.reported(conf).items():
        if isinstance(entry, str):
            tr.write_line(f"{case}: {entry}", yellow=True)
            continue
        for line in ops_report.table(entry, rows=5).splitlines():
            tr.write_line(line, red=entry["past_standard"] > 0 and line.startswith("operators"))
    tr.write_line(f"report: {op_checks.ops_dir(conf) / 'ops.json'} (tables: {op_checks.ops_dir(conf)}/<case>.txt)")


def _performance_summary(tr, conf, state: RunState) -> None:
    tr.section("csm-conformance performance summary")
    for line in perf_reporting.skipped_lines(state.perf_skipped):
        tr.write_line(line, yellow=not conf.settings.csm_strict, red=conf.settings.csm_strict)
    if not conf.perf.results:
        return
    ident = conf.identity
    tr.write_line(f"model {ident.describe() if ident else conf.model_key}")
    tr.write_line(f"device {conf.device.device} ({conf.device.fingerprint}) dtype {conf.dtype_name}; "
                  f"{conf.settings.csm_perf_warmup} warm-up + {conf.settings.csm_perf_rounds} rounds, median")
    for note in conf.fault_notes:
        tr.write_line(f"PLANTED FAULT: {note}", red=True)
    for line in perf_reporting.console_table(conf.perf):
        tr.write_line(line)
    for r in conf.perf.results:
        if r.status in (Status.REGRESSED, Status.IMPROVED):
            tr.write_line(f"{r.case}: {r.messages[0]}", red=r.failed, green=r.status is Status.IMPROVED)
    missing = [r for r in conf.perf.results if r.status is Status.NO_BASELINE]
    if missing:
        tr.write_line(f"{len(missing)} case(s) have no baseline for {conf.device.fingerprint}: e.g. {missing[0].messages[-1]}", yellow=True)
    for path in state.perf_report_paths:
        tr.write_line(f"report: {path}")


def _accuracy_summary(tr, conf, state: RunState) -> None:
    tr.section("csm-conformance accuracy summary")
    parts = state.parts
    first = parts[0]
    model = next((p.describe_model() for p in parts if p.describe_model()), None) or conf.model_key
    tr.write_line(f"model {model}")
    if len(parts) > 1 or first.worker:
        devices_line = ", ".join(f"{p.label} ({p.meta['device']['name']}, {p.model_loads} model load(s), "
                                 f"{p.meta['device'].get('torch_threads', '?')} torch thread(s))" for p in parts)
        tr.write_line(f"devices (one per pytest-xdist worker): {devices_line}")
        tr.write_line(f"dtype {conf.dtype_name} vs cpu float32; min cosine {conf.settings.csm_min_cosine}; "
                      f"bounds {first.bounds_file}{'' if first.bounds_present else ' (absent)'}")
    else:
        tr.write_line(f"device {first.device} ({first.meta['device']['name']}) dtype {conf.dtype_name} vs cpu float32; "
                      f"min cosine {conf.settings.csm_min_cosine}; bounds {first.bounds_file}{'' if first.bounds_present else ' (absent)'}")
    for note in dict.fromkeys(n for p in parts for n in p.fault_notes):
        tr.write_line(f"PLANTED FAULT: {note}", red=True)
    for line in reporting.console_table(parts):
        tr.write_line(line)
    counts = reporting.status_counts(parts)
    tr.write_line("checks: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "   ('!' outside bound, '?' no bound stored)")
    outcome = next((p.record_outcome for p in parts if p.record_outcome), None)
    if outcome:
        tr.write_line(outcome, red=outcome.startswith("bounds NOT"), green=not outcome.startswith("bounds NOT"))
    for path in state.report_paths:
        tr.write_line(f"report: {path}")
