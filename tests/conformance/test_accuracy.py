"""Device-vs-CPU accuracy conformance. Each body is the specification of one check (the case, the
probe on the CPU float32 reference and on the device under test, the assertion) and runs unchanged
on every device and model: the `csm` fixture holds both models. How a result is judged, explained
and reported is in csm_conformance/suite/checks.py."""

from __future__ import annotations

import pytest
import torch

from csm_conformance.accuracy import metrics
from csm_conformance.plugin import assert_gate
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.runtime import probes
from csm_conformance.suite import checks, loop_checks, op_checks
from csm_conformance.suite.session import NonFiniteOutputError

pytestmark = pytest.mark.accuracy


def test_load_integrity(csm):
    """The checkpoint was loaded as written: nothing missing (initialised at random), nothing
    dropped, declared ties held, on the reference and on the device."""
    result = csm.check_load_integrity()
    if result is None:
        pytest.skip(f"{csm.model_key} is built in memory, not loaded from a checkpoint")
    assert_gate(checks.attached(result))


def test_backbone_logits(csm, prompt_case):
    ref = csm.ref_backbone_logits(prompt_case)
    dev = probes.backbone_logits(csm.target, prompt_case, context_codec=csm.reference)
    assert_gate(checks.explained(csm, prompt_case, csm.check_logits(prompt_case.id, "backbone_logits", ref, dev)))


def test_depth_decoder_logits(csm, prompt_case):
    ref = csm.ref_depth_logits(prompt_case)
    dev = probes.depth_decoder_logits(csm.target, prompt_case, csm.ref_codes(prompt_case), context_codec=csm.reference)
    assert_gate(checks.explained(csm, prompt_case, csm.check_logits(prompt_case.id, "depth_logits", ref, dev)))


def test_decode_loop(csm, loop_case, loop_mode):
    """The generation loop, eager and compiled (static cache + torch.compile, as the performance gate
    times it): the device's cached decode steps, forced through its own generate() along the
    reference's greedy codes, step by step against the reference's loop."""
    ref = loop_checks.reference_loop(csm, loop_case)
    dev = loop_checks.device_loop(csm, loop_case, ref, loop_mode)
    assert_gate(loop_checks.decode_loop(csm, loop_case, ref, dev, mode=loop_mode))


def test_decode_cache_consistency(csm, loop_case):
    """The reference's cached loop against an uncached forward over the same prefix, on the reference
    itself: a cache-path error of the stack, which no device-vs-reference comparison can see."""
    ref = loop_checks.reference_loop(csm, loop_case)
    uncached = probes.teacher_forced_logits(csm.reference, loop_case, ref.codes)
    assert_gate(loop_checks.cache_consistency(csm, loop_case, ref, uncached))


def test_mimi_decode(csm, decode_case):
    ref = csm.ref_decode(decode_case)
    dev = probes.mimi_decode(csm.target, csm.codec_codes(decode_case))
    result = csm.nonfinite_result(decode_case.id, "mimi_decode", reference=ref, device=dev) \
        or csm.evaluate(decode_case.id, "mimi_decode", metrics.waveform_metrics(ref, dev))
    reporting.attach_wav(f"{decode_case.id} device decode", dev.numpy())
    assert_gate(checks.explained(csm, decode_case, result))


def test_operator_conformance(csm, ops_case):
    """--csm-ops: every distinct aten operator call of the case on the device (the backbone's prefill
    and a decode step, the depth decoder, the codec), replayed there, within its correctly rounded
    standard computed on the CPU in float64; output/ops/ops.json and a repro per operator past it."""
    assert_gate(checks.attached(op_checks.operator_conformance(csm, ops_case)))


def test_module_local_error(csm, prompt_case):
    assert_gate(checks.module_local(csm, prompt_case))


def test_module_local_error_codec(csm, decode_case):
    assert_gate(checks.module_local(csm, decode_case))


def test_mimi_encode(csm, encode_case):
    ref = csm.ref_encode(encode_case)
    dev = probes.mimi_encode(csm.target, torch.from_numpy(encode_case.encode_audio.waveform()))
    assert_gate(checks.attached(csm.evaluate(encode_case.id, "mimi_encode", metrics.code_agreement(ref, dev))))


def test_seeded_generation(csm, generation_case):
    """Fixed-length sampled generation on the device: finite, full-length, decodable by Mimi, repeatable."""
    frames = generation_case.generate_frames
    try:
        codes_a, audio_a = csm.device_generation(generation_case, frames, seed=0)
        codes_b, _ = csm.device_generation(generation_case, frames, seed=0)
    except (NonFiniteOutputError, probes.UndecodableCodesError) as exc:  # `from None`: the one line, not the chain under it
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    assert_gate(checks.generation(csm, generation_case, codes_a, audio_a, codes_b))


def test_reference_drift_prompt(csm, prompt_case):
    """Today's CPU reference against the golden one saved on a known-good stack."""
    if csm.settings.csm_save_golden:
        assert_gate(checks.saved_golden(csm, prompt_case.id, {
            "backbone_logits": csm.ref_backbone_logits(prompt_case),
            "depth_codes": csm.ref_codes(prompt_case),
            "depth_logits": csm.ref_depth_logits(prompt_case),
        }))
        return
    golden, meta = checks.golden_or_skip(csm, prompt_case.id)
    now_logits = csm.ref_backbone_logits(prompt_case)
    if now_logits.shape != golden["backbone_logits"].shape:
        pytest.fail(f"{prompt_case.id}: prompt tokenizes to {now_logits.shape[0]} positions now, "
                    f"{golden['backbone_logits'].shape[0]} in the golden reference (tokenizer or template drift)", pytrace=False)
    values = {f"backbone_{k}": v for k, v in metrics.logits_metrics(golden["backbone_logits"], now_logits).items()}
    depth_now = csm.ref_depth_logits(prompt_case, codes=golden["depth_codes"])
    values.update({f"depth_{k}": v for k, v in metrics.logits_metrics(golden["depth_logits"], depth_now).items()})
    values["greedy_code_agreement"] = metrics.code_agreement(golden["depth_codes"], csm.ref_codes(prompt_case))["code_agreement"]
    assert_gate(checks.drift(csm, prompt_case.id, values, meta=meta, invariants={
        "backbone_cosine": "cosine", "depth_cosine": "cosine", "backbone_rel_error": "rel_error", "depth_rel_error": "rel_error"}))


def test_reference_drift_loop(csm, loop_case):
    """Today's CPU reference decode loop against the golden one, step by step."""
    now = loop_checks.reference_loop(csm, loop_case)
    if csm.settings.csm_save_golden:
        assert_gate(loop_checks.golden_loop(csm, loop_case, now))
        return
    assert_gate(loop_checks.loop_drift(csm, loop_case, now))


def test_reference_drift_codec(csm, decode_case):
    if csm.settings.csm_save_golden:
        assert_gate(checks.saved_golden(csm, decode_case.id, {"decode_audio": csm.ref_decode(decode_case)}))
        return
    golden, meta = checks.golden_or_skip(csm, decode_case.id)
    values = metrics.waveform_metrics(golden["decode_audio"], csm.ref_decode(decode_case))
    values["rel_error"] = metrics.rel_error(golden["decode_audio"], csm.ref_decode(decode_case))
    # a gain change keeps the cosine; the relative error sees it
    assert_gate(checks.drift(csm, decode_case.id, values, meta=meta, invariants={"cosine": "cosine", "rel_error": "rel_error"}))
