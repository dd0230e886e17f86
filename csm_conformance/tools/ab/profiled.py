"""Paired profiles of both stacks, for a case the A/B found REGRESSED (or every case, with
--profile): what got slower, per operator, module and host vs device (performance/attribution.py).

Why paired and in turns: one profile per side misleads on a shared machine (the total self CPU time
of 16 frames read 219.6 ms before and 216.3 ms after a planted x20 on one operator). Like the timing
itself, the two workers profile one round each per pair, the side that starts alternating (ABBA),
after a labelling round per side that records input shapes, keeps the trace and warms the profiler
up; every round generates the same fixed number of seeded frames.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from csm_conformance.performance import attribution
from csm_conformance.performance.op_profile import label_shapes, profile_frames
from csm_conformance.reports import schema as report_schema
from csm_conformance.tools.ab.report import finite

DEFAULT_ROUNDS = 8


def profile_case(case, sides: dict, rounds: int, out: Path, progress=print) -> dict:
    """The attribution table of one case; each side's labelling trace under out/profiles/<case>/<side>."""
    started = time.perf_counter()
    labelled, traces = {}, {}
    for label in ("before", "after"):
        summary = sides[label].request("profile", shapes=True, trace_dir=str(out / "profiles" / case.id / label))["summary"]
        labelled[label], traces[label] = summary, summary["trace"]
    taken: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(rounds):
        for label in (("before", "after") if i % 2 == 0 else ("after", "before")):
            taken[label].append(sides[label].request("profile")["summary"])
    for label in ("before", "after"):
        label_shapes(taken[label], labelled[label])
    table = attribution.compare(taken["before"], taken["after"], paired=True)
    table.update(case=case.id, frames_per_round=profile_frames(case.workload.frames), traces=traces,
                 module_marks=labelled["after"]["module_marks"], seconds=time.perf_counter() - started)
    progress(f"  {case.id}: profiled {rounds} rounds per side in {table['seconds']:.0f} s; " + " | ".join(attribution.headline(table, 1)))
    return table


def open_commands(traces: dict, device_type: str, out: Path) -> list[str]:
    """How to open (and, on an NPU, compare) the kept traces."""
    before, after = traces.get("before"), traces.get("after")
    if device_type == "npu":
        return [f"msprof-analyze compare -d {after} -bp {before} --output_path {out / 'msprof-compare'}",
                f"MindStudio Insight: File > Open, then {before} and {after}"]
    return [f"Perfetto: open https://ui.perfetto.dev and drop in {before}, then {after} (or chrome://tracing > Load)"]


def document(tables: list[dict], meta: dict) -> dict:
    """attribution.json: the first case's rows at the top (the most slowed case first), every case
    under "cases"."""
    tables = sorted(tables, key=lambda t: -max((r["delta_us_per_frame"] for r in t["host_device"] if r["what"] == "wall time"), default=0))
    first = tables[0] if tables else {"operators": [], "modules": [], "host_device": []}
    return {"report_schema": report_schema.VERSIONS["attribution"], **meta, "case": first.get("case"),
            "headline": attribution.headline(first) if tables else [], "operators": first["operators"], "modules": first["modules"],
            "host_device": first["host_device"], "cases": tables}


def to_markdown(doc: dict) -> str:
    lines = [f"# Where the time went: {doc['kind']}", "",
             f"- model: {doc['model'].get('key')} ({doc['model'].get('claim', '?')}); device {doc['device'].get('device')} "
             f"({doc['device'].get('name')}), dtype {doc['dtype']}",
             "- method: paired profiles, one round per stack per pair in ABBA order, a fixed number of seeded frames per round; "
             "times per generated frame; ratio: Hodges-Lehmann, interval: Wilcoxon signed-rank over the rounds", ""]
    for t in doc["cases"]:
        f = t["floor"]
        lines += [f"## {t['case']}", "",
                  f"{t['rounds']['after']} profiled rounds per side of {t['frames_per_round']} frames ({t['seconds']:.0f} s). Operators by "
                  f"{t['time']}. Noise floor: a row grew only when its whole {1 - f['alpha']:.0%} interval is above x{1 + f['ratio']:.2f} and it "
                  f"added more than {f['share_of_frame']:.1%} of a frame ({f['share_of_frame'] * t['frame_us_before']:.0f} us); a changed call "
                  "count is named whatever its time.", ""]
        lines += [f"{i}. {line}" for i, line in enumerate(attribution.headline(t), 1)] + [""]
        lines += ["| operator | module | shapes | before us/frame | after us/frame | ratio [interval] | calls/frame | decision |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in t["operators"][:20]:
            lines.append(f"| {r['name']} | {r['module']} | {r['shapes'] or '-'} | {r['before_us_per_frame']:.1f} | {r['after_us_per_frame']:.1f} | "
                         f"{_ratio(r)} | {r['calls_before']:g} -> {r['calls_after']:g} | {r['decision']} |")
        lines += ["", "| module (host time outside its operators) | before us/frame | after us/frame | ratio [interval] | decision |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['module']} | {r['before_us_per_frame']:.1f} | {r['after_us_per_frame']:.1f} | {_ratio(r)} | {r['decision']} |"
                  for r in t["modules"][:10]]
        lines += ["", "| host vs device | before us/frame | after us/frame | ratio [interval] | decision |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['what']} | {r['before_us_per_frame']:.1f} | {r['after_us_per_frame']:.1f} | {_ratio(r)} | {r['decision']} |"
                  for r in t["host_device"]]
        if not t.get("module_marks", True):
            lines += ["", "Compiled mode: modules are not marked (hooks would recompile the graph), so operators run under `(outside any module)`; "
                      "on the CPU the compiled graphs' own kernels are not aten calls, and their time is in the host time outside operators."]
        lines += ["", "Traces (one labelling round per side):", ""]
        lines += [f"- `{c}`" for c in open_commands(t["traces"], doc["device"].get("type", ""), Path(doc.get("output", ".")))] + [""]
    return "\n".join(lines) + "\n"


def _ratio(r: dict) -> str:
    return "-" if r.get("ratio") is None else f"x{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def write(out: Path, doc: dict) -> None:
    clean = json.loads(json.dumps(finite(doc), default=str, allow_nan=False))
    report_schema.validate(clean, "attribution", str(out / "attribution.json"))
    (out / "attribution.json").write_text(json.dumps(clean, indent=1) + "\n")
    (out / "attribution.md").write_text(to_markdown(doc))
