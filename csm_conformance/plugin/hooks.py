"""The plugin's hooks: options, configuration and the header, case parametrization and
collection, and the one-line failure and strict-skip reports. The end of the session (reports, run
status, the results each pytest-xdist worker sends its controller, the console summary) belongs to
the run object that pytest_configure registers (run.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from csm_conformance.errors import UserError
from csm_conformance.faults.spec import check_spec
from csm_conformance.plugin.run import PLUGIN_NAME, SuiteRun
from csm_conformance.plugin.state import (
    GATE_MARKERS,
    NOT_SELECTED,
    SESSION_KEY,
    STATE_KEY,
    RunState,
    _is_xdist_controller,
    _session,
    _settings,
    _state,
    _under_xdist,
    _worker_id,
    _worker_index,
)
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.results import Status
from csm_conformance.runtime import devices, preflight
from csm_conformance.suite import rootfix
from csm_conformance.suite.options import OPTIONS, OptionError
from csm_conformance.suite.session import ConformanceSession, decode_frames


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "accuracy: device-vs-CPU accuracy conformance checks")
    config.addinivalue_line("markers", "selftest: tests of the suite itself")
    config.addinivalue_line("markers", "performance: latency, RTF and memory against stored baselines")
    if config.option.help or config.option.version:
        return
    worker = _worker_id(config)
    state = RunState()
    try:
        preflight.check()  # the stack can run CSM (done once already, when the plugin package was imported: cached)
        settings = _settings(config)
        for spec in settings.csm_fault:  # a bad spec is this line now, not a pytest.exit once the model has loaded
            check_spec(spec)
        if settings.csm_ops and "all" not in settings.csm_ops:
            from csm_conformance.catalogue.cases import load_catalogue

            known = load_catalogue(settings.csm_cases or None).select(settings.csm_case).ids()  # this run's cases
            unknown = [c for c in settings.csm_ops if c not in known]
            if unknown:
                where = "this run's cases (--csm-case)" if settings.csm_case else "the catalogue"
                raise OptionError(f"--csm-ops: no case {', '.join(unknown)} in {where} (cases: {', '.join(known)}, or all)")
        if _under_xdist(config) and (settings.csm_record_bounds or settings.csm_save_golden):
            raise OptionError("--csm-record-bounds and --csm-save-golden write one shared file per case: run them on one device, without -n")
        if worker:  # audio and this worker's own reports go to <output>/gwK; the controller writes the merged ones
            settings.csm_output = str(Path(settings.csm_output) / worker)
            _share_the_cores(int(config.workerinput.get("workercount", 1)))
        session = ConformanceSession(settings, _worker_index(config))
        session.bandwidth_hook = config.hook.pytest_csm_memory_bandwidth_gbps  # hookspecs.py: a user's device bandwidth
        if _is_xdist_controller(config):
            state.xdist_devices = devices.xdist_devices(session.device, len(config.getoption("tx")))
    except UserError as exc:  # bad input of any kind: one line, a usage error (exit 4)
        raise pytest.UsageError(f"csm-conformance: {exc}") from None
    config.stash[SESSION_KEY] = session
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(SuiteRun(config, session, state), PLUGIN_NAME)  # owns the end of the run (run.py)


def _share_the_cores(workers: int) -> int | None:
    """Every pytest-xdist worker computes a CPU float32 reference (on the CPU, the device model
    too). With torch's default of one thread per core in each worker their OpenMP threads spin
    against each other: on the 2-core CI VM the suite's gate self-tests took 279 s under -n 2 and
    157 s with one thread a worker. So each worker takes its share of the cores; an
    OMP_NUM_THREADS the user set is kept. The summary names each worker's count. Returns the share
    set, or None where torch's own count stands."""
    if workers <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // workers)
    torch.set_num_threads(share)
    return share


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
        "loop_case": [c for c in catalogue.prompts if decode_frames(session.settings, c) > 0],
        "decode_case": [c for c in catalogue.codec if c.kind == "decode"],
        "encode_case": [c for c in catalogue.codec if c.kind == "encode"],
        "perf_case": session.perf.cases,
        "ops_case": _ops_cases(session),
    }
    for name, cases in params.items():
        if name in metafunc.fixturenames:
            if cases:
                metafunc.parametrize(name, cases, ids=[c.id for c in cases])
            else:  # e.g. --csm-case picked only prompt cases: the codec tests are deselected, not skipped
                metafunc.parametrize(name, [pytest.param(NOT_SELECTED, id="none")])
    if "loop_mode" in metafunc.fixturenames:  # after loop_case: test_decode_loop[short_en-compiled]
        metafunc.parametrize("loop_mode", session.settings.csm_decode_modes)


def _ops_cases(session) -> list:
    """The cases --csm-ops names ('all': every case of the run); none without it (the test is deselected)."""
    wanted = session.settings.csm_ops
    every = [*session.catalogue.prompts, *session.catalogue.codec]
    return every if "all" in wanted else [c for c in every if c.id in wanted]


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
            "status": (Status.FAILED if strict else Status.SKIPPED).value, "reason": reason,
        })


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ").strip().splitlines()[0] if text.strip() else "skipped"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Saved pytest-benchmark runs name the device, model and dtype they timed, not only the host."""
    conf = _session(config)
    if conf is not None:
        machine_info["csm"] = {"device_fingerprint": conf.device.fingerprint, "device": conf.device.device,
                               "model": conf.model_key, "dtype": conf.dtype_name}
