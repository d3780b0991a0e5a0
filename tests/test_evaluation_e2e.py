"""Evaluation end to end: generate -> run (train, then evaluate each run) -> collect, with real torchtune and lm-eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from torchtune_config_writer import expdir
from torchtune_config_writer.compile.compiler import generate_configs
from torchtune_config_writer.execute.runner import run_eval_one, run_experiment
from torchtune_config_writer.errors import RunNotRunnableError
from torchtune_config_writer.results.collect import collect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_assets):
    """Two tiny LoRA runs on the counting task and a third whose training fails, each evaluated after it trains."""
    from torchtune_config_writer.demo.evaltask import build_eval_task

    root = tmp_path_factory.mktemp("e2e")
    task = build_eval_task(root)
    exp = root / "experiment.yaml"
    exp.write_text(f"""experiment_name: e2e
base_config_file: {tiny_assets.base_config}
recipe: lora_finetune_single_device
zip:
  - optimizer.lr: [1.0e-3, 3.0e-3, 3.0e-3]
    dataset.data_files: ["{task.train}", "{task.train}", "{root / 'missing.json'}"]
controls:
  max_steps_per_epoch: 3
evaluation:
  heldout:
    data_files: {task.heldout}
    limit: 20
  lm_eval:
    tasks: [{task.lm_eval_task_name}]
    include_path: {task.lm_eval_include}
    limit: 10
""")
    generate_configs(exp, root / "out")
    lines: list[str] = []
    summary = run_experiment(root / "out", echo=lines.append)
    return root / "out", summary, lines


def test_each_completed_run_is_evaluated_and_a_failed_one_says_why(evaluated):
    out, summary, lines = evaluated
    assert summary.completed == ["run_000", "run_001"] and summary.failed == ["run_002"]
    assert summary.evaluated == ["run_000", "run_001"] and summary.eval_failed == []
    assert summary.exit_code == 1  # a run failed
    assert any("run_002 failed" in ln and "not evaluated (its training did not complete)" in ln for ln in lines)
    # the evaluation of run_000 comes before the training of run_001
    assert lines.index(next(ln for ln in lines if "run_000 evaluated" in ln)) < \
        lines.index(next(ln for ln in lines if "started run_001" in ln))
    mapping = expdir.load_mapping(out)
    for run in mapping.runs[:2]:
        record = expdir.read_status(out, run.run_id, evaluation=True)
        assert record.state == expdir.State.COMPLETED and record.log == f"logs/{run.run_id}.eval.log"
        assert set(record.evaluations) == {"heldout@epoch_0", "lm_eval@epoch_0"}
        assert all(e["state"] == "completed" for e in record.evaluations.values())
        heldout = expdir.read_eval_result(run.evaluations[0].result)
        assert heldout is not None and 0 < heldout.metrics["heldout_loss"] < 20
        lm = expdir.read_eval_result(run.evaluations[1].result)
        assert lm is not None and 0 <= lm.metrics["count_mc/acc"] <= 1
    assert expdir.read_status(out, "run_002", evaluation=True).state == expdir.State.PENDING


def test_metadata_json_records_the_run(evaluated):
    out, _, _ = evaluated
    run = expdir.load_mapping(out).runs[0]
    data = json.loads((Path(run.output_dir) / expdir.METADATA_FILE).read_text())
    record = expdir.read_status(out, run.run_id)
    assert data["run_id"] == "run_000" and data["state"] == "completed" and data["ended"] == record.ended
    assert data["config_sha256"] == run.config_sha256 and data["recipe"] == "lora_finetune_single_device"
    assert data["versions"]["torchtune"] == "0.6.1" and data["duration_s"] == record.wall_seconds()
    assert data["parameters"] == run.parameters and data["gpus"] is None


def test_collect_brings_the_scores_into_the_table(evaluated):
    out, _, _ = evaluated
    collect(out)
    rows = list(csv.DictReader((out / expdir.RESULTS_CSV).open()))
    assert {"eval", "heldout_loss", "count_mc/acc"} <= set(rows[0])
    assert [r["eval"] for r in rows][:2] == ["completed", "completed"]
    assert all(float(r["heldout_loss"]) > 0 for r in rows[:2]) and rows[2]["heldout_loss"] == ""
    md = (out / expdir.RESULTS_MD).read_text()
    assert "Primary metric: **heldout_loss ↓**" in md
    assert (out / expdir.METRIC_PLOT).read_text().startswith("<svg")


def test_eval_only_skips_what_is_evaluated_and_explains_the_rest(evaluated):
    out, _, _ = evaluated
    lines: list[str] = []
    summary = run_experiment(out, eval_only=True, echo=lines.append)
    assert summary.total == 0 and summary.exit_code == 0
    assert "skip run_000: already evaluated (--force evaluates it again)" in lines
    assert any(ln.startswith("skip run_002: is not evaluated: its training failed") for ln in lines)
    with pytest.raises(RunNotRunnableError, match="its training failed .*completed training run"):
        run_eval_one(out, 2)


def test_eval_only_force_evaluates_again_in_one_process_per_run(evaluated):
    out, _, _ = evaluated
    run = expdir.load_mapping(out).runs[0]
    before = Path(run.evaluations[0].result).stat().st_mtime_ns
    assert run_eval_one(out, 0, force=True) == 0
    assert Path(run.evaluations[0].result).stat().st_mtime_ns > before
    log = (out / "logs" / "run_000.eval.log").read_text()
    assert "torchtune_config_writer.evaluate" in log and log.count("# completed with exit code 0") == 1


def test_hugging_face_format_runs_are_evaluated_by_inspect_and_lm_eval(tmp_path, tiny_assets):
    """generate writes the inspect and lm-eval configs of a LoRA run saved in HF format; both evaluate its epoch."""
    from torchtune_config_writer.demo.assets import MODEL_DIMS, VOCAB_SIZE
    from torchtune_config_writer.demo.evaltask import build_eval_task, build_hf_checkpoint

    task = build_eval_task(tmp_path / "task")
    hf = build_hf_checkpoint(tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file, tiny_assets.tokenizer,
                             tmp_path / "hf", vocab_size=VOCAB_SIZE, dims=MODEL_DIMS)
    exp = tmp_path / "experiment.yaml"
    exp.write_text(f"""experiment_name: hf_eval
base_config_file: {tiny_assets.base_config}
recipe: lora_finetune_single_device
variables:
  optimizer.lr: [3.0e-3]
controls:
  max_steps_per_epoch: 2
  dataset.data_files: {task.train}
  checkpointer:
    _component_: torchtune.training.FullModelHFCheckpointer
    checkpoint_dir: {hf}
    checkpoint_files: [model.safetensors]
    output_dir: ${{output_dir}}
    model_type: LLAMA2
evaluation:
  lm_eval:
    tasks: [count_mc]
    include_path: {task.lm_eval_include}
    limit: 4
  inspect:
    tasks: ["{task.inspect_task_spec}"]
    limit: 4
""")
    generate_configs(exp, tmp_path / "out")
    summary = run_experiment(tmp_path / "out", echo=lambda line: None)
    assert summary.completed == ["run_000"] and summary.evaluated == ["run_000"], summary
    run = expdir.load_mapping(tmp_path / "out").runs[0]
    lm, inspect = (expdir.read_eval_result(e.result) for e in run.evaluations)
    assert lm is not None and 0 <= lm.metrics["count_mc/acc"] <= 1
    assert lm.checkpoint == f"{run.output_dir}/epoch_0"
    assert inspect is not None and set(inspect.metrics) == {"count/accuracy"}
    assert inspect.details["samples"] == {"count": {"total": 4, "completed": 4}}


def test_a_tracked_run_and_its_evaluation_land_in_one_mlflow_run(tmp_path, tiny_assets, monkeypatch):
    """generate (tracking: mlflow, sqlite) -> run: torchtune logs the steps, the runner the variables and scores."""
    from mlflow.tracking import MlflowClient

    from torchtune_config_writer.demo.evaltask import build_eval_task

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    task = build_eval_task(tmp_path / "task")
    exp = tmp_path / "experiment.yaml"
    exp.write_text(f"""experiment_name: tracked
base_config_file: {tiny_assets.base_config}
recipe: lora_finetune_single_device
variables:
  optimizer.lr: [1.0e-3, 3.0e-3]
run_name: "lr{{{{ optimizer.lr }}}}"
controls:
  max_steps_per_epoch: 3
  dataset.data_files: {task.train}
evaluation:
  heldout:
    data_files: {task.heldout}
    limit: 8
tracking:
  backend: mlflow
  tracking_uri: sqlite:///store/mlflow.db
  tags: {{team: nlp}}
""")
    generate_configs(exp, tmp_path / "out")
    summary = run_experiment(tmp_path / "out", echo=lambda line: None)
    assert summary.evaluated == ["run_000", "run_001"]
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"lr0.001", "lr0.003"}  # one MLflow run per training, named as asked
    mapping = expdir.load_mapping(tmp_path / "out")
    for run in mapping.runs:
        record = expdir.read_status(tmp_path / "out", run.run_id)
        tracked = runs[run.tracking_name]
        assert tracked.info.run_id == record.tracking_run_id and tracked.info.status == "FINISHED"
        assert tracked.data.tags["optimizer.lr"] == str(run.parameters["optimizer.lr"])
        assert tracked.data.tags["team"] == "nlp"
        heldout = expdir.read_eval_result(run.evaluations[0].result)
        assert tracked.data.metrics["eval/heldout_loss"] == pytest.approx(heldout.metrics["heldout_loss"])
        assert [m.step for m in client.get_metric_history(tracked.info.run_id, "loss")] == [1, 2, 3]
    collect(tmp_path / "out")  # the training losses come back from MLflow: there is no DiskLogger log
    rows = list(csv.DictReader((tmp_path / "out" / expdir.RESULTS_CSV).open()))
    assert [r["steps"] for r in rows] == ["3", "3"] and all(float(r["final_loss"]) > 0 for r in rows)
    history = client.get_metric_history(runs["lr0.003"].info.run_id, "loss")
    assert float(rows[1]["final_loss"]) == pytest.approx(max(history, key=lambda m: m.step).value)
    assert "from each run's MLflow run" in (tmp_path / "out" / expdir.RESULTS_MD).read_text()
