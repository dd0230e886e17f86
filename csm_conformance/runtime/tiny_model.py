"""The embedded tiny CSM: the model CI runs on, since no machine here reaches a model hub.

It is a **fixed checkpoint committed in the package** (`assets/embedded-tiny-csm/`), in the
layout of the published `sesame/csm-1b` (config.json with its keys, one model.safetensors holding
the tensors a transformers 4.x conversion stores - the codebook embedding once, as
`depth_decoder.model.embed_tokens.weight` - tokenizer files, chat template, preprocessor config),
and it is loaded through the same `from_pretrained` path a real checkpoint takes.

Why committed files and not a model built at run time: bounds, golden references and the upgrade
verdict compare stacks on this model, so every stack must be handed the same bytes. A directory
written by the running transformers' own `save_pretrained` is not: 5.0-5.20 write a different
set of tensors. With fixed files, a stack that *loads* them differently is judged by the load
integrity check instead of silently testing other weights. The weights digest is of the files.

The files were written once by `write_model_dir` under transformers 4.57.6 (the layout the
published checkpoint has); `python -m csm_conformance.runtime.tiny_model --write DIR` reproduces them
there. Every tensor is drawn by NumPy from a seed derived from its checkpoint name, so
`verify_checkpoint` can check each stored value against its recipe on any stack.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).parent / "assets"
CHECKPOINT_DIR = ASSETS / "embedded-tiny-csm"
TOKENIZER_FILE = CHECKPOINT_DIR / "tokenizer.json"
CHAT_TEMPLATE_FILE = CHECKPOINT_DIR / "chat_template.jinja"
WRITTEN_WITH = "4.57.6"  # the transformers release whose save_pretrained wrote CHECKPOINT_DIR

MODEL_NAME = "embedded-tiny-csm"
WEIGHTS_SEED = 20250301
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"]
BOS_ID, EOS_ID, AUDIO_ID, AUDIO_EOS_ID = range(4)
TEXT_VOCAB_SIZE = 1024
NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 64  # codec codebook; CSM audio vocab may not exceed it (random ids must decode)

# A llama3 RoPE scaling shaped like the real checkpoint's, scaled to the tiny model's positions,
# so that "RoPE scaling lost" is a fault the tiny model can show.
BACKBONE_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
DEPTH_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 4,
}

# transformers 5 renamed Mimi's flat key layout; weights are seeded by the 4.x (checkpoint) names.
_MIMI_5X_TO_CANONICAL = [
    ("codec_model.encoder.encoder_seanet.layers.", "codec_model.encoder.layers."),
    ("codec_model.encoder.encoder.layers.", "codec_model.encoder.layers."),
    ("codec_model.encoder.encoder_transformer.", "codec_model.encoder_transformer."),
    ("codec_model.encoder.downsample.", "codec_model.downsample."),
    ("codec_model.decoder.upsample.", "codec_model.upsample."),
    ("codec_model.decoder.decoder_transformer.", "codec_model.decoder_transformer."),
    ("codec_model.decoder.decoder_seanet.layers.", "codec_model.decoder.layers."),
    ("codec_model.decoder.decoder.layers.", "codec_model.decoder.layers."),
]


def canonical_name(name: str) -> str:
    for new, old in _MIMI_5X_TO_CANONICAL:
        if name.startswith(new):
            return old + name[len(new):]
    return name


def _rope_kwargs(scaling: dict) -> dict:
    """transformers 5 reads `rope_parameters` (theta inside); 4.x reads `rope_scaling`."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {**scaling, "rope_theta": 500000.0}}
    return {"rope_scaling": dict(scaling), "rope_theta": 500000.0}


def tiny_config():
    from transformers import CsmConfig, MimiConfig

    codec = MimiConfig(
        hidden_size=32,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[8, 6, 5, 4],
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=NUM_CODEBOOKS,
        num_semantic_quantizers=1,
        upsample_groups=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=250,
    )
    depth = {
        "num_codebooks": NUM_CODEBOOKS,
        "backbone_hidden_size": 64,
        "vocab_size": CODEBOOK_SIZE,
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 12,
        "max_position_embeddings": NUM_CODEBOOKS + 1,
        **_rope_kwargs(DEPTH_ROPE_SCALING),
    }
    return CsmConfig(
        num_codebooks=NUM_CODEBOOKS,
        vocab_size=CODEBOOK_SIZE,
        text_vocab_size=TEXT_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        pad_token_id=AUDIO_ID,
        codebook_pad_token_id=CODEBOOK_SIZE - 1,
        codebook_eos_token_id=0,
        bos_token_id=BOS_ID,
        eos_token_id=None,
        audio_token_id=AUDIO_ID,
        audio_eos_token_id=AUDIO_EOS_ID,
        depth_decoder_config=depth,
        codec_config=codec.to_dict(),
        **_rope_kwargs(BACKBONE_ROPE_SCALING),
    )


def _draw(name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Values for one tensor, from a seed that depends only on its canonical name."""
    seed = (WEIGHTS_SEED ^ zlib.crc32(name.encode())) & 0xFFFFFFFF
    rng = np.random.Generator(np.random.PCG64(seed))
    if kind == "ones":
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "scale":
        return (0.1 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "usage":
        return np.ones(shape, dtype=np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if kind == "embedding":
        std = 1.0
    elif kind == "codebooks_head":  # [heads, hidden, vocab]: the fan-in is the hidden size
        std = 1.0 / np.sqrt(shape[1])
    elif kind == "bias":
        std = 0.02
    else:  # matrices and conv kernels: unit-variance activations through a deep stack
        std = 1.0 / np.sqrt(max(fan_in, 1))
    return (std * rng.standard_normal(shape)).astype(np.float32)


def _kind(canonical: str, shape: tuple[int, ...]) -> str:
    leaf = canonical.rsplit(".", 1)[-1]
    if leaf in ("cluster_usage", "initialized"):
        return "usage"
    if "norm" in canonical and leaf == "weight":
        return "ones"
    if leaf == "scale":  # Mimi's layer scales
        return "scale"
    if leaf == "bias":
        return "bias"
    if "embed" in canonical or leaf == "embed_sum":
        return "embedding"
    if canonical.startswith("depth_decoder.codebooks_head"):
        return "codebooks_head"
    return "matrix"


def seeded_state(model) -> dict:
    """A version-independent value for every parameter and persistent buffer of `model`."""
    import torch

    state = {}
    names = [n for n, _ in model.named_parameters()] + [
        n for n, b in model.named_buffers() if n in model.state_dict()
    ]
    live = model.state_dict()
    for name in names:
        tensor = live[name]
        if not tensor.is_floating_point():
            continue
        canonical = canonical_name(name)
        shape = tuple(tensor.shape)
        values = _draw(canonical, shape, _kind(canonical, shape))
        state[name] = torch.from_numpy(values)
    return state


def build_tokenizer():
    """Train the byte-level BPE once; its output is committed as assets/tokenizer.json.

    Kept so the asset can be regenerated and reviewed; CI never retrains it, because a
    `tokenizers` upgrade could change training and with it every token id of the suite.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from csm_conformance.runtime.tiny_corpus import CORPUS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


# Written out even where they equal a release's default: a default can change between releases
# (top_k is 50 in 4.x and None in 5.x), and the published checkpoint states them too.
SAMPLING = {"do_sample": True, "top_k": 50, "temperature": 0.9,
            "depth_decoder_do_sample": True, "depth_decoder_top_k": 50, "depth_decoder_temperature": 0.9}


def pin_sampling(path: Path) -> None:
    config = json.loads(path.read_text())
    config.update(SAMPLING)
    path.write_text(json.dumps(dict(sorted(config.items())), indent=2) + "\n")


def write_model_dir(target: Path) -> Path:
    """Write the tiny checkpoint into `target` (a fresh directory) and return it. Run under
    transformers WRITTEN_WITH to reproduce the committed files: other releases' save_pretrained
    write other layouts (5.0-5.20: 178 tensors), which is why the files are committed."""
    from transformers import (
        CsmForConditionalGeneration,
        CsmProcessor,
        EncodecFeatureExtractor,
        PreTrainedTokenizerFast,
    )

    target.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    model = CsmForConditionalGeneration(config)
    model.load_state_dict(seeded_state(model), strict=False)
    model.tie_weights()
    gen = model.generation_config
    gen._from_model_config = False
    gen.max_new_tokens = 125
    gen.do_sample = True
    gen.top_k = 50
    gen.temperature = 0.9
    model.depth_decoder.generation_config.do_sample = True
    model.depth_decoder.generation_config.top_k = 50
    model.depth_decoder.generation_config.temperature = 0.9
    model.save_pretrained(target)
    pin_sampling(target / "generation_config.json")

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_FILE),
        bos_token=SPECIAL_TOKENS[BOS_ID],
        eos_token=SPECIAL_TOKENS[EOS_ID],
        pad_token=SPECIAL_TOKENS[AUDIO_ID],
        model_max_length=1024,
        model_input_names=["input_ids", "attention_mask"],  # as Llama-3's; 4.x adds token_type_ids otherwise
    )
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0)
    processor = CsmProcessor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE_FILE.read_text(),
    )
    processor.save_pretrained(target)
    return target


def ensure_tiny_model_dir() -> Path:
    """The committed checkpoint directory (read-only: nothing is written at run time)."""
    if not (CHECKPOINT_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"the embedded checkpoint is missing from the installed package: {CHECKPOINT_DIR}")
    return CHECKPOINT_DIR


# The tie makes the stored depth-decoder embedding the backbone's codebook embedding, drawn under its name.
TIED_RECIPE = {"depth_decoder.model.embed_tokens.weight": "backbone_model.embed_tokens.embed_audio_tokens.weight"}


def verify_checkpoint(directory: Path = CHECKPOINT_DIR) -> list[str]:
    """Tensors whose stored values differ from their seeded recipe (empty: the files are the recipe)."""
    from safetensors import safe_open

    wrong = []
    with safe_open(str(directory / "model.safetensors"), framework="np") as f:
        for name in f.keys():
            stored = f.get_tensor(name)
            canonical = TIED_RECIPE.get(canonical_name(name), canonical_name(name))
            if not np.array_equal(stored, _draw(canonical, tuple(stored.shape), _kind(canonical, tuple(stored.shape)))):
                wrong.append(name)
    return wrong


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate-tokenizer", action="store_true", help="retrain assets/tokenizer.json")
    parser.add_argument("--write", type=Path,
                        help=f"write the tiny checkpoint into this directory (run under transformers {WRITTEN_WITH} to reproduce the committed one)")
    args = parser.parse_args()
    if args.regenerate_tokenizer:
        tok = build_tokenizer()
        TOKENIZER_FILE.write_text(json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {TOKENIZER_FILE} ({tok.get_vocab_size()} tokens)")
    if args.write:
        print(write_model_dir(args.write))


if __name__ == "__main__":
    main()
