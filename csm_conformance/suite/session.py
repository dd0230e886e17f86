"""One conformance run: its settings, its two models, the reference cache, and every verdict.

Tests ask this object for reference outputs (computed once per case and shared by the checks that
need them) and hand it their metrics; it applies the gate (global cosine floor, stored per-case
bounds, strict mode) and keeps each verdict for the reports written at the end of the session.

The session itself resolves the settings and loads the models; the other jobs live in their own
modules (issue 12) and the session forwards to them, so that the tests, the plugin and the
localizer keep calling it as before: the reference outputs in reference_outputs.py, the gate and
bounds recording in accuracy/gate.py, whole-model checks in accuracy/model_checks.py, and the verdicts'
data (CheckResult, MetricRow, still exported here) in check_results.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from csm_conformance import faults
from csm_conformance.accuracy import golden, model_checks
from csm_conformance.accuracy.bounds import BoundsBook, bounds_path
from csm_conformance.accuracy.check_results import CheckResult, MetricRow
from csm_conformance.accuracy.gate import AccuracyGate
from csm_conformance.accuracy.model_checks import NonFiniteOutputError
from csm_conformance.accuracy.reference_outputs import ReferenceOutputs
from csm_conformance.baseline_files import BaselineError
from csm_conformance.catalogue.cases import Catalogue, CodecCase, PromptCase, load_catalogue
from csm_conformance.errors import UserError
from csm_conformance.performance.run import PerformanceRun
from csm_conformance.runtime import devices
from csm_conformance.runtime.models import LoadedModel, ModelSource, dtype_name, parse_dtype
from csm_conformance.suite.options import Settings

__all__ = ["ConformanceError", "ConformanceSession", "CheckResult", "MetricRow", "NonFiniteOutputError", "decode_frames"]


class ConformanceError(UserError, RuntimeError):
    """A setup problem the user must fix; the message is one line."""


def _resolve(settings: Settings, worker_index: int | None) -> tuple[torch.dtype, devices.DeviceInfo, ModelSource, Catalogue]:
    """The run's dtype, device, model source and selected cases; a bad setting is a ConformanceError."""
    try:
        return (parse_dtype(settings.csm_dtype), devices.resolve(settings.csm_device, settings.csm_require_device, worker_index),
                ModelSource(settings.csm_model), load_catalogue(settings.csm_cases or None).select(settings.csm_case))
    except (devices.DeviceError, ValueError, RuntimeError) as exc:
        raise ConformanceError(str(exc)) from None


def _stored_bounds(path: Path, recording: bool) -> BoundsBook | None:
    """The stored bounds (None when there is no file); an unusable file is a ConformanceError unless
    this run records new bounds."""
    try:
        return BoundsBook.load(path)
    except BaselineError as exc:
        if not recording:
            raise ConformanceError(str(exc)) from None
        return None


def _require_audio_backend(catalogue: Catalogue) -> None:
    """transformers before 4.56 reads context audio through librosa even when it is given as an
    array (its load_audio requires it), so cases with context audio cannot run there without it:
    say so once, before any test, instead of one ImportError per case."""
    import importlib.util

    import transformers

    from csm_conformance.runtime.known_issues import LIBROSA_BEFORE, parse_version

    has_context = any(case.context for case in catalogue.prompts)
    if has_context and parse_version(transformers.__version__)[:2] < LIBROSA_BEFORE and importlib.util.find_spec("librosa") is None:
        raise ConformanceError(f"transformers {transformers.__version__} needs librosa to read the context audio of multi-turn cases "
                               "(its load_audio requires it before 4.56): pip install 'csm-conformance[librosa]' (or librosa)")


def decode_frames(settings: Settings, case: PromptCase) -> int:
    """Frames of the case's decode-loop check: --csm-decode-frames, else the case's decode_frames."""
    return settings.csm_decode_frames or case.decode_frames


class ConformanceSession:
    def __init__(self, settings: Settings, worker_index: int | None = None):
        self.settings = settings
        self.dtype, self.device, self.source, self.catalogue = _resolve(settings, worker_index)
        _require_audio_backend(self.catalogue)
        if self.device.simulated and (settings.csm_record_bounds or settings.csm_save_golden):
            raise ConformanceError(f"refusing to record bounds or golden references on a simulated device ({self.device.name}): "
                                   "its numbers are the CPU's, not an accelerator's")
        self.dtype_name = dtype_name(self.dtype)
        self.model_key = self.source.key
        self.bounds_file = bounds_path(settings.baselines_dir, self.model_key, self.device.type, self.dtype_name)
        self.bounds: BoundsBook | None = _stored_bounds(self.bounds_file, settings.csm_record_bounds)

        try:
            self.perf = PerformanceRun(self)
        except ValueError as exc:
            raise ConformanceError(str(exc)) from None
        self.reference: LoadedModel | None = None
        self.target: LoadedModel | None = None
        self.fault_notes: list[str] = []
        self.results: list[CheckResult] = []
        self.measured: dict[str, dict[str, dict[str, float]]] = {}
        self.record_outcome: str | None = None
        self.refs = ReferenceOutputs(self)
        self.gate = AccuracyGate(self)

    # ---- models -------------------------------------------------------------------------
    def load_models(self) -> None:
        """Both models: the CPU float32 reference (accuracy checks) and the device model."""
        if self.reference is None:
            try:
                self.reference = self.source.load("cpu", torch.float32)
                if self.bounds is not None and not self.settings.csm_record_bounds:
                    self.bounds.check_weights(self.reference.identity.weights_digest)
            except (RuntimeError, ValueError) as exc:
                raise ConformanceError(str(exc).splitlines()[0]) from None
        self.load_target()

    def load_target(self) -> None:
        """The device model alone (performance tests need no reference), with any planted faults."""
        if self.target is not None:
            return
        try:
            self.target = self.source.load(self.device.device, self.dtype, reference=self.reference)
            for spec in self.settings.csm_fault:
                self.fault_notes.append(faults.apply_fault(self.target.model, spec))
        except (RuntimeError, ValueError) as exc:
            raise ConformanceError(str(exc).splitlines()[0]) from None

    @property
    def identity(self):
        loaded = self.reference or self.target
        return loaded.identity if loaded else None

    # ---- reference outputs (CPU float32), computed once per case: ReferenceOutputs --------
    def cached(self, key: tuple, compute):
        return self.refs.cached(key, compute)

    def ref_backbone_logits(self, case: PromptCase) -> torch.Tensor:
        return self.refs.backbone_logits(case)

    def ref_codes(self, case: PromptCase) -> torch.Tensor:
        return self.refs.codes(case)

    def ref_depth_logits(self, case: PromptCase, codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.refs.depth_logits(case, codes)

    def codec_codes(self, case: CodecCase) -> torch.Tensor:
        return self.refs.codec_codes(case)

    def ref_decode(self, case: CodecCase) -> torch.Tensor:
        return self.refs.decode(case)

    def ref_encode(self, case: CodecCase) -> torch.Tensor:
        return self.refs.encode(case)

    def module_local_errors(self, case: PromptCase | CodecCase) -> dict[str, float]:
        return self.refs.module_local_errors(case)

    # ---- the gate: AccuracyGate and model_checks ------------------------------------------
    def module_local_bounds(self, case_id: str) -> dict[str, float]:
        return self.gate.module_local_bounds(case_id)

    def check_load_integrity(self) -> CheckResult | None:
        return self.gate.check_load_integrity()

    def nonfinite_result(self, case: str, check: str, **tensors: torch.Tensor) -> CheckResult | None:
        return self.gate.nonfinite_result(case, check, **tensors)

    def device_generation(self, case: PromptCase, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return model_checks.device_generation(self, case, frames, seed)

    def evaluate(self, case: str, check: str, values: dict[str, float], floors: dict[str, float] | None = None,
                 invariants: dict[str, tuple[float, str, float]] | None = None, use_bounds: bool = True,
                 info: dict[str, float] | None = None) -> CheckResult:
        return self.gate.evaluate(case, check, values, floors, invariants, use_bounds, info)

    def check_logits(self, case: str, check: str, ref: torch.Tensor, dev: torch.Tensor) -> CheckResult:
        return self.gate.check_logits(case, check, ref, dev)

    # ---- golden references ----------------------------------------------------------------
    def golden_file(self, case_id: str) -> Path:
        return golden.golden_path(self.settings.baselines_dir, self.model_key, case_id)

    def run_meta(self) -> dict:
        return {
            "model": self.identity.as_dict() if self.identity else None,
            "device": {"spec": self.device.spec, "device": self.device.device, "type": self.device.type,
                       "name": self.device.name, "count": self.device.count, "torch_threads": torch.get_num_threads()},
            "dtype": self.dtype_name,
            "versions": devices.software_versions(),
        }

    # ---- end of session -----------------------------------------------------------------
    def finish(self) -> None:
        outcome = self.gate.record_bounds()
        if outcome is not None:
            self.record_outcome = outcome
