"""The loop's other judges (issue 21): the reference's cached loop against an uncached forward
(cache consistency), the compiled mode's side effects, and the two faults only they can see
(cache_path on both sides, compiled in compiled graphs only). End to end: test_gate.py."""

from __future__ import annotations

import pytest
import torch
from transformers import cache_utils

from csm_conformance import faults
from csm_conformance.accuracy import decode
from csm_conformance.faults.spec import check_spec
from csm_conformance.runtime import decode_loop, devices, probes

pytestmark = pytest.mark.selftest
FRAMES = 6
LIMIT = 5e-5  # pytest.ini's csm_cache_max_rel_error


@pytest.fixture
def cache_classes_restored():
    """cache_path patches transformers' cache classes for the whole process: put them back."""
    saved = {cls: vars(cls)["update"] for cls in vars(cache_utils).values()
             if isinstance(cls, type) and issubclass(cls, cache_utils.Cache) and "update" in vars(cls)}
    yield
    for cls, update in saved.items():
        cls.update = update


@pytest.fixture
def eager_backend(monkeypatch):
    """The compiled mode through dynamo's 'eager' backend: the same static caches, generate's compile
    handling and graph capture, without inductor's minutes of code generation."""
    monkeypatch.setattr(devices, "compile_backend", lambda device: ("eager", None, "dynamo eager backend (self-test)"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return decode.step_series(a, b, None).rel_error


def test_the_cached_loop_equals_an_uncached_forward_within_float32(tiny, short_en):
    """Clean: every step of the reference's cached loop is an uncached forward over the same prefix
    up to float32 summation order, well under the limit; the uncached pass is shaped like the loop."""
    loop = decode_loop.reference_decode(tiny, short_en, FRAMES)
    backbone, depth = probes.teacher_forced_logits(tiny, short_en, loop.codes)
    assert backbone.shape == loop.backbone.shape and depth.shape == loop.depth.shape
    assert float(_rel(loop.backbone, backbone).max()) < LIMIT / 10
    assert float(_rel(loop.depth, depth).max()) < LIMIT / 10
    assert torch.equal(depth, probes.depth_decoder_logits(tiny, short_en, loop.codes))  # the depth probe is this pass


def test_cache_path_changes_cached_decode_steps_only(tiny, short_en, cache_classes_restored):
    """cache_path scales what a cache hands back in one-position steps: the uncached pass is bitwise
    unchanged, the prefill step too, and the cached loop leaves the uncached one by ~the fault."""
    clean = decode_loop.reference_decode(tiny, short_en, FRAMES)
    uncached = probes.teacher_forced_logits(tiny, short_en, clean.codes)
    note = faults.apply_fault(tiny.model, "cache_path:1e-3")
    assert "reference and device alike" in note
    faulty = decode_loop.forced_decode(tiny, short_en, clean.codes, FRAMES)
    again = probes.teacher_forced_logits(tiny, short_en, clean.codes)
    assert torch.equal(again[0], uncached[0]) and torch.equal(again[1], uncached[1])
    assert torch.equal(faulty.backbone[0], clean.backbone[0])  # the prefill reads no cache
    assert float(_rel(faulty.backbone[1:], uncached[0][1:]).min()) > LIMIT
    assert float(_rel(faulty.depth, uncached[1]).min()) > LIMIT  # each frame's depth steps after its first
    with pytest.raises(faults.FaultError, match="planted twice"):
        faults.apply_fault(tiny.model, "cache_path:1e-3")


def test_compiled_mode_leaves_the_generation_configs_as_they_were(tiny, short_en, eager_backend):
    """After a compiled loop both generation configs are as before, so an eager loop that follows
    runs eager (a depth-decoder config restored in the wrong order kept its static cache and
    compile config for good: the next 'eager' loop ran the compiled graphs)."""
    configs = [tiny.model.generation_config, tiny.model.depth_decoder.generation_config]
    before = [c.to_dict() for c in configs]
    free = decode_loop.reference_decode(tiny, short_en, FRAMES)
    compiled = decode_loop.forced_decode(tiny, short_en, free.codes, FRAMES, mode="compiled")
    after = [tiny.model.generation_config.to_dict(), tiny.model.depth_decoder.generation_config.to_dict()]
    assert after == before
    assert float(_rel(free.depth, compiled.depth).max()) < LIMIT  # float32: the compiled loop is the eager one


def test_the_compiled_fault_perturbs_compiled_graphs_only(tiny, short_en, eager_backend):
    free = decode_loop.reference_decode(tiny, short_en, FRAMES)
    note = faults.apply_fault(tiny.model, "compiled:1e-2")
    assert "compiled graph" in note
    eager = decode_loop.forced_decode(tiny, short_en, free.codes, FRAMES)
    compiled = decode_loop.forced_decode(tiny, short_en, free.codes, FRAMES, mode="compiled")
    assert torch.equal(eager.backbone, free.backbone) and torch.equal(eager.depth, free.depth)
    assert torch.equal(compiled.backbone[0], free.backbone[0])  # the prefill is not compiled
    assert float(_rel(free.depth, compiled.depth).max()) > 5e-3


@pytest.mark.parametrize("spec,message", [("cache_path", "give the relative error"), ("compiled:x", "is not a number"),
                                          ("compiled:0", "must be > 0")])
def test_spec_errors(spec, message):
    with pytest.raises(faults.FaultError, match=message):
        check_spec(spec)
