"""Speech from text with the model under test: what `inference.py` runs, on the suite's own parts.

The model, the device and the conversation come from the same code the conformance checks use
(ModelSource, devices.resolve, PromptCase + probes.prompt_inputs), so a sentence spoken here went
through exactly the loading and prompting path the suite judged. Unlike the benchmark, generation
may stop at CSM's end-of-speech frame (codebooks 0..N-2 all zero); `max_frames` caps it, and a
model that never emits that frame (the embedded tiny one, often the real one too) runs to the cap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from csm_conformance.catalogue.cases import SAMPLE_RATE, PromptCase, Turn
from csm_conformance.performance import timing
from csm_conformance.runtime import devices, probes
from csm_conformance.runtime.models import LoadedModel, ModelSource, parse_dtype
from csm_conformance.suite.session import ConformanceError

SPEAKERS = (0, 1)


@dataclass(frozen=True, eq=False)
class PromptAudio:
    """Context audio read from a file; stands where the catalogue's synthetic AudioSpec stands in
    a Turn (PromptCase.conversation() asks either for `.waveform()`)."""

    path: Path
    samples: np.ndarray  # mono float32 at SAMPLE_RATE

    def waveform(self) -> np.ndarray:
        return self.samples


@dataclass
class Synthesis:
    audio: torch.Tensor  # mono float32 on the CPU
    sample_rate: int
    frames: int  # audio frames produced (an end-of-speech frame is not counted)
    stopped_at_eos: bool
    generate_s: float  # backbone + depth decoder, prompt included
    decode_s: float  # Mimi decode of the codes
    peak_bytes: int | None  # see memory_method
    memory_method: str
    mode_label: str

    @property
    def audio_seconds(self) -> float:
        return self.audio.numel() / self.sample_rate

    @property
    def seconds(self) -> float:
        return self.generate_s + self.decode_s

    @property
    def rtf(self) -> float:
        """Processing time over audio time, as the performance gate defines RTF."""
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


def check_speaker(value) -> int:
    try:
        speaker = int(str(value).strip())
    except ValueError:
        speaker = None
    if speaker not in SPEAKERS:
        raise ConformanceError(f"speaker must be one of {', '.join(map(str, SPEAKERS))}, got '{value}'")
    return speaker


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling of a whole clip by its spectrum (scipy.signal.resample's method):
    prompts are a few seconds long, so one FFT is cheap and needs no audio library."""
    if rate == target or samples.size == 0:
        return samples
    length = max(1, round(samples.size * target / rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(spectrum.size, length // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n=length) * (length / samples.size)
    return out.astype(np.float32)


def read_prompt_audio(path: str | Path) -> PromptAudio:
    """A context recording as mono float32 at 24 kHz (channels averaged, resampled if needed)."""
    import soundfile as sf

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConformanceError(f"context audio {path} does not exist")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConformanceError(f"context audio {path} cannot be read: {first}") from None
    if samples.shape[0] == 0:
        raise ConformanceError(f"context audio {path} holds no samples")
    return PromptAudio(path, resample(samples.mean(axis=1), rate, SAMPLE_RATE))


def prompt(text: str, speaker, context: list[tuple[str, str, str]] = ()) -> PromptCase:
    """The conversation as a catalogue case: context turns (audio path, text, speaker), then the
    text to speak. Files are read here, before any model is loaded, so bad input fails at once."""
    if not text or not text.strip():
        raise ConformanceError("--text must not be empty")
    turns = tuple(Turn(check_speaker(who), said, read_prompt_audio(audio)) for audio, said, who in context)
    return PromptCase(id="inference", text=text, speaker=check_speaker(speaker), context=turns)


def load(model: str, device: str, dtype: str, require_accelerator: bool = False) -> tuple[LoadedModel, devices.DeviceInfo]:
    """The model on the device, as the suite loads its device model."""
    try:
        torch_dtype = parse_dtype(dtype)
        info = devices.resolve(device, require_accelerator)
        source = ModelSource(model)
        return source.load(info.device, torch_dtype), info
    except (devices.DeviceError, ValueError, RuntimeError) as exc:
        raise ConformanceError(str(exc).strip().splitlines()[0]) from None


def _frames_before_eos(codes: torch.Tensor, eos_id: int) -> tuple[int, bool]:
    """Frames to decode and whether generation ended on CSM's stop frame, by generate's own rule:
    a frame whose codebooks 0..N-2 all equal the end-of-speech id."""
    ended = bool((codes[-1, :-1] == eos_id).all()) if codes.shape[0] else False
    return codes.shape[0] - int(ended), ended


def check_sampling(max_frames: int, temperature: float, top_k: int) -> None:
    if max_frames < 1:
        raise ConformanceError(f"--max-tokens must be at least 1, got {max_frames}")
    if not temperature >= 0 or top_k < 0:
        raise ConformanceError(f"--temperature and --top-k must be >= 0, got {temperature} and {top_k}")


@torch.inference_mode()
def synthesize(loaded: LoadedModel, case: PromptCase, max_frames: int, temperature: float = 0.9,
               top_k: int = 50, seed: int | None = None, compile: bool = False) -> Synthesis:
    """Sampled speech for `case`, at most `max_frames` frames; temperature 0 means greedy.

    The same temperature and top-k apply to the backbone (codebook 0) and the depth decoder
    (codebooks 1..N-1), as in CSM's generation config. `compile` is the benchmark's compiled mode
    (static caches + torch.compile); its first call includes the compilation.
    """
    check_sampling(max_frames, temperature, top_k)
    sampling = {"do_sample": temperature > 0, "depth_decoder_do_sample": temperature > 0}
    if temperature > 0:
        sampling.update(temperature=temperature, top_k=top_k, depth_decoder_temperature=temperature, depth_decoder_top_k=top_k)
    inputs = probes.prompt_inputs(loaded, case)
    if seed is not None:
        torch.manual_seed(seed)
    device = loaded.device
    with timing.generation_mode(loaded, "compiled" if compile else "eager") as mode_label:
        devices.synchronize(device)
        devices.reset_peak_memory(device)
        start = time.perf_counter()
        codes = loaded.model.generate(**inputs, max_new_tokens=max_frames, output_audio=False, **sampling)[0]
        devices.synchronize(device)
        generated = time.perf_counter()
        frames, ended = _frames_before_eos(codes, loaded.model.config.codebook_eos_token_id)
        if frames == 0:
            raise RuntimeError("the model ended speech at its first frame: there is no audio to write")
        audio = probes.mimi_decode(loaded, codes[:frames].T)
        devices.synchronize(device)
        decoded = time.perf_counter()
    rate = loaded.processor.feature_extractor.sampling_rate
    return Synthesis(audio, rate, frames, ended, generated - start, decoded - generated,
                     devices.peak_memory_bytes(device), memory_method(device), mode_label)


def memory_method(device: str) -> str:
    """What the peak figure is. The CPU has no allocator statistic, and sampling the resident set
    (the performance gate's way) would cost the timed generation CPU time: the gate samples in an
    extra untimed round, which one synthesis does not have. So the CPU figure is the process's
    peak resident set, model loading included."""
    if device.split(":")[0] == "cpu":
        return "process peak resident set, model loading included"
    return "allocator peak during generation and decode (max_memory_allocated)"
