"""The stored gate's attribution: a workload's per-operator summary kept beside its baseline, and a
red check's profile compared against it.

Why a summary and not a trace: the baseline file is committed; the median per-frame row of a few
profiled rounds (op_profile) is a few tens of kilobytes and is all the comparison needs. Why the
floor is wider than the A/B's: the stored rounds ran on another day, so the machine's speed then and
now is in every ratio (a paired A/B cancels it); the message says so and points at the A/B.
"""

from __future__ import annotations

import statistics

from csm_conformance.performance import attribution, timing
from csm_conformance.performance.op_profile import label_shapes, profile_round
from csm_conformance.results import Status

ROUNDS = 6
FLOOR = {"ratio": 0.25, "share_of_frame": 0.01}
TOP_ROWS = 10


def profile(loaded, inputs, case, seed: int, rounds: int = ROUNDS) -> list[dict]:
    """`rounds` profiled rounds of the case in its mode, after one labelling round (input shapes,
    the profiler's warm-up) whose shapes the rounds take."""
    with timing.generation_mode(loaded, case.mode):
        labelled = profile_round(loaded, inputs, case, seed, shapes=True)
        taken = [profile_round(loaded, inputs, case, seed) for _ in range(rounds)]
    label_shapes(taken, labelled)
    return taken


def median_summary(rounds: list[dict]) -> dict:
    """One summary: each number the median over the rounds (0 where a round lacks the row)."""
    def med(section: str, key: str, field: str) -> float:
        return statistics.median([(r[section].get(key) or {}).get(field) or 0.0 for r in rounds])

    out = {"frames": rounds[0]["frames"], "rounds": len(rounds), "module_marks": rounds[0].get("module_marks", True)}
    for section in ("operators", "modules"):
        keys = set().union(*(r[section] for r in rounds))
        fields = ("us", "calls", "device_us") if section == "operators" else ("us", "self_us", "calls")
        out[section] = {k: {f: med(section, k, f) for f in fields} for k in sorted(keys)}
        if section == "operators":
            for k in keys:
                out[section][k]["shapes"] = next((r[section][k].get("shapes", "") for r in rounds if k in r[section]), "")
    out["host_device"] = {k: (None if any(r["host_device"].get(k) is None for r in rounds)
                              else statistics.median(r["host_device"][k] for r in rounds)) for k in rounds[0]["host_device"]}
    return out


def against_stored(stored: dict, rounds: list[dict]) -> dict:
    """The attribution table of this run's rounds against the stored summary (unpaired)."""
    table = attribution.compare([stored], rounds, paired=False, floor=FLOOR)
    table["operators"], table["modules"] = table["operators"][:TOP_ROWS], table["modules"][:TOP_ROWS]
    return table


def message(table: dict, recorded: str) -> str:
    lines = attribution.headline(table)
    return (f"where, against the per-operator summary stored with the baseline ({recorded}; a stored comparison is noisier than "
            "a paired one, confirm with csm-conformance ab): " + " | ".join(lines))


def attribute(run, case, inputs, result, seed: int) -> None:
    """A regressed workload (every workload, with --csm-profile) is profiled: its summary goes into
    the run (`run` is performance.run.PerformanceRun; promote stores the summary beside the
    baseline), and a red check names what grew against the summary stored with its baseline."""
    red = result.status is Status.REGRESSED
    if not (run.settings.csm_profile or red):
        return
    try:
        rounds = profile(run.session.target, inputs, case, seed)
    except Exception as exc:  # the timing's verdict stands; the profiler's failure is one line beside it
        first = (str(exc).strip().splitlines() or [""])[0]
        result.messages.append(f"profiling failed, so no per-operator summary: {type(exc).__name__}: {first}")
        return
    result.info["operator_profile"] = median_summary(rounds)
    stored, recorded = run.judging.stored_profile(case.id, case.mode, case.workload.digest)
    if stored is None:
        if red:
            result.messages.append("no per-operator summary is stored with this baseline, so the operators that grew cannot be "
                                   "named: promote a run made with --csm-profile")
        return
    table = against_stored(stored, rounds)
    result.info["attribution"] = {"against": recorded, "headline": attribution.headline(table), "floor": table["floor"],
                                  "operators": table["operators"], "modules": table["modules"], "host_device": table["host_device"]}
    if red:
        result.messages.append(message(table, recorded))
