"""The stack fingerprint: every distribution on the model's path with its version, and the
accelerator's own software (CUDA runtime and driver, CANN toolkit and driver).

Why: a "transformers upgrade" is rarely one package. transformers 5.25.0 brought `kernels` and
needs a huggingface_hub two majors newer than 4.57 did, and an Ascend team's CANN upgrade changes
no Python package at all. Every report names the whole stack it ran on, and the verdict starts
with what changed between the two stacks, so a reader sees what was really swapped.

The distributions listed are the installed closure of torch's and transformers' declared
requirements (markers evaluated, extras not followed), plus the packages that sit on the model's
path without being declared by either (torch_npu, torchair, accelerate, librosa, kernels) when they
are installed. The suite's own version is recorded beside them ("suite"), not its test tools.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import os
import platform
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

ROOTS = ("torch", "transformers")
# On the model's path, but declared by neither root (or only as an extra), when installed.
OPTIONAL_ROOTS = ("torch-npu", "torchair", "accelerate", "librosa", "kernels", "soundfile")
# Environment variables that select which CUDA / CANN libraries a process loads: two runs with the
# same Python packages and a different value here ran on different stacks.
LIBRARY_VARIABLES = ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH", "ASCEND_AICPU_PATH",
                     "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH")
# Code Python runs at start-up from the path (site-packages or PYTHONPATH): a sitecustomize that
# replaces a kernel changes the stack as much as a new wheel does, with no package version to show it.
STARTUP_HOOKS = ("sitecustomize", "usercustomize")


def canonical(name: str) -> str:
    """PEP 503 normalised name: 'Torch_NPU' and 'torch-npu' are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str) -> md.Distribution | None:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def requirements_of(dist: md.Distribution) -> list[Requirement]:
    """The distribution's declared requirements that apply here (markers true, no extra)."""
    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(req)
    return out


def closure(roots: tuple[str, ...] = ROOTS, optional: tuple[str, ...] = OPTIONAL_ROOTS) -> dict[str, md.Distribution]:
    """Every installed distribution reachable from the roots, by canonical name."""
    found: dict[str, md.Distribution] = {}
    todo = [canonical(r) for r in (*roots, *optional)]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        dist = _distribution(name)
        if dist is None:
            continue
        found[name] = dist
        todo += [canonical(req.name) for req in requirements_of(dist)]
    return found


def distributions() -> dict[str, str]:
    """{canonical name: version} of the stack's installed closure, sorted by name."""
    return {name: dist.version for name, dist in sorted(closure().items())}


def _read_first(paths: list[Path], pattern: str) -> str | None:
    for path in paths:
        try:
            match = re.search(pattern, path.read_text(errors="replace"), re.MULTILINE)
        except OSError:
            continue
        if match:
            return match.group(1).strip()
    return None


def _torch_npu_cann() -> dict[str, str]:
    """CANN and driver versions as torch_npu reports them (torch_npu.npu.utils.get_cann_version,
    documented for CANN 8.1.RC1 and later; '' where it cannot tell). Only when torch_npu is already
    imported (an npu run): it is never imported for this."""
    module = sys.modules.get("torch_npu")
    get = getattr(getattr(getattr(module, "npu", None), "utils", None), "get_cann_version", None)
    if get is None:
        return {}
    found = {}
    for key, component in (("cann_toolkit", "CANN"), ("ascend_driver", "DRIVER")):
        try:
            value = get(module=component)
        except Exception:  # an older torch_npu or a CANN it cannot read: the install-info files below
            continue
        if value:
            found[key] = str(value)
    return found


def _cann_versions() -> dict[str, str]:
    """CANN toolkit and driver versions: torch_npu's own answer where it gives one, else read as
    the toolkit records them (its install-info files, which torch_npu reads too)."""
    reported = _torch_npu_cann()
    if "cann_toolkit" in reported and "ascend_driver" in reported:
        return reported
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH") or "/usr/local/Ascend/ascend-toolkit/latest"
    arch = f"{platform.machine()}-linux"
    toolkit = _read_first([Path(home) / arch / "ascend_toolkit_install.info", Path(home) / "ascend_toolkit_install.info",
                           Path(home) / "version.cfg"], r"^(?:version|Version)\s*=\s*(.+)$")
    driver = _read_first([Path("/usr/local/Ascend/driver/version.info")], r"^Version\s*=\s*(.+)$")
    return {**{k: v for k, v in (("cann_toolkit", toolkit), ("ascend_driver", driver)) if v}, **reported}


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def accelerator(device_type: str) -> dict[str, str]:
    """The device type and its own software versions (none for the CPU)."""
    info = {"type": device_type}
    if device_type == "cuda":
        import torch

        info["cuda_runtime"] = str(torch.version.cuda)
        driver = _nvidia_driver()
        if driver:
            info["cuda_driver"] = driver
        if torch.backends.cudnn.is_available():
            info["cudnn"] = str(torch.backends.cudnn.version())
    elif device_type == "npu":
        info.update(_cann_versions())
    return info


def _suite_version() -> str | None:
    dist = _distribution("csm-conformance")
    return dist.version if dist else None


def library_environment() -> dict[str, str]:
    """The library-selecting variables that are set, and each start-up hook Python ran (its file
    and the start of its SHA-256), under 'startup:<module>'."""
    import hashlib

    found = {k: os.environ[k] for k in LIBRARY_VARIABLES if os.environ.get(k)}
    for name in STARTUP_HOOKS:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            try:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
            except OSError:
                digest = "unreadable"
            found[f"startup:{name}"] = f"{path} (sha256 {digest})"
    return found


def fingerprint(device_type: str = "cpu") -> dict:
    """What the reports store under "stack" (and the A/B workers send): the Python version, the
    distributions, the accelerator's software and the library-selecting environment."""
    return {
        "python": platform.python_version(),
        "suite": _suite_version(),
        "distributions": distributions(),
        "accelerator": accelerator(device_type),
        "environment": library_environment(),
    }


@cache
def _run_fingerprint(device_type: str) -> dict:
    return fingerprint(device_type)


def run_fingerprint(device_type: str) -> dict:
    """fingerprint(device_type), computed once per process (the header and both reports share it;
    nvidia-smi is not run twice); a copy, so a reader may change it."""
    return copy.deepcopy(_run_fingerprint(device_type))


SHORT = ("torch", "torch-npu", "transformers", "huggingface-hub", "tokenizers", "kernels")


def short_line(fp: dict) -> str:
    """The few packages a reader asks about first, and the accelerator's software, on one line."""
    dists = fp.get("distributions") or {}
    packages = [f"{name} {dists[name]}" for name in SHORT if name in dists]
    accel = fp.get("accelerator") or {}
    extra = [f"{key} {value}" for key, value in accel.items() if key != "type"]
    return ", ".join(packages + extra)


def diff(before: dict | None, after: dict | None) -> list[tuple[str, str | None, str | None]]:
    """(what, before, after) for every entry that differs between two fingerprints: the Python
    version, each distribution (None where absent), each accelerator field and library variable
    (named 'accelerator.<field>' and 'env.<VARIABLE>'). Empty when both stacks are the same."""
    before, after = before or {}, after or {}
    rows: list[tuple[str, str | None, str | None]] = []
    if before.get("python") != after.get("python"):
        rows.append(("python", before.get("python"), after.get("python")))
    for section, prefix in (("distributions", ""), ("accelerator", "accelerator."), ("environment", "env.")):
        a, b = before.get(section) or {}, after.get(section) or {}
        rows += [(prefix + key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return rows


def diff_markdown(rows: list[tuple[str, str | None, str | None]]) -> list[str]:
    """The stack diff as a Markdown table ('-' for absent), or one line saying nothing differs."""
    if not rows:
        return ["The two stacks are the same (packages, accelerator software and library variables)."]
    lines = ["| what | before | after |", "| --- | --- | --- |"]
    lines += [f"| {what} | {a or '-'} | {b or '-'} |" for what, a, b in rows]
    return lines
