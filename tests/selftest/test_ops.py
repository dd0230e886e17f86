"""The operator report (issue 22): its standard (standard.py), the recorder (record.py), the planted
kernel fault (faults/op_kernel.py), and the gate as a user runs it: a red check names the planted
operator and writes its repro; --csm-ops is a gate that passes clean and fails on the fault."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy.ops import standard
from csm_conformance.accuracy.ops.record import recording
from csm_conformance.accuracy.ops.run import case_ops, record_case
from csm_conformance.faults import op_kernel
from csm_conformance.reports import ops_report

pytestmark = pytest.mark.selftest


def _exact(values: torch.Tensor) -> list[torch.Tensor]:
    return [values.to(torch.float64)]


@pytest.fixture
def wide():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4096, generator=generator, dtype=torch.float64) * 3


def test_a_correctly_rounded_result_is_well_inside_its_standard(wide):
    row = standard.judge([wide.to(torch.bfloat16)], _exact(wide), k=1)
    assert row["excess"] <= 0.5 and row["rel_error"] == pytest.approx(row["rounded_rel_error"])


def test_a_faithful_result_one_ulp_off_everywhere_passes(wide):
    rounded = wide.to(torch.bfloat16).double()
    step = torch.exp2(torch.floor(torch.log2(rounded.abs())) - 7)  # bfloat16's spacing there
    faithful = (rounded + torch.where(rounded >= wide, -step, step)).to(torch.bfloat16)  # the exact value's other neighbour
    assert not torch.equal(faithful.double(), rounded)
    assert standard.judge([faithful], _exact(wide), k=1)["excess"] <= 1.0


@pytest.mark.parametrize("relative", [0.02, 0.05])
def test_a_kernel_a_few_percent_off_is_past_its_standard(wide, relative):
    row = standard.judge([(wide * (1 + relative)).to(torch.bfloat16)], _exact(wide), k=1)
    assert row["excess"] > 1.0


def test_the_margin_grows_with_the_reduction_length(wide):
    """A float32 sum of K terms errs by about sqrt(K) x u32: allowed for a long reduction, not for an
    elementwise op."""
    off = (wide * (1 + 30 * 2.0 ** -24)).to(torch.float32)  # 30 float32 roundings' worth
    assert standard.judge([off], _exact(wide), k=4096)["excess"] <= 1.0
    assert standard.judge([off], _exact(wide), k=1)["excess"] > 1.0


def test_a_non_finite_output_where_the_exact_one_is_finite_is_past_everything(wide):
    bad = wide.to(torch.bfloat16)
    bad[7] = float("nan")
    row = standard.judge([bad], _exact(wide), k=1)
    assert row["excess"] == math.inf and "non-finite" in row["problem"]


def test_reduction_lengths():
    x = torch.zeros(3, 5, 7)
    k = standard.reduction_length
    assert k("aten.linear.default", (x, torch.zeros(4, 7)), {}) == 7
    assert k("aten.addmm.default", (torch.zeros(4), torch.zeros(3, 9), torch.zeros(9, 4)), {}) == 9
    assert k("aten.sum.dim_IntList", (x, [1, 2]), {}) == 35
    assert k("aten.linalg_vector_norm.default", (x, 2, [-1]), {}) == 7
    assert k("aten._softmax.default", (x, -1, False), {}) == 7
    assert k("aten.scaled_dot_product_attention.default", (torch.zeros(1, 4, 1, 16), torch.zeros(1, 4, 21, 16)), {}) == 21
    assert k("aten.conv1d.default", (x, torch.zeros(8, 5, 3)), {}) == 15
    assert k("aten.mul.Tensor", (x, x), {}) == 1
    depthwise = torch.zeros(8, 1, 4)  # Mimi's upsample: a depthwise transposed convolution sums kernel terms only
    assert k("aten.conv_transpose1d.default", (torch.zeros(1, 8, 5), depthwise, None, [2], [1], [0], 8), {}) == 4
    assert k("aten.convolution.default", (torch.zeros(1, 8, 5), depthwise, None, [2], [1], [1], True, [0], 8), {}) == 4
    assert k("aten.conv_transpose1d.default", (torch.zeros(1, 8, 5), torch.zeros(8, 4, 4)), {}) == 32


def test_a_row_with_an_infinite_error_is_one_line_not_a_crash():
    """The exact result all zeros, the device's not: relative error inf, written to ops.json as "inf"."""
    from csm_conformance.accuracy.ops.record import OpCall
    from csm_conformance.accuracy.ops.run import JudgedCall

    result = standard.judge([torch.ones(4, dtype=torch.bfloat16)], [torch.zeros(4, dtype=torch.float64)], k=1)
    row = ops_report.call_row(1, JudgedCall(OpCall("aten.add.Tensor", "m", "prefill", (torch.ones(4),), {}), result), None)
    entry = {"case": "c", "trigger": "t", "recorded_calls": 1, "judged": 1, "past_standard": 1, "operators": [row]}
    assert "rel err inf" in ops_report.summary_line(entry, Path("o/ops.json"))
    assert "inf" in ops_report.table(entry)


def test_arguments_written_down_come_back_the_same():
    tensors: dict = {}
    args = (torch.arange(6.0).reshape(2, 3), [1, -1], None, torch.bfloat16, 2.5, float("-inf"), True)
    data = json.loads(json.dumps(standard.encode(args, tensors)))
    back = standard.decode(data, tensors, "cpu")
    assert torch.equal(back[0], args[0]) and back[0] is not args[0] and list(back[1:]) == list(args[1:])


def test_the_recorder_keeps_each_call_once_with_its_module_and_phase(tiny, short_en):
    recorder = record_case(tiny, short_en)
    calls = list(recorder.calls.values())
    assert recorder.total > len(calls) > 100
    assert {c.phase for c in calls} == {"prefill", "decode", "codec"}
    silu = [c for c in calls if c.op == "aten.silu.default"]
    assert {c.module for c in silu} >= {"backbone_model.layers.0.mlp.act_fn", "depth_decoder.model.layers.0.mlp.act_fn"}
    linear = next(c for c in calls if c.op == "aten.linear.default" and c.module == "backbone_model.layers.0.mlp.up_proj")
    weight = dict(tiny.model.named_parameters())["backbone_model.layers.0.mlp.up_proj.weight"]
    assert linear.args[1].data_ptr() == weight.data_ptr(), "parameters are shared, not copied per call"
    assert not any(c.op in ("aten.view.default", "aten.t.default") for c in calls), "views compute nothing"


def test_an_in_place_call_keeps_its_inputs_as_they_were():
    model = torch.nn.Identity()
    x = torch.ones(3)
    with recording(model) as recorder:
        x.add_(1.0)
    (call,) = [c for c in recorder.calls.values() if c.op == "aten.add_.Tensor"]
    assert torch.equal(call.args[0], torch.ones(3)) and torch.equal(x, torch.full((3,), 2.0))


def test_the_kernel_fault_hits_its_dtype_and_shape_only():
    fault = op_kernel.plant("silu", 0.5, torch.bfloat16, (2, 3))
    try:
        x = torch.ones(2, 3)
        assert torch.equal(torch.nn.functional.silu(x), torch.nn.functional.silu(x.double()).float())  # float32: untouched
        assert torch.nn.functional.silu(x.bfloat16()).float()[0, 0] == pytest.approx(1.5 * 0.7311, rel=1e-2)
        assert torch.nn.functional.silu(torch.ones(3, 2).bfloat16()).float()[0, 0] == pytest.approx(0.7311, rel=1e-2)  # another shape
        assert fault.hits == 1
    finally:
        fault.__exit__(None, None, None)


def test_a_planted_kernel_fault_is_the_first_row_and_a_clean_model_has_none(short_en):
    from csm_conformance.runtime import models

    bf16 = models.ModelSource("tiny").load("cpu", torch.bfloat16)
    clean = case_ops(bf16, short_en)
    assert not clean.past and clean.ranked[0].excess < 0.6, ops_report.table(ops_report.case_document(clean, "test"))
    fault = op_kernel.plant("silu", 0.02, torch.bfloat16)
    try:
        faulty = case_ops(bf16, short_en)
    finally:
        fault.__exit__(None, None, None)
    assert faulty.ranked[0].call.op == "aten.silu.default" and {j.call.op for j in faulty.past} == {"aten.silu.default"}


def test_a_red_check_names_the_operator_and_writes_its_repro(run_suite, pytester):
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-fault", "op:silu:0.02", "-k", "backbone_logits")
    text = result.stdout.str()
    assert result.ret == 1, text[-3000:]
    line = next(line for line in text.splitlines() if line.startswith("short_en/backbone_logits:"))
    assert "first diverging module: backbone_model.layers.0.mlp" in line
    assert "first operator past its standard: aten.silu.default at " in line and "/repro.py" in line, line
    doc = ops_report.read(pytester.path / "output" / "ops" / "ops.json")
    (entry,) = doc["cases"]
    assert entry["trigger"] == "red check: short_en/backbone_logits" and entry["operators"][0]["op"] == "aten.silu.default"
    assert (pytester.path / "output" / "ops" / entry["operators"][0]["repro"]).is_file()
    assert "csm-conformance operators" in text


def test_the_operator_gate_passes_clean_and_is_deselected_without_the_option(run_suite, pytester):
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-ops", "short_en", "-k", "operator")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=1)
    entry = ops_report.read(pytester.path / "output" / "ops" / "ops.json")["cases"][0]
    assert entry["trigger"] == "--csm-ops" and entry["past_standard"] == 0 and entry["judged"] > 100
    assert not list((pytester.path / "output" / "ops").glob("*/repro.py")), "no bundle for a clean run"
    plain = run_suite(pytester, "--csm-case", "short_en", "-k", "operator", "--collect-only", "-q")
    assert "test_operator_conformance" not in plain.stdout.str()


def test_an_unknown_ops_case_is_one_line(run_suite, pytester, one_line_error):
    one_line_error(run_suite(pytester, "--csm-ops=nosuch"), "--csm-ops: no case nosuch in the catalogue")


def test_an_ops_case_outside_the_runs_cases_is_one_line_not_a_silent_deselect(run_suite, pytester, one_line_error):
    one_line_error(run_suite(pytester, "--csm-case", "short_en", "--csm-ops", "chinese"),
                   "--csm-ops: no case chinese in this run's cases (--csm-case) (cases: short_en, or all)")
