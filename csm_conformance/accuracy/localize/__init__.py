"""When an accuracy check fails: the first module whose output left the reference.

The accuracy gate compares final outputs, so it says *that* a stack diverges, not *where*. This
package hooks the named stages of CSM (the backbone's embeddings, each layer's attention and MLP,
final norm and codebook-0 head; the depth decoder's embeddings, input projector, layers, norm and
codebook heads; Mimi's upsample, decoder-transformer layers and decoder conv blocks), runs the very
inputs of the accuracy probes through the device model and the CPU float32 reference, and compares
every captured output (flattened, float64): cosine, norm-wise relative error, max |diff|.

One module per job: hooks.py (the hooks and canonical module names), capture.py (per-module
outputs on the probes), local.py (module-local errors, teacher-forced), rule.py (the divergence
rule: why a jump rule and not a fixed floor), report.py and plot.py (table, summary, JSON, plot),
dump.py (--csm-dump files and their offline comparison), live.py (one case in a running session),
decode_step.py (one step of the decode loop, teacher-forced: the decode-loop check's failing step),
cli.py (`csm-conformance localize`). Every public name is re-exported here, so callers
keep using `csm_conformance.accuracy.localize.X`.

This is a diagnostic: it names a place. Pass and fail remain the accuracy gate's.

Offline: `csm-conformance localize compare DUMP_A DUMP_B [--output DIR]` compares two
dumps written with `--csm-dump` (A is the baseline) with the same rule; exit 0 when nothing
diverges, 1 when a module does, 2 on bad input.
"""

from __future__ import annotations

from csm_conformance.accuracy.localize.capture import capture_case, capture_decode, capture_prompt, capturing
from csm_conformance.accuracy.localize.cli import main
from csm_conformance.accuracy.localize.decode_step import capture_step, localize_step
from csm_conformance.accuracy.localize.dump import META_KEY, SCHEMA, compare_dumps, load_side, save_dump
from csm_conformance.accuracy.localize.hooks import COMPONENTS, component_of, module_name
from csm_conformance.accuracy.localize.live import localize_case
from csm_conformance.accuracy.localize.local import local_errors_decode, local_errors_prompt, recording_calls, replay_local
from csm_conformance.accuracy.localize.report import Localization, localize
from csm_conformance.accuracy.localize.rule import JUMP_FACTOR, DumpError, Row, coarser, compare_captures, dtype_eps

__all__ = [
    "COMPONENTS", "JUMP_FACTOR", "META_KEY", "SCHEMA",
    "DumpError", "Localization", "Row",
    "capture_case", "capture_decode", "capture_prompt", "capture_step", "capturing", "coarser", "compare_captures",
    "compare_dumps", "component_of", "dtype_eps", "load_side", "local_errors_decode",
    "local_errors_prompt", "localize", "localize_case", "localize_step", "main", "module_name", "recording_calls",
    "replay_local", "save_dump",
]
