"""The helpers a gate test calls to turn its result into a verdict: fail with the gate's one
line, warn when no bound or baseline is stored, skip when nothing was timed. Tests import them
from csm_conformance.plugin."""

from __future__ import annotations

import warnings

import pytest


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
