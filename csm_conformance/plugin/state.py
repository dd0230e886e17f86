"""What every part of the plugin shares: the stash keys, the run's state, and where this process
stands under pytest-xdist (worker, controller or neither). Kept apart from the hooks so the
fixtures and the summary can read them without importing the hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.suite.options import OPTIONS, Settings, settings_from
from csm_conformance.suite.session import ConformanceSession

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


def _session(config: pytest.Config) -> ConformanceSession | None:
    return config.stash.get(SESSION_KEY, None)


def _state(config: pytest.Config) -> RunState:
    return config.stash.get(STATE_KEY, None) or RunState()
