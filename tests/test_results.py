"""Collecting results: from real DiskLogger logs of real trainings, and from incomplete directories."""

from __future__ import annotations

import csv
import dataclasses
import os
import xml.etree.ElementTree as ET
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from torchtune_config_writer.cli import main
from torchtune_config_writer.results.plots import loss_plot_svg
from torchtune_config_writer.results.collect import (
    by_variable, collect, collect_rows, parse_disk_log, run_steps, summarize,
)
from torchtune_config_writer.expdir import State, StatusRecord, load_mapping, write_status


def _rows(csv_path):
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_collect_reads_steps_and_losses_of_real_runs(trained_experiment):
    exp, _ = trained_experiment
    csv_path = collect(exp)
    assert csv_path == exp / "results.csv"
    rows = {r["run_id"]: r for r in _rows(csv_path)}
    assert list(rows) == ["run_000", "run_001", "run_002"]
    assert list(_rows(csv_path)[0]) == [
        "run_id", "name", "configuration", "dataset.data_files", "optimizer.lr", "seed", "status", "exit_code", "steps",
        "final_loss", "min_loss", "mean_tokens_per_s", "wall_time_s"]
    assert [(r["name"], r["configuration"], r["seed"]) for r in rows.values()] == [
        ("", "0", ""), ("", "1", ""), ("", "2", "")]
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
    md = (exp / "results.md").read_text(encoding="utf-8")
    assert "| run_000 |" in md and "3 runs: 2 completed, 1 failed" in md
    # the comparison by variable: each lr value was used by one completed run (n = 1 loss averaged)
    assert "### optimizer.lr" in md and "By configuration" not in md
    assert f"| 0.001 | 1 | 1 | 1 | {float(rows['run_000']['final_loss']):.4f} |" in md
    # the loss plot: one line per run that logged, and the failed run has none
    svg = ET.fromstring((exp / "loss_curves.svg").read_text())
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert len(lines[0].get("points").split()) == int(rows["run_000"]["steps"])


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
    write_status(exp, StatusRecord("run_000", State.COMPLETED, exit_code=0,
                                   started=_iso(time.time() - 60), ended=_iso(time.time()), log=None))
    _, rows = collect_rows(exp)
    row = rows[0]
    assert row["steps"] == 3 and row["final_loss"] == 6.25 and row["min_loss"] == 6.0
    assert row["mean_tokens_per_s"] == 300.0 and row["wall_time_s"] == 60.0
    # An attempt that died before logging anything must not show the older attempt's metrics.
    (logs / "log_2000.txt").unlink()
    assert collect_rows(exp)[1][0]["steps"] is None


def test_a_requeued_runs_logs_since_its_first_start_make_one_curve(make_experiment_dir):
    # A requeued run (Appendix J.4) writes one log per start; the resumed start continues the step
    # numbers from its saved epoch, so steps the interrupted start logged past that epoch come again.
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    logs = exp / "runs" / "run_000" / "logs"
    logs.mkdir(parents=True)
    now = time.time()
    files = {"log_0500.txt": (range(1, 3), 7200), "log_1000.txt": (range(1, 6), 600), "log_2000.txt": (range(4, 9), 10)}
    for name, (steps, age) in files.items():  # an earlier attempt's log, the first start's, the resumed start's
        path = logs / name
        path.write_text("".join(f"Step {s} | loss:{20 - s if age == 10 else 30 - s} lr:0.001 \n" for s in steps))
        os.utime(path, (now - age,) * 2)
    record = StatusRecord("run_000", State.COMPLETED, exit_code=0, started=_iso(now - 60), ended=_iso(now),
                          requeues=1, first_started=_iso(now - 900), resumed_from_epoch=0)
    write_status(exp, record)
    row = collect_rows(exp)[1][0]
    assert row["steps"] == 8 and row["final_loss"] == 12.0 and row["min_loss"] == 12.0
    run = load_mapping(exp).runs[0]
    steps = run_steps(run, record)
    assert sorted(steps) == list(range(1, 9))  # not the earlier attempt's, which started before first_started
    assert [steps[s]["loss"] for s in (3, 4, 5)] == [27.0, 16.0, 15.0]  # 4-5 from the resumed start
    # Not requeued: only the latest start's log counts.
    assert sorted(run_steps(run, dataclasses.replace(record, requeues=0, first_started=None))) == list(range(4, 9))


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


def test_by_variable_averages_completed_runs_only():
    rows = [
        {"run_id": "run_000", "lr": 0.1, "status": "completed", "final_loss": 2.0},
        {"run_id": "run_001", "lr": 0.1, "status": "completed", "final_loss": 4.0},
        {"run_id": "run_002", "lr": 0.2, "status": "failed", "final_loss": None},
        {"run_id": "run_003", "lr": 0.2, "status": "completed", "final_loss": 1.5},
    ]
    md = by_variable(["lr"], rows)
    assert "| 0.1 | 2 | 2 | 2 | 3.0000 | 2.0000 |" in md
    assert "| 0.2 | 2 | 1 | 1 | 1.5000 | 1.5000 |" in md


def test_by_variable_says_how_many_losses_it_averaged():
    rows = [  # a completed run that logged no loss (its metrics went elsewhere) is counted, not averaged
        {"run_id": "run_000", "lr": 0.1, "status": "completed", "final_loss": 2.0},
        {"run_id": "run_001", "lr": 0.1, "status": "completed", "final_loss": None},
        {"run_id": "run_002", "lr": 0.1, "status": "failed", "final_loss": 0.5},
    ]
    assert "| 0.1 | 3 | 2 | 1 | 2.0000 | 2.0000 |" in by_variable(["lr"], rows)


def test_loss_plot_is_valid_svg_with_escaped_labels_and_a_bounded_legend():
    curves = {f"run_{i:03d} name=<&{i}>": [(1, 5.0 - i / 100), (2, 4.0)] for i in range(25)}
    root = ET.fromstring(loss_plot_svg(curves, "Loss & more"))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 25
    texts = [t.text for t in root.findall(f"{ns}text")]
    assert "run_000 name=<&0>" in texts and "... 5 more runs" in texts
    assert "run_024 name=<&24>" not in texts
