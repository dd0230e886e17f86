"""Bad input ends in one line and a red result, never a traceback wall or a silent pass.

The cases test_gate.py, test_options.py, test_cases_and_model.py and test_perf_gate.py already
cover (missing model path, cuda absent, unknown case id, bad dtype, corrupt bounds, corrupt golden,
corrupt performance baseline, zero rounds, catalogue syntax) are not repeated here. These are the
rest: model directories that are not a CSM checkpoint or whose weights do not fit their config,
an absent NPU, an empty catalogue, baselines that parse but would disable their gate,
non-finite device outputs, and sampled codes Mimi cannot decode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy.bounds import BoundsBook
from csm_conformance.baseline_files import BaselineError
from csm_conformance.catalogue import cases
from csm_conformance.performance.baselines import BaselineFile
from csm_conformance.runtime import devices, models, probes, tiny_model
from csm_conformance.suite import checks
from csm_conformance.suite.options import settings_from
from csm_conformance.suite.session import ConformanceSession, NonFiniteOutputError

pytestmark = pytest.mark.selftest
ROOT = Path(__file__).resolve().parents[2]


def _copy_tiny(target: Path, **config_changes) -> Path:
    shutil.copytree(tiny_model.ensure_tiny_model_dir(), target)
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Copies of the embedded checkpoint, each broken in one way."""
    root = tmp_path_factory.mktemp("models")
    (root / "no_config").mkdir()
    (root / "no_config" / "model.safetensors").write_bytes(b"")
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text('{"model_type": "bert", "hidden_size": 64}')
    (root / "bert" / "model.safetensors").write_bytes(b"")
    dirs = {
        "no_config": root / "no_config",
        "bert": root / "bert",
        "wider_ffn": _copy_tiny(root / "wider_ffn", intermediate_size=256),
        "more_layers": _copy_tiny(root / "more_layers", num_hidden_layers=3),
        "fewer_layers": _copy_tiny(root / "fewer_layers", num_hidden_layers=1),
        "truncated": _copy_tiny(root / "truncated"),
    }
    weights = dirs["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return dirs


@pytest.mark.parametrize("which,needle", [
    ("no_config", "has no config.json"),
    ("bert", "describes model_type 'bert', not 'csm'"),
    ("wider_ffn", "do not match its config.json: 6 of another shape, e.g. backbone_model.layers.0.mlp.down_proj.weight"),
])
def test_model_that_is_not_this_checkpoint_ends_the_run(one_line_error, run_suite, pytester, model_dirs, which, needle):
    one_line_error(run_suite(pytester, "--csm-case", "short_en", "--csm-model", str(model_dirs[which])), needle)


@pytest.mark.parametrize("which,needle", [
    ("wider_ffn", "6 of another shape, e.g. backbone_model.layers.0.mlp.down_proj.weight"),
    ("truncated", "could not load"),
])
def test_weights_that_cannot_be_this_config_are_an_error(model_dirs, which, needle):
    """Tensors of another shape (which transformers, asked to ignore sizes, re-initialises) or
    unreadable files: the checkpoint is not the one its config.json describes, a bad input."""
    with pytest.raises(models.ModelError, match=re.escape(needle)) as err:
        models.ModelSource(str(model_dirs[which])).load("cpu", torch.float32)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("which,field,count,first", [
    ("more_layers", "missing", 9, "backbone_model.layers.2."),
    ("fewer_layers", "unexpected", 9, "backbone_model.layers.1."),
])
def test_tensors_missing_or_dropped_are_found_at_load(model_dirs, which, field, count, first):
    """transformers initialises missing tensors at random and drops unused ones with a warning:
    the load integrity check (not a refusal) judges it, so a stack that loads differently is judged."""
    integrity = models.ModelSource(str(model_dirs[which])).load("cpu", torch.float32).integrity
    found = getattr(integrity, field)
    assert len(found) == count and found[0].startswith(first), found
    assert not integrity.clean


def test_load_integrity_check_names_the_tensors(run_suite, pytester, model_dirs):
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-model", str(model_dirs["more_layers"]), "-k", "load_integrity")
    assert result.ret == 1, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines([
        "*model/load_integrity: reference and device load: 9 tensor(s) missing from what was loaded, so initialised at random: "
        "backbone_model.layers.2.*",
    ])


def test_untied_codebook_embedding_is_found():
    """What transformers 5.0-5.20 do with a checkpoint that stores CSM's codebook embedding once:
    the backbone's copy is not tied to the stored one (and is left at its random initial values)."""
    from csm_conformance.runtime.load_integrity import CODEBOOK_TIE, inspect_load

    model = models.ModelSource("tiny").load("cpu", torch.float32).model
    assert inspect_load(model, {}).clean
    backbone = model.get_submodule(CODEBOOK_TIE[0].rsplit(".", 1)[0])
    backbone.weight = torch.nn.Parameter(torch.randn_like(backbone.weight))  # untied, random
    found = inspect_load(model, {"missing_keys": [CODEBOOK_TIE[0]]})
    assert found.missing == [CODEBOOK_TIE[0]]
    assert found.untied == [f"{CODEBOOK_TIE[0]} != {CODEBOOK_TIE[1]}"]


def test_embedded_checkpoint_blames_the_stack(monkeypatch):
    from csm_conformance.runtime.load_integrity import LoadIntegrity

    session = ConformanceSession(settings_from({"csm_case": ["short_en"]}, environ={}))
    session.load_models()
    session.reference.integrity = LoadIntegrity(missing=["backbone_model.embed_tokens.embed_audio_tokens.weight"])
    result = session.check_load_integrity()
    assert result.status == "failed"
    text = result.failure_text()
    assert "reference load: 1 tensor(s) missing" in text and "embed_audio_tokens" in text
    assert "fixed embedded checkpoint" in text and "the fault is this stack's" in text


def test_absent_npu_ends_the_run(one_line_error, run_suite, pytester):
    if devices._available("npu"):
        pytest.skip("this machine has an NPU")
    one_line_error(run_suite(pytester, "--csm-device", "npu"), "no npu device is available")


def test_empty_catalogue_ends_the_run(one_line_error, run_suite, pytester, tmp_path):
    catalogue = tmp_path / "empty.yaml"
    catalogue.write_text("# every case was deleted\n")
    one_line_error(run_suite(pytester, "--csm-cases", str(catalogue)), "holds no cases")


def test_empty_catalogue_file_is_the_same_error(tmp_path):
    (tmp_path / "blank.yaml").write_text("")
    with pytest.raises(cases.CatalogueError, match="holds no cases"):
        cases.load_catalogue(tmp_path / "blank.yaml")


def test_bounds_that_would_pass_anything_are_corrupt(tmp_path):
    path = tmp_path / "cpu-bfloat16.json"
    path.write_text(json.dumps({"schema": 1, "cases": {"short_en": {"backbone_logits": {"mae": {"bound": float("inf")}}}}}))
    with pytest.raises(BaselineError, match="has inf at short_en/backbone_logits/mae"):
        BoundsBook.load(path)


@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0])
def test_performance_baseline_with_unusable_figure_is_corrupt(tmp_path, value):
    """compare_figures skips a figure it cannot divide by: loading must refuse it instead."""
    source = next((ROOT / "baselines" / "performance").rglob("bfloat16-eager.json"))
    data = json.loads(source.read_text())
    data["benchmarks"][0]["extra_info"]["figures"]["frame_ms_median"]["value"] = value
    path = tmp_path / "bfloat16-eager.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="figure 'frame_ms_median' is .*not a positive number"):
        BaselineFile.load(path)


@pytest.fixture(scope="module")
def tiny_session() -> ConformanceSession:
    session = ConformanceSession(settings_from({"csm_device": "cpu", "csm_case": ["short_en"]}, environ={}))
    session.load_models()
    return session


def test_nonfinite_outputs_are_named_with_nan_and_inf_counts(tiny_session):
    good = torch.zeros(4, 8)
    bad = torch.zeros(4, 8)
    bad[0, 0], bad[1, 1], bad[2, 2] = float("nan"), float("inf"), -float("inf")
    result = tiny_session.nonfinite_result("case", "check", reference=good, device=bad)
    assert result.status == "failed"
    assert result.messages == ["device has non-finite values (NaN/Inf): 1 NaN and 2 Inf of 32 values"]
    assert tiny_session.nonfinite_result("case", "check", reference=good, device=good) is None


def test_inf_logits_fail_generation_with_one_line_naming_them(tiny_session):
    """An Inf in the device's codebook-0 logits makes sampling fail; the check says which output
    went non-finite instead of passing on the sampler's error."""
    case = tiny_session.catalogue.prompts[0]

    def plant_inf(_module, _inputs, output):
        output.view(-1)[0] = float("inf")
        return output

    handle = tiny_session.target.model.lm_head.register_forward_hook(plant_inf)
    try:
        with pytest.raises(NonFiniteOutputError) as err:
            tiny_session.device_generation(case, 2, seed=0)
    finally:
        handle.remove()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("short_en/generation: device_backbone_logits has non-finite values (NaN/Inf): 0 NaN and 1 Inf of")
    assert "generation stopped at sampling" in message
    assert tiny_session.results[-1].status == "failed" and tiny_session.results[-1].check == "generation"
    codes, audio = tiny_session.device_generation(case, 2, seed=0)  # the hook is gone: finite again
    assert codes.shape[0] == 2 and bool(torch.isfinite(audio).all())


def test_a_crash_with_finite_outputs_is_reraised_unchanged(tiny_session):
    """Only a non-finite output is renamed; any other crash in generation keeps its own error."""
    case = tiny_session.catalogue.prompts[0]
    calls = []

    def crash_once(*_):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device lost")

    handle = tiny_session.target.model.backbone_model.register_forward_hook(crash_once)
    try:
        with pytest.raises(RuntimeError, match="^device lost$") as err:
            tiny_session.device_generation(case, 2, seed=0)
    finally:
        handle.remove()
    assert not isinstance(err.value, NonFiniteOutputError)


def test_codes_mimi_cannot_decode_are_counted_in_one_line():
    """CSM-1B samples over 2051 ids per codebook, Mimi decodes 2048: random full-size weights
    sample the specials 2048-2050, and Mimi's embedding lookup ended the check in a bare
    `IndexError: index out of range in self`. The codes are counted and named before it decodes."""
    codes = torch.randint(0, 2048, (32, 8), generator=torch.Generator().manual_seed(0))  # [codebooks, frames], CSM-1B's
    codes[3, 1], codes[3, 7], codes[17, 0], codes[17, 5], codes[17, 6] = 2049, 2050, 2050, 2049, 2049
    assert probes.undecodable_codes(codes, 2048, 2051, random_weights=True) == (
        "5 of 256 sampled codes are >= Mimi's codebook size 2048 (codebooks 3, 17; ids 2049, 2050): the codec cannot decode them "
        "(CSM's audio vocab has 2051 ids per codebook, Mimi's 2048: ids 2048-2050 are CSM's specials, which random weights "
        "sample and real weights should not)")
    assert probes.undecodable_codes(codes, 2048, 2051).endswith("which real weights should not sample)")
    assert probes.undecodable_codes(codes.clamp(max=2047), 2048, 2051) is None


@pytest.fixture
def codebook_of_32(tiny_session, monkeypatch):
    """The device's Mimi configured with half its 64 codes: the embedded model (audio vocab 64 =
    Mimi's 64, so nothing it samples is out of range) then samples ids Mimi is said not to have,
    as random CSM-1B weights do (2051 ids over Mimi's 2048), while the codec still decodes them."""
    monkeypatch.setattr(tiny_session.target.model.codec_model.config, "codebook_size", 32)
    return tiny_session


def test_undecodable_codes_fail_generation_with_one_line(codebook_of_32):
    session = codebook_of_32
    case = session.catalogue.prompts[0]
    with pytest.raises(probes.UndecodableCodesError) as err:
        session.device_generation(case, 2, seed=0)
    message = str(err.value)
    assert "\n" not in message
    assert re.fullmatch(r"short_en/generation: \d+ of 16 sampled codes are >= Mimi's codebook size 32 \(codebooks? [\d, ]+( and \d+ more)?; "
                        r"ids? [\d, ]+( and \d+ more)?\): the codec cannot decode them \(CSM's audio vocab has 64 ids per codebook, Mimi's 32: "
                        r"ids 32-63 are CSM's specials, which random weights sample and real weights should not\)", message), message
    result = session.results[-1]
    assert (result.check, result.status) == ("generation", "failed")
    assert [(r.metric, r.ok) for r in result.rows] == [("codes_in_range", False)] and result.rows[0].value < 1.0


def test_codes_in_range_is_judged_against_mimi_not_the_audio_vocab(codebook_of_32, monkeypatch, tmp_path):
    """Id 40 is in CSM's audio vocab (64) but not in Mimi's codebook (32): out of range."""
    session = codebook_of_32
    monkeypatch.setattr(session, "settings", dataclasses.replace(session.settings, csm_output=str(tmp_path)))
    case = session.catalogue.prompts[0]
    codes = torch.zeros(case.generate_frames, 8, dtype=torch.long)
    codes[0, 1] = 40
    audio = torch.full((case.generate_frames * 1920,), 0.1)
    result = checks.generation(session, case, codes, audio, codes.clone())
    assert result.status == "failed"
    assert result.messages == ["codes_in_range is 0.984375, must be == 1"]


def test_inference_names_undecodable_codes_in_one_line(tmp_path, capsys, monkeypatch):
    """`csm-conformance inference` decodes with the same check: one line, exit 1, no file."""
    from csm_conformance.tools import inference as cli
    from csm_conformance.tools import synthesis

    load = synthesis.load

    def load_with_codebook_of_32(*args, **kwargs):
        loaded, device = load(*args, **kwargs)
        monkeypatch.setattr(loaded.model.codec_model.config, "codebook_size", 32)
        return loaded, device

    monkeypatch.setattr(synthesis, "load", load_with_codebook_of_32)
    wav = tmp_path / "x.wav"
    code = cli.inference(["--text", "hi", "--output", str(wav), "--max-tokens", "2", "--seed", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(r"inference\.py: error: generation failed: \d+ of \d+ sampled codes are >= Mimi's codebook size 32 \(", err), err
    assert not wav.exists()


def test_undecodable_codes_are_one_line_in_the_suite_run(run_suite, pytester, monkeypatch):
    """As on `random-full`, where the seeded generation samples CSM's specials (ids 2048-2050) and
    Mimi's lookup raised `IndexError: index out of range in self`: the real test fails on one line
    counting them, once, with no exception chain under it."""
    pytester.makepyfile(codebook_of_32='''
        from csm_conformance.suite.session import ConformanceSession

        load_models = ConformanceSession.load_models

        def lowered(self):
            load_models(self)
            self.target.model.codec_model.config.codebook_size = 32  # the embedded model samples 0-63

        ConformanceSession.load_models = lowered
    ''')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(pytester.path), os.environ.get("PYTHONPATH")])))
    result = run_suite(pytester, "-p", "codebook_of_32", "--csm-case", "short_en", "-k", "seeded_generation")
    text = result.stdout.str()
    assert result.ret == 1, text[-3000:]
    # the failure's own line; pytest's short summary repeats it after "FAILED <test> - Failed:" (in full under CI=true)
    lines = [line for line in text.splitlines() if "sampled codes are >=" in line and not line.startswith("FAILED ")]
    assert len(lines) == 1 and lines[0].startswith("short_en/generation: "), text[-3000:]
    assert "the codec cannot decode them" in lines[0]
    assert "IndexError" not in text and "exception" not in text.lower(), text[-3000:]


@pytest.mark.parametrize("spec,message", [
    ("bogus", "unknown fault 'bogus': use weight:<param>[:<scale>], rope, nan:<module>, fp16:<Linear>, mask:<offset>, sleep:<ms>, "
              "slowdown:<fraction>, transient:<ms>:<generations>, leak:<MiB>, raise:<frame>, hang:<frame>, xversion:<rmsnorm|mimi>[:<relative>], "
              "decode_attn:<factor>, cache_path:<relative>, compiled:<relative>, op:<aten op>[:<relative>][@<shape>] or cast:<module>"),
    ("op:nosuchop", "fault op:nosuchop: torch has no aten operator 'nosuchop'"),
    ("op:silu:big", "fault op:silu:big: 'big' is not a number"),
    ("op:silu:0.02@1xa", "fault op:silu:0.02@1xa: the shape is the first input's, written AxBxC, e.g. @1x4x21x16"),
    ("sleep:fast", "fault sleep:fast: 'fast' is not a number"),
])
def test_bad_fault_spec_is_the_standard_setup_line(run_suite, pytester, spec, message):
    """A --csm-fault that cannot be read ends as every other setup error does: `ERROR:
    csm-conformance: ...` and exit 4, before any model loads (it was a pytest.exit once the model
    had loaded: `! _pytest.outcomes.Exit: csm-conformance: unknown fault ...`)."""
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-fault", spec)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 4, text[-2000:]
    assert [line for line in text.splitlines() if "csm-conformance:" in line and message[:20] in line] == \
        [f"ERROR: csm-conformance: {message}"], text[-2000:]
    assert "Exit" not in text and "loaded" not in text, text[-2000:]
