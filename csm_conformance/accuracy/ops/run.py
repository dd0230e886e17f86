"""One case's operators: recorded on the device model, replayed on the device, judged on the CPU.

What is recorded per case: for a prompt case, a greedy generation of two frames (the backbone's
prefill and one cached decode step, the depth decoder's whole loop of each frame, the codec's encode
of any context audio) and Mimi's decode of those two frames; for a codec case, its decode or encode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from csm_conformance.accuracy.ops import standard
from csm_conformance.accuracy.ops.record import OpCall, recording

FRAMES = 2  # the prefill and one decode step


@dataclass
class JudgedCall:
    call: OpCall
    result: dict  # standard.judge's row, plus "standard_source"

    @property
    def excess(self) -> float:
        return self.result.get("excess", 0.0)

    @property
    def past(self) -> bool:
        return self.excess > 1.0


@dataclass
class CaseOps:
    case: str
    device: str
    recorded: int  # every operator call seen
    distinct: list[JudgedCall] = field(default_factory=list)
    unjudged: list[tuple[OpCall, str]] = field(default_factory=list)  # (call, why)
    record_seconds: float = 0.0
    judge_seconds: float = 0.0

    @property
    def ranked(self) -> list[JudgedCall]:
        return sorted(self.distinct, key=lambda j: -j.excess if math.isfinite(j.excess) else -math.inf)

    @property
    def past(self) -> list[JudgedCall]:
        return [j for j in self.ranked if j.past]


@torch.inference_mode()
def record_case(loaded, case, codes: torch.Tensor | None = None):
    """The OpRecorder of `case` run on `loaded` (see the module docstring)."""
    from csm_conformance.catalogue.cases import PromptCase
    from csm_conformance.runtime import probes

    if codes is None and not isinstance(case, PromptCase) and case.kind == "decode":
        codes = probes.codec_case_codes(loaded, case)  # made before recording: they are inputs, not the model's work
    with recording(loaded.model) as recorder:
        if isinstance(case, PromptCase):
            frames = probes.greedy_codes(loaded, case, FRAMES)  # [frames, codebooks]
            size = int(loaded.model.codec_model.config.codebook_size)  # random weights may sample CSM's specials past it
            probes.mimi_decode(loaded, (frames.T % size).contiguous())
        elif case.kind == "decode":
            probes.mimi_decode(loaded, codes)
        else:
            probes.mimi_encode(loaded, torch.from_numpy(case.encode_audio.waveform()))
    return recorder


@torch.inference_mode()
def judge_call(call: OpCall, device: str) -> tuple[dict | None, str]:
    """(standard.judge's row, where the standard came from), or (None, why it has none). In
    inference mode, as the calls were recorded: outside it, composite operators (attention, layer
    norm) decompose before the dispatcher's Python key, and the replay would run other operators."""
    args = standard.decode(standard.encode(call.args, tensors := {}), tensors, device)
    kwargs = standard.decode(standard.encode(call.kwargs, tensors), tensors, device)
    try:
        outputs = standard.run_call(call.op, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - a replay that fails is reported, not raised
        return None, f"replay failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if not outputs:
        return None, "no floating output"
    cpu_args, cpu_kwargs = call.args, call.kwargs
    if not all(torch.isfinite(t).all() for t in standard._floating((cpu_args, list(cpu_kwargs.values())))):
        return None, "non-finite input"
    try:
        exact, source = standard.exact_result(call.op, cpu_args, cpu_kwargs)
        if exact is None:
            return None, source
        row = standard.judge(outputs, exact, standard.reduction_length(call.op, cpu_args, cpu_kwargs))
    except Exception as exc:  # noqa: BLE001 - a call the standard cannot judge is listed, not raised
        return None, f"no standard: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    row["standard_source"] = f"correctly rounded from {source}"
    if math.isnan(row["excess"]):  # sorted and reported as past everything, never as a blank
        row["excess"] = math.inf
    return row, ""


def case_ops(loaded, case, codes: torch.Tensor | None = None) -> CaseOps:
    """Record `case` on `loaded` (the device model), then replay and judge every distinct call."""
    started = time.perf_counter()
    recorder = record_case(loaded, case, codes)
    result = CaseOps(case.id, loaded.device, recorder.total, record_seconds=time.perf_counter() - started)
    started = time.perf_counter()
    for call in recorder.calls.values():
        row, why = judge_call(call, loaded.device)
        if row is None:
            result.unjudged.append((call, why))
        else:
            result.distinct.append(JudgedCall(call, row))
    result.judge_seconds = time.perf_counter() - started
    return result
