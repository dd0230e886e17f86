"""One stack's side of an A/B comparison: a long-lived process that loads the model once and
times one round at a time when the controller asks.

Started as `PYTHON -m csm_conformance.tools.ab.worker` with the controller's copy of this package first
on PYTHONPATH, so both sides run the same harness and only the stack under it differs. It speaks
JSON lines: one request on stdin, one reply on the protocol stream (the process's original stdout;
fd 1 is pointed at stderr so that nothing a library prints can corrupt the protocol).

Requests: setup, prepare, round, profile, memory, quit. Every reply has "ok"; a failed request has
"error", one line. Timings reuse the stored gate's code (timing.generate_round: the streamer's
frame stamps, a synchronize before and after), so the two gates measure the same thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from csm_conformance.tools.ab import turns


def _protocol_stream():
    """The original stdout, for replies; fd 1 now goes to stderr."""
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


class Worker:
    def __init__(self):
        self.loaded = None
        self.device = None
        self.fault_notes: list[str] = []
        self.cases: dict[str, object] = {}
        self.case = None
        self.inputs = None
        self.mode_stack = contextlib.ExitStack()
        self.seed = 0
        self.turns = turns.from_environment()

    # ---- requests ---------------------------------------------------------------------------
    def setup(self, model: str, device: str, dtype: str, faults: list[str], threads: int | None, seed: int,
              workloads: str | None = None, require_device: bool = False, pin_cpu: int | None = None, pin_when: str = "cpu") -> dict:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        from csm_conformance.catalogue.workloads import MODES, load_workloads
        from csm_conformance.faults import apply_fault
        from csm_conformance.runtime import devices, stack
        from csm_conformance.tools.synthesis import load

        self.seed = seed
        self.loaded, self.device = load(model, device, dtype, require_device)
        if not threads and self.device.type == "cpu":
            torch.set_num_threads(1)  # see the controller's --threads: one core per round, none spinning
        if pin_cpu is not None and (pin_when == "always" or self.device.type == "cpu"):
            os.sched_setaffinity(0, {int(pin_cpu)})  # see the controller's --pin-cpu: both sides on one core
        self.fault_notes = [apply_fault(self.loaded.model, spec) for spec in faults]
        self.workloads = {w.id: w for w in load_workloads(workloads or None)}
        self.modes = MODES
        return {
            "identity": self.loaded.identity.as_dict(),
            "device": {"device": self.device.device, "type": self.device.type, "name": self.device.name,
                       "fingerprint": self.device.fingerprint, "simulated": self.device.simulated},
            "dtype": dtype,
            "versions": devices.software_versions(),
            "stack": stack.fingerprint(self.device.type),  # the controller tells A/A from A/B by it
            "fault_notes": self.fault_notes,
            "threads": torch.get_num_threads(),
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "pid": os.getpid(),
            "python": sys.executable,
            "load_s": self.loaded.load_seconds,
        }

    def prepare(self, workload: str, batch: int, mode: str, warmup: int) -> dict:
        """Enter the case's mode, build its inputs and run its warm-up rounds (compiling, if compiled)."""
        from csm_conformance.catalogue.workloads import PerfCase
        from csm_conformance.performance import timing
        from csm_conformance.runtime import devices

        self.mode_stack.close()
        self.mode_stack = contextlib.ExitStack()
        self.case = PerfCase(self.workloads[workload], int(batch), mode)
        label = self.mode_stack.enter_context(timing.generation_mode(self.loaded, mode))
        self.inputs = timing.workload_inputs(self.loaded, self.case)
        walls = []
        for _ in range(warmup):
            devices.synchronize(self.loaded.device)
            walls.append(timing.generate_round(self.loaded, self.inputs, self.case.workload.frames, self.seed).wall_s)
        return {"case": self.case.id, "mode_label": label, "warmup_wall_s": walls, "digest": self.case.workload.digest}

    def round(self, turns: dict | None = None) -> dict:
        """One timed round; with `turns` ({"timeout_s": ...}) frame-interleaved with the other
        worker (turns.py): it starts when the turn comes and hands it over at every frame."""
        from csm_conformance.performance import timing
        from csm_conformance.runtime import devices

        devices.synchronize(self.loaded.device)
        on_put = None
        if turns is not None:
            if self.turns is None:
                raise RuntimeError("frame interleaving was asked for, but the controller passed no turn pipes (CSM_AB_TURN_FDS)")
            self.turns.begin(float(turns["timeout_s"]))
            on_put = self.turns.hand_over
        try:
            r = timing.generate_round(self.loaded, self.inputs, self.case.workload.frames, self.seed, on_put=on_put)
        finally:
            if turns is not None:
                self.turns.finish()
        return {"wall_s": r.wall_s, "ttfa_s": r.ttfa_s, "prefill_s": r.prefill_s,
                "frame_median_s": timing.median(r.frame_intervals_s), "frame_p90_s": timing.percentile(r.frame_intervals_s, 90),
                "frames": self.case.workload.frames, "batch": self.case.batch, "intervals_s": r.frame_intervals_s}

    def profile(self, shapes: bool = False, trace_dir: str | None = None) -> dict:
        """One profiled round of the prepared case (op_profile.profile_round), a fixed number of
        frames; `shapes` and `trace_dir` for the labelling round, whose trace is kept."""
        from csm_conformance.performance import op_profile

        return {"summary": op_profile.profile_round(self.loaded, self.inputs, self.case, self.seed, shapes=shapes, trace_dir=trace_dir)}

    def memory(self) -> dict:
        """Peak memory of one untimed round: the allocator's peak on accelerators; on the CPU the
        model's weights plus the growth of the sampled resident set (the stored gate's figure)."""
        from csm_conformance.performance import timing
        from csm_conformance.runtime import devices

        with devices.PeakMemory(self.loaded.device) as memory:
            timing.generate_round(self.loaded, self.inputs, self.case.workload.frames, self.seed)
        return {"peak_bytes": timing.peak_memory_bytes(memory, self.loaded.model), "method": memory.method}


def serve(stdin=None, out=None) -> int:
    out = out or _protocol_stream()
    stdin = stdin or sys.stdin
    worker = Worker()
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            out.write(json.dumps({"ok": True}) + "\n")
            return 0
        started = time.perf_counter()
        try:
            reply = getattr(worker, op)(**request)
            reply["ok"] = True
        except Exception as exc:  # one line back to the controller, the traceback to this worker's log
            import traceback

            traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reply = {"ok": False, "error": f"{type(exc).__name__}: {first}" if first else type(exc).__name__}
        reply["seconds"] = time.perf_counter() - started
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve())
