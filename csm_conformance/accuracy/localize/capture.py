"""Per-module outputs of the reference and the device on the accuracy probes' very inputs.

The accumulated comparison (the jump rule, rule.py) needs, for one case, every hooked module's
output on each side, captured while the accuracy probes run exactly as the accuracy checks run
them; this module runs those probes under the hooks of hooks.py.
"""

from __future__ import annotations

import torch

from csm_conformance.accuracy.localize.hooks import _hooked_calls


def capturing(model: torch.nn.Module, component: str):
    """While active, the outputs of `component`'s modules land in the yielded dict (CPU float32
    copies, in the order the modules ran). Modules without weights (ELU, Identity) are skipped."""
    return _hooked_calls(model, component, with_inputs=False)


def capture_prompt(loaded, case, codes: torch.Tensor, context_codec=None) -> dict[str, torch.Tensor]:
    """Backbone stages on the backbone-logits probe, then depth-decoder stages on the teacher-forced
    depth probe, with exactly the inputs the accuracy checks use."""
    from csm_conformance.runtime import probes

    with capturing(loaded.model, "backbone") as backbone:
        probes.backbone_logits(loaded, case, context_codec=context_codec)
    with capturing(loaded.model, "depth_decoder") as depth:
        probes.depth_decoder_logits(loaded, case, codes, context_codec=context_codec)
    return {**backbone, **depth}


def capture_decode(loaded, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mimi decoder stages on the decode probe's seeded codes."""
    from csm_conformance.runtime import probes

    with capturing(loaded.model, "codec") as codec:
        probes.mimi_decode(loaded, codes)
    return codec


def capture_case(session, case) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(reference, device) captures of one catalogue case of a loaded ConformanceSession."""
    from csm_conformance.catalogue.cases import PromptCase

    if isinstance(case, PromptCase):
        codes = session.ref_codes(case)
        return (capture_prompt(session.reference, case, codes),
                capture_prompt(session.target, case, codes, context_codec=session.reference))
    codes = session.codec_codes(case)
    return capture_decode(session.reference, codes), capture_decode(session.target, codes)
