"""Checks of a model as a whole rather than of one output's numbers: whether each load matched its
checkpoint (`load_integrity`), and a device generation that stops because its logits are not finite
or its codes cannot be decoded.

Split from the session (issue 12); ConformanceSession.check_load_integrity (through the gate) and
ConformanceSession.device_generation call these, and the session still exports
NonFiniteOutputError.
"""

from __future__ import annotations

import torch

from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.catalogue.cases import PromptCase
from csm_conformance.results import Status
from csm_conformance.runtime import devices, probes


class NonFiniteOutputError(RuntimeError):
    """The device model produced NaN or Inf where a check needed numbers; the message is one
    line naming the case, the check and the output."""

    __module__ = "csm_conformance.suite.session"  # the name failure text and tracebacks have always shown


def load_integrity_result(reference, target, source) -> CheckResult | None:
    """The `load_integrity` verdict of both loads (None: nothing was loaded from a checkpoint).
    Its message blames the stack when the checkpoint is the suite's fixed embedded one."""
    loads = [(side, loaded) for side, loaded in (("reference", reference), ("device", target))
             if loaded is not None and loaded.integrity is not None]
    if not loads:
        return None
    def key(loaded):
        return tuple(tuple(v) for v in loaded.integrity.as_dict().values())
    problems = {}
    for side, loaded in loads:  # one line per distinct finding, naming the loads that show it
        if not loaded.integrity.clean:
            problems.setdefault(key(loaded), (loaded.integrity, []))[1].append(side)
    names = {"missing": "missing_tensors", "unexpected": "dropped_tensors", "untied": "untied_ties", "errors": "load_errors"}
    values = {f"{names[kind]}@{side}": float(len(items)) for side, loaded in loads
              for kind, items in loaded.integrity.as_dict().items()}
    result = CheckResult("model", "load_integrity", status=Status.FAILED if problems else Status.PASSED)
    result.rows = [MetricRow(name, value, 0.0, "invariant", value == 0.0, "==") for name, value in values.items()]
    if problems:
        versions = devices.software_versions()
        stack = f"transformers {versions.get('transformers')} with torch {versions.get('torch')}"
        for integrity, sides in problems.values():
            result.messages.append(f"{' and '.join(sides)} load: " + "; ".join(integrity.problems()))
        if source.kind == "embedded-tiny":
            result.messages.append(f"this is the suite's fixed embedded checkpoint, which other supported releases load cleanly "
                                   f"(docs/stack-range.md): the fault is this stack's ({stack}), and checks on these weights test other weights")
        else:
            result.messages.append(f"{stack} loaded '{source.spec}' differently from how it is stored: "
                                   "run the same command on your current stack to see whether it loads it cleanly")
    return result


def device_generation(session, case: PromptCase, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The device's seeded generation (codes, audio). When sampling fails because the device's
    logits are not finite (torch.multinomial rejects NaN/Inf probabilities), the generation
    check is recorded as failed and NonFiniteOutputError names the output that went bad,
    instead of the sampler's error from deep inside generate. When the sampled codes hold ids Mimi
    cannot decode (random full-size weights sample CSM's specials 2048-2050), the check is recorded
    as failed (`codes_in_range`) and UndecodableCodesError counts them in one line, instead of the
    codec's IndexError."""
    try:
        return probes.seeded_generation(session.target, case, frames, seed)
    except probes.UndecodableCodesError as exc:
        result = CheckResult(case.id, "generation", status=Status.FAILED, messages=[str(exc)])
        result.rows = [MetricRow("codes_in_range", exc.in_range, 1.0, "invariant", False, "==")]
        session.results.append(result)
        raise probes.UndecodableCodesError(result.failure_text(), exc.in_range) from exc
    except RuntimeError as exc:
        try:
            outputs = {"device_backbone_logits": probes.backbone_logits(session.target, case, context_codec=session.reference)}
            if session.reference is not None:
                outputs["device_depth_logits"] = probes.depth_decoder_logits(
                    session.target, case, session.ref_codes(case), context_codec=session.reference)
        except Exception:  # noqa: BLE001  the device cannot run a forward now: its first error is the report
            outputs = {}
        result = session.nonfinite_result(case.id, "generation", **outputs)
        if result is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.messages.append(f"generation stopped at sampling ({type(exc).__name__}: {first})")
        raise NonFiniteOutputError(result.failure_text()) from exc
