"""The catalogue's validation and the embedded model's determinism."""

import json

import pytest
import torch

from csm_conformance.catalogue import cases
from csm_conformance.runtime import models, probes, tiny_model

pytestmark = pytest.mark.selftest


def write(tmp_path, text):
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    return path


def test_default_catalogue_has_the_required_cases():
    cat = cases.load_catalogue()
    assert {"short_en", "medium_en", "chinese", "speaker_1", "numbers_punct", "long_en", "multi_turn_ctx"} <= set(cat.ids())
    assert any(c.context for c in cat.prompts) and any(c.generate_frames for c in cat.prompts)
    assert all(c.decode_frames >= 32 for c in cat.prompts) and max(c.decode_frames for c in cat.prompts) >= 256  # a long loop (issue 21)


@pytest.mark.parametrize("text,match", [
    ("prompts: [{id: a}]", "'text' must be"),
    ("prompts: [{id: a, text: x}, {id: a, text: y}]", "duplicate case id 'a'"),
    ("prompts: [{id: 'a b', text: x}]", "'id' must be"),
    ("prompts: []\ncodec: []", "holds no cases"),
    ("prompts: [{id: a, text: x, context: [{text: y}]}]", "context\\[0\\] needs"),
    ("codec: [{id: c, decode: {frames: 2}, encode: {seconds: 1}}]", "exactly one of"),
    ("prompts: [{id: a, text: x, depth_frames: -1}]", "non-negative integer"),
    ("prompts: [{id: a, text: x, decode_frames: many}]", "'decode_frames' must be a non-negative integer"),
    ("prompts: [{id: a, text: [unclosed", "not valid YAML"),
])
def test_catalogue_errors_are_one_line(tmp_path, text, match):
    with pytest.raises(cases.CatalogueError, match=match) as err:
        cases.load_catalogue(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_unknown_case_id():
    with pytest.raises(cases.CatalogueError, match="unknown case id 'nope'"):
        cases.load_catalogue().select(["nope"])


def test_context_waveform_is_deterministic():
    a = cases.speechlike_waveform(0.5, 140.0, 1)
    assert a.dtype.name == "float32" and a.shape == (12000,)
    assert (a == cases.speechlike_waveform(0.5, 140.0, 1)).all()
    assert not (a == cases.speechlike_waveform(0.5, 140.0, 2)).all()


def test_embedded_checkpoint_is_its_recipe(tmp_path):
    """Every committed tensor is the value its seeded recipe draws; a changed one is named."""
    import shutil

    from safetensors.numpy import load_file, save_file

    assert tiny_model.verify_checkpoint() == []
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model.CHECKPOINT_DIR, copy)
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 1.0001
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert tiny_model.verify_checkpoint(copy) == ["lm_head.weight"]


def test_embedded_checkpoint_has_the_published_layout():
    """The layout a transformers 4.x conversion writes (as sesame/csm-1b's): the codebook embedding
    stored once, as the depth decoder's; 4.x config keys, which every supported release reads."""
    from safetensors import safe_open

    stored = set(safe_open(str(tiny_model.CHECKPOINT_DIR / "model.safetensors"), "pt").keys())
    assert "depth_decoder.model.embed_tokens.weight" in stored
    assert "backbone_model.embed_tokens.embed_audio_tokens.weight" not in stored
    config = json.loads((tiny_model.CHECKPOINT_DIR / "config.json").read_text())
    assert config["tie_codebooks_embeddings"] is True and config["tie_word_embeddings"] is False
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["transformers_version"] == tiny_model.WRITTEN_WITH
    assert models.ModelSource("tiny").load("cpu", torch.float32).identity.weights_digest == models.files_digest(tiny_model.CHECKPOINT_DIR)
    generation = json.loads((tiny_model.CHECKPOINT_DIR / "generation_config.json").read_text())
    assert {k: generation.get(k) for k in tiny_model.SAMPLING} == tiny_model.SAMPLING  # stated, not left to a release's default


def test_seeded_weights_use_checkpoint_names_only():
    """Canonical names are the keys a checkpoint stores, whatever layout transformers uses live."""
    from safetensors import safe_open

    model = models.ModelSource("tiny").load("cpu", torch.float32).model
    stored = set(safe_open(str(tiny_model.ensure_tiny_model_dir() / "model.safetensors"), "pt").keys())
    canonical = {tiny_model.canonical_name(k) for k in model.state_dict()}
    assert canonical - stored <= {"backbone_model.embed_tokens.embed_audio_tokens.weight"}  # tied, stored once
    assert stored <= canonical


def test_teacher_forcing_reproduces_greedy_codes():
    """The depth probe is wired right: the reference's argmax is the reference's own greedy codes."""
    ref = models.ModelSource("tiny").load("cpu", torch.float32)
    case = cases.load_catalogue().select(["multi_turn_ctx"]).prompts[0]
    codes = probes.greedy_codes(ref, case, 3)
    logits = probes.depth_decoder_logits(ref, case, codes)
    assert torch.equal(logits.argmax(-1), codes[:, 1:])
    backbone = probes.backbone_logits(ref, case)
    assert backbone.argmax(-1)[-1] == codes[0, 0]
