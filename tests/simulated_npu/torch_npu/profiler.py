"""SIMULATED torch_npu.profiler: the documented names (profile, _ExperimentalConfig, ProfilerActivity,
ProfilerLevel, ExportType, AiCMetrics, tensorboard_trace_handler) over torch.profiler's CPU
activity, writing what the real handler writes where the suite reads it:
`<dir>/<host>_<pid>_<timestamp>_ascend_pt/ASCEND_PROFILER_OUTPUT/trace_view.json`, a bare JSON list
with times as strings in microseconds and record_function ranges as "cpu_op" events, the shape of
torch_npu's own (torch_npu/profiler/analysis, Ascend/pytorch). It proves the suite's NPU profiling
plumbing (the documented calls, the directory, that file's reading); it has no NPU kernels, no
"Ascend Hardware" process and no async_npu flows: device times stay unmeasured here.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
from pathlib import Path

import torch.profiler as _torch_profiler


class ProfilerActivity(enum.Enum):
    CPU = "CPU"
    NPU = "NPU"


class ProfilerLevel:
    Level_none, Level0, Level1, Level2 = "Level_none", "Level0", "Level1", "Level2"


class ExportType:
    Text, Db = "text", "db"


class AiCMetrics:
    AiCoreNone, PipeUtilization = "ACL_AICORE_NONE", "ACL_AICORE_PIPE_UTILIZATION"


class _ExperimentalConfig:
    def __init__(self, profiler_level=ProfilerLevel.Level0, aic_metrics=AiCMetrics.AiCoreNone, l2_cache=False,
                 data_simplification=True, export_type=ExportType.Text, **others):
        if export_type != ExportType.Text:
            raise ValueError("the simulated profiler writes only the text export")
        self.profiler_level, self.export_type = profiler_level, export_type


def tensorboard_trace_handler(dir_name: str, worker_name: str | None = None, analyse_flag: bool = True, async_mode: bool = False):
    def handler(prof: "profile") -> None:
        stamp = time.strftime("%Y%m%d%H%M%S") + f"{int(time.time() * 1000) % 1000:03d}"
        out = Path(dir_name) / f"{worker_name or socket.gethostname()}_{os.getpid()}_{stamp}_ascend_pt" / "ASCEND_PROFILER_OUTPUT"
        out.mkdir(parents=True, exist_ok=True)
        chrome = out.parent / "torch_trace.json"
        prof._inner.export_chrome_trace(str(chrome))
        events = []
        for e in json.loads(chrome.read_text()).get("traceEvents", []):
            if e.get("ph") != "X" or e.get("cat") not in ("cpu_op", "user_annotation"):
                continue
            args = {"Sequence number": (e.get("args") or {}).get("External id", -1)}
            dims = (e.get("args") or {}).get("Input Dims")
            if dims:
                args["Input Dims"] = ";\r\n".join(",".join(map(str, d)) for d in dims)
            events.append({"ph": "X", "name": e["name"], "pid": os.getpid(), "tid": e.get("tid", 0), "ts": f"{float(e['ts']):.3f}",
                           "dur": float(e.get("dur", 0)), "cat": "cpu_op", "args": args})
        chrome.unlink()
        (out / "trace_view.json").write_text(json.dumps(events))

    return handler


class profile:
    def __init__(self, activities=None, schedule=None, on_trace_ready=None, record_shapes=False, profile_memory=False,
                 with_stack=False, with_flops=False, with_modules=False, experimental_config=None):
        self._on_trace_ready = on_trace_ready
        self._inner = _torch_profiler.profile(activities=[_torch_profiler.ProfilerActivity.CPU], record_shapes=record_shapes)

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        self._inner.__exit__(*exc)
        if self._on_trace_ready is not None and exc[0] is None:
            self._on_trace_ready(self)
        return False

    def step(self):
        pass
