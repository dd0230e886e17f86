"""`csm-conformance ops` (tools/ops_cli.py, issue 22): the operator report of some cases on demand,
on the embedded tiny model on the CPU. A clean stack exits 0 with a schema-valid ops.json, a kernel
fault planted in the whole interpreter (faults/op_kernel.py's sitecustomize) exits 1 naming the
operator first, and bad input is one line, exit 2, before any model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.faults import op_kernel
from csm_conformance.reports import ops_report
from csm_conformance.reports import schema as report_schema
from csm_conformance.tools import cli

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parents[2]
PINNED = ["--model", "tiny", "--device", "cpu", "--dtype", "bfloat16"]  # whatever CSM_MODEL / CSM_DEVICE / CSM_DTYPE say


def test_a_clean_stack_exits_0_and_merges_its_cases_into_ops_json(tmp_path, capsys):
    """Both spellings of --case; a second run replaces the entry of its case and keeps the others."""
    out = tmp_path / "ops"
    assert cli.main(["ops", "--case=short_en", *PINNED, "--output", str(out), "--repro=none", "--trigger", "first"]) == 0
    stdout = capsys.readouterr().out
    assert "operators of short_en (first): " in stdout and "0 past their standard" in stdout, stdout[-2000:]
    assert f"report: {out / 'ops.json'}" in stdout
    doc = json.loads((out / "ops.json").read_text())
    report_schema.validate(doc, "ops", "ops.json")
    assert [c["case"] for c in doc["cases"]] == ["short_en"]
    assert (doc["model"]["key"], doc["device"]["device"], doc["dtype"]) == ("embedded-tiny-csm", "cpu", "bfloat16")
    entry = doc["cases"][0]
    assert entry["judged"] > 100 and entry["past_standard"] == 0 and entry["operators"][0]["excess"] <= 1.0

    assert cli.main(["ops", "--case", "decode_2s", "--case", "short_en", *PINNED, "--output", str(out), "--repro", "none",
                     "--trigger", "second"]) == 0
    capsys.readouterr()
    doc = ops_report.read(out / "ops.json")
    assert [(c["case"], c["trigger"]) for c in doc["cases"]] == [("short_en", "second"), ("decode_2s", "second")]


@pytest.mark.parametrize("argv, needle", [
    (["--case", "no_such_case"], "unknown case id 'no_such_case' (known: short_en, "),
    (["--case=short_en", "--model", "/no/such/model"], "model path /no/such/model does not exist"),
    (["--case=short_en", "--device", "mps"], "device 'mps' was asked for but no mps device is available"),
    (["--case=short_en", "--repro", "some"], "argument --repro: invalid choice: 'some'"),
    ([], "the following arguments are required: --case"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    try:  # the test's --model / --device come after PINNED's, and win
        code = cli.main(["ops", *PINNED, *argv, "--output", str(tmp_path / "ops")])
    except SystemExit as exc:  # argparse's own errors, in one line (ops_cli._Parser)
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    assert needle in captured.err and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("csm-conformance ops: error: ")
    assert not (tmp_path / "ops" / "ops.json").exists()


def test_a_damaged_ops_json_in_the_output_is_one_line_before_any_model_loads(tmp_path, capsys):
    out = tmp_path / "ops"
    out.mkdir()
    (out / "ops.json").write_text("{not json")
    assert cli.main(["ops", "--case", "short_en", *PINNED, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ops.json: not JSON" in err, err
    assert (out / "ops.json").read_text() == "{not json"  # left as it was


def test_a_kernel_fault_in_the_interpreter_exits_1_and_names_the_operator_first(tmp_path):
    """aten.silu 2 % off in bfloat16, planted from the interpreter's start (sitecustomize), as a
    wrong kernel of a candidate stack would be: the verb's table starts with it."""
    fault = tmp_path / "fault"
    op_kernel.environment(fault, "silu", 0.02)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fault), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = tmp_path / "ops"
    done = subprocess.run([sys.executable, "-m", "csm_conformance", "ops", "--case", "short_en", *PINNED, "--output", str(out),
                           "--repro", "none"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout.split("operator / module / phase / shapes\n", 1)[1].splitlines()
    assert "aten.silu.default at " in table[0], table[:3]
    entry = ops_report.read(out / "ops.json")["cases"][0]
    assert entry["past_standard"] > 0 and entry["operators"][0]["op"] == "aten.silu.default"
    assert all(row["op"] == "aten.silu.default" for row in entry["operators"] if row["past_standard"])


def test_the_repro_bundles_are_asked_for_and_named_in_the_report(tmp_path, capsys, monkeypatch):
    """--repro all: accuracy/ops/bundle.py's write_bundles(ops_dir, case_ops, which, limit) writes them;
    the report names each bundle beside its operator (here a stand-in writer, called as the real one is)."""
    import types

    calls = []

    def write_bundles(ops_dir, case_ops, which="past", limit=10):
        calls.append((ops_dir, case_ops.case, which, limit))
        return {1: "1-first/repro.py"}

    monkeypatch.setitem(sys.modules, "csm_conformance.accuracy.ops.bundle", types.SimpleNamespace(write_bundles=write_bundles))
    out = tmp_path / "ops"
    assert cli.main(["ops", "--case", "decode_2s", *PINNED, "--output", str(out), "--repro", "all"]) == 0
    assert calls == [(out, "decode_2s", "all", 10)]
    rows = ops_report.read(out / "ops.json")["cases"][0]["operators"]
    assert rows[0]["repro"] == "1-first/repro.py" and all(r["repro"] is None for r in rows[1:])
    assert "  -> 1-first/repro.py" in capsys.readouterr().out
    calls.clear()
    assert cli.main(["ops", "--case", "decode_2s", *PINNED, "--output", str(out), "--repro", "none"]) == 0
    assert calls == []


def test_a_bundle_on_demand_for_any_call(tmp_path):
    """--repro-for TEXT: a bundle for each call whose '<op> at <module>' holds TEXT (within its
    standard or not), besides --repro's, each folder written once."""
    out = tmp_path / "ops"
    assert cli.main(["ops", "--case", "decode_2s", *PINNED, "--output", str(out), "--repro", "none", "--repro-for", "conv_transpose1d"]) == 0
    rows = ops_report.read(out / "ops.json")["cases"][0]["operators"]
    bundled = [r for r in rows if r["repro"]]
    assert bundled and all(r["op"] == "aten.conv_transpose1d.default" for r in bundled)
    assert sorted(p.name.split("-", 1)[1] for p in out.iterdir() if p.is_dir()) == ["conv_transpose1d"] * len(bundled)
    again = tmp_path / "again"
    assert cli.main(["ops", "--case", "decode_2s", *PINNED, "--output", str(again), "--repro", "all", "--repro-for", "aten."]) == 0
    rows = ops_report.read(again / "ops.json")["cases"][0]["operators"]
    assert len([p for p in again.iterdir() if p.is_dir()]) == len([r for r in rows if r["repro"]]) == 20  # the first 10, and 10 more asked for
