"""What happens around an accuracy check besides its specification: naming the first diverging
module when it fails, attaching the evidence to the reports, judging the module-local errors and
the generation invariants, and saving or comparing the golden references.

Why here and not in the test bodies (issue 12): a test body states only the specification (the
case, the probe on the reference and on the device, the assertion), so a newcomer reads what is
checked in tests/conformance/ and how it is judged and reported here, once for every check.
"""

from __future__ import annotations

import math
import weakref
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy import decode, golden, localize, metrics
from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.baseline_files import BaselineError
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.results import Status
from csm_conformance.runtime import known_issues
from csm_conformance.runtime.decode_loop import DecodeRecord, DecodeStoppedEarly, forced_decode, reference_decode
from csm_conformance.runtime.devices import DeviceError
from csm_conformance.suite.session import decode_frames

# Localizations run so far, per session and case id: a case is localized once, whichever check asks first.
_LOCALIZED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def explained(csm, case, result: CheckResult) -> CheckResult:
    """The result of a backbone, depth or Mimi-decode check, attached to the reports; when it failed
    (or --csm-localize / --csm-dump ask for every case), with the first module whose output left
    the reference named in its messages and the per-module table and plot attached."""
    settings = csm.settings
    if result.failed or settings.csm_localize or settings.csm_dump:
        localized = _LOCALIZED.setdefault(csm, {})
        if case.id not in localized:
            localized[case.id] = _run_localizer(csm, case)
        outcome = localized[case.id]
        if isinstance(outcome, str):
            if result.failed:
                result.messages.append(outcome)
        else:
            loc, png = outcome
            if result.failed:
                result.messages.append(loc.summary())
            reporting.attach_json(f"{case.id} localize: per-module table", {**loc.as_dict(), "table": loc.table()})
            reporting.attach_png(f"{case.id} localize: 1 - cosine and rel err per module", png)
    return attached(result)


def attached(result: CheckResult) -> CheckResult:
    """The result, its JSON attached to the Allure report under '<case> <check>'."""
    reporting.attach_json(f"{result.case} {result.check}", result.as_dict())
    return result


def module_local(csm, case) -> CheckResult:
    """Every hooked module of the device model, fed the reference's own inputs (teacher forcing),
    against the reference's output of the same call: the error each module adds by itself, one
    bounded `rel_error@<module>` per module. The end-to-end checks see a fault only once it has
    outgrown the dtype's accumulated noise (in bfloat16, a 1 % weight error in one layer hardly
    moves the logits); here it stands alone in its own module, which is also its place."""
    errors = csm.module_local_errors(case)
    if not errors:
        pytest.fail(f"{case.id}/module_local: no hooked module ran in the probe (module names changed?)", pytrace=False)
    result = csm.evaluate(case.id, "module_local", {f"rel_error@{module}": error for module, error in errors.items()})
    unmeasured = [m for m in csm.module_local_bounds(case.id) if m not in errors]
    if unmeasured:  # a bound nobody measured would pass by never being looked at
        result.status = Status.FAILED
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
    return attached(result)


def generation(csm, case, codes_a, audio_a, codes_b) -> CheckResult:
    """Two seeded fixed-length generations judged as invariants (finite, full-length, in range, not
    silence, repeatable); the audio is written to output/audio/ and attached."""
    frames = case.generate_frames
    codec = csm.target.model.codec_model.config
    expected_samples = frames * round(codec.sampling_rate / codec.frame_rate)
    codebook = codec.codebook_size  # what Mimi can decode; CSM's audio vocab (2051 on CSM-1B) adds specials past it
    in_range = float(((codes_a >= 0) & (codes_a < codebook)).double().mean())
    finite = 1.0 - metrics.nonfinite_count(audio_a) / max(audio_a.numel(), 1)
    rms = float(audio_a.double().pow(2).mean().sqrt()) if finite == 1.0 else math.nan
    result = csm.evaluate(case.id, "generation", {}, invariants={
        "frames_generated": (codes_a.shape[0], "==", frames),
        "audio_samples": (audio_a.numel(), "==", expected_samples),
        "finite_fraction": (finite, "==", 1.0),
        "audio_rms": (rms if math.isfinite(rms) else -1.0, ">=", 1e-6),  # not silence
        "codes_in_range": (in_range, "==", 1.0),
        "repeatable_with_seed": (float(torch.equal(codes_a, codes_b)), "==", 1.0),
    })
    if finite == 1.0:
        out_dir = csm.settings.output_dir / "audio"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{case.id}.wav").write_bytes(reporting.wav_bytes(audio_a.numpy()))
        reporting.attach_wav(f"{case.id} generated", audio_a.numpy())
    return result


def reference_loop(csm, case, mode: str = "eager") -> DecodeRecord:
    """The reference's greedy decode loop for the case's frames (computed once per case and mode);
    a loop that stopped early fails the test with one line."""
    frames = decode_frames(csm.settings, case)
    try:
        return csm.cached(("decode_loop", case.id, frames, mode), lambda: reference_decode(csm.reference, case, frames, mode))
    except DecodeStoppedEarly as exc:
        stopped = str(exc)
    pytest.fail(stopped, pytrace=False)  # outside the except: one line, no exception chain


def loop_check(mode: str) -> str:
    """The check's name in bounds and reports: compiled graphs have their own numerics (fusions,
    other kernels), so each mode has its own bounds."""
    return "decode_loop" if mode == "eager" else f"decode_loop_{mode}"


def device_loop(csm, case, ref: DecodeRecord, mode: str) -> DecodeRecord:
    """The device's loop forced along the reference's codes, in `mode`. A mode this stack cannot run
    for a known reason (a compile backend that is not installed, a known upstream compile break)
    is a skip with that reason in one line (a failure under --csm-strict); any other error is red."""
    try:
        return forced_decode(csm.target, case, ref.codes, ref.frames, mode=mode, context_codec=csm.reference)
    except DeviceError as exc:
        reason = str(exc)
    except Exception as exc:
        issue = known_issues.known_issue(mode, exc)
        if issue is None:
            raise
        reason = issue.reason
    pytest.skip(f"{case.id} ({mode}): {reason}")


def decode_loop(csm, case, ref: DecodeRecord, dev: DecodeRecord, mode: str = "eager") -> CheckResult:
    """The device's generation loop, forced along the reference's codes, judged step by step: the
    worst step's cosine (at least the cosine floor) and relative error, argmax agreement, KL and the
    error's growth along the loop, each within its per-case bound, for the backbone's codebook-0
    steps and (`@depth`) the depth decoder's. A failure's first message names the case, the mode,
    the first step that left its floor or bound and the metric; the next, the first module that
    diverges at that step (eager, teacher-forced: _localized_step). Every mode judged so far is
    drawn per step in <output>/decode/<case>.png (_plot_modes)."""
    check = loop_check(mode)
    bad = csm.nonfinite_result(case.id, check, backbone_reference=ref.backbone, backbone_device=dev.backbone,
                               depth_reference=ref.depth, depth_device=dev.depth)
    if bad is not None:
        return attached(bad)
    series = {"": decode.step_series(ref.backbone, dev.backbone, csm.dtype), "@depth": decode.step_series(ref.depth, dev.depth, csm.dtype)}
    values = {name: value for suffix, s in series.items() for name, value in decode.loop_figures(s, suffix).items()}
    min_cosine = csm.settings.csm_min_cosine
    result = csm.evaluate(case.id, check, values, floors={f"worst_step_cosine{suffix}": min_cosine for suffix in series},
                          info={"frames": float(ref.frames)})
    bounds = {r.metric: r.bound for r in result.rows if r.rule == "bound"}
    leads, firsts = [], {}
    for suffix, s in series.items():
        out = decode.first_step_out(s, min_cosine, bounds.get(f"worst_step_cosine{suffix}"), bounds.get(f"worst_step_rel_error{suffix}"))
        firsts[suffix] = out
        result.rows.append(MetricRow(f"first_step_out{suffix}", float(out[0] if out else -1), None, "info", None))
        if out is not None:
            part = "backbone (codebook 0)" if suffix == "" else "depth decoder"
            leads.append(f"{case.id} ({mode}): step {out[0]} of {ref.frames} is the first to leave its bound, {part} {out[1]}")
    if result.failed:
        whole = ", ".join(r.metric for r in result.rows if r.ok is False)
        result.messages = (leads or [f"{case.id} ({mode}): every step inside its bound, but not the loop's {whole}"])[:1] + result.messages
        result.messages.insert(1, _localized_step(csm, case, ref, series, firsts, mode))
    reporting.attach_json(f"{case.id} {check} ({mode}): per step", {k or "backbone": v.as_dict() for k, v in series.items()})
    _plot_modes(csm, case, mode, series, bounds, firsts, result.failed)
    return attached(result)


# Per session: each case's per-step curves of every mode judged so far (the plot shows them all),
# and each (case, step) localized so far (the eager and the compiled check often fail at one step).
_DECODE_CURVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCALIZED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plot_modes(csm, case, mode: str, series: dict, bounds: dict, firsts: dict, failed: bool) -> None:
    """<output>/decode/<case>.png re-drawn with this mode added, attached to the report; a plot
    that cannot be drawn is a warning, never the check's verdict."""
    from csm_conformance.reports import decode_plot

    curves = _DECODE_CURVES.setdefault(csm, {}).setdefault(case.id, {})
    curves[mode] = decode_plot.ModeCurves(series, {k: v for k, v in bounds.items() if k.startswith("worst_step_")}, firsts, failed)
    try:
        png = decode_plot.plot_png(case.id, curves, csm.settings.csm_min_cosine, f"{csm.dtype_name} on {csm.device.device} vs CPU float32")
        decode_plot.write_plot(csm.settings.output_dir, case.id, png)
    except Exception as exc:  # a figure must not mask the check's own verdict
        import warnings

        warnings.warn(f"{case.id}: the decode-loop plot could not be drawn ({type(exc).__name__}: {exc})", stacklevel=2)
        return
    reporting.attach_png(f"{case.id} decode loop ({', '.join(curves)}): 1 - cosine and rel err per step", png)


def _failing_step(series: dict, firsts: dict) -> tuple[int, str]:
    """The step to localize: the earlier first step out (backbone's or depth decoder's); when no
    step left its bound (a whole-loop figure failed), the backbone's worst step."""
    outs = [out[0] for out in (firsts.get(""), firsts.get("@depth")) if out is not None]
    if outs:
        return min(outs), "first step out"
    return int(series[""].rel_error.argmax()), "worst backbone step"


def _localized_step(csm, case, ref: DecodeRecord, series: dict, firsts: dict, mode: str) -> str:
    """One line: the first module diverging at the failing step, localized in eager mode and
    teacher-forced (localize.localize_step); output/localize/<case>-decode-step<k>.{txt,png,json}
    written (and the dump under --csm-dump), the table and plot attached. A localizer that cannot
    run gives a one-line note, never a different failure."""
    step, which = _failing_step(series, firsts)
    done = _LOCALIZED_STEPS.setdefault(csm, {})
    if (case.id, step) not in done:
        try:
            loc, sides = localize.localize_step(csm, case, ref.codes, step)
            stem = f"{case.id}-decode-step{step}"
            paths = loc.write(csm.settings.output_dir / "localize", stem)
            if csm.settings.csm_dump:
                localize.save_dump(Path(csm.settings.csm_dump) / stem, sides)
            done[(case.id, step)] = (loc, paths[1].read_bytes())
        except Exception as exc:  # a diagnostic must not mask the check's own verdict
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            done[(case.id, step)] = f"localizer could not run at decode step {step}: {type(exc).__name__}: {first}"
    outcome = done[(case.id, step)]
    if isinstance(outcome, str):
        return outcome
    loc, png = outcome
    reporting.attach_json(f"{case.id} localize decode step {step}: per-module table", {**loc.as_dict(), "table": loc.table()})
    reporting.attach_png(f"{case.id} localize decode step {step}: 1 - cosine and rel err per module", png)
    if mode != "eager" and loc.first is None:
        return (f"localized at decode step {step} ({which}): the error appears only in compiled graphs "
                f"(eager decode step {step} agrees module by module; {loc.summary()})")
    return f"localized at decode step {step} ({which}, eager, teacher-forced): {loc.summary()}"


def cache_consistency(csm, case, cached: DecodeRecord, uncached: tuple[torch.Tensor, torch.Tensor]) -> CheckResult:
    """The reference's own cached loop against one uncached forward over the same prefix (float32),
    every step, for codebook 0 and (`@depth`) the depth decoder: only summation order differs, so
    the worst step's relative error must stay under --csm-cache-max-rel-error. A cache-path bug of
    the stack hits the device and the reference alike, so no device-vs-reference check can see it."""
    check = "cache_consistency"
    bad = csm.nonfinite_result(case.id, check, backbone_cached=cached.backbone, backbone_uncached=uncached[0],
                               depth_cached=cached.depth, depth_uncached=uncached[1])
    if bad is not None:
        return attached(bad)
    series = {"": decode.step_series(cached.backbone, uncached[0], None), "@depth": decode.step_series(cached.depth, uncached[1], None)}
    limit = csm.settings.csm_cache_max_rel_error
    values = {f"worst_step_rel_error{suffix}": float(s.rel_error.max()) for suffix, s in series.items()}
    result = csm.evaluate(case.id, check, values, use_bounds=False, info={"frames": float(cached.frames)},
                          invariants={name: (value, "<=", limit) for name, value in values.items()})
    if result.failed:
        firsts = [(int(torch.nonzero(~(s.rel_error <= limit))[0]), suffix, s) for suffix, s in series.items() if not bool((s.rel_error <= limit).all())]
        step, suffix, s = min(firsts, key=lambda item: item[0])
        part = "backbone (codebook 0)" if suffix == "" else "depth decoder"
        result.messages.insert(0, f"{case.id}: the reference's cached decode step {step} of {cached.frames} differs from an uncached forward "
                                  f"over the same prefix, {part} rel_error {float(s.rel_error[step]):.3g} > {limit:.3g}: a cache-path error "
                                  "of this stack (it hits the device and the reference alike)")
    reporting.attach_json(f"{case.id} {check}: per step", {k or "backbone": v.rel_error.tolist() for k, v in series.items()})
    return attached(result)


def golden_or_skip(csm, case_id: str, part: str = "") -> tuple[dict, dict]:
    """The golden tensors and metadata stored for this case and these weights (`part`: a second
    golden file of the case, e.g. its decode loop); a skip (a failure under --csm-strict) when none
    is stored, a failure when it is damaged or for other weights."""
    path = csm.golden_file(case_id + part)
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


def saved_golden(csm, case_id: str, tensors: dict, part: str = "") -> CheckResult:
    """--csm-save-golden: today's reference outputs stored as the case's golden reference."""
    golden.save_golden(csm.golden_file(case_id + part), tensors, csm.run_meta())
    result = csm.evaluate(case_id, "golden_saved" + part.replace(".", "_"), {}, use_bounds=False)
    result.status = Status.SAVED
    return result


def drift(csm, case_id: str, values: dict, invariants: dict, meta: dict, check: str = "golden_drift") -> CheckResult:
    """Today's reference against the golden one, judged by the --csm-golden-* limits (the bounds
    are for device against reference, not for one stack against another)."""
    s = csm.settings
    limits = {"cosine": (">=", s.csm_golden_min_cosine), "rel_error": ("<=", s.csm_golden_max_rel_error)}
    result = csm.evaluate(case_id, check, values, use_bounds=False, invariants={
        name: (values[name], *limits[kind]) for name, kind in invariants.items()})
    if result.failed:
        result.messages.append(f"golden saved with {meta.get('versions')}")
    return result


GOLDEN_LOOP = ".decode_loop"  # the case's second golden file: <case>.decode_loop.safetensors


def golden_loop(csm, case, now: DecodeRecord) -> CheckResult:
    """--csm-save-golden: the reference's decode loop (its greedy codes and every step's logits)
    stored beside the case's golden reference."""
    return saved_golden(csm, case.id, {"codes": now.codes, "backbone_logits": now.backbone, "depth_logits": now.depth}, GOLDEN_LOOP)


def loop_drift(csm, case, now: DecodeRecord) -> CheckResult:
    """Today's reference loop against the golden one, step by step, forced along the golden codes
    (today's own loop when it took the same path, as it does on an unchanged stack), judged by the
    --csm-golden-* limits at its worst step; the greedy codes' agreement is reported beside."""
    stored, meta = golden_or_skip(csm, case.id, GOLDEN_LOOP)
    codes = stored["codes"]
    if codes.shape[0] != now.frames:
        pytest.fail(f"{case.id}: the golden decode loop has {codes.shape[0]} frames, this run's {now.frames} "
                    "(--csm-decode-frames or the catalogue changed; save it again with --csm-save-golden)", pytrace=False)
    values = {"greedy_code_agreement": metrics.code_agreement(codes, now.codes)["code_agreement"]}
    if not torch.equal(codes, now.codes):
        now = forced_decode(csm.reference, case, codes, now.frames)
    for part, key, logits in (("backbone", "backbone_logits", now.backbone), ("depth", "depth_logits", now.depth)):
        series = decode.step_series(stored[key], logits, None)
        values[f"{part}_worst_step_cosine"] = float(series.cosine.min())
        values[f"{part}_worst_step_rel_error"] = float(series.rel_error.max())
    return drift(csm, case.id, values, meta=meta, check="golden_drift_loop", invariants={
        "backbone_worst_step_cosine": "cosine", "depth_worst_step_cosine": "cosine",
        "backbone_worst_step_rel_error": "rel_error", "depth_worst_step_rel_error": "rel_error"})
