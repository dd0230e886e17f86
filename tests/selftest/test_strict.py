"""--csm-strict and skips: a skipped gate test checked nothing, so it is reported as skipped (never
as a pass), and --csm-strict turns it into a failure whatever skipped it. A case selection is not a
skip: the tests it leaves without cases are deselected, so a strict run of a few cases can pass."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.selftest

# A skip planted from outside the suite, the way any plugin, fixture or mark could skip a test.
PLANT_SKIP = '''
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name == "test_depth_decoder_logits[short_en]":
            item.add_marker(pytest.mark.skip(reason="planted skip"))
'''


@pytest.fixture
def plant_skip(pytester):
    pytester.makepyfile(plant_skip=PLANT_SKIP)
    return ["-p", "plant_skip", "--csm-case", "short_en"]


def test_a_skip_is_reported_as_a_skip_not_a_pass(run_suite, pytester, plant_skip):
    result = run_suite(pytester, *plant_skip, "-k", "depth_decoder_logits")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["short_en *depth_decoder_logits *SKIPPED*", "checks: 1 skipped*", "*1 skipped*"])
    assert "passed" not in result.stdout.lines[-1]
    report = json.loads((pytester.path / "output" / "accuracy_evaluation.json").read_text())
    assert report["counts"] == {"skipped": 1}
    assert [(r["case"], r["check"], r["status"], r["messages"]) for r in report["results"]] == [
        ("short_en", "depth_decoder_logits", "skipped", ["planted skip"])]
    assert "SKIPPED: planted skip" in (pytester.path / "output" / "accuracy_summary.txt").read_text()


def test_strict_fails_a_skip_but_not_a_case_selection(run_suite, pytester, plant_skip):
    """Under --csm-strict the planted skip is red; the codec tests, which --csm-case short_en leaves
    without cases, are deselected (they used to be 'empty parameter set' skips), and the rest pass."""
    result = run_suite(pytester, *plant_skip, "--csm-strict", "-k", "backbone_logits or depth_decoder_logits or mimi")
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    result.stdout.fnmatch_lines([
        "*test_depth_decoder_logits?short_en?: skipped, and --csm-strict fails every skipped gate test: planted skip",
        "*1 passed, * deselected, 1 error*",
    ])
    assert "empty parameter set" not in out and "mimi" not in out.split("short test summary")[-1]
    report = json.loads((pytester.path / "output" / "accuracy_evaluation.json").read_text())
    assert {(r["check"], r["status"]) for r in report["results"]} == {("backbone_logits", "passed"), ("depth_decoder_logits", "failed")}
