"""Consistency across one config: the model family against tokenizer and checkpointer; LoRA builders against the recipe.

Each half of a config can be right on its own and wrong together: a Qwen2.5
model with the llama3 tokenizer trains on token ids of another vocabulary, and
``model_type: LLAMA3_2`` converts a Qwen checkpoint with Llama's key names (the
strict load fails). The family is the package of the builder
(``torchtune.models.qwen2_5.lora_qwen2_5_0_5b`` → ``qwen2_5``); ``FAMILIES``
says which tokenizer families and model types each family's shipped configs
use (``tests/test_checks_recipe.py`` checks every shipped config against it).

    >>> cfg = {"model": {"_component_": "torchtune.models.qwen2_5.lora_qwen2_5_0_5b"},
    ...        "tokenizer": {"_component_": "torchtune.models.llama3.llama3_tokenizer"}}
    >>> [f.key for f in check_consistency(cfg)]
    ['tokenizer._component_']

A pairing outside the table but within one lineage (``qwen2`` tokenizer for a
``qwen2_5`` model, ``LLAMA3_2`` for a ``llama3_1`` model) is a warning: it may
be meant. Across lineages it is an error.

LoRA builders against the recipe, both ways, both errors (what the recipes do):
a ``lora_``/``qlora_`` builder under a full recipe fails the strict state-dict
load (the checkpoint has no adapter weights, ``recipes/full_finetune_single_device.py:439``
and ``strict=True`` in the distributed ones); a plain builder under a LoRA
recipe fails reading ``cfg_model.lora_rank`` (``recipes/lora_finetune_single_device.py:434``)
or, where that is not read, leaves nothing trainable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from . import Finding
from ..registry import registry_recipe
from .recipe_rules import UNKNOWN, component, value


@dataclass(frozen=True)
class Family:
    """What a model family's shipped configs pair it with."""

    tokenizers: frozenset[str]
    """Families of tokenizer builders it is shipped with."""
    model_types: frozenset[str]
    """``checkpointer.model_type`` values it is shipped with (REWARD: its classifier builders)."""
    lineage: str
    """Families of one lineage share vocabularies and weight layouts closely enough that a mix may be meant."""
    tokenizer: str
    """The tokenizer builder to suggest."""


def _family(tokenizers: str, model_types: str, lineage: str, tokenizer: str) -> Family:
    return Family(frozenset(tokenizers.split()), frozenset(model_types.split()), lineage, tokenizer)


FAMILIES: dict[str, Family] = {
    "llama2": _family("llama2", "LLAMA2 REWARD", "llama2", "torchtune.models.llama2.llama2_tokenizer"),
    "code_llama2": _family("llama2", "LLAMA2", "llama2", "torchtune.models.llama2.llama2_tokenizer"),
    "llama3": _family("llama3", "LLAMA3", "llama3", "torchtune.models.llama3.llama3_tokenizer"),
    "llama3_1": _family("llama3", "LLAMA3", "llama3", "torchtune.models.llama3.llama3_tokenizer"),
    # llama3_2 1B/3B tie their embeddings: LLAMA3_2 saves them tied; two shipped configs use LLAMA3
    "llama3_2": _family("llama3", "LLAMA3 LLAMA3_2", "llama3", "torchtune.models.llama3.llama3_tokenizer"),
    "llama3_3": _family("llama3", "LLAMA3", "llama3", "torchtune.models.llama3.llama3_tokenizer"),
    "llama3_2_vision": _family("llama3_2_vision", "LLAMA3_VISION", "llama3",
                               "torchtune.models.llama3_2_vision.llama3_2_vision_transform"),
    "gemma": _family("gemma", "GEMMA", "gemma", "torchtune.models.gemma.gemma_tokenizer"),
    "gemma2": _family("gemma", "GEMMA2", "gemma", "torchtune.models.gemma.gemma_tokenizer"),
    "mistral": _family("mistral", "MISTRAL REWARD", "mistral", "torchtune.models.mistral.mistral_tokenizer"),
    "phi3": _family("phi3", "PHI3_MINI", "phi3", "torchtune.models.phi3.phi3_mini_tokenizer"),
    "phi4": _family("phi4", "PHI4", "phi4", "torchtune.models.phi4.phi4_tokenizer"),
    "qwen2": _family("qwen2", "QWEN2", "qwen2", "torchtune.models.qwen2.qwen2_tokenizer"),
    "qwen2_5": _family("qwen2_5", "QWEN2", "qwen2", "torchtune.models.qwen2_5.qwen2_5_tokenizer"),
}

#: Which checkpointers load which model node's weights, per key the recipes read.
MODEL_CHECKPOINTERS: dict[str, tuple[str, ...]] = {
    "model": ("checkpointer", "ref_checkpointer"),
    "teacher_model": ("teacher_checkpointer",),
    "policy_model": ("checkpointer", "ref_policy_checkpointer"),
    "reward_and_value_model": ("value_checkpointer", "reward_checkpointer"),
}
#: Model nodes that take text from ``tokenizer`` (the KD teacher reads the student's batches).
TOKENIZED_MODELS = ("model", "teacher_model", "policy_model")

#: Recipes that train LoRA adapters on ``model`` (they read ``cfg.model.lora_rank``) ...
LORA_RECIPES = frozenset({
    "lora_finetune_single_device", "lora_finetune_distributed", "lora_dpo_single_device", "lora_dpo_distributed",
    "qat_lora_finetune_distributed", "knowledge_distillation_single_device", "knowledge_distillation_distributed",
    "dev/lora_finetune_distributed_multi_dataset",
})
#: ... and recipes that load ``model`` strictly from a full checkpoint.
FULL_RECIPES = frozenset({
    "full_finetune_single_device", "full_finetune_distributed", "full_dpo_distributed", "qat_distributed",
    "dev/early_exit_finetune_distributed",
})


def check_consistency(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Model families against tokenizer and checkpointers; LoRA builders against the recipe."""
    for model_key in TOKENIZED_MODELS:
        yield from _tokenizer_fits(cfg, model_key)
    for model_key, checkpointers in MODEL_CHECKPOINTERS.items():
        for ckpt_key in checkpointers:
            yield from _model_type_fits(cfg, model_key, ckpt_key)
    yield from _adapters_fit(cfg, registry_recipe(recipe))


def family_of(builder: str) -> str:
    """``torchtune.models.qwen2_5.lora_qwen2_5_0_5b`` → ``qwen2_5``; '' outside ``torchtune.models``."""
    parts = builder.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["torchtune", "models"] else ""


def _tokenizer_fits(cfg: dict, model_key: str) -> Iterator[Finding]:
    model = component(cfg, model_key)
    fam, tok = FAMILIES.get(family_of(model)), component(cfg, "tokenizer")
    tok_family = family_of(tok)
    if fam is None or not tok_family or tok_family in fam.tokenizers:
        return
    same_lineage = tok_family in FAMILIES and FAMILIES[tok_family].lineage == fam.lineage
    why = ("its shipped configs use another one" if same_lineage
           else "the token ids would not match the model's vocabulary")
    yield Finding(
        "tokenizer._component_",
        f"tokenizer {tok} ({tok_family}) does not fit {model_key} {model} ({family_of(model)}): {why}; "
        f"use tokenizer._component_: {fam.tokenizer} with that model's tokenizer files",
        warning=same_lineage,
    )


def _model_type_fits(cfg: dict, model_key: str, ckpt_key: str) -> Iterator[Finding]:
    model = component(cfg, model_key)
    fam = FAMILIES.get(family_of(model))
    model_type = value(cfg, f"{ckpt_key}.model_type")
    if fam is None or not isinstance(model_type, str) or model_type is UNKNOWN or not component(cfg, ckpt_key):
        return
    if model_type.upper() in fam.model_types:
        return
    owners = sorted(f for f, other in FAMILIES.items() if model_type.upper() in other.model_types)
    if not owners:
        return  # not a model type we know a family for: value_types reports names torchtune lacks
    same_lineage = any(FAMILIES[o].lineage == fam.lineage for o in owners)
    meant_for = f"the model type of {', '.join(owners)} models"
    expected = " or ".join(sorted(t for t in fam.model_types if t != "REWARD"))
    yield Finding(
        f"{ckpt_key}.model_type",
        f"model_type {model_type} is {meant_for}, but {model_key} is {model} ({family_of(model)}), "
        f"whose checkpoints convert with model_type {expected}; set {ckpt_key}.model_type: {expected.split()[0]}",
        warning=same_lineage,
    )


def _adapters_fit(cfg: dict, recipe: str) -> Iterator[Finding]:
    model = component(cfg, "model")
    if not family_of(model) or not recipe:
        return
    module, _, builder = model.rpartition(".")
    adapters = builder.startswith(("lora_", "qlora_"))
    if recipe in FULL_RECIPES and adapters:
        plain = builder.split("_", 1)[1]
        yield Finding(
            "model._component_",
            f"{model} builds LoRA adapters, but {recipe} loads the whole model strictly from a checkpoint that has "
            f"none, and fails; use {module}.{plain}, or a lora_* recipe (e.g. lora_finetune_single_device)",
        )
    elif recipe in LORA_RECIPES and not adapters and not builder.startswith("_"):
        yield Finding(
            "model._component_",
            f"{model} builds no LoRA adapters, but {recipe} trains only adapters (it reads model.lora_rank at "
            f"start); use {module}.lora_{builder} with lora_attn_modules, lora_rank and lora_alpha, or a full_* "
            f"recipe (e.g. full_finetune_single_device)",
        )
    teacher = component(cfg, "teacher_model")
    if recipe.startswith("knowledge_distillation") and teacher.rpartition(".")[2].startswith(("lora_", "qlora_")):
        yield Finding(
            "teacher_model._component_",
            f"{teacher} builds LoRA adapters, but the teacher is loaded strictly from its checkpoint, which has "
            f"none; use the plain builder ({teacher.rpartition('.')[0]}.{teacher.rpartition('.')[2].split('_', 1)[1]})",
        )
