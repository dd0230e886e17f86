"""Self-test collection and the helpers the self-tests share, as fixtures.

`slow` tests (random-full, minutes on a CPU) run only when asked for with `-m slow` (or any -m
expression that names it), so the default self-test run fits CI's budget. `run_suite` runs the
real conformance tests in a scratch directory, `one_line_error` asserts a run ended on one line,
`baselines_copy` is a writable copy of the committed baselines.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each self-test worker takes its share of the cores for torch, by the
    plugin's rule (plugin/hooks.py: _share_the_cores), and hands it through OMP_NUM_THREADS to every
    suite run it starts: those are plain pytest processes, not xdist workers, and would otherwise
    spin one thread per core against the other worker's."""
    from csm_conformance.plugin.hooks import _share_the_cores

    share = _share_the_cores(int(getattr(config, "workerinput", {}).get("workercount", 1)))
    if share:
        os.environ["OMP_NUM_THREADS"] = str(share)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def _run_suite(pytester: pytest.Pytester, *args: str, baselines: Path | None = None, marker: str = "accuracy") -> pytest.RunResult:
    """The real conformance tests (the accuracy ones unless told), with the repo's pytest.ini and
    conftest, in a scratch cwd."""
    extra = ["--csm-baselines", str(baselines)] if baselines else []
    extra += ["-m", marker] if marker else []
    return pytester.runpytest_subprocess(
        str(ROOT / "tests" / "conformance"), "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT),
        "-p", "no:cacheprovider", "-p", "no:randomly", "--csm-output", str(pytester.path / "output"),
        *extra, *args,
    )


def _one_line_error(result: pytest.RunResult, needle: str) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert result.ret not in (0, 1), f"expected a setup error, got exit {result.ret}"
    assert needle in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(autouse=True)
def no_kernel_fault_left_behind():
    """A planted kernel fault (op:..., faults/op_kernel.py) is a dispatch mode of the whole process:
    a test that leaves one behind fails, and the fault is removed so the next test runs clean (one
    left by the fault catalogue's well-formedness test once failed four localizer tests on the same
    xdist worker)."""
    yield
    from csm_conformance.faults import op_kernel

    if op_kernel.remove_planted():
        pytest.fail("this test left a kernel fault planted in the process (faults/op_kernel.py: call remove_planted())")


@pytest.fixture
def baselines_copy(tmp_path):
    target = tmp_path / "baselines"
    shutil.copytree(ROOT / "baselines", target)
    return target


@pytest.fixture
def run_suite(monkeypatch):
    """The real conformance tests, run as a user runs them (see _run_suite). Without this self-test
    run's PYTEST_XDIST_* variables: under -n a child would inherit them, and pytest-benchmark
    disables its benchmarks when it sees them."""
    for name in [k for k in os.environ if k.startswith("PYTEST_XDIST_")]:
        monkeypatch.delenv(name)
    # the decode-loop check in eager mode only unless a test asks for compiled (--csm-decode-modes):
    # every run would otherwise compile the model (10-40 s on the CI machine); the main job runs both
    monkeypatch.setenv("CSM_DECODE_MODES", "eager")
    return _run_suite


@pytest.fixture
def one_line_error():
    """Assert a run ended with a one-line error naming `needle`, no traceback (see _one_line_error)."""
    return _one_line_error


# The embedded model (CPU float32) and the short_en case, for the decode-loop self-tests; one model per
# module, since some tests plant faults in it.
@pytest.fixture(scope="module")
def tiny():
    import torch

    from csm_conformance.runtime import models

    return models.ModelSource("tiny").load("cpu", torch.float32)


@pytest.fixture(scope="module")
def short_en():
    from csm_conformance.catalogue.cases import load_catalogue

    return load_catalogue().select(["short_en"]).prompts[0]
