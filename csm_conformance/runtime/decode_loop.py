"""The generation loop, judged step by step: forced decoding through the model's own generate().

Every other accuracy probe runs one uncached forward pass; the audio is made by `generate`, a loop
of cached decode steps (one new position each) in the backbone and, inside each frame, the depth
decoder's own `generate`. Here that loop runs as it does for audio, greedy, and records the raw
logits of every step: the codebook-0 logits of each backbone step and the depth decoder's logits
of each codebook. The device is forced along the reference's own greedy codes, so both sides
compute every step on the same tokens and a difference is the loop's, never a different path
taken after a near tie.

Forcing: a logits processor replaces the scores by a one-hot of the forced id (it never writes into
`scores`, which the loop keeps as the step's raw logits). The outer `generate` hands no processor
to the depth decoder, so its `generate` is wrapped for the duration (as probes.context_codes_from
wraps the codec's encode) to add the forcing processor and ask for its raw logits. Forcing the
reference along its own greedy path gives bitwise the logits of its free run (transformers 5.25.0
and 4.52.4, eager and compiled).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from csm_conformance.catalogue.cases import PromptCase
from csm_conformance.errors import UserError
from csm_conformance.runtime import probes
from csm_conformance.runtime.models import LoadedModel
from csm_conformance.runtime.modes import generation_mode


class DecodeStoppedEarly(UserError, RuntimeError):
    """The reference's greedy loop stopped (an all-zero frame) before the frames a case asks for,
    so there is no reference for the later steps; the message is one line."""


@dataclass
class DecodeRecord:
    """One greedy decode loop: its codes and the raw logits of every step (CPU float32)."""

    codes: torch.Tensor  # [frames, num_codebooks]
    backbone: torch.Tensor  # [frames, vocab]: codebook 0, one backbone step per frame
    depth: torch.Tensor  # [frames, num_codebooks - 1, vocab]: the depth decoder's steps

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])


class ForceTokens(LogitsProcessor):
    """Scores replaced by a one-hot (0 at the forced id, -inf elsewhere), so greedy and sampling
    alike pick it. A new tensor: the loop keeps the `scores` it passed in as the step's raw logits."""

    def __init__(self, pick):
        self.pick = pick  # input_ids -> LongTensor [batch]

    def __call__(self, input_ids, scores):
        token = self.pick(input_ids).to(scores.device).view(-1, 1)
        return torch.full_like(scores, float("-inf")).scatter(1, token, 0.0)


def backbone_step(input_ids: torch.Tensor) -> int:
    """The frame a backbone step produces: CSM's loop passes the 2-D prompt ids at the first step,
    then the [batch, frames so far, codebooks] codes."""
    return 0 if input_ids.ndim == 2 else int(input_ids.shape[1])


@contextmanager
def _depth_decoder_recorded(model, codes: torch.Tensor | None, steps: list):
    """While active, each frame's depth-decoder generate is forced along `codes` (when given) and
    appends its raw logits [batch, num_codebooks - 1, vocab] to `steps`; it returns the plain
    sequences, which every release's outer loop accepts. Its generation config (which the outer
    call's depth_decoder_* arguments change for good) is restored afterwards."""
    depth = model.depth_decoder
    original, saved_config = depth.generate, copy.deepcopy(depth.generation_config)

    def generate(*args, **kwargs):
        frame = len(steps)
        processors = LogitsProcessorList()
        if codes is not None:  # inner input_ids are [0, code 0, code 1 .. code k]: the next is codebook shape[1] - 1
            processors.append(ForceTokens(lambda ids, f=frame: codes[f, ids.shape[1] - 1].expand(ids.shape[0])))
        out = original(*args, logits_processor=processors, return_dict_in_generate=True, output_logits=True, **kwargs)
        steps.append(torch.stack([step.float().cpu() for step in out.logits], dim=1))
        return out.sequences

    depth.generate = generate
    try:
        yield
    finally:
        del depth.generate
        depth.generation_config = saved_config


@torch.inference_mode()
def _decode(loaded: LoadedModel, case: PromptCase, frames: int, codes: torch.Tensor | None,
            context_codec: LoadedModel | None, mode: str) -> DecodeRecord:
    model = loaded.model
    processors = LogitsProcessorList()
    if codes is not None:
        codes = codes.to(loaded.device)
        processors.append(ForceTokens(lambda ids: codes[backbone_step(ids), 0].expand(ids.shape[0])))
    depth_steps: list[torch.Tensor] = []
    inputs = probes.prompt_inputs(loaded, case, audio_in_model_dtype=context_codec is None)
    # the depth decoder's generation config is restored by _depth_decoder_recorded, so it is entered
    # first: entered inside generation_mode, it would restore the compiled config for good
    with probes.context_codes_from(loaded, context_codec), _depth_decoder_recorded(model, codes, depth_steps), \
            generation_mode(loaded, mode):
        out = model.generate(**inputs, max_new_tokens=frames, min_new_tokens=frames, do_sample=False,
                             depth_decoder_do_sample=False, logits_processor=processors,
                             return_dict_in_generate=True, output_logits=True, output_audio=False)
    made = int(out.sequences.shape[1])
    backbone = torch.stack([step[0].float().cpu() for step in out.logits[:made]])
    depth = torch.cat(depth_steps, dim=0)[:made] if depth_steps else torch.empty(0)
    return DecodeRecord(out.sequences[0].cpu(), backbone, depth)


def reference_decode(loaded: LoadedModel, case: PromptCase, frames: int, mode: str = "eager") -> DecodeRecord:
    """The reference's free greedy loop of `frames` frames with every step's logits. A loop that
    stops early (CSM stops at an all-zero frame whatever min_new_tokens says) raises
    DecodeStoppedEarly: the device would have no reference for the steps after it."""
    record = _decode(loaded, case, frames, None, None, mode)
    if record.frames != frames:
        raise DecodeStoppedEarly(f"{case.id}: the reference's greedy decode loop stopped after {record.frames} of {frames} frames "
                                 "(an all-zero frame): lower decode_frames for this case or pick another prompt")
    return record


def forced_decode(loaded: LoadedModel, case: PromptCase, codes: torch.Tensor, frames: int, mode: str = "eager",
                  context_codec: LoadedModel | None = None) -> DecodeRecord:
    """The loop of `frames` frames forced along `codes` [frames, num_codebooks] (the reference's),
    with every step's logits. `context_codec`: the model whose codec encodes the context audio (the
    reference's, so that both loops start from the same prompt; see probes.context_codes_from)."""
    if codes.shape[0] < frames:
        raise ValueError(f"{case.id}: {codes.shape[0]} forced frames for a loop of {frames}")
    return _decode(loaded, case, frames, codes[:frames], context_codec, mode)
