"""One profiled region on the device under test, behind the one device layer: torch.profiler on the
CPU and CUDA (CPU and CUDA activities), torch_npu.profiler on an Ascend NPU (its documented
`profile`, `_ExperimentalConfig` and `tensorboard_trace_handler`). Both end as the same flat list of
events, so the attribution (performance/op_profile.py) never asks which profiler ran, and each
keeps the trace its own tools open: a Chrome/Perfetto JSON, or the `*_ascend_pt` directory that
MindStudio Insight and `msprof-analyze compare` read.

Why the kineto results and not `prof.events()`: on the embedded model one 32-frame round is about
170 000 events, which `events()` turns into Python objects in 12 s; the raw results take 0.3 s.
Module paths come from `module_marks`: a record_function range per module call, named by the
module's canonical path with layer indices folded ("backbone_model.layers.*.mlp"), so that one
operator in one role is one row, not one per layer.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import torch

from csm_conformance.runtime.tiny_model import canonical_name

MARK = "module:"
# Chrome-trace categories (torch's export and torch_npu's trace_view.json) by the event kind they hold
_HOST_OPS = {"cpu_op"}
_MARKS = {"user_annotation"}
_LAUNCHES = {"cuda_runtime", "cuda_driver", "runtime", "privateuse1_runtime", "privateuse1_driver"}
_DEVICE = {"kernel", "gpu_memcpy", "gpu_memset", "ai_core", "ai_cpu", "hccl"}


@dataclass(slots=True)
class Event:
    name: str
    kind: str  # op (an operator on the host) | mark (a module range) | launch (queues device work) | device (runs on it)
    start: float  # microseconds
    end: float
    thread: int
    link: int = 0  # a launch's correlation id, or the launch a device event came from
    shapes: str = ""  # the operator's input shapes, when recorded
    order: int = 0  # when two events start and end in the same microsecond: the outer one has the lower order

    @property
    def duration(self) -> float:
        return self.end - self.start


def folded(path: str) -> str:
    """A module path with its layer indices folded: every layer's MLP is one place."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", path)


@contextmanager
def module_marks(model: torch.nn.Module):
    """A profiler range around every module call, named module:<folded canonical path> ("model"
    for the whole). Hooks only while profiling: the timed rounds carry none."""
    names = {module: MARK + (folded(canonical_name(name + ".")[:-1]) or "model") for name, module in model.named_modules()}
    open_ranges: list = []

    def enter(module, *_):
        mark = torch.autograd.profiler.record_function(names[module])
        mark.__enter__()
        open_ranges.append(mark)

    def leave(*_):
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = [m.register_forward_pre_hook(enter) for m in names] + [m.register_forward_hook(leave, always_call=True) for m in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        while open_ranges:
            open_ranges.pop().__exit__(None, None, None)


class Capture:
    """`with Capture(device, shapes, trace_dir) as capture: <region>`, then `capture.events()`;
    `capture.trace` is the kept trace (a file, or torch_npu's directory), None without trace_dir."""

    def __init__(self, device: str, shapes: bool = False, trace_dir: Path | None = None):
        self.kind = device.split(":")[0]
        self.shapes, self.trace_dir = shapes, Path(trace_dir) if trace_dir else None
        self.trace: Path | None = None
        self._events: list[Event] | None = None
        self._scratch: Path | None = None

    def __enter__(self) -> "Capture":
        self._profiler = _npu_profiler(self) if self.kind == "npu" else _torch_profiler(self)
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._profiler.__exit__(*exc)
        if exc[0] is not None:
            return
        if self.kind == "npu":
            self._events, self.trace = _read_npu_output(self._output_dir())
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self.trace = None
            return
        self._events = kineto_events(self._profiler.profiler.kineto_results, self.shapes)
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            self.trace = self.trace_dir / "trace.json"
            self._profiler.export_chrome_trace(str(self.trace))

    def events(self) -> list[Event]:
        return self._events or []

    def _output_dir(self) -> Path:
        return self.trace_dir if self.trace_dir is not None else self._scratch


def _torch_profiler(capture: Capture):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if capture.kind == "cuda" else [])
    return profile(activities=activities, record_shapes=capture.shapes)


def _npu_profiler(capture: Capture):
    """torch_npu's documented profiler: CPU and NPU activities, Level1 (operators with their kernels),
    text export (trace_view.json and the CSV tables), its own handler writing `<dir>/*_ascend_pt`."""
    import torch_npu

    prof = torch_npu.profiler
    if capture.trace_dir is None:
        capture._scratch = Path(tempfile.mkdtemp(prefix="csm-npu-profile-"))
    out = capture._output_dir()
    out.mkdir(parents=True, exist_ok=True)
    config = prof._ExperimentalConfig(export_type=prof.ExportType.Text, profiler_level=prof.ProfilerLevel.Level1,
                                      aic_metrics=prof.AiCMetrics.AiCoreNone, data_simplification=False)
    return prof.profile(activities=[prof.ProfilerActivity.CPU, prof.ProfilerActivity.NPU], record_shapes=capture.shapes,
                        on_trace_ready=prof.tensorboard_trace_handler(str(out)), experimental_config=config)


def _kind_of_activity(activity: str, on_device: bool) -> str | None:
    if on_device or activity in _DEVICE:
        return "device"
    if activity in _HOST_OPS:
        return "op"
    if activity in _MARKS:
        return "mark"
    if activity in _LAUNCHES:
        return "launch"
    return None


def kineto_events(results, shapes: bool) -> list[Event]:
    """torch.profiler's raw results as Events (module marks only among the annotations)."""
    out = []
    raw = results.events()
    # microseconds from the trace's start: absolute ones (~1.8e15) keep only a quarter of a
    # microsecond in a float, and an operator would seem to end before the one it called
    base = results.trace_start_ns() if hasattr(results, "trace_start_ns") else min((e.start_ns() for e in raw), default=0)
    for e in raw:
        activity = str(e.activity_type())
        if "user_annotation" in activity and activity != "user_annotation":
            continue  # gpu_user_annotation: a range's shadow on the device timeline, not device work
        kind = _kind_of_activity(activity, str(e.device_type()) not in ("DeviceType.CPU", "cpu"))
        if kind is None:
            continue
        name = e.name()
        if kind == "mark" and not name.startswith(MARK):
            continue
        start = (e.start_ns() - base) / 1e3
        link = e.linked_correlation_id() if kind == "device" else e.correlation_id() if kind == "launch" else 0
        out.append(Event(name, kind, start, start + e.duration_ns() / 1e3, e.start_thread_id() if kind != "device" else -1, int(link),
                         _shape_text(e.shapes()) if shapes and kind == "op" else "", e.correlation_id()))
    return out


def _shape_text(shapes) -> str:
    return "; ".join("x".join(map(str, s)) if s else "-" for s in shapes) if shapes else ""


def _number(text) -> int:
    """A trace id as an int; a non-numeric one (some traces write strings) as a stable hash."""
    try:
        return int(str(text).strip())
    except ValueError:
        return hash(str(text)) & 0x7FFFFFFFFFFF


def _stamp(text) -> Decimal:
    """A trace time, exactly: torch_npu writes microseconds since the epoch as strings with three
    decimals (and a kernel's may end in a tab); a float there keeps only a quarter microsecond."""
    return Decimal(str(text).strip())


def chrome_events(path: Path) -> list[Event]:
    """A Chrome/Perfetto trace's complete events ("ph": "X") as Events: torch's export, and
    torch_npu's trace_view.json. The latter is a bare list with times as strings in microseconds;
    its record_function ranges are "cpu_op" events too (told apart by the module: prefix), its
    kernels are the events of the "Ascend Hardware" process, and a host operator is tied to its
    kernel by an "async_npu" flow whose start sits at the operator and whose end at the kernel."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    raw = data.get("traceEvents", []) if isinstance(data, dict) else data
    hardware = {e.get("pid") for e in raw if e.get("ph") == "M" and e.get("name") == "process_name"
                and str((e.get("args") or {}).get("name", "")).startswith("Ascend Hardware")}
    flow_ends = {(e.get("pid"), e.get("tid"), _stamp(e["ts"])): _number(e.get("id", 0)) for e in raw
                 if e.get("ph") == "f" and e.get("cat") == "async_npu" and "ts" in e}
    base = min((_stamp(e["ts"]) for e in raw if e.get("ph") in ("X", "s") and "ts" in e), default=Decimal(0))
    out = []
    for e in raw:
        ph, args, name = e.get("ph"), e.get("args") or {}, str(e.get("name", ""))
        if ph == "s" and e.get("cat") == "async_npu" and "ts" in e:  # a launch point: the operator around it owns the kernel
            start = float(_stamp(e["ts"]) - base)
            out.append(Event("launch", "launch", start, start, _number(e.get("tid", 0)), _number(e.get("id", 0)), "", len(out)))
            continue
        if ph != "X" or "ts" not in e:
            continue
        cat = str(e.get("cat", "")).lower()
        on_hardware = e.get("pid") in hardware
        kind = "device" if on_hardware else "mark" if name.startswith(MARK) else _kind_of_activity(cat, False)
        if kind is None or (kind == "mark" and not name.startswith(MARK)):
            continue
        stamp = _stamp(e["ts"])
        start = float(stamp - base)
        if on_hardware:
            link = flow_ends.get((e.get("pid"), e.get("tid"), stamp), 0)
        else:
            link = _number(args.get("correlation", 0)) if kind in ("launch", "device") else 0
        dims = args.get("Input Dims", args.get("Input Shapes"))
        shapes = _shape_text(dims) if isinstance(dims, list) else str(dims or "").replace(";\r\n", "; ").replace(",", "x").strip("; ")
        order = args.get("External id", args.get("Sequence number"))
        out.append(Event(name, kind, start, start + float(e.get("dur", 0)), _number(e.get("tid", 0)) if kind != "device" else -1,
                         link, shapes, _number(order) if order not in (None, -1, "-1") else len(out)))
    return out


def _read_npu_output(directory: Path) -> tuple[list[Event], Path]:
    """The newest `*_ascend_pt` directory torch_npu's handler wrote: its trace_view.json as Events."""
    runs = sorted(Path(directory).glob("*_ascend_pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"torch_npu's profiler wrote no *_ascend_pt directory under {directory}")
    trace = runs[-1] / "ASCEND_PROFILER_OUTPUT" / "trace_view.json"
    if not trace.is_file():
        raise RuntimeError(f"{runs[-1]} has no ASCEND_PROFILER_OUTPUT/trace_view.json (export_type Text was asked for)")
    return chrome_events(trace), runs[-1]
