"""The helpers a gate test calls to turn its result into a verdict: fail with the gate's one
line, warn when no bound or baseline is stored, skip when nothing was timed. Tests import them
from csm_conformance.plugin. One assertion serves both gates, because both return a GateResult."""

from __future__ import annotations

import warnings

import pytest

from csm_conformance.results import GateResult


def skip_or_fail_disabled(benchmark, config: pytest.Config) -> None:
    """pytest-benchmark's --benchmark-disable runs the body once untimed: nothing can be gated, so
    the test is skipped (and --csm-strict turns that skip into a failure, as it does every skip)."""
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing was timed")


def assert_gate(result: GateResult) -> None:
    """Fail the calling test with the gate's verdict (a failed check, a confirmed regression: its
    one line, and the comparison table for performance); a missing bound or baseline is a warning
    (a failure already, under --csm-strict)."""
    if result.failed:
        pytest.fail(result.failure_text(), pytrace=False)
    if result.status.unjudged:
        warnings.warn(result.failure_text(), pytest.PytestWarning, stacklevel=2)


# the names the tests used before the two gates shared one result type
assert_passed = assert_perf = assert_gate
