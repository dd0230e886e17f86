"""One run of the real suite in a subprocess, and what it left behind (exit code, failures by
gate, output, performance report), read back the way a user would read it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.suite.options import ROOT


@dataclass
class Run:
    """What one subprocess run of the suite left behind."""
    exit_code: int
    seconds: float
    failures: list[tuple[str, str, str]]  # (gate, test id, failure text)
    output: str
    perf_report: dict | None


def _gate_of(classname: str) -> str:
    return "performance" if "test_performance" in classname else "accuracy" if "test_accuracy" in classname else classname


def run_suite(workdir: Path, args: list[str], faults: list[str] = (), baselines: Path | None = None,
              timeout_s: float | None = None, extra: list[str] = ()) -> Run:
    """The real conformance suite in a subprocess, writing everything under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "conformance"), "-c", str(ROOT / "pytest.ini"),
           "--rootdir", str(ROOT), "-p", "no:cacheprovider", f"--csm-output={workdir / 'output'}",
           f"--junitxml={junit}", *args, *extra]
    cmd += [f"--csm-fault={f}" for f in faults]
    if baselines is not None:
        cmd.append(f"--csm-baselines={baselines}")
    if timeout_s:  # the test body only: a model load slowed by a busy machine is not the hang
        cmd += ["--timeout", f"{timeout_s:g}", "-o", "timeout_method=signal", "-o", "timeout_func_only=true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}  # the catalogue's settings only
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    (workdir / "pytest.log").write_text(" ".join(shlex.quote(c) for c in cmd) + "\n\n" + output)
    failures = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            for bad in list(case.iter("failure")) + list(case.iter("error")):
                text = (bad.get("message") or "") + "\n" + (bad.text or "")
                failures.append((_gate_of(case.get("classname", "")), f"{case.get('name')}", text))
    report_path = workdir / "output" / "performance_benchmark.json"
    perf = json.loads(report_path.read_text()) if report_path.is_file() else None
    return Run(proc.returncode, seconds, failures, output, perf)


def _first_line(run: Run, gate: str) -> str:
    """The first failure's first line in `gate` ("any": in any gate), else the setup error's line."""
    for failed_gate, _test, text in run.failures:
        if gate in (failed_gate, "any"):
            line = text.strip().splitlines()[0] if text.strip() else ""
            return line.removeprefix("Failed: ")
    lines = run.output.splitlines()
    for line in lines:  # a setup error: the one line the suite printed
        if "csm-conformance:" in line and ("ERROR" in line or "Exit" in line):
            return line.strip(" !")
    if run.exit_code != 0:  # something else broke the run: the last exception line it printed
        crash = next((ln.strip() for ln in reversed(lines) if re.match(r"^(INTERNALERROR> )?\w*(Error|Exception)\b", ln.strip())), None)
        if crash:
            return f"the run crashed (exit {run.exit_code}): {crash}"
    return f"no failure (exit {run.exit_code})"

