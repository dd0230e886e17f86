"""The catalogue's validation and the embedded model's determinism."""

import pytest
import torch

from csm_conformance import cases, models, probes, tiny_model

pytestmark = pytest.mark.selftest


def write(tmp_path, text):
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    return path


def test_default_catalogue_has_the_required_cases():
    cat = cases.load_catalogue()
    assert {"short_en", "medium_en", "chinese", "speaker_1", "numbers_punct", "long_en", "multi_turn_ctx"} <= set(cat.ids())
    assert any(c.context for c in cat.prompts) and any(c.generate_frames for c in cat.prompts)


@pytest.mark.parametrize("text,match", [
    ("prompts: [{id: a}]", "'text' must be"),
    ("prompts: [{id: a, text: x}, {id: a, text: y}]", "duplicate case id 'a'"),
    ("prompts: [{id: 'a b', text: x}]", "'id' must be"),
    ("prompts: []\ncodec: []", "holds no cases"),
    ("prompts: [{id: a, text: x, context: [{text: y}]}]", "context\\[0\\] needs"),
    ("codec: [{id: c, decode: {frames: 2}, encode: {seconds: 1}}]", "exactly one of"),
    ("prompts: [{id: a, text: x, depth_frames: -1}]", "non-negative integer"),
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


def test_tiny_model_is_the_same_bytes_every_build(tmp_path):
    first = models.ModelSource("tiny").load("cpu", torch.float32)
    tiny_model.write_model_dir(tmp_path / "again")
    from transformers import CsmForConditionalGeneration

    again = CsmForConditionalGeneration.from_pretrained(tmp_path / "again")
    assert models.state_digest(again) == first.identity.weights_digest


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
