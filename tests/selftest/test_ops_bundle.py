"""Repro bundles (accuracy/ops/bundle.py): a repro.py that stands alone and judges its call as the suite did.

On the embedded tiny model in bfloat16 on the CPU, case short_en: a silu kernel planted 2 % off is
past its standard (x2.7) in the suite and in its bundle's repro.py run under the same fault (the
fault's sitecustomize.py on PYTHONPATH), and within it (x0.26) without the fault: the bundle carries
the inputs and the standard, not the fault. Every repro.py runs in a fresh interpreter from a cwd
outside the repository, without the repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csm_conformance.accuracy.ops.bundle import write_bundles
from csm_conformance.accuracy.ops.run import case_ops
from csm_conformance.faults import op_kernel

pytestmark = pytest.mark.selftest


@pytest.fixture(scope="module")
def tiny_bf16():
    from csm_conformance.runtime import models

    return models.ModelSource("tiny").load("cpu", torch.bfloat16)


@pytest.fixture(scope="module")
def clean(tiny_bf16, short_en, tmp_path_factory):
    """(CaseOps, ops_dir, {rank: repro.py}) of a clean run, its first three calls bundled after a folder already there."""
    result = case_ops(tiny_bf16, short_en)
    ops_dir = tmp_path_factory.mktemp("ops")
    (ops_dir / "7-other").mkdir()
    return result, ops_dir, write_bundles(ops_dir, result, which="all", limit=3)


def _repro(script: Path, cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """repro.py in a fresh interpreter, outside the repository: PYTHONPATH only `pythonpath`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _verdict(run: subprocess.CompletedProcess) -> str:
    return run.stdout.strip().splitlines()[-1]


def test_planted_fault_is_past_its_standard_with_the_fault_and_within_it_without(tiny_bf16, short_en, tmp_path):
    env_dir = op_kernel.environment(tmp_path / "env", "silu", 0.02).parent
    fault = op_kernel.plant("silu", 0.02, torch.bfloat16)
    try:
        result = case_ops(tiny_bf16, short_en)
    finally:
        fault.__exit__(None, None, None)  # plant() enters the mode for good
    past = [rank for rank, judged in enumerate(result.ranked, 1) if judged.past]
    assert past and all(result.ranked[rank - 1].call.op == "aten.silu.default" for rank in past)
    repros = write_bundles(tmp_path / "ops", result)
    assert repros == {rank: f"{rank}-silu/repro.py" for rank in past[:10]}  # the past rows lead the ranking
    first, suite = tmp_path / "ops" / repros[1], result.ranked[0]
    assert {p.name for p in first.parent.iterdir()} == {"repro.py", "inputs.safetensors", "call.json"}

    faulty = _repro(first, tmp_path, pythonpath=env_dir)
    assert faulty.returncode == 1, faulty.stdout + faulty.stderr
    assert _verdict(faulty) == f"PAST ITS STANDARD (x{suite.excess:.2f})", faulty.stdout
    header = faulty.stdout.splitlines()[0]
    assert header.startswith(f"aten.silu.default at {suite.call.module} ({suite.call.phase}); shapes ") and "torch " in header, header

    fixed = _repro(first, tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _verdict(fixed).startswith("within its standard (x"), fixed.stdout


def test_clean_bundles_are_within_their_standard_as_in_the_suite(clean, tmp_path):
    result, ops_dir, repros = clean
    assert not result.past
    assert repros == {rank: f"{7 + rank}-{result.ranked[rank - 1].call.op.split('.')[1]}/repro.py" for rank in (1, 2, 3)}
    for rank, path in repros.items():
        run = _repro(ops_dir / path, tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert _verdict(run) == f"within its standard (x{result.ranked[rank - 1].excess:.2f})", run.stdout


def test_repro_needs_neither_the_suite_nor_transformers(clean, tmp_path):
    _result, ops_dir, repros = clean
    code = ("import importlib.abc, runpy, sys\n"
            "class Refuse(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('csm_conformance', 'transformers'):\n"
            "            raise ImportError('refused: ' + name)\n"
            "sys.meta_path.insert(0, Refuse())\n"
            "sys.argv = [sys.argv[1]]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('EXIT', code, sorted(m for m in sys.modules if m.split('.')[0] in ('csm_conformance', 'transformers')))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code, str(ops_dir / repros[1])], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert _verdict(run) == "EXIT 0 []", run.stdout + run.stderr


@pytest.mark.parametrize("device", ["cuda", "npu:0"])
def test_a_device_that_is_not_there_is_one_line_and_exit_2(clean, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _result, ops_dir, repros = clean
    run = _repro(ops_dir / repros[1], tmp_path, "--device", device)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and f"device {device!r} is not available" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_a_non_contiguous_input_is_laid_out_again_and_judged_as_in_the_suite(clean, tmp_path):
    """The suite replays a call with its inputs' recorded strides; the bundle saves them contiguous
    and lays them out again, so a kernel path chosen by layout runs in the repro too."""
    from csm_conformance.accuracy.ops.bundle import write_bundle

    result, _, _ = clean
    judged = next(j for j in result.ranked if any(isinstance(a, torch.Tensor) and not a.is_contiguous() for a in j.call.args))
    script = write_bundle(tmp_path / "1-call", judged.call, "cpu", judged.result)
    assert '"strides": {' in script.read_text() and '"strides": {}' not in script.read_text()
    run = _repro(script, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    measured = next(line for line in run.stdout.splitlines() if line.strip().startswith("excess"))
    assert f"{judged.excess:.3g} x its standard (the suite measured {judged.excess:.3g}" in measured, measured
