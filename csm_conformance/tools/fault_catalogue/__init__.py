"""The planted-fault catalogue: proof that the gates go red on the faults they exist to catch.

Each entry plants one fault (`--csm-fault`) in the device model and runs the real suite in a
subprocess, as a user would, on the embedded tiny model. An entry is *caught* when the run ends
with failed tests (exit 1) in the gate the entry names. Its *place is named* when the failure text,
with the "PLANTED FAULT" notes removed (they would give the answer away), contains the entry's
`place`: the module, figure or function a user must be pointed at.

Some entries cannot be judged against the committed baselines, and run as a self-contained A/B
on the same machine instead: a clean run of the same selection is recorded into a scratch
baselines directory (bounds with --csm-record-bounds, a performance baseline with the promote
command), and the faulty run, made right after it, is judged against that.

- Performance entries, always. The committed CPU baselines carry CI's loose CPU tolerance for time
  (30 %, for shared machines), which a 5 % slowdown cannot cross. The A/B uses the accelerator
  tolerance (`time=5%`), 5 rounds, and the suite's usual widening to 3 x the larger CV; on a busy
  machine that widening, not the 5 %, decides.
- The float16-matmul entry: bfloat16 values are exact in float16, so against a bfloat16 device
  model the fault changes nothing until a value leaves float16's range. It runs on a float32
  device model, against float32 bounds recorded from a clean float32 run.

Clean runs of every set-up used are part of the result: any failure there is a false alarm.

    csm-conformance fault-catalogue [--output DIR] [--only ID ...] [--clean-reruns N] [--sweep]

Exit 0 when every planted fault was caught with its place named and no clean run failed; 1
otherwise; 2 on bad arguments.

A package (issue 12: modules small enough to read): entries.py (the catalogue), suite.py (one
run of the suite in a subprocess), judge.py (caught, place named), run.py (an entry's runs, the
A/B set-up, clean runs, the sweep), table.py (the Markdown report), cli.py (the command line).
Every name the single module had is re-exported here.
"""

from __future__ import annotations

from csm_conformance.tools.fault_catalogue.cli import main
from csm_conformance.tools.fault_catalogue.entries import (
    AB_ROUNDS,
    AB_TOLERANCES,
    ACCURACY_ARGS,
    CATALOGUE,
    FLOAT32_ARGS,
    GATES,
    GENERATION_ONLY,
    HANG_TIMEOUT_S,
    LAYER,
    PERF_ARGS,
    SWEEP_SLOWDOWNS,
    SWEEP_WEIGHT,
    SWEEP_WEIGHT_SCALES,
    Entry,
)
from csm_conformance.tools.fault_catalogue.judge import Outcome, _perf_numbers, _perf_tolerances, _place_text, _without_fault_notes, judge
from csm_conformance.tools.fault_catalogue.run import CatalogueRunError, clean_setups, record_clean, run_clean, run_entry, suite_args, sweep
from csm_conformance.tools.fault_catalogue.suite import ROOT, Run, _first_line, _gate_of, run_suite
from csm_conformance.tools.fault_catalogue.table import _caught, _cell, _cvs, markdown

__all__ = [
    "AB_ROUNDS", "AB_TOLERANCES", "ACCURACY_ARGS", "CATALOGUE", "FLOAT32_ARGS", "GATES", "GENERATION_ONLY", "HANG_TIMEOUT_S",
    "LAYER", "PERF_ARGS", "ROOT", "SWEEP_SLOWDOWNS", "SWEEP_WEIGHT", "SWEEP_WEIGHT_SCALES",
    "CatalogueRunError", "Entry", "Outcome", "Run",
    "clean_setups", "judge", "main", "markdown", "record_clean", "run_clean", "run_entry", "run_suite", "suite_args", "sweep",
    "_caught", "_cell", "_cvs", "_first_line", "_gate_of", "_perf_numbers", "_perf_tolerances", "_place_text", "_without_fault_notes",
]
