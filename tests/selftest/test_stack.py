"""The stack preflight (runtime/preflight.py) and the stack fingerprint in the reports (runtime/stack.py).

The broken environments are built, not mocked: transformers 4.52.4 installed over this venv's 5.25.0
(`pip install --no-deps --target`, one wheel from PyPI, kept in ~/.cache/csm-conformance-selftest),
and a `kernels` that raises on import, both put first on PYTHONPATH of a real suite run. The run
must end on one `ERROR: csm-conformance:` line (exit 4) that names the packages and what to do,
with no error per test. The conflict finder and the traceback-to-distribution mapping are unit
tested on fabricated stacks and on a package written for the test.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.reports.schema import ReportSchemaError, validate
from csm_conformance.runtime import preflight, stack
from csm_conformance.runtime.preflight import Installed

pytestmark = pytest.mark.selftest
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "csm-conformance-selftest"
OLD_TRANSFORMERS = "4.52.4"
# what kernels 0.19.1 says when the huggingface_hub it meets is not the one it was built for
KERNELS_MESSAGE = "cannot import name 'HfFileSystemResolvedPath' from 'huggingface_hub.hf_file_system'"


# ---- building the broken environments -------------------------------------------------------------
@pytest.fixture(scope="session")
def downgraded() -> Path:
    """transformers 4.52.4 alone (--no-deps), as `pip install transformers==4.52.4 --no-deps` over
    5.25.0 leaves it: kernels 0.19.1 and huggingface_hub 2.4.0 stay. Downloaded once; a failed
    download fails the test (no skip). Installed beside the cache and renamed into it, so two
    pytest-xdist workers never see half a directory."""
    target = CACHE / f"transformers-{OLD_TRANSFORMERS}"
    if not (target / f"transformers-{OLD_TRANSFORMERS}.dist-info" / "METADATA").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        work = CACHE / f".install-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(work),
                               f"transformers=={OLD_TRANSFORMERS}"], capture_output=True, text=True)
        assert done.returncode == 0, f"could not install transformers {OLD_TRANSFORMERS} from PyPI: {done.stderr[-2000:]}"
        try:
            work.rename(target)
        except OSError:  # another worker was first
            shutil.rmtree(work, ignore_errors=True)
    return target


def _broken_kernels(root: Path, version: str) -> Path:
    """A `kernels` distribution of the given version whose import raises what a kernels built for
    another huggingface_hub raises."""
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "__init__.py").write_text(f"raise ImportError({KERNELS_MESSAGE!r})\n")
    info = root / f"kernels-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kernels\nVersion: {version}\n")
    (info / "RECORD").write_text(f"kernels/__init__.py,,\nkernels-{version}.dist-info/METADATA,,\n")
    return root


def _run_suite_with(pythonpath: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The suite as a user runs it, from a scratch directory, with `pythonpath` first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "conformance"), "-m", "accuracy",
                           "--csm-case", "short_en", "-p", "no:cacheprovider", "--csm-output", str(cwd / "output"), *args],
                          capture_output=True, text=True, cwd=cwd, env=env)


def _the_one_line(result: subprocess.CompletedProcess) -> str:
    """The run's one error line; asserts it ended at setup, with no test run and no traceback."""
    text = result.stdout + result.stderr
    assert result.returncode == 4, f"exit {result.returncode}: {text[-3000:]}"
    lines = [line for line in text.splitlines() if line.startswith("ERROR: csm-conformance:")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text and "ERROR tests/" not in text and " error" not in text.lower().replace(lines[0].lower(), ""), text[-3000:]
    return lines[0]


# ---- the preflight on real broken environments -----------------------------------------------------
def test_in_place_downgrade_ends_on_one_line_naming_the_packages(downgraded, tmp_path):
    line = _the_one_line(_run_suite_with(downgraded, tmp_path))
    hub, kernels = md.version("huggingface-hub"), md.version("kernels")
    assert line.startswith("ERROR: csm-conformance: the installed stack is inconsistent: "
                           f"transformers {OLD_TRANSFORMERS} requires huggingface-hub<1.0,>=0.30.0, but {hub} is installed "
                           f"(kernels {kernels}, which nothing else installed requires, needs huggingface-hub>="), line
    assert f"transformers {OLD_TRANSFORMERS} requires requests, which is not installed" in line
    assert line.endswith(f"pip install 'transformers=={OLD_TRANSFORMERS}' {preflight.suite_spec()}, "
                         "and pip uninstall kernels (nothing else installed requires it)"), line


def test_a_package_transformers_cannot_import_is_named(tmp_path):
    """transformers 5.25.0 imports kernels on the way to its CSM classes (activations.py ->
    integrations/hub_kernels.py) when a kernels it accepts is installed: one that raises there."""
    tf = md.distribution("transformers")
    wanted = [r for r in stack.requirements_of(tf) if stack.canonical(r.name) == "kernels"]
    assert wanted, f"transformers {tf.version} does not declare kernels: this test needs the 5.x line that does"
    version = md.version("kernels")  # the installed one's version: the stack stays consistent, only its code is broken
    shadow = _broken_kernels(tmp_path / "shadow", version)
    (tmp_path / "run").mkdir()
    line = _the_one_line(_run_suite_with(shadow, tmp_path / "run"))
    assert line.startswith(f"ERROR: csm-conformance: transformers {tf.version} cannot import its CSM classes: "
                           f"kernels {version} raised ImportError: {KERNELS_MESSAGE}; "), line
    assert line.endswith(f"pip install --force-reinstall 'transformers=={tf.version}' 'kernels{wanted[0].specifier}'"), line


def test_the_clean_venv_passes_the_preflight():
    preflight.check_consistency()
    preflight.check_imports()


# ---- the conflict finder on fabricated stacks ------------------------------------------------------
DOWNGRADED = {  # pip install transformers==4.52.4 over 5.25.0, as pip resolves it: the hub goes back, kernels stays
    "torch": Installed("2.13.0+cpu", ("filelock",)),
    "filelock": Installed("3.20.0"),
    "transformers": Installed("4.52.4", ("huggingface-hub<1.0,>=0.30.0", "tokenizers<0.22,>=0.21", "filelock")),
    "huggingface-hub": Installed("0.36.0", ("filelock",)),
    "tokenizers": Installed("0.21.4", ("huggingface-hub<2.0,>=0.16.4",)),
    "kernels": Installed("0.19.1", ("huggingface-hub>=1.32.0",)),
    "csm-conformance": Installed("0.1.0", ("torch>=2.6", "transformers>=4.52.1,!=4.52.0")),
}


def test_conflict_finder_names_the_leftover_and_what_to_do():
    conflicts = preflight.find_conflicts(DOWNGRADED)
    assert [c.text() for c in conflicts] == ["kernels 0.19.1 requires huggingface-hub>=1.32.0, but 0.36.0 is installed"]
    assert preflight.leftovers(DOWNGRADED) == {"kernels"}
    assert preflight.conflict_message(DOWNGRADED, conflicts, "-e /suite") == (
        "the installed stack is inconsistent: kernels 0.19.1 requires huggingface-hub>=1.32.0, but 0.36.0 is installed "
        "(tokenizers 0.21.4 needs huggingface-hub<2.0,>=0.16.4; transformers 4.52.4 needs huggingface-hub<1.0,>=0.30.0); "
        "pip uninstall kernels (nothing else installed requires it), or build a fresh venv")


def test_conflict_finder_names_missing_and_wrong_versions_and_why_they_are_installed():
    stack_ = dict(DOWNGRADED, **{"huggingface-hub": Installed("2.4.0"), "transformers": Installed("4.52.4", (
        "huggingface-hub<1.0,>=0.30.0", "requests", "tokenizers<0.22,>=0.21"))})
    message = preflight.conflict_message(stack_, preflight.find_conflicts(stack_), "csm-conformance")
    assert message == (
        "the installed stack is inconsistent: tokenizers 0.21.4 requires huggingface-hub<2.0,>=0.16.4, but 2.4.0 is installed "
        "(kernels 0.19.1, which nothing else installed requires, needs huggingface-hub>=1.32.0); "
        "transformers 4.52.4 requires huggingface-hub<1.0,>=0.30.0, but 2.4.0 is installed "
        "(kernels 0.19.1, which nothing else installed requires, needs huggingface-hub>=1.32.0); "
        "transformers 4.52.4 requires requests, which is not installed; resolve the suite and its pins in one pip call "
        "or a fresh venv: pip install 'tokenizers==0.21.4' 'transformers==4.52.4' csm-conformance, "
        "and pip uninstall kernels (nothing else installed requires it)")


@pytest.mark.parametrize("installed,requirement", [
    ("2.14.0rc1", "torch>=2.6"),  # a pre-release satisfies a plain lower bound, as pip check says
    ("2.13.0+cpu", "torch==2.13.0"),  # a local build label matches the public version
])
def test_conflict_finder_reads_versions_as_pip_does(installed, requirement):
    assert preflight.find_conflicts({"torch": Installed(installed), "torch-npu": Installed("2.13.0", (requirement,))}) == []


def test_a_consistent_stack_has_no_conflicts_and_no_leftovers():
    fixed = {name: dist for name, dist in DOWNGRADED.items() if name != "kernels"}
    assert preflight.find_conflicts(fixed) == [] and preflight.leftovers(fixed) == set()


# ---- the traceback's owner ---------------------------------------------------------------------------
@pytest.fixture
def broken_package(tmp_path, monkeypatch):
    """`thirdparty` 1.2.3, installed in a directory on sys.path, whose `boom()` raises."""
    (tmp_path / "thirdparty").mkdir()
    (tmp_path / "thirdparty" / "__init__.py").write_text("def boom():\n    raise ValueError('deep problem\\nsecond line')\n")
    info = tmp_path / "thirdparty-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.2.3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import thirdparty

    yield thirdparty
    sys.modules.pop("thirdparty", None)


def test_owner_maps_a_file_to_its_distribution(broken_package):
    import json as stdlib_module

    import transformers

    assert preflight.owner(transformers.__file__) == ("transformers", md.version("transformers"))
    assert preflight.owner(broken_package.__file__) == ("thirdparty", "1.2.3")
    assert preflight.owner(stdlib_module.__file__) is None
    assert preflight.owner("<frozen importlib._bootstrap>") is None


@pytest.mark.parametrize("wrap", ["cause", "context"])
def test_the_real_error_is_found_under_transformers_wrapper(broken_package, wrap):
    """transformers' lazy import re-raises a model module's error as 'Failed to import ...' (raise
    from, older releases; or inside the except, a __context__): the line must name the real one."""
    try:
        try:
            broken_package.boom()
        except ValueError as err:
            wrapper = RuntimeError("Failed to import transformers.models.csm.modeling_csm because of the following error "
                                   "(look up to see its traceback):\ndeep problem")
            if wrap == "cause":
                raise wrapper from err
            raise wrapper  # noqa: B904 (the __context__ chain is what is tested)
    except RuntimeError as exc:
        caught = exc
    who, err = preflight.raised_by(caught)
    assert who == ("thirdparty", "1.2.3") and isinstance(err, ValueError)
    message = preflight.import_message(caught, "5.25.0", {"thirdparty": Installed("1.2.3")}, "csm-conformance")
    assert message == ("transformers 5.25.0 cannot import its CSM classes: thirdparty 1.2.3 raised ValueError: deep problem; "
                       "nothing in the stack requires thirdparty: pip uninstall thirdparty, or build a fresh venv")


def test_a_name_transformers_lacks_is_blamed_on_transformers():
    """A transformers older than CSM (before 4.52): the import statement is the suite's own, the
    module that lacks the name is transformers."""
    try:
        from transformers import CsmNoSuchClass  # noqa: F401
    except ImportError as exc:
        caught = exc
    assert preflight.raised_by(caught) == (("transformers", md.version("transformers")), caught)
    assert preflight.import_message(caught, "4.51.3", preflight.installed_stack(), "csm-conformance").startswith(
        "transformers 4.51.3 cannot import its CSM classes: transformers ")


# ---- the fingerprint -----------------------------------------------------------------------------------
def test_npu_versions_come_from_torch_npu_when_it_reports_them(monkeypatch):
    """torch_npu.npu.utils.get_cann_version(module=...) is torch_npu's documented answer; the
    install-info files are the fallback (an older torch_npu, or '' for a CANN before 8.1.RC1)."""
    import types

    answers = {"CANN": "8.3.RC1", "DRIVER": "25.2.0"}
    fake = types.ModuleType("torch_npu")
    fake.npu = types.SimpleNamespace(utils=types.SimpleNamespace(get_cann_version=lambda module="CANN": answers.get(module, "")))
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", "/nonexistent")
    assert stack.accelerator("npu") == {"type": "npu", "cann_toolkit": "8.3.RC1", "ascend_driver": "25.2.0"}
    answers.clear()
    assert stack.accelerator("npu") == {"type": "npu"}  # neither torch_npu nor any install-info file says


def test_short_line_names_the_packages_asked_about_first():
    fp = {"distributions": {"torch": "2.13.0", "transformers": "5.25.0", "huggingface-hub": "2.4.0", "tokenizers": "0.23.3",
                            "numpy": "2.3.0"}, "accelerator": {"type": "cuda", "cuda_runtime": "12.8"}}
    assert stack.short_line(fp) == "torch 2.13.0, transformers 5.25.0, huggingface-hub 2.4.0, tokenizers 0.23.3, cuda_runtime 12.8"


def test_stack_travels_from_the_workers_into_the_merged_report_and_its_schema_reads_it():
    """Under pytest-xdist each worker sends its Part through execnet (a JSON round trip); the
    controller's merged document keeps the fingerprint, and the schema checks its shape while a
    report written before it (no "stack") still reads."""
    from csm_conformance.suite.options import Settings

    fp = stack.run_fingerprint("cpu")
    meta = {"model": {"key": "embedded-tiny-csm", "claim": "NOT a real-weight result", "weights_digest": "sha256:0"},
            "device": {"spec": "cpu", "device": "cpu", "type": "cpu", "name": "x", "count": 1}, "dtype": "float32",
            "versions": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.25.0"}}
    sent = [reporting.Part(worker, meta, [], stack=fp if worker == "gw1" else None) for worker in ("gw0", "gw1")]
    received = [reporting.Part.from_wire(part.to_wire()) for part in sent]
    doc = reporting.document(received, Settings())
    assert doc["stack"] == fp
    validate(doc, "accuracy", "merged")
    validate({k: v for k, v in doc.items() if k != "stack"}, "accuracy", "without stack")
    doc["stack"] = dict(fp, distributions=["torch 2.13.0"])
    with pytest.raises(ReportSchemaError, match="at stack/distributions"):
        validate(doc, "accuracy", "bad stack")


def test_a_run_reports_its_stack_in_the_header_and_the_merged_report(run_suite, pytester):
    """One -n 2 run: the controller's header, and the report it merges from the workers' parts."""
    result = run_suite(pytester, "-n", "2", "--csm-case", "short_en", "--csm-device", "cpu",
                       "-k", "backbone_logits or depth_decoder_logits")
    out = result.stdout.str()
    assert result.ret == 0, out[-3000:]
    fp = stack.fingerprint("cpu")
    result.stdout.fnmatch_lines([f"csm-conformance: stack: {stack.short_line(fp)} ({len(fp['distributions'])} distributions "
                                 "in all: \"stack\" in accuracy_evaluation.json)"])
    for report in ("accuracy_evaluation.json", "gw0/accuracy_evaluation.json"):
        doc = json.loads((pytester.path / "output" / report).read_text())
        validate(doc, "accuracy", report)
        assert doc["stack"]["distributions"] == fp["distributions"] and doc["stack"]["accelerator"] == {"type": "cpu"}, report


def test_the_performance_report_holds_the_stack(run_suite, pytester, tmp_path):
    result = run_suite(pytester, "--csm-workload", "short_32t", "--csm-perf-modes", "eager", "--csm-perf-rounds", "1",
                       "--csm-perf-warmup", "0", baselines=tmp_path / "baselines", marker="performance")
    assert result.ret == 0, result.stdout.str()[-3000:]
    doc = json.loads((pytester.path / "output" / "performance_benchmark.json").read_text())
    validate(doc["csm"], "performance", "performance_benchmark.json")
    assert doc["stack"]["distributions"] == stack.fingerprint("cpu")["distributions"]
