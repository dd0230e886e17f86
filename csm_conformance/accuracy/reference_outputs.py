"""The outputs that several checks of one case compare against, computed once and shared.

Split from the session (issue 12) so that caching the reference's outputs is one job in one place;
ConformanceSession keeps its `ref_*` methods as thin forwards to this class, because the tests and
the localizer call them there.
"""

from __future__ import annotations

import torch

from csm_conformance.accuracy import localize
from csm_conformance.catalogue.cases import CodecCase, PromptCase
from csm_conformance.runtime import probes


class ReferenceOutputs:
    """Reference outputs (CPU float32), computed once per case. The models are read from the
    session at each call, not at construction: they are loaded later (and a test may set one)."""

    def __init__(self, session):
        self.session = session
        self._cache: dict[tuple, object] = {}

    def cached(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def backbone_logits(self, case: PromptCase) -> torch.Tensor:
        return self.cached(("backbone", case.id), lambda: probes.backbone_logits(self.session.reference, case))

    def codes(self, case: PromptCase) -> torch.Tensor:
        return self.cached(("codes", case.id), lambda: probes.greedy_codes(self.session.reference, case, case.depth_frames))

    def depth_logits(self, case: PromptCase, codes: torch.Tensor | None = None) -> torch.Tensor:
        reference = self.session.reference
        if codes is not None:
            return probes.depth_decoder_logits(reference, case, codes)
        return self.cached(("depth", case.id), lambda: probes.depth_decoder_logits(reference, case, self.codes(case)))

    def codec_codes(self, case: CodecCase) -> torch.Tensor:
        return probes.codec_case_codes(self.session.reference, case)

    def decode(self, case: CodecCase) -> torch.Tensor:
        return self.cached(("decode", case.id), lambda: probes.mimi_decode(self.session.reference, self.codec_codes(case)))

    def encode(self, case: CodecCase) -> torch.Tensor:
        wave = torch.from_numpy(case.encode_audio.waveform())
        return self.cached(("encode", case.id), lambda: probes.mimi_encode(self.session.reference, wave))

    def module_local_errors(self, case: PromptCase | CodecCase) -> dict[str, float]:
        """{module: relative error that device module adds on the reference's own inputs}."""
        s = self.session
        if isinstance(case, PromptCase):
            compute = lambda: localize.local_errors_prompt(s.reference, s.target, case, self.codes(case))  # noqa: E731
        else:
            compute = lambda: localize.local_errors_decode(s.reference, s.target, self.codec_codes(case))  # noqa: E731
        return self.cached(("local", case.id), compute)
