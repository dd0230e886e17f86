"""Forward hooks on the named stages of CSM, and the canonical names their captures are keyed by.

Capturing outputs (capture.py) and recording calls for the module-local replay (local.py) hook the
same modules the same way; this module is that shared machinery, plus the component patterns the
divergence rule and the dumps group modules by.

Module keys are canonical (transformers 4.x checkpoint) names, e.g. `codec_model.upsample` on 5.x
too, so that dumps taken on two transformers versions compare key by key. A module that runs more
than once in a probe gets `#2`, `#3`, ... on its later calls.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch

# Components in execution order; each pattern matches canonical module names.
COMPONENTS: dict[str, re.Pattern] = {
    "backbone": re.compile(r"^(embed_text_tokens|backbone_model\.embed_tokens|backbone_model\.layers\.\d+\.(self_attn|mlp)|backbone_model\.norm|lm_head)$"),
    "depth_decoder": re.compile(r"^depth_decoder\.(model\.(embed_tokens|inputs_embeds_projector|norm|layers\.\d+\.(self_attn|mlp))|codebooks_head)$"),
    "codec": re.compile(r"^codec_model\.(upsample|decoder_transformer\.layers\.\d+|decoder\.layers\.\d+)$"),
}


def module_name(live_name: str) -> str:
    """The canonical name of a live module (transformers 5 renamed Mimi's submodules)."""
    from csm_conformance.runtime.tiny_model import canonical_name

    return canonical_name(live_name + ".")[:-1]


def component_of(name: str) -> str:
    base = name.split("#", 1)[0]
    for component, pattern in COMPONENTS.items():
        if pattern.match(base):
            return component
    return "other"


def _first_tensor(output):
    """The primary output: attention layers return (output, weights), layers may return tuples."""
    if torch.is_tensor(output):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for item in values:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _cache_types() -> tuple[type, ...]:
    try:
        from transformers.cache_utils import Cache

        return (Cache,)
    except ImportError:  # pragma: no cover - every supported transformers has it
        return ()


def _rebuild(container, items: list):
    return type(container)(*items) if hasattr(container, "_fields") else type(container)(items)  # namedtuples too


def _copy_inputs(obj, caches: tuple[type, ...]):
    """CPU copies of a module call's inputs. Every probe is one full-sequence forward, so the
    caches a call receives are empty: they are dropped (None), and the replay computes the same."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if caches and isinstance(obj, caches):
        return None
    if isinstance(obj, (tuple, list)):
        return _rebuild(obj, [_copy_inputs(o, caches) for o in obj])
    if isinstance(obj, dict):
        return {k: _copy_inputs(v, caches) for k, v in obj.items()}
    return obj


@contextmanager
def _hooked_calls(model: torch.nn.Module, component: str, with_inputs: bool, active=None):
    """Forward hooks on `component`'s modules with weights; each call with a floating-point output
    adds an entry under its module name (`#2`, `#3`, ... for later calls): the output as a CPU
    float32 copy, or (args, kwargs, output) with CPU copies of the inputs. `active` (a callable
    without arguments), when given, is asked at every call: a call it says False to is neither
    recorded nor counted (decode_step.py records one frame of a decode loop this way)."""
    entries: dict[str, object] = {}
    counts: dict[str, int] = {}
    caches = _cache_types() if with_inputs else ()

    def recorder(name: str):
        def hook(_module, args, kwargs, output):
            if active is not None and not active():
                return
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            counts[name] = counts.get(name, 0) + 1
            key = name if counts[name] == 1 else f"{name}#{counts[name]}"
            out = tensor.detach().to("cpu", torch.float32, copy=True)
            entries[key] = (_copy_inputs(args, caches), _copy_inputs(kwargs, caches), out) if with_inputs else out

        return hook

    handles = []
    for live, module in model.named_modules():
        name = module_name(live)
        if COMPONENTS[component].match(name) and next(module.parameters(recurse=True), None) is not None:
            handles.append(module.register_forward_hook(recorder(name), with_kwargs=True))
    try:
        yield entries
    finally:
        for handle in handles:
            handle.remove()
