"""The performance workloads: a YAML file of fixed-length generations that users edit.

A workload is (text, frames); it runs at each of its batch sizes and in each timing mode. Its
definition digest travels with every stored figure, so a baseline measured on different work is
never compared with today's run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from csm_conformance.catalogue.cases import read_yaml
from csm_conformance.errors import UserError

DEFAULT_WORKLOADS = Path(__file__).resolve().parent / "data" / "performance_workloads.yaml"
FRAME_RATE_HZ = 12.5  # Mimi frames per second of audio
MODES = ("eager", "compiled")


class WorkloadError(UserError, ValueError):
    """The workload catalogue cannot be used; the message is one line."""


@dataclass(frozen=True)
class Workload:
    id: str
    text_name: str
    text: str
    frames: int
    batch_sizes: tuple[int, ...] = (1,)

    @property
    def audio_seconds(self) -> float:
        return self.frames / FRAME_RATE_HZ

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.text}\x00{self.frames}".encode()).hexdigest()[:12]

    def conversation(self, speaker: int = 0) -> list[dict]:
        return [{"role": str(speaker), "content": [{"type": "text", "text": self.text}]}]


@dataclass(frozen=True)
class PerfCase:
    """One timed configuration: a workload at one batch size in one mode; its id is the pytest id."""

    workload: Workload
    batch: int
    mode: str

    @property
    def id(self) -> str:
        return f"{self.workload.id}-b{self.batch}-{self.mode}"


def load_workloads(path: Path | str | None = None) -> list[Workload]:
    path = Path(path) if path else DEFAULT_WORKLOADS
    raw = read_yaml(path, "workload catalogue", WorkloadError)
    if not isinstance(raw, dict) or not isinstance(raw.get("texts"), dict) or not isinstance(raw.get("workloads"), list):
        raise WorkloadError(f"workload catalogue {path} must have a 'texts' mapping and a 'workloads' list")
    texts = raw["texts"]
    workloads: list[Workload] = []
    for i, entry in enumerate(raw["workloads"]):
        where = f"{path.name}: workloads[{i}]"
        if not isinstance(entry, dict):
            raise WorkloadError(f"{where}: each workload must be a mapping")
        wid = entry.get("id")
        if not isinstance(wid, str) or not wid.replace("_", "").isalnum():
            raise WorkloadError(f"{where}: 'id' must be a word of letters, digits or '_', got {wid!r}")
        if any(w.id == wid for w in workloads):
            raise WorkloadError(f"{where}: duplicate workload id '{wid}'")
        text_name = entry.get("text")
        if text_name not in texts or not isinstance(texts[text_name], str) or not texts[text_name].strip():
            raise WorkloadError(f"{where} ({wid}): 'text' must name one of the texts ({', '.join(texts)}), got {text_name!r}")
        frames = entry.get("frames")
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise WorkloadError(f"{where} ({wid}): 'frames' must be a positive integer, got {frames!r}")
        batches = entry.get("batch_sizes", [1])
        if not isinstance(batches, list) or not batches or not all(isinstance(b, int) and b >= 1 for b in batches):
            raise WorkloadError(f"{where} ({wid}): 'batch_sizes' must be a list of positive integers, got {batches!r}")
        workloads.append(Workload(wid, text_name, " ".join(texts[text_name].split()), frames, tuple(batches)))
    if not workloads:
        raise WorkloadError(f"workload catalogue {path} holds no workloads")
    return workloads


@dataclass(frozen=True)
class Tier:
    """A named set of workloads and modes: `quick` answers "5 % or not" in minutes, `full` is nightly."""

    name: str
    workloads: tuple[str, ...]
    modes: tuple[str, ...]
    batch_sizes: tuple[int, ...] | None = None  # None: each workload's own


TIERS = ("quick", "full")


def load_tiers(path: Path | str | None = None) -> dict[str, Tier]:
    """The catalogue's tiers; a catalogue without them gets quick = its first workload in eager
    mode and full = every workload in both modes."""
    path = Path(path) if path else DEFAULT_WORKLOADS
    workloads = load_workloads(path)
    raw = read_yaml(path, "workload catalogue", WorkloadError).get("tiers")
    known = [w.id for w in workloads]
    if raw is None:
        return {"quick": Tier("quick", (known[0],), ("eager",)), "full": Tier("full", tuple(known), MODES)}
    if not isinstance(raw, dict) or set(raw) != set(TIERS):
        raise WorkloadError(f"workload catalogue {path}: 'tiers' must define exactly {' and '.join(TIERS)}")
    tiers = {}
    for name, entry in raw.items():
        ids, modes = (entry or {}).get("workloads"), (entry or {}).get("modes")
        if not isinstance(ids, list) or not ids or any(i not in known for i in ids):
            raise WorkloadError(f"workload catalogue {path}: tier {name}: 'workloads' must list workload ids (known: {', '.join(known)})")
        if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
            raise WorkloadError(f"workload catalogue {path}: tier {name}: 'modes' must list {' and/or '.join(MODES)}")
        batches = (entry or {}).get("batch_sizes")
        if batches is not None and (not isinstance(batches, list) or not batches or not all(isinstance(b, int) and b >= 1 for b in batches)):
            raise WorkloadError(f"workload catalogue {path}: tier {name}: 'batch_sizes' must be a list of positive integers")
        tiers[name] = Tier(name, tuple(ids), tuple(modes), tuple(batches) if batches else None)
    return tiers


def tier_selection(path: Path | str | None, tier: str, wanted: list[str], modes: list[str]) -> tuple[list[str], list[str], tuple[int, ...] | None]:
    """(workload ids, modes, batch sizes or None for each workload's own) to time: what was asked
    for, the tier's for what was not. Workloads named explicitly run at their own batch sizes."""
    tiers = load_tiers(path)
    if tier not in tiers:
        raise WorkloadError(f"unknown performance tier '{tier}': use {' or '.join(TIERS)}")
    chosen = tiers[tier]
    return (list(wanted) or list(chosen.workloads)), (list(modes) or list(chosen.modes)), (None if wanted else chosen.batch_sizes)


def perf_cases(workloads: list[Workload], modes: list[str], wanted: list[str] | None = None,
               batch_sizes: tuple[int, ...] | None = None) -> list[PerfCase]:
    """Every (workload, batch, mode) to time, modes outermost so each mode's compile happens once."""
    unknown_modes = [m for m in modes if m not in MODES]
    if unknown_modes:
        raise WorkloadError(f"unknown performance mode {', '.join(map(repr, unknown_modes))}: use {' or '.join(MODES)}")
    if wanted:
        known = [w.id for w in workloads]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise WorkloadError(f"unknown workload id {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        workloads = [w for w in workloads if w.id in wanted]
    return [PerfCase(w, b, m) for m in modes for w in workloads for b in (batch_sizes or w.batch_sizes)]
