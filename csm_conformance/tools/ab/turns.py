"""Frame-interleaved rounds: the two workers take turns frame by frame, so both sides' frames of a
pair are timed in the same second of the machine's life, not one round (about a second) apart.

Why: on the shared CI VM a round's speed drifts with whatever else the host runs; frames next to
each other in time run at nearly the same speed (docs/ab.md measures it), rounds a second apart do
not. Alternating rounds (ABBA) cancels slow drift; alternating frames also cancels what changes
within a second.

The protocol is a token passed through two pipes that the controller makes: each worker reads its
own and writes the other's. The controller writes the first token, to the side that starts. A
worker that holds the token runs until its next frame is out (the streamer's put), writes `t` to the
other and waits; a worker that finishes its round writes `d` (done), after which the other runs
alone to its end. Only one side computes at any moment, and each side's waits are taken out of its
clock (clock.exclude), so a frame's time is its own work. Prompt puts and frame counts need not
match between the stacks: the token simply goes back and forth until one side is done.
"""

from __future__ import annotations

import os
import select
import time

from csm_conformance.runtime import clock

TURN = b"t"
DONE = b"d"


class TurnTimeout(RuntimeError):
    """The other side held the turn too long: it hung or died (the controller judges which)."""


class Turns:
    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.alone = True
        self.timeout_s = 600.0
        self.handovers = 0

    def begin(self, timeout_s: float) -> None:
        """Wait for the first turn of a round (before its clock starts)."""
        self.alone, self.timeout_s, self.handovers = False, timeout_s, 0
        self._wait(time.perf_counter())

    def hand_over(self) -> None:
        """At a put: the other side's turn, then ours again (or it finished, and we go on alone)."""
        if self.alone:
            return
        # the clock stops before the write: on one core the scheduler often switches to the woken
        # side inside this very write, and that time is the other side's frame, not ours
        started = time.perf_counter()
        os.write(self.write_fd, TURN)
        self.handovers += 1
        self._wait(started)

    def finish(self) -> None:
        """The round is over (or failed) on this side: the other goes on alone. Safe to call twice."""
        if not self.alone:
            self.alone = True
            os.write(self.write_fd, DONE)

    def _wait(self, started: float) -> None:
        ready, _, _ = select.select([self.read_fd], [], [], self.timeout_s)
        if not ready:
            self.alone = True  # nothing to hand to: the other side is gone or stuck
            raise TurnTimeout(f"the other side did not hand the turn back within {self.timeout_s:.0f} s")
        token = os.read(self.read_fd, 1)
        if token != TURN:  # DONE, or EOF when the controller has gone
            self.alone = True
        clock.exclude(time.perf_counter() - started)


def from_environment() -> Turns | None:
    """The pipe ends the controller passed down (CSM_AB_TURN_FDS=read,write), if any."""
    spec = os.environ.get("CSM_AB_TURN_FDS")
    if not spec:
        return None
    read_fd, write_fd = (int(x) for x in spec.split(","))
    return Turns(read_fd, write_fd)
