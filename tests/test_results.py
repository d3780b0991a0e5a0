"""Collecting results: from real DiskLogger logs of real trainings, and from incomplete directories."""

from __future__ import annotations

import csv
import os
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from torchtune_config_writer.cli import main
from torchtune_config_writer.results import collect, collect_rows, parse_disk_log, summarize
from torchtune_config_writer.status import write_status


def _rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_collect_reads_steps_and_losses_of_real_runs(trained_experiment):
    exp, _ = trained_experiment
    csv_path = collect(exp)
    assert csv_path == exp / "results.csv"
    rows = {r["run_id"]: r for r in _rows(csv_path)}
    assert list(rows) == ["run_000", "run_001", "run_002"]
    assert list(_rows(csv_path)[0]) == [
        "run_id", "dataset.data_files", "optimizer.lr", "status", "exit_code", "steps", "final_loss", "min_loss",
        "mean_tokens_per_s", "wall_time_s"]
    for rid, lr in (("run_000", 0.001), ("run_001", 0.003)):
        row = rows[rid]
        assert row["status"] == "completed" and float(row["optimizer.lr"]) == lr
        assert int(row["steps"]) == 20  # max_steps_per_epoch of tiny_lora_cpu.yaml, one epoch
        # Loss starts near ln(512) = 6.24 for random weights and never goes below the recorded minimum.
        assert 0 < float(row["min_loss"]) <= float(row["final_loss"]) < 8
        assert float(row["mean_tokens_per_s"]) > 0 and float(row["wall_time_s"]) >= 0
    failed = rows["run_002"]
    assert failed["status"] == "failed" and failed["exit_code"] not in ("", "0")
    assert failed["steps"] == failed["final_loss"] == failed["mean_tokens_per_s"] == ""
    md = (exp / "results.md").read_text()
    assert "| run_000 |" in md and "3 runs: 2 completed, 1 failed" in md


@pytest.mark.slow
def test_collect_command_prints_the_table(trained_experiment):
    exp, _ = trained_experiment
    result = CliRunner().invoke(main, ["collect", str(exp)])
    assert result.exit_code == 0, result.output
    assert "| run_id | dataset.data_files | optimizer.lr | status |" in result.output
    assert f"wrote {exp / 'results.csv'}" in result.output


def test_runs_without_logs_or_status_give_empty_cells(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    rows = _rows(collect(exp))
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert all(r["steps"] == r["final_loss"] == r["wall_time_s"] == "" for r in rows)


def test_only_the_latest_attempts_log_counts(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    logs = exp / "runs" / "run_000" / "logs"
    logs.mkdir(parents=True)
    old = logs / "log_1000.txt"
    old.write_text("".join(f"Step {s} | loss:{9 - s} lr:0.001 tokens_per_second_per_gpu:100.0 \n" for s in range(1, 6)))
    os.utime(old, (time.time() - 3600,) * 2)  # written an hour before this attempt started
    (logs / "log_2000.txt").write_text(
        "Step 1 | loss:6.5 lr:0.001 tokens_per_second_per_gpu:200.0 \n"
        "Step 2 | loss:6.0 lr:0.001 tokens_per_second_per_gpu:400.0 \n"
        "Step 3 | loss:6.25 lr:0.0 tokens_per_second_per_gpu:300.0 \n"
    )
    write_status(exp, {"run_id": "run_000", "state": "completed", "exit_code": 0,
                       "started": _iso(time.time() - 60), "ended": _iso(time.time()), "log": None})
    _, rows = collect_rows(exp)
    row = rows[0]
    assert row["steps"] == 3 and row["final_loss"] == 6.25 and row["min_loss"] == 6.0
    assert row["mean_tokens_per_s"] == 300.0 and row["wall_time_s"] == 60.0
    # An attempt that died before logging anything must not show the older attempt's metrics.
    (logs / "log_2000.txt").unlink()
    assert collect_rows(exp)[1][0]["steps"] is None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).isoformat()


def test_runs_logging_elsewhere_have_no_metrics(make_experiment_dir):
    exp = make_experiment_dir([{"metric_logger": {"_component_": "torchtune.training.metric_logging.StdoutLogger"}}])
    logs = exp / "runs" / "run_000" / "logs"
    logs.mkdir(parents=True)
    (logs / "log_1.txt").write_text("Step 1 | loss:1.0 \n")  # not this run's logger: ignored
    _, rows = collect_rows(exp)
    assert rows[0]["steps"] is None and rows[0]["final_loss"] is None


def test_disk_logger_lines_are_parsed_as_written_by_torchtune(tmp_path):
    from torchtune.training.metric_logging import DiskLogger

    logger = DiskLogger(log_dir=str(tmp_path))
    logger.log_dict({"loss": 6.37, "lr": 0.00029, "tokens_per_second_per_gpu": 27375.6}, step=1)
    logger.log_dict({"loss": 6.01, "lr": 0.0002, "tokens_per_second_per_gpu": 27000.4}, step=2)
    logger.log("val_loss", 6.5, step=2)
    logger.close()
    steps = parse_disk_log(logger.path_to_log_file().read_text())
    assert steps[2] == {"loss": 6.01, "lr": 0.0002, "tokens_per_second_per_gpu": 27000.4, "val_loss": 6.5}
    assert summarize(steps) == {"steps": 2, "final_loss": 6.01, "min_loss": 6.01, "mean_tokens_per_s": 27188.0}
