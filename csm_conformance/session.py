"""One conformance run: its settings, its two models, the reference cache, and every verdict.

Tests ask this object for reference outputs (computed once per case and shared by the checks that
need them) and hand it their metrics; it applies the gate (global cosine floor, stored per-case
bounds, strict mode) and keeps each verdict for the reports written at the end of the session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import devices, faults, golden, localize, metrics, probes
from .bounds import BaselineError, BoundsBook, bounds_path, build_bounds, write_bounds
from .cases import Catalogue, CodecCase, PromptCase, load_catalogue
from .models import LoadedModel, ModelSource, dtype_name, parse_dtype
from .options import Settings


class ConformanceError(RuntimeError):
    """A setup problem the user must fix; the message is one line."""


class NonFiniteOutputError(RuntimeError):
    """The device model produced NaN or Inf where a check needed numbers; the message is one
    line naming the case, the check and the output."""


@dataclass
class MetricRow:
    metric: str
    value: float
    bound: float | None = None
    rule: str = "bound"  # bound | floor | invariant | unbounded (bound missing) | info (never bounded)
    ok: bool | None = None
    op: str | None = None  # for invariants: ">=", "<=" or "=="

    def describe(self) -> str:
        if self.rule == "invariant":
            return f"{self.metric} is {self.value:g}, must be {self.op} {self.bound:g}"
        better = metrics.better(self.metric) if metrics.known(self.metric) else "lower"
        op = ">=" if better == "higher" else "<="
        return f"{self.metric} {self.value:.7g} {'within' if self.ok else 'outside'} {op} {self.bound:.7g} ({self.rule})"


@dataclass
class CheckResult:
    case: str
    check: str
    rows: list[MetricRow] = field(default_factory=list)
    status: str = "passed"  # passed | failed | no-bound | saved
    messages: list[str] = field(default_factory=list)

    def failure_text(self) -> str:
        return f"{self.case}/{self.check}: " + "; ".join(self.messages)

    def as_dict(self) -> dict:
        return {
            "case": self.case,
            "check": self.check,
            "status": self.status,
            "messages": self.messages,
            "metrics": {
                r.metric: {"value": _json_float(r.value), "bound": _json_float(r.bound), "rule": r.rule, "ok": r.ok,
                           **({"op": r.op} if r.op else {})}
                for r in self.rows
            },
        }


def _json_float(value):
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


def _require_audio_backend(catalogue: Catalogue) -> None:
    """transformers before 4.56 reads context audio through librosa even when it is given as an
    array (its load_audio requires it), so cases with context audio cannot run there without it:
    say so once, before any test, instead of one ImportError per case."""
    import importlib.util

    import transformers

    from .known_issues import LIBROSA_BEFORE, parse_version

    has_context = any(case.context for case in catalogue.prompts)
    if has_context and parse_version(transformers.__version__)[:2] < LIBROSA_BEFORE and importlib.util.find_spec("librosa") is None:
        raise ConformanceError(f"transformers {transformers.__version__} needs librosa to read the context audio of multi-turn cases "
                               "(its load_audio requires it before 4.56): pip install 'csm-conformance[librosa]' (or librosa)")


class ConformanceSession:
    def __init__(self, settings: Settings, worker_index: int | None = None):
        self.settings = settings
        try:
            self.dtype = parse_dtype(settings.csm_dtype)
            self.device = devices.resolve(settings.csm_device, settings.csm_require_device, worker_index)
            self.source = ModelSource(settings.csm_model)
            self.catalogue: Catalogue = load_catalogue(settings.csm_cases or None).select(settings.csm_case)
        except (devices.DeviceError, ValueError, RuntimeError) as exc:
            raise ConformanceError(str(exc)) from None
        _require_audio_backend(self.catalogue)
        if self.device.simulated and (settings.csm_record_bounds or settings.csm_save_golden):
            raise ConformanceError(f"refusing to record bounds or golden references on a simulated device ({self.device.name}): "
                                   "its numbers are the CPU's, not an accelerator's")
        self.dtype_name = dtype_name(self.dtype)
        self.model_key = self.source.key
        self.bounds_file = bounds_path(settings.baselines_dir, self.model_key, self.device.type, self.dtype_name)
        self.bounds: BoundsBook | None = None
        try:
            self.bounds = BoundsBook.load(self.bounds_file)
        except BaselineError as exc:
            if not settings.csm_record_bounds:
                raise ConformanceError(str(exc)) from None
        from .performance import PerformanceRun

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
        self._cache: dict[tuple, object] = {}

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

    def cached(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # ---- reference outputs (CPU float32), computed once per case -------------------------
    def ref_backbone_logits(self, case: PromptCase) -> torch.Tensor:
        return self.cached(("backbone", case.id), lambda: probes.backbone_logits(self.reference, case))

    def ref_codes(self, case: PromptCase) -> torch.Tensor:
        return self.cached(("codes", case.id), lambda: probes.greedy_codes(self.reference, case, case.depth_frames))

    def ref_depth_logits(self, case: PromptCase, codes: torch.Tensor | None = None) -> torch.Tensor:
        if codes is not None:
            return probes.depth_decoder_logits(self.reference, case, codes)
        return self.cached(("depth", case.id), lambda: probes.depth_decoder_logits(self.reference, case, self.ref_codes(case)))

    def codec_codes(self, case: CodecCase) -> torch.Tensor:
        cfg = self.reference.model.config
        return probes.seeded_codes(cfg.num_codebooks, case.decode_frames, min(cfg.vocab_size, cfg.codec_config.codebook_size), case.decode_seed)

    def ref_decode(self, case: CodecCase) -> torch.Tensor:
        return self.cached(("decode", case.id), lambda: probes.mimi_decode(self.reference, self.codec_codes(case)))

    def ref_encode(self, case: CodecCase) -> torch.Tensor:
        wave = torch.from_numpy(case.encode_audio.waveform())
        return self.cached(("encode", case.id), lambda: probes.mimi_encode(self.reference, wave))

    def module_local_errors(self, case: PromptCase | CodecCase) -> dict[str, float]:
        """{module: relative error that device module adds on the reference's own inputs}."""
        if isinstance(case, PromptCase):
            compute = lambda: localize.local_errors_prompt(self.reference, self.target, case, self.ref_codes(case))  # noqa: E731
        else:
            compute = lambda: localize.local_errors_decode(self.reference, self.target, self.codec_codes(case))  # noqa: E731
        return self.cached(("local", case.id), compute)

    def module_local_bounds(self, case_id: str) -> dict[str, float]:
        """{module: stored bound of its local error} for a case (empty when none are stored or
        the run records bounds)."""
        if self.bounds is None or self.settings.csm_record_bounds:
            return {}
        stored = self.bounds.bounds_of(case_id, "module_local")
        return {name.split("@", 1)[1]: bound for name, bound in stored.items() if "@" in name}

    # ---- the gate -----------------------------------------------------------------------
    def check_load_integrity(self) -> CheckResult | None:
        """The `load_integrity` check of both loads (None: nothing was loaded from a checkpoint).
        Its message blames the stack when the checkpoint is the suite's fixed embedded one."""
        loads = [(side, loaded) for side, loaded in (("reference", self.reference), ("device", self.target))
                 if loaded is not None and loaded.integrity is not None]
        if not loads:
            return None
        def key(loaded):
            return tuple(tuple(v) for v in loaded.integrity.as_dict().values())
        problems = {}
        for side, loaded in loads:  # one line per distinct finding, naming the loads that show it
            if not loaded.integrity.clean:
                problems.setdefault(key(loaded), (loaded.integrity, []))[1].append(side)
        names = {"missing": "missing_tensors", "unexpected": "dropped_tensors", "untied": "untied_ties", "errors": "load_errors"}
        values = {f"{names[kind]}@{side}": float(len(items)) for side, loaded in loads
                  for kind, items in loaded.integrity.as_dict().items()}
        result = CheckResult("model", "load_integrity", status="failed" if problems else "passed")
        result.rows = [MetricRow(name, value, 0.0, "invariant", value == 0.0, "==") for name, value in values.items()]
        if problems:
            versions = devices.software_versions()
            stack = f"transformers {versions.get('transformers')} with torch {versions.get('torch')}"
            for integrity, sides in problems.values():
                result.messages.append(f"{' and '.join(sides)} load: " + "; ".join(integrity.problems()))
            if self.source.kind == "embedded-tiny":
                result.messages.append(f"this is the suite's fixed embedded checkpoint, which other supported releases load cleanly "
                                       f"(docs/stack-range.md): the fault is this stack's ({stack}), and checks on these weights test other weights")
            else:
                result.messages.append(f"{stack} loaded '{self.source.spec}' differently from how it is stored: "
                                       "run the same command on your current stack to see whether it loads it cleanly")
        self.results.append(result)
        return result

    def nonfinite_result(self, case: str, check: str, **tensors: torch.Tensor) -> CheckResult | None:
        """A failed result naming every output (by its keyword) that holds NaN or Inf, or None."""
        bad = {name: metrics.describe_nonfinite(t) for name, t in tensors.items()}
        bad = {name: what for name, what in bad.items() if what}
        if not bad:
            return None
        result = CheckResult(case, check, status="failed")
        for name, what in bad.items():
            result.messages.append(f"{name} has non-finite values (NaN/Inf): {what}")
        self.results.append(result)
        return result

    def device_generation(self, case: PromptCase, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The device's seeded generation (codes, audio). When sampling fails because the device's
        logits are not finite (torch.multinomial rejects NaN/Inf probabilities), the generation
        check is recorded as failed and NonFiniteOutputError names the output that went bad,
        instead of the sampler's error from deep inside generate."""
        try:
            return probes.seeded_generation(self.target, case, frames, seed)
        except RuntimeError as exc:
            try:
                outputs = {"device_backbone_logits": probes.backbone_logits(self.target, case, context_codec=self.reference)}
                if self.reference is not None:
                    outputs["device_depth_logits"] = probes.depth_decoder_logits(
                        self.target, case, self.ref_codes(case), context_codec=self.reference)
            except Exception:  # noqa: BLE001  the device cannot run a forward now: its first error is the report
                outputs = {}
            result = self.nonfinite_result(case.id, "generation", **outputs)
            if result is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result.messages.append(f"generation stopped at sampling ({type(exc).__name__}: {first})")
            raise NonFiniteOutputError(result.failure_text()) from exc

    def evaluate(self, case: str, check: str, values: dict[str, float], floors: dict[str, float] | None = None,
                 invariants: dict[str, tuple[float, str, float]] | None = None, use_bounds: bool = True,
                 info: dict[str, float] | None = None) -> CheckResult:
        """Judge one check. `floors`: metric -> threshold that holds whatever the bounds say;
        `invariants`: name -> (value, op, required) with op one of >=, <=, ==; `use_bounds=False`
        for checks judged by fixed thresholds alone (golden drift), whose other metrics are info."""
        result = CheckResult(case, check)
        recording = self.settings.csm_record_bounds or not use_bounds
        missing = []
        for name, value in values.items():
            if not use_bounds:
                result.rows.append(MetricRow(name, value, None, "info", None))
                continue
            if recording or self.bounds is None:
                bound = None
            else:
                bound = self.bounds.bound(case, check, name)
            if bound is None:
                missing.append(name)
                result.rows.append(MetricRow(name, value, None, "unbounded", None))
            else:
                ok = metrics.is_within(name, value, bound)
                result.rows.append(MetricRow(name, value, bound, "bound", ok))
        for name, threshold in (floors or {}).items():
            ok = metrics.is_within(name, values[name], threshold)
            result.rows.append(MetricRow(name, values[name], threshold, "floor", ok))
        for name, value in (info or {}).items():  # shown and reported, never judged
            result.rows.append(MetricRow(name, value, None, "info", None))
        for name, (value, op, required) in (invariants or {}).items():
            ok = {">=": value >= required, "<=": value <= required, "==": value == required}[op]
            result.rows.append(MetricRow(name, float(value), float(required), "invariant", bool(ok), op))
        result.messages = [r.describe() for r in result.rows if r.ok is False]
        if result.messages:
            result.status = "failed"
        elif missing and not recording:
            where = self.bounds_file if self.bounds is not None else f"{self.bounds_file} (absent)"
            note = f"no bound stored for {', '.join(missing)} in {where}"
            result.messages.append(note)
            result.status = "failed" if self.settings.csm_strict else "no-bound"
        if use_bounds:
            self.measured.setdefault(case, {})[check] = {k: v for k, v in values.items() if metrics.known(k)}
        self.results.append(result)
        return result

    def check_logits(self, case: str, check: str, ref: torch.Tensor, dev: torch.Tensor) -> CheckResult:
        bad = self.nonfinite_result(case, check, reference=ref, device=dev)
        if bad is not None:
            return bad
        values = metrics.logits_metrics(ref, dev, self.dtype)
        ties = int(metrics.near_ties(ref, self.dtype).sum())
        result = self.evaluate(case, check, values, floors={"cosine": self.settings.csm_min_cosine},
                               info={"argmax_near_ties": float(ties)})
        return result

    # ---- golden references ----------------------------------------------------------------
    def golden_file(self, case_id: str) -> Path:
        return golden.golden_path(self.settings.baselines_dir, self.model_key, case_id)

    def run_meta(self) -> dict:
        return {
            "model": self.identity.as_dict() if self.identity else None,
            "device": {"spec": self.device.spec, "device": self.device.device, "type": self.device.type,
                       "name": self.device.name, "count": self.device.count},
            "dtype": self.dtype_name,
            "versions": devices.software_versions(),
        }

    # ---- end of session -----------------------------------------------------------------
    def finish(self) -> None:
        if not self.settings.csm_record_bounds or not self.results:
            return
        failed = [r for r in self.results if r.status == "failed"]
        if failed:
            self.record_outcome = f"bounds NOT recorded: {len(failed)} check(s) failed, e.g. {failed[0].failure_text()}"
            return
        if self.settings.csm_fault:
            self.record_outcome = "bounds NOT recorded: a fault is planted in this run"
            return
        keep = None
        if self.bounds is not None and (self.bounds.data.get("model") or {}).get("weights_digest") == self.identity.weights_digest:
            keep = self.bounds
        meta = self.run_meta()
        document = build_bounds(self.measured, self.settings.csm_bound_margin, meta)
        write_bounds(self.bounds_file, document, merge_with=keep)
        self.record_outcome = f"bounds recorded for {len(self.measured)} case(s) with margin {self.settings.csm_bound_margin:g} in {self.bounds_file}"
