"""The suite's options: one table, each with a command-line flag, an environment twin and an ini key.

Precedence is command line > environment > pytest.ini > built-in default, so CI can steer a run
with environment variables alone and a developer can still override any of them by hand. The
tolerances stack instead: each source adds entries over the ones below it, key by key, so that
`--csm-perf-tolerance cpu.prefill_ms=50%` changes that one figure and keeps pytest.ini's CPU
tolerances (replaced wholesale, they fell back to the 5 % default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

from csm_conformance.errors import UserError
from csm_conformance.performance.baselines import parse_tolerances
from csm_conformance.runtime import host_speed

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: object
    help: str
    kind: str = "str"  # str | bool | float | list
    layered: bool = False  # a list whose sources stack (default, ini, env, command line), the last entry for a key wins

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = [
    Option("--csm-model", "CSM_MODEL", "tiny", "model under test: tiny (embedded), random-full, a local HF directory, or a hub id"),
    Option("--csm-device", "CSM_DEVICE", "auto", "device under test: auto (npu > cuda > xpu > mps > cpu), cpu, npu[:i], cuda[:i], ..."),
    Option("--csm-dtype", "CSM_DTYPE", "bfloat16", "dtype of the device model: bfloat16, float16 or float32"),
    Option("--csm-require-device", "CSM_REQUIRE_DEVICE", False, "fail when auto finds no accelerator instead of running on the CPU", "bool"),
    Option("--csm-strict", "CSM_STRICT", False, "a missing bound, golden or baseline, and every skipped gate test, fails instead of being reported", "bool"),
    Option("--csm-cases", "CSM_CASES", "", "case catalogue YAML (default: csm_conformance/catalogue/data/accuracy_cases.yaml)"),
    Option("--csm-case", "CSM_CASE", [], "run only these case ids (repeatable, or comma-separated in the env var)", "list"),
    Option("--csm-baselines", "CSM_BASELINES", "", "baselines directory (default: baselines/ at the repo root)"),
    Option("--csm-output", "CSM_OUTPUT", "output", "directory for the JSON, summary and audio reports"),
    Option("--csm-record-bounds", "CSM_RECORD_BOUNDS", False, "record per-case bounds from this run (which must be clean) instead of checking them", "bool"),
    Option("--csm-bound-margin", "CSM_BOUND_MARGIN", 0.5, "relative margin added to measured errors when recording bounds", "float"),
    Option("--csm-save-golden", "CSM_SAVE_GOLDEN", False, "save this stack's CPU reference outputs as the golden references", "bool"),
    Option("--csm-min-cosine", "CSM_MIN_COSINE", 0.9999, "logits cosine every case must exceed, whatever its bounds", "float"),
    Option("--csm-golden-min-cosine", "CSM_GOLDEN_MIN_COSINE", 0.99999, "cosine of today's CPU reference against the golden one", "float"),
    Option("--csm-golden-max-rel-error", "CSM_GOLDEN_MAX_REL_ERROR", 1e-4, "relative error of today's CPU reference against the golden one", "float"),
    Option("--csm-cache-max-rel-error", "CSM_CACHE_MAX_REL_ERROR", 5e-5,
           "the reference's cached decode logits against an uncached forward over the same prefix, float32 (worst step)", "float"),
    Option("--csm-fault", "CSM_FAULT", [], "plant a fault in the device model (self-tests): weight:<param>[:<scale>], rope, "
           "nan:<module>, fp16:<Linear>, mask:<offset>, sleep:<ms>, slowdown:<fraction>, transient:<ms>:<generations>, leak:<MiB>, "
           "raise:<frame>, hang:<frame>, xversion:<rmsnorm|mimi>[:<relative>], decode_attn:<factor>, cache_path:<relative>, compiled:<relative>, "
           "op:<aten op>[:<relative>][@<shape>]", "list"),
    Option("--csm-decode-frames", "CSM_DECODE_FRAMES", 0, "frames of every prompt case's decode-loop check (0: each case's decode_frames)", "int"),
    Option("--csm-decode-modes", "CSM_DECODE_MODES", ["eager", "compiled"],
           "generation modes of the decode-loop check: eager and/or compiled (static cache + torch.compile, as timed)", "list"),
    Option("--csm-ops", "CSM_OPS", [], "judge every aten operator these cases run on the device against its correctly rounded "
           "standard (a gate: test_operator_conformance; 'all' for every case); a red logits or decode check runs it for its case anyway", "list"),
    Option("--csm-localize", "CSM_LOCALIZE", False, "localize the first diverging module for every prompt case, not only for failing ones", "bool"),
    Option("--csm-dump", "CSM_DUMP", "", "save per-module output dumps (device and reference) to this directory, for offline comparison between stacks"),
    # performance gate
    Option("--csm-workloads", "CSM_WORKLOADS", "", "performance workload catalogue YAML (default: csm_conformance/catalogue/data/performance_workloads.yaml)"),
    Option("--csm-workload", "CSM_WORKLOAD", [], "time only these workload ids (repeatable, or comma-separated)", "list"),
    Option("--csm-perf-modes", "CSM_PERF_MODES", [], "timing modes: eager and/or compiled (static cache + torch.compile); default: the tier's", "list"),
    Option("--csm-perf-rounds", "CSM_PERF_ROUNDS", 3, "timed rounds per workload (the median is gated)", "int"),
    Option("--csm-perf-warmup", "CSM_PERF_WARMUP", 1, "untimed warm-up rounds per workload (compiled mode compiles here)", "int"),
    Option("--csm-perf-load-rounds", "CSM_PERF_LOAD_ROUNDS", 3, "timed model loads for the load-time figure", "int"),
    Option("--csm-perf-tolerance", "CSM_PERF_TOLERANCE", ["time=0.05", "memory=0.03", "load=0.25"],
           "tolerated worsening per figure class, [<device type>.]<time|memory|load>=<fraction or %> (repeatable; "
           "each entry overrides only its own key)", "list", layered=True),
    Option("--csm-profile", "CSM_PROFILE", False,
           "profile every timed workload: its per-operator summary goes into the run, and promote stores it beside the baseline "
           "(a regressed workload is always profiled, and named against the stored summary)", "bool"),
    Option("--csm-perf-confirm", "CSM_PERF_CONFIRM", 1,
           "a regressed workload is timed again this many times; a figure fails only if every measurement regressed (0: the first decides)", "int"),
    Option("--csm-perf-noise-factor", "CSM_PERF_NOISE_FACTOR", 3.0, "a tolerance is widened to this many coefficients of variation of its figure", "float"),
    Option("--csm-perf-noise-cap", "CSM_PERF_NOISE_CAP", 0.5,
           "the most noise may widen a tolerance to (a fraction; a configured tolerance above it applies as set)", "float"),
    Option("--csm-host-reference", "CSM_HOST_REFERENCE", "auto",
           "compare time figures in units of a host-speed probe timed between frames: auto (the CPU only), on, off"),
    Option("--csm-perf-tier", "CSM_PERF_TIER", "quick",
           "workloads and modes timed when --csm-workload / --csm-perf-modes are not given: quick (plain pytest) or full (nightly)"),
    Option("--csm-memory-bandwidth", "CSM_MEMORY_BANDWIDTH", 0.0,
           "device memory bandwidth in GB/s for the bandwidth floor (default: from a table of known devices)", "float"),
]


class OptionError(UserError, ValueError):
    """An option value is unusable; the message is one line."""


def _convert(option: Option, raw, source: str):
    if option.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise OptionError(f"{source}: expected true/false, got '{raw}'")
    if option.kind == "float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise OptionError(f"{source}: expected a number, got '{raw}'") from None
    if option.kind == "int":
        try:
            return int(str(raw).strip())
        except (TypeError, ValueError):
            raise OptionError(f"{source}: expected a whole number, got '{raw}'") from None
    if option.kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [item.strip() for entry in items for item in str(entry).split(",") if item.strip()]
    return str(raw)


def resolve_option(option: Option, cli_value, environ: dict, ini_value) -> object:
    """The effective value and where it came from."""
    if option.layered:
        sources = ((ini_value, f"ini {option.dest}"), (environ.get(option.env), f"${option.env}"), (cli_value, option.flag))
        return [*option.default, *(item for value, source in sources if value not in (None, "", [])
                                   for item in _convert(option, value, source))]
    if cli_value not in (None, [], False):
        return _convert(option, cli_value, option.flag)
    if option.env in environ and environ[option.env] != "":
        return _convert(option, environ[option.env], f"${option.env}")
    if ini_value not in (None, "", []):
        return _convert(option, ini_value, f"ini {option.dest}")
    return option.default


_TYPES = {"str": str, "bool": bool, "float": float, "int": int, "list": list}


class _SettingsPaths:
    @property
    def baselines_dir(self) -> Path:
        return Path(self.csm_baselines) if self.csm_baselines else ROOT / "baselines"

    @property
    def output_dir(self) -> Path:
        return Path(self.csm_output)


# One field per option, its default the option's: the table above is the only place a default lives.
Settings = make_dataclass(
    "Settings",
    [(opt.dest, _TYPES[opt.kind], field(default_factory=lambda d=opt.default: list(d)) if opt.kind == "list" else field(default=opt.default))
     for opt in OPTIONS],
    bases=(_SettingsPaths,),
)
Settings.__module__ = __name__
Settings.__doc__ = "The resolved value of every option (see OPTIONS), as the plugin and the tools read them."


def settings_from(cli: dict, environ: dict | None = None, ini: dict | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    ini = ini or {}
    values = {opt.dest: resolve_option(opt, cli.get(opt.dest), environ, ini.get(opt.dest)) for opt in OPTIONS}
    settings = Settings(**values)
    if not 0.0 < settings.csm_min_cosine <= 1.0:
        raise OptionError(f"--csm-min-cosine must be in (0, 1], got {settings.csm_min_cosine}")
    if not settings.csm_cache_max_rel_error > 0:
        raise OptionError(f"--csm-cache-max-rel-error must be > 0, got {settings.csm_cache_max_rel_error}")
    if settings.csm_bound_margin < 0:
        raise OptionError(f"--csm-bound-margin must be >= 0, got {settings.csm_bound_margin}")
    if settings.csm_perf_rounds < 1:
        raise OptionError(f"--csm-perf-rounds must be at least 1 (a benchmark of zero rounds measures nothing), got {settings.csm_perf_rounds}")
    if settings.csm_perf_load_rounds < 1:
        raise OptionError(f"--csm-perf-load-rounds must be at least 1, got {settings.csm_perf_load_rounds}")
    if settings.csm_perf_confirm < 0:
        raise OptionError(f"--csm-perf-confirm must be >= 0, got {settings.csm_perf_confirm}")
    if settings.csm_perf_warmup < 0:
        raise OptionError(f"--csm-perf-warmup must be >= 0, got {settings.csm_perf_warmup}")
    if "compiled" in settings.csm_perf_modes and settings.csm_perf_warmup < 1:
        raise OptionError("compiled mode needs --csm-perf-warmup >= 1: compilation must not land in a timed round")

    unknown = [m for m in settings.csm_decode_modes if m not in ("eager", "compiled")]
    if unknown or not settings.csm_decode_modes:
        raise OptionError(f"--csm-decode-modes takes eager and/or compiled, got {','.join(settings.csm_decode_modes) or 'nothing'}")
    settings.csm_decode_modes = list(dict.fromkeys(settings.csm_decode_modes))
    try:
        parse_tolerances(settings.csm_perf_tolerance)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if settings.csm_host_reference not in host_speed.CHOICES:
        raise OptionError(f"--csm-host-reference must be {', '.join(host_speed.CHOICES[:-1])} or {host_speed.CHOICES[-1]}, "
                          f"got '{settings.csm_host_reference}'")
    if not 0 <= settings.csm_perf_noise_cap < 100:
        raise OptionError(f"--csm-perf-noise-cap must be a fraction >= 0, got {settings.csm_perf_noise_cap}")
    if settings.csm_perf_noise_factor < 0 or settings.csm_memory_bandwidth < 0:
        raise OptionError("--csm-perf-noise-factor and --csm-memory-bandwidth must be >= 0")
    return settings
