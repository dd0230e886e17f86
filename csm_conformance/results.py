"""What a gate says of one case: one status vocabulary and one result base for both gates.

Why one type: the accuracy gate (a check of a case against its bounds) and the performance gate
(a workload's figures against its baseline) are read by the same consumers: the plugin's
assertions, the console summary, the JSON reports and pytest-xdist's hand-over. Each consumer
asks the same questions (did it fail the gate? was it judged at all?), so the answers live here,
once, instead of as string lists in each consumer.

`Status` is a `str` enum: JSON, pytest-xdist and the reports carry the plain word ("passed",
"regressed", ...), and a report written before this type reads the same.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    PASSED = "passed"
    FAILED = "failed"  # outside a bound, non-finite output, a missing bound or baseline under --csm-strict
    REGRESSED = "regressed"  # a performance figure past its tolerance, confirmed
    IMPROVED = "improved"  # a performance figure better than its tolerance: passes, and says so
    NO_BOUND = "no-bound"  # no stored accuracy bound to judge against (skipped, unless --csm-strict)
    NO_BASELINE = "no-baseline"  # no stored performance baseline for this machine (skipped, unless --csm-strict)
    SAVED = "saved"  # a golden reference was written, nothing judged
    SKIPPED = "skipped"  # the gate test did not run (a known upstream issue, a missing device part)

    # the plain word's hash and text, so a status finds its entry in a dict keyed by words and prints as one
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def fails_the_gate(self) -> bool:
        return self in (Status.FAILED, Status.REGRESSED)

    @property
    def unjudged(self) -> bool:
        """Nothing stored to judge against: the test is skipped with the command that records it."""
        return self in (Status.NO_BOUND, Status.NO_BASELINE)


class GateResult:
    """The part of a result both gates share: the case, its status and the messages explaining it.
    Each gate's dataclass (accuracy.check_results.CheckResult, performance.judge.PerfResult) adds
    its evidence (metric rows; figures and comparisons), names itself in `label` and writes its own
    as_dict (the key order its report has always had)."""

    case: str
    status: Status
    messages: list[str]

    def __setattr__(self, name, value):
        # a status set by a word ("passed") becomes the member, so no result holds an unknown word
        super().__setattr__(name, Status(value) if name == "status" else value)

    @property
    def label(self) -> str:
        return self.case

    @property
    def failed(self) -> bool:
        return self.status.fails_the_gate

    def failure_text(self) -> str:
        return f"{self.label}: " + "; ".join(self.messages)
