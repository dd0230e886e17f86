"""The accuracy catalogue: a YAML file of prompt and codec cases that users edit.

Validation happens at load time and fails with one line naming the file and the entry, because a
typo in a hand-edited catalogue should not surface as a traceback deep inside a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from csm_conformance.errors import UserError

SAMPLE_RATE = 24000
DEFAULT_CATALOGUE = Path(__file__).resolve().parent / "data" / "accuracy_cases.yaml"


class CatalogueError(UserError, ValueError):
    """The case catalogue cannot be used; the message is one line."""


@dataclass(frozen=True)
class AudioSpec:
    seconds: float
    f0: float = 150.0
    seed: int = 0

    def waveform(self) -> np.ndarray:
        return speechlike_waveform(self.seconds, self.f0, self.seed)


@dataclass(frozen=True)
class Turn:
    speaker: int
    text: str
    audio: AudioSpec | None = None


@dataclass(frozen=True)
class PromptCase:
    id: str
    text: str
    speaker: int = 0
    description: str = ""
    context: tuple[Turn, ...] = ()
    depth_frames: int = 4
    generate_frames: int = 0
    decode_frames: int = 32

    def conversation(self) -> list[dict]:
        """The chat-template conversation, with context audio as float32 arrays."""
        messages = []
        for turn in self.context:
            content = [{"type": "text", "text": turn.text}]
            if turn.audio is not None:
                content.append({"type": "audio", "path": turn.audio.waveform()})
            messages.append({"role": str(turn.speaker), "content": content})
        messages.append({"role": str(self.speaker), "content": [{"type": "text", "text": self.text}]})
        return messages


@dataclass(frozen=True)
class CodecCase:
    id: str
    description: str = ""
    decode_frames: int = 0
    decode_seed: int = 0
    encode_audio: AudioSpec | None = None

    @property
    def kind(self) -> str:
        return "decode" if self.decode_frames else "encode"


@dataclass
class Catalogue:
    path: Path
    prompts: list[PromptCase] = field(default_factory=list)
    codec: list[CodecCase] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [c.id for c in self.prompts] + [c.id for c in self.codec]

    def select(self, wanted: list[str]) -> "Catalogue":
        if not wanted:
            return self
        unknown = [w for w in wanted if w not in self.ids()]
        if unknown:
            raise CatalogueError(
                f"unknown case id {', '.join(map(repr, unknown))} (known: {', '.join(self.ids())})"
            )
        return Catalogue(
            self.path,
            [c for c in self.prompts if c.id in wanted],
            [c for c in self.codec if c.id in wanted],
        )


def speechlike_waveform(seconds: float, f0: float, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic voiced signal: a jittered harmonic source, three formants, syllable envelope.

    Stands in for recorded prompt audio: it has speech's spectral slope and 4-5 Hz syllable rate,
    so Mimi encodes it into varied codes, and it is bit-identical for a given (seconds, f0, seed).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 2 * np.pi))
    drift = 1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * vibrato * drift) / sr
    formants = rng.uniform([500, 1200, 2400], [800, 1800, 3000])
    signal = np.zeros(n)
    for k in range(1, int(4000 // f0) + 1):
        freq = k * f0
        gain = sum(1.0 / (1.0 + ((freq - fm) / 120.0) ** 2) for fm in formants) / k**0.5
        signal += gain * np.sin(k * phase)
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.3 * t)) ** 1.5
    signal = signal * syllables + 0.01 * rng.standard_normal(n)
    peak = np.abs(signal).max()
    return (0.5 * signal / peak).astype(np.float32) if peak > 0 else signal.astype(np.float32)


def _int(entry: dict, key: str, where: str, default: int) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or value < 0:
        raise CatalogueError(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def _audio(spec, where: str) -> AudioSpec:
    if not isinstance(spec, dict) or "seconds" not in spec:
        raise CatalogueError(f"{where}: audio needs at least 'seconds' (e.g. {{seconds: 2.0, f0: 140, seed: 1}})")
    try:
        audio = AudioSpec(float(spec["seconds"]), float(spec.get("f0", 150.0)), int(spec.get("seed", 0)))
    except (TypeError, ValueError) as exc:
        raise CatalogueError(f"{where}: bad audio spec {spec!r} ({exc})") from None
    if not (0 < audio.seconds <= 60 and 50 <= audio.f0 <= 1000 and math.isfinite(audio.seconds)):
        raise CatalogueError(f"{where}: audio seconds must be in (0, 60] and f0 in [50, 1000] Hz")
    return audio


def read_yaml(path: Path, noun: str, error: type[ValueError]):
    """A hand-edited YAML file's content, or `error` with one line naming the file."""
    if not path.is_file():
        raise error(f"{noun} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{noun} {path} is not valid YAML: {first}") from None


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    path = Path(path) if path else DEFAULT_CATALOGUE
    raw = read_yaml(path, "case catalogue", CatalogueError)
    if raw is None:  # an empty file, or only comments
        raise CatalogueError(f"case catalogue {path} holds no cases")
    if not isinstance(raw, dict):
        raise CatalogueError(f"case catalogue {path} must be a mapping with 'prompts' and/or 'codec' lists")
    catalogue = Catalogue(path)
    seen: set[str] = set()

    def check_id(entry, where):
        if not isinstance(entry, dict):
            raise CatalogueError(f"{where}: each case must be a mapping, got {type(entry).__name__}")
        case_id = entry.get("id")
        if not isinstance(case_id, str) or not case_id.replace("_", "").replace("-", "").isalnum():
            raise CatalogueError(f"{where}: 'id' must be a word of letters, digits, '_' or '-', got {case_id!r}")
        if case_id in seen:
            raise CatalogueError(f"{where}: duplicate case id '{case_id}'")
        seen.add(case_id)
        return case_id

    for i, entry in enumerate(raw.get("prompts") or []):
        where = f"{path.name}: prompts[{i}]"
        case_id = check_id(entry, where)
        where = f"{path.name}: case '{case_id}'"
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CatalogueError(f"{where}: 'text' must be a non-empty string")
        turns = []
        for j, turn in enumerate(entry.get("context") or []):
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str) or "audio" not in turn:
                raise CatalogueError(f"{where}: context[{j}] needs 'text', 'speaker' and 'audio'")
            turns.append(Turn(_int(turn, "speaker", where, 0), turn["text"], _audio(turn["audio"], f"{where} context[{j}]")))
        catalogue.prompts.append(
            PromptCase(
                id=case_id,
                text=text,
                speaker=_int(entry, "speaker", where, 0),
                description=str(entry.get("description", "")),
                context=tuple(turns),
                depth_frames=_int(entry, "depth_frames", where, 4),
                generate_frames=_int(entry, "generate_frames", where, 0),
                decode_frames=_int(entry, "decode_frames", where, 32),
            )
        )
    for i, entry in enumerate(raw.get("codec") or []):
        case_id = check_id(entry, f"{path.name}: codec[{i}]")
        where = f"{path.name}: case '{case_id}'"
        decode, encode = entry.get("decode"), entry.get("encode")
        if (decode is None) == (encode is None):
            raise CatalogueError(f"{where}: a codec case has exactly one of 'decode' or 'encode'")
        if decode is not None:
            if not isinstance(decode, dict):
                raise CatalogueError(f"{where}: 'decode' must be a mapping like {{frames: 25, seed: 7}}")
            frames = _int(decode, "frames", where, 0)
            if frames == 0:
                raise CatalogueError(f"{where}: decode needs frames > 0")
            catalogue.codec.append(
                CodecCase(case_id, str(entry.get("description", "")), frames, _int(decode, "seed", where, 0))
            )
        else:
            catalogue.codec.append(CodecCase(case_id, str(entry.get("description", "")), encode_audio=_audio(encode, where)))
    if not catalogue.prompts and not catalogue.codec:
        raise CatalogueError(f"case catalogue {path} holds no cases")
    return catalogue
