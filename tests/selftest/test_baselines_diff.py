"""Bounds and baselines cannot be loosened silently (csm-conformance baselines-diff): a copy of the
committed baselines/ with one planted loosening (a larger max-error bound, a lower cosine floor, a
changed or removed golden reference, a slower or removed performance figure, a looser pytest.ini
threshold) is listed and exits 1; a clean copy, and a tightening, exit 0 with nothing counted; an
acknowledgement (LOOSENED.md added in the change, or --allow-loosened) exits 0 with the items still
listed; --base-ref reads the base from git."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.tools import baselines_diff

pytestmark = pytest.mark.selftest
REPO = Path(__file__).resolve().parents[2]
BOUNDS = "accuracy/embedded-tiny-csm/cpu-bfloat16.json"
EAGER = "performance/embedded-tiny-csm/cpu-intel-r-xeon-r-processor-x2/bfloat16-eager.json"
GOLDEN = "golden/embedded-tiny-csm/short_en.safetensors"


@pytest.fixture
def run(tmp_path) -> Path:
    """A copy of the committed baselines/, the change under test."""
    shutil.copytree(REPO / "baselines", tmp_path / "run" / "baselines")
    return tmp_path / "run" / "baselines"


def diff(tmp_path, capsys, *args) -> tuple[int, dict | None, str]:
    out = tmp_path / "report"
    shutil.rmtree(out, ignore_errors=True)
    code = baselines_diff.main([*args, "--output", str(out)])
    captured = capsys.readouterr()
    doc = json.loads((out / "baselines-diff.json").read_text()) if (out / "baselines-diff.json").exists() else None
    if doc is not None:
        assert (out / "baselines-diff.md").read_text().startswith(f"# Baselines against {doc['base']}: {doc['status']}")
        assert captured.out.startswith(f"csm-conformance baselines-diff: {doc['headline']}")
    return code, doc, captured.out + captured.err


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def bound(metric: str, factor: float = 1.0, delta: float = 0.0):
    def change(doc):
        entry = doc["cases"]["short_en"]["backbone_logits"][metric]
        entry["bound"] = entry["bound"] * factor + delta
    return change


def figure(name: str, factor: float):
    def change(doc):
        fig = doc["benchmarks"][0]["extra_info"]["figures"][name]
        fig["value"] *= factor
    return change


def test_a_clean_copy_lists_nothing(tmp_path, run, capsys):
    code, doc, out = diff(tmp_path, capsys, "--baselines", str(run), "--base-baselines", str(REPO / "baselines"))
    assert (code, doc["status"], doc["items"]) == (0, "clean", [])
    assert "nothing loosened, slower or changed" in out


LOOSENINGS = [
    ("max-error bound raised", lambda r: edit_json(r / BOUNDS, bound("max_abs_error", factor=3)),
     "bound", f"{BOUNDS}: short_en/backbone_logits/max_abs_error", "looser"),
    ("cosine floor lowered", lambda r: edit_json(r / BOUNDS, bound("cosine", delta=-1e-4)),
     "bound", f"{BOUNDS}: short_en/backbone_logits/cosine", "looser"),
    ("bound removed", lambda r: edit_json(r / BOUNDS, lambda d: d["cases"]["short_en"]["backbone_logits"].pop("rel_error")),
     "bound", f"{BOUNDS}: short_en/backbone_logits/rel_error", "removed"),
    ("golden changed", lambda r: (r / GOLDEN).write_bytes((r / GOLDEN).read_bytes()[:-1] + b"\x00"), "golden", GOLDEN, "changed"),
    ("golden removed", lambda r: (r / GOLDEN).unlink(), "golden", GOLDEN, "removed"),
    ("frame median slower", lambda r: edit_json(r / EAGER, figure("frame_ms_median", 1.5)),
     "performance", f"{EAGER}: short_32t-b1-eager/frame_ms_median", "slower"),
    ("peak memory larger", lambda r: edit_json(r / EAGER, figure("peak_memory_mb", 2.0)),
     "performance", f"{EAGER}: short_32t-b1-eager/peak_memory_mb", "slower"),
    ("performance entry removed", lambda r: edit_json(r / EAGER, lambda d: d["benchmarks"].pop(0)),
     "performance", f"{EAGER}: short_32t-b1-eager/rtf", "removed"),
]


@pytest.mark.parametrize("what, plant, kind, key, change", LOOSENINGS, ids=[x[0] for x in LOOSENINGS])
def test_a_planted_loosening_is_listed_and_fails(tmp_path, run, capsys, what, plant, kind, key, change):
    plant(run)
    code, doc, out = diff(tmp_path, capsys, "--baselines", str(run), "--base-baselines", str(REPO / "baselines"))
    assert (code, doc["status"]) == (1, "loosened"), doc
    found = [i for i in doc["items"] if i["key"] == key]
    assert found and found[0]["kind"] == kind and found[0]["change"] == change and found[0]["counts"], doc["items"]
    assert "NOT acknowledged" in out and key in out
    assert f"`{key}`" in (tmp_path / "report" / "baselines-diff.md").read_text()


TIGHTENINGS = [
    ("max-error bound lowered", lambda r: edit_json(r / BOUNDS, bound("max_abs_error", factor=0.5))),
    ("cosine floor raised", lambda r: edit_json(r / BOUNDS, bound("cosine", delta=+1e-6))),
    ("frame median faster", lambda r: edit_json(r / EAGER, figure("frame_ms_median", 0.8))),
]


@pytest.mark.parametrize("what, plant", TIGHTENINGS, ids=[x[0] for x in TIGHTENINGS])
def test_a_tightening_is_not_a_loosening(tmp_path, run, capsys, what, plant):
    """The direction comes from the metric: a smaller max error or a higher cosine floor is tighter."""
    plant(run)
    code, doc, _ = diff(tmp_path, capsys, "--baselines", str(run), "--base-baselines", str(REPO / "baselines"))
    assert (code, doc["status"], doc["items"]) == (0, "clean", [])


def test_an_added_golden_is_listed_never_counted(tmp_path, run, capsys):
    shutil.copy(run / GOLDEN, run / "golden" / "embedded-tiny-csm" / "new_case.safetensors")
    code, doc, _ = diff(tmp_path, capsys, "--baselines", str(run), "--base-baselines", str(REPO / "baselines"))
    assert (code, doc["status"]) == (0, "clean")
    assert [(i["key"], i["change"], i["counts"]) for i in doc["items"]] == [("golden/embedded-tiny-csm/new_case.safetensors", "added", False)]


def test_acknowledgement_passes_with_the_items_still_listed(tmp_path, capsys):
    base = tmp_path / "base" / "baselines"
    shutil.copytree(REPO / "baselines", base)
    run = tmp_path / "run" / "baselines"
    shutil.copytree(REPO / "baselines", run)
    edit_json(run / BOUNDS, bound("max_abs_error", factor=3))
    args = ["--baselines", str(run), "--base-baselines", str(base)]
    # LOOSENED.md unchanged from the base (a stale note of an earlier change) acknowledges nothing
    for side in (base, run):
        (side / baselines_diff.ACK_FILE).write_text("# Loosened\n- an earlier change\n")
    assert diff(tmp_path, capsys, *args)[0] == 1
    (run / baselines_diff.ACK_FILE).write_text("# Loosened\n- short_en/backbone_logits/max_abs_error x3: the new kernel's rounding\n")
    code, doc, _ = diff(tmp_path, capsys, *args)
    assert (code, doc["status"], doc["acknowledged_by"]) == (0, "acknowledged", "LOOSENED.md changed in this diff")
    assert [i["key"] for i in doc["items"]] == [f"{BOUNDS}: short_en/backbone_logits/max_abs_error"]
    (run / baselines_diff.ACK_FILE).write_text("  \n")  # an empty one is no acknowledgement
    assert diff(tmp_path, capsys, *args)[0] == 1
    code, doc, _ = diff(tmp_path, capsys, *args, "--allow-loosened")
    assert (code, doc["status"], len(doc["items"])) == (0, "acknowledged", 1) and "baselines-loosened" in doc["acknowledged_by"]


def test_looser_pytest_ini_thresholds_are_listed(tmp_path, capsys):
    base, run = tmp_path / "base", tmp_path / "run"
    for side in (base, run):
        shutil.copytree(REPO / "baselines", side / "baselines")
        shutil.copy(REPO / "pytest.ini", side / "pytest.ini")
    args = ["--baselines", str(run / "baselines"), "--base-baselines", str(base / "baselines")]
    code, doc, _ = diff(tmp_path, capsys, *args)
    assert (code, doc["items"]) == (0, [])
    text = (run / "pytest.ini").read_text()
    assert "csm_min_cosine = 0.9999\n" in text and "cpu.time=30%" in text
    (run / "pytest.ini").write_text(text.replace("csm_min_cosine = 0.9999\n", "csm_min_cosine = 0.999\n").replace("cpu.time=30%", "cpu.time=60%"))
    code, doc, _ = diff(tmp_path, capsys, *args)
    assert code == 1
    assert {(i["key"], i["before"], i["after"]) for i in doc["items"]} == {
        ("pytest.ini: csm_min_cosine", "0.9999", "0.999"), ("pytest.ini: csm_perf_tolerance cpu.time", "30%", "60%")}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args], check=True, capture_output=True)


def test_base_ref_reads_the_base_from_git(tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "baselines", repo / "baselines")
    shutil.copy(REPO / "pytest.ini", repo / "pytest.ini")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    args = ["--baselines", str(repo / "baselines"), "--base-ref", "HEAD"]
    assert diff(tmp_path, capsys, *args)[0] == 0
    edit_json(repo / "baselines" / BOUNDS, bound("max_abs_error", factor=3))
    (repo / "pytest.ini").write_text((repo / "pytest.ini").read_text().replace("csm_golden_max_rel_error = 1e-4", "csm_golden_max_rel_error = 1e-3"))
    code, doc, _ = diff(tmp_path, capsys, *args)
    assert (code, doc["base"]) == (1, "HEAD")
    assert {i["key"] for i in doc["items"]} == {f"{BOUNDS}: short_en/backbone_logits/max_abs_error", "pytest.ini: csm_golden_max_rel_error"}
    (repo / "baselines" / "LOOSENED.md").write_text("max_abs_error x3 on short_en: see the pull request\n")
    assert diff(tmp_path, capsys, *args)[0] == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "loosened")  # against the new HEAD nothing differs any more
    assert diff(tmp_path, capsys, *args)[1]["items"] == []
    code, doc, _ = diff(tmp_path, capsys, *args[:-1], "HEAD~1")
    assert (code, len(doc["items"]), doc["status"]) == (0, 2, "acknowledged")  # LOOSENED.md added since HEAD~1


@pytest.mark.parametrize("args, message", [
    (["--baselines", "{tmp}/nowhere", "--base-baselines", "{repo}/baselines"], "--baselines {tmp}/nowhere is not a directory"),
    (["--baselines", "{repo}/baselines", "--base-baselines", "{tmp}/nowhere"], "base baselines {tmp}/nowhere is not a directory"),
    (["--baselines", "{repo}/baselines"], "one of the arguments --base-baselines --base-ref is required"),
    (["--baselines", "{repo}/baselines", "--base-ref", "no-such-ref-anywhere"], "--base-ref no-such-ref-anywhere: no such commit"),
    (["--baselines", "{tmp}/corrupt/baselines", "--base-baselines", "{repo}/baselines"], "cpu-bfloat16.json is not readable JSON"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    shutil.copytree(REPO / "baselines", tmp_path / "corrupt" / "baselines")
    (tmp_path / "corrupt" / "baselines" / BOUNDS).write_text("{ not json")
    fill = lambda text: text.format(tmp=tmp_path, repo=REPO)  # noqa: E731
    code, doc, out = diff(tmp_path, capsys, *map(fill, args))
    assert (code, doc) == (2, None)
    assert len(out.strip().splitlines()) == 1 and fill(message) in out, out


def test_the_verb_runs_it(tmp_path, run):
    """`python -m csm_conformance baselines-diff`, as the upgrade-gate workflow calls it."""
    edit_json(run / BOUNDS, bound("max_abs_error", factor=3))
    proc = subprocess.run([sys.executable, "-m", "csm_conformance", "baselines-diff", "--baselines", str(run),
                           "--base-baselines", str(REPO / "baselines")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "short_en/backbone_logits/max_abs_error" in proc.stdout
