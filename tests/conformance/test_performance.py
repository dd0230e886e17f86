"""Performance against stored baselines: one body per figure family, run unchanged on every
device and model. The `csm_perf` fixture holds the device model (no reference is needed) and the
baselines for this machine; pytest-benchmark times the rounds."""

from __future__ import annotations

import pytest

from csm_conformance.plugin import assert_gate, skip_or_fail_disabled
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.runtime import known_issues

pytestmark = pytest.mark.performance


def test_generation(csm_perf, perf_case, benchmark, request):
    """Fixed-length seeded generation: RTF, TTFA, prefill, per-frame latency, peak memory."""
    skip_or_fail_disabled(benchmark, request.config)
    benchmark.group = f"{perf_case.mode} b{perf_case.batch}"
    try:
        result = csm_perf.perf.time_generation(perf_case, benchmark)
    except Exception as exc:
        issue = known_issues.known_issue(perf_case.mode, exc)
        if issue is None:
            raise
        pytest.skip(issue.reason)
    reporting.attach_json(f"{perf_case.id} performance", result.as_dict())
    assert_gate(result)


def test_model_load(csm_perf, benchmark, request):
    """Loading the model onto the device, timed over several loads."""
    skip_or_fail_disabled(benchmark, request.config)
    benchmark.group = "load"
    result = csm_perf.perf.time_load(benchmark)
    reporting.attach_json("model_load performance", result.as_dict())
    assert_gate(result)
