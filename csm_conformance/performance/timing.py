"""Timing one fixed-length generation: when each frame was ready, when prefill ended, and stats.

CSM's `generate` hands every finished frame to a streamer as `next_tokens.cpu()`, a copy that waits
for the device; the host clock at that call is therefore when the frame really existed, on any
device, without adding synchronizations of our own inside the decode loop. Prefill ends at the
first backbone call, which a one-shot forward hook marks after one synchronize.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from csm_conformance.catalogue.workloads import PerfCase
from csm_conformance.runtime import clock, devices, host_speed, probes
from csm_conformance.runtime.models import LoadedModel
from csm_conformance.runtime.modes import generation_mode  # noqa: F401  defined below both gates; run.py, synthesis, A/B call it here

try:  # the streamer base class moved with transformers' generation package; both layouts work
    from transformers.generation.streamers import BaseStreamer
except ImportError:  # pragma: no cover
    from transformers.generation import BaseStreamer


class EarlyStop(RuntimeError):
    """Generation produced fewer frames than asked: the workload was not fixed-length."""


class FrameClock(BaseStreamer):
    """`on_put`, if given, runs after each stamp: the frame-interleaved A/B hands the turn to the
    other side there (its wait is taken out of the clock, see clock.py)."""

    def __init__(self, on_put=None) -> None:
        self.stamps: list[float] = []
        self.on_put = on_put

    def put(self, value) -> None:
        self.stamps.append(clock.now())
        if self.on_put is not None:
            self.on_put()

    def end(self) -> None:
        pass

    def frame_stamps(self, frames: int) -> list[float]:
        """The stamps of generated frames; `generate` first puts the prompt itself, which is dropped."""
        if len(self.stamps) == frames + 1:
            return self.stamps[1:]
        if len(self.stamps) == frames:
            return self.stamps
        raise EarlyStop(f"generation produced {max(len(self.stamps) - 1, 0)} of {frames} frames: not a fixed-length run")


class PrefillMark:
    """Marks the end of the first backbone forward (the prompt), then removes itself.

    Removing the hook before any decode step keeps it out of compiled graphs.
    """

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.stamp: float | None = None
        self._handle = None

    def _hook(self, _module, _inputs, _output) -> None:
        devices.synchronize(self.loaded.device)
        self.stamp = clock.now()
        self._handle.remove()

    def __enter__(self) -> "PrefillMark":
        self._handle = self.loaded.model.backbone_model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@dataclass
class RoundTiming:
    wall_s: float
    ttfa_s: float
    prefill_s: float
    frame_intervals_s: list[float]
    host_us: float | None = None  # median host-speed probe of the round (host_speed.py), when probed


def workload_inputs(loaded: LoadedModel, case: PerfCase):
    """The processor's batch for a workload: the same conversation `batch` times."""
    conversations = [case.workload.conversation()] * case.batch
    inputs = loaded.processor.apply_chat_template(conversations, tokenize=True, return_dict=True)
    return inputs.to(loaded.device)


@torch.inference_mode()
def generate_round(loaded: LoadedModel, inputs, frames: int, seed: int, on_put=None, probe_host: bool = False) -> RoundTiming:
    """One seeded, fixed-length generation, timed from the call to the device being idle again.

    The caller synchronizes before calling, so the host clock starts with an idle device.
    `on_put` runs after each frame's stamp (FrameClock). `probe_host`: time the host-speed probe
    after each frame, out of the clock (host_speed.py).
    """
    torch.manual_seed(seed)
    probe = host_speed.HostProbe() if probe_host else None
    if probe is not None and on_put is not None:
        raise ValueError("generate_round: a host probe and a turn hand-over in one round are not combined")
    frame_clock = FrameClock(probe or on_put)
    with PrefillMark(loaded) as prefill:
        start = clock.now()
        probes.sample_fixed_length(loaded, inputs, frames, output_audio=False, streamer=frame_clock)
        devices.synchronize(loaded.device)
        end = clock.now()
    stamps = frame_clock.frame_stamps(frames)
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    prefill_s = (prefill.stamp - start) if prefill.stamp is not None else float("nan")
    return RoundTiming(end - start, stamps[0] - start, prefill_s, intervals, probe.median_us() if probe else None)


def peak_memory_bytes(memory: devices.PeakMemory, model) -> int | None:
    """The gated peak-memory figure of a measured region. Accelerators: the allocator's peak
    (weights, caches, activations). The CPU has no allocator statistic and its process holds other
    things (a float32 reference, Python), so the figure is the model's weights plus what the
    region's resident set grew by: the same quantity. None when the device reports no peak."""
    if not memory.is_cpu:
        return memory.peak_bytes
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return weights + max(0, memory.growth_bytes or 0)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]), as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def cv(values: list[float]) -> float:
    """Coefficient of variation (sample stdev / mean); 0 for fewer than two values."""
    finite = [v for v in values if v == v]
    if len(finite) < 2:
        return 0.0
    mean = statistics.mean(finite)
    return float(statistics.stdev(finite) / mean) if mean else 0.0
