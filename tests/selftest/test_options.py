"""Option parsing: precedence, conversions, and one-line errors."""

import pytest

from csm_conformance.runtime import devices, models
from csm_conformance.suite.options import OptionError, settings_from

pytestmark = pytest.mark.selftest


def test_defaults():
    s = settings_from({}, environ={})
    assert (s.csm_model, s.csm_device, s.csm_dtype, s.csm_strict) == ("tiny", "auto", "bfloat16", False)
    assert s.csm_min_cosine == 0.9999


def test_precedence_cli_over_env_over_ini():
    ini = {"csm_dtype": "float16", "csm_min_cosine": "0.999"}
    assert settings_from({}, environ={}, ini=ini).csm_dtype == "float16"
    assert settings_from({}, environ={"CSM_DTYPE": "float32"}, ini=ini).csm_dtype == "float32"
    assert settings_from({"csm_dtype": "bfloat16"}, environ={"CSM_DTYPE": "float32"}, ini=ini).csm_dtype == "bfloat16"
    assert settings_from({}, environ={}, ini=ini).csm_min_cosine == 0.999


def test_tolerances_stack_key_by_key_over_the_ini():
    """A user who loosens one figure keeps the rest of pytest.ini's CPU tolerances; replaced
    wholesale, cpu.time fell back to the 5 % default and a clean CPU run failed."""
    from csm_conformance.performance.baselines import parse_tolerances, tolerance_for

    ini = {"csm_perf_tolerance": "time=5%, cpu.time=30%, cpu.memory=10%+16MiB"}
    s = settings_from({"csm_perf_tolerance": ["cpu.prefill_ms=50%"]}, environ={"CSM_PERF_TOLERANCE": "cpu.memory=20%"}, ini=ini)
    tolerances = parse_tolerances(s.csm_perf_tolerance)
    assert tolerance_for(tolerances, "cpu", "time", "prefill_ms") == (0.5, 0.0)
    assert tolerance_for(tolerances, "cpu", "time", "frame_ms_median") == (0.3, 0.0)  # from the ini
    assert tolerance_for(tolerances, "cpu", "memory") == (0.2, 0.0)  # the environment over the ini
    assert tolerance_for(tolerances, "cuda", "load") == (0.25, 0.0)  # the built-in default
    again = parse_tolerances(settings_from({"csm_perf_tolerance": ["cpu.time=100%"]}, environ={}, ini=ini).csm_perf_tolerance)
    assert tolerance_for(again, "cpu", "time", "rtf") == (1.0, 0.0)  # the command line over the ini, same key


def test_env_bools_lists_and_numbers():
    s = settings_from({}, environ={"CSM_STRICT": "yes", "CSM_CASE": "short_en, chinese", "CSM_BOUND_MARGIN": "0.25"})
    assert s.csm_strict is True and s.csm_case == ["short_en", "chinese"] and s.csm_bound_margin == 0.25


@pytest.mark.parametrize("env,match", [
    ({"CSM_STRICT": "maybe"}, "true/false"),
    ({"CSM_MIN_COSINE": "high"}, "number"),
    ({"CSM_MIN_COSINE": "1.5"}, r"\(0, 1\]"),
    ({"CSM_BOUND_MARGIN": "-1"}, ">= 0"),
    ({"CSM_HOST_REFERENCE": "sometimes"}, "auto, on or off"),
])
def test_bad_values_are_one_line_errors(env, match):
    with pytest.raises(OptionError, match=match) as err:
        settings_from({}, environ=env)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,match", [("gpu", "unknown device"), ("cuda:x", "bad device index")])
def test_bad_device_specs(spec, match):
    with pytest.raises(devices.DeviceError, match=match):
        devices.parse_spec(spec)


def test_missing_accelerator_is_an_error_not_a_cpu_fallback():
    with pytest.raises(devices.DeviceError, match="no cuda device is available"):
        devices.resolve("cuda") if not devices._available("cuda") else pytest.skip("this machine has CUDA")


def test_cpu_resolves_and_dtypes_parse():
    info = devices.resolve("cpu")
    assert info.device == "cpu" and info.type == "cpu"
    assert models.parse_dtype("bf16") is models.DTYPES["bfloat16"]
    with pytest.raises(models.ModelError, match="unknown dtype"):
        models.parse_dtype("int4")


@pytest.mark.parametrize("setup,match", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "no config.json"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "llama"}'), p)[2], "not 'csm'"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{oops"), p)[2], "not valid JSON"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "csm"}'), p)[2], "no weight files"),
])
def test_bad_model_directories(tmp_path, setup, match):
    path = setup(tmp_path / "model")
    with pytest.raises(models.ModelError, match=match):
        models.ModelSource(str(path))


def test_model_key_names_baselines_and_reports_alike(tmp_path):
    snapshot = tmp_path / "models--sesame--csm-1b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "csm"}')
    (snapshot / "model.safetensors").write_bytes(b"")
    assert models.ModelSource(str(snapshot)).key == "sesame--csm-1b"
    assert models.ModelSource("sesame/csm-1b").key == "sesame--csm-1b"
    assert models.ModelSource("tiny").key == "embedded-tiny-csm"
    assert models.ModelSource("random-full").key == "random-full-csm-1b"


# pytest.ini values that deliberately differ from the option's default, and why.
INI_OVERRIDES = {"csm_perf_tolerance": "adds the CPU tolerances for shared CI machines"}


def test_one_default_per_option_and_ini_and_option_reference_agree():
    """The option table is the only source of a default: Settings is derived from it, pytest.ini
    may only restate a default (or override it on purpose, listed above), and the option reference
    (docs/options.md, which the README links to) names every option and its environment twin."""
    import configparser
    from dataclasses import fields
    from pathlib import Path

    from csm_conformance.suite.options import OPTIONS, Settings, _convert

    root = Path(__file__).resolve().parents[2]
    assert [f.name for f in fields(Settings)] == [o.dest for o in OPTIONS]
    assert all(getattr(Settings(), o.dest) == o.default for o in OPTIONS)
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(root / "pytest.ini")
    by_dest = {o.dest: o for o in OPTIONS}
    for key, raw in ini["pytest"].items():
        if not key.startswith("csm_"):
            continue
        assert key in by_dest, f"pytest.ini sets {key}, which is no option"
        if key not in INI_OVERRIDES:
            assert _convert(by_dest[key], raw, key) == by_dest[key].default, f"pytest.ini {key} = {raw} drifted from its default"
    reference = (root / "docs" / "options.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in reference, f"docs/options.md lacks {opt.flag}"
        assert f"`{opt.env}`" in reference, f"docs/options.md lacks {opt.env}"
    assert "](docs/options.md)" in (root / "README.md").read_text(), "README does not link docs/options.md"
