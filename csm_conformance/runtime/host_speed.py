"""A host-speed reference for the stored-baseline gate, timed between the frames it corrects.

Why: a stored baseline was timed in another hour, and a shared VM's speed drifts by tens of
percent within minutes (on the 2-core CI VM: the embedded model's frame median went from 18.7 to
27 ms within two minutes of one idle run). The embedded model's eager decoding is host-bound, so a
baseline promoted in a fast hour failed half the clean runs of a slow one (5 of 10, +26-50 %),
while a gate loose enough to pass them would pass a 1.5x slowdown too.

The probe is a fixed item of pure-Python work, timed right after each frame (its own time is taken
out of the frame clock, clock.exclude). It slows with the host of that moment and does not depend
on the stack under test: no torch or transformers code runs in it. Every time figure carries the
median probe time of the rounds it came from (`host_us`); the gate compares time figures in host
units, i.e. it divides today's value by host_us(today) / host_us(baseline). Measured over 100
rounds on the CI VM: frame median and probe correlate at 0.83 round by round, and while the frame
median drifted from 18.7 to 27 ms the frame/probe ratio stayed within about 5 % of 72.

Not corrected: memory and load time. On accelerators the default is off (--csm-host-reference
auto = on for the CPU only), because a device-bound frame does not slow with its host; turn it on
where decoding is host-bound (eager CSM on a shared Ascend host is), after measuring it there.
A planted slowdown is a spin proportional to the frame's own time, so it is not corrected away.
"""

from __future__ import annotations

import statistics
import time

from csm_conformance.runtime import clock

CHOICES = ("auto", "on", "off")


def probe_s() -> float:
    """Seconds this host takes now for a fixed item of pure-Python work (about 0.3 ms on the CI VM)."""
    start = time.perf_counter()
    acc = 0
    for i in range(3000):
        acc += i * i % 7
    table = {}
    for i in range(300):
        table[i] = str(i)
    return time.perf_counter() - start


class HostProbe:
    """A frame callback (timing.FrameClock's on_put): one probe per frame, out of the frame clock."""

    def __init__(self) -> None:
        self.samples_s: list[float] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        self.samples_s.append(probe_s())
        clock.exclude(time.perf_counter() - start)

    def median_us(self) -> float:
        return statistics.median(self.samples_s) * 1e6 if self.samples_s else float("nan")


def applies(setting: str, device_type: str) -> bool:
    """Whether the gate corrects time figures by host speed: on, off, or auto (the CPU only)."""
    return setting == "on" or (setting == "auto" and device_type == "cpu")


def factor(baseline_figure: dict, now_figure: dict) -> float | None:
    """How much slower the host is now than when the baseline was timed (2.0: twice as slow);
    None when either side has no probe (a baseline promoted before the probe existed)."""
    base, now = baseline_figure.get("host_us"), now_figure.get("host_us")
    if not isinstance(base, (int, float)) or not isinstance(now, (int, float)) or not (base > 0 and now > 0):
        return None
    return float(now) / float(base)
