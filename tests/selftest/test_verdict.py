"""The upgrade verdict: SAFE only when nothing got worse, REGRESSED names what did, INCONCLUSIVE
names what is missing; bad input is one line. The last test feeds it two real runs of the gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from csm_conformance.tools import verdict

pytestmark = pytest.mark.selftest

MODEL = {"key": "embedded-tiny-csm", "kind": "embedded-tiny", "claim": "embedded tiny CSM, seeded random weights: NOT a real-weight result"}
DEVICE = {"device": "cpu", "type": "cpu", "name": "Test CPU", "count": 2, "fingerprint": "cpu|Test CPU|x2"}
TESTS = ["test_backbone_logits[short_en]", "test_generation[short_32t-b1-eager]"]


def accuracy_doc(transformers: str, cosine: float = 0.99997, status: str = "passed") -> dict:
    return {
        "report_schema": "csm-conformance/accuracy/1", "suite": "csm-conformance accuracy", "generated": "2026-11-30T00:00:00+00:00",
        "model": MODEL, "device": DEVICE, "dtype": "bfloat16",
        "versions": {"python": "3.11", "torch": "2.13.0", "transformers": transformers},
        "reference": {"device": "cpu", "dtype": "float32"}, "workers": [], "counts": {status: 1}, "record_outcome": None,
        "settings": {"min_cosine": 0.9999, "strict": False, "planted_faults": []},
        "results": [{"case": "short_en", "check": "backbone_logits", "status": status,
                     "messages": [] if status == "passed" else [f"cosine {cosine} outside >= 0.9999 (floor)"],
                     "metrics": {"cosine": {"value": cosine, "bound": 0.9999, "rule": "floor", "ok": status == "passed"},
                                 "rel_error": {"value": 0.008, "bound": 0.012, "rule": "bound", "ok": True}}}],
    }


def perf_doc(transformers: str, frame_ms: float = 10.0, cv: float = 0.01) -> dict:
    figures = {"rtf": {"value": frame_ms / 80.0, "cv": cv}, "frame_ms_median": {"value": frame_ms, "cv": cv},
               "peak_memory_mb": {"value": 100.0, "cv": 0.0}}
    return {"benchmarks": [], "csm": {
        "report_schema": "csm-conformance/performance/1", "model": MODEL, "device": DEVICE, "dtype": "bfloat16", "planted_faults": [],
        "versions": {"python": "3.11", "torch": "2.13.0", "transformers": transformers},
        "settings": {"tolerances": {"time": [0.05, 0.0], "cpu.time": [0.3, 0.0], "memory": [0.03, 0.0]}, "noise_factor": 3.0,
                     "noise_cap": 1.0, "rounds": 3, "warmup_rounds": 1, "modes": ["eager"], "tier": "quick", "strict": False},
        "gated_figures": {}, "skipped": [],
        "results": [{"case": "short_32t-b1-eager", "mode": "eager", "status": "passed", "figures": figures, "messages": [], "info": {},
                     "baseline_file": None, "comparisons": []}],
    }}


def junit(outcomes: dict[str, str]) -> str:
    body = {"passed": "", "failed": "<failure message='x'/>", "error": "<error message='x'/>", "skipped": "<skipped message='x'/>"}
    cases = "".join(f"<testcase classname='tests.conformance.t' name='{n}'>{body[s]}</testcase>" for n, s in outcomes.items())
    return f"<?xml version='1.0'?><testsuites><testsuite name='pytest'>{cases}</testsuite></testsuites>"


def write_side(path: Path, accuracy: dict | None, performance: dict | None, outcomes: dict[str, str] | None, status: dict | None = None) -> Path:
    path.mkdir(parents=True)
    for name, doc in ((verdict.ACCURACY_FILE, accuracy), (verdict.PERFORMANCE_FILE, performance), (verdict.STATUS_FILE, status)):
        if doc is not None:
            (path / name).write_text(json.dumps(doc))
    if outcomes is not None:
        (path / verdict.JUNIT_FILE).write_text(junit(outcomes))
    return path


@pytest.fixture
def before(tmp_path):
    return write_side(tmp_path / "current", accuracy_doc("5.24.0"), perf_doc("5.24.0"), dict.fromkeys(TESTS, "passed"))


def judge(tmp_path, before, capsys, **after) -> tuple[int, dict, str]:
    defaults = {"accuracy": accuracy_doc("5.25.0"), "performance": perf_doc("5.25.0"), "outcomes": dict.fromkeys(TESTS, "passed")}
    defaults.update(after)
    after_dir = write_side(tmp_path / "candidate", **defaults)
    code = verdict.main(["--before", str(before), "--after", str(after_dir), "--output", str(tmp_path / "verdict")])
    report = json.loads((tmp_path / "verdict" / "verdict.json").read_text())
    markdown = (tmp_path / "verdict" / "verdict.md").read_text()
    assert markdown.startswith(f"# Upgrade verdict: {report['verdict']}"), markdown[:200]
    assert capsys.readouterr().out.startswith(f"csm-conformance verdict: {report['verdict']}")
    return code, report, markdown


def test_same_results_are_safe_and_the_report_shows_before_and_after(tmp_path, before, capsys):
    code, report, markdown = judge(tmp_path, before, capsys)
    assert (code, report["verdict"]) == (0, "SAFE")
    assert "| transformers | 5.24.0 | 5.25.0 (changed) |" in markdown
    assert "| short_en | backbone_logits | passed | passed | rel_error | 0.008 | 0.008 | <= 0.012 |" in markdown
    assert "| frame_ms_median | 10ms | 10ms | +0.0% | +30.0% | ok |" in markdown
    assert "NOT a real-weight result" in markdown


def test_an_accuracy_failure_only_on_the_candidate_is_a_regression(tmp_path, before, capsys):
    outcomes = {TESTS[0]: "failed", TESTS[1]: "passed"}
    code, report, _ = judge(tmp_path, before, capsys, accuracy=accuracy_doc("5.25.0", 0.998, "failed"), outcomes=outcomes)
    assert (code, report["verdict"]) == (1, "REGRESSED")
    assert "test_backbone_logits[short_en]" in report["headline"]
    assert any("accuracy short_en/backbone_logits outside its bound" in r and "cosine 0.998" in r for r in report["reasons"])


@pytest.mark.parametrize("frame_ms, expected", [(14.0, "REGRESSED"), (11.0, "SAFE"), (5.0, "SAFE")])
def test_performance_is_judged_against_the_current_stack_with_the_runs_tolerance(tmp_path, before, capsys, frame_ms, expected):
    code, report, _ = judge(tmp_path, before, capsys, performance=perf_doc("5.25.0", frame_ms))
    assert report["verdict"] == expected, report["headline"]
    assert code == verdict.EXIT[expected]
    if expected == "REGRESSED":
        assert "performance short_32t-b1-eager: frame_ms_median +40.0% (tolerance +30.0%)" in report["headline"]
    if frame_ms < 10:
        assert any("faster or leaner on candidate: short_32t-b1-eager" in n for n in report["notes"])


def test_noise_widens_the_tolerance_as_the_gate_does(tmp_path, before, capsys):
    _, report, _ = judge(tmp_path, before, capsys, performance=perf_doc("5.25.0", 14.0, cv=0.2))
    assert report["verdict"] == "SAFE"
    assert report["performance"][0]["comparisons"][0]["tolerance"] == pytest.approx(0.6)


@pytest.mark.parametrize("change, needle", [
    ({"performance": None}, "no performance report (performance_benchmark.json) for candidate"),
    ({"outcomes": {TESTS[0]: "passed", TESTS[1]: "skipped"}}, "1 test(s) ran on current but not on candidate: test_generation"),
    ({"outcomes": None}, "no junit.xml in"),
])
def test_missing_evidence_is_inconclusive_and_says_what(tmp_path, before, capsys, change, needle):
    code, report, _ = judge(tmp_path, before, capsys, **change)
    assert (code, report["verdict"]) == (3, "INCONCLUSIVE")
    assert needle in report["headline"]


def test_a_planted_fault_or_another_device_is_inconclusive(tmp_path, before, capsys):
    faulty = accuracy_doc("5.25.0")
    faulty["settings"]["planted_faults"] = ["RoPE scaling dropped"]
    faulty["device"] = dict(DEVICE, device="cuda:0")
    _, report, _ = judge(tmp_path, before, capsys, accuracy=faulty)
    assert report["verdict"] == "INCONCLUSIVE"
    assert "candidate run has a planted fault: RoPE scaling dropped" in report["headline"]
    assert "different runs" in report["headline"]


def test_a_test_failing_on_both_stacks_is_inconclusive_and_one_fixed_is_a_note(tmp_path, capsys):
    broken = write_side(tmp_path / "current", accuracy_doc("5.24.0"), perf_doc("5.24.0"), dict.fromkeys(TESTS, "failed"))
    _, report, _ = judge(tmp_path, broken, capsys, outcomes={TESTS[0]: "failed", TESTS[1]: "passed"})
    assert report["verdict"] == "INCONCLUSIVE"
    assert "1 test(s) fail on both stacks, so they cannot judge the candidate: test_backbone_logits[short_en]" in report["headline"]
    assert "1 test(s) fail on current and pass on candidate: test_generation[short_32t-b1-eager]" in report["notes"]


def test_a_candidate_that_stops_at_setup_is_a_regression(tmp_path, before, capsys):
    _, report, _ = judge(tmp_path, before, capsys, accuracy=None, performance=None, outcomes={},
                         status={"exitstatus": 4, "setup_error": "model /m: cannot load"})
    assert report["verdict"] == "REGRESSED"
    assert "candidate stopped at setup: model /m: cannot load" in report["headline"]


@pytest.mark.parametrize("breakage, needle", [
    (lambda p: (p / verdict.ACCURACY_FILE).write_text("{not json"), "accuracy_evaluation.json is not readable JSON"),
    (lambda p: (p / verdict.JUNIT_FILE).write_text("<testsuites"), "junit.xml is not readable JUnit XML"),
    (lambda p: (p / verdict.PERFORMANCE_FILE).write_text("{}"), "has no 'csm' block"),
    (lambda p: (p / verdict.ACCURACY_FILE).write_text(json.dumps({**accuracy_doc("5.25.0"), "results": [{"case": "x"}]})),
     "accuracy_evaluation.json: not a csm-conformance/accuracy/1 report: at results/0: 'check' is a required property"),
    (lambda p: (p / verdict.PERFORMANCE_FILE).write_text(json.dumps({"csm": {**perf_doc("5.25.0")["csm"], "report_schema": "x/2"}})),
     "performance_benchmark.json: report schema 'x/2', this suite reads 'csm-conformance/performance/1'"),
])
def test_corrupt_reports_are_one_line_errors(tmp_path, before, capsys, breakage, needle):
    after = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    breakage(after)
    assert verdict.main(["--before", str(before), "--after", str(after), "--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_a_missing_directory_is_a_one_line_error(tmp_path, before, capsys):
    assert verdict.main(["--before", str(before), "--after", str(tmp_path / "nope"), "--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "nope is not a directory" in err and err.count("\n") == 1, err
    assert not (tmp_path / "v").exists()


def test_real_runs_a_clean_stack_against_a_faulty_one(run_suite, pytester, tmp_path, capsys):
    """Two real runs of the accuracy gate: the clean one as 'current', one with a perturbed
    backbone weight as the 'candidate'. The verdict must be REGRESSED and name the case."""
    runs = {}
    for label, fault in (("current", []), ("candidate", ["--csm-fault", "weight:backbone_model.layers.0.mlp.down_proj.weight:0.05"])):
        out = pytester.path / label
        result = run_suite(pytester, "--csm-case", "short_en", f"--csm-output={out}", f"--junitxml={out / 'junit.xml'}", *fault)
        runs[label] = (result.ret, out)
    assert runs["current"][0] == 0 and runs["candidate"][0] == 1
    code = verdict.main(["--before", str(runs["current"][1]), "--after", str(runs["candidate"][1]), "--output", str(tmp_path / "v")])
    report = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert (code, report["verdict"]) == (1, "REGRESSED"), report["headline"]
    assert "short_en" in report["headline"]
    assert any("candidate run has a planted fault" in n for n in report["notes"])
    assert "no performance report" in " ".join(report["notes"])


def test_a_checkpoint_loaded_differently_is_regressed_naming_the_tensors(tmp_path, before, capsys):
    """transformers 5.0-5.20 on the embedded checkpoint: the load integrity check fails only on the
    candidate, and the verdict names the tensor that was left at random values."""
    tensor = "backbone_model.embed_tokens.embed_audio_tokens.weight"
    before_doc = accuracy_doc("4.57.6")
    before_doc["results"].append({"case": "model", "check": "load_integrity", "status": "passed", "messages": [],
                                  "metrics": {"missing_tensors@reference": {"value": 0.0, "bound": 0.0, "rule": "invariant", "ok": True, "op": "=="}}})
    before = write_side(tmp_path / "b", before_doc, perf_doc("4.57.6"), dict.fromkeys(TESTS + ["test_load_integrity"], "passed"))
    after_doc = accuracy_doc("5.3.0")
    after_doc["results"].append({"case": "model", "check": "load_integrity", "status": "failed",
                                 "messages": [f"reference and device load: 1 tensor(s) missing from what was loaded, so initialised at random: {tensor}"],
                                 "metrics": {"missing_tensors@reference": {"value": 1.0, "bound": 0.0, "rule": "invariant", "ok": False, "op": "=="}}})
    code, report, markdown = judge(tmp_path, before, capsys, accuracy=after_doc,
                                   outcomes={**dict.fromkeys(TESTS, "passed"), "test_load_integrity": "failed"})
    assert (code, report["verdict"]) == (1, "REGRESSED")
    headline = markdown.splitlines()[0]
    assert "model/load_integrity" in headline and tensor in headline, headline


def ab_doc(verdict_: str, after_transformers: str = "5.25.0", fault: list | None = None) -> dict:
    """An A/B report as python -m csm_conformance ab writes it (one case, one figure)."""
    ratio, low, high, decision = {"SAFE": (1.0, 0.97, 1.03, "SAFE"), "REGRESSED": (1.3, 1.2, 1.4, "REGRESSED"),
                                  "INCONCLUSIVE": (1.04, 0.98, 1.1, "INCONCLUSIVE")}[verdict_]
    figure = {"figure": "frame_ms_median", "class": "time", "better": "lower", "unit": "ms", "tolerance": 0.05, "decision": decision,
              "pairs_used": 14 if decision != "INCONCLUSIVE" else None, "ratio": ratio, "low": low, "high": high, "level": 0.99,
              "pairs": 14, "before_median": 10.0, "after_median": 10.0 * ratio}
    from csm_conformance.tools.ab import report

    meta = {"kind": "A/B (two stacks)", "generated": "2026-11-29T00:00:00+00:00", "model": MODEL, "device": DEVICE, "dtype": "bfloat16",
            "before": {"python": "/b/python", "versions": {"torch": "2.13.0", "transformers": "5.24.0"}, "fault_notes": [], "threads": 1, "load_s": 1.0},
            "after": {"python": "/a/python", "versions": {"torch": "2.13.0", "transformers": after_transformers}, "fault_notes": fault or [],
                      "threads": 1, "load_s": 1.0},
            "tier": "quick", "budget": "at most 100 pairs per case", "tolerances": {"time": [0.05, 0.0]}, "alpha": 0.05, "looks": 7,
            "look_schedule": [10, 14, 20, 28, 39, 55, 77], "level": 0.99, "method": "paired", "seconds": 30.0}
    case = {"case": "short_32t-b1-eager", "workload": "short_32t", "batch": 1, "mode": "eager", "decision": decision, "pairs": 14,
            "stop_reason": "x", "seconds": 20.0, "figures": [figure], "memory": None, "warmup": {}, "rounds": []}
    return report.document(meta, [case])


@pytest.mark.parametrize("ab_verdict, expected, needle", [
    ("SAFE", "SAFE", None),
    ("REGRESSED", "REGRESSED", "performance (A/B) short_32t-b1-eager: frame_ms_median x1.300 [1.200, 1.400] > 1+5%"),
    ("INCONCLUSIVE", "INCONCLUSIVE", "performance (A/B) undecided: short_32t-b1-eager: frame_ms_median x1.040 [0.980, 1.100] straddles 1+5%"),
])
def test_performance_comes_from_the_ab_comparison_when_given(tmp_path, before, capsys, ab_verdict, expected, needle):
    """With --ab the gate runs' own timings are not compared (here the candidate's would regress
    by +60 %); the A/B decision, with its ratio and interval, is the performance verdict."""
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text(json.dumps(ab_doc(ab_verdict)))
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0", 16.0), dict.fromkeys(TESTS, "passed"))
    code = verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab"), "--output", str(tmp_path / "v")])
    report = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert (code, report["verdict"], report["performance_method"]) == (verdict.EXIT[expected], expected, "ab")
    assert needle is None or needle in report["reasons"], report["reasons"]
    markdown = (tmp_path / "v" / "verdict.md").read_text()
    assert f"## Performance: paired A/B comparison, {ab_verdict}" in markdown and "| frame_ms_median |" in markdown


def test_a_regressed_ab_names_where_the_time_went_right_under_the_verdict(tmp_path, before, capsys):
    """The A/B's paired profiles (attribution.json) give their first lines to ab.json; the verdict
    puts them right under its top line, and into verdict.json."""
    doc = ab_doc("REGRESSED")
    doc["attribution"] = {"file": "attribution.json", "case": "short_32t-b1-eager", "open": ["Perfetto: ..."],
                          "headline": ["operator aten::silu at depth_decoder.model.layers.*.mlp.act_fn: 51.0 us -> 1.053 ms per frame, "
                                       "x20.42 [19.59, 20.97], grew (+1.002 ms per frame)", "host time in operators: grew"]}
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text(json.dumps(doc))
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    code = verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab"), "--output", str(tmp_path / "v")])
    lines = (tmp_path / "v" / "verdict.md").read_text().splitlines()
    assert code == 1 and lines[0].startswith("# Upgrade verdict: REGRESSED")
    assert lines[2].startswith("Where the time went (short_32t-b1-eager, paired profiles") and lines[4].startswith("1. operator aten::silu at ")
    assert json.loads((tmp_path / "v" / "verdict.json").read_text())["attribution"]["headline"][1] == "host time in operators: grew"


@pytest.mark.parametrize("doc, needle", [
    (lambda: ab_doc("SAFE", after_transformers="5.30.0"), "the A/B comparison's after side is not the candidate stack: transformers 5.30.0 vs 5.25.0"),
    (lambda: ab_doc("SAFE", fault=["every frame is 5% slower"]), "the A/B comparison planted a fault on its after side"),
    (lambda: ab_doc("REGRESSED", fault=["every frame is 5% slower"]), "the A/B comparison planted a fault on its after side"),
    (lambda: {**ab_doc("REGRESSED"), "model": {"key": "random-full"}},
     "the A/B comparison ran random-full/cpu/bfloat16, the gate runs embedded-tiny-csm/cpu/bfloat16"),
])
def test_an_ab_comparison_of_other_stacks_or_with_a_fault_is_inconclusive(tmp_path, before, capsys, doc, needle):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text(json.dumps(doc()))
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    code = verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab"), "--output", str(tmp_path / "v")])
    report = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert code == 3 and any(needle in r for r in report["reasons"]), report["reasons"]


def test_a_missing_ab_report_is_inconclusive_and_a_foreign_one_is_one_line(tmp_path, before, capsys):
    """The A/B comparison stopped on bad input and wrote nothing: the verdict is still written, from
    the accuracy evidence, and says performance is missing. A file that is not an A/B report is an error."""
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    (tmp_path / "ab").mkdir()
    out = tmp_path / "v"
    assert verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab"), "--output", str(out)]) == 3
    report = json.loads((out / "verdict.json").read_text())
    assert report["performance_method"] == "ab" and report["reasons"][0].startswith("no A/B report")
    capsys.readouterr()
    (tmp_path / "ab" / "ab.json").write_text('{"verdict": "SAFE", "cases": [{"case": "x"}]}')
    assert verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a complete A/B report (missing: reasons, before, after, model" in err


# ---- the stack diff: what changed between the two stacks, first ---------------------------------
def fingerprint(transformers: str = "4.57.6", hub: str = "0.36.2", kernels: str | None = None, accelerator: dict | None = None,
                environment: dict | None = None) -> dict:
    """A stack fingerprint as runtime/stack.py writes it under "stack" in the gate's reports."""
    dists = {"huggingface-hub": hub, "torch": "2.13.0", "transformers": transformers, **({"kernels": kernels} if kernels else {})}
    return {"python": "3.11.7", "suite": "0.1.0", "distributions": dict(sorted(dists.items())),
            "accelerator": accelerator or {"type": "cpu"}, "environment": environment or {}}


def with_stack(doc: dict, fp: dict | None) -> dict:
    if fp is not None:
        doc["stack"] = fp
    return doc


def stacked_side(path: Path, accuracy_stack: dict | None, performance_stack: dict | None = None) -> Path:
    return write_side(path, with_stack(accuracy_doc("5.24.0"), accuracy_stack), with_stack(perf_doc("5.24.0"), performance_stack),
                      dict.fromkeys(TESTS, "passed"))


def test_the_verdict_starts_with_what_changed_in_the_stack(tmp_path, capsys):
    """transformers 4.57 -> 5.25 is three changes, not one: the table right under the verdict line
    names each (and kernels, which was not installed before)."""
    before = stacked_side(tmp_path / "current", fingerprint())
    code, report, markdown = judge(tmp_path, before, capsys,
                                   accuracy=with_stack(accuracy_doc("5.25.0"), fingerprint("5.25.0", "2.4.0", kernels="0.19.1")))
    assert (code, report["verdict"]) == (0, "SAFE")
    lines = markdown.splitlines()
    assert lines[2] == "## What changed in the stack", lines[:6]
    assert lines[4] == "3 change(s) between the two stacks"
    table = lines[6:11]
    assert table == ["| what | before | after |", "| --- | --- | --- |", "| huggingface-hub | 0.36.2 | 2.4.0 |",
                     "| kernels | - | 0.19.1 |", "| transformers | 4.57.6 | 5.25.0 |"], table
    assert markdown.index("## What changed in the stack") < markdown.index("## Versions") < markdown.index("## Why")
    assert report["stack_diff"] == [{"what": "huggingface-hub", "before": "0.36.2", "after": "2.4.0"},
                                    {"what": "kernels", "before": None, "after": "0.19.1"},
                                    {"what": "transformers", "before": "4.57.6", "after": "5.25.0"}]
    assert report["after"]["stack"]["distributions"]["kernels"] == "0.19.1"


def test_a_cann_only_upgrade_is_a_valid_before_after_and_says_so(tmp_path, capsys):
    """Same Python packages, another CANN toolkit and its library path: a real before/after, named in
    one line, and judged as any other (SAFE here)."""
    old = fingerprint(accelerator={"type": "npu", "cann_toolkit": "8.0.RC3"}, environment={"ASCEND_HOME_PATH": "/usr/local/Ascend/8.0"})
    new = fingerprint(accelerator={"type": "npu", "cann_toolkit": "8.1.RC1"}, environment={"ASCEND_HOME_PATH": "/usr/local/Ascend/8.1"})
    before = stacked_side(tmp_path / "current", old)
    code, report, markdown = judge(tmp_path, before, capsys, accuracy=with_stack(accuracy_doc("5.24.0"), new),
                                   performance=perf_doc("5.24.0"))
    assert (code, report["verdict"]) == (0, "SAFE")
    note = ("only the accelerator software changed: accelerator.cann_toolkit 8.0.RC3 -> 8.1.RC1, env.ASCEND_HOME_PATH "
            "/usr/local/Ascend/8.0 -> /usr/local/Ascend/8.1 (the same Python packages)")
    assert markdown.splitlines()[4] == note and report["stack_note"] == note
    assert "| accelerator.cann_toolkit | 8.0.RC3 | 8.1.RC1 |" in markdown


def test_identical_stacks_are_an_a_a_and_unrecorded_stacks_are_named_not_an_error(tmp_path, capsys):
    before = stacked_side(tmp_path / "current", fingerprint())
    _, report, markdown = judge(tmp_path, before, capsys, accuracy=with_stack(accuracy_doc("5.24.0"), fingerprint()))
    assert report["stack_diff"] == [] and "this verdict is an A/A" in markdown.splitlines()[4]
    # a candidate report from before stacks were recorded: named, and the verdict is still judged
    code, report, markdown = judge(tmp_path / "old", stacked_side(tmp_path / "old" / "current", fingerprint()), capsys)
    assert (code, report["verdict"], report["stack_diff"]) == (0, "SAFE", None)
    assert markdown.splitlines()[4] == "stack not recorded on candidate: only the versions below are known"
    # the performance report's stack when the accuracy report has none
    before = stacked_side(tmp_path / "perf" / "current", None, fingerprint())
    _, report, _ = judge(tmp_path / "perf", before, capsys, performance=with_stack(perf_doc("5.25.0"), fingerprint("5.25.0")))
    assert report["stack_diff"] == [{"what": "transformers", "before": "4.57.6", "after": "5.25.0"}]


def test_the_ab_reports_stacks_stand_in_for_gate_reports_without_one(tmp_path, before, capsys):
    doc = ab_doc("SAFE")
    doc["before"]["stack"], doc["after"]["stack"] = fingerprint("5.24.0"), fingerprint("5.25.0")
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text(json.dumps(doc))
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    assert verdict.main(["--before", str(before), "--after", str(after_dir), "--ab", str(tmp_path / "ab"), "--output", str(tmp_path / "v")]) == 0
    report = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert report["stack_diff"] == [{"what": "transformers", "before": "5.24.0", "after": "5.25.0"}]
    assert report["stack_note"] == "1 change(s) between the two stacks (current's from the A/B report; candidate's from the A/B report)"


# ---- loosened bounds and baselines ---------------------------------------------------------------
def test_a_loosened_bound_is_listed_and_unacknowledged_makes_the_verdict_inconclusive(tmp_path, before, capsys):
    import shutil

    repo_baselines = Path(__file__).resolve().parents[2] / "baselines"
    run = tmp_path / "run" / "baselines"
    shutil.copytree(repo_baselines, run)
    args = ["--before", str(before), "--baselines", str(run), "--base-baselines", str(repo_baselines)]
    after_dir = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    run_verdict = lambda *extra: (verdict.main([*args, "--after", str(after_dir), "--output", str(tmp_path / "v"), *extra]),  # noqa: E731
                                  json.loads((tmp_path / "v" / "verdict.json").read_text()), (tmp_path / "v" / "verdict.md").read_text())
    code, report, markdown = run_verdict()
    assert (code, report["verdict"], report["baselines"]["status"]) == (0, "SAFE", "clean")
    assert "## Loosened bounds and baselines" in markdown and "nothing loosened" in markdown
    bounds = run / "accuracy" / "embedded-tiny-csm" / "cpu-bfloat16.json"
    doc = json.loads(bounds.read_text())
    doc["cases"]["short_en"]["backbone_logits"]["max_abs_error"]["bound"] *= 3
    bounds.write_text(json.dumps(doc))
    code, report, markdown = run_verdict()
    assert (code, report["verdict"]) == (3, "INCONCLUSIVE")
    assert "1 bound(s), golden reference(s) or baseline(s) loosened, slower or changed against" in report["headline"]
    key = "`accuracy/embedded-tiny-csm/cpu-bfloat16.json: short_en/backbone_logits/max_abs_error`"
    assert f"| bound | {key} | looser |" in markdown
    code, report, markdown = run_verdict("--allow-loosened")
    assert (code, report["verdict"], report["baselines"]["status"]) == (0, "SAFE", "acknowledged")
    assert f"| bound | {key} | looser |" in markdown  # acknowledged, still listed


# ---- the compiled generation loop and the compiled timing ----------------------------------------
LOOP_TESTS = TESTS + ["test_decode_loop[short_en-compiled]"]
LOOP_RED = "short_en (compiled): step 3: cosine 0.91 outside >= 0.9999 (floor)"
LOOP_SKIP = "short_en (compiled): compile backend 'inductor' is not available"


def compiled_loop_doc(transformers: str, status: str) -> dict:
    """An accuracy report with test_decode_loop[short_en-compiled] passed, failed or skipped (a skip is
    recorded as the plugin records it: case "<case>-compiled", check "decode_loop", the reason)."""
    doc = accuracy_doc(transformers)
    if status == "skipped":
        doc["results"].append({"case": "short_en-compiled", "check": "decode_loop", "status": "skipped", "messages": [LOOP_SKIP], "metrics": {}})
        return doc
    cosine = 0.99995 if status == "passed" else 0.91
    doc["results"].append({"case": "short_en", "check": "decode_loop_compiled", "status": status,
                           "messages": [] if status == "passed" else [LOOP_RED],
                           "metrics": {"cosine": {"value": cosine, "bound": 0.9999, "rule": "floor", "ok": status == "passed"}}})
    return doc


def compiled_perf_doc(transformers: str, compiled_ms: float = 10.0) -> dict:
    """perf_doc with short_32t-b1-compiled timed too (static cache + torch.compile)."""
    doc = perf_doc(transformers)
    compiled = json.loads(json.dumps(doc["csm"]["results"][0]))
    compiled.update(case="short_32t-b1-compiled", mode="compiled")
    compiled["figures"]["frame_ms_median"]["value"], compiled["figures"]["rtf"]["value"] = compiled_ms, compiled_ms / 80.0
    doc["csm"]["results"].append(compiled)
    doc["csm"]["settings"]["modes"] = ["eager", "compiled"]
    return doc


def compiled_verdict(tmp_path, capsys, loop_status: str, timing: str) -> tuple[int, dict, str]:
    """Current: the compiled loop passed. Candidate: the loop `loop_status`, its compiled timing
    `timing`: "faster" or "ok" from the gate runs, or "ab" (a SAFE compiled case in the A/B report)."""
    before = write_side(tmp_path / "current", compiled_loop_doc("5.24.0", "passed"), compiled_perf_doc("5.24.0"),
                        dict.fromkeys(LOOP_TESTS, "passed"))
    after = write_side(tmp_path / "candidate", compiled_loop_doc("5.25.0", loop_status),
                       compiled_perf_doc("5.25.0", 5.0 if timing == "faster" else 10.0),
                       {**dict.fromkeys(TESTS, "passed"), LOOP_TESTS[-1]: loop_status})
    args = ["--before", str(before), "--after", str(after), "--output", str(tmp_path / "v")]
    if timing == "ab":
        doc = ab_doc("SAFE")
        compiled = json.loads(json.dumps(doc["cases"][0]))
        compiled.update(case="short_32t-b1-compiled", mode="compiled")
        doc["cases"].append(compiled)
        (tmp_path / "ab").mkdir()
        (tmp_path / "ab" / "ab.json").write_text(json.dumps(doc))
        args += ["--ab", str(tmp_path / "ab")]
    code = verdict.main(args)
    capsys.readouterr()
    return code, json.loads((tmp_path / "v" / "verdict.json").read_text()), (tmp_path / "v" / "verdict.md").read_text()


@pytest.mark.parametrize("timing", ["faster", "ok", "ab"])
def test_a_red_compiled_loop_on_the_candidate_is_regressed_and_its_safe_compiled_timing_is_caveated(tmp_path, capsys, timing):
    """The compiled timing times the compiled generation loop: when that loop is wrong on the
    candidate, the verdict is REGRESSED in words about the compiled loop, and every compiled timing
    that reads SAFE/ok/faster carries the caveat beside it (the eager one does not)."""
    code, report, markdown = compiled_verdict(tmp_path, capsys, "failed", timing)
    assert (code, report["verdict"]) == (1, "REGRESSED")
    line = f"compiled generation loop wrong on candidate: short_en ({LOOP_RED}); its compiled timing (SAFE/faster) is not to be trusted"
    assert line in report["reasons"] and line in markdown.splitlines()[0], report["reasons"]
    assert not any("accuracy short_en/decode_loop_compiled" in r for r in report["reasons"])  # said once, in the words above
    caveat = "not to be trusted: the compiled generation loop is wrong on candidate (short_en)"
    assert report["compiled_caveat"] == caveat
    expected = {"faster": (f"faster or leaner on candidate: short_32t-b1-compiled ({caveat})", f"### short_32t-b1-compiled: improved ({caveat})"),
                "ok": (f"compiled timing short_32t-b1-compiled reads ok on candidate: {caveat}", f"### short_32t-b1-compiled: ok ({caveat})"),
                "ab": (f"compiled timing (A/B) short_32t-b1-compiled reads SAFE: {caveat}", f"### short_32t-b1-compiled: SAFE (14 pairs, x) ({caveat})")}
    note, heading = expected[timing]
    assert note in report["notes"], report["notes"]
    assert heading in markdown.splitlines(), [x for x in markdown.splitlines() if x.startswith("### short_32t")]
    assert not any(x.startswith("### short_32t-b1-eager") and caveat in x for x in markdown.splitlines())


@pytest.mark.parametrize("timing", ["faster", "ab"])
def test_a_green_compiled_loop_leaves_the_compiled_timing_alone(tmp_path, capsys, timing):
    code, report, markdown = compiled_verdict(tmp_path, capsys, "passed", timing)
    assert (code, report["verdict"]) == (0, "SAFE"), report["headline"]
    assert report["compiled_caveat"] is None
    assert "compiled generation loop" not in markdown
    assert ("### short_32t-b1-compiled: improved" if timing == "faster" else "### short_32t-b1-compiled: SAFE (14 pairs, x)") in markdown.splitlines()


def test_a_compiled_loop_that_passed_before_and_is_skipped_on_the_candidate_is_inconclusive_and_named(tmp_path, capsys):
    code, report, markdown = compiled_verdict(tmp_path, capsys, "skipped", "faster")
    assert (code, report["verdict"]) == (3, "INCONCLUSIVE")
    line = (f"compiled generation loop not checked on candidate (it passed on current): short_en ({LOOP_SKIP}); "
            "its compiled timing (SAFE/faster) is unverified")
    assert line in report["reasons"], report["reasons"]
    caveat = "unverified: the compiled generation loop was not checked on candidate (short_en)"
    assert f"faster or leaner on candidate: short_32t-b1-compiled ({caveat})" in report["notes"], report["notes"]
    assert f"### short_32t-b1-compiled: improved ({caveat})" in markdown.splitlines()
    assert not any("accuracy short_en/decode_loop_compiled not run" in r for r in report["reasons"])  # said once, in the words above


def test_a_compiled_loop_that_raised_on_the_candidate_is_regressed_from_its_junit_entry(tmp_path, capsys):
    """A check that raised (torch.compile failing inside generate) writes no accuracy result: junit.xml says it."""
    before = write_side(tmp_path / "current", compiled_loop_doc("5.24.0", "passed"), compiled_perf_doc("5.24.0"), dict.fromkeys(LOOP_TESTS, "passed"))
    code, report, _ = judge(tmp_path, before, capsys, accuracy=accuracy_doc("5.25.0"), performance=compiled_perf_doc("5.25.0"),
                            outcomes={**dict.fromkeys(TESTS, "passed"), LOOP_TESTS[-1]: "error"})
    assert (code, report["verdict"]) == (1, "REGRESSED")
    assert ("compiled generation loop wrong on candidate: short_en (the test raised, no accuracy result (see junit.xml)); "
            "its compiled timing (SAFE/faster) is not to be trusted") in report["reasons"], report["reasons"]
    assert "compiled timing short_32t-b1-compiled reads ok on candidate: not to be trusted" in " ".join(report["notes"])


# ---- the operators whose error grew (accuracy/ops, tools/verdict/operators.py) ---------------------
SILU = ("aten.silu.default", "backbone_model.layers.0.mlp.act_fn", "prefill", ((1, 21, 128),), ("bfloat16",))
MM = ("aten.mm.default", "backbone_model.layers.0.mlp.down_proj", "prefill", ((21, 128), (128, 64)), ("bfloat16", "bfloat16"))
ADD = ("aten.add.Tensor", "backbone_model.layers.0", "decode", ((1, 1, 64), (1, 1, 64)), ("bfloat16", "bfloat16"))


def ops_doc(excess: dict[tuple, float], repros: dict[tuple, str] | None = None, case: str = "short_en") -> dict:
    """An operator report (ops-1) of one case, its rows sorted by excess, as the gate writes it."""
    rows = [{"rank": rank, "op": op, "module": module, "phase": phase, "shapes": [list(s) for s in shapes], "dtypes": list(dtypes), "calls": 1,
             "excess": x, "past_standard": x > 1, "repro": (repros or {}).get((op, module, phase, shapes, dtypes))}
            for rank, ((op, module, phase, shapes, dtypes), x) in enumerate(sorted(excess.items(), key=lambda kv: -kv[1]), 1)]
    entry = {"case": case, "trigger": f"red check: {case}/backbone_logits", "device": "cpu", "recorded_calls": 3000,
             "distinct_calls": len(rows), "judged": len(rows), "unjudged": {}, "past_standard": sum(r["past_standard"] for r in rows),
             "record_seconds": 1.0, "judge_seconds": 1.0, "operators": rows}
    from csm_conformance.reports import ops_report

    return ops_report.document({"model": MODEL, "device": DEVICE, "dtype": "bfloat16", "versions": {"torch": "2.13.0"}}, [entry])


def with_ops(path: Path, doc: dict | None) -> Path:
    if doc is not None:
        (path / "ops").mkdir()
        (path / "ops" / "ops.json").write_text(json.dumps(doc))
    return path


def red_on_candidate(tmp_path: Path, before_ops: dict | None, after_ops: dict | None, *extra: str) -> tuple[int, dict, str, str]:
    """short_en/backbone_logits passed on the current stack and red on the candidate, each side with its ops.json."""
    before = with_ops(write_side(tmp_path / "current", accuracy_doc("5.24.0"), perf_doc("5.24.0"), dict.fromkeys(TESTS, "passed")), before_ops)
    after = with_ops(write_side(tmp_path / "candidate", accuracy_doc("5.25.0", 0.998, "failed"), perf_doc("5.25.0"),
                                {TESTS[0]: "failed", TESTS[1]: "passed"}), after_ops)
    code = verdict.main(["--before", str(before), "--after", str(after), "--output", str(tmp_path / "v"), *extra])
    return code, json.loads((tmp_path / "v" / "verdict.json").read_text()), (tmp_path / "v" / "verdict.md").read_text(), str(after)


SILU_GREW = ("operators whose error grew (short_en): aten.silu.default at backbone_model.layers.0.mlp.act_fn (prefill; 1x21x128; bfloat16): "
             "x0.31 -> x2.76 its standard; aten.add.Tensor at backbone_model.layers.0 (decode; 1x1x64, 1x1x64; bfloat16): "
             "x0.20 -> x0.90 its standard; repro: {after}/ops/1-silu/repro.py")


def test_the_operators_whose_error_grew_are_named_under_the_top_line(tmp_path, capsys):
    """silu past its standard only on the candidate, add's excess more than doubled (above 0.5), mm
    about the same: the first lines of verdict.md name silu then add, and so does Why, right under
    the red accuracy check; verdict.json has the rows."""
    before = ops_doc({SILU: 0.31, MM: 0.5, ADD: 0.2})
    after = ops_doc({SILU: 2.76, MM: 0.55, ADD: 0.9}, {SILU: "1-silu/repro.py"})
    code, report, markdown, after_dir = red_on_candidate(tmp_path, before, after)
    assert (code, report["verdict"]) == (1, "REGRESSED")
    line = SILU_GREW.format(after=after_dir)
    lines = markdown.splitlines()
    assert lines[2] == f"- {line}", lines[:4]
    why = lines.index("## Why")
    accuracy = next(i for i, x in enumerate(lines) if x.startswith("- accuracy short_en/backbone_logits outside its bound"))
    assert why < accuracy and lines[accuracy + 1] == f"  - {line}", lines[why:why + 6]
    grew = report["operators_grew"]["short_en"]
    assert [(r["op"], r["before_excess"], r["after_excess"]) for r in grew] == [("aten.silu.default", 0.31, 2.76), ("aten.add.Tensor", 0.2, 0.9)]
    assert report["operators_lines"] == {"short_en": line}
    assert f"csm-conformance verdict: {line}" in capsys.readouterr().out


def test_when_no_operator_grew_the_verdict_says_the_error_is_not_one_kernels(tmp_path, capsys):
    same = ops_doc({SILU: 0.31, MM: 0.5, ADD: 0.2})
    code, report, markdown, _ = red_on_candidate(tmp_path, same, ops_doc({SILU: 0.35, MM: 0.6, ADD: 0.3}))
    assert (code, report["operators_grew"]) == (1, {"short_en": []})
    assert markdown.splitlines()[2] == (
        "- operators whose error grew (short_en): none of 3 distinct calls, current against candidate (the error is not one kernel's); "
        "closest on candidate: aten.mm.default at backbone_model.layers.0.mlp.down_proj (prefill; 21x128, 128x64; bfloat16), x0.60 its standard")


def fake_python(path: Path, doc: dict | None, code: int = 0) -> Path:
    """An interpreter for --before-python: writes `doc` as the ops.json of --output (and its argv beside it)."""
    path.write_text(f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\n"
                    "out = Path(next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--output=')))\n"
                    "out.mkdir(parents=True, exist_ok=True)\n(out / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
                    f"doc = {json.dumps(doc)!r}\nif doc != 'null':\n    (out / 'ops.json').write_text(doc)\n"
                    f"print('csm-conformance ops: error: device gone', file=sys.stderr) if {code} else None\nsys.exit({code})\n")
    path.chmod(0o755)
    return path


def test_the_current_stacks_operators_are_recorded_with_before_python(tmp_path, capsys):
    """The current run wrote no ops.json (its check passed): --before-python runs the ops verb on the
    candidate's model, device and dtype, into the verdict's ops-before, and the list is the same."""
    python = fake_python(tmp_path / "python", ops_doc({SILU: 0.31, MM: 0.5, ADD: 0.2}))
    after = ops_doc({SILU: 2.76, MM: 0.55, ADD: 0.9}, {SILU: "1-silu/repro.py"})
    code, report, markdown, after_dir = red_on_candidate(tmp_path, None, after, "--before-python", str(python))
    assert code == 1 and markdown.splitlines()[2] == f"- {SILU_GREW.format(after=after_dir)}", markdown.splitlines()[:4]
    argv = json.loads((tmp_path / "v" / "ops-before" / "argv.json").read_text())
    assert argv == ["-m", "csm_conformance", "ops", "--case=short_en", "--model=tiny", "--device=cpu", "--dtype=bfloat16",
                    f"--output={tmp_path / 'v' / 'ops-before'}", "--repro=none", "--trigger=verdict: the current stack, for short_en"]


@pytest.mark.parametrize("given, needle", [
    (None, "not compared: no operator report on current; --before-python records one"),
    ("fails", "not compared: current's operators could not be recorded: `{python} -m csm_conformance ops` exited 2: "
              "csm-conformance ops: error: device gone"),
    ("absent", "not compared: current's operators could not be recorded: `{python} -m csm_conformance ops` could not start"),
])
def test_without_the_current_stacks_operators_the_candidates_past_ones_are_listed_and_said_so(tmp_path, capsys, given, needle):
    python = tmp_path / "python"
    if given == "fails":
        fake_python(python, None, 2)
    extra = ["--before-python", str(python)] if given else []
    code, report, markdown, after_dir = red_on_candidate(tmp_path, None, ops_doc({SILU: 2.76, MM: 0.55}, {SILU: "1-silu/repro.py"}), *extra)
    assert (code, report["verdict"], report["operators_grew"]) == (1, "REGRESSED", {"short_en": None})
    line = markdown.splitlines()[2]
    assert line.startswith(f"- operators past their standard on candidate (short_en; {needle.format(python=python)}"), line
    assert line.endswith(f"): aten.silu.default at backbone_model.layers.0.mlp.act_fn (prefill; 1x21x128; bfloat16): x2.76 its standard; "
                         f"repro: {after_dir}/ops/1-silu/repro.py"), line


def test_the_real_interpreter_records_the_current_stacks_operators(tmp_path, capsys):
    """--before-python with this interpreter: the ops verb really runs on the embedded model, and the
    candidate's silu (2.76 x its standard) is compared with this stack's own measurement of it."""
    after = ops_doc({SILU: 2.76, MM: 0.55})
    code, report, markdown, _ = red_on_candidate(tmp_path, None, after, "--before-python", sys.executable)
    grew = report["operators_grew"]["short_en"]
    assert code == 1 and grew is not None and grew[0]["op"] == "aten.silu.default", markdown.splitlines()[:4]
    assert isinstance(grew[0]["before_excess"], float) and grew[0]["before_excess"] < 1.0  # measured: a clean silu
    recorded = json.loads((tmp_path / "v" / "ops-before" / "ops.json").read_text())
    assert [c["trigger"] for c in recorded["cases"]] == ["verdict: the current stack, for short_en"]


@pytest.mark.parametrize("side", ["current", "candidate"])
@pytest.mark.parametrize("text, needle", [("{not json", "ops.json: not JSON"),
                                          (json.dumps({**ops_doc({SILU: 1.0}), "cases": [{"case": "x"}]}), "ops.json: not a csm-conformance/ops/1 report")])
def test_a_damaged_ops_json_is_a_one_line_error(tmp_path, capsys, side, text, needle):
    before = write_side(tmp_path / "current", accuracy_doc("5.24.0"), perf_doc("5.24.0"), dict.fromkeys(TESTS, "passed"))
    after = write_side(tmp_path / "candidate", accuracy_doc("5.25.0"), perf_doc("5.25.0"), dict.fromkeys(TESTS, "passed"))
    (tmp_path / side / "ops").mkdir()
    (tmp_path / side / "ops" / "ops.json").write_text(text)
    assert verdict.main(["--before", str(before), "--after", str(after), "--output", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and str(tmp_path / side) in err, err


def test_one_line_over_the_cases_names_each_operator_that_grew_once():
    """A kernel fault grows in every case that runs the operator: the verdict's first operator line
    says it once, over the cases, before each case's own line."""
    from csm_conformance.tools.verdict.operators import CaseOperators, across_cases

    def row(op, before, after):
        return {"op": op, "module": "m", "phase": "prefill", "shapes": [[1]], "dtypes": ["bfloat16"],
                "before_excess": before, "after_excess": after, "repro": None}

    found = [CaseOperators("a", "line a", [row("aten.silu.default", 0.2, 2.7), row("aten.add.Tensor", 0.3, 0.9)]),
             CaseOperators("b", "line b", [row("aten.silu.default", 0.25, "inf")]),
             CaseOperators("c", "line c", None)]  # not compared: left out
    line = across_cases(found)
    assert line.startswith("operators whose error grew: aten.silu.default (2 of 2 cases, 2 distinct calls: x0.20-0.25 -> up to xinf")
    assert "aten.add.Tensor (1 of 2 cases, 1 distinct calls: x0.30-0.30 -> up to x0.90 its standard)" in line
    assert across_cases(found[:1]) is None
    assert across_cases([CaseOperators("a", "", []), CaseOperators("b", "", [])]).startswith("operators whose error grew: none in 2 cases")


def test_an_xdist_runs_operator_reports_are_read_from_its_workers(tmp_path):
    """Under pytest-xdist each worker writes <run>/gwK/ops/ops.json and none is merged: the verdict
    reads the workers' (their repro paths made relative to <run>/ops)."""
    before = ops_doc({SILU: 0.31, MM: 0.5, ADD: 0.2})
    after = ops_doc({SILU: 2.76, MM: 0.55, ADD: 0.9}, {SILU: "1-silu/repro.py"})
    code, report, markdown, after_path = red_on_candidate(tmp_path, before, None)
    (Path(after_path) / "gw1" / "ops").mkdir(parents=True)
    (Path(after_path) / "gw1" / "ops" / "ops.json").write_text(json.dumps(after))
    code = verdict.main(["--before", str(tmp_path / "current"), "--after", after_path, "--output", str(tmp_path / "v2")])
    report = json.loads((tmp_path / "v2" / "verdict.json").read_text())
    assert code == 1 and [r["op"] for r in report["operators_grew"]["short_en"]][:1] == ["aten.silu.default"]
    assert f"repro: {after_path}/ops/../gw1/ops/1-silu/repro.py" in report["operators_lines"]["short_en"]
