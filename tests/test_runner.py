"""Running experiment directories: real `tune run` trainings on CPU, status records, refusals, Ctrl-C.

Only the Appendix B contract is used: the experiment directories are written by hand (conftest).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from torchtune_config_writer.cli import main
from torchtune_config_writer import expdir
from torchtune_config_writer.errors import ExperimentDirError, RunNotRunnableError, RunSelectionError
from torchtune_config_writer.execute.runner import NPROC_ENV, build_command, run_experiment, run_one
from torchtune_config_writer.execute.selection import check_runnable, select_runs
from torchtune_config_writer.expdir import (
    State, StatusRecord, load_mapping, read_status, status_path, write_status,
)
from helpers import custom_recipe, run_table, wait_for


def read_all(exp: Path) -> dict[str, StatusRecord]:
    return expdir.read_all(exp, load_mapping(exp))

# ----------------------------------------------------------------------------- real trainings


@pytest.mark.slow
def test_runs_complete_or_fail_with_their_exit_code(trained_experiment):
    exp, summary = trained_experiment
    assert sorted(summary.completed) == ["run_000", "run_001"]
    assert summary.failed == ["run_002"] and summary.exit_code == 1
    states = read_all(exp)
    for rid in ("run_000", "run_001"):
        rec = states[rid]
        assert rec.state == "completed" and rec.exit_code == 0
        assert datetime.fromisoformat(rec.started) <= datetime.fromisoformat(rec.ended)
        assert rec.started.endswith("+00:00") and rec.host
        assert rec.log == f"logs/{rid}.log" and (exp / rec.log).is_file()
        # The training really happened: torchtune saved the adapter of the (only) epoch.
        assert (exp / "runs" / rid / "epoch_0" / "adapter_model.pt").is_file()
    failed = states["run_002"]
    assert failed.state == "failed" and failed.exit_code not in (0, None)
    assert "missing.json" in (exp / failed.log).read_text()
    assert not list((exp / "status").glob(".*tmp"))  # atomic writes leave no temporary files


@pytest.mark.slow
def test_completed_runs_are_skipped(trained_experiment):
    exp, _ = trained_experiment
    before = {p.name: p.read_bytes() for p in (exp / "status").iterdir()}
    lines: list[str] = []
    summary = run_experiment(exp, runs="0-1", echo=lines.append)
    assert summary.skipped == ["run_000", "run_001"] and summary.total == 0 and summary.exit_code == 0
    assert any("already completed" in line for line in lines)
    assert {p.name: p.read_bytes() for p in (exp / "status").iterdir()} == before


@pytest.mark.slow
def test_rerun_failed_reruns_only_the_failed_run(make_experiment_dir, tiny_assets, tmp_path):
    late = tmp_path / "late_data" / "alpaca.json"  # appears only after the first pass
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"dataset.data_files": str(late)}])
    first = run_experiment(exp, parallel=2, echo=lambda line: None)
    assert first.completed == ["run_000"] and first.failed == ["run_001"]
    done = read_status(exp, "run_000")

    late.parent.mkdir()
    shutil.copy(tiny_assets.data_file, late)  # the cause of the failure is fixed
    again = run_experiment(exp, rerun_failed=True, echo=lambda line: None)
    assert again.completed == ["run_001"] and again.skipped == ["run_000"] and again.exit_code == 0
    assert read_status(exp, "run_000") == done  # untouched
    assert read_status(exp, "run_001").state == "completed"
    assert run_experiment(exp, rerun_failed=True, echo=lambda line: None).total == 0  # nothing left to rerun


@pytest.mark.slow
def test_run_one_inside_slurm_writes_to_stdout_and_records_the_job(make_experiment_dir, tmp_path):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "1"}
    code = f"import sys; from torchtune_config_writer.execute.runner import run_one; sys.exit(run_one({str(exp)!r}, 1))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Loss" in out.stdout + out.stderr  # tune's own output went to the task's stdout (SLURM's log)
    rec = read_status(exp, "run_001")
    assert rec.state == "completed" and rec.slurm_job_id == "4242"
    assert rec.slurm_array_job_id == "4240" and rec.slurm_array_task_id == "1"
    assert rec.log == "logs/4240_1.out" and not (exp / "logs" / "run_001.log").exists()
    assert read_status(exp, "run_000").state == "pending"


def _processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose cwd is ``directory`` (the runs' `tune run` children)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == directory:
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("how, sig, expected_code", [
    ("cli", signal.SIGINT, 130),           # Ctrl-C on `torchtune-config-writer run`
    ("cli-parallel", signal.SIGINT, 130),  # ... with two runs in flight
    ("run_one", signal.SIGTERM, 143),      # scancel of a SLURM task
])
def test_interrupt_records_cancelled_and_stops_the_child(make_experiment_dir, how, sig, expected_code):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}, {"optimizer.lr": 1e-2}]).resolve()
    in_flight = ["run_000", "run_001"] if how == "cli-parallel" else ["run_000"]
    if how.startswith("cli"):
        cmd = [sys.executable, "-m", "torchtune_config_writer", "run", str(exp), "--parallel", str(len(in_flight))]
    else:
        cmd = [sys.executable, "-c",
               f"import sys; from torchtune_config_writer.execute.runner import run_one; sys.exit(run_one({str(exp)!r}, 0))"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("the runs in flight to be running", lambda: all(read_status(exp, r).state == "running" for r in in_flight)
                 and len(_processes_in(exp)) >= len(in_flight), 120, every=0.1)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == expected_code, output
    assert [read_status(exp, r).state for r in in_flight] == ["cancelled"] * len(in_flight)
    assert not status_path(exp, "run_002").exists()  # never started: still pending
    assert "Traceback" not in output
    wait_for("the tune children to be gone", lambda: not _processes_in(exp), 15, every=0.1)  # the tune children too


@pytest.mark.slow
def test_a_custom_recipe_file_runs_locally(tiny_assets, tmp_path):
    from torchtune_config_writer import generate_configs

    recipe = custom_recipe(tmp_path / "recipes")
    exp = tmp_path / "exp"
    generate_configs({
        "experiment_name": "custom_recipe", "base_config_file": str(tiny_assets.base_config), "recipe": str(recipe),
        "variables": {"optimizer.lr": [1e-3]}, "controls": {"max_steps_per_epoch": 2},
    }, output_dir=exp)
    mapping = load_mapping(exp)
    assert (mapping.recipe, mapping.distributed) == (str(recipe), False)
    summary = run_experiment(exp, echo=lambda line: None)
    log = (exp / "logs" / "run_000.log").read_text()
    assert summary.completed == ["run_000"], log
    assert log.startswith(f"# {sys.executable} {recipe} --config configs/run_000.yaml")
    assert (exp / "runs" / "run_000" / "epoch_0" / "adapter_model.pt").is_file()


def test_custom_recipe_files_start_without_tune_run(tmp_path):
    recipe = str(tmp_path / "my_recipe.py")
    mapping = dataclasses.replace(run_table(1), recipe=recipe)
    run = mapping.runs[0]
    assert build_command(mapping, run) == [sys.executable, recipe, "--config", "configs/run_000.yaml"]
    distributed = dataclasses.replace(mapping, distributed=True)
    assert build_command(distributed, run, nproc_per_node=2) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--standalone",
        recipe, "--config", "configs/run_000.yaml"]


# ----------------------------------------------------------------------------- refusals


def test_edited_config_is_refused_and_nothing_starts(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    with open(exp / "configs" / "run_001.yaml", "a") as f:
        f.write("batch_size: 64\n")
    with pytest.raises(RunNotRunnableError, match=r"run_001 may not run: .*run_001.yaml was changed after validation"):
        run_experiment(exp, echo=lambda line: None)
    assert not (exp / "status").exists()  # run_000 was fine, but nothing started
    with pytest.raises(RunNotRunnableError, match="changed after validation"):
        run_one(exp, 1)
    assert check_runnable(exp, 0) == exp / "configs" / "run_000.yaml"


def test_failed_or_skipped_validation_is_refused(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}], validation=["failed", "skipped"])
    with pytest.raises(RunNotRunnableError, match=r"run_000 may not run: .*failed validation.*validation_report.txt"):
        run_one(exp, 0)
    with pytest.raises(RunNotRunnableError, match=r"run_001 .*validation: skipped.*--no-validate"):
        check_runnable(exp, "run_001")
    with pytest.raises(RunNotRunnableError, match="2 of the selected runs may not run"):
        run_experiment(exp, echo=lambda line: None)
    assert not (exp / "status").exists() and not (exp / "logs").exists()


def test_a_completed_run_is_never_trained_again_without_force(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    done = StatusRecord("run_000", State.COMPLETED, exit_code=0, ended="2026-01-01T00:00:00+00:00")
    write_status(exp, done)
    with pytest.raises(RunNotRunnableError, match="run_000 already completed .*--force"):
        run_one(exp, 0)
    assert read_status(exp, "run_000").ended == done.ended  # the record is untouched
    assert not (exp / "logs").exists()  # nothing started


def test_missing_config_is_refused(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    (exp / "configs" / "run_000.yaml").unlink()
    with pytest.raises(RunNotRunnableError, match="run_000.yaml is missing"):
        check_runnable(exp, 0)


# ----------------------------------------------------------------------------- the directory and --runs


def _mapping(n: int) -> expdir.RunMapping:
    return run_table(n)


@pytest.mark.parametrize("spec, expected", [
    ("all", [0, 1, 2, 3, 4, 5, 6, 7]),
    (None, [0, 1, 2, 3, 4, 5, 6, 7]),
    ("0-3,7", [0, 1, 2, 3, 7]),
    ("run_002", [2]),
    ("run_001-run_003, 2", [1, 2, 3]),
    ("5,1,5", [1, 5]),
    ([6, 0], [0, 6]),
])
def test_run_selection(spec, expected):
    assert [r.index for r in select_runs(_mapping(8), spec)] == expected


@pytest.mark.parametrize("spec, message", [
    ("9", r"no run 9 in this experiment: it has runs 0-7 \(run_000 .. run_007\)"),
    ("run_012,3", "no run 12"),
    ("3-1", "goes backwards; write 1-3"),
    ("first", "cannot read 'first'"),
    (",", "the run selection is empty"),
])
def test_bad_run_selection_says_what_exists(spec, message):
    with pytest.raises(RunSelectionError, match=message):
        select_runs(_mapping(8), spec)


def test_not_an_experiment_dir(tmp_path):
    with pytest.raises(ExperimentDirError, match="does not exist"):
        load_mapping(tmp_path / "nope")
    with pytest.raises(ExperimentDirError, match="no run_mapping.yaml"):
        load_mapping(tmp_path)
    (tmp_path / "experiment.yaml").write_text("experiment_name: x\n")
    with pytest.raises(ExperimentDirError, match="generate it first"):
        load_mapping(tmp_path / "experiment.yaml")
    (tmp_path / "run_mapping.yaml").write_text(f"format: {expdir.FORMAT}\nruns:\n  - {{run_id: run_000, index: 0}}\n")
    with pytest.raises(ExperimentDirError, match=r"runs\[0\] lacks config, config_sha256"):
        load_mapping(tmp_path)


def test_status_records_round_trip_and_default_to_pending(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    assert [r.state for r in read_all(exp).values()] == ["pending", "pending"]
    write_status(exp, StatusRecord("run_001", State.FAILED, exit_code=3))
    assert json.loads(status_path(exp, "run_001").read_text())["exit_code"] == 3
    assert read_all(exp)["run_001"].state == "failed"
    with pytest.raises(ValueError):
        write_status(exp, StatusRecord("run_001", "done"))
    assert read_status(exp, "run_001").state == "failed"  # the bad write changed nothing
    status_path(exp, "run_000").write_text("{not json")
    with pytest.raises(ExperimentDirError, match="run_000.json: unreadable status record.*delete it"):
        read_all(exp)


def test_distributed_command_puts_torchrun_options_before_the_recipe(monkeypatch):
    mapping = dataclasses.replace(run_table(1), recipe="full_finetune_distributed", distributed=True)
    run = mapping.runs[0]
    cmd = build_command(mapping, run, nproc_per_node=4)
    i = cmd.index("run")
    assert cmd[i + 1:] == ["--nnodes", "1", "--nproc_per_node", "4", "full_finetune_distributed",
                           "--config", "configs/run_000.yaml"]
    monkeypatch.setenv(NPROC_ENV, "2")
    assert build_command(mapping, run)[i + 4] == "2"
    monkeypatch.delenv(NPROC_ENV)
    monkeypatch.delenv("SLURM_GPUS_ON_NODE", raising=False)
    assert build_command(mapping, run)[i + 4] == "auto"
    assert "--nproc_per_node" not in build_command(dataclasses.replace(mapping, distributed=False), run)


# ----------------------------------------------------------------------------- CLI


def test_cli_user_errors_are_one_line(make_experiment_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    result = runner.invoke(main, ["run", str(exp), "--runs", "4"])
    assert result.exit_code == 1 and "no run 4 in this experiment: it has only run 0 (run_000)" in result.output
    result = runner.invoke(main, ["run", str(exp), "--parallel", "0"])
    assert result.exit_code == 1 and "--parallel must be at least 1" in result.output


@pytest.mark.slow
def test_demo_from_nothing(tmp_path):
    """Build assets, generate the 4-run counting study with the real generator, train and evaluate it, collect."""
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "demo"), "--parallel", "2"])
    assert result.exit_code == 0, result.output
    exp = tmp_path / "demo" / "experiment"
    assert [r.state for r in read_all(exp).values()] == ["completed"] * 4
    with open(exp / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((float(r["optimizer.lr"]), int(r["epochs"])) for r in rows) == [
        (lr, epochs) for lr in (0.001, 0.003) for epochs in (2, 6)]
    assert {r["name"] for r in rows} == {"lr0.001-ep2", "lr0.001-ep6", "lr0.003-ep2", "lr0.003-ep6"}
    assert all(r["eval"] == "completed" and float(r["heldout_loss"]) > 0 for r in rows)
    accuracy = {r["name"]: float(r["count_mc/acc"]) for r in rows}
    # the settings really differ: six epochs at the higher rate learn to count, two at the lower do not
    assert accuracy["lr0.003-ep6"] >= 0.6 > 0.4 >= accuracy["lr0.001-ep2"]
    assert "Primary metric: **count_mc/acc ↑**" in result.output and "4 runs: 4 completed" in result.output
    assert (exp / "metric_by_variable.svg").is_file() and "plot: " in result.output
