"""Multi-card runs with pytest-xdist: worker gwK gets device K, more workers than devices is one
line, and the workers' results merge into one report and one summary on the controller.

Accelerators are faked where the device layer asks torch about them (`torch.cuda.is_available`,
`device_count`; `torch.npu` for Ascend), so the mapping is tested on a CPU-only machine. The
end-to-end runs use the CPU, where every worker shares the one device.
"""

from __future__ import annotations

import json
import os
import types

import pytest
import torch

from csm_conformance.reports import accuracy_report as reporting
from csm_conformance.runtime import devices

pytestmark = pytest.mark.selftest


@pytest.fixture
def fake_cuda(monkeypatch):
    """N CUDA devices as devices.py sees them (no torch_npu on this machine, so auto picks cuda)."""
    def install(count: int):
        monkeypatch.setattr(devices, "_import_npu_backend", lambda: False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake H100")
    return install


@pytest.fixture
def fake_npu(monkeypatch):
    def install(count: int):
        fake = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: count,
                                     get_device_name=lambda device=None: "Ascend910B3")
        monkeypatch.setattr(devices, "_import_npu_backend", lambda: True)
        monkeypatch.setattr(devices, "_module", lambda kind: fake if kind == "npu" else None)
    return install


@pytest.mark.parametrize("spec,worker,expected", [
    ("auto", 3, "cuda:3"),
    ("cuda", 0, "cuda:0"),
    ("cuda", 7, "cuda:7"),
    ("auto", None, "cuda:0"),  # a plain run (or the xdist controller) is worker 0
    ("cuda:3", 1, "cuda:3"),  # an explicit index wins over the worker number
    ("cuda:5", None, "cuda:5"),
])
def test_worker_k_gets_cuda_k(fake_cuda, spec, worker, expected):
    fake_cuda(8)
    info = devices.resolve(spec, worker_index=worker)
    assert (info.device, info.type, info.count, info.name) == (expected, "cuda", 8, "Fake H100")


def test_worker_k_gets_npu_k(fake_npu):
    fake_npu(8)
    assert [devices.resolve("npu", worker_index=k).device for k in range(8)] == [f"npu:{k}" for k in range(8)]
    assert devices.resolve("auto", worker_index=5).device == "npu:5"


def test_more_workers_than_devices_is_one_line(fake_cuda):
    fake_cuda(2)
    with pytest.raises(devices.DeviceError, match=r"^pytest-xdist worker gw2 has no cuda device of its own: only 2 cuda "
                                                  r"device\(s\) are visible, so use -n 2 or fewer") as err:
        devices.resolve("cuda", worker_index=2)
    assert "\n" not in str(err.value)
    with pytest.raises(devices.DeviceError, match="only 2 cuda device"):
        devices.resolve("cuda:2", worker_index=0)


def test_controller_maps_every_worker_before_starting_them(fake_cuda):
    fake_cuda(8)
    info = devices.resolve("cuda")
    assert devices.xdist_devices(info, 8) == [f"cuda:{k}" for k in range(8)]
    assert devices.xdist_devices(devices.resolve("cuda:3"), 4) == ["cuda:3"] * 4
    with pytest.raises(devices.DeviceError, match="worker gw8 has no cuda device"):
        devices.xdist_devices(info, 9)


def test_cpu_workers_all_run_on_the_cpu():
    info = devices.resolve("cpu", worker_index=5)
    assert info.device == "cpu"
    assert devices.xdist_devices(info, 3) == ["cpu", "cpu", "cpu"]


def test_parts_survive_the_wire_and_merge_with_a_device_field():
    """What a worker sends through workeroutput comes back whole (every metric row, NaN included)."""
    from csm_conformance.suite.options import Settings
    from csm_conformance.suite.session import CheckResult, MetricRow

    def part(worker, device, value):
        meta = {"model": None, "device": {"spec": "cuda", "device": device, "type": "cuda", "name": "Fake", "count": 2},
                "dtype": "bfloat16", "versions": {"torch": "x"}}
        rows = [MetricRow("cosine", value, 0.9999, "floor", value > 0.9999), MetricRow("cosine", value, 0.99, "bound", True)]
        return reporting.Part(worker, meta, [CheckResult("short_en", "backbone_logits", rows, "passed" if value > 0.9999 else "failed")])

    sent = [part("gw1", "cuda:1", float("nan")), part("gw0", "cuda:0", 0.99999)]
    received = [reporting.Part.from_wire(json.loads(json.dumps(p.to_wire()))) for p in sent]
    assert [len(r.results[0].rows) for r in received] == [2, 2]
    doc = reporting.document(received, Settings())
    assert [(r["worker"], r["device"], r["status"]) for r in doc["results"]] == [("gw0", "cuda:0", "passed"), ("gw1", "cuda:1", "failed")]
    assert doc["device"]["device"] == "cuda:0, cuda:1" and doc["counts"] == {"passed": 1, "failed": 1}
    table = reporting.console_table(received)
    assert table[0].split()[0] == "device" and table[2].startswith("gw0 cuda:0") and "nan!" in table[3]


FAST = ["--csm-case", "short_en", "--csm-device", "cpu"]


def _report(pytester):
    return json.loads((pytester.path / "output" / "accuracy_evaluation.json").read_text())


def test_two_workers_merge_into_one_report(run_suite, pytester, monkeypatch):
    """-n 2 spreads the tests over both workers; the controller writes one report naming each
    result's worker and device, and prints one summary; each worker loaded its models once and
    took half the cores for torch (plugin/hooks.py: _share_the_cores)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    result = run_suite(pytester, "-n", "2", *FAST, "-k", "backbone_logits or depth_decoder_logits")
    out = result.stdout.str()
    assert result.ret == 0, out[-3000:]
    assert out.count("csm-conformance accuracy summary") == 1
    result.stdout.fnmatch_lines(["*one per pytest-xdist worker: gw0 -> cpu, gw1 -> cpu*",
                                 f"devices (one per pytest-xdist worker): gw0 cpu (*, 1 model load(s), {share} torch thread(s)), "
                                 f"gw1 cpu (*, 1 model load(s), {share} torch thread(s))",
                                 "device * case * check * result*"])
    report = _report(pytester)
    assert sorted((r["worker"], r["check"]) for r in report["results"]) == [("gw0", "backbone_logits"), ("gw1", "depth_logits")] or \
        sorted((r["worker"], r["check"]) for r in report["results"]) == [("gw0", "depth_logits"), ("gw1", "backbone_logits")]
    assert {r["device"] for r in report["results"]} == {"cpu"}
    assert [(w["worker"], w["model_loads"], w["device"]["torch_threads"]) for w in report["workers"]] == [("gw0", 1, share), ("gw1", 1, share)]
    assert report["counts"] == {"passed": 2}
    for worker in ("gw0", "gw1"):  # each worker's own share, in its own directory
        own = json.loads((pytester.path / "output" / worker / "accuracy_evaluation.json").read_text())
        assert [r["worker"] for r in own["results"]] == [worker]
    assert "gw0 cpu" in (pytester.path / "output" / "accuracy_summary.txt").read_text()


def test_dist_each_runs_every_test_on_every_worker(run_suite, pytester):
    result = run_suite(pytester, "-n", "2", "--dist", "each", *FAST, "-k", "backbone_logits")
    assert result.ret == 0, result.stdout.str()[-3000:]
    report = _report(pytester)
    assert [(r["worker"], r["case"], r["check"], r["status"]) for r in report["results"]] == [
        ("gw0", "short_en", "backbone_logits", "passed"), ("gw1", "short_en", "backbone_logits", "passed")]


FAKE_CUDA_PLUGIN = '''
"""Two CUDA devices as csm_conformance.runtime.devices sees them; records each process's device."""
import os
import torch

torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 2


def pytest_sessionfinish(session):
    from csm_conformance.plugin import SESSION_KEY
    conf = session.config.stash.get(SESSION_KEY, None)
    name = getattr(session.config, "workerinput", {}).get("workerid", "controller")
    if conf is not None:
        open(os.path.join(os.getcwd(), name + ".device"), "w").write(conf.device.device)
'''


def test_workers_resolve_their_own_device_and_performance_is_not_timed(run_suite, pytester, monkeypatch):
    """End to end through real xdist workers (fake CUDA, no model loaded): `-n auto` starts one
    worker per device (not xdist's own count, set to 5 here), gwK resolves cuda:K, and the
    performance tests are not timed in parallel but skipped with the per-card command, which
    --csm-strict turns red (without it they are reported as skipped: see test_strict.py)."""
    pytester.makepyfile(fake_cuda=FAKE_CUDA_PLUGIN)
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    result = run_suite(pytester, "-n", "auto", "-p", "fake_cuda", "--csm-device", "cuda", "--csm-workload", "short_32t",
                       "--csm-perf-modes", "eager", "--csm-strict", marker="performance")
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    assert [(pytester.path / f"{w}.device").read_text() for w in ("controller", "gw0", "gw1")] == ["cuda:0", "cuda:0", "cuda:1"]
    result.stdout.fnmatch_lines(["*gw0 -> cuda:0, gw1 -> cuda:1 |*", "created: 2/2 workers",
                                 "*--csm-strict fails every skipped gate test: performance is not timed under pytest-xdist*",
                                 "csm-conformance: pytest-xdist workers: gw0 cuda:0 (cuda), gw1 cuda:1 (cuda)",
                                 "*2 errors*"])
    assert "time each card without -n, e.g. pytest -m performance --csm-device cuda:K" in out


def test_more_workers_than_devices_stops_before_any_worker_starts(one_line_error, run_suite, pytester):
    pytester.makepyfile(fake_cuda=FAKE_CUDA_PLUGIN)
    result = run_suite(pytester, "-n", "3", "-p", "fake_cuda", "--csm-device", "cuda")
    one_line_error(result, "csm-conformance: pytest-xdist worker gw2 has no cuda device of its own: only 2 cuda device(s)")
    assert not (pytester.path / "gw0.device").exists()


def test_recording_under_xdist_is_refused(one_line_error, run_suite, pytester):
    one_line_error(run_suite(pytester, "-n", "2", *FAST, "--csm-record-bounds"), "run them on one device, without -n")
