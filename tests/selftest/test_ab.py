"""The paired A/B comparison: its interval covers, its decisions follow the interval, its controller
stops when figures are decided or the budget is spent, bad input is one line, and a planted
slowdown in a real worker is REGRESSED. A fake worker (any executable that speaks the protocol,
as the interface allows) makes the controller's logic testable in seconds."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap
import time

import pytest

from csm_conformance.catalogue.workloads import WorkloadError, load_tiers, tier_selection
from csm_conformance.performance import paired_stats as stats
from csm_conformance.performance.baselines import compare_figures, parse_tolerances
from csm_conformance.tools.ab.cli import main as ab_main
from csm_conformance.tools.ab.cli import parse_budget

pytestmark = [pytest.mark.selftest, pytest.mark.timing]  # judged by wall-clock time: run alone (.ci/run)
PY = sys.executable


# ---- the statistic ---------------------------------------------------------------------------
def test_signed_rank_table_matches_the_published_critical_values():
    # two-sided 5 %: n=10 -> T <= 8, n=20 -> T <= 52 (standard Wilcoxon tables)
    assert stats._order_statistic_index(10, 0.05) == 9
    assert stats._order_statistic_index(20, 0.05) == 53
    assert stats._order_statistic_index(5, 0.05) == 0  # five pairs cannot reach 95 %
    exact, normal = stats._order_statistic_index(60, 0.01), None
    stats_exact_limit = stats.EXACT_UP_TO
    try:
        stats.EXACT_UP_TO = 0
        normal = stats._order_statistic_index(60, 0.01)
    finally:
        stats.EXACT_UP_TO = stats_exact_limit
    assert 0 <= exact - normal <= 5  # beyond the exact table the normal approximation errs wide (conservative), by < 1 % of 1830


@pytest.mark.parametrize("tails", ["normal", "heavy"])
def test_interval_covers_the_true_ratio(tails):
    """Symmetric log-ratios around log(1.05), light or heavy tailed (a fifth of the pairs hit 3x
    harder on either side, as interference does): the 95 % interval covers at least 93 % of 400 runs."""
    rng = random.Random(0)
    truth, covered = 1.05, 0
    for _ in range(400):
        d = []
        for _ in range(20):
            noise = rng.gauss(0, 0.1) * (3 if tails == "heavy" and rng.random() < 0.2 else 1)
            d.append(math.log(truth) + noise)
        iv = stats.ratio_interval(d, 0.05)
        covered += iv.low <= truth <= iv.high
    assert covered / 400 >= 0.93, covered


def test_decisions_follow_the_interval():
    make = lambda lo, hi: stats.Interval(1.0, lo, hi, 0.99, 20)  # noqa: E731
    assert stats.decide(make(1.06, 1.2), 0.05) == "REGRESSED"
    assert stats.decide(make(0.9, 1.04), 0.05) == "SAFE"
    assert stats.decide(make(1.0, 1.1), 0.05) == "undecided"
    assert stats.look_schedule(60) == [10, 14, 20, 28, 39, 55, 60]
    assert stats.look_schedule(8) == [8]


def test_noise_can_no_longer_swallow_a_2x_slowdown_in_the_stored_gate():
    tol = parse_tolerances(["time=5%", "cpu.time=30%"])
    baseline = {"frame_ms_median": {"value": 10.0, "cv": 0.6}}  # a loaded machine: CV 60 % -> noise 180 %
    slow = {"frame_ms_median": {"value": 20.0, "cv": 0.6}}
    uncapped = compare_figures(baseline, slow, tol, "cpu", 3.0, noise_cap=math.inf)[0]
    capped = compare_figures(baseline, slow, tol, "cpu", 3.0)[0]
    assert uncapped.verdict == "ok"  # what the gate did before the cap
    assert (capped.verdict, capped.tolerance) == ("regressed", 0.5)
    assert compare_figures(baseline, {"frame_ms_median": {"value": 14.0, "cv": 0.6}}, tol, "cpu", 3.0)[0].verdict == "ok"


def test_tolerances_may_name_a_figure():
    tol = parse_tolerances(["time=5%", "cpu.time=10%", "cpu.prefill_ms=50%"])
    from csm_conformance.performance.baselines import tolerance_for

    assert tolerance_for(tol, "cpu", "time", "prefill_ms") == (0.5, 0.0)
    assert tolerance_for(tol, "cpu", "time", "ttfa_ms") == (0.1, 0.0)
    assert tolerance_for(tol, "cuda", "time", "prefill_ms") == (0.05, 0.0)


def test_tiers_and_budgets():
    tiers = load_tiers()
    assert tiers["quick"].workloads == ("short_32t",) and tiers["quick"].modes == ("eager",)
    assert len(tiers["full"].workloads) == 6 and set(tiers["full"].modes) == {"eager", "compiled"}
    assert tier_selection(None, "quick", ["long_512t"], []) == (["long_512t"], ["eager"], None)
    assert tier_selection(None, "quick", [], []) == (["short_32t"], ["eager"], (1, 4))
    with pytest.raises(WorkloadError, match="unknown performance tier"):
        tier_selection(None, "nightly", [], [])
    assert (parse_budget("60,240s").max_pairs, parse_budget("60,240s").seconds) == (60, 240)
    assert parse_budget("4m").seconds == 240 and parse_budget("30").max_pairs == 30


# ---- the controller, with a fake worker -------------------------------------------------------
FAKE = textwrap.dedent('''\
    #!{python}
    """A stand-in worker: frames of 20 ms x FAKE_SLOWDOWN (after side) with log-normal noise."""
    import json, os, random, sys
    slowdown = float(os.environ.get("FAKE_SLOWDOWN", "1"))
    noise = float(os.environ.get("FAKE_NOISE", "0.05"))
    fail = os.environ.get("FAKE_FAIL", "")
    rng = None
    side = None
    rounds = 0
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        if op == "quit":
            print(json.dumps({{"ok": True}}), flush=True); break
        if op == "setup":
            side = "after" if req["faults"] else "before"
            rng = random.Random(int(os.environ.get("FAKE_SEED", "0")) * 2 + (side == "after"))
            if fail in (side, "both"):
                print(json.dumps({{"ok": False, "error": "ModelError: no model at /nowhere"}}), flush=True); continue
            if fail == side + "-exit":
                sys.exit(3)
            reply = {{"identity": {{"key": "fake", "claim": "a fake worker"}}, "device": {{"device": "cpu", "type": "cpu", "name": "Fake",
                     "fingerprint": "cpu|Fake|x1", "simulated": False}}, "dtype": "bfloat16",
                     "versions": {{"python": "3", "torch": "0", "transformers": side}}, "fault_notes": req["faults"],
                     "threads": 1, "pid": os.getpid(), "python": sys.executable, "load_s": 0.0}}
            # the stack fingerprint (runtime/stack.py's shape): this process's packages and library variables
            reply["stack"] = {{"python": "3", "suite": "0", "distributions": {{"torch": "0", "transformers": os.environ.get("FAKE_TRANSFORMERS", "5.25.0")}},
                              "accelerator": {{"type": "cpu"}}, "environment": {{k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if os.environ.get(k)}}}}
        elif op == "prepare":
            reply = {{"case": req["workload"], "mode_label": "eager", "warmup_wall_s": [], "digest": "x"}}
        elif op == "round":
            rounds += 1
            token = None
            if req.get("turns"):  # frame-interleaved (turns.py): wait for the turn; hand it back as done
                import select
                r, w = map(int, os.environ["CSM_AB_TURN_FDS"].split(","))
                if not select.select([r], [], [], req["turns"]["timeout_s"])[0]:
                    print(json.dumps({{"ok": False, "error": "TurnTimeout: the other side did not hand the turn back"}}), flush=True); continue
                token = os.read(r, 1)
            if fail == side + "-round-exit":
                os._exit(9)
            if fail == side + "-round-hang" or (fail == side + "-round2-hang" and rounds == 2):
                import time; time.sleep(3600)
            if token == b"t":
                os.write(w, b"d")
            if fail == side + "-round":
                print(json.dumps({{"ok": False, "error": "PlantedFaultError: generation raised at frame 5"}}), flush=True); continue
            k = (slowdown if side == "after" else 1.0) * rng.lognormvariate(0, noise)
            f = 0.020 * k
            reply = {{"wall_s": 32 * f, "ttfa_s": 1.5 * f, "prefill_s": 0.5 * f, "frame_median_s": f, "frame_p90_s": 1.2 * f,
                     "frames": 32, "batch": 1, "intervals_s": [f] * 31, "turns": bool(req.get("turns"))}}
        elif op == "memory":
            reply = {{"peak_bytes": 100 * 2**20, "method": "fake"}}
        elif op == "profile" and fail == side + "-profile-exit":
            sys.exit(5)
        elif op == "profile" and fail == side + "-profile":
            print(json.dumps({{"ok": False, "error": "RuntimeError: the profiler could not start"}}), flush=True); continue
        elif op == "profile":  # op_profile's summary: aten::silu takes FAKE_SLOWDOWN x its time on the after side
            k = slowdown if side == "after" else 1.0
            jitter = lambda us: us * rng.lognormvariate(0, noise)
            ops = {{"aten::silu|mlp.act_fn": {{"us": jitter(400 * k), "calls": 2.0, "device_us": 0.0, "shapes": "1x8" if req.get("shapes") else ""}},
                   "aten::linear|mlp.up_proj": {{"us": jitter(1000), "calls": 2.0, "device_us": 0.0, "shapes": ""}}}}
            in_ops = sum(r["us"] for r in ops.values())
            reply = {{"summary": {{"frames": 8, "operators": ops, "modules": {{"mlp": {{"us": in_ops + 50, "self_us": jitter(50), "calls": 2.0}}}},
                     "host_device": {{"wall_us": in_ops + 3000, "operators_host_us": in_ops, "outside_operators_us": 3000.0, "device_busy_us": None}},
                     "trace": None, "module_marks": True}}}}
        reply["ok"] = True
        reply["seconds"] = 0.0
        print(json.dumps(reply), flush=True)
    ''')


@pytest.fixture
def fake_python(tmp_path) -> str:
    path = tmp_path / "fake-python"
    path.write_text(FAKE.format(python=PY))
    path.chmod(0o755)
    return str(path)


def run_ab(tmp_path, monkeypatch, fake_python, *extra, slowdown=1.0, noise=0.05, fail=""):
    monkeypatch.setenv("FAKE_SLOWDOWN", str(slowdown))
    monkeypatch.setenv("FAKE_NOISE", str(noise))
    monkeypatch.setenv("FAKE_FAIL", fail)
    out = tmp_path / "ab"
    args = ["--before", fake_python, "--after", fake_python, "--after-fault", "marker", "--workload", "short_32t", "--batch", "1",
            "--output", str(out), *extra]
    code = ab_main(args)
    doc = json.loads((out / "ab.json").read_text()) if (out / "ab.json").exists() else None
    return code, doc


@pytest.mark.parametrize("interleave", ["auto", "round"])
def test_same_speed_is_safe_and_stops_at_the_first_look(tmp_path, monkeypatch, fake_python, capsys, interleave):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", "--interleave", interleave, noise=0.01)
    assert (code, doc["verdict"]) == (0, "SAFE")
    assert doc["interleave"] == ("frame" if interleave == "auto" else "round")  # the fake is a CPU device
    case = doc["cases"][0]
    assert case["pairs"] == 10 and all(f["pairs_used"] == 10 and f["decision"] == "SAFE" for f in case["figures"])
    assert [r["order"] for r in case["rounds"][:4]] == ["AB", "BA", "AB", "BA"]  # ABBA
    md = (tmp_path / "ab" / "ab.md").read_text()
    assert "## short_32t-b1-eager: SAFE" in md
    assert ("taking turns frame by frame" in md) == (interleave == "auto") and ("back to back" in md) == (interleave == "round")


def test_a_slower_candidate_is_regressed_with_its_ratio(tmp_path, monkeypatch, fake_python, capsys):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", slowdown=1.2)
    assert (code, doc["verdict"]) == (1, "REGRESSED")
    frame = next(f for f in doc["cases"][0]["figures"] if f["figure"] == "frame_ms_median")
    assert frame["decision"] == "REGRESSED" and frame["low"] <= 1.2 <= frame["high"]
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("csm-conformance ab: REGRESSED (short_32t-b1-eager: frame_ms_median x1.") for line in out)
    # a REGRESSED case is profiled on both sides without being asked: the operator that grew comes first
    attribution = json.loads((tmp_path / "ab" / "attribution.json").read_text())
    assert attribution["operators"][0]["name"] == "aten::silu" and attribution["operators"][0]["decision"] == "grew"
    assert attribution["operators"][0]["shapes"] == "1x8"  # from the labelling round
    assert [r["decision"] for r in attribution["operators"][1:]] == ["unchanged"]
    md = (tmp_path / "ab" / "ab.md").read_text().splitlines()
    assert md[0].startswith("# A/B performance: REGRESSED") and "aten::silu" in md[4], md[:6]
    assert any(line.startswith("  where: operator aten::silu at mlp.act_fn") for line in out)


def test_a_profiler_that_fails_leaves_the_verdict_and_says_so(tmp_path, monkeypatch, fake_python, capsys):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", slowdown=1.2, fail="after-profile")
    assert (code, doc["verdict"]) == (1, "REGRESSED") and "attribution" not in doc
    assert doc["cases"][0]["attribution_error"] == "after: the worker refused 'profile': RuntimeError: the profiler could not start" or \
        "the profiler could not start" in doc["cases"][0]["attribution_error"]
    md = (tmp_path / "ab" / "ab.md").read_text().splitlines()
    assert md[2].startswith("Where the time went: not known (short_32t-b1-eager: profiling failed: ") and "could not start" in md[2]
    assert any("where: short_32t-b1-eager: profiling failed" in line for line in capsys.readouterr().out.splitlines())


def test_a_worker_that_dies_while_profiling_stops_the_run_as_inconclusive(tmp_path, monkeypatch, fake_python):
    """The profiler, not the timed stack, failed: no REGRESSED for a crash, and the cases left
    untimed make it INCONCLUSIVE, with the reason."""
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", "--profile", "--batch", "4",
                       slowdown=1.0, fail="after-profile-exit")
    assert (code, doc["verdict"]) == (3, "INCONCLUSIVE") and len(doc["cases"]) == 1, doc["reasons"]
    assert "worker died while profiling, so the cases after it were not timed" in doc["reasons"][0]


def test_a_safe_run_is_not_profiled_unless_asked(tmp_path, monkeypatch, fake_python, capsys):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", slowdown=1.0)
    assert code == 0 and "attribution" not in doc and not (tmp_path / "ab" / "attribution.json").exists()
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", "--profile", slowdown=1.0)
    assert code == 0 and doc["attribution"]["headline"][0].startswith("no operator, module or host/device time changed")
    assert json.loads((tmp_path / "ab" / "attribution.json").read_text())["report_schema"] == "csm-conformance/attribution/1"


def test_an_undecidable_difference_is_inconclusive_when_the_budget_ends(tmp_path, monkeypatch, fake_python, capsys):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=2%", "--budget", "12", slowdown=1.02, noise=0.3)
    assert (code, doc["verdict"]) == (3, "INCONCLUSIVE")
    assert doc["cases"][0]["pairs"] == 12 and "pair budget spent" in doc["cases"][0]["stop_reason"]


@pytest.mark.parametrize("side, code, verdict", [("after", 1, "REGRESSED"), ("before", 3, "INCONCLUSIVE")])
def test_a_stack_that_crashes_while_timing_is_judged_not_bad_input(tmp_path, monkeypatch, fake_python, capsys, side, code, verdict):
    got, doc = run_ab(tmp_path, monkeypatch, fake_python, fail=f"{side}-round")
    assert (got, doc["verdict"], doc["failure"]["side"]) == (code, verdict, side)
    who = "candidate" if side == "after" else "current stack"
    assert doc["reasons"][0] == f"short_32t-b1-eager: the {who} failed while timing: {side}: PlantedFaultError: generation raised at frame 5"


@pytest.mark.parametrize("args, fail, message", [
    (["--budget", "lots"], "", "--budget 'lots': use"),
    (["--tolerance", "speed=5%"], "", "bad tolerance 'speed=5%'"),
    (["--workload", "nope"], "", "unknown workload id 'nope'"),
    (["--tier", "nightly"], "", "argument --tier: invalid choice"),
    (["--budget", "4"], "", "--budget 4 pairs can never decide at alpha 0.05: use at least 6"),
    (["--mode", "compiled", "--warmup", "0"], "", "--warmup must be >= 0, and >= 1 when compiled mode is timed"),
    (["--output", "/proc/no/such/dir"], "", "--output /proc/no/such/dir: cannot write there"),
    ([], "both", "before: ModelError: no model at /nowhere; after: ModelError: no model at /nowhere"),
    (["--pin-cpu", "999"], "", "--pin-cpu 999: this process may use cores"),
    (["--pin-cpu", "fast"], "", "--pin-cpu 'fast': use auto, none or a core number"),
    (["--profile-rounds", "3"], "", "--profile-rounds 3: use 6 or more (fewer rounds can never decide a row)"),
    (["--profile", "--profile-rounds", "0"], "", "--profile-rounds 0: use 6 or more"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, fake_python, capsys, args, fail, message):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, *args, fail=fail)
    err = capsys.readouterr().err.strip()
    assert code == 2 and doc is None
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("interleave", ["frame", "round"])
@pytest.mark.parametrize("fail, expected", [
    ("after-round-exit", "exited with code 9"),
    ("after-round-hang", "no reply to 'round' within 3 s: the worker was stopped"),
    ("after-round2-hang", None),  # it hangs holding the turn (frame) or the round (round) of the BA pair
])
def test_a_candidate_that_dies_or_hangs_while_timing_is_regressed(tmp_path, monkeypatch, fake_python, capsys, interleave, fail, expected):
    from csm_conformance.tools.ab import workers

    monkeypatch.setattr(workers, "DEFAULT_TIMEOUT_S", 3.0)
    started = time.monotonic()
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, "--interleave", interleave, fail=fail)
    assert (code, doc["verdict"], doc["failure"]["side"]) == (1, "REGRESSED", "after"), doc["reasons"]
    if expected is None:  # the current stack, waiting for the turn, gives up first and names whom it waited for
        expected = "held its turn for more than 2 s" if interleave == "frame" else "no reply to 'round' within 3 s"
    assert expected in doc["reasons"][0], doc["reasons"]
    assert time.monotonic() - started < 30


def test_a_candidate_that_cannot_load_what_the_current_stack_loads_is_regressed(tmp_path, monkeypatch, fake_python, capsys):
    code, doc = run_ab(tmp_path, monkeypatch, fake_python, fail="after")
    assert (code, doc["verdict"]) == (1, "REGRESSED")
    assert doc["reasons"] == ["setup: the candidate could not set up: after: ModelError: no model at /nowhere"]
    assert "**The after worker could not set up**" in (tmp_path / "ab" / "ab.md").read_text()


def test_a_a_is_told_by_the_stack_fingerprint_not_by_the_interpreter(tmp_path, monkeypatch, fake_python, capsys):
    """One interpreter on both sides is A/A only while the two stacks are the same: given another
    LD_LIBRARY_PATH (here by a wrapper that execs the same interpreter), it is an A/B naming that
    variable, in ab.json and in ab.md's header."""
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    _, doc = run_ab(tmp_path, monkeypatch, fake_python, "--tolerance", "time=5%", noise=0.01)
    assert doc["kind"] == "A/A (the same stack on both sides), planted: after fault marker" and doc["stack_diff"] == []
    assert "The two stacks are the same" in (tmp_path / "ab" / "ab.md").read_text()
    wrapper = tmp_path / "other-libraries-python"
    wrapper.write_text(f"#!/bin/sh\nLD_LIBRARY_PATH=/opt/planted/lib exec {fake_python} \"$@\"\n")
    wrapper.chmod(0o755)
    out = tmp_path / "ab2"
    ab_main(["--before", fake_python, "--after", str(wrapper), "--after-fault", "marker", "--workload", "short_32t", "--batch", "1",
             "--tolerance", "time=5%", "--output", str(out)])
    doc = json.loads((out / "ab.json").read_text())
    assert doc["kind"] == "A/B (two stacks: env.LD_LIBRARY_PATH - -> /opt/planted/lib), planted: after fault marker", doc["kind"]
    assert doc["stack_diff"] == [{"what": "env.LD_LIBRARY_PATH", "before": None, "after": "/opt/planted/lib"}]
    assert doc["after"]["stack"]["environment"] == {"LD_LIBRARY_PATH": "/opt/planted/lib"} and doc["before"]["stack"]["environment"] == {}
    md = (out / "ab.md").read_text()
    assert "| env.LD_LIBRARY_PATH | - | /opt/planted/lib |" in md and md.index("Stack, before -> after:") < md.index("## short_32t-b1-eager")
    # another package version on one side: an A/B naming it
    wrapper.write_text(f"#!/bin/sh\nFAKE_TRANSFORMERS=5.30.0 exec {fake_python} \"$@\"\n")
    ab_main(["--before", fake_python, "--after", str(wrapper), "--workload", "short_32t", "--batch", "1", "--output", str(out)])
    assert json.loads((out / "ab.json").read_text())["kind"] == "A/B (two stacks: transformers 5.25.0 -> 5.30.0)"


def test_a_real_worker_sends_its_stack_fingerprint(tmp_path):
    """The worker's setup reply carries runtime/stack.py's fingerprint of its own process: its
    interpreter's distributions and the library variables it was started with."""
    from csm_conformance.runtime import stack
    from csm_conformance.tools.ab.workers import WorkerProcess

    worker = WorkerProcess("after", PY, tmp_path / "worker.log", env_extra={"LD_LIBRARY_PATH": "/opt/planted/lib"})
    try:
        worker.send("setup", model="tiny", device="cpu", dtype="bfloat16", faults=[], threads=1, seed=0)
        reply = worker.receive()
    finally:
        worker.close()
    assert reply["ok"], reply
    assert reply["stack"]["environment"]["LD_LIBRARY_PATH"] == "/opt/planted/lib"
    assert reply["stack"]["distributions"] == stack.distributions() and reply["stack"]["accelerator"] == {"type": "cpu"}


def test_a_missing_interpreter_is_one_line(tmp_path, capsys):
    code = ab_main(["--before", "/no/such/python", "--after", PY, "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "csm-conformance ab: --before /no/such/python: no such interpreter"


# ---- a real worker on the embedded model --------------------------------------------------------
def test_a_planted_2x_slowdown_in_a_real_worker_is_regressed(tmp_path):
    """Two real workers on the embedded model, the candidate slowed 100 % per frame (spin-wait):
    REGRESSED at the first look, with the frame ratio near 2. Run from outside the repository,
    as `python -m csm_conformance ab`, the documented command."""
    out = tmp_path / "ab"
    proc = subprocess.run([PY, "-m", "csm_conformance", "ab", "--before", PY, "--after", PY, "--workload", "short_32t", "--batch", "1",
                           "--tolerance", "time=5%", "--after-fault", "slowdown:1.0", "--budget", "10", "--output", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads((out / "ab.json").read_text())
    frame = next(f for f in doc["cases"][0]["figures"] if f["figure"] == "frame_ms_median")
    assert frame["decision"] == "REGRESSED" and 1.6 < frame["ratio"] < 2.8, frame
    assert doc["interleave"] == "frame"  # the CPU default
    assert doc["after"]["fault_notes"] and not doc["before"]["fault_notes"]
    assert "NOT a real-weight result" in (out / "ab.md").read_text()


# ---- frame interleaving -------------------------------------------------------------------------
def test_a_handover_takes_the_other_sides_time_out_of_the_clock(monkeypatch):
    """While the other side holds the turn (here 0.3 s, a stand-in partner thread), this side's
    clock stands still, including when the scheduler switches away inside the write itself (on one
    core it often does: planted here as 0.1 s more in each write); `d` lets it run alone."""
    import os
    import threading
    import types

    from csm_conformance.runtime import clock
    from csm_conformance.tools.ab import turns as turns_module
    from csm_conformance.tools.ab.turns import Turns

    def preempted_write(fd, data):
        written = os.write(fd, data)
        time.sleep(0.1)
        return written

    monkeypatch.setattr(turns_module, "os", types.SimpleNamespace(write=preempted_write, read=os.read, environ=os.environ))

    mine_r, mine_w = os.pipe()
    theirs_r, theirs_w = os.pipe()

    def partner():
        for _ in range(2):
            assert os.read(theirs_r, 1) == b"t"
            time.sleep(0.3)  # the other side's frame
            os.write(mine_w, b"t")
        os.read(theirs_r, 1)
        os.write(mine_w, b"d")

    thread = threading.Thread(target=partner)
    thread.start()
    turns = Turns(mine_r, theirs_w)
    os.write(mine_w, b"t")  # the controller's first turn
    turns.begin(5.0)
    t0, wall0 = clock.now(), time.perf_counter()
    turns.hand_over()
    turns.hand_over()
    turns.hand_over()  # answered with d: from here on, alone
    assert turns.alone and turns.handovers == 3
    turns.hand_over()  # alone: returns at once
    thread.join(5)
    assert time.perf_counter() - wall0 > 0.55 and clock.now() - t0 < 0.05
    turns.finish()  # already alone: writes nothing
    assert not select_ready(theirs_r)
    for fd in (mine_r, mine_w, theirs_r, theirs_w):
        os.close(fd)


def select_ready(fd) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_a_partner_that_never_hands_back_is_a_one_line_timeout():
    import os

    from csm_conformance.tools.ab.turns import Turns, TurnTimeout

    mine_r, mine_w = os.pipe()
    theirs_r, theirs_w = os.pipe()
    turns = Turns(mine_r, theirs_w)
    os.write(mine_w, b"t")
    turns.begin(0.2)
    with pytest.raises(TurnTimeout, match="did not hand the turn back within 0 s"):
        turns.hand_over()
    assert turns.alone
    for fd in (mine_r, mine_w, theirs_r, theirs_w):
        os.close(fd)


def test_the_planted_ratio_tool_measures_a_planted_2x():
    """`python -m csm_conformance ab-planted`: the reference ratio an A/B interval must hold. A
    planted 100 % slowdown reads as about 2 (and an unknown workload is one line, exit 2)."""
    proc = subprocess.run([PY, "-m", "csm_conformance", "ab-planted", "--fraction", "1.0", "--rounds", "3"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "slowdown:1 plants" in x)
    ratio = float(line.split(" plants x")[1].split()[0])
    assert 1.6 < ratio < 2.8, line
    bad = subprocess.run([PY, "-m", "csm_conformance", "ab-planted", "--fraction", "0.1", "--workload", "nope"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("csm-conformance planted: unknown workload id 'nope' (known: short_32t, "), bad.stderr
