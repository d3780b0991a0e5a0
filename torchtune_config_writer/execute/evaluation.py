"""Evaluate runs after they train: which runs may be evaluated, the command, and what it found.

A run's evaluations (``RunEntry.evaluations``: held-out loss, lm-eval,
inspect-ai per epoch) run in one child process,
``python -m torchtune_config_writer.evaluate --report R CONFIG...``, so every
checkpoint of a run is evaluated with torch, torchtune and the evaluators
imported once. The child writes one result JSON per evaluation
(``EvalResult``) and a report of each evaluation's state; the runner records
both in ``status/eval/run_NNN.json``.

    >>> eval_command(run, Path("/tmp/r.json"))[-1]           # doctest: +SKIP
    'eval/run_000/epoch_0.lm_eval.yaml'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..errors import RunNotRunnableError
from ..expdir import (
    EvalResult, RunEntry, State, eval_status_path, read_eval_result, read_status, written_before,
)
from .selection import config_sha256

#: The module the evaluation child runs.
EVALUATE_MODULE = "torchtune_config_writer.evaluate"


def eval_command(run: RunEntry, report: Path, *, force: bool = False) -> list[str]:
    """The command line of a run's evaluation, relative to the experiment directory."""
    return [sys.executable, "-m", EVALUATE_MODULE, "--report", str(report), *(["--force"] if force else []),
            *[e.config for e in run.evaluations]]


def report_path(exp_dir: Path, run: RunEntry) -> Path:
    """Where the evaluation child writes its per-evaluation report (beside the eval status record)."""
    return eval_status_path(exp_dir, run.run_id).with_suffix(".report.json")


def check_evaluable(exp_dir: str | Path, run: RunEntry) -> None:
    """Raise ``RunNotRunnableError`` saying why ``run`` may not be evaluated (no evaluations, training not
    completed, an evaluation config missing or changed since it was validated)."""
    exp = Path(exp_dir)
    rid = run.run_id
    if not run.evaluations:
        raise RunNotRunnableError(f"{rid} has nothing to evaluate: the experiment has no evaluation: section "
                                  "(add one and generate again)")
    record = read_status(exp, rid)
    if record.state != State.COMPLETED:
        why = {State.PENDING: "it has not been trained yet", State.RUNNING: "it is still training"}.get(
            record.state, f"its training {record.state}" + (f" (exit {record.exit_code})" if record.exit_code else ""))
        raise RunNotRunnableError(f"{rid} is not evaluated: {why}; evaluation needs the checkpoints of a completed "
                                  "training run (train it with `run`, or `run --rerun-failed`)")
    problems = config_problems(exp, run)
    if problems:
        raise RunNotRunnableError(problems[0])


def config_problems(exp_dir: str | Path, run: RunEntry) -> list[str]:
    """Why the run's evaluation configs may not be used, one line each: missing, or changed since they were
    validated (as ``selection.check_runnable`` says of a training config)."""
    problems = []
    for entry in run.evaluations:
        path = Path(exp_dir) / entry.config
        if not path.is_file():
            problems.append(f"{run.run_id}: {entry.config} (an evaluation config) is missing; generate the "
                            "experiment again")
        elif entry.config_sha256 and config_sha256(path) != entry.config_sha256:
            problems.append(f"{run.run_id}: {entry.config} was changed after validation; put the change in the "
                            "experiment file's evaluation: section and generate again")
    return problems


def read_report(path: Path) -> dict[str, dict[str, Any]]:
    """The child's per-evaluation report ({} when it wrote none, e.g. it died before the first evaluation)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def evaluation_states(run: RunEntry, report: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every evaluation of the run with its state: the report's word, else ``completed`` when its result exists."""
    states = {}
    for entry in run.evaluations:
        found = report.get(entry.name)
        if found is None:
            found = {"state": State.COMPLETED.value if read_eval_result(entry.result) else State.PENDING.value}
        states[entry.name] = {"state": found.get("state"), "seconds": found.get("seconds"), "error": found.get("error")}
    return states


def drop_stale_results(exp_dir: str | Path, run: RunEntry) -> list[str]:
    """Delete results written before the run's latest training started (they judged older checkpoints);
    return their evaluation names. Without this, a retrained run would keep its old scores."""
    started = read_status(exp_dir, run.run_id).started
    dropped = []
    for entry in run.evaluations:
        try:
            if written_before(entry.result, started):
                Path(entry.result).unlink()
                dropped.append(entry.name)
        except FileNotFoundError:
            continue
    return dropped


def results_of(run: RunEntry) -> list[EvalResult]:
    """The results the run's evaluations wrote so far, in evaluation order."""
    return [r for r in (read_eval_result(e.result) for e in run.evaluations) if r is not None]


def needs_evaluation(exp_dir: str | Path, run: RunEntry, *, force: bool = False) -> bool:
    """True when the run is evaluated and (unless ``force``) some evaluation of it has no result yet."""
    if not run.evaluations:
        return False
    record = read_status(exp_dir, run.run_id, evaluation=True)
    if force:
        return True
    return record.state != State.COMPLETED or any(read_eval_result(e.result) is None for e in run.evaluations)


def summary_line(run: RunEntry) -> str:
    """``heldout_loss=1.92 count_mc/acc=0.64``: the metrics of the last evaluated epoch, for a progress line."""
    results = results_of(run)
    if not results:
        return ""
    last = max(r.epoch for r in results)
    metrics = {k: v for r in results if r.epoch == last for k, v in r.metrics.items()}
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
