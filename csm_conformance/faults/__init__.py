"""Planted faults for the device model, so the suite can prove its gates are not blind.

Each fault is small and of a kind a real upgrade can cause. It is applied to the device model only
(after loading, before any test), so the CPU reference stays clean and the comparison must see it.

Specs (`--csm-fault`, repeatable):
  weight:<parameter name>[:<relative scale>]   multiply one tensor by (1 + scale * N(0, 1)), seed 0
  rope                                          drop the RoPE scaling (plain RoPE frequencies)
  nan:<module name>                             a NaN in one activation of that module's output
  fp16:<Linear module name>                     that Linear's matmul computed in float16 (inputs, weight
                                                and bias cast to float16, the result cast back)
  mask:<offset>                                 the backbone's causal attention mask shifted by <offset>
                                                positions (+1: every query also sees the next, future
                                                token; -1: every query but the first no longer sees
                                                itself)
  sleep:<milliseconds>                          every frame takes that much longer (a host sleep)
  slowdown:<fraction>                           every frame takes that fraction longer than it did
  transient:<milliseconds>:<generations>        every frame of the first <generations> generations sleeps
                                                that much longer, then none (a burst of interference
                                                on a shared machine, which the gate's confirmation
                                                measurement must not mistake for a regression)
  leak:<MiB>                                    every frame keeps that much more device memory alive
  raise:<frame>                                 generation raises PlantedFaultError at that frame
  hang:<frame>                                  generation blocks at that frame (pytest-timeout's case)
  xversion:<rmsnorm|mimi>[:<relative>]          a cross-version numeric change: transformers' CSM RMSNorm
                                                (or Mimi's Conv1d) output scaled by 1 + relative (default
                                                1e-3), patched in the class, so the CPU reference changes
                                                with the device, as when a release changes a function:
                                                only the golden drift gate can see it
  decode_attn:<factor>                          every backbone attention output multiplied by <factor> in
                                                cached decode steps only (query length 1): the prefill and
                                                every uncached forward are untouched, so only the
                                                decode-loop check can see it
  cache_path:<relative>                         the values a KV cache hands back in decode steps x (1 + relative),
                                                patched in transformers' cache classes: the reference's loop
                                                carries it too, so only the reference's cache-consistency
                                                check and the golden decode loop can see it
  op:<aten op>[:<relative>][@<shape>]           that aten operator's kernel returns x (1 + relative) (default 0.02)
                                                for inputs in the device model's dtype (and of that first-input
                                                shape, AxBxC, if given): a wrong kernel below the model, planted
                                                in the dispatcher (op_kernel.py); the module localizer sees only
                                                its module, the operator report names it
  compiled:<relative>                           every graph the compiled mode compiles returns its floating
                                                outputs x (1 + relative) (a compile backend wrapping the real
                                                one): only the compiled decode-loop check can see it

The performance faults hook the backbone's forward, which runs once per generated frame.
Every fault's note (what apply_fault returns) names the module it was planted in.

A package (issue 12: modules small enough to read): errors.py (the exceptions), numeric.py (the
accuracy faults), per_frame.py (the backbone-hook faults), spec.py (reading a spec, apply_fault).
Every name the single module had is re-exported here, private helpers included (ab/planted.py
uses _per_frame_slowdown).
"""

from __future__ import annotations

from csm_conformance.faults.errors import FaultError, PlantedFaultError
from csm_conformance.faults.numeric import (
    _cache_length,
    _cache_path,
    _compiled_only,
    _cross_version_change,
    _decode_step_attention,
    _drop_rope_scaling,
    _fp16_matmul,
    _nan_activation,
    _perturb_weight,
    _shift_attention_mask,
    _shifted_mask,
)
from csm_conformance.faults.per_frame import (
    _at_frame,
    _hang_at,
    _per_frame_leak,
    _per_frame_sleep,
    _per_frame_slowdown,
    _positions,
    _raise_at,
    _transient_sleep,
    _wait,
)
from csm_conformance.faults.spec import _number, apply_fault

__all__ = [
    "FaultError", "PlantedFaultError", "apply_fault",
    "_at_frame", "_cache_length", "_cache_path", "_compiled_only", "_cross_version_change", "_decode_step_attention",
    "_drop_rope_scaling", "_fp16_matmul", "_hang_at",
    "_nan_activation", "_number", "_per_frame_leak", "_per_frame_sleep", "_per_frame_slowdown", "_perturb_weight",
    "_positions", "_raise_at", "_shift_attention_mask", "_shifted_mask", "_transient_sleep", "_wait",
]
