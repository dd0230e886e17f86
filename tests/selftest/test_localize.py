"""The first-diverging-module localizer and the numeric planted faults it must find.

Three layers, fastest first: the jump rule on synthetic captures; the localizer run in-process on
the tiny model with one planted fault each (a float32 device model, whose clean outputs equal the
reference's exactly, so a fault far below bfloat16's rounding noise is still visible); and the real
suite through pytester on the CI configuration (bfloat16), where the gate must fail and its failure
message must name the module. Then the offline compare of --csm-dump dumps.

Measured on the tiny model, bfloat16 on the CPU, case short_en (the clean profile's largest module
error is 1.2e-2 relative, 1.40 x its running maximum): one MLP weight of backbone layer 0 perturbed
by 1e-3 changes nothing the gate or the localizer can see (98.8 % of the bfloat16 values round back
to the stored ones); 1e-2 fails the end-to-end gate on one metric only (worst-position cosine
0.9998961 against its bound 0.9999016) and its accumulated error does not stand out from bf16 noise
(largest jump 1.62, at the planted module), but on the reference's own inputs that MLP adds 1.11e-2
where it added 5.5e-3 clean (its backbone peers 1.7e-3 to 5.0e-3): the module_local check fails on
its bound (8.3e-3), and the localizer names it (its threshold is that stored bound; without stored
bounds, 2 x the median of its component). Clean, the largest local error is
1.67 x its component's median (multi_turn_ctx).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy import localize
from csm_conformance.faults import FaultError, apply_fault
from csm_conformance.suite.options import Settings
from csm_conformance.suite.session import ConformanceSession

pytestmark = pytest.mark.selftest
ROOT = Path(__file__).resolve().parents[2]

L0 = "backbone_model.layers.0"
ONLY_LOGITS = ["-k", "backbone_logits or depth_decoder_logits"]


# ---- the rule, on synthetic captures ---------------------------------------------------------
def _chain(errors: dict[str, float], seed: int = 0) -> tuple[dict, dict]:
    """A baseline capture and a candidate whose module `name` differs by relative error `e`."""
    generator = torch.Generator().manual_seed(seed)
    base, cand = {}, {}
    for name, e in errors.items():
        ref = torch.randn(4, 64, generator=generator)
        noise = torch.randn(4, 64, generator=generator)
        base[name] = ref
        cand[name] = ref + e * ref.norm() * noise / noise.norm()
    return base, cand


def test_rule_flags_the_module_that_jumps_not_the_ones_that_inherit():
    errors = {"embed_text_tokens": 1.7e-3, f"{L0}.self_attn": 6e-3, f"{L0}.mlp": 3.5e-2,
              "backbone_model.layers.1.self_attn": 3.6e-2, "lm_head": 3.4e-2}
    loc = localize.localize("synthetic", *_chain(errors), "bfloat16", "ref", "dev")
    assert loc.first.module == f"{L0}.mlp"
    assert [r.verdict for r in loc.rows] == ["ok", "ok", "FIRST", "ok", "ok"]
    assert loc.summary().startswith(f"first diverging module: {L0}.mlp (cosine 0.99")


def test_rule_tolerates_bf16_noise_and_restarts_per_component():
    noise = {"embed_text_tokens": 1.7e-3, f"{L0}.self_attn": 6.2e-3, f"{L0}.mlp": 8.3e-3,
             "backbone_model.layers.1.mlp": 1.2e-2, "lm_head": 8.2e-3,
             "depth_decoder.model.embed_tokens": 1.7e-3, "depth_decoder.model.layers.0.mlp": 9e-3}
    assert localize.localize("clean", *_chain(noise), "bfloat16", "ref", "dev").first is None
    # 2e-2 hides under 2 x the backbone's running max (1.2e-2), not under 2 x eps, the depth decoder's own floor
    jumped = {**noise, "depth_decoder.model.layers.0.mlp": 2e-2}
    assert localize.localize("depth", *_chain(jumped), "bfloat16", "ref", "dev").first.module == "depth_decoder.model.layers.0.mlp"
    # the same errors in float32 are far above its rounding: the first module already diverges
    assert localize.localize("fp32", *_chain(noise), "float32", "ref", "dev").first.module == "embed_text_tokens"


def test_local_rule_flags_the_module_that_adds_its_own_error():
    """Accumulated errors that never jump 2x, and local errors where one module adds 2.6x the
    median of its component: the local rule names it; without the local errors nobody is named."""
    errors = {"embed_text_tokens": 1.7e-3, f"{L0}.self_attn": 6e-3, f"{L0}.mlp": 1.2e-2,
              "backbone_model.layers.1.self_attn": 9e-3, "backbone_model.layers.1.mlp": 1.2e-2, "lm_head": 9.5e-3}
    local = {"embed_text_tokens": 1.7e-3, f"{L0}.self_attn": 4.3e-3, f"{L0}.mlp": 1.11e-2,
             "backbone_model.layers.1.self_attn": 4.6e-3, "backbone_model.layers.1.mlp": 5e-3, "lm_head": 2.9e-3}
    assert localize.localize("acc", *_chain(errors), "bfloat16", "ref", "dev").first is None
    loc = localize.localize("local", *_chain(errors), "bfloat16", "ref", "dev", local=local)
    assert (loc.first.module, loc.first.verdict) == (f"{L0}.mlp", "FIRST local")
    assert loc.first.local_threshold == pytest.approx(2 * (4.3e-3 + 4.6e-3) / 2)  # the median of six
    assert loc.summary().startswith(f"first diverging module: {L0}.mlp (on the reference's inputs it adds rel err 0.0111")
    clean = {**local, f"{L0}.mlp": 7e-3}  # 1.57x the median: bfloat16 noise
    loc = localize.localize("clean", *_chain(errors), "bfloat16", "ref", "dev", local=clean)
    assert loc.first is None and "largest local: backbone_model.layers.0.mlp, 1.57 x" in loc.summary()
    # the gate's stored per-module bounds, where there are some, are the thresholds instead
    loc = localize.localize("bounded", *_chain(errors), "bfloat16", "ref", "dev", local=clean, local_bounds={f"{L0}.mlp": 6.5e-3})
    assert (loc.first.module, loc.first.verdict, loc.first.local_threshold) == (f"{L0}.mlp", "FIRST local", 6.5e-3)
    assert loc.summary().endswith("over 0.0065 = its stored bound)") and "stored module_local bound" in loc.rule
    # an exact-match component (float32 against itself) flags any module that adds anything
    exact = dict.fromkeys(local, 0.0) | {"lm_head": 1e-6}
    assert localize.localize("fp32", *_chain(dict.fromkeys(errors, 0.0)), "float32", "ref", "dev", local=exact).first.module == "lm_head"


def test_rule_flags_nan_and_shape_changes():
    base, cand = _chain({f"{L0}.self_attn": 1e-3, f"{L0}.mlp": 1e-3, "lm_head": 1e-3})
    cand[f"{L0}.mlp"] = cand[f"{L0}.mlp"].clone()
    cand[f"{L0}.mlp"][0, 0] = float("nan")
    loc = localize.localize("nan", base, cand, "bfloat16", "ref", "dev")
    assert (loc.first.module, loc.first.verdict) == (f"{L0}.mlp", "nonfinite")
    assert "1 NaN/Inf values" in loc.summary()
    base, cand = _chain({f"{L0}.self_attn": 1e-3, "lm_head": 1e-3})
    cand["lm_head"] = cand["lm_head"][:, :32]
    loc = localize.localize("shape", base, cand, "bfloat16", "ref", "dev")
    assert (loc.first.module, loc.first.verdict) == ("lm_head", "shape")


# ---- in-process: one planted fault, the localizer names its module -----------------------------
CASES = ["short_en", "decode_2s"]


@pytest.fixture(scope="module")
def reference():
    session = ConformanceSession(Settings(csm_case=CASES, csm_dtype="float32"))
    session.load_models()
    return session.reference


def _session(reference, dtype: str, *fault_specs: str) -> ConformanceSession:
    session = ConformanceSession(Settings(csm_case=CASES, csm_dtype=dtype, csm_fault=list(fault_specs)))
    session.reference = reference
    session.load_target()
    return session


def _case(session, case_id):
    return next(c for c in session.catalogue.prompts + session.catalogue.codec if c.id == case_id)


@pytest.mark.parametrize("dtype,fault,case_id,module", [
    ("float32", f"weight:{L0}.mlp.down_proj.weight:1e-3", "short_en", f"{L0}.mlp"),
    ("float32", f"weight:{L0}.mlp.down_proj.weight:1e-2", "short_en", f"{L0}.mlp"),
    ("float32", f"fp16:{L0}.mlp.down_proj", "short_en", f"{L0}.mlp"),
    ("float32", "rope", "short_en", f"{L0}.self_attn"),
    ("float32", "mask:-1", "short_en", f"{L0}.self_attn"),
    ("float32", "weight:depth_decoder.model.layers.1.mlp.up_proj.weight:1e-3", "short_en", "depth_decoder.model.layers.1.mlp"),
    ("float32", "weight:codec_model.decoder.layers.3.block.1.conv.weight:1e-3", "decode_2s", "codec_model.decoder.layers.3"),
    ("bfloat16", "weight:backbone_model.layers.1.mlp.up_proj.weight:3e-2", "short_en", "backbone_model.layers.1.mlp"),
    ("bfloat16", f"weight:{L0}.mlp.down_proj.weight:1e-2", "short_en", f"{L0}.mlp"),
    ("bfloat16", "weight:depth_decoder.model.layers.1.self_attn.o_proj.weight:1e-2", "short_en", "depth_decoder.model.layers.1.self_attn"),
    ("bfloat16", "weight:codec_model.decoder.layers.3.block.1.conv.weight:1e-2", "decode_2s", "codec_model.decoder.layers.3"),
])
def test_localizer_names_the_planted_module(reference, dtype, fault, case_id, module):
    session = _session(reference, dtype, fault)
    loc, _ = localize.localize_case(session, _case(session, case_id))
    assert loc.first is not None and loc.first.module == module, "\n".join(loc.table())


def test_local_errors_are_exact_on_a_clean_float32_model_and_isolate_a_fault(reference):
    """Teacher forcing really feeds each device module the reference's inputs: on the CPU in
    float32 every module then reproduces the reference to within float32's eps (all bit for bit
    but one Mimi decoder conv, 1.4e-8: a different oneDNN path for a copied input), and a
    perturbed weight shows in its own module only."""
    clean = _session(reference, "float32")
    for case_id in CASES:
        errors = clean.module_local_errors(_case(clean, case_id))
        assert errors and max(errors.values()) < 1.2e-7, errors
    faulty = _session(reference, "float32", "weight:depth_decoder.model.layers.1.mlp.up_proj.weight:1e-4")
    errors = faulty.module_local_errors(_case(faulty, "short_en"))
    assert [m for m, e in errors.items() if e > 1.2e-7] == ["depth_decoder.model.layers.1.mlp"], errors
    assert 3e-5 < errors["depth_decoder.model.layers.1.mlp"] < 3e-4


def test_clean_float32_device_model_flags_nothing(reference):
    """(bfloat16's clean run is the pytester one below.)"""
    session = _session(reference, "float32")
    for case_id in CASES:
        loc, _ = localize.localize_case(session, _case(session, case_id))
        assert loc.first is None, "\n".join(loc.table())


def test_fault_notes_name_their_place_and_bad_specs_are_one_line(reference):
    session = _session(reference, "float32")
    model = session.target.model
    assert apply_fault(model, f"fp16:{L0}.self_attn.q_proj") == f"{L0}.self_attn.q_proj computes its matmul in float16 (forward hook)"
    assert "backbone_model.layers.*.self_attn" in apply_fault(model, "mask:1")
    for spec, needle in [("mask:0", "changes nothing"), ("mask:x", "whole number"), (f"fp16:{L0}.mlp", "is not a Linear"),
                         ("fp16:nope", "no such module")]:
        with pytest.raises(FaultError, match=needle) as info:
            apply_fault(model, spec)
        assert "\n" not in str(info.value)


# ---- the real suite on the CI configuration (bfloat16) -----------------------------------------
def test_clean_run_flags_nothing_and_writes_reports_and_dumps(run_suite, pytester):
    dump = pytester.path / "dump"
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-case", "decode_2s", "--csm-localize", "--csm-dump", str(dump),
                       "-k", "backbone_logits or depth_decoder_logits or mimi_decode")
    assert result.ret == 0, result.stdout.str()[-3000:]
    out = pytester.path / "output" / "localize"
    for case in ("short_en", "decode_2s"):
        table = (out / f"{case}.txt").read_text()
        assert table.rstrip().splitlines()[-1].startswith("first diverging module: none"), table
        assert (out / f"{case}.png").read_bytes()[:4] == b"\x89PNG"
        sidecar = json.loads((dump / case / "dump.json").read_text())
        device = sidecar["sides"]["device"]
        assert device["case"] == case and device["dtype"] == "bfloat16" and sidecar["sides"]["reference"]["dtype"] == "float32"
        assert {"torch", "transformers"} <= set(device["versions"]) and device["model"]["weights_digest"]
    modules = [m["name"] for m in json.loads((dump / "short_en" / "dump.json").read_text())["sides"]["device"]["modules"]]
    assert modules[:3] == ["embed_text_tokens", f"{L0}.self_attn", f"{L0}.mlp"] and modules[-1] == "depth_decoder.codebooks_head"
    # the offline compare of the dump's two sides reaches the live verdict
    assert localize.main(["compare", str(dump / "short_en" / "reference.safetensors"), str(dump / "short_en" / "device.safetensors")]) == 0


@pytest.mark.parametrize("fault,named", [  # rope's gate failure is test_gate's; its place is named above
    (f"weight:{L0}.mlp.down_proj.weight:1e-2", f"first diverging module: {L0}.mlp (on the reference's inputs it adds rel err 0.0111"),
    ("mask:1", f"first diverging module: {L0}.self_attn (cosine"),
    ("nan:backbone_model.layers.1.mlp", "first diverging module: backbone_model.layers.1.mlp (1 NaN/Inf values"),
])
def test_gate_fails_and_names_the_first_diverging_module(run_suite, pytester, fault, named):
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-fault", fault, *ONLY_LOGITS)
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert any(line.startswith("FAILED") and "test_backbone_logits[short_en]" in line for line in result.stdout.lines)
    assert named in result.stdout.str(), result.stdout.str()[-3000:]
    assert named in (pytester.path / "output" / "localize" / "short_en.txt").read_text()


def test_module_local_check_fails_on_a_one_percent_weight_error_in_bfloat16(run_suite, pytester):
    """The gate itself (not only the diagnostic) catches what the end-to-end logits barely see,
    and its first line is the place."""
    result = run_suite(pytester, "--csm-case", "short_en", "--csm-fault", f"weight:{L0}.mlp.down_proj.weight:1e-2", "-k", "module_local")
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert any(line.startswith("FAILED") and "test_module_local_error[short_en]" in line for line in result.stdout.lines)
    assert (f"short_en/module_local: first module over its local bound: {L0}.mlp (adds rel err 0.0111 on the reference's "
            "inputs, bound 0.00825; 1 of 15 modules over)") in result.stdout.str(), result.stdout.str()[-3000:]


def test_module_local_bound_for_a_module_that_did_not_run_fails(run_suite, pytester):
    """A stored bound nobody measured (a module renamed or removed by an upgrade) would pass by
    never being looked at: it fails, naming the module."""
    import shutil

    baselines = pytester.path / "baselines"
    shutil.copytree(ROOT / "baselines", baselines)
    path = baselines / "accuracy" / "embedded-tiny-csm" / "cpu-bfloat16.json"
    doc = json.loads(path.read_text())
    doc["cases"]["short_en"]["module_local"]["rel_error@backbone_model.layers.7.mlp"] = {"measured": 5e-3, "bound": 7.5e-3}
    path.write_text(json.dumps(doc))
    result = run_suite(pytester, "--csm-case", "short_en", "-k", "module_local", baselines=baselines)
    assert result.ret == 1, result.stdout.str()[-3000:]
    assert ("1 module(s) with a stored bound did not run: backbone_model.layers.7.mlp (module renamed or removed?)"
            in result.stdout.str()), result.stdout.str()[-3000:]


# ---- offline compare of dumps ------------------------------------------------------------------
@pytest.fixture(scope="module")
def dumps(reference, tmp_path_factory):
    """short_en dumps of two separate clean bfloat16 device models and of one with a planted fault."""
    root = tmp_path_factory.mktemp("dumps")
    for name, specs, cases in (("clean_a", (), CASES), ("clean_b", (), ["short_en"]),
                               ("faulty", (f"weight:{L0}.mlp.down_proj.weight:3e-2",), ["short_en"])):
        session = _session(reference, "bfloat16", *specs)
        for case_id in cases:
            localize.save_dump(root / name / case_id, localize.localize_case(session, _case(session, case_id))[1])
    return root


def test_compare_two_clean_dumps_passes(dumps, capsys):
    assert localize.main(["compare", str(dumps / "clean_a" / "short_en"), str(dumps / "clean_b" / "short_en")]) == 0
    assert "first diverging module: none (every module's output is identical)" in capsys.readouterr().out


def test_compare_faulty_dump_fails_naming_the_module(dumps, tmp_path, capsys):
    code = localize.main(["compare", str(dumps / "clean_a" / "short_en"), str(dumps / "faulty" / "short_en"), "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"first diverging module: {L0}.mlp (cosine" in out
    assert "B planted fault: weight" in out
    assert json.loads((tmp_path / "compare.json").read_text())["first_diverging"] == f"{L0}.mlp"
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_corrupt_dump_is_one_line_exit_2(dumps, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "device.safetensors").write_bytes(b"\x00\x01 not a dump")
    result = subprocess.run([sys.executable, "-m", "csm_conformance", "localize", "compare", str(dumps / "clean_a" / "short_en"), str(corrupt)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a readable safetensors dump" in lines[0], result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("b,needle", [
    ("clean_a/decode_2s", "different cases: short_en vs decode_2s"),
    ("nowhere", "does not exist"),
    ("plain", "has no 'csm_localize' metadata"),
])
def test_compare_bad_input_is_one_line_exit_2(dumps, tmp_path, capsys, b, needle):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    target = tmp_path / "plain.safetensors" if b == "plain" else dumps / b
    assert localize.main(["compare", str(dumps / "clean_a" / "short_en"), str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
