"""The catalogue's report in Markdown: caught / planted, the clean runs' false alarms, the
performance entries' changes and the sweep.
"""

from __future__ import annotations


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


def _caught(o: dict) -> str:
    if o["caught"]:
        return "yes"
    return "NO: the clean run after it drifted as far" if o["red"] else "NO"


def _cvs(cv: dict, base: dict) -> str:
    return ", ".join(f"{k} {base.get(k, 0):.1%} / {v:.1%}" for k, v in cv.items()) or "-"


def markdown(doc: dict) -> str:
    lines = ["# Planted-fault catalogue", "",
             f"**{doc['caught']} of {doc['planted']} planted faults caught**, {doc['named']} with the place named; "
             f"**{doc['false_alarms']} false alarm(s)** in {doc['clean_runs']} clean run(s) (the table below, and the "
             f"clean run after each performance entry). Exit {doc['exit_code']}.", "",
             f"Embedded tiny CSM on {doc['machine']}; {doc['versions']}. A/B entries are judged against a clean run of the "
             f"same selection recorded just before them (performance: {doc['ab']['rounds']} rounds, tolerances "
             f"{', '.join(doc['ab']['tolerances'])}, each widened to 3 x the larger CV).", "",
             "| fault | spec | gate | caught | failure (first line) | place named | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for o in doc["entries"]:
        lines.append(f"| {o['id']} | `{' '.join(o['faults'])}` | {o['gate']} | {_caught(o)} | "
                     f"{_cell(o['first_line'])} | {'yes' if o['place_named'] else 'NO'} (`{o['place']}`) | {o['seconds']} |")
    lines += ["", "## Clean runs", "", "| run | result | CVs of gated figures (baseline / run) | seconds |", "| --- | --- | --- | --- |"]
    for c in doc["clean"]:
        result = f"FALSE ALARM: {_cell(c['first_line'])}" if c["false_alarm"] else "passed"
        if c["ungated_performance"]:
            result += f" ({c['ungated_performance']} performance case(s) had no baseline for this machine)"
        lines.append(f"| {c['run']} | {result} | {_cvs(c['cv'], c['baseline_cv'])} | {c['seconds']} |")
    sweep_doc = doc.get("sweep") or {}
    perf = [o for o in doc["entries"] + sweep_doc.get("slowdown", []) if o["gate"] == "performance"]
    if perf:
        lines += ["", "Performance entries: change of each figure against the entry's A/B baseline, with the CVs "
                  "(baseline / faulty run) and the change in the clean run made right after:", ""]
        lines += [f"- {o['id']} (clean run after: {o['clean_after'] or 'not run'}): " + ", ".join(
            f"{k} {v:+.1%} (CV {o['baseline_cv'].get(k, 0):.1%} / {o['cv'].get(k, 0):.1%}; clean after "
            + (f"{o['clean_after_change'][k]:+.1%})" if k in o["clean_after_change"] else "-)")
            for k, v in o["change"].items()) for o in perf]
    if sweep_doc:
        lines += ["", "## Sensitivity sweep", "",
                  f"Smallest relative perturbation of `{sweep_doc['weight_param']}` caught: "
                  f"{sweep_doc['smallest_weight_bfloat16_caught']} on the committed bfloat16 bounds, "
                  f"{sweep_doc['smallest_weight_float32_caught']} on a float32 device model (A/B); smallest per-frame "
                  f"slowdown caught (A/B): {sweep_doc['smallest_slowdown_caught']}"
                  + (f" (measured: frame_ms_median {sweep_doc['smallest_slowdown_caught_measured']:+.1%})"
                     if sweep_doc.get("smallest_slowdown_caught_measured") is not None else "") + ".", "",
                  "| run | fault | caught | failure (first line) | seconds |", "| --- | --- | --- | --- | --- |"]
        for o in sweep_doc["weight_bfloat16"] + sweep_doc["weight_float32"] + sweep_doc["slowdown"]:
            lines.append(f"| {o['id']} | `{o['faults'][0]}` | {_caught(o)} | {_cell(o['first_line'])} | {o['seconds']} |")
    return "\n".join(lines) + "\n"

