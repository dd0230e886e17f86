"""The one place that knows about device kinds (npu, cuda, xpu, mps, cpu).

Tests and the rest of the package call these functions and never branch on device type, so the
NPU path differs from CUDA's only inside this module, and only where torch_npu really differs:
it must be imported after transformers, its allocator setting must be in the environment before
that import, and its module is `torch.npu`. Everything else goes through `torch.accelerator`
where the installed torch has it, then through `torch.get_device_module(type)`.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import dataclass

from csm_conformance.errors import UserError

AUTO_ORDER = ("npu", "cuda", "xpu", "mps")
KNOWN_TYPES = AUTO_ORDER + ("cpu",)


class DeviceError(UserError, RuntimeError):
    """A device that was asked for cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class DeviceInfo:
    spec: str  # what the user asked for, e.g. "auto" or "npu:1"
    device: str  # resolved torch device string, e.g. "npu:1"
    type: str
    name: str
    count: int  # devices of this type visible to the process

    @property
    def fingerprint(self) -> str:
        return f"{self.type}|{self.name}|x{self.count}"

    @property
    def simulated(self) -> bool:
        """A stand-in device (tests/simulated_npu): its numbers are the CPU's, so the suite never
        records bounds, golden references or baselines on it."""
        return is_simulated_name(self.name)


def is_simulated_name(name: str) -> bool:
    return "simulated" in (name or "").lower()


def _import_npu_backend() -> bool:
    """Import torch_npu the documented way; False when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch_npu") is None:
        return False
    os.environ.setdefault("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True")
    import transformers  # noqa: F401  (torch_npu must come after transformers)

    try:
        import torch_npu  # noqa: F401
    except Exception as exc:  # CANN runtime missing, version mismatch with torch, ...
        raise DeviceError(f"torch_npu is installed but failed to import ({type(exc).__name__}: {exc})") from None
    return True


def _module(device_type: str):
    import torch

    if device_type == "cpu":
        return None
    try:
        return torch.get_device_module(device_type)
    except (RuntimeError, AttributeError):
        return getattr(torch, device_type, None)


def _available(device_type: str) -> int:
    """How many devices of this type can be used (0 when none)."""
    if device_type == "cpu":
        return 1
    if device_type == "npu" and not _import_npu_backend():
        return 0
    mod = _module(device_type)
    if mod is None or not hasattr(mod, "is_available"):
        return 0
    try:
        if not mod.is_available():
            return 0
        return int(mod.device_count()) if hasattr(mod, "device_count") else 1
    except Exception:
        return 0


def parse_spec(spec: str) -> tuple[str, int | None]:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "auto", None
    kind, _, index = spec.partition(":")
    if kind not in KNOWN_TYPES:
        raise DeviceError(f"unknown device '{spec}': use auto, cpu, or one of {', '.join(AUTO_ORDER)} with an optional :index")
    if index and not index.isdigit():
        raise DeviceError(f"bad device index in '{spec}': expected e.g. {kind}:0")
    return kind, int(index) if index else None


def resolve(spec: str = "auto", require_accelerator: bool = False, worker_index: int | None = None) -> DeviceInfo:
    """Turn a device spec into a usable device, or raise DeviceError with the reason.

    `auto` prefers npu > cuda > xpu > mps > cpu. An explicit device that is missing is always an
    error (never a silent CPU run); with `require_accelerator`, so is `auto` finding only a CPU.
    `worker_index` (the pytest-xdist worker number) picks device K for worker K when no index is given.
    """
    kind, index = parse_spec(spec)
    if kind == "auto":
        for candidate in AUTO_ORDER:
            if _available(candidate):
                kind = candidate
                break
        else:
            if require_accelerator:
                raise DeviceError("no accelerator found (looked for npu, cuda, xpu, mps) and --csm-require-device is set")
            kind = "cpu"
    count = _available(kind)
    if count == 0:
        hint = " (is torch_npu installed with the CANN runtime?)" if kind == "npu" else ""
        raise DeviceError(f"device '{spec}' was asked for but no {kind} device is available{hint}")
    device = worker_device(spec, kind, index, count, worker_index)
    if kind == "cpu":
        count = _cpu_cores()
    return DeviceInfo(spec=spec, device=device, type=kind, name=device_name(device), count=count)


def worker_device(spec: str, kind: str, index: int | None, count: int, worker_index: int | None) -> str:
    """The device string for one process: the index the spec names, else pytest-xdist worker K's
    device K (the controller and plain runs count as worker 0).

    Worker K never wraps around to device K mod count: two workers sharing a card would time and
    measure each other, so more workers than cards is an error that names both numbers.
    """
    if kind == "cpu":
        return "cpu"
    if index is None:
        index = worker_index or 0
        if index >= count:
            raise DeviceError(
                f"pytest-xdist worker gw{index} has no {kind} device of its own: only {count} {kind} device(s) are "
                f"visible, so use -n {count} or fewer (-n auto starts one worker per device)")
    if index >= count:
        raise DeviceError(f"device '{spec}' was asked for but only {count} {kind} device(s) exist")
    return f"{kind}:{index}"


def xdist_devices(info: DeviceInfo, workers: int) -> list[str]:
    """The device each of `workers` pytest-xdist workers will use, computed on the controller from
    its own resolution, so a bad -n is one line before any worker starts or loads a model."""
    kind, index = parse_spec(info.spec)
    count = 1 if info.type == "cpu" else info.count
    return [worker_device(info.spec, info.type, index, count, k) for k in range(workers)]


def _cpu_cores() -> int:
    """Cores this process may use: on a CPU "device" they are what the count in a fingerprint means."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_name(device: str) -> str:
    kind = device.split(":")[0]
    if kind == "cpu":
        return _cpu_name()
    mod = _module(kind)
    try:
        return str(mod.get_device_name(device))
    except Exception:
        return kind


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def synchronize(device: str) -> None:
    """Wait for queued work, so host clocks around a region measure the device's work."""
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "synchronize"):
        try:
            accel.synchronize(torch.device(device))
            return
        except Exception:
            pass
    _module(kind).synchronize(device)


def _memory_call(device: str, name: str, *args):
    """torch.accelerator.memory where it reaches the allocator, else the backend module.

    torch.accelerator's statistics were reported not to reach the NPU allocator, so for npu the
    backend module (`torch.npu`) is asked first.
    """
    import torch

    kind = device.split(":")[0]
    mod = _module(kind)
    accel_mem = getattr(getattr(torch, "accelerator", None), "memory", None)
    sources = [mod, accel_mem] if kind == "npu" else [accel_mem, mod]
    for source in sources:
        fn = getattr(source, name, None)
        if fn is None:
            continue
        try:
            return fn(torch.device(device), *args)
        except Exception:
            continue
    return None


def reset_peak_memory(device: str) -> None:
    if device.split(":")[0] != "cpu":
        _memory_call(device, "reset_peak_memory_stats")


def peak_memory_bytes(device: str) -> int | None:
    """Peak allocated device memory since the last reset; process peak RSS on the CPU; None if unknown (mps)."""
    if device.split(":")[0] == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    value = _memory_call(device, "max_memory_allocated")
    return None if value is None else int(value)


def memory_allocated_bytes(device: str) -> int | None:
    """Bytes the device allocator holds now (accelerators); None on the CPU and where unknown."""
    if device.split(":")[0] == "cpu":
        return None
    value = _memory_call(device, "memory_allocated")
    return None if value is None else int(value)


class PeakMemory:
    """Peak memory over a region: the allocator's peak on accelerators, sampled RSS on the CPU.

    The CPU has no allocator statistic and ru_maxrss never goes down, so a thread samples the
    resident set every millisecond; it costs CPU time, so regions measured this way should not be
    timed. `growth_bytes` is the peak above the level at entry (what the region itself needed).
    """

    def __init__(self, device: str):
        self.device = device
        self.is_cpu = device.split(":")[0] == "cpu"
        self.peak_bytes: int | None = None
        self.growth_bytes: int | None = None
        self.method = "process resident set, sampled every 1 ms" if self.is_cpu else "allocator peak (max_memory_allocated)"

    def __enter__(self) -> "PeakMemory":
        import gc

        gc.collect()
        synchronize(self.device)
        if self.is_cpu:
            import threading

            import psutil

            self._process = psutil.Process()
            self._before = self._process.memory_info().rss
            self._peak = self._before
            self._stop = threading.Event()

            def sample():
                while not self._stop.is_set():
                    self._peak = max(self._peak, self._process.memory_info().rss)
                    self._stop.wait(0.001)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        else:
            reset_peak_memory(self.device)
            self._before = memory_allocated_bytes(self.device)
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        if self.is_cpu:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            self.peak_bytes, self.growth_bytes = self._peak, self._peak - self._before
        else:
            self.peak_bytes = peak_memory_bytes(self.device)
            if self.peak_bytes is not None and self._before is not None:
                self.growth_bytes = self.peak_bytes - self._before


def compile_backend(device: str) -> tuple[object, str | None, str]:
    """(torch.compile backend, mode, label) for the compiled timing mode on this device.

    CUDA gets transformers' own default for CSM (inductor with CUDA graphs, "reduce-overhead");
    the NPU goes through TorchAir's backend, as torch_npu documents; other devices use inductor.
    """
    kind = device.split(":")[0]
    if kind == "npu":
        try:
            import torchair
        except ImportError as exc:
            raise DeviceError(f"compiled mode on npu needs torchair (shipped with torch_npu): {exc}") from None
        backend = torchair.get_npu_backend(compiler_config=torchair.CompilerConfig())
        return backend, None, "torchair npu backend"
    if kind == "cuda":
        return "inductor", "reduce-overhead", "inductor, reduce-overhead (CUDA graphs)"
    return "inductor", "default", "inductor, default mode"


def empty_cache(device: str) -> None:
    kind = device.split(":")[0]
    if kind != "cpu":
        getattr(_module(kind), "empty_cache", lambda: None)()


def software_versions() -> dict[str, str]:
    import torch
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if "torch_npu" in sys.modules:
        versions["torch_npu"] = getattr(sys.modules["torch_npu"], "__version__", "unknown")
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions
