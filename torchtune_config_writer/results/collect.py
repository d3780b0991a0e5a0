"""Collect the runs' metrics into results.csv and results.md.

For each run of ``run_mapping.yaml``: its parameters, its status record, and
what torchtune's DiskLogger wrote (``Step 3 | loss:6.37 lr:0.00029
tokens_per_second_per_gpu:27375.6``) under the metric log directory that
run_mapping.yaml records for it (resolved at generation: no config is parsed
here). A run without logs or status gets empty cells, never an error.

    >>> path = collect("outputs/tiny_rank_lr")          # doctest: +SKIP
    >>> print(path.with_suffix(".md").read_text())       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from ..expdir import (
    LOSS_PLOT, RESULTS_CSV, RESULTS_MD, MetricLog, RunEntry, RunMapping, State, StatusRecord, format_parameters,
    load_mapping, read_all,
)
from .plots import loss_plot_svg

METRIC_COLUMNS = ["status", "exit_code", "steps", "final_loss", "min_loss", "mean_tokens_per_s", "wall_time_s"]

_STEP_LINE = re.compile(r"^Step (\d+) \| (.*)$")
_PAIR = re.compile(r"(\S+?):(\S+)")


def parse_disk_log(text: str) -> dict[int, dict[str, float]]:
    """Metrics per step from DiskLogger lines (later lines of a step add to or replace earlier ones).

    >>> parse_disk_log("Step 1 | loss:6.4 lr:0.001 \\nStep 2 | loss:6.1 tokens_per_second_per_gpu:900.5 \\n")
    {1: {'loss': 6.4, 'lr': 0.001}, 2: {'loss': 6.1, 'tokens_per_second_per_gpu': 900.5}}
    """
    steps: dict[int, dict[str, float]] = {}
    for line in text.splitlines():
        m = _STEP_LINE.match(line.strip())
        if not m:
            continue
        metrics = steps.setdefault(int(m.group(1)), {})
        for name, value in _PAIR.findall(m.group(2)):
            try:
                metrics[name] = float(value)
            except ValueError:
                pass  # a non-numeric value (a logged string): not a metric we summarize
    return steps


def summarize(steps: dict[int, dict[str, float]]) -> dict[str, Any]:
    """steps, final_loss, min_loss and mean_tokens_per_s of parsed log lines (None where absent).

    >>> summarize({1: {"loss": 6.0, "tokens_per_second_per_gpu": 10.0}, 2: {"loss": 5.0}})
    {'steps': 2, 'final_loss': 5.0, 'min_loss': 5.0, 'mean_tokens_per_s': 10.0}
    """
    losses = [(s, m["loss"]) for s, m in sorted(steps.items()) if "loss" in m]
    tps = [m["tokens_per_second_per_gpu"] for m in steps.values() if "tokens_per_second_per_gpu" in m]
    return {
        "steps": max(steps) if steps else None,
        "final_loss": losses[-1][1] if losses else None,
        "min_loss": min(v for _, v in losses) if losses else None,
        "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
    }


def metric_log_file(log: MetricLog | None, started: str | None = None) -> Path | None:
    """The DiskLogger file of a run's latest attempt, or None.

    Each attempt writes a new ``log_<time>.txt`` into the run's log directory
    (unless the config fixes a file name), so the newest file written since the
    run's ``started`` time is the one.
    """
    if log is None:
        return None  # metrics went to another logger (wandb, tensorboard...)
    log_dir = Path(log.dir)
    if not log_dir.is_dir():
        return None
    files = [log_dir / log.filename] if log.filename else list(log_dir.glob("*.txt"))
    files = [f for f in files if f.is_file()]
    if started:
        try:
            t0 = datetime.fromisoformat(started).timestamp() - 1  # status times have whole seconds
            files = [f for f in files if f.stat().st_mtime >= t0]
        except ValueError:
            pass
    return max(files, key=lambda f: f.stat().st_mtime) if files else None


def run_steps(run: RunEntry, record: StatusRecord) -> dict[int, dict[str, float]]:
    """The metrics a run logged, per step ({} when it logged nothing yet)."""
    log = metric_log_file(run.metric_log, record.started)
    try:
        return parse_disk_log(log.read_text(errors="replace")) if log else {}
    except OSError:
        return {}


Row = tuple[RunEntry, StatusRecord, dict[int, dict[str, float]]]


def collect_rows(exp_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one row per run) of an experiment directory."""
    exp = Path(exp_dir)
    mapping = load_mapping(exp)
    return _table(mapping, _runs_with_steps(exp, mapping))


def _runs_with_steps(exp: Path, mapping: RunMapping) -> list[Row]:
    """(run, status record, logged metrics per step) for every run, in index order: read once."""
    statuses = read_all(exp, mapping)
    runs = sorted(mapping.runs, key=lambda r: r.index)
    return [(run, statuses[run.run_id], run_steps(run, statuses[run.run_id])) for run in runs]


def _table(mapping: RunMapping, runs: list[Row]) -> tuple[list[str], list[dict[str, Any]]]:
    variables = list(mapping.variables)
    rows = []
    for run, rec, steps in runs:
        row: dict[str, Any] = {"run_id": run.run_id, **{v: run.parameters.get(v) for v in variables}}
        row.update(status=str(rec.state), exit_code=rec.exit_code)
        row.update(summarize(steps))
        row["wall_time_s"] = rec.wall_seconds()
        rows.append(row)
    return ["run_id", *variables, *METRIC_COLUMNS], rows


def _cell(value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_MD_DIGITS = {"final_loss": 4, "min_loss": 4, "mean_tokens_per_s": 1, "wall_time_s": 1,
              "mean_final_loss": 4, "best_final_loss": 4}


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """A GitHub-markdown table of the rows (losses to 4 decimals, rates and times to 1)."""
    def cell(col: str, value: Any) -> str:
        return _cell(value, _MD_DIGITS.get(col)).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def by_variable(variables: list[str], rows: list[dict[str, Any]]) -> str:
    """One markdown table per variable: for each of its values, how the runs with it did.

    The question a sweep asks is "what did this variable do?", so each value gets the mean and
    the best final loss over the completed runs that used it (the other variables averaged out).
    """
    sections = []
    for var in variables:
        values: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            values.setdefault(_cell(r.get(var)), []).append(r)
        table_rows = []
        for value, group in values.items():
            losses = [r["final_loss"] for r in group if r.get("status") == State.COMPLETED and r.get("final_loss") is not None]
            table_rows.append({
                var: value,
                "runs": len(group),
                "completed": sum(r.get("status") == State.COMPLETED for r in group),
                "mean_final_loss": sum(losses) / len(losses) if losses else None,
                "best_final_loss": min(losses) if losses else None,
            })
        columns = [var, "runs", "completed", "mean_final_loss", "best_final_loss"]
        sections.append(f"### {var}\n\n{markdown_table(columns, table_rows)}")
    return "\n\n".join(sections)


def collect(exp_dir: str | Path) -> Path:
    """Write results.csv and results.md into the experiment directory; return the csv's path.

    >>> collect("outputs/tiny_rank_lr")        # doctest: +SKIP
    PosixPath('outputs/tiny_rank_lr/results.csv')
    """
    exp = Path(exp_dir)
    mapping = load_mapping(exp)
    runs = _runs_with_steps(exp, mapping)
    columns, rows = _table(mapping, runs)
    csv_path = exp / RESULTS_CSV
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[_cell(r.get(c)) for c in columns] for r in rows])
    name = mapping.experiment_name
    counts = Counter(r["status"] for r in rows)
    md = (
        f"# Results: {name}\n\n{markdown_table(columns, rows)}\n\n"
        f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". "
        "Losses and tokens/s from each run's DiskLogger log; wall time from status/.\n"
    )
    if mapping.variables:
        md += f"\n## By variable\n\n{by_variable(list(mapping.variables), rows)}\n"
    curves = {}
    for run, _, steps in runs:
        label = " ".join([run.run_id, format_parameters(run.parameters, short=True, sep=" ")]).strip()
        curves[label] = [(step, m["loss"]) for step, m in sorted(steps.items()) if "loss" in m]
    if any(curves.values()):
        (exp / LOSS_PLOT).write_text(loss_plot_svg(curves, f"Training loss: {name}"))
        md += f"\n![training loss per run]({LOSS_PLOT})\n"
    (exp / RESULTS_MD).write_text(md)
    return csv_path
