"""Performance reports: output/performance_benchmark.json (a pytest-benchmark document with the
suite's figures and verdicts), output/performance_summary.txt, the console table, and a PNG plot of
RTF and per-frame latency per workload, baseline against now."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from csm_conformance.performance.baselines import comparison_table
from csm_conformance.reports import schema as report_schema
from csm_conformance.results import Status
from csm_conformance.runtime import stack as runtime_stack

STATUS_MARK = {Status.PASSED: "ok", Status.IMPROVED: "IMPROVED", Status.REGRESSED: "REGRESSED", Status.NO_BASELINE: "no baseline",
               Status.FAILED: "FAILED", Status.SKIPPED: "skipped"}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _baseline_value(result, metric: str):
    for comp in result.comparisons:
        if comp.metric == metric:
            return comp.baseline
    return None


def console_table(perf) -> list[str]:
    head = ["case", "RTF", "frames/s", "TTFA ms", "prefill ms", "frame ms p50/p90", "peak MiB", "BW floor", "vs baseline"]
    rows = []
    for r in perf.results:
        f, i = r.figures, r.info
        if r.case == "model_load":
            rows.append([r.case, "", "", "", "", "", "", "", f"load {_fmt(f['load_s']['value'], '.2f')} s: {STATUS_MARK[r.status]}"])
            continue
        frac = i.get("bandwidth_fraction")
        rows.append([
            r.case,
            _fmt(f["rtf"]["value"], ".3f"),
            _fmt(i.get("frames_per_second"), ".1f"),
            _fmt(f["ttfa_ms"]["value"], ".1f"),
            _fmt(f["prefill_ms"]["value"], ".1f"),
            f"{f['frame_ms_median']['value']:.2f}/{f['frame_ms_p90']['value']:.2f}",
            _fmt(f["peak_memory_mb"]["value"], ".1f"),
            "n/a" if frac is None else f"{frac:.1%}",
            STATUS_MARK[r.status],
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def detail_lines(perf) -> list[str]:
    out = []
    for r in perf.results:
        out.append(f"{r.case} [{r.status}] baseline: {r.baseline_file or '-'}")
        for m in r.messages:
            out.append(f"  {m}")
        for name, fig in r.figures.items():
            out.append(f"  {name:<16} {fig['value']:>12.5g}  cv {fig['cv']:.3f}")
        info = r.info
        if info.get("compile_s") is not None:
            out.append(f"  compile (warm-up minus steady round): {info['compile_s']:.2f} s  [{info.get('mode_label')}]")
        if "weight_bytes_per_frame" in info:
            w = info["weight_bytes_per_frame"]
            bw = info.get("device_bandwidth_gbps")
            out.append(
                f"  weights read per frame: {w['total'] / 1e9:.4f} GB (backbone {w['backbone'] / 1e9:.4f}, depth decoder "
                f"{w['depth_steps']}x {w['depth_decoder'] / w['depth_steps'] / 1e9:.4f}, heads {w['depth_heads'] / 1e9:.4f}); "
                f"achieved {_fmt(info.get('achieved_gbps'), '.2f')} GB/s of {_fmt(bw, '.0f')} GB/s ({info.get('bandwidth_source')}); "
                f"floor {_fmt(info.get('floor_frame_ms'), '.3f')} ms/frame"
            )
        if r.comparisons:

            out += ["  " + line for line in comparison_table(r.comparisons)]
    return out


def skipped_lines(skipped: list[dict]) -> list[str]:
    """One line per performance test that was not timed, with the reason pytest gave."""
    return [f"{s['test']}: {s['status'].upper()}: {s['reason']}" for s in skipped]


def write_reports(perf, machine_info: dict, commit_info: dict, version: str, skipped: list[dict] = ()) -> list[Path]:
    """`skipped`: the performance tests of this run that were skipped (or failed for it under
    --csm-strict); they are listed, and counted, so an untimed test never reads as a pass."""
    out_dir = perf.settings.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"report_schema": report_schema.VERSIONS["performance"], **perf.meta(), "skipped": list(skipped)}
    document = {
        "machine_info": machine_info,
        "commit_info": commit_info,
        "benchmarks": perf.benchmarks,
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "version": version,
        "csm": meta,
        "stack": runtime_stack.run_fingerprint(perf.session.device.type),  # runtime/stack.py: every distribution and the accelerator's software
    }
    json_path = out_dir / "performance_benchmark.json"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    model = meta["model"]
    counts: dict[str, int] = {}
    for r in perf.results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    for sk in skipped:
        counts[sk["status"]] = counts.get(sk["status"], 0) + 1
    lines = [
        "CSM conformance: performance summary",
        f"model:      {model.get('key')} | weights {model.get('weights_digest')} | {model.get('claim')}",
        f"device:     {meta['device']['device']} ({meta['device']['fingerprint']}) | dtype {meta['dtype']}",
        "stack:      " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"timing:     {meta['settings']['warmup_rounds']} warm-up + {meta['settings']['rounds']} timed rounds (median), "
        f"device synchronized around each; load: {meta['settings']['load_rounds']} rounds",
        "tolerances: " + ", ".join(f"{k} {rel:.0%}" + (f"+{mib:g}MiB" if mib else "") for k, (rel, mib) in meta["settings"]["tolerances"].items())
        + f", widened to {meta['settings']['noise_factor']:g} x CV where the noise is larger",
        "baselines:  " + ", ".join(f"{m}: {p}" for m, p in meta["settings"]["baselines"].items()),
        "results:    " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
    ]
    if meta["planted_faults"]:
        lines.append("faults:     " + "; ".join(meta["planted_faults"]))
    if skipped:
        lines += ["not timed: " + line for line in skipped_lines(skipped)]
    lines += ["", *console_table(perf), "", *detail_lines(perf)]
    summary_path = out_dir / "performance_summary.txt"
    summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = [json_path, summary_path]
    plot = plot_png(perf)
    if plot is not None:
        plot_path = out_dir / "performance_plot.png"
        plot_path.write_bytes(plot)
        paths.append(plot_path)
    return paths


def plot_png(perf) -> bytes | None:
    """RTF and median per-frame latency per case, baseline (where stored) next to now."""
    results = [r for r in perf.results if r.case != "model_load" and "rtf" in r.figures]
    if not results:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.case for r in results]
    x = range(len(results))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.9 * len(results) + 2), 7), sharex=True)
    for ax, metric, title in ((axes[0], "rtf", "real-time factor (lower is better)"),
                              (axes[1], "frame_ms_median", "median per-frame latency, ms")):
        now = [r.figures[metric]["value"] for r in results]
        base = [_baseline_value(r, metric) for r in results]
        ax.bar([i - 0.2 for i in x], [b if b is not None else 0 for b in base], width=0.4, label="baseline", color="#999999")
        colors = ["#c0392b" if r.failed else "#2e86c1" for r in results]
        ax.bar([i + 0.2 for i in x], now, width=0.4, label="now", color=colors)
        for i, b in zip(x, base):
            if b is None:
                ax.text(i - 0.2, 0, "none", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[1].set_xticks(list(x))
    axes[1].set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    meta = perf.meta()
    fig.suptitle(f"{meta['model'].get('key')} on {meta['device']['name']} ({meta['dtype']})", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
