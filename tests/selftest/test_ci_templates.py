"""The CI templates (.github/workflows/ascend-gate.yml, gpu-gate.yml and the upgrade-gate.yml they
call) keep their promises: both stacks through tox, the verdict, reports uploaded whatever happened,
and a red job on REGRESSED. A structural check with PyYAML (nothing runs on a runner here), except
the step that decides the job's colour, whose script is run with each verdict exit code."""

from __future__ import annotations

import configparser
import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.selftest
ROOT = Path(__file__).resolve().parents[2]

WORKFLOWS = ROOT / ".github" / "workflows"
# caller -> (runner label, workflow_dispatch inputs naming the candidate's specs)
CALLERS = {
    "ascend-gate.yml": ("ascend", {"torch_spec", "torch_npu_spec", "transformers_spec"}),
    "gpu-gate.yml": ("gpu", {"torch_spec", "transformers_spec"}),
}
CANN_SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
VERDICT_EXIT = {"SAFE": 0, "REGRESSED": 1, "usage error": 2, "INCONCLUSIVE": 3}


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def _triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True)) or {}  # YAML 1.1 reads a bare `on:` key as true


def _called(caller: dict) -> tuple[dict, dict]:
    """(the caller's gate job, the workflow it runs): a local reusable workflow is followed."""
    job = caller["jobs"]["gate"]
    uses = job.get("uses", "")
    if uses.startswith("./.github/workflows/"):
        return job, yaml.safe_load((ROOT / uses[2:]).read_text(encoding="utf-8"))
    return job, {"jobs": {"gate": job}}


def _index(steps: list[dict], predicate) -> int | None:
    return next((i for i, step in enumerate(steps) if predicate(step)), None)


def _fail_step_script(steps: list[dict], verdict_id: str | None) -> dict | None:
    ref = f"steps.{verdict_id}.outputs.rc" if verdict_id else None
    return next((s for s in steps if ref and ref in json.dumps(s.get("env", {})) and "run" in s), None)


def _exit_code(step: dict, rc: str, fail_on_inconclusive: str = "true") -> int:
    env = {"VERDICT_RC": rc, "FAIL_ON_INCONCLUSIVE": fail_on_inconclusive, "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], env=env, capture_output=True).returncode


def problems(name: str, caller: dict, called: dict) -> list[str]:
    """Every promise of the template that `caller` (and the workflow it calls) does not keep."""
    label, spec_inputs = CALLERS[name]
    out = []
    triggers = _triggers(caller)
    inputs = set(((triggers.get("workflow_dispatch") or {}).get("inputs") or {}))
    if not spec_inputs <= inputs:
        out.append(f"workflow_dispatch lacks inputs {sorted(spec_inputs - inputs)}")
    if "constraints/current.txt" not in ((triggers.get("pull_request") or {}).get("paths") or []):
        out.append("no pull_request trigger on constraints/current.txt")
    job, workflow = caller["jobs"]["gate"], called
    with_ = job.get("with", {})
    gate = next(iter(workflow["jobs"].values()))
    runner = with_.get("runner") or json.dumps(gate.get("runs-on"))
    if not {"self-hosted", label} <= set(json.loads(runner)):
        out.append(f"runner labels {runner} lack self-hosted and {label}")
    declared = (_triggers(workflow).get("workflow_call") or {}).get("inputs") or {}
    if "uses" in job:
        out += [f"passes undeclared input {k}" for k in with_ if k not in declared]
        out += [f"misses required input {k}" for k, v in declared.items() if v.get("required") and k not in with_]
    steps = gate.get("steps", [])
    run = lambda s: s.get("run", "")  # noqa: E731
    where = {env: _index(steps, lambda s, env=env: f"tox -e {env}" in run(s)) for env in ("current", "candidate", "verdict")}
    for env, i in where.items():
        if i is None:
            out.append(f"no step runs tox -e {env}")
    if None not in where.values() and not where["current"] < where["candidate"] < where["verdict"]:
        out.append("tox envs do not run in the order current, candidate, verdict")
    for env, variables in (("current", ("TORCH_SPEC",)), ("candidate", ("TORCH_SPEC", "TRANSFORMERS_SPEC"))):
        if where[env] is not None:
            out += [f"the {env} step does not set {v}" for v in variables if f"{v}=" not in run(steps[where[env]])]
    if label == "ascend":
        if CANN_SET_ENV not in json.dumps(with_):
            out.append(f"CANN's {CANN_SET_ENV} is not the setup script")
        for env, i in where.items():
            if i is not None and env != "verdict" and 'source "$SETUP_SCRIPT"' not in run(steps[i]):
                out.append(f"the {env} step does not source the setup script")
            if env == "candidate" and i is not None and "TORCH_NPU_SPEC=" not in run(steps[i]):
                out.append("the candidate step does not set TORCH_NPU_SPEC")
    verdict = steps[where["verdict"]] if where["verdict"] is not None else {}
    if "output/verdict/verdict.md" not in run(verdict) or "$GITHUB_STEP_SUMMARY" not in run(verdict):
        out.append("verdict.md is not appended to the job summary")
    upload = _index(steps, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@v4"))
    if upload is None:
        out.append("no actions/upload-artifact@v4 step")
    else:
        if "always()" not in str(steps[upload].get("if", "")):
            out.append("the upload step does not run if: always()")
        paths = str((steps[upload].get("with") or {}).get("path", ""))
        out += [f"the upload misses {p}" for p in ("output/current", "output/candidate", "output/verdict") if p not in paths]
        if where["verdict"] is not None and upload < where["verdict"]:
            out.append("the upload runs before the verdict")
    fail = _fail_step_script(steps, verdict.get("id"))
    if fail is None:
        out.append("no step fails the job from the verdict's exit code")
    else:
        codes = {what: _exit_code(fail, str(rc)) for what, rc in VERDICT_EXIT.items()}
        if codes["SAFE"] != 0 or codes["REGRESSED"] == 0 or codes["usage error"] == 0 or _exit_code(fail, "") == 0:
            out.append(f"the job's colour does not follow the verdict: exit codes {codes}")
        if _exit_code(fail, "3", "false") != 0:
            out.append("INCONCLUSIVE fails the job although fail_on_inconclusive is false")
    return out


@pytest.mark.parametrize("name", sorted(CALLERS))
def test_template_keeps_its_promises(name):
    caller = _load(name)
    job, called = _called(caller)
    assert problems(name, caller, called) == []


def _steps(called: dict) -> list[dict]:
    return next(iter(called["jobs"].values()))["steps"]


MUTATIONS = {
    "verdict step removed": lambda steps: [s for s in steps if "tox -e verdict" not in s.get("run", "")],
    "upload without if: always()": lambda steps: [{k: v for k, v in s.items() if k != "if"} for s in steps],
    "upload-artifact v3": lambda steps: [{**s, "uses": s["uses"].replace("@v4", "@v3")} if "upload-artifact" in str(s.get("uses")) else s for s in steps],
    "REGRESSED reads green": lambda steps: [{**s, "run": "echo verdict: $VERDICT_RC"} if "VERDICT_RC" in json.dumps(s.get("env", {})) else s for s in steps],
    "candidate env not run": lambda steps: [s for s in steps if "tox -e candidate" not in s.get("run", "")],
    "verdict.md not in the summary": lambda steps: [{**s, "run": s["run"].replace("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT")}
                                                    if "tox -e verdict" in s.get("run", "") else s for s in steps],
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("name", sorted(CALLERS))
def test_the_check_fails_on_a_broken_template(name, mutation):
    caller = _load(name)
    job, called = _called(caller)
    broken = copy.deepcopy(called)
    gate = next(iter(broken["jobs"].values()))
    gate["steps"] = MUTATIONS[mutation](gate["steps"])
    assert problems(name, caller, broken), f"{mutation} went unnoticed"


def test_the_check_fails_without_the_platform_setup():
    caller = copy.deepcopy(_load("ascend-gate.yml"))
    caller["jobs"]["gate"]["with"]["setup_script"] = ""
    _, called = _called(caller)
    assert any("set_env.sh" in p for p in problems("ascend-gate.yml", caller, called))


def test_tox_has_the_envs_and_outputs_the_workflows_use():
    """The workflows rely on tox.ini: gate envs write output/<env>/ with JUnit XML and Allure
    results, and the verdict env compares output/current with output/candidate."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    for env in ("current", "candidate", "verdict"):
        assert tox.has_section(f"testenv:{env}"), env
    gate = tox.get("testenv", "commands")
    for needle in ("--csm-output={toxinidir}/output/{envname}", "--junitxml=", "--alluredir="):
        assert needle in gate, needle
    verdict = " ".join(tox.get("testenv:verdict", "commands").split())
    assert "python -m csm_conformance verdict --before" in verdict
    for needle in ("output/{env:CSM_VERDICT_BEFORE:current}", "output/{env:CSM_VERDICT_AFTER:candidate}", "--output {toxinidir}/output/verdict",
                   "--before-python {toxworkdir}/{env:CSM_VERDICT_BEFORE:current}/bin/python"):
        assert needle in verdict, needle
