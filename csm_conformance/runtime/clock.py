"""The host clock that every timed region reads, less the time this process spent waiting for its
turn in a frame-interleaved A/B comparison (tools/ab/turns.py).

There two workers take turns frame by frame on one core; a frame's time is then its own work, not
the other side's. Timings and the planted slowdown read this clock, so both see the same frames
whether or not a turn was waited for in between. With no turns it is time.perf_counter.
"""

from __future__ import annotations

import time

_waited = 0.0


def now() -> float:
    return time.perf_counter() - _waited


def exclude(seconds: float) -> None:
    """Take `seconds` (spent waiting for the other side) out of every later reading."""
    global _waited
    _waited += seconds
