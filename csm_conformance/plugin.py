"""The pytest plugin: options, header, case parametrization, the session fixture, and reports.

Setup errors (bad option, missing device, unreadable catalogue or baseline, model that will not
load) end the run with one line and a non-zero exit: nothing reads green that did not run.

Under pytest-xdist (`-n N`) worker gwK tests device K; each worker loads the models once (session
fixtures are per process), writes its own reports to `<output>/gwK/`, and sends its results to the
controller through `config.workeroutput`; the controller merges them into one report and one
console summary. pytest-benchmark cannot time under xdist, so there the performance tests are
skipped with the command that times each card instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import devices, perf_reporting, reporting, rootfix
from .bounds import BaselineError
from .options import OPTIONS, OptionError, Settings, settings_from
from .session import ConformanceError, ConformanceSession

SESSION_KEY = pytest.StashKey[ConformanceSession]()
SETUP_ERROR_KEY = pytest.StashKey[str]()
GATE_MARKERS = ("accuracy", "performance")
WIRE_KEY = "csm_conformance"  # this plugin's entry in pytest-xdist's workeroutput
NOT_SELECTED = object()  # the parameter of a test whose case list is empty: the test is deselected


@dataclass
class RunState:
    """What this process saw besides the session's verdicts; on the xdist controller, also what
    each worker sent."""

    skipped: list[dict] = field(default_factory=list)  # gate tests that did not run (or failed for it under strict)
    model_loads: int = 0
    xdist_devices: list[str] = field(default_factory=list)  # controller: the device of each worker
    parts: list[reporting.Part] = field(default_factory=list)  # the accuracy parts reported
    perf_skipped: list[dict] = field(default_factory=list)  # controller: every worker's skipped performance tests
    down: list[str] = field(default_factory=list)  # controller: workers that died
    report_paths: list[Path] = field(default_factory=list)
    perf_report_paths: list[Path] = field(default_factory=list)


STATE_KEY = pytest.StashKey[RunState]()


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


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """`--csm-model DIR` (space form) with DIR outside the repository: see rootfix."""
    rootfix.reroot(early_config, parser, args)


def _worker_id(config: pytest.Config) -> str | None:
    """'gwK' in a pytest-xdist worker, else None. Read from xdist's workerinput, not from the
    PYTEST_XDIST_WORKER variable, which a plain pytest started by an xdist test would inherit."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if workerinput else None


def _worker_index(config: pytest.Config) -> int | None:
    worker = _worker_id(config) or ""
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def _is_xdist_controller(config: pytest.Config) -> bool:
    """The same test pytest-xdist uses to start workers (its _is_distribution_mode)."""
    return _worker_id(config) is None and config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def _under_xdist(config: pytest.Config) -> bool:
    """The test pytest-benchmark uses to disable itself, so the two agree on when nothing is timed."""
    return _worker_id(config) is not None or config.getoption("dist", "no") != "no"


def _settings(config: pytest.Config) -> Settings:
    cli = {opt.dest: getattr(config.option, opt.dest, None) for opt in OPTIONS}
    ini = {opt.dest: config.getini(opt.dest) for opt in OPTIONS}
    settings = settings_from(cli, ini=ini)
    if not settings.csm_baselines and (config.rootpath / "baselines").is_dir():  # the checkout's, also when installed
        settings.csm_baselines = str(config.rootpath / "baselines")
    return settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "accuracy: device-vs-CPU accuracy conformance checks")
    config.addinivalue_line("markers", "selftest: tests of the suite itself")
    config.addinivalue_line("markers", "performance: latency, RTF and memory against stored baselines")
    if config.option.help or config.option.version:
        return
    worker = _worker_id(config)
    state = RunState()
    try:
        settings = _settings(config)
        if _under_xdist(config) and (settings.csm_record_bounds or settings.csm_save_golden):
            raise OptionError("--csm-record-bounds and --csm-save-golden write one shared file per case: run them on one device, without -n")
        if worker:  # audio and this worker's own reports go to <output>/gwK; the controller writes the merged ones
            settings.csm_output = str(Path(settings.csm_output) / worker)
        session = ConformanceSession(settings, _worker_index(config))
        if _is_xdist_controller(config):
            state.xdist_devices = devices.xdist_devices(session.device, len(config.getoption("tx")))
    except (OptionError, ConformanceError, devices.DeviceError) as exc:
        raise pytest.UsageError(f"csm-conformance: {exc}") from None
    config.stash[SESSION_KEY] = session
    config.stash[STATE_KEY] = state


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` starts one worker per visible accelerator of the type --csm-device names (or auto
    finds); one worker when it names a single card; xdist's CPU count on the CPU."""
    try:
        settings = _settings(config)
        _, index = devices.parse_spec(settings.csm_device)
        info = devices.resolve(settings.csm_device, settings.csm_require_device)
    except (OptionError, devices.DeviceError):
        return None  # pytest_configure reports the problem in one line
    if info.type == "cpu":
        return None
    return 1 if index is not None else info.count


def _session(config: pytest.Config) -> ConformanceSession | None:
    return config.stash.get(SESSION_KEY, None)


def _state(config: pytest.Config) -> RunState:
    return config.stash.get(STATE_KEY, None) or RunState()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = _session(config)
    return reporting.header_lines(session, _state(config).xdist_devices) if session else []


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
            if cases:
                metafunc.parametrize(name, cases, ids=[c.id for c in cases])
            else:  # e.g. --csm-case picked only prompt cases: the codec tests are deselected, not skipped
                metafunc.parametrize(name, [pytest.param(NOT_SELECTED, id="none")])


def _gate_marker(item: pytest.Item) -> str | None:
    return next((m for m in GATE_MARKERS if item.get_closest_marker(m) is not None), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect tests whose case list is empty (a case selection, or a catalogue without that kind
    of case). Under pytest-xdist, skip the performance tests with the command that times them:
    pytest-benchmark disables itself there, and cards timed side by side would disturb each other."""
    deselected = [item for item in items
                  if any(v is NOT_SELECTED for v in getattr(getattr(item, "callspec", None), "params", {}).values())]
    if deselected:
        items[:] = [item for item in items if item not in deselected]
        config.hook.pytest_deselected(items=deselected)
    conf = _session(config)
    if _under_xdist(config) and conf is not None:
        kind = conf.device.type
        reason = ("performance is not timed under pytest-xdist (pytest-benchmark disables itself): time each card "
                  f"without -n, e.g. pytest -m performance --csm-device {kind + ':K' if kind != 'cpu' else 'cpu'}")
        for item in items:
            if item.get_closest_marker("performance") is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


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


def assert_perf(result) -> None:
    """Fail on a regression with its table; report a missing baseline (a failure under --csm-strict)."""
    if result.status in ("regressed", "failed"):
        pytest.fail(result.failure_text(), pytrace=False)
    if result.status == "no-baseline":
        warnings.warn(result.failure_text(), pytest.PytestWarning, stacklevel=2)


def skip_or_fail_disabled(benchmark, config: pytest.Config) -> None:
    """pytest-benchmark's --benchmark-disable runs the body once untimed: nothing can be gated, so
    the test is skipped (and --csm-strict turns that skip into a failure, as it does every skip)."""
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing was timed")


def assert_passed(result) -> None:
    """Fail the calling test with the gate's one-line verdict; report a missing bound as a warning."""
    if result.status == "failed":
        pytest.fail(result.failure_text(), pytrace=False)
    if result.status == "no-bound":
        warnings.warn(result.failure_text(), pytest.PytestWarning, stacklevel=2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """An exception inside a conformance check (a crash in generate, a NaN that sampling rejects)
    is a red result with one line naming it; `-vv` keeps the full traceback for debugging.

    A skipped gate test (accuracy or performance) checked nothing: it is kept for the reports as
    skipped, and under --csm-strict it becomes a failure, whatever skipped it (a skip mark, a
    fixture, pytest.skip in the body)."""
    outcome = yield
    report = outcome.get_result()
    marker = _gate_marker(item)
    if marker is None:
        return
    if (
        report.when == "call"
        and report.failed
        and call.excinfo is not None
        and not call.excinfo.errisinstance(pytest.fail.Exception)
        and item.config.option.verbose < 2
    ):
        exc = call.excinfo.value
        if isinstance(exc, ImportError):  # a missing dependency: the whole message says what to install
            report.longrepr = f"{item.name}: a dependency is missing: {' '.join(str(exc).split())} (-vv for the traceback)"
        else:  # the reference or the device model, or the check itself: the traceback (-vv) tells which
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            report.longrepr = f"{item.name}: the check raised {type(exc).__name__}: {first} (-vv for the traceback)"
    elif (report.when == "call" and report.failed and call.excinfo is not None and item.config.option.verbose < 2
          and str(call.excinfo.value).startswith("Timeout (>")):  # pytest-timeout: say where it hung
        at = call.excinfo.traceback.filter(call.excinfo)[-1]
        report.longrepr = f"{item.name}: {call.excinfo.value} while in {at.name} ({at.path}:{at.lineno + 1}) (-vv for the traceback)"
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        strict = _session(item.config) is not None and _session(item.config).settings.csm_strict
        if strict:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid}: skipped, and --csm-strict fails every skipped gate test: {reason}"
        callspec = getattr(item, "callspec", None)
        _state(item.config).skipped.append({
            "test": item.nodeid, "marker": marker, "case": callspec.id if callspec else "-",
            "check": getattr(item, "originalname", item.name).removeprefix("test_"),
            "status": "failed" if strict else "skipped", "reason": reason,
        })


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ").strip().splitlines()[0] if text.strip() else "skipped"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    conf = _session(config)
    if conf is None:
        return
    state = _state(config)
    if _is_xdist_controller(config):
        _finish_controller(session, conf, state)
        _write_run_status(session, conf, state)
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
        bs = getattr(config, "_benchmarksession", None)
        machine_info = bs.get_machine_info() if bs is not None else {}
        commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config) if bs is not None else {}
        import pytest_benchmark

        state.perf_report_paths = perf_reporting.write_reports(conf.perf, machine_info, commit_info,
                                                               pytest_benchmark.__version__, state.perf_skipped)
    if worker:
        config.workeroutput[WIRE_KEY] = {"accuracy": part.to_wire(), "performance_skipped": state.perf_skipped}
    else:
        _write_run_status(session, conf, state)


def _write_run_status(session: pytest.Session, conf: ConformanceSession, state: RunState) -> None:
    """run_status.json: how the run ended, for the upgrade verdict. A run that stopped at setup
    (a model that no longer loads) leaves no other report that says so."""
    setup_error = session.config.stash.get(SETUP_ERROR_KEY, None) or next((p.setup_error for p in state.parts if p.setup_error), None)
    reporting.write_run_status(conf.settings.output_dir, int(session.exitstatus), setup_error, state.down)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist controller: keep what a finished worker sent (see pytest_sessionfinish)."""
    state = _state(node.config)
    payload = (getattr(node, "workeroutput", None) or {}).get(WIRE_KEY)
    worker = node.workerinput.get("workerid", "?") if getattr(node, "workerinput", None) else "?"
    if payload:
        state.parts.append(reporting.Part.from_wire(payload["accuracy"]))
        state.perf_skipped += payload["performance_skipped"]
    if error is not None:
        state.down.append(f"{worker} went down before sending its results: {error}")


def _finish_controller(session: pytest.Session, conf: ConformanceSession, state: RunState) -> None:
    """One merged report from every worker's part, in the run's output directory."""
    state.parts = reporting.sort_parts(state.parts)
    if any(p.setup_error for p in state.parts):
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
    if any(p.results for p in state.parts):
        state.report_paths = reporting.write_reports(state.parts, conf.settings)


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
    state = _state(config)
    tr = terminalreporter
    if any(p.results for p in state.parts):
        _accuracy_summary(tr, conf, state)
    elif _is_xdist_controller(config) and state.parts:
        tr.write_line("csm-conformance: pytest-xdist workers: " + ", ".join(
            f"{p.label} ({p.meta['device']['name']})" for p in state.parts))
    if conf.perf.results or state.perf_skipped:
        _performance_summary(tr, conf, state)
    for part in state.parts:
        if part.setup_error:
            tr.write_line(f"ERROR: csm-conformance: {part.worker}: {part.setup_error}", red=True)
    for line in state.down:
        tr.write_line(f"csm-conformance: {line}", red=True)


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
        if r.status in ("regressed", "improved"):
            tr.write_line(f"{r.case}: {r.messages[0]}", red=r.status == "regressed", green=r.status == "improved")
    missing = [r for r in conf.perf.results if r.status == "no-baseline"]
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
        devices_line = ", ".join(f"{p.label} ({p.meta['device']['name']}, {p.model_loads} model load(s))" for p in parts)
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
