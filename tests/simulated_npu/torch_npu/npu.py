"""`torch.npu` (and `torch_npu.npu`) of the SIMULATED torch_npu: device selection, synchronize,
seeding and memory statistics for the simulated cards.

Importing this module renames PyTorch's PrivateUse1 backend to `npu` and registers this module as
`torch.npu`, which is what the real torch_npu does in C++. Nothing here touches hardware:
synchronize has nothing to wait for (every op already ran on the CPU when it returned), and the
memory statistics count the bytes of the CPU storages that live simulated-NPU tensors hold, per
card, so that the suite's "allocator peak" figures are real counts of what the model kept on
the device, just without an allocator's caching or rounding.
"""

from __future__ import annotations

import collections
import os
import threading
import types
import weakref

import torch
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

NAME = "Simulated Ascend NPU (CPU stand-in, torch_npu simulation)"
TOTAL_MEMORY = int(os.environ.get("SIMULATED_NPU_MEMORY_GB", "64")) * 2**30  # what mem_get_info reports as total


def _count_from_env() -> int:
    raw = os.environ.get("SIMULATED_NPU_COUNT", "8")
    try:
        count = int(raw)
    except ValueError:
        raise RuntimeError(f"SIMULATED_NPU_COUNT must be an integer, got {raw!r}") from None
    if count < 0:
        raise RuntimeError(f"SIMULATED_NPU_COUNT must be >= 0, got {count}")
    return count


_COUNT = _count_from_env()
_current = threading.local()  # like the real runtime, the current device is per thread


# ---- devices --------------------------------------------------------------------------------


def is_available() -> bool:
    return _COUNT > 0


def is_initialized() -> bool:
    return True


def _is_in_bad_fork() -> bool:
    return False


def _lazy_init() -> None:
    pass


def init() -> None:
    pass


def device_count() -> int:
    return _COUNT


def current_device() -> int:
    return getattr(_current, "index", 0)


def _index(device=None) -> int:
    """A card index from None (the current card), an int, 'npu[:K]' or torch.device('npu', K)."""
    if device is None:
        return current_device()
    if isinstance(device, int):
        index = device
    else:
        device = torch.device(device)
        if device.type != "npu":
            raise ValueError(f"expected an npu device, got {device}")
        index = current_device() if device.index is None else device.index
    if not 0 <= index < _COUNT:
        raise RuntimeError(f"npu:{index} does not exist: the simulation has {_COUNT} card(s) (SIMULATED_NPU_COUNT)")
    return index


def set_device(device) -> None:
    _current.index = _index(device)


class device:
    """Context manager that makes a card current, like torch.npu.device."""

    def __init__(self, device):
        self.index = _index(device)

    def __enter__(self):
        self.previous = current_device()
        set_device(self.index)

    def __exit__(self, *exc):
        set_device(self.previous)


def synchronize(device=None) -> None:
    """Nothing is queued: every simulated op ran on the CPU before it returned."""
    _index(device)


def get_device_name(device=None) -> str:
    _index(device)
    return NAME


def get_device_properties(device=None):
    _index(device)
    return types.SimpleNamespace(name=NAME, total_memory=TOTAL_MEMORY, simulated=True)


def get_device_capability(device=None) -> tuple[int, int]:
    _index(device)
    return (0, 0)


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True


# ---- seeding: simulated ops draw from the CPU generator, so these seed that one ----------------


def manual_seed(seed: int) -> None:
    torch.default_generator.manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    torch.default_generator.manual_seed(int(seed))


def seed() -> None:
    torch.default_generator.seed()


def seed_all() -> None:
    torch.default_generator.seed()


def initial_seed() -> int:
    return torch.default_generator.initial_seed()


# ---- memory: bytes of live storages per card -----------------------------------------------
#
# Every simulated tensor holds a CPU tensor (`_data`); views share its storage. A storage is
# counted once, when the first live tensor on a card refers to it, and released when the last one
# is garbage. Releases are noticed by a weakref finalizer on each `_data` (not on the wrapper:
# `Module.to()` swaps wrappers in place with torch.utils.swap_tensors, which refuses tensors that
# carry weak references). A finalizer may run inside any allocation (the garbage collector), so it
# only queues the release; the queue is applied before every allocation and every statistic,
# which keeps the counts and the peak exact.

_lock = threading.Lock()
_live: list[dict[int, list[int]]] = [dict() for _ in range(_COUNT)]  # card -> {storage id: [refs, bytes]}
_allocated = [0] * _COUNT
_peak = [0] * _COUNT
_released: collections.deque = collections.deque()  # (card, storage id), appended by finalizers


def _apply_releases() -> None:
    while _released:
        index, key = _released.popleft()
        entry = _live[index][key]
        entry[0] -= 1
        if entry[0] == 0:
            _allocated[index] -= entry[1]
            del _live[index][key]


def _track(data: torch.Tensor, index: int) -> None:
    storage = data.untyped_storage()
    key, nbytes = storage._cdata, storage.nbytes()
    with _lock:
        _apply_releases()
        entry = _live[index].get(key)
        if entry is None:
            _live[index][key] = [1, nbytes]
            _allocated[index] += nbytes
            _peak[index] = max(_peak[index], _allocated[index])
        else:
            entry[0] += 1
    weakref.finalize(data, _released.append, (index, key))


def _stat(table: list[int], device) -> int:
    index = _index(device)
    with _lock:
        _apply_releases()
        return table[index]


def memory_allocated(device=None) -> int:
    return _stat(_allocated, device)


def max_memory_allocated(device=None) -> int:
    return _stat(_peak, device)


def reset_peak_memory_stats(device=None) -> None:
    index = _index(device)
    with _lock:
        _apply_releases()
        _peak[index] = _allocated[index]


def reset_max_memory_allocated(device=None) -> None:
    reset_peak_memory_stats(device)


def memory_reserved(device=None) -> int:
    """No caching allocator is simulated: reserved is what is allocated."""
    return memory_allocated(device)


def max_memory_reserved(device=None) -> int:
    return max_memory_allocated(device)


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes; total is SIMULATED_NPU_MEMORY_GB (64 by default), not a real card's."""
    return TOTAL_MEMORY - memory_allocated(device), TOTAL_MEMORY


def memory_stats(device=None) -> dict[str, int]:
    current, peak = memory_allocated(device), max_memory_allocated(device)
    return {
        "allocated_bytes.all.current": current,
        "allocated_bytes.all.peak": peak,
        "reserved_bytes.all.current": current,
        "reserved_bytes.all.peak": peak,
    }


def empty_cache() -> None:
    """Nothing is cached: freed storages are returned to the CPU allocator at once."""


# ---- registration ---------------------------------------------------------------------------


class _Hooks(torch._C._acc.PrivateUse1Hooks):
    """What PyTorch's C++ side asks a PrivateUse1 backend (torch.accelerator, torch.device)."""

    def is_available(self) -> bool:
        return is_available()

    def has_primary_context(self, dev_id) -> bool:
        return True

    def is_built(self) -> bool:
        return True


class _Guard(torch._C._acc.DeviceGuard):
    def type_(self):
        return torch._C._autograd.DeviceType.PrivateUse1


def _register() -> None:
    import sys

    if torch._C._get_privateuse1_backend_name() == "npu" and getattr(torch, "npu", None) is sys.modules[__name__]:
        return
    _setup_privateuseone_for_python_backend(rename="npu", backend_module=sys.modules[__name__], hook=_Hooks(), device_guard=_Guard())


_register()
