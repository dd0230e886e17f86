"""The one command line (issue 20, items 6 and 7a): `csm-conformance <verb>` and its twin
`python -m csm_conformance <verb>` (csm_conformance/tools/cli.py), and the A/B command taking the
gate's `--csm-*` options, so that `tox -e verdict -- --csm-device npu:0 --csm-require-device` hands
one argument list to the gate runs and to the A/B comparison alike. (Each verb's --help from outside
the repository, through both forms: test_command_line.py.)"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from csm_conformance.suite.options import OPTIONS
from csm_conformance.tools import cli
from csm_conformance.tools.ab import cli as ab_cli

pytestmark = pytest.mark.selftest

CONSOLE_SCRIPT = Path(sys.executable).with_name("csm-conformance")
GATE_SHARED = {"--csm-model": "model", "--csm-device": "device", "--csm-dtype": "dtype", "--csm-require-device": "require_device"}
AB_REQUIRED = ["--before", sys.executable, "--after", sys.executable]


def test_the_help_lists_every_verb_with_its_line(tmp_path):
    done = subprocess.run([str(CONSOLE_SCRIPT), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = " ".join(done.stdout.split())  # argparse wraps the lines to the terminal's width
    for verb in cli.VERBS:
        assert f"{verb.name} {verb.summary}" in listed, verb.name
    assert {v.name for v in cli.VERBS} >= {"ab", "verdict", "promote", "first-run", "stack-range", "localize", "fault-catalogue",
                                           "ab-planted", "baselines-diff", "inference", "ops"}


@pytest.mark.parametrize("form", ["console script", "python -m"])
def test_an_unknown_verb_is_one_line_exit_2(form, tmp_path):
    command = [str(CONSOLE_SCRIPT)] if form == "console script" else [sys.executable, "-m", "csm_conformance"]
    done = subprocess.run([*command, "verdit", "--before", "x"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"csm-conformance: unknown verb 'verdit' (choose from {', '.join(v.name for v in cli.VERBS)})"]


def test_no_verb_is_exit_2_naming_the_verbs(capsys):
    assert cli.main([]) == 2
    assert "csm-conformance: missing verb (choose from ab, verdict" in capsys.readouterr().err


def test_a_verb_whose_module_is_missing_is_one_line_exit_2(monkeypatch, capsys):
    """A verb wired before its tool is installed (baselines-diff was) says so; it is no traceback."""
    monkeypatch.setitem(cli.BY_NAME, "later", cli.Verb("later", "csm_conformance.tools.no_such_tool", "not yet", "  none"))
    assert cli.main(["later", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["csm-conformance: verb 'later' is not available in this installation "
                                "(its module csm_conformance.tools.no_such_tool is missing)"]


def test_a_tools_exit_code_passes_through(tmp_path, capsys):
    """verdict: 2 on bad input, as documented (0 SAFE, 1 REGRESSED, 3 INCONCLUSIVE otherwise)."""
    missing = str(tmp_path / "absent")
    assert cli.main(["verdict", "--before", missing, "--after", missing, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("csm-conformance verdict: ")
    with pytest.raises(SystemExit) as exc:  # argparse's own error in the tool's parser, under the verb's name
        cli.main(["promote", "--no-such-option"])
    assert exc.value.code == 2 and "usage: csm-conformance promote" in capsys.readouterr().err


@pytest.mark.parametrize("old", ["ab", "ab.planted", "verdict", "localize", "fault_catalogue", "promote", "first_run", "stack_range"])
def test_the_per_tool_entry_modules_are_gone(old):
    """`python -m csm_conformance.<tool>` was replaced by the verbs; the tools themselves stay."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"csm_conformance.{old}")
    verb = cli.BY_NAME[old.replace(".", "-").replace("_", "-")]
    assert importlib.util.find_spec(verb.module) is not None, verb


@pytest.mark.parametrize("form", ["space", "equals"])
def test_the_ab_takes_the_gates_device_options(form):
    """--csm-model/--csm-device/--csm-dtype/--csm-require-device are the A/B's own options by the
    gate's names, in both spellings."""
    values = {"--csm-model": "random-full", "--csm-device": "npu:0", "--csm-dtype": "float16"}
    given = [part for flag, value in values.items() for part in ([flag, value] if form == "space" else [f"{flag}={value}"])]
    args = ab_cli.parser().parse_args([*AB_REQUIRED, "--output", "o", *given, "--csm-require-device"])
    assert (args.model, args.device, args.dtype, args.require_device) == ("random-full", "npu:0", "float16", True)
    plain = ab_cli.parser().parse_args([*AB_REQUIRED, "--output", "o", "--model", "random-full", "--device", "npu:0", "--dtype", "float16",
                                        "--require-device"])
    assert (plain.model, plain.device, plain.dtype, plain.require_device) == (args.model, args.device, args.dtype, args.require_device)


def test_the_ab_aliases_come_from_the_option_table(monkeypatch):
    """One table: every flag of suite/options.py OPTIONS is accepted by the A/B parser, and the
    shared four read the table's environment twins (CSM_DEVICE, ...)."""
    known = {s for action in ab_cli.parser()._actions for s in action.option_strings}
    assert {o.flag for o in OPTIONS} <= known
    for option in OPTIONS:
        if option.flag in GATE_SHARED:
            monkeypatch.setenv(option.env, "1" if option.kind == "bool" else "from-env")
    args = ab_cli.parser().parse_args([*AB_REQUIRED, "--output", "o"])
    assert (args.model, args.device, args.dtype, args.require_device) == ("from-env", "from-env", "from-env", True)


def test_other_gate_options_are_ignored_and_named_once(tmp_path, capsys):
    """The verdict env passes the gate's `--` arguments on: an A/B-irrelevant gate option (any
    --csm-* flag of the table) is no error; it is named once on stderr."""
    argv = [*AB_REQUIRED, "--output", str(tmp_path / "ab"), "--csm-device=cpu", "--csm-strict", "--csm-case", "short_en",
            "--csm-case=chinese", "--csm-perf-rounds", "5", "--workload", "short_32t"]
    args, *_ = ab_cli._arguments(argv)
    assert args.device == "cpu"
    assert capsys.readouterr().err.splitlines() == [
        "csm-conformance ab: ignoring gate-only options: --csm-strict, --csm-case, --csm-perf-rounds"]
    ab_cli._arguments([*AB_REQUIRED, "--output", str(tmp_path / "ab"), "--csm-device", "cpu"])
    assert capsys.readouterr().err == ""  # nothing ignored, nothing said


@pytest.mark.parametrize("extra", [["-m", "accuracy"], ["--csm-no-such-option"], ["stray"]])
def test_arguments_that_are_not_gate_options_stay_errors(tmp_path, extra):
    with pytest.raises(ab_cli.BadInput, match="unrecognized arguments"):
        ab_cli._arguments([*AB_REQUIRED, "--output", str(tmp_path / "ab"), *extra])


def test_the_ab_command_takes_the_gates_arguments_end_to_end(tmp_path):
    """As `tox -e verdict -- --csm-device cpu --csm-strict` runs it: the A/B through the verb gets
    past its arguments (here to the check of its interpreters, which stops it with exit 2)."""
    done = subprocess.run([str(CONSOLE_SCRIPT), "ab", "--before", str(tmp_path / "none"), "--after", sys.executable,
                           "--output", str(tmp_path / "ab"), "--csm-device", "cpu", "--csm-require-device", "--csm-strict"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["csm-conformance ab: ignoring gate-only options: --csm-strict",
                                        f"csm-conformance ab: --before {tmp_path / 'none'}: no such interpreter"]


def test_the_inference_verb_is_the_seeds_command_under_the_verbs_name(tmp_path, capsys):
    """`csm-conformance inference` is inference.py (docs/seed-commands.md): bad input, one line, exit 2."""
    assert cli.main(["inference", "--text", "hi", "--speaker", "3", "--output", str(tmp_path / "x.wav")]) == 2
    assert capsys.readouterr().err.splitlines() == ["csm-conformance inference: error: speaker must be one of 0, 1, got '3'"]
    assert not (tmp_path / "x.wav").exists()
