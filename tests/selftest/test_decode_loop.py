"""The decode-loop check's parts (issue 21): forced decoding through the model's own generate()
(runtime/decode_loop.py), the per-step figures (accuracy/decode.py) and the decode-only fault
(faults: decode_attn). The check end to end, clean and with the fault planted: test_gate.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from csm_conformance import faults
from csm_conformance.accuracy import decode
from csm_conformance.catalogue.cases import load_catalogue
from csm_conformance.runtime import decode_loop, models, probes

pytestmark = pytest.mark.selftest
FRAMES = 6


@pytest.fixture(scope="module")
def tiny():
    return models.ModelSource("tiny").load("cpu", torch.float32)


@pytest.fixture(scope="module")
def short_en():
    return load_catalogue().select(["short_en"]).prompts[0]


def test_forcing_the_reference_along_its_own_path_changes_nothing(tiny, short_en):
    """The reference forced along its own greedy codes computes bitwise the logits of its free
    loop, and those codes are the suite's plain greedy codes: forcing itself adds no error. The
    depth decoder's generation config is as it was before."""
    config = tiny.model.depth_decoder.generation_config.to_dict()
    free = decode_loop.reference_decode(tiny, short_en, FRAMES)
    forced = decode_loop.forced_decode(tiny, short_en, free.codes, FRAMES)
    assert tiny.model.depth_decoder.generation_config.to_dict() == config  # (probes.greedy_codes changes it for good)
    assert free.codes.shape == (FRAMES, tiny.model.config.num_codebooks)
    assert free.backbone.shape == (FRAMES, tiny.model.config.vocab_size)
    assert free.depth.shape == (FRAMES, tiny.model.config.num_codebooks - 1, tiny.model.config.vocab_size)
    assert torch.equal(forced.codes, free.codes) and torch.equal(free.codes, probes.greedy_codes(tiny, short_en, FRAMES))
    assert torch.equal(forced.backbone, free.backbone) and torch.equal(forced.depth, free.depth)
    assert "generate" not in vars(tiny.model.depth_decoder)  # the wrapper is gone


def test_the_device_is_forced_along_other_codes(tiny, short_en):
    """Forced codes are followed even where the model would pick another code."""
    free = decode_loop.reference_decode(tiny, short_en, FRAMES)
    other = (free.codes + 1) % tiny.model.config.vocab_size
    forced = decode_loop.forced_decode(tiny, short_en, other, FRAMES)
    assert torch.equal(forced.codes, other)
    assert torch.equal(forced.backbone[0], free.backbone[0])  # the prefill step precedes every forced code
    assert not torch.equal(forced.backbone[1:], free.backbone[1:])


def test_decode_attn_changes_cached_decode_steps_only(tiny, short_en):
    """decode_attn scales the attention in cached decode steps (query length 1) only: the one-pass
    probes (the other checks' uncached forwards) are bitwise unchanged, the loop's first step (the
    prefill) too, every later step is not."""
    device = models.LoadedModel(copy.deepcopy(tiny.model), tiny.processor, "cpu", torch.float32, tiny.identity, 0.0)
    ref = decode_loop.reference_decode(tiny, short_en, FRAMES)
    clean = decode_loop.forced_decode(device, short_en, ref.codes, FRAMES)
    note = faults.apply_fault(device.model, "decode_attn:1.05")
    assert "cached decode steps" in note and "prefill untouched" in note
    assert torch.equal(probes.backbone_logits(device, short_en), probes.backbone_logits(tiny, short_en))
    codes = probes.greedy_codes(tiny, short_en, 4)
    assert torch.equal(probes.depth_decoder_logits(device, short_en, codes), probes.depth_decoder_logits(tiny, short_en, codes))
    planted = decode_loop.forced_decode(device, short_en, ref.codes, FRAMES)
    assert torch.equal(planted.backbone[0], clean.backbone[0])
    assert bool((decode.step_series(clean.backbone, planted.backbone, None).rel_error[1:] > 1e-3).all())
    assert float(decode.step_series(ref.backbone, clean.backbone, None).rel_error.max()) < 1e-5  # a copy of the model: float32 noise


@pytest.mark.parametrize("spec,message", [("decode_attn:1", "changes nothing"), ("decode_attn:x", "is not a number")])
def test_decode_attn_spec_errors(spec, message):
    with pytest.raises(faults.FaultError, match=message):
        faults.apply_fault(torch.nn.Module(), spec)


def test_step_figures_known_values():
    ref = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    dev = ref.clone()
    dev[1] = torch.tensor([1.0, 0.5])  # step 1: rel error 0.5, its cosine 1/sqrt(1.25)
    dev[3] = torch.tensor([5.0, 1.0])  # step 3: rel error 0.2
    series = decode.step_series(ref, dev, None)
    assert series.rel_error.tolist() == pytest.approx([0.0, 0.5, 0.0, 0.2])
    assert float(series.cosine[1]) == pytest.approx(1 / math.sqrt(1.25))
    figures = decode.loop_figures(series, "@depth")
    assert set(figures) == {"worst_step_cosine@depth", "worst_step_rel_error@depth", "argmax_agreement@depth",
                            "kl_divergence@depth", "error_growth@depth"}
    assert figures["worst_step_rel_error@depth"] == pytest.approx(0.5) and figures["argmax_agreement@depth"] == 1.0
    step, what = decode.first_step_out(series, 0.99, None, None)
    assert step == 1 and what.endswith("< 0.9900000 (the cosine floor)"), what
    step, what = decode.first_step_out(series, 0.0, None, 0.3)
    assert step == 1 and what.startswith("rel_error 0.5 > 0.3")
    assert decode.first_step_out(series, 0.0, None, 0.6) is None


def test_error_growth_is_last_quarter_over_first():
    assert decode.error_growth(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])) == pytest.approx(4.0)
    assert decode.error_growth(torch.tensor([2.0])) == 1.0
    assert decode.error_growth(torch.zeros(8)) == 1.0 and decode.error_growth(torch.tensor([0.0, 1.0])) == math.inf


def test_a_loop_that_stops_early_is_one_line(tiny, short_en):
    """CSM stops at an all-zero frame whatever min_new_tokens says: the reference loop names it."""
    original = tiny.model.generate
    tiny.model.generate = lambda *args, **kwargs: original(*args, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
    try:
        with pytest.raises(decode_loop.DecodeStoppedEarly) as err:
            decode_loop.reference_decode(tiny, short_en, FRAMES)
    finally:
        del tiny.model.generate
    assert str(err.value).startswith("short_en: the reference's greedy decode loop stopped after 2 of 6 frames") and "\n" not in str(err.value)
