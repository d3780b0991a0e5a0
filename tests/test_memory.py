"""The memory estimate (Appendix H): real meta-device builds of shipped configs, its properties, the budget check.

Models are built on torch's meta device (no weights, no GPU), so these run on
any machine; what they cannot check is the real peak on a GPU (Appendix H
compares the estimate with torchtune's published figures instead).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import yaml

from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import memory
from torchtune_config_writer.compile.memory import estimate, model_stats, read_settings
from torchtune_config_writer.compile.schema import Experiment
from torchtune_config_writer.errors import ExperimentSchemaError
from torchtune_config_writer.expdir import MAPPING_CACHE_FILE, MAPPING_FILE, load_mapping

from helpers import LORA_1B, write_experiment

LORA_8B = "llama3_1/8B_lora_single_device"
QLORA_8B = "llama3_1/8B_qlora_single_device"
FULL_8B = "llama3_1/8B_full_single_device"
LORA_8B_DISTRIBUTED = "llama3_1/8B_lora"
LORA_ARGS = {"lora_attn_modules": ["q_proj", "v_proj", "output_proj"], "apply_lora_to_mlp": True, "lora_rank": 8}


def plan(base: str, **sections):
    """Compile and validate in memory; problems come back on the result, not raised."""
    exp = {"experiment_name": "mem", "base_config": base, **sections}
    return generate_configs(exp, output_dir="/tmp/test_memory_unwritten", write=False, strict=False)


def memory_problems(result):
    return [p for p in result.problems + result.warnings if p.key == "memory"]


# ----------------------------------------------------------------------------- parameter counts


def test_parameter_counts_are_the_real_models():
    assert model_stats("torchtune.models.llama3_2.llama3_2_1b", {}).params == 1_235_814_400  # Llama 3.2 1B
    stats = model_stats("torchtune.models.llama3_1.llama3_1_8b", {})
    assert stats.params == 8_030_261_248 and stats.adapter == 0 and stats.quantized == 0
    assert (stats.layers, stats.dim, stats.kv_dim, stats.hidden, stats.vocab) == (32, 4096, 1024, 14336, 128256)


def test_lora_adapters_and_qlora_quantized_weights_are_counted():
    lora = model_stats("torchtune.models.llama3_1.lora_llama3_1_8b", LORA_ARGS)
    qlora = model_stats("torchtune.models.llama3_1.qlora_llama3_1_8b", LORA_ARGS)
    assert lora.adapter == qlora.adapter == 19_660_800  # rank 8 on q, v, output and the MLP
    assert lora.quantized == 0
    # every linear weight inside the layers, not the embedding or the output projection
    assert qlora.quantized == 6_979_321_856
    assert qlora.params == lora.params


def test_a_builder_that_cannot_be_built_gives_no_estimate():
    assert model_stats("torchtune.models.llama3_2.no_such_model", {}) is None
    assert model_stats("torchtune.models.llama3_2.llama3_2_1b", {"no_such_argument": 1}) is None
    assert model_stats("torchtune.models.llama3_2.lora_llama3_2_1b", {"lora_rank": "${rank}"}) is None


# ----------------------------------------------------------------------------- shipped configs, end to end


@pytest.mark.parametrize("base, low, high", [
    (LORA_1B, 5, 40),           # 2.3 GiB of weights; batch 4 x 2048 tokens without checkpointing
    (QLORA_8B, 5, 16),
    (FULL_8B, 15, 30),           # 15 GiB of bf16 weights; paged 8-bit optimizer, optimizer_in_bwd
    (LORA_8B_DISTRIBUTED, 15, 60),   # no activation checkpointing in this config
])
def test_shipped_configs_are_estimated(base, low, high):
    result = plan(base)
    est = result.runs[0].memory
    assert est is not None and low < est.total_gib < high, est
    assert set(est.breakdown) == set(memory.TERMS)
    assert abs(sum(est.breakdown.values()) - est.total_gib) < 1e-6
    assert any("max_seq_len is null" in a for a in est.assumptions)  # the shipped configs leave it null


def test_distributed_runs_are_sharded_over_slurm_gpus():
    one, four = plan(LORA_8B_DISTRIBUTED).runs[0].memory, plan(LORA_8B_DISTRIBUTED, slurm={"gpus_per_run": 4}).runs[0].memory
    assert (one.gpus, four.gpus) == (1, 4)
    assert four.breakdown["weights"] < one.breakdown["weights"] / 2
    assert four.breakdown["activations"] == one.breakdown["activations"]  # FSDP does not split activations


def test_cpu_runs_are_not_estimated():
    result = plan(LORA_1B, controls={"device": "cpu"}, hardware={"gpu_memory_gb": 1})
    assert all(r.memory is None for r in result.runs)
    assert not memory_problems(result)
    from torchtune_config_writer.cli.compile import run_table

    assert "MEM" not in run_table(result)[0]


# ----------------------------------------------------------------------------- properties


@pytest.fixture(scope="module")
def lora_8b():
    result = plan(LORA_8B)
    return memory._model_of(result.runs[0].plain), read_settings(result.runs[0].plain, result.recipe, False)


def total(stats, settings, gpus=1) -> float:
    return estimate(stats, settings, gpus).total_gib


def test_more_tokens_need_more_memory(lora_8b):
    stats, s = lora_8b
    for field in ("batch", "seq_len"):
        values = [total(stats, dataclasses.replace(s, **{field: n})) for n in (1, 2, 4, 8)]
        assert values == sorted(values) and len(set(values)) == 4, field


def test_checkpointing_and_offloading_need_less(lora_8b):
    stats, s = lora_8b
    plain = dataclasses.replace(s, checkpointing=False, offloading=False)
    checkpointed = dataclasses.replace(plain, checkpointing=True)
    offloaded = dataclasses.replace(checkpointed, offloading=True)
    assert total(stats, plain) > total(stats, checkpointed) > total(stats, offloaded)


def test_qlora_weights_are_smaller_than_lora_weights(lora_8b):
    stats, s = lora_8b
    qlora = model_stats("torchtune.models.llama3_1.qlora_llama3_1_8b", LORA_ARGS)
    assert estimate(qlora, s).breakdown["weights"] < estimate(stats, s).breakdown["weights"] / 2


def test_more_gpus_need_less_with_fsdp(lora_8b):
    stats, s = lora_8b
    distributed = dataclasses.replace(s, distributed=True)
    values = [total(stats, distributed, n) for n in (1, 2, 4, 8)]
    assert values == sorted(values, reverse=True) and len(set(values)) == 4
    assert total(stats, s, 8) == total(stats, s, 1)  # a single-device recipe uses one GPU however many it gets


def test_optimizer_state_follows_the_optimizer():
    stats = model_stats("torchtune.models.llama3_1.llama3_1_8b", {})
    base = read_settings({"dtype": "bf16", "optimizer": {"_component_": "torch.optim.AdamW"}}, "full_finetune_single_device", False)
    adam = estimate(stats, base).breakdown["optimizer"]
    assert adam == pytest.approx(stats.params * 4 / memory.GIB)  # two bf16 states
    eight = dataclasses.replace(base, optimizer="8bit")
    assert estimate(stats, eight).breakdown["optimizer"] == pytest.approx(adam / 2)
    in_bwd = dataclasses.replace(base, optimizer_in_bwd=True)
    assert estimate(stats, in_bwd).breakdown["gradients"] < estimate(stats, base).breakdown["gradients"] / 10


# ----------------------------------------------------------------------------- the budget


def test_over_budget_is_an_error_naming_the_run_and_the_fixes():
    estimated = plan(LORA_8B).runs[0].memory.total_gib
    result = plan(LORA_8B, hardware={"gpu_memory_gb": round(estimated * 0.8, 1)}, controls={"enable_activation_checkpointing": False})
    [problem] = [p for p in result.problems if p.key == "memory"]
    assert problem.run_id == "run_000" and not problem.warning
    assert "exceeds" in problem.message and "GiB" in problem.message
    fixes = problem.message.split("cheapest fixes first: ")[1]
    order = ["enable_activation_checkpointing: True", "batch_size: 1 with gradient_accumulation_steps: 16", "QLoRA",
             "more GPUs"]
    assert [fixes.index(f) for f in order] == sorted(fixes.index(f) for f in order)
    assert result.runs[0].validation == "failed"


def test_near_the_budget_is_a_warning():
    estimated = plan(LORA_8B).runs[0].memory.total_gib
    result = plan(LORA_8B, hardware={"gpu_memory_gb": round(estimated * 1.05, 2)})
    assert not [p for p in result.problems if p.key == "memory"]
    [warning] = [p for p in result.warnings if p.key == "memory"]
    assert "within 15%" in warning.message and result.runs[0].validation == "passed"


def test_a_named_gpu_with_room_is_quiet():
    result = plan(LORA_1B, hardware={"gpu": "h200"})
    assert not memory_problems(result) and result.memory_budget.name == "H200"


def test_hardware_gpus_per_run_wins_over_slurm():
    result = plan(LORA_8B_DISTRIBUTED, slurm={"gpus_per_run": 2}, hardware={"gpus_per_run": 8})
    assert result.runs[0].memory.gpus == 8


# ----------------------------------------------------------------------------- the schema


def test_unknown_gpu_is_an_error_with_a_suggestion_and_the_line(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\nhardware:\n  gpu: A100-80G\n")
    with pytest.raises(ExperimentSchemaError) as err:
        generate_configs(path, write=False)
    assert "experiment.yaml:4" in str(err.value) and "Did you mean 'A100-80GB'" in str(err.value)


@pytest.mark.parametrize("hardware, message", [
    ("  gpu: L4\n  gpu_memory_gb: 24\n", "not both"),
    ("  gpu_memory: 24\n", "Did you mean 'gpu_memory_gb'"),
    ("  gpu_memory_gb: 0\n", "greater than 0"),
    ("  gpus_per_run: 0\n", "greater than or equal to 1"),
])
def test_hardware_mistakes_are_schema_errors(tmp_path, hardware, message):
    path = write_experiment(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\nhardware:\n{hardware}")
    with pytest.raises(ExperimentSchemaError, match=message):
        generate_configs(path, write=False)


def test_the_json_schema_describes_hardware():
    schema = Experiment.model_json_schema()
    fields = schema["$defs"]["HardwareSettings"]["properties"]
    assert {"gpu", "gpu_memory_gb", "gpus_per_run"} <= set(fields)
    assert schema["$defs"]["HardwareSettings"].get("additionalProperties") is False


# ----------------------------------------------------------------------------- run_mapping.yaml


def test_the_estimate_is_recorded_and_older_mappings_still_load(tmp_path):
    result = generate_configs({"experiment_name": "m", "base_config": LORA_1B, "variables": {"batch_size": [1, 2]},
                               "hardware": {"gpu": "A100-80GB"}}, output_dir=tmp_path / "exp", strict=False)
    mapping = load_mapping(tmp_path / "exp")
    for run, entry in zip(result.runs, mapping.runs):
        assert entry.memory.total_gib == pytest.approx(run.memory.total_gib, abs=0.01)
        assert entry.memory.breakdown.keys() == set(memory.TERMS) and entry.memory.budget_gib == 80.0
    # a format-3 mapping written before estimates existed has no memory key: it still loads
    path = tmp_path / "exp" / MAPPING_FILE
    data = yaml.safe_load(path.read_text())
    for run in data["runs"]:
        del run["memory"]
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "exp" / MAPPING_CACHE_FILE).unlink()
    assert all(r.memory is None for r in load_mapping(tmp_path / "exp").runs)


# ----------------------------------------------------------------------------- the cache between processes


def test_a_warm_process_counts_without_importing_torch(tmp_path):
    script = ("import json, sys\nfrom torchtune_config_writer.compile.memory import model_stats\n"
              "s = model_stats('torchtune.models.llama3_2.llama3_2_1b', {})\n"
              "print(json.dumps([s.params, 'torch' in sys.modules]))\n")
    env = {**os.environ, "TORCHTUNE_CONFIG_WRITER_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    assert [json.loads(r.stdout.splitlines()[-1]) for r in runs] == [[1_235_814_400, True], [1_235_814_400, False]], \
        [r.stderr[-2000:] for r in runs]
