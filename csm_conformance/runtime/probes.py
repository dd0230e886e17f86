"""What each accuracy check computes, written once and run on both the reference and the device.

Outputs come back as CPU tensors (float32 for logits and audio) so metrics never touch a device.
Only public entry points of `CsmForConditionalGeneration` are used, except the prompt embedding
merge (`_merge_input_ids_with_input_values`), which is how the model itself builds the prompt's
embeddings with its audio context; teacher forcing needs those embeddings and has no public door.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from csm_conformance.catalogue.cases import PromptCase
from csm_conformance.runtime.models import LoadedModel


def prompt_inputs(loaded: LoadedModel, case: PromptCase, audio_in_model_dtype: bool = True):
    """Processor output for the case, on the model's device, audio in the model's dtype.

    Prepared afresh for every call: `BatchFeature.to` converts in place, so a shared batch
    would leak one model's dtype into the other's inputs. `audio_in_model_dtype=False` keeps
    the context audio in float32, for when another model's codec encodes it.
    """
    inputs = loaded.processor.apply_chat_template(case.conversation(), tokenize=True, return_dict=True)
    inputs = inputs.to(loaded.device)
    if "input_values" in inputs and audio_in_model_dtype:
        inputs["input_values"] = inputs["input_values"].to(loaded.dtype)
    return inputs


@contextmanager
def context_codes_from(loaded: LoadedModel, source: LoadedModel | None):
    """While active, `loaded` turns context audio into codes with `source`'s codec.

    A logits check must compare one component on identical inputs: in bf16, Mimi's quantizer can
    pick a different code for a near-tie, and the backbone would then be judged on a different
    prompt. The device's own Mimi encode is judged by the mimi_encode check, and the whole
    pipeline by the generation check.
    """
    if source is None or source is loaded:
        yield
        return
    codec = loaded.model.codec_model

    def encode(input_values, *args, **kwargs):
        out = source.model.codec_model.encode(input_values.to(source.device, source.dtype), *args, **kwargs)
        out.audio_codes = out.audio_codes.to(input_values.device)
        return out

    codec.encode = encode
    try:
        yield
    finally:
        del codec.encode


@torch.inference_mode()
def backbone_logits(loaded: LoadedModel, case: PromptCase, context_codec: LoadedModel | None = None) -> torch.Tensor:
    """Codebook-0 logits at every prompt position: [T, vocab]."""
    inputs = prompt_inputs(loaded, case, audio_in_model_dtype=context_codec is None)
    with context_codes_from(loaded, context_codec):
        out = loaded.model(**inputs)
    return out.logits[0].float().cpu()


@torch.inference_mode()
def greedy_codes(loaded: LoadedModel, case: PromptCase, frames: int) -> torch.Tensor:
    """The reference's greedy codes for `frames` frames: [frames, num_codebooks]."""
    codes = loaded.model.generate(
        **prompt_inputs(loaded, case),
        max_new_tokens=frames,
        min_new_tokens=frames,
        do_sample=False,
        depth_decoder_do_sample=False,
        output_audio=False,
    )
    return codes[0].cpu()


@torch.inference_mode()
def depth_decoder_logits(loaded: LoadedModel, case: PromptCase, codes: torch.Tensor,
                         context_codec: LoadedModel | None = None) -> torch.Tensor:
    """Depth-decoder logits for codebooks 1..N-1, teacher-forced with `codes`: [frames, N-1, vocab]."""
    return teacher_forced_logits(loaded, case, codes, context_codec)[1]


@torch.inference_mode()
def teacher_forced_logits(loaded: LoadedModel, case: PromptCase, codes: torch.Tensor,
                          context_codec: LoadedModel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits a generation loop along `codes` computes, without any cache: codebook 0 of each
    frame [frames, vocab] and the depth decoder's codebooks 1..N-1 [frames, N-1, vocab].

    One backbone pass over prompt + frames gives the hidden state that precedes each frame (its
    codebook-0 logits through lm_head); the depth decoder then sees that state at position 0 and the
    frame's codes 0..N-2 after it, which is exactly what generation feeds it when it produced those
    codes.
    """
    model = loaded.model
    inputs = prompt_inputs(loaded, case, audio_in_model_dtype=context_codec is None)
    with context_codes_from(loaded, context_codec):
        merged = model._merge_input_ids_with_input_values(
            input_ids=inputs["input_ids"],
            input_values=inputs.get("input_values"),
            input_values_cutoffs=inputs.get("input_values_cutoffs"),
        )
    prompt_embeds = merged["inputs_embeds"]
    codes = codes.to(loaded.device)
    frame_embeds = model.backbone_model.embed_tokens(codes[None, :-1])  # frames that precede each target
    embeds = torch.cat([prompt_embeds, frame_embeds.to(prompt_embeds.dtype)], dim=1)
    hidden = model.backbone_model(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
    prompt_len = prompt_embeds.shape[1]
    before_frame = hidden[prompt_len - 1 : prompt_len - 1 + codes.shape[0]]  # [frames, hidden]
    depth_ids = torch.nn.functional.pad(codes[:, :-1], (1, 0), value=0)  # position 0: placeholder
    out = model.depth_decoder(input_ids=depth_ids, backbone_last_hidden_state=before_frame, use_cache=False)
    return model.lm_head(before_frame).float().cpu(), out.logits.float().cpu()


class UndecodableCodesError(RuntimeError):
    """Codes that Mimi cannot decode (ids outside its codebook) were about to be decoded; the
    message is one line counting and naming them, instead of the embedding lookup's IndexError.
    `in_range`: the fraction of the codes inside the codebook."""

    def __init__(self, message: str, in_range: float):
        super().__init__(message)
        self.in_range = in_range


def undecodable_codes(codes: torch.Tensor, codebook_size: int, vocab_size: int | None = None,
                      random_weights: bool = False) -> str | None:
    """One line describing the ids of `codes` [num_codebooks, frames] outside Mimi's codebook
    [0, codebook_size), with their count, codebooks (0-based) and distinct ids; None when all fit.

    Why it can happen: CSM samples each codebook over its audio vocab (2051 ids on CSM-1B), Mimi
    decodes 2048; the ids past Mimi's are CSM's specials (pad 2050), which trained weights emit
    only as specials, while random weights sample them like any other id."""
    codes = codes.detach().cpu()
    bad = (codes < 0) | (codes >= codebook_size)
    count = int(bad.sum())
    if count == 0:
        return None

    def listed(values: list[int], most: int = 6) -> str:
        return ", ".join(map(str, values[:most])) + (f" and {len(values) - most} more" if len(values) > most else "")

    books = sorted({int(i) for i in bad.nonzero()[:, 0]})
    ids = sorted({int(v) for v in codes[bad]})
    where = f">= Mimi's codebook size {codebook_size}" if ids[0] >= 0 else f"outside Mimi's codebook [0, {codebook_size})"
    line = (f"{count} of {codes.numel()} sampled codes are {where} (codebook{'s' if len(books) > 1 else ''} {listed(books)}; "
            f"id{'s' if len(ids) > 1 else ''} {listed(ids)}): the codec cannot decode them")
    if vocab_size is not None and vocab_size > codebook_size:
        specials = f"id {codebook_size} is" if vocab_size == codebook_size + 1 else f"ids {codebook_size}-{vocab_size - 1} are"
        line += f" (CSM's audio vocab has {vocab_size} ids per codebook, Mimi's {codebook_size}: {specials} CSM's specials"
        line += ", which random weights sample and real weights should not)" if random_weights else ", which real weights should not sample)"
    return line


def check_decodable(loaded: LoadedModel, codes: torch.Tensor) -> None:
    """Raise UndecodableCodesError when `codes` [num_codebooks, frames] hold ids Mimi cannot decode."""
    model = loaded.model
    size = int(model.codec_model.config.codebook_size)
    problem = undecodable_codes(codes, size, int(model.config.vocab_size), random_weights=loaded.identity.kind != "checkpoint")
    if problem:
        codes = codes.detach().cpu()
        raise UndecodableCodesError(problem, float(((codes >= 0) & (codes < size)).double().mean()))


@contextmanager
def decodable_codes_checked(loaded: LoadedModel):
    """While active, every Mimi decode of `loaded` (generate's own `output_audio` included) first
    checks its codes with check_decodable."""
    codec = loaded.model.codec_model
    decode, patched = codec.decode, "decode" in vars(codec)

    def checked(audio_codes, *args, **kwargs):  # [batch, num_codebooks, frames]
        check_decodable(loaded, audio_codes.transpose(0, 1).flatten(1))
        return decode(audio_codes, *args, **kwargs)

    codec.decode = checked
    try:
        yield
    finally:
        if patched:
            codec.decode = decode
        else:
            del codec.decode


@torch.inference_mode()
def mimi_decode(loaded: LoadedModel, codes: torch.Tensor) -> torch.Tensor:
    """Waveform for codes [num_codebooks, frames]; UndecodableCodesError for ids Mimi cannot decode."""
    check_decodable(loaded, codes)
    audio = loaded.model.codec_model.decode(codes[None].to(loaded.device)).audio_values
    return audio[0, 0].float().cpu()


@torch.inference_mode()
def mimi_encode(loaded: LoadedModel, waveform: torch.Tensor) -> torch.Tensor:
    """Codes [num_codebooks, frames] for a mono waveform."""
    audio = waveform.reshape(1, 1, -1).to(loaded.device, loaded.dtype)
    return loaded.model.codec_model.encode(audio).audio_codes[0].cpu()


def codec_case_codes(loaded: LoadedModel, case) -> torch.Tensor:
    """A codec decode case's seeded codes [num_codebooks, frames], for `loaded`'s config."""
    cfg = loaded.model.config
    return seeded_codes(cfg.num_codebooks, case.decode_frames, min(cfg.vocab_size, cfg.codec_config.codebook_size), case.decode_seed)


def seeded_codes(num_codebooks: int, frames: int, vocab: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (num_codebooks, frames), generator=generator)


@torch.inference_mode()
def sample_fixed_length(loaded: LoadedModel, inputs, frames: int, **kwargs):
    """Sampled generation of exactly `frames` frames.

    min_new_tokens = max_new_tokens keeps generation from stopping early, so two software
    versions do the same amount of work (CSM often never emits its all-zero stop frame anyway).
    """
    return loaded.model.generate(
        **inputs,
        max_new_tokens=frames,
        min_new_tokens=frames,
        do_sample=True,
        depth_decoder_do_sample=True,
        **kwargs,
    )


@torch.inference_mode()
def seeded_generation(loaded: LoadedModel, case: PromptCase, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled codes [frames, N] and their audio, with a fixed seed and a fixed length.
    UndecodableCodesError when the codes hold ids Mimi cannot decode, checked before it decodes."""
    torch.manual_seed(seed)
    with decodable_codes_checked(loaded):
        out = sample_fixed_length(loaded, prompt_inputs(loaded, case), frames, output_audio=True, return_dict_in_generate=True)
    codes = out.sequences[0].cpu()
    audio = out.audio[0].float().cpu()
    return codes, audio
