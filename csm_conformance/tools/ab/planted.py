"""csm-conformance ab-planted --fraction 0.05: the ratio that `slowdown:<fraction>`
really plants on this machine, timed without the A/B machinery, as the reference that an A/B
run's interval must hold.

Why it is needed: the planted wait is `fraction` of a frame's own time plus the hook's overhead,
and a spin on a busy core costs a little more than its length, so `slowdown:0.05` is not exactly
x1.05 (on the CI VM it is about x1.06). Why it can be trusted on a busy machine: one process, one
model, the wait planted in every other frame of each round, and the ratio taken between the
waiting and the plain frames of the same round, which alternate every few tens of milliseconds,
so the host's speed of the moment cancels. Per round: log(median of waiting frames / median of
plain frames); reported: the exponential of their mean, with a 95 % interval (t, normal beyond
30 rounds).

Usage: csm-conformance ab-planted --fraction F [--fraction F ...] [--rounds 100]
           [--workload short_32t] [--model M] [--device D] [--dtype T]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="csm-conformance ab-planted", description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, action="append", required=True, help="slowdown:<fraction> to measure (repeatable)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per fraction, the fractions alternated (default 100)")
    p.add_argument("--workload", default="short_32t")
    p.add_argument("--model", default=os.environ.get("CSM_MODEL") or "tiny")
    p.add_argument("--device", default=os.environ.get("CSM_DEVICE") or "auto")
    p.add_argument("--dtype", default=os.environ.get("CSM_DTYPE") or "bfloat16")
    args = p.parse_args(argv)
    if args.rounds < 3 or not all(f > 0 for f in args.fraction):
        p.error("--rounds must be >= 3 and every --fraction > 0")

    import torch

    from csm_conformance.catalogue.workloads import WorkloadError, load_workloads, perf_cases
    from csm_conformance.faults import _per_frame_slowdown
    from csm_conformance.performance import timing
    from csm_conformance.runtime import devices
    from csm_conformance.tools.synthesis import ConformanceError, load

    try:
        (case,) = perf_cases(load_workloads(None), ["eager"], [args.workload], (1,))
        loaded, device = load(args.model, args.device, args.dtype)
    except (ConformanceError, WorkloadError) as exc:
        print(f"csm-conformance planted: {exc}", file=sys.stderr)
        return 2
    if device.type == "cpu":  # as the A/B worker runs there: one thread, one core
        torch.set_num_threads(1)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    workload = case.workload
    inputs = timing.workload_inputs(loaded, case)
    ratios: dict[float, list[float]] = {f: [] for f in args.fraction}
    devices.synchronize(loaded.device)
    timing.generate_round(loaded, inputs, workload.frames, 0)  # warm-up
    for _ in range(args.rounds):
        for fraction in args.fraction:  # the fractions alternate round by round
            hook = _per_frame_slowdown(loaded.model, fraction, every_other=True)
            try:
                devices.synchronize(loaded.device)
                intervals = timing.generate_round(loaded, inputs, workload.frames, 0).frame_intervals_s
            finally:
                hook.remove()
            # interval i ends with frame i + 2, whose decode call (the i + 1st) waited when i is even
            ratios[fraction].append(math.log(statistics.median(intervals[0::2]) / statistics.median(intervals[1::2])))
    print(f"csm-conformance planted: {workload.id} at batch 1 on {device.device} ({device.name}), model {loaded.identity.key}, "
          f"{args.rounds} rounds per fraction")
    for fraction, logs in ratios.items():
        mean, sem = statistics.fmean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
        z = 1.96 if len(logs) > 30 else T975[len(logs) - 1]
        print(f"  slowdown:{fraction:g} plants x{math.exp(mean):.4f} [{math.exp(mean - z * sem):.4f}, {math.exp(mean + z * sem):.4f}] "
              f"on the frame median (per-round sd {statistics.stdev(logs):.3f})")
    return 0


T975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160,
        14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
        25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}  # Student's t, 97.5 %, by degrees of freedom


if __name__ == "__main__":
    sys.exit(main())
