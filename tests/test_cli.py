"""The CLI: every user mistake is one clear message on stderr, exit code 1, no traceback, nothing written."""

import subprocess
import sys

import pytest

from helpers import LORA_1B, write_experiment


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "torchtune_config_writer", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_generate_prints_each_config_and_a_summary(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: ok\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: [8, 16]\n  lr: [1e-4]\n")
    res = cli("generate", path, "--output-dir", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "Generated 2 combinations = 2 runs" in res.stdout
    table = [line.split() for line in res.stdout.splitlines() if line.lstrip().startswith(("RUN", "- "))]
    # MEM: each run's estimated peak GPU memory (Appendix H)
    assert [row[:-2] for row in table[1:]] == [["-", "run_000", "8", "0.0001"], ["-", "run_001", "16", "0.0001"]]
    assert table[0] == ["RUN", "lora_rank", "lr", "MEM"] and all(row[-1] == "GiB" for row in table[1:])
    assert "largest, run_001:" in res.stdout
    assert "Validated 2 configs: all passed" in res.stdout
    assert res.stderr == ""  # torchao's import warning is silenced
    assert (tmp_path / "out" / "configs" / "run_001.yaml").is_file()


def test_validate_writes_nothing(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: v\nbase_config: {LORA_1B}\noutput:\n  experiment_dir: out\n")
    res = cli("validate", path, cwd=tmp_path)
    assert res.returncode == 0 and "nothing written" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.yaml"]


CASES = {
    "unknown_key": (f"experiment_name: e\nbase_config: {LORA_1B}\ncontrols:\n  epoch: 2\n", "experiment.yaml:4 (controls): unknown key 'epoch'", "Did you mean 'epochs'"),
    "typo_nested": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  model.lora_rnak: [8]\n", "unknown key 'model.lora_rnak'", "'model.lora_rank'"),
    "ambiguous": ("experiment_name: e\nbase_config: llama3_2/1B_lora_single_device\ncontrols:\n  _component_: x\n", "unknown key '_component_'", "'+_component_'"),
    "bad_base": ("experiment_name: e\nbase_config: llama3_2/1B_lora_singel_device\n", "is not a torchtune config", "llama3_2/1B_lora_single_device"),
    "missing_file": ("experiment_name: e\nbase_config_file: nope.yaml\nrecipe: lora_finetune_single_device\n", "base_config_file", "not found"),
    "bad_recipe": ("experiment_name: e\nbase_config_file: base.yaml\nrecipe: lora_finetune_singledevice\n", "is not a torchtune recipe", "lora_finetune_single_device"),
    "both_bases": (f"experiment_name: e\nbase_config: {LORA_1B}\nbase_config_file: x.yaml\nrecipe: r\n", "not both", "base_config"),
    "schema": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariabels: {{}}\n", "experiment.yaml:3: unknown key 'variabels'", "Did you mean 'variables'"),
    "empty_var": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: []\n", "experiment.yaml:4", "has no values"),
    "yaml": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariables: [\n", "invalid YAML", "experiment.yaml:4:1"),
    "duplicate": (f"experiment_name: e\nbase_config: {LORA_1B}\nexperiment_name: f\n", "duplicate key", "experiment.yaml:3"),
    "type": (f"experiment_name: e\nbase_config: {LORA_1B}\ncontrols:\n  model: 8\n", "'model'", "mapping"),
    "conflict": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lr: [1e-4]\ncontrols:\n  learning_rate: 1e-3\n", "both a variable", "optimizer.lr"),
    "output_dir": (f"experiment_name: e\nbase_config: {LORA_1B}\ncontrols:\n  output_dir: /tmp/x\n", "output.runs_dir", "controls"),
    "identical": (f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lr: [1e-4, 0.0001]\n", "identical runs", "lists 0.0001 twice (items 0 and 1)"),
    "framework": (f"experiment_name: e\nframework: axolotl\nbase_config: {LORA_1B}\n", "framework 'axolotl' is not supported", "torchtune"),
    "validation": (f"experiment_name: e\nbase_config: {LORA_1B}\ncontrols:\n  dtype: bf17\n", "run_000: dtype", "Did you mean 'bf16'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_errors_are_clean(tmp_path, name):
    body, *fragments = CASES[name]
    path = write_experiment(tmp_path, body)
    (tmp_path / "base.yaml").write_text("epochs: 1\n")
    res = cli("generate", path, "--output-dir", tmp_path / "out")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.startswith("Error: ")
    for fragment in fragments:
        assert fragment in res.stderr
    if name == "validation":  # the configs are written so they can be inspected, marked failed
        assert "FAIL run_000" in (tmp_path / "out" / "validation_report.txt").read_text()
    else:
        assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_experiment_file_and_existing_dir(tmp_path):
    res = cli("generate", tmp_path / "nope.yaml")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    path = write_experiment(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    res = cli("generate", path, "--output-dir", tmp_path / "out")
    assert res.returncode == 1 and "already exists and is not empty" in res.stderr and "--force" in res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_no_validate_flag(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\ncontrols:\n  dtype: bf17\n")
    res = cli("generate", path, "-o", tmp_path / "out", "--no-validate")
    assert res.returncode == 0 and "Validation skipped" in res.stdout


def test_ls_unknown_pattern():
    res = cli("ls", "nothing-like-this")
    assert res.returncode == 1 and res.stderr.startswith("Error: nothing matches")
