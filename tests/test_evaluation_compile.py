"""The compile side of evaluation and tracking: the configs under eval/, their checks, the tracking logger."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from torchtune_config_writer import expdir
from torchtune_config_writer.compile.compiler import generate_configs
from torchtune_config_writer.compile.evaluation import plain_model, saved_files
from torchtune_config_writer.compile.tracking import absolute_uri
from torchtune_config_writer.errors import ExperimentSchemaError, SweepError, TorchtuneValidationError

TASK_YAML = "task: count_mc\ndataset_path: json\noutput_type: multiple_choice\n"
INSPECT_TASK = "from inspect_ai import task\n\n@task\ndef count():\n    pass\n"


def _experiment(tmp_path: Path, tiny_assets, body: str, name: str = "experiment.yaml") -> Path:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "count_mc.yaml").write_text(TASK_YAML)
    (tmp_path / "evals").mkdir(exist_ok=True)
    (tmp_path / "evals" / "count.py").write_text(INSPECT_TASK)
    path = tmp_path / name
    path.write_text(f"experiment_name: evc\nbase_config_file: {tiny_assets.base_config}\n"
                    "recipe: lora_finetune_single_device\nvariables:\n  optimizer.lr: [1.0e-3, 3.0e-3]\n" + body)
    return path


EVAL = """evaluation:
  epochs: {epochs}
  heldout:
    data_files: {data}
  lm_eval:
    tasks: [count_mc]
    include_path: tasks
"""


def test_every_run_epoch_and_evaluator_gets_a_config_listed_in_run_mapping(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "controls:\n  epochs: 2\n" + EVAL.format(epochs="all", data=tiny_assets.data_file))
    generate_configs(exp, tmp_path / "out")
    mapping = expdir.load_mapping(tmp_path / "out")
    run = mapping.runs[1]
    assert [e.name for e in run.evaluations] == ["heldout@epoch_0", "lm_eval@epoch_0", "heldout@epoch_1", "lm_eval@epoch_1"]
    for entry in run.evaluations:
        cfg = yaml.safe_load((tmp_path / "out" / entry.config).read_text())
        assert cfg["evaluator"] == entry.evaluator and cfg["epoch"] == entry.epoch
        assert cfg["result_file"] == entry.result and entry.result.startswith(run.output_dir)
        # LoRA runs are evaluated on their merged weights: the plain builder, without LoRA arguments
        assert cfg["model"]["_component_"] == "torchtune.models.llama2.llama2"
        assert "lora_rank" not in cfg["model"] and cfg["model"]["num_layers"] == 2
        assert cfg["checkpointer"]["checkpoint_dir"] == f"{run.output_dir}/epoch_{entry.epoch}"
        assert cfg["checkpointer"]["checkpoint_files"] == ["model-00001-of-00001.bin"]
        assert cfg["checkpointer"]["output_dir"] != run.output_dir  # never writes into the run's own folder
        assert expdir.config_file(run.run_id) != entry.config
        assert entry.config_sha256 == expdir.hashlib.sha256((tmp_path / "out" / entry.config).read_bytes()).hexdigest()
    heldout = yaml.safe_load((tmp_path / "out" / run.evaluations[0].config).read_text())
    assert heldout["dataset"]["data_files"] == str(tiny_assets.data_file)
    assert heldout["dataset"]["packed"] is False and heldout["dataset"]["_component_"].endswith("alpaca_dataset")
    lm = yaml.safe_load((tmp_path / "out" / run.evaluations[1].config).read_text())
    assert lm["include_path"] == str(tmp_path / "tasks") and lm["tasks"] == ["count_mc"] and lm["max_seq_length"] == 256


def test_last_epoch_follows_each_runs_epochs(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "zip:\n  - {epochs: [1, 3]}\n".replace("zip", "derived").replace(
        "- {epochs: [1, 3]}", "epochs: \"{{ 1 if optimizer.lr < 0.002 else 3 }}\"") + EVAL.format(epochs="last", data=tiny_assets.data_file))
    generate_configs(exp, tmp_path / "out")
    runs = expdir.load_mapping(tmp_path / "out").runs
    assert [e.epoch for e in runs[0].evaluations] == [0, 0]
    assert [e.epoch for e in runs[1].evaluations] == [2, 2]


def test_an_epoch_the_run_never_saves_fails_that_run(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, EVAL.format(epochs="[0, 1]", data=tiny_assets.data_file))
    with pytest.raises(TorchtuneValidationError) as e:
        generate_configs(exp, tmp_path / "out")
    assert "evaluation.epochs: lists epoch 1, but this run trains 1 epoch(s), saving epoch_0" in str(e.value)


def test_adapter_only_lora_run_is_an_error_with_the_fix(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "controls:\n  save_adapter_weights_only: true\n"
                      + EVAL.format(epochs="last", data=tiny_assets.data_file))
    with pytest.raises(TorchtuneValidationError) as e:
        generate_configs(exp, tmp_path / "out", write=False)
    assert "saves adapter weights only; add save_adapter_weights_only: False" in str(e.value)
    assert str(e.value).count("saves adapter weights only") == 2  # once per run


def test_inspect_needs_hugging_face_weights(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "evaluation:\n  inspect:\n    tasks: [evals/count.py@count]\n")
    with pytest.raises(TorchtuneValidationError) as e:
        generate_configs(exp, tmp_path / "out", write=False)
    assert "inspect-ai loads weights in Hugging Face format" in str(e.value)
    assert "FullModelHFCheckpointer" in str(e.value)


@pytest.mark.parametrize("tasks, message", [
    ("[evals/count.py@cuont]", "defines no function 'cuont'. Did you mean 'count'?"),
    ("[evals/missing.py@count]", "does not exist"),
    ("[count]", "is not file.py@task"),
])
def test_inspect_task_mistakes_are_caught_at_their_line(tmp_path, tiny_assets, tasks, message):
    exp = _experiment(tmp_path, tiny_assets, f"evaluation:\n  inspect:\n    tasks: {tasks}\n")
    with pytest.raises(ExperimentSchemaError) as e:
        generate_configs(exp, tmp_path / "out", write=False)
    assert message in str(e.value) and "experiment.yaml:" in str(e.value)


def test_missing_include_path_is_refused_and_a_task_typo_warned(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "evaluation:\n  lm_eval:\n    tasks: [count_mc]\n    include_path: taks\n")
    with pytest.raises(ExperimentSchemaError, match=r"experiment.yaml:\d+ .*'.*taks' is not a folder"):
        generate_configs(exp, tmp_path / "out", write=False)
    exp = _experiment(tmp_path, tiny_assets, "evaluation:\n  lm_eval:\n    tasks: [count_mcc]\n    include_path: tasks\n",
                      name="e2.yaml")
    result = generate_configs(exp, tmp_path / "out2", write=False)
    assert any("'count_mcc' is not a task under" in w.message and "Did you mean 'count_mc'?" in w.message
               for w in result.warnings)


def test_unknown_evaluation_key_gets_did_you_mean(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "evaluation:\n  heldout:\n    data_file: x.json\n")
    with pytest.raises(ExperimentSchemaError, match="Did you mean 'data_files'"):
        generate_configs(exp, tmp_path / "out", write=False)


def test_plain_model_and_saved_files():
    assert plain_model({"_component_": "torchtune.models.llama3_2.lora_llama3_2_1b", "lora_rank": 8,
                        "lora_attn_modules": ["q_proj"], "apply_lora_to_mlp": True})[0] == {
        "_component_": "torchtune.models.llama3_2.llama3_2_1b"}
    assert plain_model({"_component_": "torchtune.models.llama3.qlora_llama3_8b", "lora_rank": 8})[0] == {
        "_component_": "torchtune.models.llama3.llama3_8b"}
    assert saved_files({"_component_": "torchtune.training.FullModelHFCheckpointer",
                        "checkpoint_files": ["a.safetensors", "b.safetensors"]})[0] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert saved_files({"_component_": "torchtune.training.FullModelHFCheckpointer",
                        "checkpoint_files": {"filename_format": "model-{}-of-{}.safetensors", "max_filename": "00004"},
                        "safe_serialization": False})[0][-1] == "model-00004-of-00004.bin"
    files, why = saved_files({"_component_": "torchtune.training.DistributedCheckpointer"})
    assert files == [] and "FullModelHFCheckpointer" in why


# ----------------------------------------------------------------------------- tracking


def test_mlflow_tracking_sets_every_runs_logger_and_name(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "run_name: \"lr{{ optimizer.lr }}\"\ntracking:\n  backend: mlflow\n"
                      "  tracking_uri: sqlite:///store/mlflow.db\n  run_name: \"{{ run_name }}-{{ run_id }}\"\n"
                      "  tags: {team: nlp}\n")
    generate_configs(exp, tmp_path / "out")
    mapping = expdir.load_mapping(tmp_path / "out")
    assert mapping.tracking == expdir.TrackingPlan(backend="mlflow", experiment="evc",
                                                   tracking_uri=f"sqlite:///{tmp_path}/store/mlflow.db",
                                                   tags={"team": "nlp"})
    assert [r.tracking_name for r in mapping.runs] == ["lr0.001-run_000", "lr0.003-run_001"]
    cfg = yaml.safe_load((tmp_path / "out" / mapping.runs[1].config).read_text())
    assert cfg["metric_logger"] == {"_component_": "torchtune.training.metric_logging.MLFlowLogger",
                                    "experiment_name": "evc", "tracking_uri": f"sqlite:///{tmp_path}/store/mlflow.db",
                                    "run_name": "lr0.003-run_001"}
    assert mapping.runs[1].metric_log is None  # no DiskLogger any more


def test_wandb_tracking_needs_a_project_and_writes_offline_logger(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "tracking:\n  backend: wandb\n  mode: offline\n")
    with pytest.raises(ExperimentSchemaError, match="wandb needs a project"):
        generate_configs(exp, tmp_path / "out", write=False)
    exp = _experiment(tmp_path, tiny_assets, "tracking:\n  backend: wandb\n  project: p\n  mode: offline\n", name="w.yaml")
    result = generate_configs(exp, tmp_path / "out", write=False)
    logger = result.runs[0].plain["metric_logger"]
    assert logger["_component_"].endswith("WandBLogger") and logger["mode"] == "offline"
    assert logger["project"] == "p" and logger["group"] == "evc" and logger["name"] == "run_000"
    assert "log_dir" not in logger and "tags" not in logger  # the runner sets them per attempt, through the environment


def test_tracking_and_a_metric_logger_control_conflict(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, "controls:\n  metric_logger:\n    _component_: "
                      "torchtune.training.metric_logging.StdoutLogger\ntracking:\n  backend: mlflow\n")
    with pytest.raises(SweepError, match="metric_logger is set by the tracking: section"):
        generate_configs(exp, tmp_path / "out", write=False)


def test_absolute_uri():
    assert absolute_uri("sqlite:///a/b.db", Path("/base")) == "sqlite:////base/a/b.db"
    assert absolute_uri("sqlite:////abs.db", Path("/base")) == "sqlite:////abs.db"
    assert absolute_uri("file:mlruns", Path("/base")) == "file:/base/mlruns"
    assert absolute_uri("https://mlflow.example.org", Path("/base")) == "https://mlflow.example.org"


# ----------------------------------------------------------------------------- provenance


def test_git_commit_of_the_experiment_files_repository_is_recorded(tmp_path, tiny_assets):
    repo = tmp_path / "repo"
    repo.mkdir()
    exp = _experiment(repo, tiny_assets, "")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "experiment.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    generate_configs(exp, tmp_path / "out")
    info = expdir.load_mapping(tmp_path / "out").git
    assert info is not None and info.commit == head and info.dirty is False
    assert Path(info.root).resolve() == repo.resolve()
    outside = _experiment(tmp_path / "plain", tiny_assets, "") if (tmp_path / "plain").mkdir() is None else None
    generate_configs(outside, tmp_path / "out2")
    assert expdir.load_mapping(tmp_path / "out2").git is None


def test_evaluation_slurm_resources_go_to_the_eval_script_only(tmp_path, tiny_assets):
    exp = _experiment(tmp_path, tiny_assets, EVAL.format(epochs="last", data=tiny_assets.data_file)
                      + "  slurm: {time: \"00:30:00\", gpus_per_run: 1}\nslurm:\n  time: \"04:00:00\"\n")
    generate_configs(exp, tmp_path / "out")
    mapping = expdir.load_mapping(tmp_path / "out")
    assert mapping.evaluation.slurm == {"time": "00:30:00", "gpus_per_run": 1}  # 1 is asked for although the default
    [group] = expdir.script_groups(mapping, evaluation=True)
    assert (group.script, group.resources.time, group.resources.gpus_per_run) == ("eval.sbatch", "00:30:00", 1)
    assert mapping.slurm.gpus_per_run == 0 and mapping.slurm.time == "04:00:00"  # training: CPU runs, 4 hours
    script = (tmp_path / "out" / "eval.sbatch").read_text()
    assert "--time=00:30:00" in script and "task --eval" in script
    assert "--time=04:00:00" in (tmp_path / "out" / "submit.sbatch").read_text()


def test_the_demo_study_validates_with_every_input_present(tiny_assets, tmp_path):
    result = generate_configs(tiny_assets.count_study, output_dir=tmp_path / "o")
    assert result.ok and result.warnings == []
    assert [len(v) for v in result.evaluations.values()] == [2, 2, 2, 2]
    # epochs: last follows each run's own epochs (2 or 6)
    assert sorted({e.entry.epoch for v in result.evaluations.values() for e in v}) == [1, 5]
