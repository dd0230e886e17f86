"""Device-vs-CPU accuracy conformance. Each body runs unchanged on every device and model:
the `csm` fixture holds the device under test and the CPU float32 reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy import golden, localize, metrics
from csm_conformance.baseline_files import BaselineError
from csm_conformance.plugin import assert_passed
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.runtime import probes
from csm_conformance.suite.session import NonFiniteOutputError

pytestmark = pytest.mark.accuracy


@pytest.fixture(scope="session")
def localized() -> dict:
    """Localizations run so far, by case id: a case is localized once, whichever check asks first."""
    return {}


def _run_localizer(csm, case):
    """Capture, compare, write output/localize/<case>.{txt,png,json} (and the dump under
    --csm-dump); a localizer that cannot run gives a one-line note, never a different failure."""
    try:
        loc, sides = localize.localize_case(csm, case)
        paths = loc.write(csm.settings.output_dir / "localize", case.id)
        if csm.settings.csm_dump:
            localize.save_dump(Path(csm.settings.csm_dump) / case.id, sides)
    except Exception as exc:  # a diagnostic must not mask the check's own verdict
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"localizer could not run: {type(exc).__name__}: {first}"
    return loc, paths[1].read_bytes()


def localize_check(csm, case, result, localized: dict) -> None:
    """After a backbone, depth or Mimi-decode check: when it failed (or --csm-localize / --csm-dump
    ask for every case), name the first module whose output left the reference in the failure
    message, and attach the per-module table and plot."""
    settings = csm.settings
    if result.status != "failed" and not (settings.csm_localize or settings.csm_dump):
        return
    if case.id not in localized:
        localized[case.id] = _run_localizer(csm, case)
    outcome = localized[case.id]
    if isinstance(outcome, str):
        if result.status == "failed":
            result.messages.append(outcome)
        return
    loc, png = outcome
    if result.status == "failed":
        result.messages.append(loc.summary())
    reporting.attach_json(f"{case.id} localize: per-module table", {**loc.as_dict(), "table": loc.table()})
    reporting.attach_png(f"{case.id} localize: 1 - cosine and rel err per module", png)


def test_load_integrity(csm):
    """The checkpoint was loaded as written: nothing missing (initialised at random), nothing
    dropped, declared ties held, on the reference and on the device."""
    result = csm.check_load_integrity()
    if result is None:
        pytest.skip(f"{csm.model_key} is built in memory, not loaded from a checkpoint")
    reporting.attach_json("model load_integrity", result.as_dict())
    assert_passed(result)


def test_backbone_logits(csm, prompt_case, localized):
    ref = csm.ref_backbone_logits(prompt_case)
    dev = probes.backbone_logits(csm.target, prompt_case, context_codec=csm.reference)
    result = csm.check_logits(prompt_case.id, "backbone_logits", ref, dev)
    localize_check(csm, prompt_case, result, localized)
    reporting.attach_json(f"{prompt_case.id} backbone_logits", result.as_dict())
    assert_passed(result)


def test_depth_decoder_logits(csm, prompt_case, localized):
    codes = csm.ref_codes(prompt_case)
    ref = csm.ref_depth_logits(prompt_case)
    dev = probes.depth_decoder_logits(csm.target, prompt_case, codes, context_codec=csm.reference)
    result = csm.check_logits(prompt_case.id, "depth_logits", ref, dev)
    localize_check(csm, prompt_case, result, localized)
    reporting.attach_json(f"{prompt_case.id} depth_logits", result.as_dict())
    assert_passed(result)


def test_mimi_decode(csm, decode_case, localized):
    ref = csm.ref_decode(decode_case)
    dev = probes.mimi_decode(csm.target, csm.codec_codes(decode_case))
    result = csm.nonfinite_result(decode_case.id, "mimi_decode", reference=ref, device=dev)
    if result is None:
        result = csm.evaluate(decode_case.id, "mimi_decode", metrics.waveform_metrics(ref, dev))
    localize_check(csm, decode_case, result, localized)
    reporting.attach_json(f"{decode_case.id} mimi_decode", result.as_dict())
    reporting.attach_wav(f"{decode_case.id} device decode", dev.numpy())
    assert_passed(result)


def _module_local_check(csm, case):
    """Every hooked module of the device model, fed the reference's own inputs (teacher forcing),
    against the reference's output of the same call: the error each module adds by itself, one
    bounded `rel_error@<module>` per module. The end-to-end checks see a fault only once it has
    outgrown the dtype's accumulated noise (in bfloat16, a 1 % weight error in one layer hardly
    moves the logits); here it stands alone in its own module, which is also its place."""
    errors = csm.module_local_errors(case)
    if not errors:
        pytest.fail(f"{case.id}/module_local: no hooked module ran in the probe (module names changed?)", pytrace=False)
    values = {f"rel_error@{module}": error for module, error in errors.items()}
    result = csm.evaluate(case.id, "module_local", values)
    unmeasured = [m for m in csm.module_local_bounds(case.id) if m not in errors]
    if unmeasured:  # a bound nobody measured would pass by never being looked at
        result.status = "failed"
        result.messages.append(f"{len(unmeasured)} module(s) with a stored bound did not run: {', '.join(unmeasured[:3])}"
                               + (" ..." if len(unmeasured) > 3 else "") + " (module renamed or removed?)")
    bad = [row for row in result.rows if row.ok is False]
    if bad:
        first = bad[0]
        what = "NaN/Inf in its output" if math.isnan(first.value) else "its output shape differs" if math.isinf(first.value) \
            else f"adds rel err {first.value:.3g} on the reference's inputs, bound {first.bound:.3g}"
        lead = f"first module over its local bound: {first.metric.split('@', 1)[1]} ({what}; {len(bad)} of {len(result.rows)} modules over)"
        rest = result.messages[3:]
        result.messages = [lead, *result.messages[:3]] + ([f"... and {len(rest)} more"] if rest else [])
    reporting.attach_json(f"{case.id} module_local", result.as_dict())
    assert_passed(result)


def test_module_local_error(csm, prompt_case):
    _module_local_check(csm, prompt_case)


def test_module_local_error_codec(csm, decode_case):
    _module_local_check(csm, decode_case)


def test_mimi_encode(csm, encode_case):
    ref = csm.ref_encode(encode_case)
    dev = probes.mimi_encode(csm.target, torch.from_numpy(encode_case.encode_audio.waveform()))
    result = csm.evaluate(encode_case.id, "mimi_encode", metrics.code_agreement(ref, dev))
    reporting.attach_json(f"{encode_case.id} mimi_encode", result.as_dict())
    assert_passed(result)


def test_seeded_generation(csm, generation_case):
    """Fixed-length sampled generation on the device: finite, full-length, repeatable."""
    frames = generation_case.generate_frames
    try:
        codes_a, audio_a = csm.device_generation(generation_case, frames, seed=0)
        codes_b, _ = csm.device_generation(generation_case, frames, seed=0)
    except NonFiniteOutputError as exc:
        pytest.fail(str(exc), pytrace=False)
    codec = csm.target.model.codec_model.config
    expected_samples = frames * round(codec.sampling_rate / codec.frame_rate)
    vocab = csm.target.model.config.vocab_size
    in_range = float(((codes_a >= 0) & (codes_a < vocab)).double().mean())
    finite = 1.0 - metrics.nonfinite_count(audio_a) / max(audio_a.numel(), 1)
    rms = float(audio_a.double().pow(2).mean().sqrt()) if finite == 1.0 else math.nan
    result = csm.evaluate(
        generation_case.id,
        "generation",
        {},
        invariants={
            "frames_generated": (codes_a.shape[0], "==", frames),
            "audio_samples": (audio_a.numel(), "==", expected_samples),
            "finite_fraction": (finite, "==", 1.0),
            "audio_rms": (rms if math.isfinite(rms) else -1.0, ">=", 1e-6),  # not silence
            "codes_in_range": (in_range, "==", 1.0),
            "repeatable_with_seed": (float(torch.equal(codes_a, codes_b)), "==", 1.0),
        },
    )
    out_dir = csm.settings.output_dir / "audio"
    out_dir.mkdir(parents=True, exist_ok=True)
    if finite == 1.0:
        (out_dir / f"{generation_case.id}.wav").write_bytes(reporting.wav_bytes(audio_a.numpy()))
        reporting.attach_wav(f"{generation_case.id} generated", audio_a.numpy())
    assert_passed(result)


def _golden_or_skip(csm, case_id):
    path = csm.golden_file(case_id)
    try:
        stored = golden.load_golden(path)
    except BaselineError as exc:
        pytest.fail(str(exc), pytrace=False)
    if stored is None:
        message = f"no golden reference for '{case_id}' at {path} (save one with --csm-save-golden)"
        if csm.settings.csm_strict:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    tensors, meta = stored
    digest = (meta.get("model") or {}).get("weights_digest")
    if digest and digest != csm.identity.weights_digest:
        pytest.fail(f"golden file {path} was saved for weights {digest}, this model's are {csm.identity.weights_digest}", pytrace=False)
    return tensors, meta


def _save_golden(csm, case_id, tensors):
    golden.save_golden(csm.golden_file(case_id), tensors, csm.run_meta())
    result = csm.evaluate(case_id, "golden_saved", {}, use_bounds=False)
    result.status = "saved"


def test_reference_drift_prompt(csm, prompt_case):
    """Today's CPU reference against the golden one saved on a known-good stack."""
    if csm.settings.csm_save_golden:
        codes = csm.ref_codes(prompt_case)
        _save_golden(csm, prompt_case.id, {
            "backbone_logits": csm.ref_backbone_logits(prompt_case),
            "depth_codes": codes,
            "depth_logits": csm.ref_depth_logits(prompt_case),
        })
        return
    tensors, meta = _golden_or_skip(csm, prompt_case.id)
    now_logits = csm.ref_backbone_logits(prompt_case)
    if now_logits.shape != tensors["backbone_logits"].shape:
        pytest.fail(f"{prompt_case.id}: prompt tokenizes to {now_logits.shape[0]} positions now, "
                    f"{tensors['backbone_logits'].shape[0]} in the golden reference (tokenizer or template drift)", pytrace=False)
    values = {f"backbone_{k}": v for k, v in metrics.logits_metrics(tensors["backbone_logits"], now_logits).items()}
    depth_now = csm.ref_depth_logits(prompt_case, codes=tensors["depth_codes"])
    values.update({f"depth_{k}": v for k, v in metrics.logits_metrics(tensors["depth_logits"], depth_now).items()})
    values["greedy_code_agreement"] = metrics.code_agreement(tensors["depth_codes"], csm.ref_codes(prompt_case))["code_agreement"]
    s = csm.settings
    result = csm.evaluate(
        prompt_case.id, "golden_drift", values, use_bounds=False,
        invariants={
            "backbone_cosine": (values["backbone_cosine"], ">=", s.csm_golden_min_cosine),
            "depth_cosine": (values["depth_cosine"], ">=", s.csm_golden_min_cosine),
            "backbone_rel_error": (values["backbone_rel_error"], "<=", s.csm_golden_max_rel_error),
            "depth_rel_error": (values["depth_rel_error"], "<=", s.csm_golden_max_rel_error),
        },
    )
    if result.status == "failed":
        result.messages.append(f"golden saved with {meta.get('versions')}")
    assert_passed(result)


def test_reference_drift_codec(csm, decode_case):
    if csm.settings.csm_save_golden:
        _save_golden(csm, decode_case.id, {"decode_audio": csm.ref_decode(decode_case)})
        return
    tensors, _ = _golden_or_skip(csm, decode_case.id)
    values = metrics.waveform_metrics(tensors["decode_audio"], csm.ref_decode(decode_case))
    values["rel_error"] = metrics.rel_error(tensors["decode_audio"], csm.ref_decode(decode_case))
    s = csm.settings
    result = csm.evaluate(decode_case.id, "golden_drift", values, use_bounds=False,
                          invariants={"cosine": (values["cosine"], ">=", s.csm_golden_min_cosine),  # a gain change keeps the cosine
                                      "rel_error": (values["rel_error"], "<=", s.csm_golden_max_rel_error)})
    assert_passed(result)
