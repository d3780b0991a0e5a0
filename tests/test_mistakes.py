"""Forty mistakes researchers really make, each caught before the queue with the key, the run and the fix.

Each case is an experiment a new user could write. It must end in exactly the
finding below: an error on the run (``validate`` exits 1), a warning (reported,
not refused), or an error raised while compiling (a message with file:line).
Nothing here passes with "all passed" and then fails on a GPU node.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchtune_config_writer import generate_configs
from torchtune_config_writer.errors import ConfigWriterError

LORA = "llama3_2/1B_lora_single_device"
FULL = "llama3_2/1B_full_single_device"
QWEN = "qwen2_5/0.5B_lora_single_device"
QLORA_8B = "llama3_1/8B_qlora_single_device"
FULL_8B = "llama3_1/8B_full_single_device"
ADAMW = {"optimizer": {"_component_": "torch.optim.AdamW", "lr": 2e-5}}  # the full-finetune bases use bitsandbytes

# (id, experiment fields on top of {experiment_name, base_config: LORA}, kind, key, fragment of the message)
MISTAKES = [
    # 1. values against the types the code declares
    ("rank-as-word", {"controls": {"lora_rank": "eight"}}, "error", "model.lora_rank", "must be an integer, got 'eight'"),
    ("rank-as-list", {"controls": {"lora_rank": [8]}}, "error", "model.lora_rank", "list them under variables"),
    ("rank-as-bool", {"controls": {"lora_rank": True}}, "error", "model.lora_rank", "true/false is not a number"),
    ("fractional-batch", {"controls": {"batch_size": 2.5}}, "error", "batch_size", "Round it to a whole number"),
    ("compile-mode", {"controls": {"compile": "max-autotune"}}, "error", "compile", "compile key is a bool"),
    ("warmup-ratio", {"controls": {"lr_scheduler.num_warmup_steps": 0.03}}, "error", "lr_scheduler.num_warmup_steps",
     "counts steps; it is not a fraction"),
    ("alpha-arithmetic", {"controls": {"lora_alpha": "2*${model.lora_rank}"}}, "error", "model.lora_alpha",
     'lora_alpha: "{{ 2 * lora_rank }}"'),
    ("quoted-lr", {"controls": {"lr": "3e-4"}}, "error", "optimizer.lr", "Write it without quotes"),
    ("quoted-weight-decay", {"controls": {"weight_decay": "0.01"}}, "error", "optimizer.weight_decay", "got '0.01' (a string)"),
    ("flag-as-word", {"controls": {"enable_activation_checkpointing": "yes please"}}, "error",
     "enable_activation_checkpointing", "must be true or false"),
    # 2. values against known ranges and sets
    ("zero-lr", {"variables": {"lr": [0.0, 1e-4]}}, "error", "optimizer.lr", "must be a positive number, got 0.0"),
    ("huge-lr", {"controls": {"lr": 3}}, "warning", "optimizer.lr", "implausibly large for AdamW"),
    ("dropout-one", {"controls": {"lora_dropout": 1.0}}, "error", "model.lora_dropout", "[0, 1)"),
    ("zero-epochs", {"controls": {"epochs": 0}}, "error", "epochs", "must be an integer >= 1, got 0"),
    ("zero-accumulation", {"controls": {"gradient_accumulation_steps": 0}}, "error", "gradient_accumulation_steps", ">= 1"),
    ("zero-rank", {"variables": {"lora_rank": [0, 8]}}, "error", "model.lora_rank", "0"),
    ("zero-max-steps", {"controls": {"max_steps_per_epoch": 0}}, "error", "max_steps_per_epoch", ">= 1 or null"),
    ("fp16", {"controls": {"dtype": "fp16"}}, "error", "dtype", "set dtype: bf16"),
    ("dtype-spelling", {"controls": {"dtype": "bfloat16"}}, "error", "dtype", "Did you mean 'bf16'"),
    ("hf-module-name", {"controls": {"lora_attn_modules": ["q_proj", "o_proj"]}}, "error", "model.lora_attn_modules",
     "Did you mean 'output_proj'"),
    ("mlp-in-attn-list", {"controls": {"lora_attn_modules": ["q_proj", "gate_proj"]}}, "error", "model.lora_attn_modules",
     "apply_lora_to_mlp"),
    # 3. what the recipe itself refuses at start
    ("offload-without-checkpointing", {"controls": {"enable_activation_offloading": True,
                                                    "enable_activation_checkpointing": False}},
     "error", "enable_activation_offloading", "lora_finetune_single_device.py:"),
    ("opt-in-bwd-accumulation", {"base_config": FULL, "controls": {"optimizer_in_bwd": True, **ADAMW,
                                                                  "gradient_accumulation_steps": 4}},
     "error", "gradient_accumulation_steps", "full_finetune_single_device.py:"),
    ("opt-in-bwd-clipping", {"base_config": FULL, "controls": {"optimizer_in_bwd": True, "clip_grad_norm": 1.0, **ADAMW}},
     "error", "clip_grad_norm", "full_finetune_single_device.py:"),
    ("packed-without-seq-len", {"controls": {"dataset.packed": True}}, "error", "dataset.packed", "max_seq_len"),
    # 4. swapped components bound completely
    ("dataset-without-source", {"controls": {"dataset": {"_component_": "torchtune.datasets.instruct_dataset"}}},
     "error", "dataset", "needs argument 'source'"),
    ("torch-cosine", {"controls": {"lr_scheduler": {"_component_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                                    "T_max": 100}}},
     "error", "lr_scheduler", "get_cosine_schedule_with_warmup"),
    ("optional-package-missing", {"controls": {"optimizer._component_": "bitsandbytes.optim.PagedAdamW8bit"}}, "error",
     "optimizer", "pip install bitsandbytes"),
    ("component-typo", {"controls": {"optimizer._component_": "torch.optim.AdamWW"}}, "error", "optimizer",
     "Did you mean 'torch.optim.AdamW'"),
    # 5. consistency across the config
    ("llama-tokenizer-qwen-model", {"base_config": QWEN, "controls": {
        "tokenizer": {"_component_": "torchtune.models.llama3.llama3_tokenizer", "path": "/t/tokenizer.model"}}},
     "error", "tokenizer._component_", "use tokenizer._component_: torchtune.models.qwen2_5.qwen2_5_tokenizer"),
    ("model-type-of-another-family", {"base_config": QWEN, "controls": {"checkpointer.model_type": "LLAMA3_2"}},
     "error", "checkpointer.model_type", "set checkpointer.model_type: QWEN2"),
    ("qlora-builder-full-recipe", {"base_config": FULL, "controls": {**ADAMW, "model": {
        "_component_": "torchtune.models.llama3_2.qlora_llama3_2_1b", "lora_attn_modules": ["q_proj", "v_proj"],
        "lora_rank": 8, "lora_alpha": 16}}}, "error", "model._component_", "loads the whole model strictly"),
    ("plain-builder-lora-recipe", {"controls": {"model": {"_component_": "torchtune.models.llama3_2.llama3_2_1b"}}},
     "error", "model._component_", "builds no LoRA adapters"),
    # 6. paths
    ("tokenizer-is-a-directory", {"controls": {"tokenizer.path": "{dir}"}}, "error", "tokenizer.path", "is a directory"),
    ("checkpoint-dir-is-a-file", {"controls": {"checkpointer.checkpoint_dir": "{file}"}}, "error",
     "checkpointer.checkpoint_dir", "is a file"),
    ("wandb-typo", {"controls": {"metric_logger": {"_component_": "torchtune.training.metric_logging.WandBLogger",
                                                   "projet": "study"}}},
     "error", "metric_logger", "Did you mean 'project'"),
    # the sweep itself
    ("repeated-value", {"variables": {"lora_dropout": [0, 0.0, 0.1]}}, "raised", "", "0 and 0.0 are the same number"),
    ("shared-output-path", {"variables": {"lora_rank": [8, 16]}, "controls": {"metric_logger.log_dir": "/tmp/logs"}},
     "raised", "", "runs would overwrite each other's files"),
    # whether each run fits its GPU
    ("full-8b-on-a-4090", {"base_config": FULL_8B, "hardware": {"gpu": "RTX4090"},
                           "controls": {"optimizer": {"_component_": "torch.optim.AdamW", "lr": 2e-5}}},
     "error", "memory", "exceeds the RTX4090's 24 GiB; cheapest fixes first"),
    ("qlora-8b-long-sequences-on-a-24gb-card", {"base_config": QLORA_8B, "hardware": {"gpu_memory_gb": 24},
                                                "controls": {"batch_size": 16, "tokenizer.max_seq_len": 4096,
                                                             "enable_activation_checkpointing": False}},
     "error", "memory", "GiB"),
]


def _experiment(case: dict, tmp_path: Path) -> dict:
    exp = {"experiment_name": "mistake", "base_config": LORA, **case}
    (tmp_path / "tok").mkdir(exist_ok=True)
    (tmp_path / "weights.safetensors").write_text("")
    text = yaml.safe_dump(exp).replace("'{dir}'", str(tmp_path / "tok")).replace("'{file}'", str(tmp_path / "weights.safetensors"))
    return yaml.safe_load(text)


def test_there_are_forty_mistakes():
    assert len(MISTAKES) == 40 and len({m[0] for m in MISTAKES}) == 40


@pytest.mark.parametrize("case, kind, key, fragment", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_caught_with_its_key_and_fix(case, kind, key, fragment, tmp_path):
    if "bitsandbytes" in str(case) and importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("documents the error seen without bitsandbytes")
    exp = _experiment(case, tmp_path)
    if kind == "raised":
        with pytest.raises(ConfigWriterError) as err:
            generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
        assert fragment in str(err.value)
        return
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    found = result.problems if kind == "error" else result.warnings
    hits = [p for p in found if p.key == key and fragment in p.message]
    assert hits, f"no {kind} on {key!r} containing {fragment!r}; errors: {[str(p) for p in result.problems]}; " \
                 f"warnings: {[str(p) for p in result.warnings]}"
    assert all(p.run_id.startswith("run_") for p in hits)
    if kind == "warning":
        assert result.ok, [str(p) for p in result.problems]


def test_the_cli_reports_every_mistake_of_a_sweep_without_a_traceback(tmp_path):
    exp = {"experiment_name": "several", "base_config": LORA, "variables": {"lora_rank": [8, "sixteen"]},
           "controls": {"lora_attn_modules": ["q_proj", "o_proj"], "compile": "max-autotune"}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp))
    done = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "validate", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    out = done.stdout + done.stderr
    assert "run_001: model.lora_rank: must be an integer, got 'sixteen'" in out
    for run in ("run_000", "run_001"):
        assert f"{run}: model.lora_attn_modules: item 1 must be one of" in out
        assert f"{run}: compile: must be true or false" in out
