"""The generation loop's checks (issue 21): the device's loop forced along the reference's codes,
judged step by step in eager and compiled mode (with the failing step localized and every case's
curves plotted), the reference's cached loop against an uncached forward (cache consistency), and
the reference's loop against its golden one. Split from checks.py, whose helpers (attaching,
goldens, drift) they use, to keep each module readable.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy import decode, localize, metrics
from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.runtime import known_issues
from csm_conformance.runtime.decode_loop import DecodeRecord, DecodeStoppedEarly, forced_decode, reference_decode
from csm_conformance.runtime.devices import DeviceError
from csm_conformance.suite import op_checks
from csm_conformance.suite.checks import attached, drift, golden_or_skip, saved_golden
from csm_conformance.suite.session import decode_frames


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
        op_checks.explained(csm, case, result, at=2)  # the first operator past its standard, or none
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
