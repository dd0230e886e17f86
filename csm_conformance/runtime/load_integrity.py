"""Did this stack load the checkpoint as written? Missing, unexpected and re-initialised tensors,
and declared ties that do not hold.

transformers only warns about these and goes on with random values where tensors are missing, so
a release that loads a checkpoint differently (5.0-5.20 leave CSM's codebook embedding
uninitialised when it is stored once, as every 4.x conversion stores it) would be tested on
weights nobody trained. Here that is a named check with the tensors it concerns, and, for the
suite's fixed embedded checkpoint, the blame goes to the stack: the same files load cleanly on
the other supported releases (docs/stack-range.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# CSM's one declared tie (config.tie_codebooks_embeddings): the backbone's codebook embedding is
# the depth decoder's input embedding; a checkpoint stores one of the two.
CODEBOOK_TIE = ("backbone_model.embed_tokens.embed_audio_tokens.weight", "depth_decoder.model.embed_tokens.weight")


@dataclass
class LoadIntegrity:
    missing: list[str] = field(default_factory=list)  # not in the checkpoint, so initialised at random
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, dropped by this stack
    untied: list[str] = field(default_factory=list)  # "a != b" for declared ties that do not hold
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.untied or self.errors)

    def problems(self) -> list[str]:
        def names(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} tensor(s) missing from what was loaded, so initialised at random: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} tensor(s) in the checkpoint dropped: {names(self.unexpected)}")
        if self.untied:
            parts.append(f"declared tie not held: {names(self.untied)}")
        if self.errors:
            parts.append(f"load errors: {names(self.errors)}")
        return parts

    def as_dict(self) -> dict:
        return {"missing": self.missing, "unexpected": self.unexpected, "untied": self.untied, "errors": self.errors}


def _tie_holds(model: torch.nn.Module, a: str, b: str) -> bool:
    state = dict(model.named_parameters(remove_duplicate=False))
    if a not in state or b not in state:
        return False
    x, y = state[a], state[b]
    return x is y or (x.shape == y.shape and x.data_ptr() == y.data_ptr()) or torch.equal(x.detach().cpu(), y.detach().cpu())


def inspect_load(model: torch.nn.Module, info: dict) -> LoadIntegrity:
    """From `from_pretrained(..., output_loading_info=True)`'s info and the loaded model."""
    ties = [CODEBOOK_TIE] if getattr(model.config, "tie_codebooks_embeddings", False) else []
    held = {name for pair in ties if _tie_holds(model, *pair) for name in pair}
    result = LoadIntegrity()
    # a tied partner the checkpoint does not store is "missing" on some releases: fine if the tie holds
    result.missing = sorted(k for k in info.get("missing_keys") or () if k not in held)
    result.unexpected = sorted(info.get("unexpected_keys") or ())
    result.untied = [f"{a} != {b}" for a, b in ties if a not in held]
    result.errors = [str(e).strip().splitlines()[0] for e in info.get("error_msgs") or () if str(e).strip()]
    return result


def mismatched_shapes(info: dict) -> list[str]:
    """Tensors whose checkpoint shape differs from the config's: the checkpoint does not fit its own
    config.json, a bad input rather than a stack's fault (5.x: (key, stored, expected); 4.x: key)."""
    return sorted(m if isinstance(m, str) else f"{m[0]} (checkpoint {list(m[1])}, config {list(m[2])})"
                  for m in info.get("mismatched_keys") or ())
