"""Eager or compiled generation: the one definition of the suite's compiled mode.

The performance gate times both modes and the accuracy gate's decode-loop check runs the model's own
generate() in them, so the compiled mode (static caches and the compile config on both generation
configs) is written once, here, below both gates.
"""

from __future__ import annotations

from contextlib import contextmanager

from csm_conformance.runtime import devices
from csm_conformance.runtime.models import LoadedModel

MODES = ("eager", "compiled")


@contextmanager
def generation_mode(loaded: LoadedModel, mode: str):
    """Eager as loaded, or compiled: static caches on the backbone and the depth decoder and
    torch.compile of the decode step, as transformers' CSM documentation describes. Yields a label
    naming the backend; the model's generation configs are restored afterwards."""
    if mode == "eager":
        yield "eager"
        return
    if mode != "compiled":
        raise ValueError(f"unknown generation mode '{mode}' (use {' or '.join(MODES)})")
    from transformers import CompileConfig

    backend, compile_mode, label = devices.compile_backend(loaded.device)
    compile_config = CompileConfig(backend=backend, mode=compile_mode)
    if loaded.device.split(":")[0] not in ("cuda", "xpu"):
        compile_config._compile_all_devices = True  # transformers auto-compiles only on CUDA/XPU otherwise
    model = loaded.model
    configs = [model.generation_config, model.depth_decoder.generation_config]
    saved = [(c.cache_implementation, c.compile_config) for c in configs]
    for config in configs:
        config.cache_implementation = "static"
        config.compile_config = compile_config
    try:
        yield f"static cache + torch.compile ({label})"
    finally:
        for config, (cache, compiled) in zip(configs, saved):
            config.cache_implementation, config.compile_config = cache, compiled
