"""Collecting evaluated runs: metric columns (per epoch too), the eval state, the primary metric, the plot.

Experiment directories are written by hand through the contract: conftest's factory writes the runs,
then the run table is written again with each run's ``evaluations`` and the ``evaluation:`` plan,
and every evaluation result, status record and DiskLogger log is written here, numbers chosen by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from torchtune_config_writer import expdir
from torchtune_config_writer.cli import main
from torchtune_config_writer.expdir import (
    EvalEntry, EvalResult, EvaluationPlan, Evaluator, State, StatusRecord, load_mapping, write_eval_result,
    write_mapping, write_status,
)
from torchtune_config_writer.results.collect import by_variable, collect
from torchtune_config_writer.results.metrics import Primary, UnknownMetricError, infer_goal
from torchtune_config_writer.results.plots import metric_plot_svg, x_axis

SVG = "{http://www.w3.org/2000/svg}"
T0 = int(time.time()) - 3600  # every training "started" an hour ago; results and logs are written now
HELDOUT, LM_EVAL = Evaluator.HELDOUT, Evaluator.LM_EVAL
TWO_EPOCHS = [(HELDOUT, 0), (LM_EVAL, 0), (HELDOUT, 1), (LM_EVAL, 1)]


# ----------------------------------------------------------------------------- writing a directory by hand


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).isoformat()


def _evaluated(exp: Path, entries: list[tuple[Evaluator, int]], plan: EvaluationPlan | None = None) -> Path:
    """Give every run of ``exp`` these evaluations (evaluator, epoch), and the mapping its ``evaluation:`` plan."""
    mapping = load_mapping(exp)
    runs = tuple(dataclasses.replace(run, evaluations=tuple(
        EvalEntry(ev, epoch, expdir.eval_config_file(run.run_id, epoch, ev),
                  expdir.eval_result_file(run.output_dir, epoch, ev)) for ev, epoch in entries))
        for run in mapping.runs)
    write_mapping(exp, dataclasses.replace(mapping, runs=runs, evaluation=plan or EvaluationPlan()))
    return exp


def _result(exp: Path, run_id: str, evaluator: Evaluator, epoch: int, metrics: dict[str, float]) -> Path:
    """Write the result of one of the run's evaluations where its entry says."""
    run = next(r for r in load_mapping(exp).runs if r.run_id == run_id)
    entry = next(e for e in run.evaluations if (e.evaluator, e.epoch) == (evaluator, epoch))
    return write_eval_result(entry.result, EvalResult(evaluator, epoch, metrics, seconds=1.0))


def _trained(exp: Path, run_id: str, final_loss: float, state: State = State.COMPLETED) -> None:
    """A DiskLogger log ending at ``final_loss`` and a training status record started at T0."""
    logs = exp / "runs" / run_id / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"log_{T0}.txt").write_text(
        f"Step 1 | loss:{final_loss + 1} lr:0.001 tokens_per_second_per_gpu:100.0 \n"
        f"Step 2 | loss:{final_loss} lr:0.001 tokens_per_second_per_gpu:100.0 \n")
    write_status(exp, StatusRecord(run_id, state, exit_code=0 if state == State.COMPLETED else 1,
                                   started=_iso(T0), ended=_iso(T0 + 60)))


def _eval_record(exp: Path, run_id: str, state: State, entries: dict[str, str] | None = None) -> None:
    """The run's evaluation status record: the job's state and, per EvalEntry.name, its own."""
    evaluations = {name: {"state": s, "seconds": 2.0, "error": "CUDA out of memory" if s == "failed" else None}
                   for name, s in (entries or {}).items()}
    write_status(exp, StatusRecord(run_id, state, started=_iso(T0 + 60), evaluations=evaluations or None),
                 evaluation=True)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _md(exp: Path) -> str:
    return (exp / "results.md").read_text(encoding="utf-8")


def _svg(exp: Path) -> ET.Element:
    return ET.fromstring((exp / expdir.METRIC_PLOT).read_text(encoding="utf-8"))


def _panels(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-variable"): g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"}


def _circles(panel: ET.Element) -> list[ET.Element]:
    return [c for c in panel.iter(f"{SVG}circle") if c.get("class") == "run"]


# ----------------------------------------------------------------------------- an lr x rank sweep, two epochs

LRS = [1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-2]
RANKS = [8, 16, 8, 16, 8, 16]
RUNS = [f"run_00{i}" for i in range(6)]
# count_mc/acc per epoch. run_004's lm_eval@epoch_1 failed; run_005's training failed, yet (evaluated from
# a checkpoint it saved) it reports the best scores of all: they must never be averaged or ranked.
ACC = {"run_000": (0.30, 0.40), "run_001": (0.35, 0.50), "run_002": (0.45, 0.70), "run_003": (0.50, 0.60),
       "run_004": (0.55, None), "run_005": (0.90, 0.99)}
HELD = {"run_000": (2.0, 1.8), "run_001": (1.9, 1.7), "run_002": (1.6, 1.5), "run_003": (1.7, 1.55),
        "run_004": (1.5, 1.4), "run_005": (1.0, 0.9)}
FINAL = {"run_000": 2.5, "run_001": 2.4, "run_002": 2.0, "run_003": 2.1, "run_004": 1.9, "run_005": 1.0}


@pytest.fixture
def sweep(make_experiment_dir) -> Path:
    exp = make_experiment_dir([{"optimizer.lr": lr, "model.lora_rank": r} for lr, r in zip(LRS, RANKS)], name="evals")
    _evaluated(exp, TWO_EPOCHS, EvaluationPlan(primary_metric="count_mc/acc"))
    for rid in RUNS:
        _trained(exp, rid, FINAL[rid], State.FAILED if rid == "run_005" else State.COMPLETED)
        for epoch in (0, 1):
            _result(exp, rid, HELDOUT, epoch, {"heldout_loss": HELD[rid][epoch]})
            if ACC[rid][epoch] is not None:
                acc = ACC[rid][epoch]
                _result(exp, rid, LM_EVAL, epoch, {"count_mc/acc": acc, "count_mc/acc_norm": acc - 0.25})
        if rid != "run_005":
            lm_eval_1 = "failed" if rid == "run_004" else "completed"
            _eval_record(exp, rid, State.FAILED if rid == "run_004" else State.COMPLETED,
                         {"heldout@epoch_0": "completed", "lm_eval@epoch_0": "completed",
                          "heldout@epoch_1": "completed", "lm_eval@epoch_1": lm_eval_1})
    return exp


def test_each_metric_is_a_column_after_the_training_ones_and_each_epoch_one_more(sweep):
    rows = _csv(collect(sweep))
    columns = list(rows[0])
    assert columns[columns.index("wall_time_s"):] == [
        "wall_time_s", "eval", "heldout_loss", "count_mc/acc", "count_mc/acc_norm",
        "heldout_loss@epoch_0", "heldout_loss@epoch_1", "count_mc/acc@epoch_0", "count_mc/acc@epoch_1",
        "count_mc/acc_norm@epoch_0", "count_mc/acc_norm@epoch_1"]
    by_id = {r["run_id"]: r for r in rows}
    for rid in ("run_000", "run_001", "run_002", "run_003"):  # the unsuffixed column: the last epoch
        assert float(by_id[rid]["count_mc/acc"]) == ACC[rid][1] == float(by_id[rid]["count_mc/acc@epoch_1"])
        assert float(by_id[rid]["count_mc/acc@epoch_0"]) == ACC[rid][0]
        assert float(by_id[rid]["heldout_loss"]) == HELD[rid][1]
        assert by_id[rid]["eval"] == "completed"
    # run_004's last lm_eval failed: an empty cell, not its epoch-0 score passed off as its final one
    assert by_id["run_004"]["count_mc/acc"] == by_id["run_004"]["count_mc/acc@epoch_1"] == ""
    assert float(by_id["run_004"]["count_mc/acc@epoch_0"]) == 0.55
    assert float(by_id["run_004"]["heldout_loss"]) == 1.4
    assert by_id["run_004"]["eval"] == "3/4 (1 failed)"
    # a failed training's evaluation is shown as it is (the training's status says what it is worth)
    assert by_id["run_005"]["status"] == "failed" and float(by_id["run_005"]["count_mc/acc"]) == 0.99


def test_results_md_names_the_primary_metric_its_direction_and_the_best_completed_run(sweep):
    collect(sweep)
    md = _md(sweep)
    first = md.split("\n\n")[1]
    assert first == ("Primary metric: **count_mc/acc ↑** (higher is better; evaluation.primary_metric). "
                     "Best run: run_002 (model.lora_rank=8, optimizer.lr=0.001) with 0.7000.")
    assert "| run_002 | 8 | 0.001 | completed |" in md  # the per-run table shows the metrics to 4 decimals
    assert "| completed | 1.5000 | 0.7000 | 0.4500 |" in md
    assert ("Evaluations (the eval column: how many of a run's evaluations completed): completed for 5 runs, "
            "3/4 (1 failed) for 1 run.") in md


def test_by_variable_compares_values_by_the_primary_metric_over_completed_runs_only(sweep):
    collect(sweep)
    by_var = _md(sweep).split("## By variable")[1]
    assert ("| optimizer.lr | runs | completed | n | mean count_mc/acc ↑ | best count_mc/acc ↑ | mean final_loss ↓ |"
            in by_var)
    assert f"| 0.0001 | 2 | 2 | 2 | {(0.4 + 0.5) / 2:.4f} | 0.5000 | {(2.5 + 2.4) / 2:.4f} |" in by_var
    assert f"| 0.001 | 2 | 2 | 2 | {(0.7 + 0.6) / 2:.4f} | 0.7000 | {(2.0 + 2.1) / 2:.4f} |" in by_var
    # 0.01: run_004 completed without a final score, run_005's 0.99 is a failed training's
    assert "| 0.01 | 2 | 1 | 0 |  |  | 1.9000 |" in by_var
    assert f"| 8 | 3 | 3 | 2 | {(0.4 + 0.7) / 2:.4f} | 0.7000 | {(2.5 + 2.0 + 1.9) / 3:.4f} |" in by_var
    assert "(↑: higher is better)" in by_var


def test_the_metric_plot_has_a_panel_per_variable_and_a_point_per_completed_run(sweep):
    collect(sweep)
    assert f"![count_mc/acc ↑ by variable]({expdir.METRIC_PLOT})" in _md(sweep)
    root = _svg(sweep)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert any("count_mc/acc ↑ (higher is better)" in (t or "") for t in texts)
    panels = _panels(root)
    assert list(panels) == ["model.lora_rank", "optimizer.lr"]
    for panel in panels.values():  # run_000..run_003: completed with a final score
        assert len(_circles(panel)) == 4
    lr = panels["optimizer.lr"]
    labels = [t.text for t in lr.iter(f"{SVG}text")]
    # the axis spans the sweep (two decades: a log scale), 0.01 too, though no completed run there has a score
    assert "optimizer.lr (log scale)" in labels and {"0.0001", "0.001", "0.01"} <= set(labels)
    assert "count_mc/acc" in labels  # the y axis says what it measures
    # higher scores are drawn higher: run_002 (0.70) above run_000 (0.40)
    cy = {c.find(f"{SVG}title").text.split(":")[0]: float(c.get("cy")) for c in _circles(lr)}
    assert cy["run_002"] < cy["run_003"] < cy["run_001"] < cy["run_000"]
    mean_line = next(p for p in lr.iter(f"{SVG}polyline") if p.get("class") == "mean")
    assert len(mean_line.get("points").split()) == 2  # lr=0.01 has no completed score to average


def test_metric_overrides_the_primary_and_its_direction_follows_the_name(sweep):
    collect(sweep, metric="heldout_loss")
    md = _md(sweep)
    assert ("Primary metric: **heldout_loss ↓** (lower is better; collect --metric). "
            "Best run: run_004 (model.lora_rank=8, optimizer.lr=0.01) with 1.4000.") in md
    assert "| mean heldout_loss ↓ | best heldout_loss ↓ | mean final_loss ↓ |" in md
    assert any("heldout_loss ↓ (lower is better)" in (t.text or "") for t in _svg(sweep).iter(f"{SVG}text"))


def test_collect_command_takes_metric_and_goal(sweep):
    result = CliRunner().invoke(main, ["collect", str(sweep), "--metric", "count_mc/acc@epoch_0", "--goal", "min"])
    assert result.exit_code == 0, result.output
    assert ("Primary metric: **count_mc/acc@epoch_0 ↓** (lower is better; collect --metric). "
            "Best run: run_000 (model.lora_rank=8, optimizer.lr=0.0001) with 0.3000.") in result.output
    assert f"wrote {sweep / 'results.csv'}" in result.output


def test_an_unknown_metric_is_one_clear_error_naming_the_columns_and_writes_nothing(sweep):
    result = CliRunner().invoke(main, ["collect", str(sweep), "--metric", "count_mc/accc"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: the results have no metric 'count_mc/accc'; they have: final_loss, min_loss," in result.output
    assert "heldout_loss@epoch_1" in result.output and "Did you mean 'count_mc/acc'" in result.output
    assert not (sweep / "results.csv").exists() and not (sweep / "results.md").exists()
    with pytest.raises(UnknownMetricError, match="no metric 'eval'"):
        collect(sweep, metric="eval")  # the state column is no metric


# ----------------------------------------------------------------------------- choosing the primary metric


def test_without_a_primary_metric_the_first_column_ranks_and_the_order_follows_the_mapping(make_experiment_dir):
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}]),
                     [(HELDOUT, 0), (LM_EVAL, 0)])
    for rid in ("run_000", "run_001"):
        _trained(exp, rid, 2.0)
    # Only run_001 has a heldout result, and run_000 reports lm_eval first: the columns follow the
    # mapping's entries all the same, so they do not move as evaluations finish.
    _result(exp, "run_000", LM_EVAL, 0, {"count_mc/acc": 0.5})
    _result(exp, "run_001", LM_EVAL, 0, {"count_mc/acc": 0.6})
    _result(exp, "run_001", HELDOUT, 0, {"heldout_loss": 1.25})
    rows = _csv(collect(exp))
    assert list(rows[0])[-3:] == ["eval", "heldout_loss", "count_mc/acc"]  # one epoch: no @epoch columns
    assert [r["eval"] for r in rows] == ["1/2", "completed"]
    assert ("Primary metric: **heldout_loss ↓** (lower is better; the first evaluation metric). "
            "Best run: run_001 (optimizer.lr=0.003) with 1.2500.") in _md(exp)


def test_the_plans_goal_wins_over_the_name(make_experiment_dir):
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}]), [(LM_EVAL, 0)],
                     EvaluationPlan(goal="min"))
    for rid, acc in (("run_000", 0.5), ("run_001", 0.6)):
        _trained(exp, rid, 2.0)
        _result(exp, rid, LM_EVAL, 0, {"count_mc/acc": acc})
    collect(exp)
    assert "Primary metric: **count_mc/acc ↓** (lower is better;" in _md(exp)
    assert "Best run: run_000 (optimizer.lr=0.001) with 0.5000." in _md(exp)
    collect(exp, metric="final_loss")  # the plan's goal is the plan's metric's, not --metric's
    assert "Primary metric: **final_loss ↓**" in _md(exp)


def test_a_primary_metric_no_run_reported_is_said_plainly_and_gets_an_empty_column(make_experiment_dir):
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}]), [(HELDOUT, 0)],
                     EvaluationPlan(primary_metric="gsm8k/exact_match"))
    for rid, loss in (("run_000", 1.5), ("run_001", 1.25)):
        _trained(exp, rid, 2.0)
        _result(exp, rid, HELDOUT, 0, {"heldout_loss": loss})
    rows = _csv(collect(exp))
    assert list(rows[0])[-3:] == ["eval", "heldout_loss", "gsm8k/exact_match"]
    assert [r["gsm8k/exact_match"] for r in rows] == ["", ""]
    assert ("Primary metric: **gsm8k/exact_match ↑** (higher is better; evaluation.primary_metric). "
            "**No run has reported gsm8k/exact_match yet**; the evaluations reported heldout_loss "
            "(rank by one with `collect --metric NAME`).") in _md(exp)
    assert not (exp / expdir.METRIC_PLOT).exists()
    collect(exp, metric="heldout_loss")
    assert (exp / expdir.METRIC_PLOT).exists() and "Best run: run_001 (optimizer.lr=0.003) with 1.2500." in _md(exp)
    collect(exp)  # back to a metric with nothing to plot: the other metric's plot is not left behind
    assert not (exp / expdir.METRIC_PLOT).exists()


def test_without_evaluations_final_loss_is_primary_and_nothing_else_changes(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    _trained(exp, "run_000", 2.0)
    _trained(exp, "run_001", 1.5)
    rows = _csv(collect(exp))
    assert list(rows[0])[-1] == "wall_time_s" and "eval" not in rows[0]
    assert ("Primary metric: **final_loss ↓** (lower is better; training loss: no evaluation metric). "
            "Best run: run_001 (optimizer.lr=0.003) with 1.5000.") in _md(exp)
    assert "| optimizer.lr | runs | completed | n | mean final_loss ↓ | best final_loss ↓ |" in _md(exp)
    assert len(_circles(_panels(_svg(exp))["optimizer.lr"])) == 2


@pytest.mark.parametrize("name, goal", [
    ("heldout_loss", "min"), ("wikitext/word_perplexity", "min"), ("wikitext/bits_per_byte", "min"),
    ("asr/wer", "min"), ("lambada/ppl", "min"), ("count_mc/acc", "max"), ("count_mc/acc_norm", "max"),
    ("squad/answer_f1", "max"), ("gsm8k/exact_match", "max"),
])
def test_the_goal_is_inferred_from_the_metrics_name(name, goal):
    assert infer_goal(name) == goal


# ----------------------------------------------------------------------------- evaluation states


def test_the_eval_column_says_how_far_each_runs_evaluations_got(make_experiment_dir):
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": lr} for lr in (1e-4, 1e-3, 1e-2, 1e-1)]),
                     [(HELDOUT, 0), (LM_EVAL, 0)])
    for rid in ("run_000", "run_001", "run_002", "run_003"):
        _trained(exp, rid, 2.0)
    # run_000: nothing yet. run_001: heldout done, lm_eval running.
    _result(exp, "run_001", HELDOUT, 0, {"heldout_loss": 1.5})
    _eval_record(exp, "run_001", State.RUNNING, {"heldout@epoch_0": "completed", "lm_eval@epoch_0": "running"})
    _eval_record(exp, "run_002", State.FAILED)  # the job died before its first evaluation
    # run_003's record says both completed, but neither result can be read: no metric, so failed
    _eval_record(exp, "run_003", State.COMPLETED, {"heldout@epoch_0": "completed", "lm_eval@epoch_0": "completed"})
    _result(exp, "run_003", HELDOUT, 0, {"heldout_loss": 1.0}).write_text("{not json")
    rows = _csv(collect(exp))
    assert [r["eval"] for r in rows] == ["pending", "1/2", "failed", "failed"]
    assert [r["heldout_loss"] for r in rows] == ["", "1.5", "", ""]
    assert "completed): pending for 1 run, 1/2 for 1 run, failed for 2 runs." in _md(exp)


def test_a_result_older_than_the_training_is_of_other_weights_and_left_out(make_experiment_dir):
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": 1e-3}]), [(HELDOUT, 0)])
    _trained(exp, "run_000", 2.0)  # started at T0 (trained again with --force, say)
    old = _result(exp, "run_000", HELDOUT, 0, {"heldout_loss": 1.5})
    os.utime(old, (T0 - 600,) * 2)  # written by the evaluation of the previous training
    row = _csv(collect(exp))[0]
    assert "heldout_loss" not in row and row["eval"] == "pending"  # no run reported it: no column yet


# ----------------------------------------------------------------------------- seeds


def test_with_seeds_configurations_average_evaluation_metrics_and_the_best_is_a_configuration(make_experiment_dir):
    # configuration 0 has one lucky seed (0.9) but the lower mean; configuration 1 is better on average
    acc = {"run_000": 0.9, "run_001": 0.3, "run_002": 0.7, "run_003": 0.75}
    exp = _evaluated(make_experiment_dir([{"optimizer.lr": lr} for lr in (1e-3, 1e-3, 3e-3, 3e-3)], seeds=[1, 2, 1, 2]),
                     [(LM_EVAL, 0)])
    for rid, value in acc.items():
        _trained(exp, rid, 2.0)
        _result(exp, rid, LM_EVAL, 0, {"count_mc/acc": value})
    collect(exp)
    md = _md(exp)
    assert ("Primary metric: **count_mc/acc ↑** (higher is better; the first evaluation metric). "
            "Best configuration: 1 (optimizer.lr=0.003) with mean 0.7250 over 2 completed seeds.") in md
    section = md.split("## By configuration")[1].split("## By variable")[0]
    assert "| wall_time_s n | count_mc/acc | count_mc/acc n |" in section
    sd0 = math.sqrt(((0.9 - 0.6) ** 2 + (0.3 - 0.6) ** 2) / 1)
    sd1 = math.sqrt(((0.7 - 0.725) ** 2 + (0.75 - 0.725) ** 2) / 1)
    lines = section.splitlines()
    assert next(line for line in lines if line.startswith("| 0 |")).endswith(f"| 0.6000 ± {sd0:.4f} | 2 |")
    assert next(line for line in lines if line.startswith("| 1 |")).endswith(f"| 0.7250 ± {sd1:.4f} | 2 |")
    assert "| 0.001 | 2 | 2 | 2 | 0.6000 | 0.6000 |" in md  # best of lr=0.001: its configuration's mean, not 0.9


def test_a_nan_score_is_shown_but_neither_averaged_nor_ranked():
    rows = [{"run_id": "run_000", "lr": 0.1, "status": "completed", "acc": math.nan, "final_loss": 2.0},
            {"run_id": "run_001", "lr": 0.1, "status": "completed", "acc": 0.5, "final_loss": 3.0}]
    assert "| 0.1 | 2 | 2 | 1 | 0.5000 | 0.5000 | 2.5000 |" in by_variable(["lr"], rows, Primary("acc", "max", "test"))


# ----------------------------------------------------------------------------- the plot's axes


def test_x_axes_are_categorical_log_or_linear_as_the_values_ask():
    assert x_axis(["fp32", "bf16", "fp32"]).kind == "categorical"
    assert x_axis([1e-5, 1e-4, 1e-3]).kind == "log"
    assert x_axis([1e-4, 5e-4]).kind == "linear"  # within two decades
    assert x_axis([8, 16, 32]).kind == "linear"
    assert x_axis([4, 4]).kind == "categorical"  # a single value needs no scale
    log = x_axis([1e-5, 1e-4, 1e-3])
    assert log.where(1e-4) - log.where(1e-5) == pytest.approx(log.where(1e-3) - log.where(1e-4))


def test_a_categorical_panel_puts_each_value_at_one_place_with_its_label():
    points = [("fp32", 0.5, "run_000"), ("bf16", 0.6, "run_001"), ("fp32", 0.7, "run_002")]
    root = ET.fromstring(metric_plot_svg({"dtype": points}, Primary("acc", "max", "test"), "x & y"))
    panel = _panels(root)["dtype"]
    labels = [t.text for t in panel.iter(f"{SVG}text")]
    assert "fp32" in labels and "bf16" in labels and "dtype" in labels
    cx = [float(c.get("cx")) for c in _circles(panel)]
    assert cx[0] == cx[2] != cx[1]
    mean_line = next(p for p in panel.iter(f"{SVG}polyline") if p.get("class") == "mean")
    assert len(mean_line.get("points").split()) == 2
    assert any("x & y" in (t.text or "") for t in root.iter(f"{SVG}text"))  # escaped, and still readable
