"""csm-conformance baselines-diff: did this change loosen an accuracy bound, change a golden
reference, slow a performance baseline or loosen a threshold, without saying so?

It compares a baselines directory (default `baselines/`) against a base, another directory
(`--base-baselines DIR`) or the same path at a git ref (`--base-ref origin/main`), and lists every
accuracy bound that got looser (in its metric's error form: METRICS knows the direction) or was
removed; every golden reference whose bytes changed or that was removed; every performance
baseline figure that got slower (larger; in host units when both sides timed the host probe) or
was removed; every pytest.ini threshold (THRESHOLDS, csm_perf_tolerance) that got looser, when
both sides have a pytest.ini beside their baselines. Additions are listed and never counted.

Acknowledgement, one rule: `--allow-loosened` (the workflow passes it when the pull request has the
label `baselines-loosened`), or `<baselines>/LOOSENED.md` non-empty and added or edited against
the base. Acknowledged items are still listed. docs/verdict.md has the whole story.
Exit codes: 0 nothing counted, or all of it acknowledged; 1 not acknowledged; 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from csm_conformance.accuracy.metrics import known, to_error
from csm_conformance.errors import UserError
from csm_conformance.performance.baselines import GATED, parse_tolerances

ACK_FILE = "LOOSENED.md"
LABEL = "baselines-loosened"
# pytest.ini threshold -> the direction in which it is looser
THRESHOLDS = {"csm_min_cosine": "lower", "csm_golden_min_cosine": "lower", "csm_golden_max_rel_error": "higher",
              "csm_bound_margin": "higher", "csm_perf_noise_factor": "higher"}


class DiffError(UserError, ValueError):
    """A baselines directory, git ref or stored file that cannot be read; the message is one line."""


@dataclass
class Item:
    kind: str  # bound | golden | performance | threshold
    key: str  # <file under the baselines directory>: <what in it>
    change: str  # looser | slower | changed | removed | added
    before: str | None
    after: str | None

    @property
    def counts(self) -> bool:  # needs an acknowledgement: all but an addition (which judges more, not less)
        return self.change != "added"


@dataclass
class Result:
    base: str
    baselines: str
    items: list[Item] = field(default_factory=list)
    allowed: bool = False  # --allow-loosened
    ack_file: bool = False  # LOOSENED.md added or edited against the base

    @property
    def counted(self) -> list[Item]:
        return [i for i in self.items if i.counts]

    @property
    def acknowledged_by(self) -> str | None:
        return (f"--allow-loosened (the pull request's label {LABEL})" if self.allowed
                else f"{ACK_FILE} changed in this diff" if self.ack_file else None)

    @property
    def status(self) -> str:
        return "clean" if not self.counted else "acknowledged" if self.acknowledged_by else "loosened"

    def headline(self) -> str:
        if not self.counted:
            return f"nothing loosened, slower or changed against {self.base}"
        kinds = ", ".join(f"{n} {k}" for k in ("bound", "golden", "performance", "threshold") if (n := sum(i.kind == k for i in self.counted)))
        how = (f"acknowledged by {self.acknowledged_by}" if self.acknowledged_by
               else f"NOT acknowledged (add {ACK_FILE} to the baselines directory, or the label {LABEL})")
        return f"{len(self.counted)} item(s) loosened, slower or changed against {self.base} ({kinds}); {how}"


def _fmt(value) -> str | None:
    return None if value is None else f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffError(f"{path} is not readable JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise DiffError(f"{path} is not a JSON object")
    return doc


def _files(root: Path, sub: str, pattern: str) -> dict[str, Path]:
    top = root / sub
    return {p.relative_to(root).as_posix(): p for p in sorted(top.rglob(pattern)) if p.is_file()} if top.is_dir() else {}


def _pairs(base: dict, run: dict):
    for key in sorted(set(base) | set(run)):
        yield key, base.get(key), run.get(key)


def _bounds(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    cases = _json(path).get("cases")
    if not isinstance(cases, dict):
        raise DiffError(f"{path} has no 'cases': not a bounds file")
    out = {}
    for case, checks in cases.items():
        for check, metrics in (checks or {}).items():
            for metric, entry in (metrics or {}).items():
                bound = entry.get("bound") if isinstance(entry, dict) else None
                if not isinstance(bound, (int, float)):
                    raise DiffError(f"{path} has a bad entry at {case}/{check}/{metric}")
                out[f"{case}/{check}/{metric}"] = float(bound)
    return out


def accuracy_items(base: Path, run: Path) -> list[Item]:
    items = []
    for rel, b_path, r_path in _pairs(_files(base, "accuracy", "*.json"), _files(run, "accuracy", "*.json")):
        for what, old, new in _pairs(_bounds(b_path), _bounds(r_path)):
            metric = what.rsplit("/", 1)[1]
            if new is None or old is None:
                change = "removed" if new is None else "added"
            elif known(metric):
                change = "looser" if to_error(metric, new) > to_error(metric, old) else None
            else:
                change = "changed" if new != old else None
            if change:
                items.append(Item("bound", f"{rel}: {what}", change, _fmt(old), _fmt(new)))
    return items


def golden_items(base: Path, run: Path) -> list[Item]:
    digest = lambda path: None if path is None else "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # noqa: E731
    items = []
    for rel, b_path, r_path in _pairs(_files(base, "golden", "*"), _files(run, "golden", "*")):
        old, new = digest(b_path), digest(r_path)
        if old != new:
            items.append(Item("golden", rel, "removed" if new is None else "added" if old is None else "changed", old, new))
    return items


def _figures(path: Path | None) -> dict[str, dict]:
    """{case/figure: figure} of a performance baseline file (pytest-benchmark document)."""
    if path is None:
        return {}
    benchmarks = _json(path).get("benchmarks")
    if not isinstance(benchmarks, list):
        raise DiffError(f"{path} has no 'benchmarks': not a performance baseline")
    out = {}
    for i, bench in enumerate(benchmarks):
        extra = (bench or {}).get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(extra, dict) or not isinstance(extra.get("figures"), dict):
            raise DiffError(f"{path}: benchmarks[{i}] has no extra_info.figures")
        for name, fig in extra["figures"].items():
            if name in GATED and isinstance(fig, dict) and isinstance(fig.get("value"), (int, float)):
                out[f"{extra.get('case')}/{name}"] = fig
    return out


def _host_units(old: dict, new: dict) -> tuple[float, float, str]:
    """Both values in host units (value / host probe) when both sides timed the probe."""
    hb, hn = old.get("host_us"), new.get("host_us")
    if isinstance(hb, (int, float)) and isinstance(hn, (int, float)) and hb > 0 and hn > 0:
        return old["value"] / hb, new["value"] / hn, " per host-probe us"
    return float(old["value"]), float(new["value"]), ""


def performance_items(base: Path, run: Path) -> list[Item]:
    items = []
    for rel, b_path, r_path in _pairs(_files(base, "performance", "*.json"), _files(run, "performance", "*.json")):
        for what, old, new in _pairs(_figures(b_path), _figures(r_path)):
            if old is None or new is None:
                items.append(Item("performance", f"{rel}: {what}", "removed" if new is None else "added",
                                  _fmt((old or {}).get("value")), _fmt((new or {}).get("value"))))
                continue
            a, b, unit = _host_units(old, new)
            if b > a:  # every gated figure is better lower (GATED)
                items.append(Item("performance", f"{rel}: {what}", "slower", _fmt(a) + unit, _fmt(b) + unit))
    return items


def _ini(text: str | None, where: str) -> dict[str, str] | None:
    if text is None:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise DiffError(f"{where} is not a readable ini file ({str(exc).splitlines()[0]})") from None
    return dict(parser["pytest"]) if parser.has_section("pytest") else {}


def _number(value: str | None, where: str) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        raise DiffError(f"{where}: {value!r} is not a number") from None

def threshold_items(base_text: str | None, run_text: str | None, name: str = "pytest.ini") -> list[Item]:
    base, run = _ini(base_text, f"the base's {name}"), _ini(run_text, name)
    if base is None or run is None:
        return []
    items = []
    for key, looser in THRESHOLDS.items():
        old, new = _number(base.get(key), f"the base's {name} {key}"), _number(run.get(key), f"{name} {key}")
        if old is not None and new is not None and (new < old if looser == "lower" else new > old):
            items.append(Item("threshold", f"{name}: {key}", "looser", _fmt(old), _fmt(new)))
        elif old is not None and new is None:
            items.append(Item("threshold", f"{name}: {key}", "removed", _fmt(old), None))
    try:
        split = lambda v: [e for e in (v or "").split(",") if e.strip()]  # noqa: E731
        old_tol, new_tol = parse_tolerances(split(base.get("csm_perf_tolerance"))), parse_tolerances(split(run.get("csm_perf_tolerance")))
    except ValueError as exc:
        raise DiffError(f"{name} csm_perf_tolerance: {exc}") from None
    show = lambda t: None if t is None else f"{t[0]:.0%}" + (f"+{t[1]:g}MiB" if t[1] else "")  # noqa: E731
    for key, old, new in _pairs(old_tol, new_tol):
        if old is not None and (new is None or new[0] > old[0] or (new[1] or 0) > (old[1] or 0)):
            items.append(Item("threshold", f"{name}: csm_perf_tolerance {key}", "removed" if new is None else "looser", show(old), show(new)))
    return items


def _read(path: Path | None) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path is not None and path.is_file() else None


def compare(run: Path, base: Path, allow: bool = False, base_label: str | None = None, base_ini: str | None = None) -> Result:
    """Everything in `run` (a baselines directory) that is looser, slower or changed against `base`;
    the thresholds from the pytest.ini beside each (`base_ini`: the base's text, when not beside it)."""
    run, base = Path(run), Path(base)
    for label, path in (("baselines", run), ("base baselines", base)):
        if not path.is_dir():
            raise DiffError(f"{label} {path} is not a directory")
    result = Result(base_label or str(base), str(run), allowed=allow)
    inis = (base_ini or _read(base.parent / "pytest.ini"), _read(run.parent / "pytest.ini"))
    result.items = accuracy_items(base, run) + golden_items(base, run) + performance_items(base, run) + threshold_items(*inis)
    ack = (_read(run / ACK_FILE) or "").strip()
    result.ack_file = bool(ack) and ack != (_read(base / ACK_FILE) or "").strip()
    return result


def _git(top: Path, *args: str, binary: bool = False):
    try:
        proc = subprocess.run(["git", "-C", str(top), *args], capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DiffError(f"git {' '.join(args)} could not run ({exc})") from None
    return proc.returncode, proc.stdout if binary else proc.stdout.decode(errors="replace")


def from_ref(run: Path, ref: str, into: Path) -> tuple[Path, str | None]:
    """The base baselines directory as `ref` holds it (extracted under `into`), and its pytest.ini."""
    run = Path(run).resolve()
    rc, top = _git(run, "rev-parse", "--show-toplevel")
    if rc != 0:
        raise DiffError(f"--base-ref {ref}: {run} is not in a git repository")
    top = Path(top.strip())
    if _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")[0] != 0:
        raise DiffError(f"--base-ref {ref}: no such commit in {top} (fetch it first, e.g. git fetch origin main)")
    rel = run.relative_to(top).as_posix()
    base = into / rel
    base.mkdir(parents=True, exist_ok=True)
    if _git(top, "ls-tree", "--name-only", ref, "--", rel)[1].strip():
        rc, data = _git(top, "archive", "--format=tar", ref, "--", rel, binary=True)
        if rc != 0:
            raise DiffError(f"--base-ref {ref}: git archive of {rel} failed")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    ini = (run.parent / "pytest.ini").relative_to(top).as_posix()
    rc, text = _git(top, "show", f"{ref}:{ini}")
    return base, text if rc == 0 else None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise DiffError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="csm-conformance baselines-diff", description=__doc__.split("\n\n")[0])
    p.add_argument("--baselines", default="baselines", help="the baselines directory of this change (default baselines/)")
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--base-baselines", default=None, help="the base's baselines directory")
    base.add_argument("--base-ref", default=None, help="a git ref whose copy of the same path is the base (e.g. origin/main)")
    p.add_argument("--allow-loosened", action="store_true", help=f"acknowledge what is listed (the pull request has the label {LABEL})")
    p.add_argument("--output", default=None, help="write baselines-diff.md and baselines-diff.json there")
    return p


def to_json(result: Result) -> dict:
    return {"status": result.status, "headline": result.headline(), "base": result.base, "baselines": result.baselines,
            "acknowledged_by": result.acknowledged_by,
            "items": [{**asdict(i), "counts": i.counts} for i in result.items]}


def table(items: list[Item]) -> list[str]:
    lines = ["| what | item | change | before | after |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {i.kind} | `{i.key}` | {i.change} | {i.before or '-'} | {i.after or '-'} |" for i in items]


def to_markdown(result: Result) -> str:
    lines = [f"# Baselines against {result.base}: {result.status}", "", result.headline(), ""]
    if result.items:
        lines += table(result.items) + [""]
    lines += [f"Acknowledge with a non-empty `{ACK_FILE}` in the baselines directory, added or edited in the same change, or the "
              f"pull request label `{LABEL}` (`--allow-loosened`). Additions are listed, never counted."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        run = Path(args.baselines)
        with tempfile.TemporaryDirectory(prefix="csm-baselines-base-") as tmp:
            if not run.is_dir():
                raise DiffError(f"--baselines {run} is not a directory")
            base, base_ini = from_ref(run, args.base_ref, Path(tmp)) if args.base_ref else (Path(args.base_baselines), None)
            result = compare(run, base, args.allow_loosened, args.base_ref or args.base_baselines, base_ini)
    except (DiffError, OSError) as exc:
        print(f"csm-conformance baselines-diff: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", file=sys.stderr)
        return 2
    print(f"csm-conformance baselines-diff: {result.headline()}")
    for i in result.items[:30]:
        print(f"  {i.kind:<11} {i.change:<8} {i.key}: {i.before or '-'} -> {i.after or '-'}")
    if len(result.items) > 30:
        print(f"  ... and {len(result.items) - 30} more (see the report)")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "baselines-diff.md").write_text(to_markdown(result))
        (out / "baselines-diff.json").write_text(json.dumps(to_json(result), indent=2) + "\n")
        print(f"report: {out / 'baselines-diff.md'}")
    return 1 if result.status == "loosened" else 0

