"""The run: the object pytest registers as a plugin for one session, as pytest-benchmark does with
its BenchmarkSession. It owns the end of the run: finish() writes the reports and run_status.json
(on a pytest-xdist worker it hands its part to the controller instead, which merges every part it
receives), display() writes the console summary (summary.py formats it).

Why an object and not module hooks: the end of the run needs the session's verdicts and what this
process saw (RunState); an object that holds both says so in its signature, and exists only when
pytest_configure built a session, so no hook has to ask whether there is one.
"""

from __future__ import annotations

import pytest

from csm_conformance.plugin.state import SETUP_ERROR_KEY, WIRE_KEY, RunState, _is_xdist_controller, _worker_id
from csm_conformance.plugin.summary import display
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.reports import performance_report as perf_reporting
from csm_conformance.suite.session import ConformanceSession

PLUGIN_NAME = "csm-conformance-run"


class SuiteRun:
    def __init__(self, config: pytest.Config, session: ConformanceSession, state: RunState):
        self.config = config
        self.session = session
        self.state = state

    # ---- hooks (pluggy takes every pytest_* attribute of a registered object) ----------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.finish(session)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """pytest-xdist controller: keep what a finished worker sent."""
        payload = (getattr(node, "workeroutput", None) or {}).get(WIRE_KEY)
        worker = node.workerinput.get("workerid", "?") if getattr(node, "workerinput", None) else "?"
        if payload:
            self.state.parts.append(reporting.Part.from_wire(payload["accuracy"]))
            self.state.perf_skipped += payload["performance_skipped"]
        if error is not None:
            self.state.down.append(f"{worker} went down before sending its results: {error}")

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables: the verdict is the last thing printed
    def pytest_terminal_summary(self, terminalreporter) -> None:
        self.display(terminalreporter)

    # ---- the end of the run ----------------------------------------------------------------------
    def finish(self, session: pytest.Session) -> None:
        conf, state, config = self.session, self.state, self.config
        if _is_xdist_controller(config):  # one merged report from every worker's part
            state.parts = reporting.sort_parts(state.parts)
            if any(p.setup_error for p in state.parts):
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            if any(p.results for p in state.parts):
                state.report_paths = reporting.write_reports(state.parts, conf.settings)
            self._write_run_status(session)
            return
        worker = _worker_id(config)
        part = reporting.Part.of(conf, worker, [s for s in state.skipped if s["marker"] == "accuracy"],
                                 state.model_loads, config.stash.get(SETUP_ERROR_KEY, None))
        if conf.results:
            conf.finish()
            if conf.record_outcome and conf.record_outcome.startswith("bounds NOT"):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            part.record_outcome = conf.record_outcome
        if part.results:
            state.parts = [part]
            state.report_paths = reporting.write_reports(state.parts, conf.settings)
        state.perf_skipped = [s for s in state.skipped if s["marker"] == "performance"]
        if conf.perf.results:
            state.perf_report_paths = self._write_perf_reports()
        if worker:
            config.workeroutput[WIRE_KEY] = {"accuracy": part.to_wire(), "performance_skipped": state.perf_skipped}
        else:
            self._write_run_status(session)

    def _write_perf_reports(self) -> list:
        import pytest_benchmark

        bs = getattr(self.config, "_benchmarksession", None)
        machine_info = bs.get_machine_info() if bs is not None else {}
        commit_info = self.config.hook.pytest_benchmark_generate_commit_info(config=self.config) if bs is not None else {}
        return perf_reporting.write_reports(self.session.perf, machine_info, commit_info, pytest_benchmark.__version__, self.state.perf_skipped)

    def _write_run_status(self, session: pytest.Session) -> None:
        """run_status.json: how the run ended, for the upgrade verdict. A run that stopped at setup
        (a model that no longer loads) leaves no other report that says so."""
        setup_error = self.config.stash.get(SETUP_ERROR_KEY, None) or next((p.setup_error for p in self.state.parts if p.setup_error), None)
        reporting.write_run_status(self.session.settings.output_dir, int(session.exitstatus), setup_error, self.state.down)

    def display(self, terminalreporter) -> None:
        display(terminalreporter, self.session, self.state, self.config)
