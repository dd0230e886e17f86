"""The session fixtures: the models load once per process, with a one-line note on the console,
and a model that will not load ends the run (see the package docstring)."""

from __future__ import annotations

import pytest

from csm_conformance.baseline_files import BaselineError
from csm_conformance.plugin.state import SETUP_ERROR_KEY, _session, _state, _worker_id
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.reports import performance_report as perf_reporting
from csm_conformance.suite.session import ConformanceError, ConformanceSession


def _load_or_exit(request: pytest.FixtureRequest, load) -> ConformanceSession:
    session = _session(request.config)
    before = (session.reference, session.target)
    try:
        load(session)
    except (ConformanceError, BaselineError) as exc:
        request.config.stash[SETUP_ERROR_KEY] = str(exc)
        if _worker_id(request.config):  # lets xdist stop every worker (it expects a crash otherwise)
            request.session.shouldstop = f"csm-conformance: {_worker_id(request.config)}: {exc}"
        pytest.exit(f"csm-conformance: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    if (session.reference, session.target) != before:
        _state(request.config).model_loads += 1
        _print_loaded(request.config, session)
    return session


def _print_loaded(config: pytest.Config, session: ConformanceSession) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    ref, dev = session.reference, session.target
    with capture.global_and_fixture_disabled():  # fixture output is captured otherwise
        reporter.write_line("")
        reporter.write_line(f"csm-conformance: loaded {session.identity.describe()}")
        reporter.write_line(
            (f"csm-conformance: reference cpu float32 in {ref.load_seconds:.1f} s; " if ref else "csm-conformance: no reference (performance only); ")
            + f"device {dev.device} {session.dtype_name} in {dev.load_seconds:.1f} s"
            + (f"; {'; '.join(dev.notes)}" if dev.notes else "")
        )
        for note in session.fault_notes:
            reporter.write_line(f"csm-conformance: PLANTED FAULT: {note}", red=True)


@pytest.fixture(scope="session")
def csm(request: pytest.FixtureRequest) -> ConformanceSession:
    """The run's ConformanceSession with both models loaded (once per session)."""
    return _load_or_exit(request, lambda s: s.load_models())


@pytest.fixture(scope="session")
def csm_perf(request: pytest.FixtureRequest) -> ConformanceSession:
    """The session with the device model loaded (no reference needed) and its performance
    baselines read; at the end, the RTF/latency plot is attached to Allure."""
    def load(session):
        session.load_target()
        session.perf.load_baselines()

    session = _load_or_exit(request, load)
    yield session
    plot = perf_reporting.plot_png(session.perf)
    if plot is not None:
        reporting.attach_png("performance: RTF and frame latency, baseline vs now", plot)
