"""Where the model under test comes from, how it is loaded, and what it is called in reports.

Four sources, one loading path: `tiny` (the embedded model, written to a cache directory and
loaded with `from_pretrained` like a real checkpoint), a local directory in the `sesame/csm-1b`
layout, a hub id (works only where the user has hub access or a cache; `HF_HUB_OFFLINE` is
honoured by transformers itself), and `random-full` (CSM-1B's exact shapes with seeded random
weights, for timing the real architecture where no weights are at hand).

Every identity says what kind of weights it is, so that no report on tiny or random weights can
be read as a real-weight result.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from csm_conformance.errors import UserError
from csm_conformance.runtime import tiny_model
from csm_conformance.runtime.load_integrity import LoadIntegrity, inspect_load, mismatched_shapes

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}
RANDOM_FULL_SEED = 1234
RANDOM_FULL_NAME = "random-full-csm-1b"


class ModelError(UserError, RuntimeError):
    """The model cannot be found or loaded; the message is one line for the user."""


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.strip().lower()]
    except KeyError:
        raise ModelError(f"unknown dtype '{name}': use bfloat16, float16 or float32") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class ModelIdentity:
    key: str  # file-name-safe name used for baselines: embedded-tiny-csm, random-full-csm-1b, ...
    kind: str  # "embedded-tiny" | "random-full" | "checkpoint"
    source: str  # directory, hub id, or how it was built
    revision: str | None = None  # hub snapshot, when the directory is one
    weights_digest: str | None = None

    @property
    def claim(self) -> str:
        if self.kind == "embedded-tiny":
            return "embedded tiny CSM, seeded random weights: NOT a real-weight result"
        if self.kind == "random-full":
            return "full-size CSM-1B shapes, seeded random weights: NOT a real-weight result"
        return f"checkpoint weights from {self.source}"

    def describe(self) -> str:
        parts = [self.key]
        if self.revision:
            parts.append(f"rev {self.revision}")
        if self.weights_digest:
            parts.append(f"weights {self.weights_digest}")
        return f"{' | '.join(parts)} ({self.claim})"

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "source": self.source,
            "revision": self.revision,
            "weights_digest": self.weights_digest,
            "claim": self.claim,
        }


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    device: str
    dtype: torch.dtype
    identity: ModelIdentity
    load_seconds: float
    notes: list[str] = field(default_factory=list)
    integrity: LoadIntegrity | None = None  # None: not loaded from a checkpoint (random-full)


def _from_pretrained_kwargs(dtype: torch.dtype) -> dict:
    """transformers renamed `torch_dtype` to `dtype` in 4.56; 4.52-4.55 know only the old name."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def files_digest(directory: Path) -> str:
    """The weights' identity: a hash of the weight files as stored, the same on every stack that
    reads them (so bounds and golden references apply to every stack, and a stack that loads the
    files differently is judged by the load integrity check, not refused)."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def tiny_weights_digest() -> str:
    return files_digest(tiny_model.ensure_tiny_model_dir())


class ModelSource:
    """A resolved `--csm-model` value; `load` gives a model on one device in one dtype."""

    def __init__(self, spec: str):
        self.spec = spec.strip() or "tiny"
        if self.spec == "tiny":
            self.kind = "embedded-tiny"
        elif self.spec == "random-full":
            self.kind = "random-full"
        else:
            self.kind = "checkpoint"
            path = Path(self.spec).expanduser()
            looks_like_path = path.exists() or self.spec.startswith((".", "/", "~")) or self.spec.count("/") != 1
            self.path = path if looks_like_path else None
            if self.path is not None:
                self._validate_directory(self.path)

    @staticmethod
    def _validate_directory(path: Path) -> None:
        if not path.exists():
            raise ModelError(f"model path {path} does not exist")
        if not path.is_dir():
            raise ModelError(f"model path {path} is not a directory")
        config = path / "config.json"
        if not config.is_file():
            raise ModelError(f"model directory {path} has no config.json (expected the sesame/csm-1b layout)")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{config} is not valid JSON ({exc})") from None
        if model_type != "csm":
            raise ModelError(f"{config} describes model_type '{model_type}', not 'csm'")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ModelError(f"model directory {path} has no weight files (*.safetensors)")

    @property
    def key(self) -> str:
        """File-name-safe model name: names its baselines and its reports alike."""
        if self.kind == "embedded-tiny":
            return tiny_model.MODEL_NAME
        if self.kind == "random-full":
            return RANDOM_FULL_NAME
        if self.path is None:  # hub id
            return self.spec.replace("/", "--")
        path = self.path.resolve()
        if path.parent.name == "snapshots":  # a hub cache snapshot: models--org--name/snapshots/<rev>
            return path.parent.parent.name.replace("models--", "")
        return path.name

    def describe_spec(self) -> str:
        if self.kind == "embedded-tiny":
            return f"{tiny_model.MODEL_NAME} (fixed checkpoint {tiny_model.CHECKPOINT_DIR})"
        if self.kind == "random-full":
            return f"{RANDOM_FULL_NAME} (seed {RANDOM_FULL_SEED})"
        return self.spec

    def load(self, device: str, dtype: torch.dtype, reference: LoadedModel | None = None) -> LoadedModel:
        start = time.perf_counter()
        if self.kind == "random-full":
            loaded = self._random_full(device, dtype, reference)
        else:
            loaded = self._pretrained(device, dtype)
        loaded.model.eval()
        loaded.load_seconds = time.perf_counter() - start
        return loaded

    def _pretrained(self, device: str, dtype: torch.dtype) -> LoadedModel:
        from transformers import AutoProcessor, CsmForConditionalGeneration

        if self.kind == "embedded-tiny":
            location = str(tiny_model.ensure_tiny_model_dir())
        else:
            location = str(self.path) if self.path is not None else self.spec
        try:
            processor = AutoProcessor.from_pretrained(location)
            model, info = CsmForConditionalGeneration.from_pretrained(
                location,
                attn_implementation="sdpa",
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below, by name and shape, as an error
                **_from_pretrained_kwargs(dtype),
            )
        except Exception as exc:  # noqa: BLE001  safetensors, tokenizers and the hub raise their own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"could not load '{self.spec}' on {device}: {type(exc).__name__}: {first}") from None
        wrong_shape = mismatched_shapes(info)
        if wrong_shape:
            raise ModelError(f"weights in '{self.spec}' do not match its config.json: {len(wrong_shape)} of another shape, e.g. {wrong_shape[0]}")
        integrity = inspect_load(model, info)  # judged by test_load_integrity, not refused here
        model = model.to(device)  # no device_map: that would need accelerate, whose NPU detection is fragile
        if self.kind == "embedded-tiny":
            identity = ModelIdentity(self.key, self.kind, "fixed checkpoint in the package", None, tiny_weights_digest())
        else:
            path = Path(location)
            revision = path.name if path.parent.name == "snapshots" else None
            digest = files_digest(path) if path.is_dir() else None
            identity = ModelIdentity(self.key, self.kind, location, revision, digest)
        return LoadedModel(model, processor, device, dtype, identity, 0.0, integrity=integrity)

    def _random_full(self, device: str, dtype: torch.dtype, reference: LoadedModel | None) -> LoadedModel:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(tiny_model.ensure_tiny_model_dir()))
        if reference is not None:
            model = copy.deepcopy(reference.model).to(device=device, dtype=dtype)
            return LoadedModel(model, processor, device, dtype, reference.identity, 0.0, ["device copy of the CPU reference"])
        model = build_random_full(RANDOM_FULL_SEED).to(device=device, dtype=dtype)
        how = f"CsmConfig() defaults + csm-1b RoPE scaling, torch seed {RANDOM_FULL_SEED}"
        identity = ModelIdentity(self.key, self.kind, how, None, f"seed:{RANDOM_FULL_SEED}")
        return LoadedModel(model, processor, device, dtype, identity, 0.0, ["tokenizer and chat template: the embedded tiny model's"])


def random_full_config():
    """CsmConfig() has csm-1b's sizes; the real checkpoint adds llama3 RoPE scaling, set here too."""
    import transformers
    from transformers import CsmConfig

    backbone = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 0.125, "high_freq_factor": 0.5, "original_max_position_embeddings": 1024}
    depth = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 0.001953125, "high_freq_factor": 0.0078125, "original_max_position_embeddings": 16}
    if int(transformers.__version__.split(".")[0]) >= 5:
        return CsmConfig(
            rope_parameters={**backbone, "rope_theta": 500000.0},
            depth_decoder_config={"rope_parameters": {**depth, "rope_theta": 500000.0}},
        )
    return CsmConfig(rope_scaling=backbone, rope_theta=500000.0, depth_decoder_config={"rope_scaling": depth, "rope_theta": 500000.0})


def build_random_full(seed: int) -> torch.nn.Module:
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(random_full_config())
    # Mimi's codebooks start as zeros; give them values so decode produces audio, not silence.
    generator = torch.Generator().manual_seed(seed)
    for name, buffer in model.codec_model.named_buffers():
        if name.endswith("embed_sum"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator))
    return model
