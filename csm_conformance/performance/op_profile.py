"""One profiled generation round, summed up per operator, per module and host vs device, per frame.

Why this shape: a red timing says the stack is slower; to say *where*, two stacks' profiles must be
comparable row by row. A row is an operator as the model calls it (the outermost aten op: the time
of what it dispatches to, a re-entry of itself included, counts once) in one module role (layer
indices folded), so the same work has the same key on both stacks and on every round. Times are
microseconds per generated frame; the calls per frame tell a new cast or copy, a fallback or a
graph break apart from a slower kernel, however small its time.

What a round summary holds ("us" is per frame, "calls" per frame):
  operators: {"<op>|<module>": {"us", "calls", "device_us", "shapes"}}
  modules:   {"<module>": {"us" (inclusive), "self_us" (host time in it outside operators and
              child modules: Python), "calls"}}
  host_device: {"wall_us", "operators_host_us", "outside_operators_us", "device_busy_us"}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import nullcontext

import torch

from csm_conformance.runtime import clock, devices, probes
from csm_conformance.runtime.profiling import MARK, Capture, Event, module_marks

OUTSIDE = "(outside any module)"
PROFILE_FRAMES = 8  # frames per profiled round: a fixed count, the same on both stacks


def profile_frames(workload_frames: int) -> int:
    return min(PROFILE_FRAMES, workload_frames)


@torch.inference_mode()
def profile_round(loaded, inputs, case, seed: int, shapes: bool = False, trace_dir=None) -> dict:
    """One seeded generation of the case's fixed profile_frames() under the device's profiler,
    summed up per frame. `shapes` records input shapes (slower: used for the labelling round only);
    `trace_dir` keeps the trace. Modules are named except in compiled mode, where hooks would
    recompile the graph. The caller has entered the case's generation mode."""
    frames, marks = profile_frames(case.workload.frames), case.mode != "compiled"
    devices.synchronize(loaded.device)
    torch.manual_seed(seed)
    with Capture(loaded.device, shapes=shapes, trace_dir=trace_dir) as capture:
        with module_marks(loaded.model) if marks else nullcontext():
            start = clock.now()
            probes.sample_fixed_length(loaded, inputs, frames, output_audio=False)
            devices.synchronize(loaded.device)
            wall_s = clock.now() - start
    summary = summarize(capture.events(), frames, wall_s * 1e6)
    summary["trace"] = str(capture.trace) if capture.trace else None
    summary["module_marks"] = marks
    return summary


def label_shapes(rounds: list[dict], labelled: dict) -> None:
    """Give each round's operator rows the input shapes of the labelling round (the timed rounds
    record none: it doubles the profiler's cost)."""
    for summary in rounds:
        for key, row in summary["operators"].items():
            row["shapes"] = labelled["operators"].get(key, {}).get("shapes", "")


def summarize(events: list[Event], frames: int, wall_us: float) -> dict:
    """Per-frame rows from one round's events (see the module's docstring)."""
    ops: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "calls": 0, "device_us": 0.0, "shapes": Counter()})
    mods: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "self_us": 0.0, "calls": 0})
    launch_owner: dict[int, str] = {}
    operators_host = 0.0
    by_thread: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        if e.kind != "device":
            by_thread[e.thread].append(e)
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e.start, -e.end, e.order))
        stack: list[list] = []  # [event, time of direct children counted against it, key]
        for e in thread_events:
            while stack and stack[-1][0].end <= e.start:
                _close(stack.pop(), mods)
            inside_op = next((entry for entry in reversed(stack) if entry[0].kind == "op"), None)
            module = next((entry[0].name[len(MARK):] for entry in reversed(stack) if entry[0].kind == "mark"), OUTSIDE)
            if e.kind == "launch":
                launch_owner[e.link] = inside_op[2] if inside_op else f"(launch)|{module}"
                continue
            if inside_op is not None:
                continue  # inside an operator: its time is that operator's
            key = f"{e.name}|{module}" if e.kind == "op" else e.name[len(MARK):]
            if stack:
                stack[-1][1] += e.duration
            if e.kind == "op":
                row = ops[key]
                row["us"] += e.duration
                row["calls"] += 1
                if e.shapes:
                    row["shapes"][e.shapes] += 1
                operators_host += e.duration
            stack.append([e, 0.0, key])
        while stack:
            _close(stack.pop(), mods)
    device = [e for e in events if e.kind == "device"]
    for e in device:
        owner = launch_owner.get(e.link, "(device work without a host operator)|" + OUTSIDE)
        ops[owner]["device_us"] += e.duration
    per = 1.0 / max(frames, 1)
    return {
        "frames": frames,
        "operators": {k: {"us": v["us"] * per, "calls": v["calls"] * per, "device_us": v["device_us"] * per,
                          "shapes": v["shapes"].most_common(1)[0][0] if v["shapes"] else ""} for k, v in ops.items()},
        "modules": {k: {"us": v["us"] * per, "self_us": v["self_us"] * per, "calls": v["calls"] * per} for k, v in mods.items()},
        "host_device": {"wall_us": wall_us * per, "operators_host_us": operators_host * per,
                        "outside_operators_us": max(0.0, wall_us - operators_host) * per,
                        "device_busy_us": _busy(device) * per if device else None},
    }


def _close(entry: list, mods: dict) -> None:
    event, children, key = entry
    if event.kind == "mark":
        row = mods[key]
        row["us"] += event.duration
        row["self_us"] += max(0.0, event.duration - children)
        row["calls"] += 1


def _busy(device: list[Event]) -> float:
    """Time the device was doing anything (overlapping streams counted once)."""
    total, end = 0.0, float("-inf")
    for e in sorted(device, key=lambda e: e.start):
        if e.end > end:
            total += e.end - max(e.start, end)
            end = e.end
    return total


def split_key(key: str) -> tuple[str, str]:
    name, _, module = key.partition("|")
    return name, module
