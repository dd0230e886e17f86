"""First run on a real checkpoint: bounds from several repeats keep each metric's worst repeat, so a
device whose kernels are not bit-reproducible is not held to its luckiest run."""

from __future__ import annotations

import pytest

from csm_conformance.accuracy.bounds import bound_from_measurement
from csm_conformance.tools import first_run

pytestmark = pytest.mark.selftest


def _doc(cosine: float, rel_error: float, agreement: float) -> dict:
    return {"schema": 1, "margin": 0.5, "cases": {"short_en": {"backbone_logits": {
        "cosine": {"measured": cosine, "bound": 0.0},
        "rel_error": {"measured": rel_error, "bound": 0.0},
        "argmax_agreement": {"measured": agreement, "bound": 0.0}}}}}


def test_bounds_keep_the_worst_repeat_of_each_metric():
    merged = first_run.worst_of([_doc(0.99998, 0.004, 1.0), _doc(0.99995, 0.003, 0.96), _doc(0.99997, 0.005, 1.0)], 0.5)
    entry = merged["cases"]["short_en"]["backbone_logits"]
    assert entry["cosine"]["measured"] == 0.99995  # lowest cosine
    assert entry["rel_error"]["measured"] == 0.005  # highest error
    assert entry["argmax_agreement"]["measured"] == 0.96
    assert entry["rel_error"]["bound"] == bound_from_measurement("rel_error", 0.005, 0.5)
    assert entry["cosine"]["repeats"] == 3 and "worst of 3 repeats" in merged["notes"][0]


def test_refuses_a_planted_fault(capsys):
    assert first_run.main(["--csm-fault", "rope"]) == 2
    assert "planted fault" in capsys.readouterr().err
