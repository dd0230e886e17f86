"""The report schemas (csm_conformance/reports/schemas/): they are valid JSON Schema, a small report follows
them, and each kind of damage a reader must not swallow is a one-line error naming where it is.
The real reports of a run are validated where the self-tests make them (test_gate, test_perf_gate)."""

from __future__ import annotations

import copy
import json

import pytest

from csm_conformance.reports import schema as report_schema
from csm_conformance.reports.schema import ReportSchemaError, validate

pytestmark = pytest.mark.selftest

ACCURACY = {
    "report_schema": "csm-conformance/accuracy/1", "suite": "csm-conformance accuracy", "generated": "2026-11-30T00:00:00+00:00",
    "model": {"key": "embedded-tiny-csm", "claim": "NOT a real-weight result", "weights_digest": "sha256:0"},
    "device": {"spec": "auto", "device": "cpu", "type": "cpu", "name": "AMD EPYC", "count": 2}, "dtype": "bfloat16",
    "versions": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "torch_npu": None},
    "reference": {"device": "cpu", "dtype": "float32"},
    "workers": [{"worker": None, "device": {"device": "cpu"}, "counts": {"passed": 1}, "model_loads": 1, "setup_error": None}],
    "settings": {"min_cosine": 0.9999, "strict": False, "planted_faults": []}, "counts": {"passed": 1}, "record_outcome": None,
    "results": [{"case": "short_en", "check": "backbone_logits", "status": "passed", "messages": [], "worker": None, "device": "cpu",
                 "metrics": {"cosine": {"value": 0.99999, "bound": 0.9999, "rule": "floor", "ok": True}}}],
}


def test_the_schemas_are_valid_json_schema_and_package_data():
    for kind, name in report_schema.FILES.items():
        schema = json.loads((report_schema.SCHEMA_DIR / name).read_text())
        assert schema["properties"]["report_schema"]["const"] == report_schema.VERSIONS[kind]
        report_schema._validator(kind)  # check_schema raises on an invalid schema
    validate(ACCURACY, "accuracy", "a.json")


@pytest.mark.parametrize("damage,where", [
    (lambda d: d["results"][0]["metrics"]["cosine"].update(value="high"), "at results/0/metrics/cosine/value: 'high' does not match"),
    (lambda d: d["results"][0].update(status="green"), "at results/0/status"),
    (lambda d: d.pop("model"), "at (top level): 'model' is a required property"),
    (lambda d: d["counts"].update(passed=-1), "at counts/passed"),
    (lambda d: d.update(report_schema="csm-conformance/accuracy/2"), "report schema 'csm-conformance/accuracy/2', this suite reads"),
])
def test_damage_is_one_line_naming_where(damage, where):
    document = copy.deepcopy(ACCURACY)
    damage(document)
    with pytest.raises(ReportSchemaError) as err:
        validate(document, "accuracy", "out/accuracy_evaluation.json")
    assert str(err.value).startswith("out/accuracy_evaluation.json: ") and where in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("change", [
    lambda d: d["results"][0]["metrics"]["cosine"].update(value="inf"),  # non-finite values are written as strings
    lambda d: d.update(model=None),  # a run in which no model loaded
    lambda d: d.pop("report_schema"),  # a report from before the schema was versioned
])
def test_what_the_suite_legitimately_writes_is_accepted(change):
    document = copy.deepcopy(ACCURACY)
    change(document)
    validate(document, "accuracy", "a.json")
