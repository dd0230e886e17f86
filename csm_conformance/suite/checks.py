"""What happens around an accuracy check besides its specification: naming the first diverging
module (and, suite/op_checks.py, the first operator past its standard) when it fails, attaching the evidence to the reports, judging the module-local errors and
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

from csm_conformance.accuracy import golden, localize, metrics
from csm_conformance.accuracy.check_results import CheckResult
from csm_conformance.baseline_files import BaselineError
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.results import Status
from csm_conformance.suite import op_checks

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
    return attached(op_checks.explained(csm, case, result))


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
