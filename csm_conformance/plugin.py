"""The pytest plugin: options, header, case parametrization, the session fixture, and reports.

Setup errors (bad option, missing device, unreadable catalogue or baseline, model that will not
load) end the run with one line and a non-zero exit: nothing reads green that did not run.
"""

from __future__ import annotations

import os
import warnings

import pytest

from . import perf_reporting, reporting
from .bounds import BaselineError
from .options import OPTIONS, OptionError, settings_from
from .session import ConformanceError, ConformanceSession

SESSION_KEY = pytest.StashKey[ConformanceSession]()
SETUP_ERROR_KEY = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("csm-conformance", "CSM conformance suite")
    for opt in OPTIONS:
        help_text = f"{opt.help} [env {opt.env}; default {opt.default!r}]"
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.dest, help=help_text)
        elif opt.kind == "list":
            group.addoption(opt.flag, action="append", default=None, dest=opt.dest, help=help_text)
        else:
            group.addoption(opt.flag, action="store", default=None, dest=opt.dest, help=help_text)
        parser.addini(opt.dest, help=opt.help, default=None)


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "accuracy: device-vs-CPU accuracy conformance checks")
    config.addinivalue_line("markers", "selftest: tests of the suite itself")
    config.addinivalue_line("markers", "performance: latency, RTF and memory against stored baselines")
    if config.option.help or config.option.version:
        return
    cli = {opt.dest: getattr(config.option, opt.dest, None) for opt in OPTIONS}
    ini = {opt.dest: config.getini(opt.dest) for opt in OPTIONS}
    try:
        settings = settings_from(cli, ini=ini)
        config.stash[SESSION_KEY] = ConformanceSession(settings, _worker_index())
    except (OptionError, ConformanceError) as exc:
        raise pytest.UsageError(f"csm-conformance: {exc}") from None


def _session(config: pytest.Config) -> ConformanceSession | None:
    return config.stash.get(SESSION_KEY, None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = _session(config)
    return reporting.header_lines(session) if session else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = _session(metafunc.config)
    if session is None:
        return
    catalogue = session.catalogue
    params = {
        "prompt_case": catalogue.prompts,
        "generation_case": [c for c in catalogue.prompts if c.generate_frames > 0],
        "decode_case": [c for c in catalogue.codec if c.kind == "decode"],
        "encode_case": [c for c in catalogue.codec if c.kind == "encode"],
        "perf_case": session.perf.cases,
    }
    for name, cases in params.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


def _load_or_exit(request: pytest.FixtureRequest, load) -> ConformanceSession:
    session = _session(request.config)
    before = (session.reference, session.target)
    try:
        load(session)
    except (ConformanceError, BaselineError) as exc:
        request.config.stash[SETUP_ERROR_KEY] = str(exc)
        pytest.exit(f"csm-conformance: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    if (session.reference, session.target) != before:
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


def assert_perf(result) -> None:
    """Fail on a regression with its table; report a missing baseline (a failure under --csm-strict)."""
    if result.status in ("regressed", "failed"):
        pytest.fail(result.failure_text(), pytrace=False)
    if result.status == "no-baseline":
        warnings.warn(result.failure_text(), pytest.PytestWarning, stacklevel=2)


def skip_or_fail_disabled(benchmark, config: pytest.Config) -> None:
    """pytest-benchmark's --benchmark-disable runs the body once untimed: nothing can be gated."""
    if getattr(benchmark, "disabled", False):
        message = "benchmarks are disabled (--benchmark-disable): nothing was timed"
        if _session(config).settings.csm_strict:
            pytest.fail(message + " and --csm-strict is set", pytrace=False)
        pytest.skip(message)


def assert_passed(result) -> None:
    """Fail the calling test with the gate's one-line verdict; report a missing bound as a warning."""
    if result.status == "failed":
        pytest.fail(result.failure_text(), pytrace=False)
    if result.status == "no-bound":
        warnings.warn(result.failure_text(), pytest.PytestWarning, stacklevel=2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """An exception inside a conformance check (a crash in generate, a NaN that sampling rejects)
    is a red result with one line naming it; `-vv` keeps the full traceback for debugging."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.when == "call"
        and report.failed
        and call.excinfo is not None
        and (item.get_closest_marker("accuracy") is not None or item.get_closest_marker("performance") is not None)
        and not call.excinfo.errisinstance(pytest.fail.Exception)
        and item.config.option.verbose < 2
    ):
        exc = call.excinfo.value
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        report.longrepr = f"{item.name}: the device model raised {type(exc).__name__}: {first} (-vv for the traceback)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    conf = _session(session.config)
    if conf is None:
        return
    if conf.results:
        conf.finish()
        if conf.record_outcome and conf.record_outcome.startswith("bounds NOT"):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        conf.report_paths = reporting.write_reports(conf)
    if conf.perf.results:
        bs = getattr(session.config, "_benchmarksession", None)
        machine_info = bs.get_machine_info() if bs is not None else {}
        commit_info = session.config.hook.pytest_benchmark_generate_commit_info(config=session.config) if bs is not None else {}
        import pytest_benchmark

        conf.perf_report_paths = perf_reporting.write_reports(conf.perf, machine_info, commit_info, pytest_benchmark.__version__)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Saved pytest-benchmark runs name the device, model and dtype they timed, not only the host."""
    conf = _session(config)
    if conf is not None:
        machine_info["csm"] = {"device_fingerprint": conf.device.fingerprint, "device": conf.device.device,
                               "model": conf.model_key, "dtype": conf.dtype_name}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    conf = _session(config)
    if conf is None:
        return
    if conf.results:
        _accuracy_summary(terminalreporter, conf)
    if conf.perf.results:
        _performance_summary(terminalreporter, conf)


def _performance_summary(tr, conf) -> None:
    tr.section("csm-conformance performance summary")
    ident = conf.identity
    tr.write_line(f"model {ident.describe() if ident else conf.model_key}")
    tr.write_line(f"device {conf.device.device} ({conf.device.fingerprint}) dtype {conf.dtype_name}; "
                  f"{conf.settings.csm_perf_warmup} warm-up + {conf.settings.csm_perf_rounds} rounds, median")
    for note in conf.fault_notes:
        tr.write_line(f"PLANTED FAULT: {note}", red=True)
    for line in perf_reporting.console_table(conf.perf):
        tr.write_line(line)
    for r in conf.perf.results:
        if r.status in ("regressed", "improved"):
            tr.write_line(f"{r.case}: {r.messages[0]}", red=r.status == "regressed", green=r.status == "improved")
    missing = [r for r in conf.perf.results if r.status == "no-baseline"]
    if missing:
        tr.write_line(f"{len(missing)} case(s) have no baseline for {conf.device.fingerprint}: e.g. {missing[0].messages[-1]}", yellow=True)
    for path in getattr(conf, "perf_report_paths", []):
        tr.write_line(f"report: {path}")


def _accuracy_summary(tr, conf) -> None:
    tr.section("csm-conformance accuracy summary")
    ident = conf.identity
    tr.write_line(f"model {ident.describe() if ident else conf.model_key}")
    tr.write_line(f"device {conf.device.device} ({conf.device.name}) dtype {conf.dtype_name} vs cpu float32; "
                  f"min cosine {conf.settings.csm_min_cosine}; bounds {conf.bounds_file}{'' if conf.bounds else ' (absent)'}")
    for note in conf.fault_notes:
        tr.write_line(f"PLANTED FAULT: {note}", red=True)
    for line in reporting.console_table(conf):
        tr.write_line(line)
    counts = reporting.status_counts(conf)
    tr.write_line("checks: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "   ('!' outside bound, '?' no bound stored)")
    if conf.record_outcome:
        tr.write_line(conf.record_outcome, red=conf.record_outcome.startswith("bounds NOT"), green=not conf.record_outcome.startswith("bounds NOT"))
    for path in getattr(conf, "report_paths", []):
        tr.write_line(f"report: {path}")
