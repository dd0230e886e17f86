"""The pytest plugin: options, header, case parametrization, the session fixture, and reports.

Setup errors (bad option, missing device, unreadable catalogue or baseline, model that will not
load) end the run with one line and a non-zero exit: nothing reads green that did not run.

Under pytest-xdist (`-n N`) worker gwK tests device K; each worker loads the models once (session
fixtures are per process), writes its own reports to `<output>/gwK/`, and sends its results to the
controller through `config.workeroutput`; the controller merges them into one report and one
console summary. pytest-benchmark cannot time under xdist, so there the performance tests are
skipped with the command that times each card instead.

pytest loads this package (the pytest11 entry point `csm_conformance.plugin`; conftest.py names
it for a checkout used without installing) and registers it as ONE plugin: pluggy takes every
`pytest_*` attribute of the module as a hook implementation and pytest every fixture attribute as
a fixture, wherever they were defined. So the hooks and fixtures are imported here from the
modules below, which pytest never registers themselves (registering one too would run its hooks
twice). A new hook or fixture must be added to the imports here, or pytest never sees it.

  state.py       stash keys, the run's state, where this process stands under pytest-xdist
  hooks.py       options, configuration (it registers the run), collection, one-line failure reports
  fixtures.py    the session fixtures (csm, csm_perf)
  assertions.py  assert_gate (both gates; assert_passed / assert_perf are its old names), skip_or_fail_disabled
  run.py         SuiteRun: registered as a plugin per session, it owns the end of the run (finish:
                 reports, run status, xdist hand-over; display: the console summary)
  summary.py     the console summary's formatting
  hookspecs.py   hooks a user's conftest.py implements (pytest_csm_memory_bandwidth_gbps), added here
"""

from __future__ import annotations

import pytest

from csm_conformance.errors import UserError
from csm_conformance.runtime import preflight

# The stack preflight (runtime/preflight.py) runs before the imports below reach transformers, so
# a stack that cannot run CSM (an in-place downgrade that left `kernels` behind, a package
# transformers cannot use) ends pytest here with one `ERROR: csm-conformance: ...` line (exit 4),
# not a plugin traceback or one error per test. pytest_configure calls it again (cached).
try:
    preflight.check()
except UserError as exc:
    raise pytest.UsageError(f"csm-conformance: {exc}") from None

from csm_conformance.plugin import hookspecs  # noqa: E402
from csm_conformance.plugin.assertions import assert_gate, assert_passed, assert_perf, skip_or_fail_disabled  # noqa: E402
from csm_conformance.plugin.fixtures import csm, csm_perf  # noqa: E402
from csm_conformance.plugin.hooks import (  # noqa: E402
    pytest_addoption,
    pytest_benchmark_update_machine_info,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_generate_tests,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_xdist_auto_num_workers,
)
from csm_conformance.plugin.run import SuiteRun  # noqa: E402
from csm_conformance.plugin.state import GATE_MARKERS, NOT_SELECTED, SESSION_KEY, SETUP_ERROR_KEY, STATE_KEY, WIRE_KEY, RunState  # noqa: E402


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The suite's own hooks (hookspecs.py), so a conftest.py can implement them."""
    pluginmanager.add_hookspecs(hookspecs)


__all__ = [
    # hooks: pytest registers them from this module's attributes
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_benchmark_update_machine_info",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_load_initial_conftests",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_xdist_auto_num_workers",
    # fixtures, likewise
    "csm",
    "csm_perf",
    # for the tests and other plugins
    "assert_gate",
    "assert_passed",
    "assert_perf",
    "skip_or_fail_disabled",
    "SuiteRun",
    "SESSION_KEY",
    "SETUP_ERROR_KEY",
    "STATE_KEY",
    "RunState",
    "GATE_MARKERS",
    "WIRE_KEY",
    "NOT_SELECTED",
]
