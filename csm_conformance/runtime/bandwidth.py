"""How far a decode step is from the memory-bandwidth floor of the device.

At batch 1 a CSM frame is bound by reading weights: the backbone's layers and codebook-0 head
once, then the depth decoder's layers once per codebook after the first (31 times on CSM-1B),
plus one slice of its per-codebook head each time (the whole head once per frame). Embedding
tables are looked up, not read whole, so they do not count. The bytes divided by the device's
bandwidth is the fastest a frame can possibly be; the achieved fraction says how far the stack is.
"""

from __future__ import annotations

import torch

# Nominal peak memory bandwidth in GB/s from vendor datasheets, matched as a case-insensitive
# substring of the device name (longest first). Override with --csm-memory-bandwidth.
KNOWN_BANDWIDTH_GBPS = {
    "H200": 4800.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,  # SXM5 80GB HBM3
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,  # 40GB parts
    "L40S": 864.0,
    "L4": 300.0,
    "A10G": 600.0,
    "RTX 4090": 1008.0,
    "RTX 5090": 1792.0,
    "Ascend910B": 1600.0,  # 910B1-B3, HBM2e
    "Ascend910": 1200.0,  # first-generation Ascend 910
}


def _count(module: torch.nn.Module | None, skip: tuple[str, ...] = ()) -> int:
    if module is None:
        return 0
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(skip))


def weight_bytes_per_frame(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, int]:
    """Bytes of weights one generated frame reads, by part, for a CsmForConditionalGeneration."""
    element = torch.empty((), dtype=dtype).element_size()
    depth = model.depth_decoder
    steps = int(model.config.num_codebooks) - 1
    backbone = _count(model.backbone_model, skip=("embed_tokens",)) + _count(model.lm_head)
    depth_step = _count(depth.model, skip=("embed_tokens",))
    head = _count(getattr(depth, "codebooks_head", None))
    parts = {
        "backbone": backbone * element,
        "depth_decoder": depth_step * steps * element,
        "depth_heads": head * element,
    }
    parts["total"] = sum(parts.values())
    parts["depth_steps"] = steps
    return parts


def device_bandwidth_gbps(device_name: str, override: float = 0.0, from_hook: float | None = None) -> tuple[float | None, str]:
    """(GB/s, where the number came from); None when the device is unknown and nothing was given.
    The option wins, then a conftest's pytest_csm_memory_bandwidth_gbps hook (plugin/hookspecs.py), then the table."""
    if override and override > 0:
        return float(override), "--csm-memory-bandwidth"
    if from_hook is not None and from_hook > 0:
        return float(from_hook), "the pytest_csm_memory_bandwidth_gbps hook"
    lowered = device_name.lower()
    for key in sorted(KNOWN_BANDWIDTH_GBPS, key=len, reverse=True):
        if key.lower() in lowered:
            return KNOWN_BANDWIDTH_GBPS[key], f"nominal datasheet figure for {key}"
    return None, "unknown device: set --csm-memory-bandwidth GBPS to see the fraction"


def floor_figures(bytes_per_frame: int, frame_seconds: float, bandwidth_gbps: float | None) -> dict[str, float | None]:
    """Achieved GB/s from the median frame time, the floor frame time, and the fraction reached."""
    achieved = bytes_per_frame / frame_seconds / 1e9 if frame_seconds > 0 else None
    floor_ms = bytes_per_frame / (bandwidth_gbps * 1e9) * 1e3 if bandwidth_gbps else None
    fraction = achieved / bandwidth_gbps if (achieved is not None and bandwidth_gbps) else None
    return {"achieved_gbps": achieved, "floor_frame_ms": floor_ms, "bandwidth_fraction": fraction}
