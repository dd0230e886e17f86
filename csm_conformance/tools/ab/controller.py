"""The paired, interleaved A/B comparison: two workers, one per stack, one round each per pair on
the same fixed-length seeded workloads (frame by frame in turns, or one after the other; who starts
alternates ABBA), each figure decided by an interval of its
paired ratios, adding pairs until every figure is decided, one has regressed (the case's decision
can no longer change), or the budget is spent."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from csm_conformance.performance import paired_stats as stats
from csm_conformance.performance.baselines import tolerance_for
from csm_conformance.tools.ab import workers
from csm_conformance.tools.ab.figures import FIGURES, figures_for, log_slowdown, round_figures
from csm_conformance.tools.ab.workers import WorkerError, WorkerProcess

MIB = 2**20


@dataclass
class Budget:
    max_pairs: int  # per case
    seconds: float  # for all the pairs of the run (warm-ups and loads not counted)

    def describe(self) -> str:
        return f"at most {self.max_pairs} pairs per case" + (f" and {self.seconds:g} s of timed pairs in all" if self.seconds != float("inf") else "")


@dataclass
class FigureResult:
    name: str
    tolerance: float
    decision: str = "undecided"
    interval: stats.Interval | None = None
    decided_at: int | None = None  # pairs used for the decision

    def as_dict(self) -> dict:
        cls, better, unit, _ = FIGURES[self.name]
        return {"figure": self.name, "class": cls, "better": better, "unit": unit, "tolerance": self.tolerance,
                "decision": self.decision, "pairs_used": self.decided_at,
                **(self.interval.as_dict() if self.interval else {})}


@dataclass
class CaseResult:
    case: str
    workload: str
    batch: int
    mode: str
    figures: dict[str, FigureResult]
    pairs: list[dict] = field(default_factory=list)  # {"order": "AB"|"BA", "before": {...}, "after": {...}}
    memory: dict | None = None
    warmup: dict = field(default_factory=dict)
    stop_reason: str = ""
    seconds: float = 0.0

    @property
    def decision(self) -> str:
        memory = (self.memory or {}).get("decision")
        decisions = [f.decision for f in self.figures.values()] + ([memory] if memory in ("SAFE", "REGRESSED") else [])
        if "REGRESSED" in decisions:
            return "REGRESSED"
        return "SAFE" if all(d == "SAFE" for d in decisions) else "INCONCLUSIVE"

    def medians(self, side: str) -> dict[str, float]:
        from statistics import median

        return {name: median(p[side][name] for p in self.pairs) for name in self.figures} if self.pairs else {}

    def as_dict(self) -> dict:
        before, after = self.medians("before"), self.medians("after")
        return {"case": self.case, "workload": self.workload, "batch": self.batch, "mode": self.mode, "decision": self.decision,
                "pairs": len(self.pairs), "stop_reason": self.stop_reason, "seconds": self.seconds,
                "figures": [{**f.as_dict(), "before_median": before.get(n), "after_median": after.get(n)} for n, f in self.figures.items()],
                "memory": self.memory, "warmup": self.warmup, "rounds": self.pairs}


def _judge(fig: FigureResult, pairs: list[dict], level_alpha: float) -> str:
    """The figure's interval over every pair so far, and what it decides (undecided included)."""
    fig.interval = stats.ratio_interval([log_slowdown(fig.name, p["before"][fig.name], p["after"][fig.name]) for p in pairs], level_alpha)
    return stats.decide(fig.interval, fig.tolerance)


def _alpha_per_look(alpha: float, max_pairs: int) -> float:
    return alpha / len(stats.look_schedule(max_pairs))


def run_case(case, sides: dict[str, WorkerProcess], tolerances: dict, device_type: str, budget_pairs: int, seconds: float,
             alpha: float, warmup: int, memory_rounds: int, progress=print, pipes: workers.TurnPipes | None = None) -> CaseResult:
    """Warm both workers up on the case, then pairs until every figure is decided, one regressed, or
    the budget (pairs, and `seconds` of pairs: warm-ups and compiles are not counted) ends. With
    `pipes`, each pair's two rounds run frame-interleaved (turns.py), else one after the other. A
    worker that fails raises WorkerError carrying what was measured so far (`partial`)."""
    names = figures_for(case.batch)
    result = CaseResult(case.id, case.workload.id, case.batch, case.mode,
                        {n: FigureResult(n, tolerance_for(tolerances, device_type, "time", n)[0]) for n in names})
    try:
        _pairs(result, case, sides, budget_pairs, seconds, alpha, warmup, progress, pipes)
        result.memory = _memory(sides, tolerances, device_type, memory_rounds)
    except WorkerError as exc:
        exc.partial = result
        raise
    return result


def _pair(sides: dict[str, WorkerProcess], order: tuple[str, str], pipes: workers.TurnPipes | None) -> dict[str, dict]:
    """One round per side: `order[0]` first, then the other; or, with `pipes`, both at once taking
    turns frame by frame, `order[0]` starting."""
    if pipes is None:
        return {label: sides[label].request("round") for label in order}
    turn_timeout_s = workers.DEFAULT_TIMEOUT_S / 2  # a side's wait gives up first, and says whom it waited for
    for label in order:
        sides[label].send("round", turns={"timeout_s": turn_timeout_s})
    pipes.give_first_turn(order[0])
    return workers.receive_both(sides, turn_timeout_s)


def _pairs(result: CaseResult, case, sides, budget_pairs: int, seconds: float, alpha: float, warmup: int, progress,
           pipes: workers.TurnPipes | None) -> None:
    for label in ("before", "after"):
        sides[label].send("prepare", workload=case.workload.id, batch=case.batch, mode=case.mode, warmup=warmup)
    for label in ("before", "after"):  # both prepared at once: warm-ups and compiles are not timed
        reply = sides[label].receive()
        result.warmup[label] = {"mode_label": reply["mode_label"], "warmup_wall_s": reply["warmup_wall_s"], "seconds": reply["seconds"]}
    looks = set(stats.look_schedule(budget_pairs))
    level_alpha = _alpha_per_look(alpha, budget_pairs)
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        order = ("before", "after") if len(result.pairs) % 2 == 0 else ("after", "before")  # A B | B A | A B ...
        pair = {"order": "AB" if order[0] == "before" else "BA"}
        for label, reply in _pair(sides, order, pipes).items():
            pair[label] = round_figures(reply)
            pair[f"{label}_intervals_ms"] = [round(x * 1e3, 3) for x in reply["intervals_s"]]
        result.pairs.append(pair)
        n = len(result.pairs)
        if n in looks:
            for fig in result.figures.values():
                if fig.decision != "undecided":
                    continue
                fig.decision = _judge(fig, result.pairs, level_alpha)
                if fig.decision != "undecided":
                    fig.decided_at = n
            undecided = [f.name for f in result.figures.values() if f.decision == "undecided"]
            progress(f"  {case.id}: {n} pairs, " + ", ".join(f"{f.name} {f.interval.estimate:.3f} [{f.interval.low:.3f}, {f.interval.high:.3f}] {f.decision}"
                                                        for f in result.figures.values() if f.interval))
            if not undecided:
                result.stop_reason = f"every figure decided after {n} pairs"
                break
            if any(f.decision == "REGRESSED" for f in result.figures.values()):
                # the case's decision cannot change any more: more pairs would only refine the others
                result.stop_reason = f"a figure regressed after {n} pairs; the undecided ones were not pursued"
                break
        if n >= budget_pairs:
            result.stop_reason = f"pair budget spent ({n} pairs)"
            break
        if time.perf_counter() > deadline:
            result.stop_reason = f"time budget spent after {n} pairs"
            break
    for fig in result.figures.values():  # the last interval, at whatever count the budget ended on
        if fig.decision == "undecided":
            # a stop before the schedule's last look leaves that look unspent: deciding here keeps
            # the number of looks within the planned count, so the Bonferroni level still holds
            decision = _judge(fig, result.pairs, level_alpha)
            fig.decision = decision if decision != "undecided" else "INCONCLUSIVE"
            if fig.decision != "INCONCLUSIVE":
                fig.decided_at = len(result.pairs)
    result.seconds = time.perf_counter() - started


def _memory(sides: dict[str, WorkerProcess], tolerances: dict, device_type: str, rounds: int) -> dict:
    """Peak memory per worker (the most of `rounds` untimed rounds: the CPU's figure samples the
    resident set every millisecond and can miss a short peak, so it errs low); REGRESSED when the
    candidate's exceeds the current's by more than the memory tolerance and its slack. No
    interval: on accelerators the allocator's peak repeats exactly."""
    peaks = {}
    for label in ("before", "after"):
        replies = [sides[label].request("memory") for _ in range(rounds)]
        known = [r["peak_bytes"] for r in replies if r.get("peak_bytes") is not None]
        peaks[label] = max(known) if known else None
    rel, slack_mib = tolerance_for(tolerances, device_type, "memory", "peak_memory_mb")
    before, after = peaks["before"], peaks["after"]
    if before is None or after is None:
        return {"decision": "not measured", "note": "the device reports no peak memory", "before_mib": None, "after_mib": None}
    limit = before * (1 + rel) + slack_mib * MIB
    return {"before_mib": before / MIB, "after_mib": after / MIB, "ratio": after / before if before else math.nan,
            "tolerance": rel, "slack_mib": slack_mib, "rounds": rounds, "method": replies[0]["method"],
            "decision": "REGRESSED" if after > limit else "SAFE"}
