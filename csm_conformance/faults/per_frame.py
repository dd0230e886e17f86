"""Performance and run-time faults: hooks on the backbone's forward, which runs once per generated
frame (a slower frame, a burst of interference, a leak, an exception or a hang at one frame).
"""

from __future__ import annotations

import time

import torch

from csm_conformance.faults.errors import FaultError, PlantedFaultError
from csm_conformance.runtime import clock, devices


def _per_frame_sleep(model: torch.nn.Module, seconds: float) -> None:
    model.backbone_model.register_forward_hook(lambda *_: _wait(seconds))


def _wait(seconds: float) -> None:
    """Hold the host for `seconds`, to a few microseconds. time.sleep alone overshoots by 50-100 us
    (timer slack and the scheduler), which on a 6 ms frame turned a planted 2 % into a measured 5 %:
    sleep all but the last millisecond, spin through the rest."""
    deadline = time.perf_counter() + seconds
    if seconds > 2e-3:
        time.sleep(seconds - 1e-3)
    while time.perf_counter() < deadline:
        pass


def _positions(output) -> int | None:
    """Positions a backbone call computed (None if its output is not a [batch, positions, ...]
    tensor): 1 for a decode step, more for the prompt, which starts a generation."""
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    return int(hidden.shape[1]) if torch.is_tensor(hidden) and hidden.dim() >= 2 else None


def _per_frame_slowdown(model: torch.nn.Module, fraction: float, every_other: bool = False):
    """Each decode frame waits `fraction` of its own duration: the time from the end of the
    previous backbone call to the end of this one (the depth decoder's 31 steps, then this
    backbone step). A prefill (more than one position) starts a generation and waits nothing, so
    the gap between two rounds, or the set-up before the first, is never counted as a frame.
    `every_other`: only the 1st, 3rd, ... decode call of a generation waits (ab/planted.py)."""
    state = {"last": None, "calls": 0}
    device = str(next(model.parameters()).device)

    def hook(_module, _inputs, output):
        devices.synchronize(device)
        now = clock.now()  # less any wait for the other side's turn (frame-interleaved A/B)
        if _positions(output) == 1 and state["last"] is not None:
            state["calls"] += 1
            if not every_other or state["calls"] % 2 == 1:
                _wait(fraction * (now - state["last"]))
        else:
            state["calls"] = 0
        state["last"] = clock.now()

    return model.backbone_model.register_forward_hook(hook)


def _transient_sleep(model: torch.nn.Module, seconds: float, generations: int) -> None:
    state = {"started": 0}

    def hook(_module, _inputs, output):
        if _positions(output) not in (None, 1):
            state["started"] += 1  # a prefill: a new generation
        if state["started"] <= generations:
            _wait(seconds)

    model.backbone_model.register_forward_hook(hook)


def _per_frame_leak(model: torch.nn.Module, mib: float) -> None:
    kept: list[torch.Tensor] = []
    model._planted_leak = kept  # lives as long as the model
    elements = int(mib * 2**20 / 4)

    def hook(module, *_):
        device = next(module.parameters()).device
        kept.append(torch.ones(elements, dtype=torch.float32, device=device))  # ones: pages are touched

    model.backbone_model.register_forward_hook(hook)


def _at_frame(model: torch.nn.Module, frame: int, action) -> None:
    """Run `action` on the backbone call that computes frame `frame` (1-based) of each generation.
    The call count restarts whenever more than 5 s passed since the previous call (a new round)."""
    state = {"calls": 0, "last": 0.0}

    def hook(*_):
        now = time.perf_counter()
        state["calls"] = 1 if now - state["last"] > 5.0 else state["calls"] + 1
        state["last"] = now
        if state["calls"] == frame:
            action()

    model.backbone_model.register_forward_hook(hook)


def _raise_at(frame: int) -> None:
    raise PlantedFaultError(f"planted fault: generation raised at frame {frame} (backbone forward)")


def _hang_at(frame: int) -> None:
    while True:  # until pytest-timeout (or the user) ends it
        time.sleep(1.0)



def _extra_cast(model: torch.nn.Module, name: str) -> str:
    """Each call of module `name` sends its output through float32 and back (float64 for a float32
    model): two casts more per call, the values unchanged, as a release that adds a cast or copy
    would. What the attribution must name by its call count."""
    modules = dict(model.named_modules())
    if name not in modules:
        near = [n for n in modules if n.endswith(name.rsplit(".", 1)[-1])][:3]
        raise FaultError(f"fault cast:{name}: the model has no module '{name}'" + (f" (e.g. {', '.join(near)})" if near else ""))

    def hook(_module, _inputs, output):
        if not torch.is_tensor(output) or not output.is_floating_point():
            return output
        wide = torch.float64 if output.dtype == torch.float32 else torch.float32
        return output.to(wide).to(output.dtype)

    modules[name].register_forward_hook(hook)
    return f"every call of {name} casts its output to a wider float and back (two casts more per call, values unchanged)"
