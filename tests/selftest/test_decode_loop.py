"""The decode-loop check's parts (issue 21): forced decoding through the model's own generate()
(runtime/decode_loop.py), the per-step figures (accuracy/decode.py) and the decode-only fault
(faults: decode_attn). The check end to end, clean and with the fault planted: test_gate.py; its
failing step localized (accuracy/localize/decode_step.py) and its per-step plot
(reports/decode_plot.py), in-process and through pytester: the end of this file."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch

from csm_conformance import faults
from csm_conformance.accuracy import decode, localize
from csm_conformance.runtime import decode_loop, models, probes
from csm_conformance.suite import loop_checks
from csm_conformance.suite.options import Settings
from csm_conformance.suite.session import ConformanceSession

pytestmark = pytest.mark.selftest
FRAMES = 6


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


# ---- the failing step localized, and the per-step plot -----------------------------------------
ATTN0 = "backbone_model.layers.0.self_attn"


def _session(tiny, dtype: str, tmp_path, *fault_specs: str) -> ConformanceSession:
    session = ConformanceSession(Settings(csm_case=["short_en"], csm_dtype=dtype, csm_fault=list(fault_specs), csm_output=str(tmp_path)))
    session.reference = tiny
    session.load_target()
    return session


def test_localize_step_names_the_attention_at_a_cached_step_only(tiny, short_en, tmp_path):
    """decode_attn:1.05 (cached decode steps only) on a float32 device: at a cached step the first
    diverging module is backbone layer 0's attention; at step 0 (the prefill, cut to its last
    position) nothing diverges; each side ran step + 1 frames, the backbone one position, the
    depth decoder's calls joined along the positions. A clean float32 device is identical."""
    ref = decode_loop.reference_decode(tiny, short_en, FRAMES)
    faulty = _session(tiny, "float32", tmp_path, "decode_attn:1.05")
    loc, sides = localize.localize_step(faulty, short_en, ref.codes, 2)
    assert loc.first is not None and loc.first.module == ATTN0, "\n".join(loc.table())
    assert loc.summary().startswith(f"first diverging module: {ATTN0} (")
    device = sides["device"][0]
    n = tiny.model.config.num_codebooks
    assert device[ATTN0].shape[1] == 1 and device["lm_head"].shape[1] == 1
    assert device["depth_decoder.model.norm"].shape[1] == n and device["depth_decoder.codebooks_head"].shape[1] == n - 1
    assert not any("#" in name for name in device) and sides["device"][1]["step"] == 2
    assert localize.localize_step(faulty, short_en, ref.codes, 0)[0].first is None  # the prefill is untouched
    clean, _ = localize.localize_step(_session(tiny, "float32", tmp_path), short_en, ref.codes, 3)
    assert clean.summary() == "first diverging module: none (every module's output is identical)"
    with pytest.raises(ValueError, match="outside the 6 forced frames"):
        localize.localize_step(faulty, short_en, ref.codes, FRAMES)


@pytest.fixture(scope="module")
def faulty_loop(tiny, short_en):
    """The reference's loop and a bfloat16 device's under decode_attn:1.05 (eager, FRAMES frames)."""
    device = models.ModelSource("tiny").load("cpu", torch.bfloat16, reference=tiny)
    faults.apply_fault(device.model, "decode_attn:1.05")
    ref = decode_loop.reference_decode(tiny, short_en, FRAMES)
    return ref, decode_loop.forced_decode(device, short_en, ref.codes, FRAMES, context_codec=tiny)


@pytest.mark.parametrize("outcome,line", [
    ("agrees", "localized at decode step {k} ({which}): the error appears only in compiled graphs "
               "(eager decode step {k} agrees module by module; first diverging module: none (every module's output is identical))"),
    ("raises", "localizer could not run at decode step {k}: RuntimeError: no device"),
], ids=["eager_agrees", "localizer_raises"])
def test_compiled_check_localized_in_eager(tiny, short_en, faulty_loop, tmp_path, monkeypatch, outcome, line):
    """The compiled check is localized in eager: when eager shows no module diverging at that step
    its line says the error is the compiled graphs'; a localizer that cannot run is one line, and
    the check stays the check (failed, its lead line first). The plot is written either way."""
    ref, dev = faulty_loop
    csm = _session(tiny, "bfloat16", tmp_path, "decode_attn:1.05")
    asked = []

    def fake(session, case, codes, step):
        asked.append(step)
        if outcome == "raises":
            raise RuntimeError("no device\nsecond line")
        same = {ATTN0: torch.ones(1, 1, 4)}
        return localize.localize("x", same, same, "bfloat16", "ref", "dev"), {}

    monkeypatch.setattr(localize, "localize_step", fake)
    result = loop_checks.decode_loop(csm, short_en, ref, dev, mode="compiled")
    assert result.failed and asked, result.messages
    lead = re.match(r"short_en \(compiled\): step (\d+) of 6 is the first to leave its bound", result.messages[0])
    which = "first step out" if lead else "worst backbone step"  # (a whole-loop figure alone failed)
    assert lead is None or int(lead.group(1)) == asked[0], result.messages
    assert result.messages[1] == line.format(k=asked[0], which=which), result.messages
    assert (tmp_path / "decode" / "short_en.png").read_bytes().startswith(b"\x89PNG")


def test_a_red_decode_check_names_the_module_at_its_failing_step(run_suite, pytester):
    """The suite as users run it, decode_attn:1.05 planted: test_decode_loop[short_en-eager]'s
    failure names backbone layer 0's attention at the step its lead line names (8 frames: the fault
    is out of bound from step 1 on), the localization is written and the loop's plot too."""
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-fault", "decode_attn:1.05", "--csm-decode-modes", "eager",
                       "--csm-decode-frames", "8", "-k", "decode_loop")
    assert result.ret == 1, result.stdout.str()[-3000:]
    result.assert_outcomes(failed=1)
    failed = [line for line in result.stdout.lines if line.startswith("FAILED")]
    assert len(failed) == 1 and "test_decode_loop[short_en-eager]" in failed[0], failed
    out = pytester.path / "output"
    report = json.loads((out / "accuracy_evaluation.json").read_text())
    messages = next(r for r in report["results"] if r["check"] == "decode_loop")["messages"]
    lead = re.match(r"short_en \(eager\): step (\d+) of 8 is the first", messages[0])
    found = re.match(r"localized at decode step (\d+) \((first step out|worst backbone step), eager, teacher-forced\): "
                     rf"first diverging module: {re.escape(ATTN0)} \(", messages[1])
    assert found, messages
    assert found.group(1) == lead.group(1) if lead else found.group(2) == "worst backbone step"
    result.stdout.fnmatch_lines([f"*short_en/decode_loop: short_en (eager): step*; localized at decode step {found.group(1)} *{ATTN0}*"])
    assert (out / "decode" / "short_en.png").read_bytes().startswith(b"\x89PNG")
    written = json.loads((out / "localize" / f"short_en-decode-step{found.group(1)}.json").read_text())
    assert written["first_diverging"] == ATTN0


def test_a_clean_decode_check_writes_its_plot_and_localizes_nothing(run_suite, pytester):
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-decode-modes", "eager", "-k", "decode_loop")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=1)
    out = pytester.path / "output"
    assert (out / "decode" / "short_en.png").read_bytes().startswith(b"\x89PNG")
    assert "localized at" not in result.stdout.str() and not (out / "localize").exists()
    report = json.loads((out / "accuracy_evaluation.json").read_text())
    assert not any("localiz" in m for r in report["results"] for m in r["messages"])
