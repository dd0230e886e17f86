"""The stack-range tool resolves each row on its own: a fresh venv and one pip call with torch, the
suite and the row's transformers pin, so a row never judges what an earlier row left behind (after
transformers 5.25.0 brought `kernels`, an in-place downgrade kept it and the 4.52 row broke).
These tests check the commands the tool issues and how it names a red release; CI's step 4 runs
the tool for real on two rows."""

from __future__ import annotations

import pytest

from csm_conformance.tools import stack_range as sr

pytestmark = pytest.mark.selftest


@pytest.fixture
def commands(monkeypatch):
    """Every command the tool would run, none run: each 'succeeds'."""
    issued: list[list[str]] = []
    monkeypatch.setattr(sr, "_run", lambda cmd, log, cwd=None, env=None: issued.append([str(c) for c in cmd]) or 0)
    return issued


def test_a_row_is_one_pip_resolve_in_a_fresh_venv(tmp_path, commands):
    old = tmp_path / "venvs" / "torch-2.13.0-tf-4.52.4"
    (old / "lib").mkdir(parents=True)
    (old / "lib" / "kernels-0.19.1.dist-info").mkdir()  # what an earlier, newer install left behind
    python = sr.install_row(tmp_path, "2.13.0", "4.52.4", log=None)
    assert not (old / "lib" / "kernels-0.19.1.dist-info").exists(), "the row's venv was reused, not made anew"
    assert python == old / "bin" / "python"
    venv, *installs = commands
    assert venv[1:3] == ["-m", "venv"]
    assert len(installs) == 1, f"a row must be resolved by one pip call, got {installs}"
    pip = installs[0]
    assert pip[:4] == [str(python), "-m", "pip", "install"]
    assert "torch==2.13.0" in pip and "transformers==4.52.4" in pip
    assert pip[pip.index("-e") + 1] == f"{sr.REPO}[librosa]"  # the workaround of releases before 4.56


def test_a_release_with_no_workaround_installs_the_plain_suite(tmp_path, commands):
    sr.install_row(tmp_path, "2.13.0", "5.25.0", log=None)
    pip = commands[-1]
    assert pip[pip.index("-e") + 1] == str(sr.REPO)
    assert sr.workarounds("5.25.0") == [] and [w.extra for w in sr.workarounds("4.55.4")] == ["librosa"]


def test_a_failed_resolve_is_a_row_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(sr, "_run", lambda cmd, log, cwd=None, env=None: 1 if "pip" in cmd else 0)
    row = sr.run_release("2.13.0", "4.52.4", tmp_path, ["-m", "accuracy"], log=type("L", (), {"name": "log"})())
    assert row.result == "install failed" and "one call" in row.reason


def test_newest_is_resolved_at_run_time(monkeypatch):
    served = {"transformers": ["4.52.4", "5.24.0", "5.25.0", "5.26.0rc1"], "torch": ["2.13.0", "2.14.1", "2.15.0", "2.16.0.dev1"]}
    monkeypatch.setattr(sr, "available", lambda package: served[package])
    assert sr.select("newest", sr.available("transformers")) == ["5.25.0"]
    assert sr.select_torch("2.13.0,newest") == ["2.13.0", "2.15.0"]
    assert sr.select_torch("2.6.0") == ["2.6.0"]


def test_a_red_release_is_named_with_its_first_failing_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sr, "available", lambda package: ["4.57.6", "5.25.0"])
    reason = "1 failed, 34 passed: short_en/backbone_logits: cosine 0.9991 < 0.9999"
    monkeypatch.setattr(sr, "run_release", lambda torch, tf, *a, **k: sr.Row(torch, tf, "FAILED", reason, 1.0))
    rc = sr.main(["--transformers", "newest", "--workdir", str(tmp_path), "--output", str(tmp_path / "t.md")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 1
    assert last.startswith("NOT AS EXPECTED: transformers 5.25.0 on torch 2.13.0: FAILED: ") and "short_en/backbone_logits" in last


def test_a_known_break_that_fails_its_named_check_is_as_expected():
    known = sr.Row("2.13.0", "5.8.1", "FAILED", "17 failed: model/load_integrity: 1 tensor(s) missing", 1.0)
    other = sr.Row("2.13.0", "5.8.1", "FAILED", "17 failed: short_en/backbone_logits: cosine", 1.0)
    assert sr.judge_row(known).as_expected and not sr.judge_row(other).as_expected
