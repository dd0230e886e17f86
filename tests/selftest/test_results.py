"""One status vocabulary and one result base for both gates (csm_conformance/results.py)."""

from __future__ import annotations

import json

import pytest

from csm_conformance.accuracy.check_results import CheckResult
from csm_conformance.performance.judge import PerfResult
from csm_conformance.plugin import assert_gate
from csm_conformance.results import GateResult, Status

pytestmark = pytest.mark.selftest


def test_a_status_is_its_word_in_json_dicts_and_text():
    assert json.dumps({"status": Status.NO_BOUND}) == '{"status": "no-bound"}'
    marks = {"passed": "ok", "regressed": "REGRESSED"}
    assert marks[Status.REGRESSED] == "REGRESSED"  # found under its word (Enum alone hashes its name)
    assert f"[{Status.PASSED}]" == "[passed]" and str(Status.SAVED) == "saved"
    assert Status.FAILED == "failed" and Status("improved") is Status.IMPROVED


def test_both_gates_share_the_result_type_and_its_questions():
    check = CheckResult("short_en", "backbone_logits")
    perf = PerfResult("short_32t-b1-eager", "eager", "passed")
    assert isinstance(check, GateResult) and isinstance(perf, GateResult)
    assert check.status is Status.PASSED and perf.status is Status.PASSED  # a word becomes the member
    check.status = "no-bound"
    assert check.status is Status.NO_BOUND and check.status.unjudged and not check.failed
    perf.status = Status.REGRESSED
    assert perf.failed and perf.as_dict()["status"] == "regressed" and type(perf.as_dict()["status"]) is str
    assert check.failure_text().startswith("short_en/backbone_logits: ") and perf.failure_text().startswith("short_32t-b1-eager: ")


def test_an_unknown_status_word_is_refused():
    result = CheckResult("short_en", "backbone_logits")
    with pytest.raises(ValueError, match="'passd' is not a valid Status"):
        result.status = "passd"


@pytest.mark.parametrize("status, outcome", [
    (Status.PASSED, "passed"), (Status.SAVED, "passed"), (Status.IMPROVED, "passed"),
    (Status.FAILED, "failed"), (Status.REGRESSED, "failed"),
    (Status.NO_BOUND, "warned"), (Status.NO_BASELINE, "warned"),
])
def test_one_assertion_judges_both_gates(status, outcome, recwarn):
    result = CheckResult("short_en", "backbone_logits", status=status, messages=["why"])
    if outcome == "failed":
        with pytest.raises(pytest.fail.Exception, match="short_en/backbone_logits: why"):
            assert_gate(result)
        return
    assert_gate(result)
    assert [str(w.message) for w in recwarn] == (["short_en/backbone_logits: why"] if outcome == "warned" else [])
