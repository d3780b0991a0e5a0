"""Recipe rules, recipe-aware binding and cross-key consistency, on torchtune's own shipped configs.

Every case starts from a shipped config, changes a value or two so the recipe
would refuse it at start, and checks the finding; then applies the fix and
checks the finding is gone. Real torchtune, no mocks.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from omegaconf import OmegaConf

from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import registry
from torchtune_config_writer.compile.checks.binding import RECIPE_ARGS
from torchtune_config_writer.compile.checks.consistency import FAMILIES, check_consistency, family_of
from torchtune_config_writer.compile.checks.recipe_rules import RULES, check_recipe_rules
from torchtune_config_writer.compile.registry import registry_recipe
from torchtune_config_writer.compile.validate import check_config

DELETE = object()


def shipped(name: str) -> dict:
    """A shipped config as the plain dict torchtune would read."""
    return OmegaConf.to_container(OmegaConf.load(registry.builtin_configs()[name].path))


def changed(cfg: dict, changes: dict[str, Any]) -> dict:
    """A copy of ``cfg`` with dotted keys set (or removed with ``DELETE``)."""
    cfg = copy.deepcopy(cfg)
    for path, v in changes.items():
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        if v is DELETE:
            node.pop(last, None)
        else:
            node[last] = v
    return cfg


def findings(cfg: dict, recipe: str, key: str, text: str = "") -> list:
    """The findings of ``check_config`` at ``key`` whose message contains ``text``."""
    return [f for f in check_config(cfg, recipe) if f.key == key and text in f.message]


# ----------------------------------------------------------------------------- recipe rules

TP_PLAN = {"_component_": "torchtune.models.llama3.base_llama_tp_plan"}
QAT = "torchtune.training.quantization.Int8DynActInt4WeightQATQuantizer"
OFFLOAD = {"enable_activation_offloading": True, "enable_activation_checkpointing": True, "device": "cuda"}

#: (recipe, shipped config, changes that break the rule, the reported key, changes on top that fix it)
RULE_CASES = [
    ("lora_finetune_single_device", "llama3_2/1B_lora_single_device", {"dtype": "fp16"}, "dtype", {"dtype": "bf16"}),
    ("full_finetune_distributed", "llama3_2/1B_full", {"dtype": "fp16"}, "dtype", {"dtype": "fp32"}),
    ("lora_dpo_single_device", "llama2/7B_lora_dpo_single_device", {"dtype": "fp16"}, "dtype", {"dtype": "bf16"}),
    ("knowledge_distillation_single_device", "qwen2/1.5_to_0.5B_KD_lora_single_device", {"dtype": "fp16"}, "dtype",
     {"dtype": "bf16"}),
    ("full_finetune_single_device", "llama3_2/1B_full_single_device",
     {**OFFLOAD, "enable_activation_checkpointing": False}, "enable_activation_offloading",
     {"enable_activation_checkpointing": True}),
    ("lora_finetune_distributed", "llama3_2/1B_lora", {**OFFLOAD, "enable_activation_checkpointing": False},
     "enable_activation_offloading", {"enable_activation_checkpointing": True}),
    ("full_finetune_single_device", "llama3_2/1B_full_single_device", {**OFFLOAD, "device": "cpu"},
     "enable_activation_offloading", {"device": "cuda"}),
    ("full_finetune_distributed", "llama3_2/1B_full", {**OFFLOAD, "device": "cuda:0"},
     "enable_activation_offloading", {"device": "cuda"}),
    ("full_finetune_single_device", "llama3_2/1B_full_single_device",
     {"optimizer_in_bwd": True, "clip_grad_norm": 1.0, "gradient_accumulation_steps": 1}, "clip_grad_norm",
     {"clip_grad_norm": None}),
    ("full_finetune_distributed", "llama3_2/1B_full",
     {"optimizer_in_bwd": True, "clip_grad_norm": None, "gradient_accumulation_steps": 4},
     "gradient_accumulation_steps", {"gradient_accumulation_steps": 1}),
    ("lora_finetune_single_device", "llama3_2/1B_lora_single_device", {"device": "npu", "compile": True}, "compile",
     {"compile": False}),
    ("qat_distributed", "llama3/8B_qat_full", {"compile": True}, "compile", {"compile": False}),
    ("qat_lora_finetune_distributed", "llama3_2/1B_qat_lora", {"compile": True}, "compile", {"compile": False}),
    ("full_finetune_distributed", "llama3_2/1B_full", {"tensor_parallel_dim": 2, "tensor_parallel_plan": DELETE},
     "tensor_parallel_plan", {"tensor_parallel_plan": TP_PLAN}),
    ("full_finetune_distributed", "llama3_2/1B_full",
     {"tensor_parallel_dim": 2, "tensor_parallel_plan": TP_PLAN, "optimizer.fused": True}, "optimizer.fused",
     {"optimizer.fused": False}),
    ("lora_finetune_single_device", "llama3_2/1B_lora_single_device",
     {"collate_fn": "torchtune.data.left_pad_sequence"}, "collate_fn", {"collate_fn": DELETE}),
    ("qat_distributed", "llama3/8B_qat_full", {"quantizer": DELETE}, "quantizer",
     {"quantizer": {"_component_": QAT, "groupsize": 256}}),
    ("qat_lora_finetune_distributed", "llama3_2/1B_qat_lora",
     {"quantizer._component_": "torchtune.training.quantization.Int8DynActInt4WeightQuantizer"},
     "quantizer._component_", {"quantizer._component_": QAT}),
    ("qat_lora_finetune_distributed", "llama3_2/1B_qat_lora", {"model.use_dora": True}, "model.use_dora",
     {"model.use_dora": False}),
    ("lora_finetune_single_device", "llama3_2/1B_lora_single_device",
     {"profiler._component_": "torch.profiler.profile"}, "profiler._component_",
     {"profiler._component_": "torchtune.training.setup_torch_profiler"}),
    ("knowledge_distillation_single_device", "qwen2/1.5_to_0.5B_KD_lora_single_device",
     {"kd_loss.num_output_chunks": 4}, "kd_loss.num_output_chunks", {"loss.num_output_chunks": 4}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory",
     {"batch_size": 64, "forward_batch_size": 48}, "forward_batch_size", {"forward_batch_size": 16}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory",
     {"batch_size": 64, "ppo_batch_size": 48}, "ppo_batch_size", {"ppo_batch_size": 32}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory",
     {"batch_size": 64, "ppo_batch_size": 32, "gradient_accumulation_steps": 3, "optimizer_in_bwd": False}, "gradient_accumulation_steps",
     {"gradient_accumulation_steps": 4}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory", {"num_steps": 8, "batch_size": 64},
     "num_steps", {"num_steps": 64}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory",
     {"ref_policy_checkpointer.checkpoint_dir": "/elsewhere"}, "ref_policy_checkpointer.checkpoint_dir",
     {"ref_policy_checkpointer.checkpoint_dir": "${checkpointer.checkpoint_dir}"}),
    ("ppo_full_finetune_single_device", "mistral/7B_full_ppo_low_memory",
     {"ref_policy_checkpointer.checkpoint_files": ["other.safetensors"]}, "ref_policy_checkpointer.checkpoint_files",
     {"ref_policy_checkpointer.checkpoint_files": "${checkpointer.checkpoint_files}"}),
    ("lora_finetune_single_device", "llama3_2/1B_lora_single_device",
     {"dataset.packed": True, "tokenizer.max_seq_len": None}, "dataset.packed", {"tokenizer.max_seq_len": 2048}),
    ("full_dpo_distributed", "llama3_1/8B_full_dpo",
     {"optimizer_in_bwd": True, "clip_grad_norm": 1.0}, "clip_grad_norm", {"optimizer_in_bwd": False}),
]

REFUSED = "torchtune refuses it at start"


@pytest.mark.parametrize("recipe, name, fail, key, fix", RULE_CASES,
                         ids=[f"{c[0]}:{c[3]}:{i}" for i, c in enumerate(RULE_CASES)])
def test_recipe_rule_fails_then_passes_when_fixed(recipe, name, fail, key, fix):
    base = shipped(name)
    assert findings(base, recipe, key, REFUSED) == []
    broken = changed(base, fail)
    found = findings(broken, recipe, key, REFUSED)
    assert len(found) == 1, check_config(broken, recipe)
    assert not found[0].warning
    assert f"recipes/{recipe}.py:" in found[0].message or "torchtune/datasets/" in found[0].message
    assert findings(changed(broken, fix), recipe, key, REFUSED) == []


def test_every_rule_has_a_case():
    tested = {(key, recipe) for recipe, _, _, key, _ in RULE_CASES}
    for rule in RULES:
        assert any(key == rule.key and rule.applies_to(recipe) for key, recipe in tested), rule.message


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.key}:{r.cites[0]}" for r in RULES])
def test_every_cited_line_still_says_it(rule):
    """A torchtune upgrade that moves or changes a cited line fails here, not silently."""
    site_packages = registry.configs_dir().parent.parent
    for cite in rule.cites:
        lines = (site_packages / cite.file).read_text().splitlines()
        assert cite.line <= len(lines), f"{cite} is past the end of the file"
        assert cite.snippet in lines[cite.line - 1], f"{cite}: {lines[cite.line - 1]!r} no longer says {cite.snippet!r}"


def test_fp16_message_suggests_bf16_and_never_fp16():
    cfg = changed(shipped("llama3_2/1B_lora_single_device"), {"dtype": "fp16"})
    (found,) = findings(cfg, "lora_finetune_single_device", "dtype", REFUSED)
    fix = found.message.split(";", 1)[1]
    assert "bf16" in fix and "fp16" not in fix
    assert "recipes/lora_finetune_single_device.py:130" in found.message


def test_cuda_with_an_index_is_cuda_where_the_recipe_compares_device_types():
    cfg = changed(shipped("llama3_2/1B_lora_single_device"), {**OFFLOAD, "device": "cuda:1"})
    assert findings(cfg, "lora_finetune_single_device", "enable_activation_offloading") == []


def test_packed_list_dataset_without_max_seq_len_is_refused():
    cfg = shipped("llama3_2/1B_lora_single_device")
    one = {**cfg["dataset"], "packed": True}
    cfg = changed(cfg, {"dataset": [one, copy.deepcopy(cfg["dataset"])], "tokenizer.max_seq_len": None})
    assert len(findings(cfg, "lora_finetune_single_device", "dataset.packed", REFUSED)) == 1


def test_rules_follow_recipe_files_with_the_registry_name_only():
    cfg = {"dtype": "fp16"}
    assert registry_recipe("/somewhere/lora_finetune_single_device.py") == "lora_finetune_single_device"
    assert [f.key for f in check_recipe_rules(cfg, "/somewhere/lora_finetune_single_device.py")] == ["dtype"]
    assert list(check_recipe_rules(cfg, "/somewhere/my_recipe.py")) == []
    assert list(check_recipe_rules(cfg, "")) == []


def test_interpolations_that_cannot_be_followed_fire_no_rule():
    cfg = {"dtype": "${oc.env:DTYPE}", "optimizer_in_bwd": True, "gradient_accumulation_steps": "${ga}", "ga": 4}
    keys = [f.key for f in check_recipe_rules(cfg, "full_finetune_single_device")]
    assert keys == ["gradient_accumulation_steps"]  # ${ga} is followed; the resolver is left to the run


# ----------------------------------------------------------------------------- binding


def test_dataset_missing_a_required_argument_names_it():
    cfg = changed(shipped("llama3_2/1B_lora_single_device"),
                  {"dataset": {"_component_": "torchtune.datasets.instruct_dataset"}})
    (found,) = findings(cfg, "lora_finetune_single_device", "dataset")
    assert "'source'" in found.message and "dataset.source" in found.message


def test_torch_scheduler_the_recipe_cannot_call_suggests_torchtunes():
    cfg = changed(shipped("llama3_2/1B_lora_single_device"),
                  {"lr_scheduler": {"_component_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 10}})
    (found,) = findings(cfg, "lora_finetune_single_device", "lr_scheduler")
    assert "num_training_steps" in found.message
    assert "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup" in found.message


def test_an_argument_the_recipe_passes_itself_given_again_is_an_error():
    cfg = changed(shipped("llama3_2/1B_full_single_device"), {"optimizer": {"_component_": "torch.optim.AdamW", "lr": 1e-5, "params": []}})
    (found,) = findings(cfg, "full_finetune_single_device", "optimizer")
    assert "remove optimizer.params" in found.message


def test_checkpointer_gets_should_load_recipe_state_from_the_recipe():
    cfg = shipped("llama3_2/1B_lora_single_device")
    assert findings(cfg, "lora_finetune_single_device", "checkpointer") == [] or all(
        f.warning for f in findings(cfg, "lora_finetune_single_device", "checkpointer"))
    cfg = changed(cfg, {"checkpointer": {"_component_": "torch.nn.Linear", "in_features": 1, "out_features": 1}})
    (found,) = findings(cfg, "lora_finetune_single_device", "checkpointer")
    assert "should_load_recipe_state" in found.message


def test_what_torchtune_accepts_stays_accepted():
    cfg = shipped("llama3_2/1B_lora_single_device")
    ds = cfg["dataset"]
    partial = {"_component_": "torchtune.datasets.alpaca_cleaned_dataset"}  # a functools.partial
    cfg = changed(cfg, {"dataset": [ds, partial]})
    assert [f for f in check_config(cfg, "lora_finetune_single_device") if f.key.startswith("dataset")] == []


def test_unknown_recipes_keep_torchtunes_leniency_for_missing_arguments():
    cfg = {"dataset": {"_component_": "torchtune.datasets.instruct_dataset"}}
    assert findings(cfg, "/somewhere/my_recipe.py", "dataset") == []
    assert findings(cfg, "lora_finetune_single_device", "dataset") != []


def test_every_registry_recipe_has_an_argument_table():
    assert {r.name for r in registry.recipes()} <= set(RECIPE_ARGS)


# ----------------------------------------------------------------------------- consistency

QWEN = "qwen2_5/0.5B_lora_single_device"


def test_llama3_tokenizer_with_a_qwen_model_is_an_error_naming_both_and_the_fix():
    cfg = changed(shipped(QWEN), {"tokenizer._component_": "torchtune.models.llama3.llama3_tokenizer"})
    (found,) = findings(cfg, "lora_finetune_single_device", "tokenizer._component_")
    assert not found.warning
    assert "llama3_tokenizer" in found.message and "lora_qwen2_5_0_5b" in found.message
    assert "torchtune.models.qwen2_5.qwen2_5_tokenizer" in found.message
    fixed = changed(cfg, {"tokenizer._component_": "torchtune.models.qwen2_5.qwen2_5_tokenizer"})
    assert findings(fixed, "lora_finetune_single_device", "tokenizer._component_") == []


def test_llama_model_type_with_a_qwen_model_is_an_error_naming_both_and_the_fix():
    cfg = changed(shipped(QWEN), {"checkpointer.model_type": "LLAMA3_2"})
    (found,) = findings(cfg, "lora_finetune_single_device", "checkpointer.model_type")
    assert not found.warning
    assert "LLAMA3_2" in found.message and "qwen2_5" in found.message and "model_type: QWEN2" in found.message
    fixed = changed(cfg, {"checkpointer.model_type": "QWEN2"})
    assert findings(fixed, "lora_finetune_single_device", "checkpointer.model_type") == []


def test_a_mix_within_one_lineage_is_a_warning():
    cfg = changed(shipped("llama3_1/8B_lora_single_device"), {"checkpointer.model_type": "LLAMA3_2"})
    (found,) = findings(cfg, "lora_finetune_single_device", "checkpointer.model_type")
    assert found.warning
    cfg = changed(shipped(QWEN), {"tokenizer._component_": "torchtune.models.qwen2.qwen2_tokenizer"})
    (found,) = findings(cfg, "lora_finetune_single_device", "tokenizer._component_")
    assert found.warning


def test_lora_builder_under_a_full_recipe_is_an_error():
    cfg = shipped("llama3_2/1B_full_single_device")
    lora = {"_component_": "torchtune.models.llama3_2.lora_llama3_2_1b", "lora_attn_modules": ["q_proj"],
            "lora_rank": 8, "lora_alpha": 16}
    (found,) = findings(changed(cfg, {"model": lora}), "full_finetune_single_device", "model._component_")
    assert "torchtune.models.llama3_2.llama3_2_1b" in found.message and not found.warning
    assert findings(cfg, "full_finetune_single_device", "model._component_") == []


def test_plain_builder_under_a_lora_recipe_is_an_error():
    cfg = shipped("llama3_2/1B_lora_single_device")
    plain = {"_component_": "torchtune.models.llama3_2.llama3_2_1b"}
    (found,) = findings(changed(cfg, {"model": plain}), "lora_finetune_single_device", "model._component_")
    assert "torchtune.models.llama3_2.lora_llama3_2_1b" in found.message and not found.warning
    assert findings(cfg, "lora_finetune_single_device", "model._component_") == []


SHIPPED = [(r.name, c) for r in registry.recipes() for c in r.configs
           if registry.builtin_configs()[c].path.is_file()]


def test_every_shipped_pairing_is_in_the_family_table_and_breaks_no_rule():
    """The accepted pairs come from torchtune's shipped configs: all of them pass, under every recipe that runs them."""
    for recipe, name in SHIPPED:
        cfg = shipped(name)
        assert list(check_consistency(cfg, recipe)) == [], (recipe, name)
        assert list(check_recipe_rules(cfg, recipe)) == [], (recipe, name)
        model = (cfg.get("model") or {}).get("_component_", "") if isinstance(cfg.get("model"), dict) else ""
        if family_of(model):
            assert family_of(model) in FAMILIES, (name, model)


# ----------------------------------------------------------------------------- end to end


def test_generate_configs_reports_the_refused_runs_only(tmp_path):
    exp = {
        "experiment_name": "rules",
        "base_config": "llama3_2/1B_lora_single_device",
        "recipe": "lora_finetune_single_device",
        "variables": {"dtype": ["bf16", "fp16"]},
    }
    result = generate_configs(exp, output_dir=tmp_path / "x", write=False, strict=False)
    refused = [p for p in result.problems if not p.warning]
    assert len(result.runs) == 2
    assert len(refused) == 1 and refused[0].key == "dtype"
    assert "recipes/lora_finetune_single_device.py:130" in refused[0].message
