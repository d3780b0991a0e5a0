"""Results follow the experiment language: run names, seeds aggregated per configuration, derived values.

The experiment directories are written by hand through the contract (conftest's factory), the
metric logs in DiskLogger's line format; every expected number is computed here, by hand.
"""

from __future__ import annotations

import csv
import math
import re
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from torchtune_config_writer.cli import main
from torchtune_config_writer.execute.slurm_state import format_status, run_states
from torchtune_config_writer.expdir import State, StatusRecord, load_mapping, write_status
from torchtune_config_writer.results.collect import by_variable, collect, collect_rows

SVG = "{http://www.w3.org/2000/svg}"
T0 = int(time.time()) - 3600  # every attempt "started" an hour ago; its log is written now, after that


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).isoformat()


def _log(exp: Path, run_id: str, losses: list[float], tokens_per_s: float) -> None:
    """A metric log as torchtune's DiskLogger writes it: ``Step N | name:value name:value \\n`` per step."""
    logs = exp / "runs" / run_id / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lines = [f"Step {step} | loss:{loss} lr:0.001 tokens_per_second_per_gpu:{tokens_per_s} \n"
             for step, loss in enumerate(losses, start=1)]
    (logs / f"log_{T0}.txt").write_text("".join(lines))


def _ended(exp: Path, run_id: str, state: State, wall_s: int) -> None:
    write_status(exp, StatusRecord(run_id, state, exit_code=0 if state == State.COMPLETED else 1,
                                   started=_iso(T0), ended=_iso(T0 + wall_s)))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sd(values: list[float]) -> float:
    """Sample standard deviation (n - 1), by hand."""
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Two learning rates, three seeds each. lr=0.001: every seed completes. lr=0.003: seed 1 completes,
# seed 2 fails after logging a low loss (which must not be averaged), seed 3 never started.
LRS = [1e-3] * 3 + [3e-3] * 3
SEEDS = [1, 2, 3, 1, 2, 3]
NAMES = [f"lr{lr}-s{seed}" for lr, seed in zip(LRS, SEEDS)]
ACCUM = [2, 2, 2, 4, 4, 4]  # derived: gradient_accumulation_steps = f(lr)
FINAL = {"run_000": 2.0, "run_001": 2.5, "run_002": 3.5, "run_003": 1.25, "run_004": 0.5}
TOKENS = {"run_000": 1000.0, "run_001": 1100.0, "run_002": 1300.0, "run_003": 900.0, "run_004": 50.0}
WALL = {"run_000": 60, "run_001": 90, "run_002": 120, "run_003": 30, "run_004": 10}


@pytest.fixture
def seeded(make_experiment_dir) -> Path:
    exp = make_experiment_dir([{"optimizer.lr": lr} for lr in LRS], name="seeded", names=NAMES, seeds=SEEDS,
                              derived=[{"gradient_accumulation_steps": a} for a in ACCUM])
    for rid, final in FINAL.items():
        _log(exp, rid, [5.0, final - 0.25, final], TOKENS[rid])  # min_loss = final - 0.25
        _ended(exp, rid, State.FAILED if rid == "run_004" else State.COMPLETED, WALL[rid])
    return exp


def test_the_factory_writes_the_language_fields_through_the_contract(seeded):
    mapping = load_mapping(seeded)
    assert mapping.seeded and mapping.variables == ("optimizer.lr", "seed")
    assert mapping.derived == ("gradient_accumulation_steps",)
    assert [r.configuration for r in mapping.runs] == [0, 0, 0, 1, 1, 1]
    assert [(r.name, r.seed, r.parameters["seed"]) for r in mapping.runs][4] == ("lr0.003-s2", 2, 2)
    assert "seed: 2" in (seeded / mapping.runs[4].config).read_text()


def test_results_csv_has_name_configuration_seed_and_derived_columns(seeded):
    rows = _csv(collect(seeded))
    assert list(rows[0]) == [
        "run_id", "name", "configuration", "optimizer.lr", "seed", "gradient_accumulation_steps",
        "status", "exit_code", "steps", "final_loss", "min_loss", "mean_tokens_per_s", "wall_time_s"]
    assert [r["name"] for r in rows] == NAMES
    assert [r["configuration"] for r in rows] == ["0", "0", "0", "1", "1", "1"]
    assert [r["seed"] for r in rows] == ["1", "2", "3", "1", "2", "3"]
    assert [r["gradient_accumulation_steps"] for r in rows] == ["2", "2", "2", "4", "4", "4"]
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed", "pending"]
    assert float(rows[4]["final_loss"]) == 0.5  # the per-run table shows what the failed run logged


def test_seeds_are_aggregated_per_configuration(seeded):
    collect(seeded)
    md = (seeded / "results.md").read_text(encoding="utf-8")
    section = md.split("## By configuration")[1].split("## By variable")[0]
    assert ("| configuration | optimizer.lr | seeds | completed | final_loss | final_loss n | min_loss | min_loss n"
            " | mean_tokens_per_s | mean_tokens_per_s n | wall_time_s | wall_time_s n |") in section
    done = ["run_000", "run_001", "run_002"]
    final = [FINAL[r] for r in done]
    minimum = [FINAL[r] - 0.25 for r in done]
    tokens = [TOKENS[r] for r in done]
    wall = [float(WALL[r]) for r in done]
    assert (f"| 0 | 0.001 | 3 | 3 | {_mean(final):.4f} ± {_sd(final):.4f} | 3 "
            f"| {_mean(minimum):.4f} ± {_sd(minimum):.4f} | 3 "
            f"| {_mean(tokens):.1f} ± {_sd(tokens):.1f} | 3 | {_mean(wall):.1f} ± {_sd(wall):.1f} | 3 |") in section
    assert "| 0 | 0.001 | 3 | 3 | 2.6667 ± 0.7638 | 3 |" in section  # the same, written out once
    # One completed seed: its value, no deviation; the failed seed's 0.5 and the pending seed are not averaged.
    assert "| 1 | 0.003 | 3 | 1 | 1.2500 ± - | 1 | 1.0000 ± - | 1 | 900.0 ± - | 1 | 30.0 ± - | 1 |" in section


def test_by_variable_leaves_the_seed_out_and_counts_what_it_averages(seeded):
    collect(seeded)
    md = (seeded / "results.md").read_text(encoding="utf-8")
    by_var = md.split("## By variable")[1]
    assert "### optimizer.lr" in by_var and "### seed" not in by_var
    final = [FINAL[r] for r in ("run_000", "run_001", "run_002")]
    assert f"| 0.001 | 3 | 3 | 3 | {_mean(final):.4f} | {_mean(final):.4f} |" in by_var
    assert "| 0.003 | 3 | 1 | 1 | 1.2500 | 1.2500 |" in by_var


def test_best_final_loss_with_seeds_is_a_configurations_mean_not_a_lucky_seed():
    rows = [  # lr 0.1 in two configurations of two seeds each; one seed of configuration 0 is lucky
        {"configuration": 0, "lr": 0.1, "status": "completed", "final_loss": 1.0},
        {"configuration": 0, "lr": 0.1, "status": "completed", "final_loss": 3.0},
        {"configuration": 1, "lr": 0.1, "status": "completed", "final_loss": 2.5},
        {"configuration": 1, "lr": 0.1, "status": "completed", "final_loss": 2.25},
        {"configuration": 2, "lr": 0.2, "status": "running", "final_loss": 0.1},
    ]
    md = by_variable(["lr"], rows)
    pooled = _mean([1.0, 3.0, 2.5, 2.25])
    best = min(_mean([1.0, 3.0]), _mean([2.5, 2.25]))
    assert f"| 0.1 | 4 | 4 | 4 | {pooled:.4f} | {best:.4f} |" in md
    assert "| 0.2 | 1 | 0 | 0 |  |  |" in md  # a running run's loss is no result yet


def test_results_md_shows_names(seeded):
    collect(seeded)
    md = (seeded / "results.md").read_text(encoding="utf-8")
    assert ("| run_id | name | configuration | optimizer.lr | seed | gradient_accumulation_steps | status |"
            in md)
    assert "| run_004 | lr0.003-s2 | 1 | 0.003 | 2 | 4 | failed | 1 | 3 | 0.5000 |" in md
    assert "6 runs: 4 completed, 1 failed, 1 pending" in md


def test_plot_legend_names_the_runs(seeded):
    collect(seeded)
    root = ET.fromstring((seeded / "loss_curves.svg").read_text(encoding="utf-8"))
    assert len(root.findall(f"{SVG}polyline")) == 5  # the pending run logged nothing
    texts = {t.text for t in root.findall(f"{SVG}text")}
    assert set(NAMES[:5]) <= texts and NAMES[5] not in texts
    assert not any(t and t.startswith("run_0") for t in texts)  # named runs are not labelled by id


def test_unnamed_runs_keep_their_id_and_parameters_in_the_legend_and_shared_names_stay_apart(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}, {"optimizer.lr": 1e-2}],
                              names=["same", None, "same"])
    for rid in ("run_000", "run_001", "run_002"):
        _log(exp, rid, [4.0, 3.0], 10.0)
        _ended(exp, rid, State.COMPLETED, 5)
    collect(exp)
    root = ET.fromstring((exp / "loss_curves.svg").read_text(encoding="utf-8"))
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert "same" in texts and "run_001 lr=0.003" in texts and "same (run_002)" in texts
    assert len(root.findall(f"{SVG}polyline")) == 3


def test_without_names_or_seeds_the_identity_columns_are_empty_in_csv_and_absent_in_md(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    rows = _csv(collect(exp))
    assert [(r["name"], r["configuration"], r["seed"]) for r in rows] == [("", "0", ""), ("", "1", "")]
    md = (exp / "results.md").read_text(encoding="utf-8")
    assert "| run_id | optimizer.lr | status |" in md
    assert "By configuration" not in md and "| name |" not in md


def test_a_seed_variable_without_seeds_is_an_ordinary_variable(make_experiment_dir):
    exp = make_experiment_dir([{"seed": 1}, {"seed": 2}])
    columns, rows = collect_rows(exp)
    assert columns.count("seed") == 1 and [r["seed"] for r in rows] == [1, 2]
    assert [r["configuration"] for r in rows] == [0, 1]
    collect(exp)
    md = (exp / "results.md").read_text(encoding="utf-8")
    assert "### seed" in md and "By configuration" not in md


# ----------------------------------------------------------------------------- status


def _status_lines(exp: Path) -> list[str]:
    result = CliRunner().invoke(main, ["status", "--no-slurm", str(exp)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_status_shows_names_next_to_run_ids(seeded):
    lines = _status_lines(seeded)
    assert re.match(r"RUN +NAME +PARAMETERS +STATE +EXIT +WALL +JOB$", lines[0])
    assert re.match(r"run_000 +lr0\.001-s1 +lr=0\.001 seed=1 +completed +0 +1m00s +-$", lines[1]), lines[1]
    assert re.match(r"run_004 +lr0\.003-s2 +lr=0\.003 seed=2 +failed +1 +10s +-$", lines[5]), lines[5]
    assert re.match(r"run_005 +lr0\.003-s3 +lr=0\.003 seed=3 +pending +- +- +-$", lines[6]), lines[6]


def test_status_marks_unnamed_runs_and_has_no_name_column_without_names(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}], names=["small", None])
    states = run_states(exp, use_slurm=False)
    table = format_status(states, load_mapping(exp).variables).splitlines()
    assert re.match(r"run_000 +small +lr=0\.001 +pending", table[1]) and re.match(r"run_001 +- +lr=0\.003", table[2])
    plain = make_experiment_dir([{"optimizer.lr": 1e-3}])
    lines = _status_lines(plain)
    assert re.match(r"RUN +PARAMETERS +STATE", lines[0]) and re.match(r"run_000 +lr=0\.001 +pending", lines[1])
