"""Where a slowdown went: two sets of profiled rounds (op_profile.summarize) compared row by row, per
operator, per module and host vs device, each row with a ratio, an interval over the rounds and a
decision against a stated noise floor.

Why both a ratio floor and a share of the frame: with some 200 operator rows, a few of the small
ones move by 10-20 % between two rounds of the same stack (a cache line, a timer tick), and their
intervals over 8 rounds can clear 1 on luck alone. A row is "grew" only when its whole interval is
above 1 + `ratio` AND it added more than `share` of a frame's time: a change too small to matter
to the frame is not named, one that matters is named with its interval. A changed call count is
named whatever its time (a new cast or copy, a fallback to the CPU, a graph break): it is exact, no
noise moves it.

Paired (the A/B): round i of the current stack and round i of the candidate ran back to back, so
log(after_i / before_i) removes the machine's speed of the moment; Hodges-Lehmann ratio and its
signed-rank interval (paired_stats). Stored (the stored gate): the candidate's rounds against the
one stored median, so the machine's speed then and now is in every ratio: noisier, said so.
"""

from __future__ import annotations

import math
import statistics

from csm_conformance.performance import paired_stats
from csm_conformance.performance.op_profile import split_key

FLOOR = {"ratio": 0.10, "share_of_frame": 0.005, "alpha": 0.05}
HOST_ROWS = {"wall_us": "wall time", "operators_host_us": "host time in operators",
             "outside_operators_us": "host time outside operators (Python, framework)", "device_busy_us": "device busy"}


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _time_field(rounds: list[dict]) -> str:
    """Operators are compared by their device time where the device reports kernels, else host."""
    return "device_us" if any((r["host_device"].get("device_busy_us") or 0) > 0 for r in rounds) else "us"


def _row(before: list[float], after: list[float], calls: tuple[float, float] | None, paired: bool, frame_us: float, floor: dict) -> dict:
    b, a = _median(before), _median(after)
    logs = ([math.log(y / x) for x, y in zip(before, after) if x > 0 and y > 0] if paired
            else [math.log(y / b) for y in after if y > 0 and b > 0])
    interval = paired_stats.ratio_interval(logs, floor["alpha"]) if logs else None
    delta = a - b
    finite = lambda x: x if x is not None and math.isfinite(x) else None  # noqa: E731  (JSON, and stored baselines, hold no inf)
    row = {"before_us_per_frame": b, "after_us_per_frame": a, "delta_us_per_frame": delta,
           "ratio": finite(interval.estimate) if interval else None, "low": finite(interval.low) if interval else None,
           "high": finite(interval.high) if interval else None}
    big = abs(delta) > floor["share_of_frame"] * frame_us
    all_before, all_after = all(x > 0 for x in before), all(y > 0 for y in after)
    if calls is not None and round(calls[0], 3) != round(calls[1], 3):
        row["decision"] = "new" if calls[0] == 0 else "gone" if calls[1] == 0 else "calls changed"
    elif big and b == 0 and all_after:  # time where there was none (device work moved here, or host work added)
        row["decision"] = "grew"
    elif big and a == 0 and all_before:
        row["decision"] = "shrank"
    elif interval and interval.low > 1 + floor["ratio"] and big and delta > 0:
        row["decision"] = "grew"
    elif interval and interval.high < 1 / (1 + floor["ratio"]) and big and delta < 0:
        row["decision"] = "shrank"
    else:
        row["decision"] = "unchanged"
    return row


def _growing(row: dict) -> bool:
    return row["decision"] in ("grew", "new") or (row["decision"] == "calls changed" and row["calls_after"] > row["calls_before"])


def _order(rows: list[dict]) -> list[dict]:
    """Named rows first: what grew (more time, a new call, more calls) by what it added to a frame,
    largest first; then what shrank or lost calls, largest reduction first; then the rest."""
    def key(r):
        if r["decision"] == "unchanged":
            return (2, -r["delta_us_per_frame"])
        return (0, -r["delta_us_per_frame"]) if _growing(r) else (1, r["delta_us_per_frame"])
    return sorted(rows, key=key)


def compare(before: list[dict], after: list[dict], paired: bool = True, floor: dict | None = None) -> dict:
    """operators, modules and host_device rows, sorted by contribution; `before` may be a single
    stored summary when not `paired`."""
    floor = {**FLOOR, **(floor or {})}
    frame_us = _median([r["host_device"]["wall_us"] for r in before])
    field = _time_field(before + after)
    values = lambda rounds, section, key, name: [r[section].get(key, {}).get(name, 0.0) for r in rounds]  # noqa: E731
    operators = []
    for key in set().union(*(r["operators"] for r in before + after)):
        op, module = split_key(key)
        calls = (_median(values(before, "operators", key, "calls")), _median(values(after, "operators", key, "calls")))
        row = _row(values(before, "operators", key, field), values(after, "operators", key, field), calls, paired, frame_us, floor)
        if field == "device_us":  # on an accelerator the host side is judged too: slower dispatch, a fallback to the CPU
            host = _row(values(before, "operators", key, "us"), values(after, "operators", key, "us"), calls, paired, frame_us, floor)
            row.update(host_before_us_per_frame=host["before_us_per_frame"], host_after_us_per_frame=host["after_us_per_frame"],
                       judged_by="device")
            if row["decision"] not in ("grew", "new", "gone", "calls changed") and host["decision"] != "unchanged" and \
                    (host["decision"] == "grew" or row["decision"] == "unchanged"):  # a slower host side (a fallback) outranks its device side
                row.update({k: host[k] for k in ("before_us_per_frame", "after_us_per_frame", "delta_us_per_frame", "ratio", "low",
                                                 "high", "decision")}, judged_by="host")
        shapes = next((r["operators"][key].get("shapes") for r in after + before if r["operators"].get(key, {}).get("shapes")), "")
        operators.append({"name": op, "shapes": shapes, "module": module, **row, "calls_before": calls[0], "calls_after": calls[1]})
    modules = []
    for key in set().union(*(r["modules"] for r in before + after)):
        calls = (_median(values(before, "modules", key, "calls")), _median(values(after, "modules", key, "calls")))
        row = _row(values(before, "modules", key, "self_us"), values(after, "modules", key, "self_us"), calls, paired, frame_us, floor)
        modules.append({"module": key, **row, "calls_before": calls[0], "calls_after": calls[1],
                        "inclusive_before_us_per_frame": _median(values(before, "modules", key, "us")),
                        "inclusive_after_us_per_frame": _median(values(after, "modules", key, "us"))})
    host_device = []
    for key, label in HOST_ROWS.items():
        b = [r["host_device"].get(key) for r in before]
        a = [r["host_device"].get(key) for r in after]
        if any(v is None for v in a + b):
            continue
        host_device.append({"what": label, **_row(b, a, None, paired, frame_us, floor)})
    return {"time": "device time of the kernels each operator launched" if field == "device_us" else "host time",
            "floor": floor, "paired": paired, "rounds": {"before": len(before), "after": len(after)},
            "frame_us_before": frame_us, "operators": _order(operators), "modules": _order(modules), "host_device": host_device}


def _ms(us: float) -> str:
    return f"{us / 1e3:.3f} ms" if abs(us) >= 1000 else f"{us:.1f} us"


def describe(row: dict, section: str) -> str:
    """One row as a line a reader takes in at once."""
    if section == "operators":
        what = (f"operator {row['name']} at {row['module'] or '?'}" + (f" ({row['shapes']})" if row.get("shapes") else "")
                + (" host time" if row.get("judged_by") == "host" else ""))
    elif section == "modules":
        what = f"module {row['module']} (host time outside its operators)"
    else:
        what = row["what"]
    ratio = "" if row.get("ratio") is None else f", x{row['ratio']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"
    calls = ""
    if "calls_before" in row and row["decision"] in ("new", "gone", "calls changed"):
        calls = f", calls per frame {row['calls_before']:g} -> {row['calls_after']:g}"
    return (f"{what}: {_ms(row['before_us_per_frame'])} -> {_ms(row['after_us_per_frame'])} per frame{ratio}{calls}, "
            f"{row['decision']} ({'+' if row['delta_us_per_frame'] >= 0 else ''}{_ms(row['delta_us_per_frame'])} per frame)")


def headline(table: dict, count: int = 3) -> list[str]:
    """The first `count` named rows: operators first, then modules, then host vs device; or the
    one line that says nothing cleared the floor."""
    lines = [describe(r, "operators") for r in table["operators"] if r["decision"] != "unchanged"]
    lines += [describe(r, "modules") for r in table["modules"] if r["decision"] != "unchanged"]
    lines += [describe(r, "host_device") for r in table["host_device"] if r["decision"] != "unchanged" and r["what"] != "wall time"]
    if lines:
        return lines[:count]
    f = table["floor"]
    return [f"no operator, module or host/device time changed beyond the noise floor (x{1 + f['ratio']:.2f} and "
            f"{f['share_of_frame']:.1%} of a frame, {1 - f['alpha']:.0%} intervals over {table['rounds']['after']} rounds)"]
