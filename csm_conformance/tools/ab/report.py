"""ab.md and ab.json: per case and figure, the ratio, its interval, the tolerance, the decision
and the pairs it took; which stacks, which model (never a real-weight claim for tiny or random
weights), which machine."""

from __future__ import annotations

import json
import math
from pathlib import Path

from csm_conformance.runtime.stack import diff_markdown
from csm_conformance.tools.ab.figures import FIGURES

SCHEMA = 1


def num(value, spec: str = ".3f") -> str:
    """A number for a report; '-' for what was not measured (None) or is not finite."""
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _interval(f: dict) -> str:
    return f"x{num(f.get('ratio'))} [{num(f.get('low'))}, {num(f.get('high'))}]"


def overall(cases: list[dict], failure: dict | None = None) -> tuple[str, list[str]]:
    who = "candidate" if (failure or {}).get("side") == "after" else "current stack"
    what = "could not set up" if (failure or {}).get("case") == "setup" else "failed while timing"
    crashed = [f"{failure['case']}: the {who} {what}: {failure['error']}"] if failure else []
    if failure and failure.get("stage") == "profiling":  # the profiler, not the timed stack, failed: the cases left are untimed
        crashed = [f"{failure['case']}: the {who}'s worker died while profiling, so the cases after it were not timed: {failure['error']}"]
    elif failure and failure["side"] == "after":
        return "REGRESSED", crashed
    regressed = [f"{c['case']}: {f['figure']} {_interval(f)} > 1+{f['tolerance']:.0%}"
                 for c in cases for f in c["figures"] if f["decision"] == "REGRESSED"]
    regressed += [f"{c['case']}: peak memory {num(c['memory']['after_mib'], '.1f')} MiB vs {num(c['memory']['before_mib'], '.1f')} MiB"
                  for c in cases if (c.get("memory") or {}).get("decision") == "REGRESSED"]
    if regressed:
        return "REGRESSED", regressed + crashed
    open_ = [f"{c['case']}: {f['figure']} {_interval(f)} straddles 1+{f['tolerance']:.0%}"
             for c in cases for f in c["figures"] if f["decision"] == "INCONCLUSIVE"]
    return ("INCONCLUSIVE", crashed + open_) if (open_ or crashed) else ("SAFE", [])


def document(meta: dict, cases: list[dict], failure: dict | None = None) -> dict:
    status, reasons = overall(cases, failure)
    return {"schema": SCHEMA, "verdict": status, "reasons": reasons, **meta, "failure": failure, "cases": cases}


def stack_lines(doc: dict) -> list[str]:
    """What differs between the two sides' stacks (ab.json "stack_diff"); nothing for a report
    written before the workers sent their fingerprints."""
    if "stack_diff" not in doc:
        return []
    if doc["stack_diff"] is None:
        unrecorded = [side for side in ("before", "after") if not (doc.get(side) or {}).get("stack")]
        return [f"Stack: not recorded on {' and '.join(unrecorded) or 'one side'}.", ""]
    rows = [(r["what"], r["before"], r["after"]) for r in doc["stack_diff"]]
    return ["Stack, before -> after:" if rows else "Stack:", "", *diff_markdown(rows), ""]


def attribution_errors(doc: dict) -> list[str]:
    """Why a case that was to be profiled has no attribution, one line each."""
    lines = [f"{c['case']}: profiling failed: {c['attribution_error']}" for c in doc.get("cases", []) if c.get("attribution_error")]
    return lines + ([doc["attribution_error"]] if doc.get("attribution_error") else [])


def attribution_lines(doc: dict) -> list[str]:
    """Where the time went (attribution.md's first lines), right under the verdict; or why not."""
    found, errors = doc.get("attribution"), attribution_errors(doc)
    lines = [f"Where the time went: not known ({line})" for line in errors] + ([""] if errors else [])
    if not found:
        return lines
    return ([f"Where the time went ({found['case']}, paired profiles; [attribution.md](attribution.md)):", ""]
            + [f"{i}. {line}" for i, line in enumerate(found["headline"], 1)] + [""]
            + [f"Traces: {line}" for line in found.get("open", [])] + [""] + lines)


def to_markdown(doc: dict) -> str:
    b, a = doc["before"], doc["after"]
    head = doc["verdict"] + (f" ({'; '.join(doc['reasons'][:3])}{' ...' if len(doc['reasons']) > 3 else ''})" if doc["reasons"] else "")
    lines = [f"# A/B performance: {head}", "", *attribution_lines(doc),
             f"- model: {doc['model'].get('key')} ({doc['model'].get('claim', '?')})",
             f"- device: {doc['device'].get('device')} ({doc['device'].get('name')}), dtype {doc['dtype']}",
             f"- before: `{b['python']}` ({', '.join(f'{k} {v}' for k, v in b['versions'].items()) or 'versions unknown'})"
             + (f"; planted: {'; '.join(b['fault_notes'])}" if b["fault_notes"] else ""),
             f"- after: `{a['python']}` ({', '.join(f'{k} {v}' for k, v in a['versions'].items()) or 'versions unknown'})"
             + (f"; planted: {'; '.join(a['fault_notes'])}" if a["fault_notes"] else ""),
             f"- {doc['kind']}; tier {doc['tier']}; {doc['budget']}; per-look level {doc['level']:.4f} "
             f"(alpha {doc['alpha']} over {doc['looks']} planned looks); {doc['seconds']:.0f} s in all", "",
             *stack_lines(doc),
             ("Each pair is one round on each stack, run at once taking turns frame by frame (each side's waits taken out of its"
              " clock), the starting side in ABBA order." if doc.get("interleave") == "frame" else
              "Each pair is one round on each stack, back to back, in ABBA order.") + " Ratio: Hodges-Lehmann estimate of"
             " candidate / current (> 1 is slower; throughput inverted), interval: Wilcoxon signed-rank at the per-look level."
             " REGRESSED: the whole interval above 1 + tolerance; SAFE: below it.", ""]
    if doc.get("failure"):
        f = doc["failure"]
        what = "could not set up" if f["case"] == "setup" else f"failed while timing {f['case']}"
        lines += [f"**The {f['side']} worker {what}**: {f['error']} (log: `{f['log']}`)", ""]
    for c in doc["cases"]:
        lines += [f"## {c['case']}: {c['decision']} ({c['pairs']} pairs, {c['stop_reason']})", "",
                  "| figure | before (median) | after (median) | ratio | interval | tolerance | decision | pairs used |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for f in c["figures"]:
            unit = FIGURES[f["figure"]][2]
            lines.append(f"| {f['figure']} | {num(f.get('before_median'), '.4g')}{unit} | {num(f.get('after_median'), '.4g')}{unit} | "
                         f"x{num(f.get('ratio'))} | [{num(f.get('low'))}, {num(f.get('high'))}] | +{f['tolerance']:.0%} | {f['decision']} | "
                         f"{f.get('pairs_used') or '-'} |")
        m = c.get("memory") or {}
        if m:
            slack = f" +{m['slack_mib']:g}MiB" if m.get("slack_mib") else ""
            how = f"(most of {m['rounds']} rounds each)" if m.get("rounds") else m.get("note", "")
            lines.append(f"| peak_memory_mb | {num(m.get('before_mib'), '.1f')}MiB | {num(m.get('after_mib'), '.1f')}MiB | x{num(m.get('ratio'))} | "
                         f"{how} | +{num(m.get('tolerance'), '.0%')}{slack} | {m['decision']} | - |")
        lines.append("")
    return "\n".join(lines) + "\n"


def finite(value):
    """JSON has no NaN or infinity: what is not a finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write(out: Path, doc: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(finite(doc), indent=1, allow_nan=False) + "\n")
    (out / "ab.md").write_text(to_markdown(doc))
