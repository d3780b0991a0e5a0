"""Estimate each run's peak GPU memory per device from its config, before anything runs (Appendix H).

The model is built on torch's ``meta`` device (shapes only: no weights, no
GPU, a few hundredths of a second for an 8B model) to count its parameters;
everything else is arithmetic on the config: weights by dtype and
quantization, gradients of what trains, optimizer state, activations
(checkpointed, offloaded or not), the logits of the loss, FSDP sharding, and a
fixed overhead. The counts are cached per (builder, arguments), in this
process and, for torchtune's own builders, between processes through
``sigcache``, so a second ``generate`` of the same model imports no torch for
them.

    >>> est = estimate_config(config, "lora_finetune_single_device")   # doctest: +SKIP
    >>> est.total_gib, est.summary()                                     # doctest: +SKIP
    (9.87, 'weights 2.4 + gradients 0.1 + optimizer 0.2 + activations 4.4 + logits 2.3 + overhead 0.9 GiB')
    >>> budget_problem("run_000", est, Budget("RTX4090", 24.0), [])     # doctest: +SKIP
    None
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..expdir import MemoryRecord
from . import sigcache
from .validate import Problem

if TYPE_CHECKING:
    from .compiler import GenerationResult

GIB = float(1 << 30)
#: The breakdown's terms, in the order they are shown.
TERMS = ("weights", "gradients", "optimizer", "activations", "logits", "overhead")

#: Bytes per NF4-quantized weight (torchao defaults): 4 bits, one 8-bit scale per block of 64,
#: and one fp32 scale per 256 of those scales.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
#: CUDA context, cuBLAS/NCCL workspaces: on the card, outside PyTorch's allocator.
CONTEXT_GIB = 0.5
#: What the caching allocator holds beyond the live tensors (blocks split and not reused).
FRAGMENTATION = 0.05
#: Tokens per sample when ``tokenizer.max_seq_len`` is null (samples are then padded to the
#: longest in the batch, which is unknown before the data is read).
DEFAULT_SEQ_LEN = 2048
#: A run within this fraction of its budget gets a warning: the estimate is not exact.
MARGIN = 0.15

_DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4, "float": 4}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Budget:
    """The memory one GPU offers: its table name ("" when given as ``gpu_memory_gb``) and GiB."""

    name: str
    gib: float


@dataclass(frozen=True)
class MemoryEstimate:
    """One run's estimated peak memory per GPU: the total, its terms (GiB), and what was assumed."""

    total_gib: float
    breakdown: dict[str, float]
    assumptions: tuple[str, ...]
    gpus: int = 1
    """GPUs the run's state is sharded over (1 for single-device recipes)."""
    params: int = 0
    trainable: int = 0

    def summary(self) -> str:
        """``weights 2.4 + gradients 0.1 + ... GiB``: the terms that are not zero."""
        parts = [f"{k} {v:.1f}" for k, v in self.breakdown.items() if round(v, 1) > 0]
        return " + ".join(parts) + " GiB"

    def record(self, budget: Budget | None = None) -> MemoryRecord:
        """What run_mapping.yaml keeps of it."""
        return MemoryRecord(total_gib=round(self.total_gib, 2),
                            breakdown={k: round(v, 2) for k, v in self.breakdown.items()},
                            gpus=self.gpus, budget_gib=None if budget is None else budget.gib)


@dataclass(frozen=True)
class ModelStats:
    """What the memory terms need to know about a model; JSON-able, so it can be cached between runs."""

    params: int
    adapter: int
    """LoRA/DoRA parameters (the ones a LoRA recipe trains)."""
    quantized: int
    """Base linear weights a QLoRA model stores in NF4."""
    layers: int
    dim: int
    kv_dim: int
    hidden: int
    vocab: int
    largest: int
    """Parameters of the largest unit gathered or updated at once: one layer, or the embedding."""
    layer: int
    """Parameters of one layer."""
    layer_quantized: int
    """Of those, stored in NF4."""


@dataclass(frozen=True)
class Settings:
    """Everything besides the model that sets a run's memory, read from its config once."""

    dtype_bytes: int
    batch: int
    seq_len: int
    seq_assumed: bool
    checkpointing: bool
    offloading: bool
    compiled: bool
    optimizer: str
    optimizer_in_bwd: bool
    peft: bool
    loss: str
    chunks: int
    cpu_offload: bool
    distributed: bool
    pairs: bool
    """Preference recipes (DPO) run chosen and rejected sequences together: twice the tokens."""
    frozen_copy: bool
    """Full DPO keeps a frozen reference model; knowledge distillation a teacher (counted as one more copy)."""


# ----------------------------------------------------------------------------- the model, on the meta device


def model_stats(component: str, kwargs: dict[str, Any]) -> ModelStats | None:
    """The model's counts, built on the meta device; None when it cannot be built (or its arguments are not plain)."""
    # a sweep of alpha x dropout builds one model per rank, not one per combination: these change no shape
    kwargs = {k: v for k, v in kwargs.items() if k not in _SHAPELESS_ARGS}
    try:
        key = json.dumps(kwargs, sort_keys=True)
    except (TypeError, ValueError):
        return None
    if "${" in key:
        return None  # an interpolation OmegaConf would resolve: the value is not known here
    return _stats(component, key)


#: Builder arguments that change no parameter's shape (left out of the build and of the cache key).
_SHAPELESS_ARGS = frozenset({"lora_alpha", "lora_dropout", "dropout", "attn_dropout", "norm_eps", "rope_base",
                             "scale_factor"})

#: The sigcache kind; its number changes whenever ModelStats' fields do.
_CACHE_KIND = "model_stats/1"


@lru_cache(maxsize=None)
def _stats(component: str, kwargs_json: str) -> ModelStats | None:
    def compute() -> dict[str, int] | None:
        return _measure(component, json.loads(kwargs_json))

    data = sigcache.cached(_CACHE_KIND, (component, kwargs_json), compute) if sigcache.cacheable(component) \
        else compute()
    return None if data is None else ModelStats(**data)


def _measure(component: str, kwargs: dict[str, Any]) -> dict[str, int] | None:
    """Build the model on the meta device and count. QLoRA is counted on its LoRA builder (10× faster on meta)."""
    from . import components

    module, _, name = component.rpartition(".")
    quantize = bool(kwargs.pop("quantize_base", False)) or name.startswith("qlora_")
    builder = components.import_component(f"{module}.{name[1:]}") if name.startswith("qlora_") else None
    builder = builder or components.import_component(component)
    if builder is None or not callable(builder):
        return None
    import torch

    try:
        with torch.device("meta"):
            model = builder(**kwargs)
    except Exception:  # noqa: BLE001 - a builder that needs real data or rejects these arguments: no estimate
        return None
    return _count(model, quantize)


_LAYER_WEIGHT = re.compile(r"(^|\.)layers\.\d+\.")


def _count(model: Any, quantize: bool) -> dict[str, int] | None:
    decoder = getattr(model, "decoder", model)  # fusion (vision) models wrap their text decoder
    embedding, layers = getattr(decoder, "tok_embeddings", None), getattr(decoder, "layers", None)
    if embedding is None or not layers or not hasattr(embedding, "weight"):
        return None
    params = adapter = quantized = 0
    for name, p in model.named_parameters():
        n = p.numel()
        params += n
        if "lora_" in name or name.endswith("magnitude"):
            adapter += n
        elif type(p.data).__name__ == "NF4Tensor" or (quantize and p.dim() == 2 and _LAYER_WEIGHT.search(name)):
            quantized += n  # torchtune quantizes the linear weights inside the layers, not embeddings or output
    vocab, dim = embedding.weight.shape
    layer = sum(p.numel() for p in layers[0].parameters())
    attn, mlp = getattr(layers[0], "attn", None), getattr(layers[0], "mlp", None)
    return {
        "params": params, "adapter": adapter, "quantized": quantized, "layers": len(layers), "dim": int(dim),
        "kv_dim": _out_features(getattr(attn, "k_proj", None), dim),
        "hidden": _out_features(getattr(mlp, "w1", None), 4 * dim), "vocab": int(vocab),
        "largest": max(layer, embedding.weight.numel()), "layer": layer,
        "layer_quantized": quantized // len(layers),
    }


def _out_features(linear: Any, default: int) -> int:
    weight = getattr(linear, "weight", None)
    return int(weight.shape[0]) if weight is not None else int(default)


# ----------------------------------------------------------------------------- the config's settings


def read_settings(config: dict, recipe: str, distributed: bool) -> Settings:
    """The settings of one run's config that change its memory."""
    tokenizer = config.get("tokenizer") if isinstance(config.get("tokenizer"), dict) else {}
    seq = tokenizer.get("max_seq_len")
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {}
    loss = config.get("loss") if isinstance(config.get("loss"), dict) else {}
    fsdp = config.get("fsdp") if isinstance(config.get("fsdp"), dict) else {}
    name = recipe.rsplit("/", 1)[-1]
    kind = _optimizer_kind(str(optimizer.get("_component_", "")), optimizer)
    return Settings(
        dtype_bytes=_DTYPE_BYTES.get(str(config.get("dtype", "bf16")).lower(), 2),
        batch=_int(config.get("batch_size"), 1),
        seq_len=_int(seq, DEFAULT_SEQ_LEN),
        seq_assumed=not isinstance(seq, int),
        checkpointing=config.get("enable_activation_checkpointing") is True,
        offloading=config.get("enable_activation_offloading") is True,
        compiled=bool(config.get("compile")),
        optimizer=kind,
        optimizer_in_bwd=config.get("optimizer_in_bwd") is True,
        peft="lora" in name or "knowledge_distillation" in name,
        loss=str(loss.get("_component_", "")).rsplit(".", 1)[-1],
        chunks=_int(loss.get("num_output_chunks"), 8),
        cpu_offload=config.get("fsdp_cpu_offload") is True or fsdp.get("cpu_offload") is True,
        distributed=distributed,
        pairs="dpo" in name,
        frozen_copy=("dpo" in name and "lora" not in name) or isinstance(config.get("teacher_model"), dict),
    )


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _optimizer_kind(component: str, node: dict) -> str:
    name = component.rsplit(".", 1)[-1].lower()
    if "paged" in name:
        return "paged"
    if "8bit" in name or "4bit" in name:
        return "8bit"
    if name == "sgd":
        return "sgd_momentum" if node.get("momentum") else "sgd"
    if name in ("adamw", "adam", "adamax", "nadam", "radam", "adamwfp8", "_adamw"):
        return "adam"
    return "unknown"


# ----------------------------------------------------------------------------- the estimate


def estimate(stats: ModelStats, s: Settings, gpus: int = 1, extra_weights: float = 0.0) -> MemoryEstimate:
    """The terms for a model and settings; ``gpus`` shard the state of a distributed recipe."""
    shard = max(1, gpus) if s.distributed else 1
    notes: list[str] = []
    trainable = stats.adapter if s.peft and stats.adapter else stats.params
    weights, gradients, optimizer = _state(stats, s, shard, trainable, notes)
    weights += extra_weights / shard
    tokens = s.batch * s.seq_len * (2 if s.pairs else 1)
    terms = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": _activations(stats, s, tokens),
        "logits": _logits(stats, s, tokens),
    }
    terms["overhead"] = CONTEXT_GIB * GIB + FRAGMENTATION * sum(terms.values())
    breakdown = {k: terms[k] / GIB for k in TERMS}
    notes += _notes(s, tokens)
    return MemoryEstimate(sum(breakdown.values()), breakdown, tuple(notes), shard, stats.params, trainable)


def _state(stats: ModelStats, s: Settings, shard: int, trainable: int, notes: list[str]) -> tuple[float, float, float]:
    """Weights, gradients and optimizer state on one GPU, in bytes."""
    gathered = _gathered(stats, s) if shard > 1 else 0
    if s.frozen_copy:
        notes.append("a frozen second copy of the model (reference or teacher) is counted as one more of these weights")
    copies = 2 if s.frozen_copy else 1
    stored = (stats.params - stats.quantized) * s.dtype_bytes + stats.quantized * NF4_BYTES
    if s.cpu_offload and s.distributed:
        notes.append("fsdp_cpu_offload: weights, gradients and optimizer state live on the CPU")
        return gathered, 0.0, 0.0
    weights = copies * stored / shard + gathered
    grads = min(trainable, stats.largest) if s.optimizer_in_bwd else trainable
    per_param = {"adam": 2 * s.dtype_bytes, "8bit": 2, "paged": 0, "sgd_momentum": s.dtype_bytes, "sgd": 0}
    if s.optimizer == "paged":
        notes.append("paged optimizer: its state is in CUDA unified memory, paged out to the CPU under pressure")
    if s.optimizer == "unknown":
        notes.append("unknown optimizer: counted like AdamW (two states per trained parameter)")
    return weights, grads * s.dtype_bytes / shard, trainable * per_param.get(s.optimizer, 2 * s.dtype_bytes) / shard


def _gathered(stats: ModelStats, s: Settings) -> float:
    """FSDP's unsharded parameters in flight: the layer in use and the one prefetched, or the embedding alone."""
    layer = (stats.layer - stats.layer_quantized) * s.dtype_bytes + stats.layer_quantized * NF4_BYTES
    return max(2 * layer, stats.largest * s.dtype_bytes if stats.largest > stats.layer else 0)


def _per_token_layer(stats: ModelStats, compiled: bool) -> int:
    """Values one layer saves for its backward pass, per token.

    Eager: both norms' inputs and outputs (4 d), q and the attention output,
    q after RoPE (3 d), k and v, and k after RoPE (3 kv), the MLP's w1 and w3
    outputs, the SiLU and the product (4 h). Compiled, the element-wise results
    (norm outputs, RoPE, SiLU, product) are recomputed in the backward pass.
    """
    d, kv, h = stats.dim, stats.kv_dim, stats.hidden
    return (4 * d + 2 * kv + 2 * h) if compiled else (7 * d + 3 * kv + 4 * h)


def _activations(stats: ModelStats, s: Settings, tokens: int) -> float:
    one_layer = tokens * _per_token_layer(stats, s.compiled) * s.dtype_bytes
    if s.checkpointing:
        inputs = 0 if s.offloading else tokens * stats.dim * stats.layers * s.dtype_bytes
        return inputs + one_layer  # each layer's input kept; one layer recomputed at a time in backward
    return one_layer * (2 if s.offloading else stats.layers)


def _logits(stats: ModelStats, s: Settings, tokens: int) -> float:
    """The logits and what the loss keeps of them (per element: bytes of the logits + of the loss)."""
    if "Chunked" in s.loss:
        # logits in dtype; each chunk upcast to fp32 in turn; eager cross-entropy keeps every chunk's fp32 log-softmax
        per = s.dtype_bytes + 4 / max(1, s.chunks) + (0 if s.compiled else 4)
    else:
        per = s.dtype_bytes + (0 if s.compiled else s.dtype_bytes)  # one log-softmax in the logits' dtype
    return tokens * stats.vocab * per


def _notes(s: Settings, tokens: int) -> list[str]:
    notes = []
    if s.seq_assumed:
        notes.append(f"tokenizer.max_seq_len is null: assumed {DEFAULT_SEQ_LEN} tokens per sample (the batch "
                     "is padded to its longest sample; set max_seq_len to bound it)")
    if s.pairs:
        notes.append("preference pairs: chosen and rejected run together, twice the tokens")
    if s.compiled:
        notes.append("compile: element-wise activations and the loss's log-softmax are recomputed, not kept")
    return notes


# ----------------------------------------------------------------------------- one config, every run


def estimate_config(config: dict, recipe: str, gpus: int = 1, distributed: bool = False) -> MemoryEstimate | None:
    """Peak memory per GPU of one run; None for a run not on a GPU, or a model that cannot be built on meta."""
    if not str(config.get("device", "cuda")).startswith("cuda"):
        return None
    found = _model_of(config)
    if found is None:
        return None
    settings = read_settings(config, recipe, distributed)
    return estimate(found, settings, gpus)


def _model_of(config: dict) -> ModelStats | None:
    node = config.get("model")
    if not isinstance(node, dict) or not isinstance(node.get("_component_"), str):
        return None
    kwargs = {k: v for k, v in node.items() if k != "_component_"}
    return model_stats(node["_component_"], kwargs)


def budget_of(result: GenerationResult) -> Budget | None:
    """The ``hardware:`` section's budget, or None without one (or with only gpus_per_run)."""
    hw = result.experiment.hardware
    gib = hw.budget_gib if hw is not None else None
    return None if gib is None else Budget(hw.gpu or "", gib)


def gpus_of(result: GenerationResult, resources: dict[str, Any]) -> int:
    """GPUs per run: hardware.gpus_per_run, else the run's SLURM GPUs per node times its nodes, else 1."""
    hw = result.experiment.hardware
    if hw is not None and hw.gpus_per_run:
        return hw.gpus_per_run
    gpus = resources.get("gpus_per_run", result.slurm.gpus_per_run)
    nodes = resources.get("nodes", result.slurm.nodes)  # a distributed run shards over every node's GPUs (J.7)
    return (gpus * (nodes if isinstance(nodes, int) and nodes > 0 else 1)) if isinstance(gpus, int) and gpus > 0 else 1


def estimate_runs(result: GenerationResult) -> list[MemoryEstimate | None]:
    """Every run's estimate (None for runs on the CPU and models that cannot be built)."""
    return [estimate_config(r.plain, result.recipe, gpus_of(result, r.resources), result.distributed)
            for r in result.runs]


def memory_problems(result: GenerationResult, estimates: list[MemoryEstimate | None]) -> list[Problem]:
    """Over the budget: an error; within ``MARGIN`` of it: a warning. Nothing without a ``hardware:`` budget."""
    budget = budget_of(result)
    if budget is None:
        return []
    found = []
    for run, est in zip(result.runs, estimates):
        if est is not None and est.total_gib > budget.gib * (1 - MARGIN):
            fixes = fixes_for(run.plain, result.recipe, est, result.distributed) if est.total_gib > budget.gib else []
            found.append(budget_problem(run.run_id, est, budget, fixes))
    return [p for p in found if p is not None]


def budget_problem(run_id: str, est: MemoryEstimate, budget: Budget, fixes: list[str]) -> Problem | None:
    """The error (over) or warning (within ``MARGIN``) for one run, or None when it fits with room to spare."""
    what = f"estimated peak {est.total_gib:.1f} GiB per GPU ({est.summary()})"
    if est.total_gib > budget.gib:
        tail = "; cheapest fixes first: " + "; ".join(f"{i}) {f}" for i, f in enumerate(fixes, 1)) if fixes else ""
        return Problem(run_id, "memory", f"{what} exceeds {_budget_words(budget)}{tail}")
    if est.total_gib > budget.gib * (1 - MARGIN):
        return Problem(run_id, "memory", f"{what} is within {MARGIN:.0%} of {_budget_words(budget)}; "
                       "the estimate is approximate (Appendix H), so this run may run out of memory", warning=True)
    return None


# ----------------------------------------------------------------------------- fixes


def fixes_for(config: dict, recipe: str, est: MemoryEstimate, distributed: bool) -> list[str]:
    """The cheapest changes that lower the estimate, in order, each with the estimate it gives alone."""
    stats = _model_of(config)
    if stats is None:
        return []
    s = read_settings(config, recipe, distributed)
    show = lambda e: f"→ {e.total_gib:.1f} GiB"  # noqa: E731
    out = []
    if not s.checkpointing:
        out.append(f"enable_activation_checkpointing: True ({show(estimate(stats, _with(s, checkpointing=True), est.gpus))})")
    if s.batch > 1:
        steps = _int(config.get("gradient_accumulation_steps"), 1)
        half = _with(s, batch=s.batch // 2)
        out.append(f"batch_size: {s.batch // 2} with gradient_accumulation_steps: {steps * 2} "
                   f"(the same effective batch; {show(estimate(stats, half, est.gpus))})")
    qlora = _qlora_stats(config) if s.peft and not stats.quantized else None
    if qlora is not None:
        name = config["model"]["_component_"].rpartition(".")
        out.append(f"QLoRA: model._component_: {name[0]}.q{name[2]} ({show(estimate(qlora, s, est.gpus))})")
    if s.checkpointing and not s.offloading:
        out.append(f"enable_activation_offloading: True ({show(estimate(stats, _with(s, offloading=True), est.gpus))})")
    if distributed:
        more = est.gpus * 2
        out.append(f"more GPUs: slurm.gpus_per_run: {more} (FSDP shards weights, gradients and optimizer state; "
                   f"{show(estimate(stats, s, more))})")
    elif "single_device" in recipe:
        out.append(f"more GPUs: the distributed recipe ({recipe.replace('single_device', 'distributed')}) "
                   "shards the model over slurm.gpus_per_run GPUs")
    return out


def _with(s: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(s, **changes)


def _qlora_stats(config: dict) -> ModelStats | None:
    """The counts of the QLoRA builder of the same model, when torchtune has one."""
    component = config["model"]["_component_"]
    module, _, name = component.rpartition(".")
    if not name.startswith("lora_"):
        return None
    from . import components

    if components.import_component(f"{module}.q{name}") is None:
        return None
    return model_stats(f"{module}.q{name}", {k: v for k, v in config["model"].items() if k != "_component_"})


def _budget_words(budget: Budget) -> str:
    """"the RTX4090's 24 GiB", or "the GPU's 25 GiB" for a card given by its memory alone."""
    return f"the {budget.name or 'GPU'}'s {budget.gib:g} GiB"
