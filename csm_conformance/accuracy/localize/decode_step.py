"""One step of the decode loop localized: the first module that diverges at the step where the
decode-loop check (runtime/decode_loop.py, suite/loop_checks.decode_loop) first left its bound.

The other localizations compare one uncached forward pass; a decode-loop failure is at step k of
the model's own generate(), a cached step. Here both sides run that loop again, teacher-forced
along the same reference codes (decode_loop.forced_decode), for k + 1 frames only, with the hooks
of hooks.py recording module outputs during frame k alone; the captures are then judged by the
same rule (rule.compare_captures) and reported as the same Localization, under the same module
names.

What "step k" captures (the frame whose logits are the check's step k):
- the backbone: for k >= 1 its cached decode step, query length 1, fed frame k - 1's codes; for
  k = 0 the prefill over the prompt, cut to its last position (every output shaped [batch, prompt
  length, ...]: the position whose logits are step 0's; the context audio's code embeddings,
  [turns, frames, hidden], are kept whole). The whole prompt is what test_backbone_logits'
  localizer compares.
- the depth decoder: every call of that frame's inner generate (its 2-position prefill, then one
  call per codebook), each module's outputs joined along the positions (0 .. num_codebooks - 1,
  as its teacher-forced probe sees them in one call); the codebook heads keep one position per call.

Always eager: a forward hook inside a torch.compile graph is traced, not called, so what it would
record there is not reliable; the compiled check is localized in eager and says so when eager
agrees (suite/loop_checks.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from csm_conformance.accuracy.localize.dump import _label, _side_meta
from csm_conformance.accuracy.localize.hooks import _hooked_calls
from csm_conformance.accuracy.localize.report import Localization, localize
from csm_conformance.accuracy.localize.rule import coarser


@contextmanager
def _frame_clock(model: torch.nn.Module):
    """Yields (frame, lengths): frame() is the frame the loop is computing now (the backbone's
    forward calls so far, less one: the prompt's embedding, made before the first call, belongs to
    frame 0; each frame's depth decoder runs after its backbone step), lengths[f] the sequence
    length of frame f's backbone call."""
    lengths: list[int] = []

    def count(_module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids", args[0] if args else None)
        shaped = embeds if embeds is not None else ids
        lengths.append(int(shaped.shape[1]) if shaped is not None and shaped.ndim >= 2 else 1)

    handle = model.backbone_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield (lambda: max(0, len(lengths) - 1)), lengths
    finally:
        handle.remove()


def _last_position(entries: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """The prefill's outputs [batch, length, ...] cut to the last position; others whole."""
    return {name: t[:, -1:] if t.ndim >= 2 and t.shape[1] == length and length > 1 else t for name, t in entries.items()}


def _joined(entries: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`name`, `name#2`, ... (one entry per call) joined along the positions (dim 1) under `name`;
    a module whose calls do not join (another rank or width) keeps one entry per call."""
    calls: dict[str, list[torch.Tensor]] = {}
    for key, tensor in entries.items():
        calls.setdefault(key.split("#", 1)[0], []).append(tensor)
    joined: dict[str, torch.Tensor] = {}
    for name, tensors in calls.items():
        first = tensors[0]
        if first.ndim >= 2 and all(t.ndim == first.ndim and t.shape[0] == first.shape[0] and t.shape[2:] == first.shape[2:] for t in tensors):
            joined[name] = torch.cat(tensors, dim=1)
        else:
            joined.update((name if i == 0 else f"{name}#{i + 1}", t) for i, t in enumerate(tensors))
    return joined


def capture_step(loaded, case, codes: torch.Tensor, step: int, context_codec=None) -> dict[str, torch.Tensor]:
    """Backbone then depth-decoder module outputs (CPU float32) of frame `step` of the eager loop
    forced along `codes` [frames, num_codebooks], which runs step + 1 frames (see the module
    docstring for what is captured)."""
    from csm_conformance.runtime.decode_loop import forced_decode

    if not 0 <= step < codes.shape[0]:
        raise ValueError(f"{case.id}: decode step {step} is outside the {codes.shape[0]} forced frames")
    model = loaded.model
    with _frame_clock(model) as (frame, lengths):
        at_step = lambda: frame() == step  # noqa: E731
        with _hooked_calls(model, "backbone", with_inputs=False, active=at_step) as backbone, \
                _hooked_calls(model, "depth_decoder", with_inputs=False, active=at_step) as depth:
            forced_decode(loaded, case, codes, step + 1, mode="eager", context_codec=context_codec)
    if len(lengths) != step + 1:
        raise RuntimeError(f"{case.id}: the loop ran {len(lengths)} backbone steps for {step + 1} frames")
    if not backbone or not depth:
        raise RuntimeError(f"{case.id}: no hooked module ran at decode step {step} (module names changed?)")
    return {**(_last_position(backbone, lengths[0]) if step == 0 else backbone), **_joined(depth)}


def step_label(step: int) -> str:
    """What step `step` is, in a few words, for notes and titles."""
    return ("decode step 0: the prefill, cut to its last position" if step == 0 else
            f"decode step {step}: the backbone's cached step (query length 1)") + ", and that frame's depth-decoder calls"


def localize_step(session, case, codes: torch.Tensor, step: int) -> tuple[Localization, dict]:
    """The reference's and the device's eager loops, forced along `codes` (the reference's), hooked
    at decode step `step` and compared by the localizer's rule; returns the Localization and the
    captures with their metadata ({side: (tensors, meta)}, for dump.save_dump). The caller writes
    it (Localization.write: output/localize/<case>-decode-step<k>.{txt,png,json})."""
    reference = capture_step(session.reference, case, codes, step)
    device = capture_step(session.target, case, codes, step, context_codec=session.reference)
    sides = {"reference": (reference, _side_meta(session, "reference", case.id, "decode_step", list(reference))),
             "device": (device, _side_meta(session, "device", case.id, "decode_step", list(device)))}
    for _, meta in sides.values():
        meta["step"] = step
    loc = localize(f"{case.id} decode step {step}", reference, device, coarser("float32", session.dtype_name),
                   _label(sides["reference"][1]), _label(sides["device"][1]) + " eager")
    loc.notes.extend([f"{step_label(step)}; both sides eager, teacher-forced along the reference's codes",
                      *(f"planted fault: {n}" for n in session.fault_notes)])
    return loc, sides
