"""The catalogue itself: which faults are planted, in which selection, and what the failure must
name. Data only, so a new entry is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

GATES = ("accuracy", "performance")
ACCURACY_ARGS = ("-m", "accuracy", "--csm-case", "short_en")
GENERATION_ONLY = (*ACCURACY_ARGS, "-k", "test_seeded_generation")
FLOAT32_ARGS = (*ACCURACY_ARGS, "--csm-dtype", "float32", "-k", "not drift")
# One short eager workload, generation only (model load time is not what these faults change).
PERF_ARGS = ("-m", "performance", "--csm-workload", "short_32t", "--csm-perf-modes", "eager", "-k", "test_generation")
# The A/B setting: the accelerator tolerance for time, pytest.ini's CPU one for memory (the CPU's
# memory figure is weights + resident-set growth, whose page-level noise needs the MiB slack).
AB_TOLERANCES = ("time=5%", "memory=10%+16MiB", "load=25%")
AB_ROUNDS = 5
LAYER = "backbone_model.layers.0"
SWEEP_WEIGHT = f"{LAYER}.mlp.down_proj.weight"
SWEEP_WEIGHT_SCALES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SWEEP_SLOWDOWNS = (0.02, 0.05, 0.1, 0.2, 0.5)
HANG_TIMEOUT_S = 15


@dataclass(frozen=True)
class Entry:
    id: str
    faults: tuple[str, ...]  # --csm-fault specs
    gate: str  # the gate that must catch it: accuracy | performance
    args: tuple[str, ...]  # the pytest selection
    place: str  # what the failure text must name
    why: str = ""
    timeout_s: float | None = None  # pytest-timeout's per-test limit for this entry
    ab: bool = False  # judged against a clean run recorded just before (always so for performance)
    alone: tuple[str, ...] = ()  # when given, only tests whose id contains one of these may fail (the others stay green)

    @property
    def needs_ab(self) -> bool:
        return self.ab or self.gate == "performance"


CATALOGUE: tuple[Entry, ...] = (
    Entry("weight_1e-3", (f"weight:{SWEEP_WEIGHT}:1e-3",), "accuracy", FLOAT32_ARGS, f"{LAYER}.mlp",
          "one backbone layer's weights off by 0.1 % (a bad conversion, a kernel reading stale data), on a float32 "
          "device model: in bfloat16 the perturbed values round back to the stored ones (1.2 % of them change)", ab=True),
    Entry("weight_1e-2", (f"weight:{SWEEP_WEIGHT}:1e-2",), "accuracy", ACCURACY_ARGS, f"{LAYER}.mlp",
          "one backbone layer's weights off by 1 %, on the CI configuration (bfloat16, committed bounds): one logits "
          "bound fails by 0.5 %; the module_local check sees that layer's MLP add 2x its clean error"),
    Entry("rope", ("rope",), "accuracy", ACCURACY_ARGS, f"{LAYER}.self_attn",
          "llama3 RoPE scaling dropped (a config field renamed between transformers versions)"),
    Entry("fp16_matmul", (f"fp16:{LAYER}.mlp.down_proj",), "accuracy", FLOAT32_ARGS, f"{LAYER}.mlp",
          "one matmul computed in float16 (an autocast or kernel-dispatch change), on a float32 device model", ab=True),
    Entry("mask_off_by_one", ("mask:1",), "accuracy", ACCURACY_ARGS, f"{LAYER}.self_attn",
          "the causal attention mask shifted by one position (every query sees the next token)"),
    Entry("decode_attn", ("decode_attn:1.05",), "accuracy", ACCURACY_ARGS, "decode_loop: short_en (eager): step",
          "the backbone's attention output 5 % off in cached decode steps only (a kernel picked for query length 1, a "
          "cache read), on the device: every one-pass check stays green, the decode loop (eager and compiled) names "
          "the first step out of its bound", alone=("test_decode_loop[",)),
    Entry("cache_path", ("cache_path:1e-3",), "accuracy", ACCURACY_ARGS, "cache_consistency: short_en: the reference's cached decode step",
          "the values every KV cache hands back in decode steps 0.1 % off, on the reference and the device alike (a cache "
          "bug of the stack): the device-vs-reference checks, decode loop included, stay green; the reference's "
          "cached-vs-uncached check and the golden loop fail", alone=("test_decode_cache_consistency[", "test_reference_drift_loop[")),
    Entry("compiled", ("compiled:1e-2",), "accuracy", ACCURACY_ARGS, "decode_loop_compiled: short_en (compiled): step",
          "every compiled graph's outputs 1 % off (a compile backend wrapping the real one): eager and every one-pass "
          "check stay green, the compiled decode loop fails", alone=("test_decode_loop[short_en-compiled]",)),
    Entry("op_silu", ("op:silu:0.02",), "accuracy", (*ACCURACY_ARGS, "--csm-decode-modes", "eager"),
          "first operator past its standard: aten.silu.default",
          "the bfloat16 kernel of one aten operator (silu, the MLPs' activation) 2 % off, below the model: the module "
          "localizer names a module (backbone_model.layers.0.mlp), the operator report the operator"),
    Entry("op_attention_one_shape", ("op:scaled_dot_product_attention:0.05@1x4x21x16",), "accuracy",
          (*ACCURACY_ARGS, "--csm-decode-modes", "eager"),
          "first operator past its standard: aten.scaled_dot_product_attention.default at backbone_model.layers.",
          "the attention kernel 5 % off for one input shape only (the backbone's prefill of short_en), as a kernel "
          "picked by shape would be"),
    Entry("op_codec_layer_norm", ("op:layer_norm:0.02",), "accuracy", ("-m", "accuracy", "--csm-case", "decode_2s", "--csm-ops", "decode_2s"),
          "first operator past its standard: aten.layer_norm.default at codec_model",
          "Mimi's layer-norm kernel 2 % off: every end-to-end codec check stays green, the operator gate (--csm-ops) "
          "names it", alone=("test_operator_conformance[",)),
    Entry("nan", (f"nan:{LAYER}",), "accuracy", ACCURACY_ARGS, "backbone_logits: device has non-finite",
          "a NaN in one activation"),
    Entry("raise", ("raise:2",), "accuracy", GENERATION_ONLY, "PlantedFaultError",
          "an exception in the middle of generation"),
    Entry("hang", ("hang:2",), "accuracy", GENERATION_ONLY, "_hang_at",
          "generation never returns; pytest-timeout (signal method) must end the test and show where it hung",
          timeout_s=HANG_TIMEOUT_S),
    Entry("slowdown_5pct", ("slowdown:0.05",), "performance", PERF_ARGS, "frame_ms_median", "every frame 5 % slower"),
    Entry("slowdown_20pct", ("slowdown:0.2",), "performance", PERF_ARGS, "frame_ms_median", "every frame 20 % slower"),
    Entry("leak", ("leak:1",), "performance", PERF_ARGS, "peak_memory_mb",
          "1 MiB of device memory kept alive per frame (32 MiB over the workload)"),
)
