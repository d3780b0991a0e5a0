"""Input paths (anchoring, kinds), forwarded **kwargs, dataset config fields, missing optional packages,
and identical runs: each behaviour with a case that is refused and one that passes. Real torchtune, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import LORA_1B, write_experiment
from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import registry, sigcache
from torchtune_config_writer.compile.components import accepted_args, import_error_message
from torchtune_config_writer.errors import SweepError, UnknownKeyError

JSON_DATASET = {"_component_": "torchtune.datasets.alpaca_dataset", "source": "json", "split": "train"}


def _study(tmp_path: Path, body: str) -> Path:
    """An experiment file in tmp_path/study with data/train.json and tok/tokenizer.model next to it."""
    study = tmp_path / "study"
    (study / "data").mkdir(parents=True)
    (study / "data" / "train.json").write_text('[{"instruction": "hi", "input": "", "output": "yo"}]')
    (study / "tok").mkdir()
    (study / "tok" / "tokenizer.model").write_text("not a real tokenizer; only its place matters here")
    return write_experiment(study, body)


def _messages(result, key: str, *, warning: bool) -> list[str]:
    found = result.warnings if warning else result.problems
    return [p.message for p in found if p.key == key]


# ----------------------------------------------------------------------------- anchoring relative inputs


def test_relative_data_file_next_to_the_experiment_is_written_absolute(tmp_path):
    path = _study(tmp_path, f"""experiment_name: anchored
base_config: {LORA_1B}
variables:
  lora_rank: [4, 8]
controls:
  dataset:
    _component_: torchtune.datasets.alpaca_dataset
    source: json
    data_files: data/train.json  # our data
    split: train
""")
    result = generate_configs(path, output_dir=tmp_path / "out", strict=False)
    absolute = str(tmp_path / "study" / "data" / "train.json")
    for run in result.runs:
        assert run.plain["dataset"]["data_files"] == absolute
        assert f"data_files: {absolute}" in run.config_path.read_text()
    assert result.notes.count(f"dataset.data_files: 'data/train.json' is read from {absolute} (relative to the "
                              "experiment file; runs start in the experiment directory)") == 1
    assert _messages(result, "dataset.data_files", warning=True) == []  # found, so no warning


def test_relative_data_file_found_where_runs_start_is_left_alone(tmp_path):
    path = _study(tmp_path, f"experiment_name: here\nbase_config: {LORA_1B}\n"
                            "controls:\n  dataset.data_files: data/train.json\n  dataset.source: json\n")
    # the experiment directory is the study directory itself: the runs see data/train.json as written
    result = generate_configs(path, output_dir=tmp_path / "study", write=False, strict=False)
    assert result.runs[0].plain["dataset"]["data_files"] == "data/train.json"
    assert not any("is read from" in n for n in result.notes)


def test_relative_data_file_found_nowhere_stays_a_warning(tmp_path):
    path = _study(tmp_path, f"experiment_name: nowhere\nbase_config: {LORA_1B}\n"
                            "controls:\n  dataset.data_files: data/other.json\n  dataset.source: json\n")
    result = generate_configs(path, output_dir=tmp_path / "out", write=False, strict=False)
    assert result.runs[0].plain["dataset"]["data_files"] == "data/other.json"
    assert _messages(result, "dataset.data_files", warning=True) == ["'data/other.json' does not exist on this machine"]
    assert result.ok


def test_swept_inputs_and_dataset_lists_are_anchored_and_hub_files_are_not(tmp_path):
    path = _study(tmp_path, f"""experiment_name: swept
base_config: {LORA_1B}
variables:
  dataset.data_files: [data/train.json, [data/train.json]]
controls:
  dataset.source: json
  checkpoint_dir: tok
""")
    (tmp_path / "study" / "data" / "eval.json").write_text("[]")
    result = generate_configs(path, output_dir=tmp_path / "out", write=False, strict=False)
    data, tok = tmp_path / "study" / "data" / "train.json", tmp_path / "study" / "tok"
    assert [r.plain["dataset"]["data_files"] for r in result.runs] == [str(data), [str(data)]]
    assert all(r.plain["checkpointer"]["checkpoint_dir"] == str(tok) for r in result.runs)
    assert sum("is read from" in n for n in result.notes) == 2  # once per path, not once per run

    lists = _study(tmp_path / "lists", f"""experiment_name: lists
base_config: {LORA_1B}
controls:
  ~dataset: null
  +dataset:
    - {{_component_: torchtune.datasets.alpaca_dataset, source: json, data_files: data/train.json, split: train}}
    - {{_component_: torchtune.datasets.alpaca_dataset, source: tatsu-lab/alpaca, data_files: data/train.json}}
""")
    result = generate_configs(lists, output_dir=tmp_path / "out2", write=False, strict=False)
    first, hub = result.runs[0].plain["dataset"]
    assert first["data_files"] == str(tmp_path / "lists" / "study" / "data" / "train.json")
    assert hub["data_files"] == "data/train.json"  # a Hub dataset's data_files are inside its repository


def test_anchoring_keeps_the_base_configs_comments(tmp_path):
    shipped = (registry.configs_dir() / f"{LORA_1B}.yaml").read_text()
    base_text = shipped.replace("  path: /tmp/Llama-3.2-1B-Instruct/original/tokenizer.model",
                                "  path: tok/tokenizer.model  # the team's tokenizer")
    assert base_text != shipped
    path = _study(tmp_path, "experiment_name: comments\nbase_config_file: base.yaml\n"
                            "recipe: lora_finetune_single_device\nvariables:\n  lora_rank: [4, 8]\n")
    (tmp_path / "study" / "base.yaml").write_text(base_text)
    result = generate_configs(path, output_dir=tmp_path / "out", strict=False)
    text = result.runs[1].config_path.read_text()
    assert f"path: {tmp_path / 'study' / 'tok' / 'tokenizer.model'} # the team's tokenizer" in text
    assert "# higher increases accuracy and memory" in text
    assert any(n.startswith("tokenizer.path: 'tok/tokenizer.model' is read from") for n in result.notes)


# ----------------------------------------------------------------------------- paths of the wrong kind


def test_paths_of_the_wrong_kind_are_errors(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tokenizer.model").write_text("x")
    (tmp_path / "ckpt" / "model.safetensors").write_text("x")
    (tmp_path / "data").mkdir()
    exp = {"experiment_name": "kinds", "base_config": LORA_1B,
           "controls": {"tokenizer.path": str(tmp_path / "ckpt"),
                        "checkpoint_dir": str(tmp_path / "ckpt" / "model.safetensors"),
                        "dataset": {**JSON_DATASET, "data_files": str(tmp_path / "data")}}}
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    ckpt = tmp_path / "ckpt"
    assert _messages(result, "tokenizer.path", warning=False) == [
        f"'{ckpt}' is a directory, but tokenizer.path must name the tokenizer file itself "
        f"(e.g. '{ckpt / 'tokenizer.model'}')"]
    assert _messages(result, "checkpointer.checkpoint_dir", warning=False) == [
        f"'{ckpt / 'model.safetensors'}' is a file, but checkpointer.checkpoint_dir must be the directory "
        f"holding the checkpoint files (e.g. '{ckpt}')"]
    assert _messages(result, "dataset.data_files", warning=False) == [
        f"'{tmp_path / 'data'}' is a directory, but datasets.load_dataset needs files in data_files: "
        f"give a pattern (e.g. '{tmp_path / 'data'}/*.json') or list the files"]
    assert all(r.validation == "failed" for r in result.runs)


def test_a_directory_is_not_a_data_file_for_datasets_either(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text('{"x": 1}\n')
    with pytest.raises(FileNotFoundError):  # why the check above refuses it
        datasets.load_dataset("json", data_files=str(tmp_path / "data"), split="train",
                              cache_dir=str(tmp_path / "hf"))
    assert len(datasets.load_dataset("json", data_files=str(tmp_path / "data" / "*.json"), split="train",
                                     cache_dir=str(tmp_path / "hf"))) == 1


def test_paths_of_the_right_kind_pass(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tokenizer.model").write_text("x")
    (tmp_path / "ckpt" / "model.safetensors").write_text("x")
    (tmp_path / "train.json").write_text("[]")
    exp = {"experiment_name": "kinds", "base_config": LORA_1B,
           "controls": {"tokenizer.path": str(tmp_path / "ckpt" / "tokenizer.model"),
                        "checkpoint_dir": str(tmp_path / "ckpt"),
                        "dataset": {**JSON_DATASET, "data_files": str(tmp_path / "train.json")}}}
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    assert result.ok and result.warnings == []


# ----------------------------------------------------------------------------- **kwargs forwarded to a known callee


def test_wandb_logger_kwargs_are_checked_against_wandb_init(tmp_path):
    pytest.importorskip("wandb")
    logger = "torchtune.training.metric_logging.WandBLogger"
    exp = {"experiment_name": "wandb", "base_config": LORA_1B,
           "controls": {"metric_logger": {"_component_": logger, "project": "p", "projet": "p"}}}
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    assert _messages(result, "metric_logger", warning=False) == [
        f"{logger} does not accept argument 'projet'. Did you mean 'project'?"]

    exp["controls"]["metric_logger"] = {"_component_": logger, "project": "p", "job_type": "sft", "dir": "${output_dir}"}
    assert generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False).problems == []


def test_keys_under_a_wandb_logger_need_no_plus_and_typos_are_caught(tmp_path):
    pytest.importorskip("wandb")
    shipped = (registry.configs_dir() / f"{LORA_1B}.yaml").read_text()
    base = tmp_path / "base.yaml"
    base.write_text(shipped.replace("_component_: torchtune.training.metric_logging.DiskLogger",
                                    "_component_: torchtune.training.metric_logging.WandBLogger"))
    exp = {"experiment_name": "wb", "base_config_file": str(base), "recipe": "lora_finetune_single_device",
           "controls": {"metric_logger.job_type": "sft"}}
    assert generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False).problems == []
    exp["controls"] = {"metric_logger.projet": "p"}
    with pytest.raises(UnknownKeyError, match="Did you mean 'metric_logger.project'"):
        generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)


def test_loggers_whose_callee_is_unknown_or_absent_accept_any_name():
    # TensorBoardLogger drops its **kwargs; CometLogger's go to comet_ml, which is not installed here
    assert accepted_args("torchtune.training.metric_logging.TensorBoardLogger") is None
    if sys.modules.get("comet_ml") is None and not _installed("comet_ml"):
        assert accepted_args("torchtune.training.metric_logging.CometLogger") is None
    assert "tracking_uri" in accepted_args("torchtune.training.metric_logging.MLFlowLogger")  # no **kwargs


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------- dataset builder config fields


def test_load_dataset_config_fields_are_accepted_without_plus(tmp_path):
    (tmp_path / "nested.json").write_text('{"data": [{"instruction": "a", "input": "", "output": "b"}]}')
    exp = {"experiment_name": "field", "base_config": LORA_1B,
           "controls": {"dataset.source": "json", "dataset.data_files": str(tmp_path / "nested.json"),
                        "dataset.field": "data", "dataset.split": "train"}}
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    assert result.problems == [] and result.runs[0].plain["dataset"]["field"] == "data"
    csv = {"experiment_name": "csv", "base_config": LORA_1B,
           "controls": {"dataset": {**JSON_DATASET, "source": "csv", "delimiter": ";", "column_names": ["a", "b"]}}}
    assert generate_configs(csv, output_dir=tmp_path / "out", write=False, strict=False).problems == []

    import datasets  # and `field` really is what the JSON builder reads

    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "nested.json"), field="data", split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert loaded[0]["output"] == "b"


def test_dataset_kwarg_typos_are_still_caught(tmp_path):
    exp = {"experiment_name": "typo", "base_config": LORA_1B, "controls": {"dataset.data_filez": "x.json"}}
    with pytest.raises(UnknownKeyError, match="dataset.data_files"):
        generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    exp["controls"] = {"+dataset.data_filez": "x.json"}
    result = generate_configs(exp, output_dir=tmp_path / "out", write=False, strict=False)
    assert _messages(result, "dataset", warning=False) == [
        "torchtune.datasets.alpaca_cleaned_dataset does not accept argument 'data_filez'. Did you mean 'data_files'?"]


# ----------------------------------------------------------------------------- components of missing optional packages

VISION = textwrap.dedent("""
    import json, sys
    from torchtune_config_writer import generate_configs
    r = generate_configs({"experiment_name": "v", "base_config": "llama3_2_vision/11B_lora_single_device"},
                         output_dir=sys.argv[1], write=False, strict=False)
    print(json.dumps([f"{p.key}: {p.message}" for p in r.problems]))
""")


def test_a_missing_optional_package_is_named_and_never_cached(tmp_path):
    assert not _installed("torchvision"), "this test needs torchvision not installed"
    cache = tmp_path / "cache"
    env = dict(os.environ, TORCHTUNE_CONFIG_WRITER_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", VISION, str(tmp_path / "out")], capture_output=True, text=True,
                         env=env, check=True)
    problems = json.loads(out.stdout.strip().splitlines()[-1])
    model = "torchtune.models.llama3_2_vision.lora_llama3_2_vision_11b"
    assert (f"model: cannot import component '{model}': 'torchtune.models.llama3_2_vision' needs the package "
            "'torchvision', which is not installed here (pip install torchvision, or choose another component)") in problems
    (stored,) = cache.iterdir()
    keys = json.loads(stored.read_text())
    assert keys and any("torch.optim.AdamW" in k for k in keys)  # the cache is written ...
    assert not any("llama3_2_vision" in k for k in keys)  # ... but not with what the missing package spoiled


def test_a_missing_top_level_package_says_how_to_install_it():
    assert not _installed("bitsandbytes"), "this test needs bitsandbytes not installed"
    assert import_error_message("bitsandbytes.optim.PagedAdamW8bit") == (
        "cannot import component 'bitsandbytes.optim.PagedAdamW8bit': module 'bitsandbytes' is not installed "
        "here (pip install bitsandbytes, or choose another component)")
    # a typo in an installed package is still a typo, with the closest name
    assert import_error_message("torch.optim.AdamWW").endswith("Did you mean 'torch.optim.AdamW'?")


def test_cached_skips_storing_what_said_dont_store():
    calls = []

    def spoiled() -> int:
        calls.append("inner")
        sigcache.dont_store()
        return 1

    def outer() -> int:
        calls.append("outer")
        return sigcache.cached("test", ("inner",), spoiled) + 1

    assert sigcache.cached("test", ("outer",), outer) == 2
    assert sigcache.cached("test", ("outer",), outer) == 2
    assert calls == ["outer", "inner"] * 2  # neither answer was kept: the outer one includes the inner one
    assert sigcache.cached("test", ("kept",), lambda: 3) == 3
    assert sigcache.cached("test", ("kept",), lambda: 4) == 3  # an answer nobody spoiled is kept


# ----------------------------------------------------------------------------- identical runs


def _sweep(variables: dict) -> dict:
    return {"experiment_name": "same", "base_config": LORA_1B, "variables": variables}


def test_zero_and_zero_point_zero_are_one_value(tmp_path):
    with pytest.raises(SweepError) as err:
        generate_configs(_sweep({"optimizer.weight_decay": [0, 0.0]}), write=False, validate=False)
    assert str(err.value) == ("experiment (variables): optimizer.weight_decay lists 0.0 twice (items 0 and 1), which "
                              "would make identical runs; remove one (0 and 0.0 are the same number)")


def test_a_float_written_twice_gets_the_general_note_and_a_string_none():
    with pytest.raises(SweepError) as err:
        generate_configs(_sweep({"lr": [1e-4, 0.0001]}), write=False, validate=False)
    assert str(err.value).endswith("lr lists 0.0001 twice (items 0 and 1), which would make identical runs; remove one "
                                   "(if written differently: 1e-4 and 0.0001 are the same number)")
    with pytest.raises(SweepError) as err:
        generate_configs(_sweep({"dtype": ["bf16", "fp32", "bf16"]}), write=False, validate=False)
    assert str(err.value).endswith("dtype lists 'bf16' twice (items 0 and 2), which would make identical runs; remove one")


def test_a_repeated_zip_point_is_refused_where_it_is_written(tmp_path):
    exp = {"experiment_name": "z", "base_config": LORA_1B, "zip": [{"lr": [1e-4, 2e-4, 1e-4], "lora_rank": [8, 16, 8]}]}
    with pytest.raises(SweepError, match=r"zip group 0 repeats its point 0 at position 2 \(lr=0.0001, lora_rank=8\)"):
        generate_configs(exp, write=False, validate=False)


def test_different_values_and_bools_are_not_identical():
    result = generate_configs(_sweep({"optimizer.weight_decay": [0, 0.5], "compile": [True, 1]}),
                              write=False, validate=False)
    assert len(result.runs) == 4
