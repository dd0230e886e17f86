"""The documented commands as a user types them: `--csm-* DIR` in the space form with DIR outside
the repository, `--opt=VALUE` alike, from the repository root and from elsewhere.

pytest picks its root from the positional arguments before it loads plugins, so without the
plugin's re-rooting `pytest --csm-model /data/csm-1b` took the directory for a test path and
stopped with "unrecognized arguments". These run pytest as a subprocess, the way a shell does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.runtime import tiny_model

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["-m", "accuracy", "--csm-case", "short_en", "-k", "backbone or load_integrity", "-p", "no:cacheprovider"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint directory and a baselines directory outside the repository."""
    root = tmp_path_factory.mktemp("elsewhere")
    model = root / "my-csm"
    shutil.copytree(tiny_model.CHECKPOINT_DIR, model)
    baselines = root / "my-baselines"
    shutil.copytree(ROOT / "baselines", baselines)
    return {"root": root, "model": model, "baselines": baselines}


def pytest_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSM_", "PYTEST_"))}
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("form", ["space", "equals"])
def test_model_directory_outside_the_repository(outside, tmp_path, form):
    model = str(outside["model"])
    opt = ["--csm-model", model] if form == "space" else [f"--csm-model={model}"]
    run = pytest_cli(*opt, f"--csm-output={tmp_path / 'out'}", *QUICK, cwd=ROOT)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert f"rootdir: {ROOT}" in text and "configfile: pytest.ini" in text, text[:2000]
    assert "csm-conformance: loaded my-csm | weights sha256:" in text
    assert "2 passed" in text  # the conformance tests only: no self-tests collected from the repository


@pytest.mark.parametrize("form", ["space", "equals"])
def test_baselines_directory_outside_the_repository_is_read(outside, tmp_path, form):
    """--csm-strict fails on any missing bound, so a pass shows the bounds were read from there."""
    baselines = str(outside["baselines"])
    opt = ["--csm-baselines", baselines] if form == "space" else [f"--csm-baselines={baselines}"]
    run = pytest_cli(*opt, "--csm-strict", f"--csm-output={tmp_path / 'out'}", *QUICK, cwd=ROOT)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert f"rootdir: {ROOT}" in text
    assert str(outside["baselines"]) in text  # the summary names the bounds file it used


def test_from_outside_the_repository(outside, tmp_path):
    """From another directory, naming the tests, with every DIR option in the space form."""
    run = pytest_cli(str(ROOT / "tests" / "conformance"), "--csm-baselines", str(outside["baselines"]),
                     "--csm-output", str(tmp_path / "out"), "--csm-strict", *QUICK, cwd=outside["root"])
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert (tmp_path / "out" / "accuracy_evaluation.json").exists()


def test_a_stray_value_is_still_an_error(tmp_path):
    """Re-rooting must not hide a real mistake: an option missing its value is pytest's usual error."""
    run = pytest_cli("--csm-model", cwd=ROOT)
    assert run.returncode == 4 and "expected one argument" in run.stderr, run.stderr[-2000:]


VERBS = ["ab", "ab-planted", "verdict", "localize", "fault-catalogue", "promote", "first-run", "stack-range", "baselines-diff", "inference", "ops"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("csm-conformance")  # installed beside the interpreter by `pip install -e .`


@pytest.mark.parametrize("form", ["console script", "python -m"])
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_answers_help_from_elsewhere(verb, form, tmp_path):
    """`csm-conformance <verb> --help` and `python -m csm_conformance <verb> --help` from outside the
    repository: the tool's own help under the verb's name, then the verb's worked examples. The A/B
    tool's help once died on an unescaped '%' in argparse (its tolerances: time=5%)."""
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} is missing: reinstall the package (pip install -e .)"
    command = [str(CONSOLE_SCRIPT)] if form == "console script" else [sys.executable, "-m", "csm_conformance"]
    done = subprocess.run([*command, verb, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: csm-conformance {verb} "), done.stdout[:500]
    assert "\nexamples:\n  " in done.stdout and f"csm-conformance {verb}" in done.stdout.split("\nexamples:\n")[1], done.stdout[-1500:]
