"""What each recipe refuses when it starts, as a table of rules citing the recipe line each mirrors.

A recipe that raises in ``__init__`` or ``setup`` wastes a queue slot and a
node's start-up time (loading torch, the checkpoint...) to say something the
config already shows. Each ``Rule`` below states one such refusal: the
recipes it applies to, a predicate over the plain config dict, the message
with the fix, and where torchtune raises it (``file:line`` plus a snippet of
that line; ``tests/test_checks_recipe.py`` re-reads every cited line, so a
torchtune upgrade that moves the code fails loudly instead of silently
drifting).

    >>> [f.key for f in check_recipe_rules({"dtype": "fp16"}, "lora_finetune_single_device")]
    ['dtype']

Rules whose citations are all in ``recipes/`` apply to those recipes only; a
rule citing torchtune's library code (a dataset builder) applies to any recipe.
A recipe given as a ``.py`` path gets the rules of the registry recipe with the
same file name, and no recipe-specific rules otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable, Iterator

from ..registry import registry_recipe
from ..tree import MISSING, lookup
from . import Finding
from .value_types import UNRESOLVED, resolve_value

# ----------------------------------------------------------------------------- reading values


#: A value we cannot know before the run (an interpolation that does not resolve): no rule fires on it.
UNKNOWN = UNRESOLVED


def value(cfg: dict, path: str, default: Any = None) -> Any:
    """The value at ``path`` as the recipe reads it: ``default`` when absent, ``UNKNOWN`` when not knowable.

    Interpolations are resolved as the type check resolves them (sweeps often
    point one key at another); one that points nowhere is the interpolation
    check's to report, so no rule guesses.
    """
    found = lookup(cfg, path, index_lists=True)
    return default if found is MISSING else resolve_value(cfg, path, found)


def is_on(cfg: dict, path: str) -> bool:
    """True when the recipe's ``if cfg.get(path):`` takes the branch (and we know it does)."""
    v = value(cfg, path)
    return v is not UNKNOWN and bool(v)


def is_off(cfg: dict, path: str) -> bool:
    """True when the recipe's ``if not cfg.get(path):`` takes the branch (and we know it does)."""
    v = value(cfg, path)
    return v is not UNKNOWN and not v


def integer(cfg: dict, path: str, default: int | None = None) -> int | None:
    """An integer setting, or None when absent or not an integer (the type checks report those)."""
    v = value(cfg, path, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def component(cfg: dict, path: str) -> str:
    """The ``_component_`` of the node at ``path`` ('' when none)."""
    v = value(cfg, f"{path}._component_", "")
    return v if isinstance(v, str) else ""


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Cite:
    """Where torchtune raises: a file relative to site-packages, a 1-based line, and text on that line."""

    file: str
    line: int
    snippet: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def recipe(self) -> str | None:
        """The recipe this line belongs to (None for torchtune library code)."""
        path = PurePath(self.file)
        return path.stem if path.parts[0] == "recipes" else None


@dataclass(frozen=True)
class Rule:
    """One refusal: when ``broken(cfg)``, the recipe raises at start with what ``message`` says."""

    key: str
    broken: Callable[[dict], bool]
    message: str
    cites: tuple[Cite, ...]
    warning: bool = False
    recipes: frozenset[str] = field(init=False)
    """The recipes this rule applies to, from its citations (empty: every recipe)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipes", frozenset(c.recipe for c in self.cites if c.recipe))

    def applies_to(self, recipe: str) -> bool:
        return not self.recipes or recipe in self.recipes

    def cite_for(self, recipe: str) -> Cite:
        return next((c for c in self.cites if c.recipe == recipe), self.cites[0])


def _cites(snippet: str, **lines: int) -> tuple[Cite, ...]:
    """One citation per recipe (``lora_finetune_single_device=130``), all on the same text."""
    return tuple(Cite(f"recipes/{recipe}.py", line, snippet) for recipe, line in lines.items())


def _offloading_without_checkpointing(cfg: dict) -> bool:
    return is_on(cfg, "enable_activation_offloading") and is_off(cfg, "enable_activation_checkpointing")


def _offloading_off_cuda(cfg: dict) -> bool:
    # recipes compare torch.device(cfg.device).type: "cuda:1" is CUDA; no device means CUDA when present
    device = value(cfg, "device")
    return (is_on(cfg, "enable_activation_offloading") and isinstance(device, str)
            and device.split(":")[0] != "cuda")


def _offloading_off_cuda_string(cfg: dict) -> bool:
    # full_finetune_distributed compares the config string itself: only "cuda" passes
    device = value(cfg, "device")
    return is_on(cfg, "enable_activation_offloading") and isinstance(device, str) and device != "cuda"


def _bwd_with_clipping(cfg: dict) -> bool:
    clip = value(cfg, "clip_grad_norm")
    return is_on(cfg, "optimizer_in_bwd") and clip is not None and clip is not UNKNOWN


def _bwd_with_accumulation(cfg: dict) -> bool:
    steps = integer(cfg, "gradient_accumulation_steps")
    return is_on(cfg, "optimizer_in_bwd") and steps is not None and steps > 1


def _tensor_parallel(cfg: dict) -> bool:
    dim = integer(cfg, "tensor_parallel_dim", 1)
    return dim is not None and dim > 1


def _packed_without_max_seq_len(cfg: dict) -> bool:
    datasets = value(cfg, "dataset")
    nodes = datasets if isinstance(datasets, list) else [datasets]
    packed = any(
        isinstance(n, dict) and str(n.get("_component_", "")).startswith("torchtune.datasets") and bool(n.get("packed"))
        for n in nodes
    )
    return packed and value(cfg, "tokenizer.max_seq_len") is None


def _not_qat_quantizer(cfg: dict) -> bool:
    # get_quantizer_mode maps each quantizer class to a mode; only the *QAT* classes have a "-qat" mode
    name = component(cfg, "quantizer")
    return bool(name) and "QAT" not in name.rsplit(".", 1)[-1]


def _chunk_mismatch(cfg: dict) -> bool:
    # both chunked losses default to num_output_chunks=8 (torchtune/modules/loss/*.py)
    if not component(cfg, "loss").endswith(".CEWithChunkedOutputLoss") or not component(cfg, "kd_loss"):
        return False
    ce, kd = integer(cfg, "loss.num_output_chunks", 8), integer(cfg, "kd_loss.num_output_chunks", 8)
    return ce is not None and kd is not None and ce != kd


def _not_divisible(numerator: str, denominator: str) -> Callable[[dict], bool]:
    def broken(cfg: dict) -> bool:
        a, b = integer(cfg, numerator), integer(cfg, denominator)
        return a is not None and b is not None and b > 0 and a % b != 0

    return broken


def _fewer_steps_than_batch(cfg: dict) -> bool:
    steps, batch = integer(cfg, "num_steps"), integer(cfg, "batch_size")
    return steps is not None and batch is not None and batch > 0 and steps // batch == 0


def _policy_and_reference_differ(field_name: str) -> Callable[[dict], bool]:
    def broken(cfg: dict) -> bool:
        if not is_off(cfg, "resume_from_checkpoint"):
            return False
        mine, ref = value(cfg, f"checkpointer.{field_name}"), value(cfg, f"ref_policy_checkpointer.{field_name}")
        return UNKNOWN not in (mine, ref) and mine != ref

    return broken


_FP16 = "if self._dtype == torch.float16:"
_OFF_CUDA = "should only be True when training on CUDA"
_OFF_AC = "should only be True when enable_activation_checkpointing is True"
_BWD_CLIP = "Gradient clipping is not supported with optimizer in bwd."
_BWD_GA = "Gradient accumulation is not supported with optimizer in bwd."
_LEFT_PAD = "left_pad_sequence collator is only for inference."
_PROFILER = "Only torch profiler supported currently"
_PACKED = "if tokenizer.max_seq_len is None:"

RULES: tuple[Rule, ...] = (
    Rule(
        "dtype",
        lambda cfg: value(cfg, "dtype") == "fp16",
        "this recipe refuses fp16 (it does no gradient scaling); set dtype: bf16, or fp32 where bf16 is not supported",
        _cites(_FP16, full_dpo_distributed=120, full_finetune_distributed=131, full_finetune_single_device=124,
               knowledge_distillation_distributed=114, knowledge_distillation_single_device=114,
               lora_dpo_distributed=130, lora_dpo_single_device=91, lora_finetune_distributed=134,
               lora_finetune_single_device=130, ppo_full_finetune_single_device=118, qat_distributed=132,
               qat_lora_finetune_distributed=148),
    ),
    Rule(
        "enable_activation_offloading",
        _offloading_without_checkpointing,
        "activation offloading needs activation checkpointing; set enable_activation_checkpointing: True "
        "(or enable_activation_offloading: False)",
        _cites(_OFF_AC, full_dpo_distributed=172, full_finetune_distributed=212, full_finetune_single_device=173,
               lora_dpo_distributed=164, lora_dpo_single_device=121, lora_finetune_distributed=183,
               lora_finetune_single_device=174, qat_distributed=191, qat_lora_finetune_distributed=204),
    ),
    Rule(
        "enable_activation_offloading",
        _offloading_off_cuda,
        "activation offloading works only when training on CUDA; set device: cuda, or enable_activation_offloading: False",
        _cites(_OFF_CUDA, full_dpo_distributed=168, full_finetune_single_device=169, lora_dpo_distributed=160,
               lora_dpo_single_device=117, lora_finetune_distributed=179, lora_finetune_single_device=170,
               qat_distributed=187, qat_lora_finetune_distributed=200),
    ),
    Rule(
        "enable_activation_offloading",
        _offloading_off_cuda_string,
        "activation offloading works only when training on CUDA, and this recipe compares the device string "
        "itself; set device: cuda (exactly), or enable_activation_offloading: False",
        _cites(_OFF_CUDA, full_finetune_distributed=208),
    ),
    Rule(
        "clip_grad_norm",
        _bwd_with_clipping,
        "optimizer_in_bwd: True cannot clip gradients; set clip_grad_norm: null, or optimizer_in_bwd: False",
        _cites(_BWD_CLIP, full_dpo_distributed=149, full_finetune_distributed=189, full_finetune_single_device=150,
               qat_distributed=168),
    ),
    Rule(
        "gradient_accumulation_steps",
        _bwd_with_accumulation,
        "optimizer_in_bwd: True cannot accumulate gradients; set gradient_accumulation_steps: 1, "
        "or optimizer_in_bwd: False",
        _cites(_BWD_GA, full_dpo_distributed=154, full_finetune_distributed=194, full_finetune_single_device=155,
               ppo_full_finetune_single_device=412, qat_distributed=173),
    ),
    Rule(
        "compile",
        lambda cfg: value(cfg, "device") == "npu" and is_on(cfg, "compile"),
        "torch.compile is not supported on NPU; set compile: False",
        _cites("NPU does not support model compilation.", full_finetune_single_device=268,
               knowledge_distillation_single_device=233, lora_finetune_single_device=261),
    ),
    Rule(
        "compile",
        lambda cfg: is_on(cfg, "compile"),
        "the QAT recipes do not support compile yet; set compile: False",
        _cites("Compile is not yet supported for QAT.", qat_distributed=139, qat_lora_finetune_distributed=155),
    ),
    Rule(
        "tensor_parallel_plan",
        lambda cfg: _tensor_parallel(cfg) and value(cfg, "tensor_parallel_plan") is None,
        "tensor_parallel_dim > 1 needs a tensor_parallel_plan (e.g. tensor_parallel_plan: "
        "{_component_: torchtune.models.llama3.base_llama_tp_plan}); or set tensor_parallel_dim: 1",
        _cites("Tensor Parallel plan needs to be provided", full_finetune_distributed=155),
    ),
    Rule(
        "optimizer.fused",
        lambda cfg: _tensor_parallel(cfg) and is_on(cfg, "optimizer.fused"),
        "tensor parallelism does not work with a fused optimizer; set optimizer.fused: False, or tensor_parallel_dim: 1",
        _cites("Tensor parallelism is currently incompatible with fused optimizer.", full_finetune_distributed=163),
    ),
    Rule(
        "collate_fn",
        lambda cfg: "left_pad_sequence" in str(value(cfg, "collate_fn", "")),
        "left_pad_sequence is a collator for inference; use torchtune.data.padded_collate_sft (the default: "
        "remove collate_fn)",
        _cites(_LEFT_PAD, full_finetune_distributed=715, full_finetune_single_device=576,
               lora_finetune_distributed=608, lora_finetune_single_device=547, qat_distributed=617,
               qat_lora_finetune_distributed=644),
    ),
    Rule(
        "quantizer",
        lambda cfg: value(cfg, "quantizer") is None,
        "the QAT recipes need a quantizer; add quantizer: {_component_: "
        "torchtune.training.quantization.Int8DynActInt4WeightQATQuantizer, groupsize: 256}",
        _cites("Quantizer must be specified", qat_distributed=476, qat_lora_finetune_distributed=495),
    ),
    Rule(
        "quantizer._component_",
        _not_qat_quantizer,
        "the quantizer must be a QAT quantizer to fine-tune (its mode must end in -qat); use e.g. "
        "torchtune.training.quantization.Int8DynActInt4WeightQATQuantizer",
        _cites("is not supported for finetuning", qat_distributed=482, qat_lora_finetune_distributed=455),
    ),
    Rule(
        "model.use_dora",
        lambda cfg: is_on(cfg, "model.use_dora"),
        "QAT does not work with DoRA; set model.use_dora: False",
        _cites("QAT is currently not compatible with DoRA", qat_lora_finetune_distributed=449),
    ),
    Rule(
        "profiler._component_",
        lambda cfg: component(cfg, "profiler") not in ("", "torchtune.training.setup_torch_profiler"),
        "the recipe supports only torch's profiler; set profiler._component_: torchtune.training.setup_torch_profiler",
        _cites(_PROFILER, full_dpo_distributed=399, full_finetune_distributed=497, full_finetune_single_device=403,
               knowledge_distillation_distributed=386, knowledge_distillation_single_device=389,
               lora_finetune_distributed=411, lora_finetune_single_device=408, ppo_full_finetune_single_device=316,
               qat_distributed=406, qat_lora_finetune_distributed=428),
    ),
    Rule(
        "kd_loss.num_output_chunks",
        _chunk_mismatch,
        "loss and kd_loss must split the output into the same number of chunks; set kd_loss.num_output_chunks "
        "equal to loss.num_output_chunks",
        _cites("Number of output chunks for loss_fn and kd_loss_fn must be the same.",
               knowledge_distillation_distributed=287, knowledge_distillation_single_device=285),
    ),
    Rule(
        "forward_batch_size",
        _not_divisible("batch_size", "forward_batch_size"),
        "batch_size must be a multiple of forward_batch_size; change one of them",
        _cites("must be exactly divisible by ", ppo_full_finetune_single_device=396),
    ),
    Rule(
        "ppo_batch_size",
        _not_divisible("batch_size", "ppo_batch_size"),
        "batch_size must be a multiple of ppo_batch_size; change one of them",
        _cites("must be exactly divisible by ", ppo_full_finetune_single_device=401),
    ),
    Rule(
        "gradient_accumulation_steps",
        _not_divisible("ppo_batch_size", "gradient_accumulation_steps"),
        "ppo_batch_size must be a multiple of gradient_accumulation_steps; change one of them",
        _cites("must be exactly divisible", ppo_full_finetune_single_device=406),
    ),
    Rule(
        "num_steps",
        _fewer_steps_than_batch,
        "num_steps must be at least batch_size (the recipe runs num_steps // batch_size steps); raise num_steps",
        _cites("must be greater than the batch size", ppo_full_finetune_single_device=424),
    ),
    Rule(
        "ref_policy_checkpointer.checkpoint_dir",
        _policy_and_reference_differ("checkpoint_dir"),
        "a new PPO run loads policy and reference policy from the same checkpoint; make "
        "ref_policy_checkpointer.checkpoint_dir equal to checkpointer.checkpoint_dir",
        _cites("Policy and reference policy should be loaded from the same checkpoint directories",
               ppo_full_finetune_single_device=463),
    ),
    Rule(
        "ref_policy_checkpointer.checkpoint_files",
        _policy_and_reference_differ("checkpoint_files"),
        "a new PPO run loads policy and reference policy from the same checkpoint; make "
        "ref_policy_checkpointer.checkpoint_files equal to checkpointer.checkpoint_files",
        _cites("Policy and reference policy should be loaded from the same checkpoint files",
               ppo_full_finetune_single_device=468),
    ),
    Rule(
        "dataset.packed",
        _packed_without_max_seq_len,
        "a packed dataset needs tokenizer.max_seq_len (the length it packs to); set tokenizer.max_seq_len "
        "(e.g. 2048), or dataset.packed: False",
        tuple(Cite(f"torchtune/datasets/{name}.py", line, _PACKED) for name, line in (
            ("_alpaca", 90), ("_chat", 182), ("_grammar", 91), ("_instruct", 150), ("_samsum", 92),
            ("_slimorca", 91), ("_text_completion", 160))),
    ),
)


# ----------------------------------------------------------------------------- applying it


def check_recipe_rules(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Every rule of ``recipe`` that ``cfg`` breaks, with the line of torchtune that would refuse it."""
    name = registry_recipe(recipe)
    for rule in RULES:
        if rule.applies_to(name) and rule.broken(cfg):
            yield Finding(rule.key, f"{rule.message} (torchtune refuses it at start: {rule.cite_for(name)})",
                          rule.warning)
