"""The simulated NPU lane (tests/simulated_npu) may prove the plumbing, never stand in for a real
device's numbers: the suite refuses to record bounds or golden references on it, and promote
refuses its timings. (.ci/run runs the lane's accuracy, eager performance and -n 2 commands.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.baseline_files import BaselineError
from csm_conformance.performance.baselines import promote

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--csm-record-bounds", "--csm-save-golden"])
def test_nothing_is_recorded_on_the_simulated_npu(tmp_path, flag):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CSM_")}, "PYTHONPATH": str(ROOT / "tests" / "simulated_npu")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "accuracy", "--csm-device", "npu",
                          "--csm-require-device", flag, f"--csm-baselines={tmp_path / 'b'}", f"--csm-output={tmp_path / 'o'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode == 4, text[-2000:]
    assert "refusing to record bounds or golden references on a simulated device" in text
    assert "Traceback" not in text and not (tmp_path / "b").exists()


def test_promote_refuses_a_simulated_device(tmp_path):
    run = {"benchmarks": [{"extra_info": {"mode": "eager"}}], "csm": {
        "model": {"key": "embedded-tiny-csm"}, "dtype": "bfloat16", "planted_faults": [], "results": [],
        "device": {"fingerprint": "npu|Simulated Ascend NPU (CPU stand-in, torch_npu simulation)|x8"}}}
    with pytest.raises(BaselineError, match="simulated device"):
        promote(run, tmp_path)
