"""SLURM evaluation arrays: eval.sbatch (compile/sbatch.py), the dependent submissions (execute/submit.py)
and the EVAL column (execute/slurm_state.py) — against a real single-node SLURM (no mocks).

Fast tests render scripts, print dry-run commands and merge states; ``slow`` ones start a real
munged/slurmctld/slurmd (tests/slurm_cluster.py), and the last one trains and evaluates the tiny model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from torchtune_config_writer import expdir
from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.errors import SlurmError
from torchtune_config_writer.execute import slurm_state, submit
from torchtune_config_writer.execute.slurm_state import EvalState, Submission, TaskState, merge_eval
from torchtune_config_writer.expdir import (
    EvalEntry, EvaluationPlan, Evaluator, JobRecord, SlurmPlan, SlurmState, State, StatusRecord, load_mapping,
    read_jobs, write_status,
)
from helpers import cli

SUBMITTED = "2026-01-01T00:00:00+00:00"


def record(exp: Path, run_id: str, state: str, *, evaluation: bool = False, **fields: Any) -> None:
    """Write a status record (an evaluation's with ``evaluation``) as the runner would."""
    write_status(exp, StatusRecord(run_id, State(state), **fields), evaluation=evaluation)


def arrays_of(lines: list[str]) -> list[tuple[str, str, str, str]]:
    """(script, --array, --dependency, offset) of each dry-run sbatch line."""
    out = []
    for line in lines:
        args = shlex.split(line)
        opts = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
        out.append((Path(args[-2]).name, opts["--array"], opts.get("--dependency", ""), args[-1]))
    return out


# ----------------------------------------------------------------------------- an evaluated experiment, by hand


def heldout_config(run: expdir.RunEntry, base: dict[str, Any], data_file: str) -> dict[str, Any]:
    """The held-out loss evaluation of a run's epoch 0, as the evaluation program reads it.

    The model is the run's LoRA builder made plain: a LoRA run saves merged weights in epoch_0/.
    """
    model = {k: v for k, v in base["model"].items() if not k.startswith(("lora_", "apply_lora"))}
    model["_component_"] = model["_component_"].replace(".lora_", ".")
    out = run.output_dir
    return {
        "evaluator": "heldout", "epoch": 0, "result_file": expdir.eval_result_file(out, 0, "heldout"),
        "run_id": run.run_id, "device": "cpu", "dtype": "fp32", "seed": 0,
        "model": model, "tokenizer": base["tokenizer"],
        "checkpointer": {"_component_": base["checkpointer"]["_component_"], "model_type": "LLAMA2",
                         "checkpoint_dir": f"{out}/epoch_0", "checkpoint_files": ["model-00001-of-00001.bin"],
                         "recipe_checkpoint": None, "output_dir": f"{out}/eval/epoch_0"},
        "dataset": {**base["dataset"], "data_files": data_file}, "loss": base["loss"],
        "batch_size": 4, "limit": 8,
    }


def add_evaluations(exp: Path, base_config: Path, *, evaluated: list[int] | None = None,
                    slurm: SlurmPlan | None = None, heldout: dict[int, str] | None = None) -> expdir.RunMapping:
    """Give the runs of a hand-made experiment directory a held-out evaluation each (``evaluated``: only
    these indices), through the contract: eval configs, ``RunEntry.evaluations``, ``evaluation:``.

    ``heldout`` maps an index to the held-out data file of its evaluation (default: the base config's).
    """
    mapping = load_mapping(exp)
    base = yaml.safe_load(base_config.read_text())
    runs = []
    for run in mapping.runs:
        if evaluated is not None and run.index not in evaluated:
            runs.append(run)
            continue
        rel = expdir.eval_config_file(run.run_id, 0, "heldout")
        path = exp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        config = heldout_config(run, base, (heldout or {}).get(run.index, base["dataset"]["data_files"]))
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        entry = EvalEntry(Evaluator.HELDOUT, 0, rel, config["result_file"], hashlib.sha256(path.read_bytes()).hexdigest())
        runs.append(dataclasses.replace(run, evaluations=(entry,)))
    mapping = dataclasses.replace(mapping, runs=tuple(runs), evaluation=EvaluationPlan(slurm=_set_fields(slurm)))
    expdir.write_mapping(exp, mapping)
    return mapping


def _set_fields(plan: SlurmPlan | None) -> dict:
    """The fields of ``plan`` that differ from SlurmPlan's defaults: what evaluation.slurm would name."""
    if plan is None:
        return {}
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(SlurmPlan)
            if getattr(plan, f.name) != getattr(SlurmPlan(), f.name)}


@pytest.fixture
def evaluated_dir(make_experiment_dir, tiny_assets):
    """An experiment directory written by hand whose runs are evaluated, with its submit and eval scripts."""
    def make(n: int, settings: SlurmSettings | None = None, *, evaluated: list[int] | None = None,
             eval_slurm: SlurmPlan | None = None, runs: list[dict] | None = None,
             heldout: dict[int, str] | None = None, **kwargs: Any) -> Path:
        settings = settings or SlurmSettings(gpus_per_run=0)
        exp = make_experiment_dir(runs or [{"optimizer.lr": 1e-3 * (i + 1)} for i in range(n)],
                                  slurm=sbatch.plan_resources(settings, [("run_000", "cpu", None)])[0], **kwargs)
        mapping = add_evaluations(exp, tiny_assets.base_config, evaluated=evaluated, slurm=eval_slurm,
                                  heldout=heldout)
        sbatch.write_submit_scripts(exp, mapping, settings)
        return exp
    return make


# ----------------------------------------------------------------------------- eval.sbatch


def test_eval_scripts_are_written_beside_the_submit_scripts(evaluated_dir) -> None:
    settings = SlurmSettings(gpus_per_run=0, job_name="tiny", time="1:00:00", max_concurrent=2)
    exp = evaluated_dir(3, settings, eval_slurm=SlurmPlan(gpus_per_run=2, time="0:20:00"))
    train, evaluate = (exp / expdir.SCRIPT_FILE).read_text(), (exp / expdir.EVAL_SCRIPT_FILE).read_text()
    sbatch_lines = [ln for ln in evaluate.splitlines() if ln.startswith("#SBATCH")]
    # The evaluation's own resources where evaluation.slurm sets them, the training's elsewhere.
    assert sbatch_lines == ["#SBATCH --job-name=tiny-eval", "#SBATCH --array=0-2%2", "#SBATCH --output=logs/%A_%a.out",
                            "#SBATCH --nodes=1", "#SBATCH --time=0:20:00", "#SBATCH --gres=gpu:2"]
    assert "#SBATCH --job-name=tiny\n" in train and "--gres" not in train
    assert 'task --eval "$EXP_DIR" "$INDEX"' in evaluate and "task --eval" not in train
    # Same setup and safety checks as the training script.
    for line in ("source ", "offset must be a number", "not an experiment directory", "set -eo pipefail"):
        assert (line in train) == (line in evaluate), line
    assert str(exp) not in evaluate  # written into a temporary directory renamed into place


def test_no_eval_script_without_evaluations(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}], slurm=SlurmPlan(gpus_per_run=0))
    paths = sbatch.write_submit_scripts(exp, load_mapping(exp), SlurmSettings(gpus_per_run=0))
    assert [p.name for p in paths] == ["submit.sbatch"] and not (exp / expdir.EVAL_SCRIPT_FILE).exists()


def test_eval_script_runs_task_eval_for_its_index(evaluated_dir, tmp_path: Path) -> None:
    stub = tmp_path / "stubbin"
    stub.mkdir()
    # The setup puts a python3 first on PATH that records its argv instead of evaluating anything.
    (stub / "python3").write_text(f'#!/bin/bash\nprintf "%s\\0" "$@" > {shlex.quote(str(tmp_path / "argv"))}\nexit 5\n')
    (stub / "python3").chmod(0o755)
    settings = SlurmSettings(gpus_per_run=0, setup=[f"export PATH={shlex.quote(str(stub))}:$PATH"])
    exp = evaluated_dir(9, settings)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "99"}
    proc = subprocess.run(["bash", str(exp / expdir.EVAL_SCRIPT_FILE), "4"], cwd=exp, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr  # the stub's code: the script exec'd it
    assert (tmp_path / "argv").read_text().split("\0")[:-1] == [
        "-m", "torchtune_config_writer", "task", "--eval", str(exp), "7"]  # index = task 3 + offset 4
    assert "evaluation task 99_3 -> run index 7" in proc.stdout


def test_task_eval_refuses_a_run_that_has_not_trained(evaluated_dir) -> None:
    exp = evaluated_dir(2)
    result = cli("task", "--eval", str(exp), "1")
    assert result.exit_code == 1 and "run_001 is not evaluated: it has not been trained yet" in result.stderr
    assert not expdir.eval_status_path(exp, "run_001").exists()


# ----------------------------------------------------------------------------- dependent submissions (dry run)


def test_each_training_array_is_followed_by_its_evaluation_array(evaluated_dir) -> None:
    exp = evaluated_dir(5, SlurmSettings(gpus_per_run=0, max_array_size=3, max_concurrent=1))
    lines: list[str] = []
    arrays = submit.submit(exp, dry_run=True, echo=lines.append)
    assert arrays_of(lines) == [
        ("submit.sbatch", "0-2%1", "", "0"),
        ("eval.sbatch", "0-2%1", "aftercorr:<job id of training array 1>", "0"),
        ("submit.sbatch", "0-1%1", "afterany:<job id of the previous array>", "3"),
        # Task i of each evaluation array follows task i of its own training array; K holds across the
        # evaluation arrays, chained separately from the training ones.
        ("eval.sbatch", "0-1%1",
         "aftercorr:<job id of training array 2>,afterany:<job id of the previous evaluation array>", "3"),
    ]
    assert [a.kind for a in arrays] == ["train", "eval", "train", "eval"]
    assert all(("--kill-on-invalid-dep=yes" in a.command) == (a.kind == "eval") for a in arrays)
    assert [a.chunk.indices for a in arrays] == [(0, 1, 2), (0, 1, 2), (3, 4), (3, 4)]
    assert not (exp / expdir.JOBS_FILE).exists()


def test_only_evaluated_runs_get_evaluation_tasks_and_their_own_concurrency(evaluated_dir) -> None:
    exp = evaluated_dir(4, SlurmSettings(gpus_per_run=0, max_concurrent=1), evaluated=[1, 3],
                        eval_slurm=SlurmPlan(max_concurrent=3))
    lines: list[str] = []
    submit.submit(exp, dry_run=True, echo=lines.append)
    assert arrays_of(lines) == [("submit.sbatch", "0-3%1", "", "0"),
                                ("eval.sbatch", "1,3%3", "aftercorr:<job id of training array 1>", "0")]


def test_failed_resubmits_training_with_evaluation_and_evaluation_alone(evaluated_dir) -> None:
    exp = evaluated_dir(5)
    done = {"exit_code": 0, "started": SUBMITTED, "ended": SUBMITTED}
    for rid in ("run_000", "run_002", "run_003", "run_004"):
        record(exp, rid, "completed", **done)
    record(exp, "run_001", "failed", exit_code=1)
    record(exp, "run_000", "completed", evaluation=True, **done)
    record(exp, "run_002", "failed", evaluation=True, exit_code=1,
           evaluations={"heldout@epoch_0": {"state": "failed", "seconds": 1.0, "error": "ValueError: x"}})
    record(exp, "run_004", "cancelled", evaluation=True, exit_code=143)
    # run_003 trained but was never evaluated: not a failure, --eval-only's business
    lines: list[str] = []
    arrays = submit.submit(exp, failed=True, dry_run=True, echo=lines.append)
    assert arrays_of(lines) == [("submit.sbatch", "1", "", "0"),
                                ("eval.sbatch", "1", "aftercorr:<job id of training array 1>", "0"),
                                ("eval.sbatch", "2,4", "", "0")]  # evaluated again, not retrained
    assert [(a.kind, a.after) for a in arrays] == [("train", None), ("eval", "<job id of training array 1>"),
                                                   ("eval", None)]
    assert not any("--kill-on-invalid-dep=yes" in a.command for a in arrays[2:])


def test_eval_only_evaluates_trained_runs_that_are_not_evaluated(evaluated_dir) -> None:
    exp = evaluated_dir(4)
    for rid in ("run_000", "run_002", "run_003"):
        record(exp, rid, "completed", exit_code=0)
    record(exp, "run_000", "completed", evaluation=True, exit_code=0)
    record(exp, "run_003", "failed", evaluation=True, exit_code=1)
    lines: list[str] = []
    arrays = submit.submit(exp, eval_only=True, dry_run=True, echo=lines.append)
    assert arrays_of([ln for ln in lines if "sbatch" in ln]) == [("eval.sbatch", "2-3", "", "0")]
    assert "skip 1 run(s) whose training has not completed (run_001); `submit` trains and evaluates them" in lines
    assert "skip 1 evaluated run(s) (run_000); --force evaluates them again" in lines
    assert not any("--export" in part for a in arrays for part in a.command)
    forced = submit.submit(exp, eval_only=True, force=True, dry_run=True, echo=lambda s: None)
    assert [(a.chunk.indices, f"--export=ALL,{expdir.FORCE_ENV}=1" in a.command) for a in forced] == [((0, 2, 3), True)]
    result = cli("submit", str(exp), "--eval-only", "--runs", "1", "--dry-run")
    assert result.exit_code == 0 and "no evaluations to submit" in result.stdout


def test_plain_submit_says_what_evaluates_trained_runs(evaluated_dir) -> None:
    exp = evaluated_dir(4)
    for rid in ("run_000", "run_001"):
        record(exp, rid, "completed", exit_code=0)
    record(exp, "run_001", "failed", evaluation=True, exit_code=1)
    lines: list[str] = []
    arrays = submit.submit(exp, dry_run=True, echo=lines.append)
    assert [(a.kind, a.chunk.indices) for a in arrays] == [("train", (2, 3)), ("eval", (2, 3))]
    assert "1 of them not evaluated yet (run_000): --eval-only evaluates them" in lines
    assert "1 of them with a failed evaluation (run_001): --failed evaluates them again" in lines


def test_eval_only_without_evaluations_is_a_clear_error(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}], slurm=SlurmPlan(gpus_per_run=0))
    sbatch.write_submit_scripts(exp, load_mapping(exp), SlurmSettings(gpus_per_run=0))
    result = cli("submit", str(exp), "--eval-only", "--dry-run")
    assert result.exit_code == 1 and "no run of this experiment is evaluated" in result.stderr
    assert "Traceback" not in result.output


def test_a_queued_evaluation_is_not_submitted_twice(evaluated_dir) -> None:
    exp = evaluated_dir(2)
    record(exp, "run_000", "completed", exit_code=0)
    record(exp, "run_000", "running", evaluation=True, started=SUBMITTED)
    with pytest.raises(SlurmError, match=r"already queued or running.*the evaluation of run_000 \(running\)"):
        submit.submit(exp, eval_only=True, dry_run=True, echo=lambda s: None)


def test_missing_eval_scripts_or_configs_are_refused(evaluated_dir) -> None:
    exp = evaluated_dir(2)
    (exp / expdir.eval_config_file("run_001", 0, "heldout")).unlink()
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 1 and "run_001: eval/run_001/epoch_0.heldout.yaml" in result.stderr
    (exp / expdir.EVAL_SCRIPT_FILE).unlink()
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 1 and "eval.sbatch is missing" in result.stderr


# ----------------------------------------------------------------------------- merging and the EVAL column


def _run(n_evals: int = 2) -> expdir.RunEntry:
    entries = tuple(EvalEntry(Evaluator.HELDOUT, e, f"eval/run_001/epoch_{e}.heldout.yaml", f"/o/{e}.json")
                    for e in range(n_evals))
    return expdir.RunEntry("run_001", 1, "configs/run_001.yaml", "0" * 64, "/o", {}, expdir.Validation.PASSED, None,
                           evaluations=entries)


def _evaluations(*states: str) -> dict[str, dict[str, Any]]:
    return {f"heldout@epoch_{i}": {"state": s, "seconds": 1.0, "error": None} for i, s in enumerate(states)}


SUB = Submission("8", 1, SUBMITTED)
OURS = {"slurm_array_job_id": "8", "slurm_array_task_id": "1", "started": SUBMITTED}


@pytest.mark.parametrize("rec, task, training, label", [
    # SLURM cancelled it because training task 1 failed: it never ran and never will.
    (StatusRecord("run_001"), TaskState("8", 1, SlurmState.CANCELLED, 0, 0, "DependencyNeverSatisfied"),
     SlurmState.FAILED, "skipped (training failed)"),
    # ... in the second before SLURM cancels it
    (StatusRecord("run_001"), TaskState("8", 1, SlurmState.PENDING, None, 0, "DependencyNeverSatisfied"),
     State.FAILED, "skipped (training failed)"),
    (StatusRecord("run_001"), TaskState("8", 1, SlurmState.CANCELLED, 0, 0, "DependencyNeverSatisfied"),
     SlurmState.CANCELLED, "skipped (training cancelled)"),
    # waiting for its training task
    (StatusRecord("run_001"), TaskState("8", 1, SlurmState.PENDING, None, 0, "Dependency"), SlurmState.RUNNING,
     "PENDING"),
    (StatusRecord("run_001", State.RUNNING, **OURS), TaskState("8", 1, SlurmState.RUNNING, None, 3, "None"),
     State.COMPLETED, "RUNNING"),
    (StatusRecord("run_001", State.COMPLETED, 0, evaluations=_evaluations("completed", "completed"), **OURS),
     TaskState("8", 1, SlurmState.COMPLETED, 0, 9, "None"), State.COMPLETED, "completed"),
    (StatusRecord("run_001", State.FAILED, 1, evaluations=_evaluations("completed", "failed"), **OURS),
     TaskState("8", 1, SlurmState.FAILED, 1, 9, "NonZeroExitCode"), State.COMPLETED, "1/2"),
    (StatusRecord("run_001", State.FAILED, 1, evaluations=_evaluations("failed", "failed"), **OURS),
     TaskState("8", 1, SlurmState.FAILED, 1, 9, "NonZeroExitCode"), State.COMPLETED, "failed"),
    # killed at its time limit after one evaluation: SLURM says why, the record how far it got
    (StatusRecord("run_001", State.CANCELLED, 143, evaluations=_evaluations("completed", "cancelled"), **OURS),
     TaskState("8", 1, SlurmState.TIMEOUT, 143, 60, "TimeLimit"), State.COMPLETED, "1/2 TIMEOUT"),
    # trained locally, failed there: nothing evaluated it and nothing will until it trains again
    (StatusRecord("run_001"), None, State.FAILED, "skipped (training failed)"),
    (StatusRecord("run_001"), None, State.COMPLETED, "pending"),
])
def test_merge_eval(rec: StatusRecord, task: TaskState | None, training, label: str) -> None:
    state = merge_eval(_run(), rec, SUB if task else None, task, training)
    assert state is not None and state.label == label


def test_merge_eval_of_a_run_that_is_not_evaluated() -> None:
    assert merge_eval(_run(0), StatusRecord("run_001"), None, None, State.COMPLETED) is None


def test_eval_state_says_what_submit_may_do() -> None:
    skipped = EvalState("run_001", 1, SlurmState.PENDING, "8_1", 0, 1, "training failed")
    assert skipped.resubmit and not skipped.active  # SLURM is about to cancel it: nothing will run twice
    queued = EvalState("run_001", 1, SlurmState.PENDING, "8_1", 0, 1)
    assert queued.active and not queued.resubmit
    partial = EvalState("run_001", 1, State.FAILED, "8_1", 1, 2)
    assert partial.partial and partial.resubmit and partial.category == "partial"


def test_status_shows_the_eval_column_and_counts(evaluated_dir, tmp_path: Path) -> None:
    exp = evaluated_dir(4, evaluated=[0, 1, 2])
    record(exp, "run_000", "completed", exit_code=0)
    record(exp, "run_000", "completed", evaluation=True, exit_code=0, evaluations=_evaluations("completed"))
    record(exp, "run_001", "failed", exit_code=1)
    record(exp, "run_002", "completed", exit_code=0)
    record(exp, "run_003", "completed", exit_code=0)
    result = cli("status", str(exp), env={"PATH": str(tmp_path)})  # no squeue
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.match(r"RUN +PARAMETERS +STATE +EXIT +WALL +JOB +EVAL$", lines[0])
    assert re.match(r"run_000 .* completed +0 +- +- +completed$", lines[1]), lines[1]
    assert re.match(r"run_001 .* failed +1 +- +- +skipped \(training failed\)$", lines[2]), lines[2]
    assert re.match(r"run_002 .* completed +0 +- +- +pending$", lines[3]), lines[3]
    assert re.match(r"run_003 .* completed +0 +- +- +-$", lines[4]), lines[4]  # not evaluated
    assert "3 evaluation(s): 1 completed, 1 skipped, 1 pending" in result.stdout
    assert "skipped: never ran because the run's training did not complete" in result.stdout


def test_evaluation_jobs_do_not_stand_for_training_jobs(evaluated_dir) -> None:
    exp = evaluated_dir(2)
    expdir.append_job(exp, JobRecord("50", SUBMITTED, "0-1", 0, (0, 1), "sbatch submit.sbatch"))
    expdir.append_job(exp, JobRecord("51", SUBMITTED, "0-1", 0, (0, 1), "sbatch eval.sbatch", kind="eval"))
    record(exp, "run_000", "completed", exit_code=0, slurm_array_job_id="50", slurm_array_task_id="0",
           started=SUBMITTED)
    live = {("50", 0): TaskState("50", 0, SlurmState.COMPLETED, 0, 5, "None"),
            ("50", 1): TaskState("50", 1, SlurmState.RUNNING, None, 5, "None"),
            ("51", 0): TaskState("51", 0, SlurmState.RUNNING, None, 1, "None"),
            ("51", 1): TaskState("51", 1, SlurmState.PENDING, None, 0, "Dependency")}
    states = slurm_state.run_states(exp, live=live)
    assert [(s.state, s.job, s.evaluation.state, s.evaluation.job) for s in states] == [
        ("completed", "50_0", "RUNNING", "51_0"), ("RUNNING", "50_1", "PENDING", "51_1")]
    table = slurm_state.format_status(states)
    assert "2 evaluation(s): 1 RUNNING, 1 PENDING" in table and "live from SLURM" in table


def test_no_eval_column_without_evaluations(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    table = slurm_state.format_status(slurm_state.run_states(exp, use_slurm=False))
    assert "EVAL" not in table and "evaluation" not in table


# ----------------------------------------------------------------------------- real SLURM


def _wait(cluster, timeout: float = 900) -> float:
    t0 = time.monotonic()
    cluster.wait_idle(timeout)
    return time.monotonic() - t0


def _squeue(cluster, *job_ids: str) -> dict[tuple[str, int], TaskState]:
    out = cluster.run("squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-O", slurm_state._SQUEUE_FORMAT)
    return slurm_state.parse_squeue(out.stdout)


@pytest.mark.slow
def test_slurm_cancels_only_the_evaluation_of_a_failed_training_task(slurm_cluster, evaluated_dir) -> None:
    # No training here: the setup line of both scripts logs each task and ends it, failing the
    # training task of index 1. Arrays of 2 (offsets 0 and 2), chained by max_concurrent=1.
    setup = ['echo "${SLURM_JOB_NAME##*-} $INDEX $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID" >> tasks.txt',
             '[ "$SLURM_JOB_NAME" != tiny ] || [ ! -f "fail_$INDEX" ] || exit 3', "exit 0"]
    exp = evaluated_dir(4, SlurmSettings(gpus_per_run=0, cpus_per_task=1, max_concurrent=1, max_array_size=2,
                                         job_name="tiny", setup=setup))
    (exp / "fail_1").touch()
    result = cli("submit", str(exp))
    assert result.exit_code == 0, result.output
    jobs = read_jobs(exp)
    assert [(j.kind, j.offset, j.indices) for j in jobs] == [
        ("train", 0, (0, 1)), ("eval", 0, (0, 1)), ("train", 2, (2, 3)), ("eval", 2, (2, 3))]
    _wait(slurm_cluster)
    tasks = _squeue(slurm_cluster, *(j.job_id for j in jobs))
    train0, eval0, train2, eval2 = (j.job_id for j in jobs)
    assert (tasks[(train0, 1)].state, tasks[(train0, 1)].exit_code) == (SlurmState.FAILED, 3)
    # What SLURM does with the evaluation of the failed training task: cancelled, never started.
    cancelled = tasks[(eval0, 1)]
    assert (cancelled.state, cancelled.reason, cancelled.exit_code, cancelled.seconds) == (
        SlurmState.CANCELLED, slurm_state.DEPENDENCY_NEVER_SATISFIED, 0, 0)
    # ... and no other task is touched, in this array or in the next one.
    assert {k: t.state for k, t in tasks.items() if k != (train0, 1) and k != (eval0, 1)} == {
        (train0, 0): "COMPLETED", (eval0, 0): "COMPLETED", (train2, 0): "COMPLETED", (train2, 1): "COMPLETED",
        (eval2, 0): "COMPLETED", (eval2, 1): "COMPLETED"}
    ran = [tuple(line.split()) for line in (exp / "tasks.txt").read_text().splitlines()]
    assert sorted(r[:2] for r in ran if r[0] == "eval") == [("eval", "0"), ("eval", "2"), ("eval", "3")]
    # Evaluation task i ran after training task i of the same array (offset 2: task 0 is index 2).
    assert ran.index(("tiny", "2", train2, "0")) < ran.index(("eval", "2", eval2, "0"))
    status = cli("status", str(exp)).stdout
    assert re.search(rf"run_001 .* FAILED +3 +\S+ +{train0}_1 +skipped \(training failed\)$", status, re.M), status
    assert "4 evaluation(s): 3 pending, 1 skipped" in status  # no task got as far as run_eval_one


@pytest.mark.slow
def test_evaluations_overlap_training_and_failures_are_resubmitted(slurm_cluster, evaluated_dir, tiny_assets,
                                                                    tmp_path: Path) -> None:
    # run_001 cannot train (its data file is away); run_003 trains but cannot be evaluated (its held-out
    # file is away). Training runs one at a time, evaluations beside it.
    train_data, heldout = tmp_path / "train_1.json", tmp_path / "heldout_3.json"
    shutil.copy(tiny_assets.data_file, train_data)
    shutil.copy(tiny_assets.data_file, heldout)
    runs = [{"optimizer.lr": 1e-3}, {"optimizer.lr": 2e-3, "dataset.data_files": str(train_data)},
            {"optimizer.lr": 3e-3}, {"optimizer.lr": 4e-3}]
    exp = evaluated_dir(4, SlurmSettings(gpus_per_run=0, cpus_per_task=1, max_concurrent=1), runs=runs,
                        heldout={3: str(heldout)}, derived=[{"max_steps_per_epoch": 2}] * 4)
    train_data.rename(tmp_path / "away_1.json")
    heldout.rename(tmp_path / "away_3.json")
    result = cli("submit", str(exp))
    assert result.exit_code == 0, result.output
    train_job, eval_job = (j.job_id for j in read_jobs(exp))
    wall = _wait(slurm_cluster)
    mapping = load_mapping(exp)
    records = expdir.read_all(exp, mapping)
    evals = expdir.read_all_evaluations(exp, mapping)
    logs = "\n".join((exp / r.log).read_text()[-1500:] for r in [*records.values(), *evals.values()] if r.log)
    assert [r.state for r in records.values()] == ["completed", "failed", "completed", "completed"], logs
    assert [evals[r].state for r in ("run_000", "run_001", "run_002", "run_003")] == [
        "completed", "pending", "completed", "failed"], logs
    assert expdir.read_eval_result(mapping.runs[0].evaluations[0].result).metrics["heldout_loss"] > 0
    assert (evals["run_000"].slurm_array_job_id, evals["run_000"].slurm_array_task_id) == (eval_job, "0")
    tasks = _squeue(slurm_cluster, train_job, eval_job)
    assert (tasks[(eval_job, 1)].state, tasks[(eval_job, 1)].reason) == ("CANCELLED", "DependencyNeverSatisfied")
    status = cli("status", str(exp)).stdout
    assert re.search(r"run_001 .* failed +1 .* skipped \(training failed\)$", status, re.M), status
    assert re.search(r"run_003 .* completed +0 .* failed$", status, re.M), status
    assert "4 evaluation(s): 2 completed, 1 skipped, 1 failed" in status

    # Overlap: run_000's evaluation started before the last training task ended.
    def at(value: str | None) -> float:
        from datetime import datetime
        return datetime.fromisoformat(str(value)).timestamp()

    eval0_start, last_train_end = at(evals["run_000"].started), at(records["run_003"].ended)
    assert eval0_start < last_train_end, (evals["run_000"], records["run_003"])
    t0 = at(records["run_000"].started)
    spans = {f"{kind} {rid}": f"{at(r.started) - t0:.0f}-{at(r.ended) - t0:.0f} s" for kind, recs in
             (("train", records), ("eval", evals)) for rid, r in recs.items() if r.started and r.ended}
    print(f"\noverlap: run_000 evaluated {eval0_start - at(records['run_000'].ended):.0f} s after its training "
          f"ended, {last_train_end - eval0_start:.0f} s before run_003's training ended; 4 runs in {wall:.1f} s; "
          + ", ".join(f"{k} {v}" for k, v in spans.items()))

    # Fixed: only run_001 trains again (with its evaluation); run_003 is only evaluated again.
    (tmp_path / "away_1.json").rename(train_data)
    (tmp_path / "away_3.json").rename(heldout)
    dry = cli("submit", str(exp), "--failed", "--dry-run")
    assert arrays_of(dry.stdout.splitlines()) == [
        ("submit.sbatch", "1%1", "", "0"), ("eval.sbatch", "1%1", "aftercorr:<job id of training array 1>", "0"),
        ("eval.sbatch", "3%1", "afterany:<job id of the previous evaluation array>", "0")]
    result = cli("submit", str(exp), "--failed")
    assert result.exit_code == 0, result.output
    again = read_jobs(exp)[2:]
    assert [(j.kind, j.indices) for j in again] == [("train", (1,)), ("eval", (1,)), ("eval", (3,))]
    _wait(slurm_cluster)
    records, evals = expdir.read_all(exp, mapping), expdir.read_all_evaluations(exp, mapping)
    assert [r.state for r in records.values()] == ["completed"] * 4
    assert [r.state for r in evals.values()] == ["completed"] * 4
    # Nothing else ran again.
    assert [r.slurm_array_job_id for r in records.values()] == [train_job, again[0].job_id, train_job, train_job]
    assert [r.slurm_array_job_id for r in evals.values()] == [eval_job, again[1].job_id, eval_job, again[2].job_id]
    status = cli("status", str(exp)).stdout
    assert "4 run(s): 4 completed" in status and "4 evaluation(s): 4 completed" in status
    assert cli("submit", str(exp), "--failed").stdout.strip() == "no failed or cancelled runs or evaluations: nothing to submit"


def test_submit_checks_the_tracking_server_once_before_submitting_anything(make_experiment_dir, tmp_path):
    """A tracked experiment whose MLflow server does not answer is refused before sbatch, naming the URI."""
    from torchtune_config_writer.execute.tracking import TrackingError

    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed (.ci/install_slurm.sh installs it)")
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}], slurm=SlurmPlan(gpus_per_run=0))
    mapping = expdir.load_mapping(exp)
    sbatch.write_submit_scripts(exp, mapping, SlurmSettings())
    plan = expdir.TrackingPlan(backend="mlflow", experiment="x", tracking_uri="http://127.0.0.1:9")  # discard port
    expdir.write_mapping(exp, dataclasses.replace(mapping, tracking=plan))
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        submit.submit(exp, echo=lambda line: None)
    assert not (exp / expdir.JOBS_FILE).exists()  # nothing was submitted


def test_an_eval_config_edited_after_validation_is_refused_before_submitting(evaluated_dir) -> None:
    exp = evaluated_dir(2)
    path = exp / expdir.eval_config_file("run_000", 0, "heldout")
    path.write_text(path.read_text() + "\n# edited\n")
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 1
    assert "run_000: eval/run_000/epoch_0.heldout.yaml was changed after validation" in result.stderr
