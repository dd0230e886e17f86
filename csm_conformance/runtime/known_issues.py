"""Upstream incompatibilities of particular stacks, recognised by their symptom.

A stack that cannot run one of the suite's modes because of a known upstream bug should read as
that, in one line, not as an unexplained red: the performance test is skipped with the issue's
reason (and --csm-strict still fails it, as it fails every skip). Recognition is by the error
actually raised, never by version numbers alone, so a stack where the mode works is timed.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass

# transformers before 4.56 reads context audio through librosa even when it is given as an array.
LIBROSA_BEFORE = (4, 56)


def parse_version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a release string such as '2.6.0+cu124' or '5.24.0'."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


@dataclass(frozen=True)
class KnownIssue:
    key: str
    mode: str  # the timing mode it breaks
    exception: str  # the exception type's name
    text: str  # a substring of its message
    frame_module: str  # a module on the traceback (where it is raised)
    reason: str  # one line for the report

    def matches(self, mode: str, exc: BaseException) -> bool:
        if mode != self.mode or type(exc).__name__ != self.exception or self.text not in str(exc):
            return False
        return any(self.frame_module in (f.filename or "") for f in traceback.extract_tb(exc.__traceback__))


KNOWN_ISSUES = [
    KnownIssue(
        key="dynamo-csm-hidden-states",
        mode="compiled",
        exception="KeyError",
        text="hidden_states",
        frame_module="torch/_dynamo",
        reason=("known upstream incompatibility: torch.compile of CSM's decode step fails in torch._dynamo with "
                "KeyError: 'hidden_states' (seen with torch 2.6 + transformers 4.57; torch 2.6 + transformers 5.x and "
                "torch >= 2.9 compile): compiled mode cannot be timed on this stack"),
    ),
]


def known_issue(mode: str, exc: BaseException) -> KnownIssue | None:
    return next((issue for issue in KNOWN_ISSUES if issue.matches(mode, exc)), None)
