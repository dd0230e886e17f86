"""Checks of the SIMULATED torch_npu itself (not of an NPU): run them explicitly,

    .venv/bin/pytest tests/simulated_npu/npu_simulation_checks.py

The file name does not match pytest's test_*.py on purpose: collecting it puts tests/simulated_npu
on sys.path, and a run of the whole tests/ tree must not find a torch_npu by accident.
"""

from __future__ import annotations

import copy
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers  # noqa: F401  (as with the real torch_npu: transformers first)

import torch_npu

HERE = Path(__file__).resolve().parent


def test_is_the_simulation():
    assert torch_npu.SIMULATED and torch_npu.__version__.endswith(".simulated")
    assert Path(torch_npu.__file__).resolve().parent == HERE / "torch_npu"
    assert torch.npu is torch_npu.npu and torch.get_device_module("npu") is torch.npu
    assert "Simulated" in torch.npu.get_device_name(0)
    assert torch.npu.is_available() and torch.npu.device_count() == int(os.environ.get("SIMULATED_NPU_COUNT", "8"))


def test_device_count_from_environment():
    code = "import torch, torch_npu; print(torch.npu.device_count()); torch.zeros(1, device='npu:2')"
    env = {**os.environ, "PYTHONPATH": str(HERE), "SIMULATED_NPU_COUNT": "2"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "2"
    assert "npu:2 does not exist" in run.stderr


def test_factories_and_copies_match_cpu():
    torch.manual_seed(3)
    expected = torch.randn(4, 5)
    torch.manual_seed(3)
    x = torch.randn(4, 5, device="npu:1")
    assert x.device == torch.device("npu:1") and x.is_npu
    assert torch.equal(x.cpu(), expected)
    assert torch.arange(2, 11, 3, device="npu:1").cpu().tolist() == [2, 5, 8]
    assert torch.full((2,), 7.0, device="npu").device == torch.device("npu:0")
    assert torch.tensor([1, 2], device="npu:1").cpu().tolist() == [1, 2]
    back = x.cpu()
    back += 1  # a copy, not the card's memory
    assert torch.equal(x.cpu(), expected)
    assert torch.equal(x.to("npu:2").cpu(), expected)


def test_views_and_in_place_writes_alias():
    cache = torch.zeros(2, 4, 3, device="npu:0")  # made outside inference mode, like inputs
    row = cache[1]
    with torch.inference_mode():
        cache[:, 1:3] = torch.ones(2, 2, 3, device="npu:0")
        cache.index_copy_(1, torch.tensor([3], device="npu:0"), torch.full((2, 1, 3), 5.0, device="npu:0"))
        view = cache.view(8, 3)[2:4]
        view.mul_(2)
    expected = torch.zeros(2, 4, 3)
    expected[:, 1:3] = 1
    expected[:, 3] = 5
    expected.view(8, 3)[2:4] *= 2
    assert torch.equal(cache.cpu(), expected) and torch.equal(row.cpu(), expected[1])


def test_mixing_devices_raises_like_hardware():
    a = torch.ones(3, device="npu:0")
    with pytest.raises(RuntimeError, match="same device"):
        a + torch.ones(3)
    with pytest.raises(RuntimeError, match="same device"):
        a + torch.ones(3, device="npu:1")
    assert (a + torch.tensor(1.0)).cpu().tolist() == [2.0, 2.0, 2.0]  # 0-dim CPU scalars are fine
    assert a[torch.tensor([0, 2])].device == a.device  # so are CPU indices
    with pytest.raises(RuntimeError, match="indices should be"):
        torch.ones(3)[torch.tensor([0], device="npu:0")]


def test_memory_is_counted_per_storage_and_card():
    gc.collect()
    before0, before1 = torch.npu.memory_allocated(0), torch.npu.memory_allocated(1)
    x = torch.empty(1024, 256, device="npu:0")  # 1 MiB of float32
    views = [x[i] for i in range(8)] + [x.t(), x.view(-1)]
    assert torch.npu.memory_allocated(0) - before0 == 2**20
    assert torch.npu.memory_allocated(1) == before1
    torch.npu.reset_peak_memory_stats(0)
    y = x * 2
    del y
    assert torch.npu.max_memory_allocated(0) - before0 == 2 * 2**20
    del x, views
    gc.collect()
    assert torch.npu.memory_allocated(0) == before0
    torch.npu.reset_peak_memory_stats("npu:0")
    assert torch.npu.max_memory_allocated(torch.device("npu:0")) == before0
    free, total = torch.npu.mem_get_info(0)
    assert total - free == before0


def test_module_to_moves_parameters():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    inputs = torch.randn(2, 8)
    expected = layer(inputs)
    layer.to("npu:3")
    assert isinstance(layer.weight, torch.nn.Parameter) and layer.weight.device == torch.device("npu:3")
    assert torch.npu.memory_allocated(3) == (8 * 4 + 4) * 4
    with torch.inference_mode():
        assert torch.equal(layer(inputs.to("npu:3")).cpu(), expected.detach())
    twin = copy.deepcopy(layer)  # a copy on the same card, counted
    assert isinstance(twin.weight, torch.nn.Parameter) and torch.npu.memory_allocated(3) == 2 * (8 * 4 + 4) * 4
    twin.bias.data = torch.zeros(4, device="npu:3")  # `.data =` must carry the values along
    assert twin.bias.cpu().tolist() == [0.0] * 4 and layer.bias.cpu().abs().sum() > 0
    del layer, twin
    gc.collect()
    assert torch.npu.memory_allocated(3) == 0


def test_fused_kernels_refuse():
    with pytest.raises(NotImplementedError, match="simulated"):
        torch_npu.npu_fusion_attention()


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_csm_generate_matches_cpu(cache):
    """Greedy CSM generation on npu:1 is token-identical to the CPU in bfloat16, with the KV caches
    (dynamic: torch.cat, static: index_copy_ into preallocated tensors) living on the card."""
    from transformers import AutoProcessor, CsmForConditionalGeneration

    from csm_conformance.runtime import tiny_model

    path = str(tiny_model.ensure_tiny_model_dir())
    processor = AutoProcessor.from_pretrained(path)
    conversation = [{"role": "0", "content": [{"type": "text", "text": "The simulated card speaks."}]}]
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
    codes = {}
    for device in ("cpu", "npu:1"):
        model = CsmForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").to(device).eval()
        for config in (model.generation_config, model.depth_decoder.generation_config):
            config.cache_implementation = cache
        with torch.inference_mode():
            out = model.generate(**{k: v.to(device) for k, v in inputs.items()}, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                 depth_decoder_do_sample=False, output_audio=False)
        codes[device] = out.cpu()  # [batch, frames, codebooks]
        del model, out
    gc.collect()
    assert codes["npu:1"].shape[:2] == (1, 6)
    assert torch.equal(codes["npu:1"], codes["cpu"])
    assert torch.npu.memory_allocated(1) == 0


def test_torch_compile_refuses_clearly():
    compiled = torch.compile(lambda t: t * 2 + 1)
    with pytest.raises(Exception, match="torch.compile is not simulated"):
        compiled(torch.ones(3, device="npu:0"))


def test_a_profiled_round_goes_through_torch_npus_profiler_and_its_trace_view(tmp_path):
    """The suite's NPU profiling path (runtime/profiling.py): torch_npu.profiler's documented calls,
    the *_ascend_pt directory its handler writes, that directory's trace_view.json read back per
    operator and module. The simulation has no kernels: device time stays unmeasured (None)."""
    from csm_conformance.catalogue.workloads import load_workloads, perf_cases
    from csm_conformance.performance import op_profile, timing
    from csm_conformance.tools.synthesis import load

    loaded, _ = load("tiny", "npu:0", "bfloat16", True)
    (case,) = perf_cases(load_workloads(None), ["eager"], ["short_32t"], (1,))
    inputs = timing.workload_inputs(loaded, case)
    summary = op_profile.profile_round(loaded, inputs, case, 0, shapes=True, trace_dir=tmp_path)
    trace = Path(summary["trace"])
    assert trace.name.endswith("_ascend_pt") and (trace / "ASCEND_PROFILER_OUTPUT" / "trace_view.json").is_file()
    silu = {k: v for k, v in summary["operators"].items() if k.startswith("aten::silu|")}
    assert set(silu) == {"aten::silu|backbone_model.layers.*.mlp.act_fn", "aten::silu|depth_decoder.model.layers.*.mlp.act_fn"}
    assert all(v["calls"] > 0 and v["us"] > 0 and v["shapes"] for v in silu.values())
    assert summary["host_device"]["device_busy_us"] is None and summary["modules"]["backbone_model"]["calls"] >= 1
