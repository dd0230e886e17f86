"""Performance attribution (issue 24): a profile summed per operator, module and host vs device;
two sides' rounds compared row by row with a noise floor; torch_npu's trace read as torch's; the
stack fingerprint that tells a replaced kernel's environment from the same stack. Synthetic events
and rounds make every rule checkable in milliseconds; test_attribution_planted.py runs the real
workers on planted slowdowns."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest

from csm_conformance.faults.errors import FaultError
from csm_conformance.faults.op_kernel import slow_environment
from csm_conformance.faults.spec import check_spec
from csm_conformance.performance import attribution, stored_profile
from csm_conformance.performance.op_profile import OUTSIDE, summarize
from csm_conformance.runtime.profiling import Event, chrome_events, folded, kineto_events

pytestmark = pytest.mark.selftest


def op(name, start, end, order, thread=1, link=0):
    return Event(name, "op", start, end, thread, link, "", order)


def mark(path, start, end, order):
    return Event("module:" + path, "mark", start, end, 1, 0, "", order)


# ---- one round's summary ---------------------------------------------------------------------
def test_a_round_is_summed_per_outermost_operator_module_and_host_time():
    events = [
        mark("backbone", 0, 100, 0),
        op("aten::linear", 10, 40, 1), op("aten::addmm", 12, 38, 2),  # inside linear: linear's time
        op("aten::silu", 50, 70, 3), op("aten::silu", 52, 68, 4),  # a re-entry (a Python kernel): one call
        mark("backbone.norm", 80, 95, 5), op("aten::mean", 81, 90, 6),
        # an operator that ends in the very microsecond its child starts and ends: the lower order is the outer one
        op("aten::reshape", 96, 97, 7), op("aten::view", 96, 97, 8),
        op("aten::multinomial", 110, 130, 9),  # outside any module
    ]
    s = summarize(events, frames=2, wall_us=200)
    ops = s["operators"]
    assert ops["aten::linear|backbone"] == {"us": 15.0, "calls": 0.5, "device_us": 0.0, "shapes": ""}
    assert ops["aten::silu|backbone"]["calls"] == 0.5 and ops["aten::silu|backbone"]["us"] == 10.0
    assert "aten::addmm|backbone" not in ops and "aten::view|backbone" not in ops
    assert ops["aten::reshape|backbone"]["calls"] == 0.5
    assert ops[f"aten::multinomial|{OUTSIDE}"]["us"] == 10.0
    mods = s["modules"]
    # backbone: 100 us, of which 30 + 20 + 1 in its operators and 15 in its child module: 34 us of its own
    assert mods["backbone"] == {"us": 50.0, "self_us": 17.0, "calls": 0.5}
    assert mods["backbone.norm"]["self_us"] == 3.0
    hd = s["host_device"]
    assert hd["operators_host_us"] == (30 + 20 + 9 + 1 + 20) / 2 and hd["outside_operators_us"] == (200 - 80) / 2
    assert hd["device_busy_us"] is None


def test_device_time_goes_to_the_operator_that_launched_it():
    events = [op("aten::mm", 0, 10, 1), Event("cudaLaunchKernel", "launch", 2, 4, 1, 77),
              Event("gemm_kernel", "device", 5, 25, -1, 77), Event("stray_kernel", "device", 20, 30, -1, 99)]
    s = summarize(events, frames=1, wall_us=40)
    assert s["operators"][f"aten::mm|{OUTSIDE}"]["device_us"] == 20
    assert any(k.startswith("(device work without a host operator)") for k in s["operators"])
    assert s["host_device"]["device_busy_us"] == 25  # 5..30, the overlap counted once


def test_layer_indices_are_folded():
    assert folded("backbone_model.layers.12.mlp.act_fn") == "backbone_model.layers.*.mlp.act_fn"
    assert folded("depth_decoder.model.layers.0") == "depth_decoder.model.layers.*"
    assert folded("codebook0_head") == "codebook0_head"


def test_torch_npus_trace_view_is_read_with_its_kernels_and_module_ranges(tmp_path):
    """The shape torch_npu writes (a bare list, times as strings in microseconds, a kernel's with a
    trailing tab, record_function ranges as cpu_op, kernels in the "Ascend Hardware" process, an
    async_npu flow from the operator to its kernel, Input Dims as a string)."""
    host, hw = 4242, 2
    trace = [
        {"ph": "M", "name": "process_name", "pid": host, "args": {"name": "Python"}},
        {"ph": "M", "name": "process_name", "pid": hw, "args": {"name": "Ascend Hardware"}},
        {"ph": "X", "name": "module:backbone_model.layers.*.mlp", "pid": host, "tid": 7, "ts": "1733300000000000.000", "dur": 100.0, "cat": "cpu_op"},
        {"ph": "X", "name": "aten::silu", "pid": host, "tid": 7, "ts": "1733300000000010.000", "dur": 20.0, "cat": "cpu_op",
         "args": {"Input Dims": "1,21,128;\r\n", "Sequence number": -1}},
        {"ph": "s", "name": "torch_to_npu", "cat": "async_npu", "id": 555, "pid": host, "tid": 7, "ts": "1733300000000015.000", "bp": "e"},
        {"ph": "f", "name": "torch_to_npu", "cat": "async_npu", "id": 555, "pid": hw, "tid": 3, "ts": "1733300000000050.000\t", "bp": "e"},
        {"ph": "X", "name": "Swish_AIV", "pid": hw, "tid": 3, "ts": "1733300000000050.000\t", "dur": 30.0, "args": {"Task Type": "AI_VECTOR_CORE"}},
    ]
    # two operators back to back, 0.1 us apart, at a real epoch time: a float of the absolute time
    # (a quarter microsecond apart at 1.7e15) would nest the second inside the first
    trace += [{"ph": "X", "name": name, "pid": host, "tid": 7, "ts": ts, "dur": 0.2, "cat": "cpu_op"}
              for name, ts in (("aten::view", "1733300000000031.100"), ("aten::add", "1733300000000031.400"))]
    path = tmp_path / "trace_view.json"
    path.write_text(json.dumps(trace))
    events = chrome_events(path)
    assert sorted(e.kind for e in events) == ["device", "launch", "mark", "op", "op", "op"]
    assert {k.split("|")[0] for k in summarize(events, 1, 200)["operators"]} == {"aten::silu", "aten::view", "aten::add"}
    s = summarize(events, frames=1, wall_us=200)
    row = s["operators"]["aten::silu|backbone_model.layers.*.mlp"]
    assert row["device_us"] == 30 and row["us"] == 20 and row["shapes"] == "1x21x128"
    assert s["host_device"]["device_busy_us"] == 30


def test_gpu_shadows_of_module_ranges_are_not_device_work():
    """On CUDA each record_function range also appears on the device timeline (gpu_user_annotation):
    it must not count as a kernel nor as device busy time."""
    class Raw:
        def __init__(self, name, activity, device, start, dur, corr=0, linked=0):
            self._v = (name, activity, device, start, dur, corr, linked)

        def name(self): return self._v[0]  # noqa: E704
        def activity_type(self): return self._v[1]  # noqa: E704
        def device_type(self): return self._v[2]  # noqa: E704
        def start_ns(self): return self._v[3]  # noqa: E704
        def duration_ns(self): return self._v[4]  # noqa: E704
        def correlation_id(self): return self._v[5]  # noqa: E704
        def linked_correlation_id(self): return self._v[6]  # noqa: E704
        def start_thread_id(self): return 1  # noqa: E704
        def shapes(self): return []  # noqa: E704

    class Results:
        def events(self):
            return [Raw("module:mlp", "user_annotation", "DeviceType.CPU", 0, 100_000, 1),
                    Raw("aten::mm", "cpu_op", "DeviceType.CPU", 10_000, 20_000, 2),
                    Raw("cudaLaunchKernel", "cuda_runtime", "DeviceType.CPU", 12_000, 5_000, 3),
                    Raw("gemm", "kernel", "DeviceType.CUDA", 40_000, 30_000, 0, 3),
                    Raw("module:mlp", "gpu_user_annotation", "DeviceType.CUDA", 40_000, 60_000)]

        def trace_start_ns(self):
            return 0

    s = summarize(kineto_events(Results(), False), 1, 200)
    assert s["operators"] == {"aten::mm|mlp": {"us": 20.0, "calls": 1.0, "device_us": 30.0, "shapes": ""}}
    assert s["host_device"]["device_busy_us"] == 30.0


# ---- two sides compared ----------------------------------------------------------------------
def rounds(n, seed, silu=100.0, extra_calls=0.0, python=0.0, noise=0.03):
    rng = random.Random(seed)
    j = lambda us: us * math.exp(rng.gauss(0, noise))  # noqa: E731
    out = []
    for _ in range(n):
        ops = {"aten::silu|mlp.act_fn": {"us": j(silu), "calls": 2.0, "device_us": 0.0, "shapes": ""},
               "aten::linear|mlp.up_proj": {"us": j(2000), "calls": 2.0, "device_us": 0.0, "shapes": ""},
               "aten::view|attn": {"us": j(5), "calls": 6.0, "device_us": 0.0, "shapes": ""}}  # small and noisy: never named
        if extra_calls:
            ops["aten::_to_copy|norm"] = {"us": j(3), "calls": extra_calls, "device_us": 0.0, "shapes": ""}
        ops["aten::view|attn"]["us"] *= math.exp(rng.gauss(0, 0.3))
        in_ops = sum(r["us"] for r in ops.values())
        out.append({"frames": 8, "operators": ops, "modules": {"backbone": {"us": in_ops + 500, "self_us": j(500 + python), "calls": 1.0}},
                    "host_device": {"wall_us": in_ops + j(3000 + python), "operators_host_us": in_ops,
                                    "outside_operators_us": j(3000 + python), "device_busy_us": None}})
    return out


def test_a_slower_operator_is_named_first_and_nothing_else():
    table = attribution.compare(rounds(8, 1), rounds(8, 2, silu=300.0))
    first = table["operators"][0]
    assert (first["name"], first["module"], first["decision"]) == ("aten::silu", "mlp.act_fn", "grew")
    assert first["low"] > 2.5 and first["delta_us_per_frame"] == pytest.approx(200, rel=0.1)
    assert [r["decision"] for r in table["operators"][1:]] == ["unchanged", "unchanged"]
    assert attribution.headline(table)[0].startswith("operator aten::silu at mlp.act_fn: ")


def test_same_stack_names_nothing_in_many_tries():
    named = [line for seed in range(50) for line in attribution.headline(attribution.compare(rounds(8, 2 * seed), rounds(8, 2 * seed + 1)))
             if not line.startswith("no operator")]
    assert named == []


def test_a_new_call_is_named_by_its_count_however_small_its_time():
    table = attribution.compare(rounds(8, 1), rounds(8, 2, extra_calls=2.0))
    first = table["operators"][0]
    assert (first["name"], first["decision"], first["calls_before"], first["calls_after"]) == ("aten::_to_copy", "new", 0.0, 2.0)
    assert "calls per frame 0 -> 2, new" in attribution.describe(first, "operators")


def test_python_time_between_operators_is_the_modules_and_the_hosts_not_an_operators():
    table = attribution.compare(rounds(8, 1), rounds(8, 2, python=1500.0))
    assert all(r["decision"] == "unchanged" for r in table["operators"])
    assert table["modules"][0]["module"] == "backbone" and table["modules"][0]["decision"] == "grew"
    outside = next(r for r in table["host_device"] if r["what"].startswith("host time outside"))
    assert outside["decision"] == "grew"
    assert attribution.headline(table)[0].startswith("module backbone (host time outside its operators)")


def test_on_an_accelerator_a_fallback_to_the_host_is_named():
    """Operators are compared by device time where the device reports kernels; an operator whose
    kernel moved to the CPU (no device time, more host time) is named by its host time."""
    def device(rounds_, fallback=False):
        for r in rounds_:
            r["host_device"]["device_busy_us"] = 1000.0
            for row in r["operators"].values():
                row["device_us"] = row["us"] * 0.5
            if fallback:
                silu = r["operators"]["aten::silu|mlp.act_fn"]
                silu["device_us"], silu["us"] = 0.0, silu["us"] * 6
        return rounds_
    table = attribution.compare(device(rounds(8, 1)), device(rounds(8, 2), fallback=True))
    first = table["operators"][0]
    assert (first["name"], first["decision"], first["judged_by"]) == ("aten::silu", "grew", "host"), first
    assert "host time" in attribution.describe(first, "operators") and table["time"].startswith("device time")


def test_a_profiler_that_fails_in_the_stored_gate_is_one_line_and_keeps_the_verdict(monkeypatch):
    from types import SimpleNamespace

    from csm_conformance.results import Status

    def broken(*_a, **_k):
        raise RuntimeError("the profiler could not start\nsecond line")

    monkeypatch.setattr(stored_profile, "profile", broken)
    result = SimpleNamespace(status=Status.REGRESSED, info={}, messages=[])
    run = SimpleNamespace(settings=SimpleNamespace(csm_profile=False), session=SimpleNamespace(target=None))
    stored_profile.attribute(run, None, None, result, 0)
    assert result.status is Status.REGRESSED and "operator_profile" not in result.info
    assert result.messages == ["profiling failed, so no per-operator summary: RuntimeError: the profiler could not start"]


def test_the_stored_comparison_uses_the_median_summary_and_a_wider_floor():
    stored = stored_profile.median_summary(rounds(6, 1))
    assert stored["operators"]["aten::silu|mlp.act_fn"]["us"] == pytest.approx(100, rel=0.05)
    slower = stored_profile.against_stored(stored, rounds(6, 2, silu=400.0))
    assert slower["operators"][0]["name"] == "aten::silu" and slower["operators"][0]["decision"] == "grew" and not slower["paired"]
    assert slower["floor"]["ratio"] == stored_profile.FLOOR["ratio"]
    same = stored_profile.against_stored(stored, rounds(6, 3))
    assert stored_profile.message(same, "then").endswith("no operator, module or host/device time changed beyond the noise floor "
                                                        "(x1.25 and 1.0% of a frame, 95% intervals over 6 rounds)")


# ---- planting, and telling the stacks apart ------------------------------------------------------
def test_the_fault_specs_for_attribution_proofs_are_checked():
    check_spec("cast:backbone_model.norm")
    with pytest.raises(FaultError, match="name a module"):
        check_spec("cast:")
    with pytest.raises(ValueError, match="no CPU replacement for aten gelu"):
        slow_environment("/nonexistent-never-written", "gelu", 10, sys.executable)


def test_a_replaced_kernel_changes_the_stack_fingerprint(tmp_path):
    """The candidate's interpreter is a wrapper that puts a sitecustomize first: the fingerprint
    names the start-up hook and the path, so the A/B can no longer call the two sides A/A."""
    wrapper = slow_environment(tmp_path / "slow", "silu", 50, sys.executable)
    code = ("import json, torch, torch.nn.functional as F; from csm_conformance.runtime import stack;"
            "x = torch.ones(4); import time; t = time.perf_counter(); [F.silu(x) for _ in range(20)];"
            "print(json.dumps({'env': stack.library_environment(), 'us': (time.perf_counter() - t) / 20 * 1e6}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(attribution.__file__)))
    slowed = json.loads(subprocess.run([str(wrapper), "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    plain = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert "sitecustomize.py (sha256 " in slowed["env"]["startup:sitecustomize"] and "startup:sitecustomize" not in plain["env"]
    assert slowed["env"]["PYTHONPATH"].startswith(str(tmp_path / "slow")) and slowed["us"] > 50
