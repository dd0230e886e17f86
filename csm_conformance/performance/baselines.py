"""Stored performance baselines and the comparison that gates a run against them.

A baseline file is a pytest-benchmark JSON document (machine_info, commit_info, benchmarks with
stats and extra_info) for one (model, device fingerprint, dtype, mode), under
baselines/performance/<model>/<fingerprint>/<dtype>-<mode>.json, plus a `csm_baseline` block with
the software versions and the date. pytest-benchmark's own tools read it as they read any saved
run (`--benchmark-compare=<file>`, `pytest-benchmark compare <file> ...`); the figures it does not
know (RTF, TTFA, per-frame latency, peak memory) live in each benchmark's extra_info and are
compared here.

A figure's tolerance is never tighter than its noise: the configured tolerance for its class
(time, memory, load), widened to `noise_factor` times the larger coefficient of variation of the
baseline's and today's rounds. A gate below its own noise would only generate false alarms. But
noise may widen a tolerance only up to `noise_cap` (50 % by default): on a loaded 2-core machine
the CV once widened a time tolerance to +178 %, and a planted 2.5x slowdown passed. A regression
that large is never noise; a configured tolerance above the cap still applies as set.

A time figure is compared in host units where the host-speed probe applies (host_speed.py; the
CPU by default): a shared VM drifts by tens of percent within an hour, and a baseline from a fast
hour would otherwise fail clean runs in a slow one.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from csm_conformance.baseline_files import BaselineError, read_baseline_json
from csm_conformance.runtime import host_speed

SCHEMA = 1
# gated figure -> (tolerance class, which direction is better, unit shown)
GATED = {
    "rtf": ("time", "lower", ""),
    "ttfa_ms": ("time", "lower", "ms"),
    "prefill_ms": ("time", "lower", "ms"),
    "frame_ms_median": ("time", "lower", "ms"),
    "frame_ms_p90": ("time", "lower", "ms"),
    "peak_memory_mb": ("memory", "lower", "MiB"),
    "load_s": ("load", "lower", "s"),
}
TOLERANCE_CLASSES = ("time", "memory", "load")


def fingerprint_slug(fingerprint: str) -> str:
    """'cuda|NVIDIA H100 80GB HBM3|x1' -> 'cuda-nvidia-h100-80gb-hbm3-x1' (a directory name)."""
    return re.sub(r"[^a-z0-9]+", "-", fingerprint.lower()).strip("-")


def baseline_path(baselines_dir: Path, model_key: str, fingerprint: str, dtype: str, mode: str) -> Path:
    return Path(baselines_dir) / "performance" / model_key / fingerprint_slug(fingerprint) / f"{dtype}-{mode}.json"


FIGURE_KEYS = (*GATED, "throughput_fps")  # a tolerance may also name one figure: cpu.prefill_ms=50%


def parse_tolerances(entries: list[str]) -> dict[str, tuple[float, float]]:
    """['time=0.05', 'cpu.memory=10%+16MiB'] -> {'time': (0.05, 0), 'cpu.memory': (0.10, 16.0)}.

    A memory tolerance may add an absolute slack in MiB: where the figure is small (the CPU's is
    the weights plus the resident-set growth of one round), allocator noise of a few MiB would
    otherwise be a large relative change."""
    out: dict[str, tuple[float, float]] = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        key, raw = key.strip(), raw.strip().replace(" ", "")
        cls = key.rpartition(".")[2]
        usage = (f"use [<device type>.]<{'|'.join(TOLERANCE_CLASSES)} or a figure name>=<fraction or percent>[+<N>MiB for memory], "
                 "e.g. time=0.05, cpu.memory=10%+16MiB or cpu.prefill_ms=50%")
        if not sep or (cls not in TOLERANCE_CLASSES and cls not in FIGURE_KEYS):
            raise ValueError(f"bad tolerance '{entry}': {usage}")
        rel_text, plus, abs_text = raw.partition("+")
        try:
            rel = float(rel_text[:-1]) / 100.0 if rel_text.endswith("%") else float(rel_text)
            slack = float(abs_text[:-3]) if plus and abs_text.lower().endswith("mib") else None if plus else 0.0
        except ValueError:
            raise ValueError(f"bad tolerance '{entry}': {usage}") from None
        if slack is None or (slack and cls not in ("memory", "peak_memory_mb")):
            raise ValueError(f"bad tolerance '{entry}': an absolute slack is '+<N>MiB' and only for memory")
        if not (0 <= rel < 100 and math.isfinite(rel) and slack >= 0):
            raise ValueError(f"bad tolerance '{entry}': must be a fraction >= 0")
        out[key] = (rel, slack)
    return out


def tolerance_for(tolerances: dict[str, tuple[float, float]], device_type: str, cls: str, figure: str | None = None) -> tuple[float, float]:
    """The most specific entry: <device>.<figure>, <figure>, <device>.<class>, <class>, else 5 %."""
    for key in ([f"{device_type}.{figure}", figure] if figure else []) + [f"{device_type}.{cls}", cls]:
        if key in tolerances:
            return tolerances[key]
    return (0.05, 0.0)


@dataclass
class Comparison:
    metric: str
    baseline: float
    now: float
    change: float  # relative, positive = worse for lower-is-better figures
    tolerance: float  # the effective one
    configured: float
    noise: float  # noise_factor * max cv
    verdict: str  # ok | regressed | improved
    host_factor: float | None = None  # host slower now than at the baseline by this; `change` is corrected by it

    @property
    def widened(self) -> bool:
        return self.tolerance > self.configured

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("metric", "baseline", "now", "change", "tolerance", "configured", "noise", "verdict", "host_factor")}


NOISE_CAP = 0.5


def compare_figures(baseline: dict, now: dict, tolerances: dict[str, tuple[float, float]], device_type: str, noise_factor: float,
                    noise_cap: float = NOISE_CAP, host_correction: bool = False) -> list[Comparison]:
    """Compare today's gated figures with the baseline's; figures either side lacks are skipped.
    `host_correction`: a time figure that both sides timed with the host-speed probe is compared
    in host units (host_speed.py): today's value divided by how much slower the host is now."""
    rows = []
    for metric, (cls, better, _unit) in GATED.items():
        if metric not in baseline or metric not in now:
            continue
        b, n = baseline[metric], now[metric]
        b_value, n_value = float(b["value"]), float(n["value"])
        if not (math.isfinite(b_value) and math.isfinite(n_value)) or b_value <= 0:
            continue
        rel, slack = tolerance_for(tolerances, device_type, cls, metric)
        configured = max(rel, slack / b_value)  # memory figures are in MiB, as the slack is
        noise = noise_factor * max(float(b.get("cv", 0.0)), float(n.get("cv", 0.0)))
        tolerance = max(configured, min(noise, noise_cap))
        host = host_speed.factor(b, n) if host_correction and cls == "time" else None
        change = ((n_value / host if host else n_value) - b_value) / b_value
        worse = change if better == "lower" else -change
        verdict = "regressed" if worse > tolerance else "improved" if worse < -tolerance else "ok"
        rows.append(Comparison(metric, b_value, n_value, change, tolerance, configured, noise, verdict, host))
    return rows


def comparison_table(rows: list[Comparison]) -> list[str]:
    corrected = any(r.host_factor for r in rows)
    head = ["metric", "baseline", "now", *(["host now/then"] if corrected else []), "change", "tolerance", "verdict"]
    body = []
    for r in rows:
        unit = GATED[r.metric][2]
        tol = f"+{r.tolerance:.1%}" + (f" (noise; set {r.configured:.1%})" if r.widened else "")
        host = [f"x{r.host_factor:.3f}" if r.host_factor else "-"] if corrected else []
        body.append([r.metric, f"{r.baseline:.4g}{unit}", f"{r.now:.4g}{unit}", *host, f"{r.change:+.1%}", tol,
                     r.verdict.upper() if r.verdict != "ok" else "ok"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


@dataclass
class BaselineFile:
    path: Path
    data: dict
    entries: dict[str, dict] = field(default_factory=dict)  # case id -> benchmark entry

    @classmethod
    def load(cls, path: Path) -> "BaselineFile | None":
        """The stored baseline, None when there is no file, BaselineError when it is unusable."""
        path = Path(path)
        data = read_baseline_json(path, "performance baseline {path} is not valid JSON ({exc}); restore it or promote a new run")
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or not isinstance(data.get("csm_baseline"), dict):
            raise BaselineError(f"performance baseline {path} lacks 'benchmarks' or 'csm_baseline': not written by the promote command")
        entries = {}
        for i, bench in enumerate(data["benchmarks"]):
            extra = bench.get("extra_info") if isinstance(bench, dict) else None
            if not isinstance(extra, dict) or not isinstance(extra.get("case"), str) or not isinstance(extra.get("figures"), dict):
                raise BaselineError(f"performance baseline {path}: benchmarks[{i}] has no extra_info.case/figures")
            for name, fig in extra["figures"].items():
                if not isinstance(fig, dict) or not isinstance(fig.get("value"), (int, float)):
                    raise BaselineError(f"performance baseline {path}: {extra['case']}: figure '{name}' has no numeric value")
                if name in GATED and not (math.isfinite(fig["value"]) and fig["value"] > 0):
                    # the comparison skips such a figure: it would be ungated without a word
                    raise BaselineError(f"performance baseline {path}: {extra['case']}: figure '{name}' is {fig['value']}, not a positive number")
            entries[extra["case"]] = bench
        return cls(path, data, entries)

    def entry(self, case_id: str, digest: str | None) -> tuple[dict | None, str | None]:
        """(entry, why not) for a case; a baseline for a differently defined workload does not count."""
        bench = self.entries.get(case_id)
        if bench is None:
            return None, f"no entry for {case_id} in {self.path}"
        stored = bench["extra_info"].get("workload_digest")
        if digest is not None and stored != digest:
            return None, f"the baseline for {case_id} in {self.path} was measured on a different workload definition"
        return bench, None

    @property
    def recorded(self) -> str:
        meta = self.data["csm_baseline"]
        versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
        return f"{meta.get('recorded', '?')} ({versions})"


def promote(run: dict, baselines_dir: Path, allow_regressions: bool = False) -> list[Path]:
    """Write the run's benchmarks as the new baselines, one file per mode, merged with the entries
    of workloads this run did not time. Refuses runs with planted faults or failures, and runs with
    regressions unless `allow_regressions` (accepting a slower stack must be deliberate)."""
    csm = run.get("csm")
    if not isinstance(csm, dict) or not isinstance(run.get("benchmarks"), list):
        raise BaselineError("not a csm-conformance performance run (no 'csm' block): promote output/performance_benchmark.json")
    if "simulated" in str((csm.get("device") or {}).get("fingerprint", "")).lower():
        raise BaselineError(f"refusing to promote a run on a simulated device ({csm['device']['fingerprint']}): its timings are not the device's")
    if csm.get("planted_faults"):
        raise BaselineError(f"refusing to promote a run with planted faults: {'; '.join(csm['planted_faults'])}")
    failed = [r["case"] for r in csm.get("results", []) if r.get("status") == "failed"]
    if failed:
        raise BaselineError(f"refusing to promote a run whose performance tests failed: {', '.join(failed)}")
    regressed = [r["case"] for r in csm.get("results", []) if r.get("status") == "regressed"]
    if regressed and not allow_regressions:
        raise BaselineError(f"the run regressed in {', '.join(regressed)}; pass --allow-regressions to accept it as the new baseline")
    if not run["benchmarks"]:
        raise BaselineError("the run timed nothing: no benchmarks to promote")
    by_mode: dict[str, list[dict]] = {}
    for bench in run["benchmarks"]:
        by_mode.setdefault(bench["extra_info"]["mode"], []).append(bench)
    written = []
    model_key, fingerprint, dtype = csm["model"]["key"], csm["device"]["fingerprint"], csm["dtype"]
    for mode, benches in sorted(by_mode.items()):
        path = baseline_path(baselines_dir, model_key, fingerprint, dtype, mode)
        keep = []
        old = BaselineFile.load(path)
        if old is not None:
            new_cases = {b["extra_info"]["case"] for b in benches}
            keep = [b for case, b in old.entries.items() if case not in new_cases]
        document = {
            "csm_baseline": {
                "schema": SCHEMA,
                "model": csm["model"],
                "device_fingerprint": fingerprint,
                "device": csm["device"],
                "dtype": dtype,
                "mode": mode,
                "versions": csm["versions"],
                "recorded": run.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "promoted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "settings": csm.get("settings", {}),
            },
            "machine_info": run.get("machine_info", {}),
            "commit_info": run.get("commit_info", {}),
            "benchmarks": keep + benches,
            "datetime": run.get("datetime"),
            "version": run.get("version"),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
