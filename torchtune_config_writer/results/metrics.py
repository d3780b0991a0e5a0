"""Evaluation metrics as results columns, and the primary metric that ranks runs.

A run's evaluations (``RunEntry.evaluations``) each write an ``EvalResult``
whose metrics become results.csv columns named as the result names them
(``heldout_loss``, ``count_mc/acc``). When evaluations cover several epochs,
each metric also gets one column per epoch (``count_mc/acc@epoch_1``); the
unsuffixed column then holds the run's last evaluated epoch, so the metric
that ranks runs is always one column.

    >>> infer_goal("count_mc/acc"), infer_goal("heldout_loss"), infer_goal("wikitext/word_perplexity")
    ('max', 'min', 'min')
    >>> Primary("heldout_loss", "min", "test").label
    'heldout_loss ↓'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigWriterError, did_you_mean
from ..expdir import (
    EvalEntry, EvalResult, Evaluator, RunEntry, RunMapping, State, StatusRecord, read_eval_result,
    written_before,
)

#: The column that summarises a run's evaluation state (only when the experiment evaluates runs).
EVAL_COLUMN = "eval"
GOALS = ("max", "min")
T = TypeVar("T")

# Names of metrics where lower is better. Long words match inside a name (``word_perplexity``);
# abbreviations only as a whole part of it, so ``answer_acc`` is not mistaken for ``wer``.
_LOWER_WORDS = ("loss", "perplexity", "bits_per_byte", "error")
_LOWER_PARTS = frozenset({"ppl", "bpb", "wer", "cer", "ter", "err", "mse", "mae", "rmse", "nll"})


class UnknownMetricError(ConfigWriterError):
    """``collect --metric`` names a column the results do not have (or ``--goal`` is neither max nor min)."""


def infer_goal(metric: str) -> str:
    """``min`` for metrics where lower is better (losses, perplexities, error rates), else ``max``.

    >>> infer_goal("final_loss"), infer_goal("gsm8k/exact_match"), infer_goal("mmlu/answer_acc"), infer_goal("asr/wer")
    ('min', 'max', 'max', 'min')
    """
    name = metric.lower()
    parts = set(re.split(r"[^a-z0-9]+", name))
    return "min" if any(w in name for w in _LOWER_WORDS) or parts & _LOWER_PARTS else "max"


@dataclass(frozen=True)
class Primary:
    """The metric that ranks runs, its direction, and why it was chosen (for results.md to say).

    >>> p = Primary("count_mc/acc", "max", "evaluation.primary_metric")
    >>> p.best([0.5, 0.7]), p.arrow, p.better_word
    (0.7, '↑', 'higher')
    """

    metric: str
    goal: str
    source: str

    @property
    def arrow(self) -> str:
        return "↑" if self.goal == "max" else "↓"

    @property
    def better_word(self) -> str:
        return "higher" if self.goal == "max" else "lower"

    @property
    def label(self) -> str:
        """``count_mc/acc ↑``: the metric with its direction, for headers and plot titles."""
        return f"{self.metric} {self.arrow}"

    def best(self, values: Iterable[float]) -> float:
        return max(values) if self.goal == "max" else min(values)

    def pick(self, scored: Iterable[tuple[T, float]]) -> tuple[T, float]:
        """The best ``(item, value)`` pair; the first of equals.

        >>> Primary("loss", "min", "").pick([("a", 2.0), ("b", 1.0), ("c", 1.0)])
        ('b', 1.0)
        """
        return (max if self.goal == "max" else min)(scored, key=lambda pair: pair[1])


def choose_primary(mapping: RunMapping, eval_metrics: list[str], columns: list[str],
                   metric: str | None = None, goal: str | None = None) -> Primary:
    """The primary metric: ``metric`` (``collect --metric``), else the evaluation's ``primary_metric``,
    else the first evaluation metric found, else ``final_loss``; its goal: ``goal``, else the
    evaluation's (when the metric is the evaluation's choice), else inferred from the name.

    ``columns`` are the ones ``metric`` may name; another raises ``UnknownMetricError``.

    >>> m = RunMapping("e", "r", False, None, None, "", "", (), "passed", None, ())
    >>> choose_primary(m, ["heldout_loss", "count_mc/acc"], ["final_loss", "heldout_loss", "count_mc/acc"])
    Primary(metric='heldout_loss', goal='min', source='the first evaluation metric')
    """
    if goal is not None and goal not in GOALS:
        raise UnknownMetricError(f"--goal must be max or min, not '{goal}'")
    plan = mapping.evaluation
    if metric is not None:
        if metric not in columns:
            raise UnknownMetricError(f"the results have no metric '{metric}'; they have: {', '.join(columns)}."
                                     + did_you_mean(metric, columns))
        chosen, source = metric, "collect --metric"
    elif plan is not None and plan.primary_metric:
        chosen, source = plan.primary_metric, "evaluation.primary_metric"
    elif eval_metrics:
        chosen, source = eval_metrics[0], "the first evaluation metric"
    else:
        chosen, source = "final_loss", "training loss: no evaluation metric"
    # The plan's goal is its metric's: it does not carry over to another one picked with --metric.
    plan_choice = (plan.primary_metric or (eval_metrics[0] if eval_metrics else None)) if plan else None
    plan_goal = plan.goal if plan is not None and plan.goal in GOALS and chosen == plan_choice else None
    return Primary(chosen, goal or plan_goal or infer_goal(chosen), source)


# ----------------------------------------------------------------------------- reading evaluation results


@dataclass(frozen=True)
class MetricColumn:
    """One evaluation metric: the evaluator reporting it and every epoch that evaluator evaluates (over all runs)."""

    name: str
    evaluator: Evaluator
    epochs: tuple[int, ...]

    def epoch_column(self, epoch: int) -> str:
        return f"{self.name}@epoch_{epoch}"

    @property
    def columns(self) -> list[str]:
        """Its per-epoch columns (none when only one epoch is evaluated)."""
        return [self.epoch_column(e) for e in self.epochs] if len(self.epochs) > 1 else []


@dataclass(frozen=True)
class EvalTable:
    """The evaluation part of results.csv: its columns and, per run id, their values."""

    columns: list[str]
    """``eval`` (when any run is evaluated), the metrics, then their per-epoch columns."""
    metrics: list[str]
    """The unsuffixed metric columns, in column order."""
    cells: dict[str, dict[str, Any]]


def read_evaluations(mapping: RunMapping, trainings: Mapping[str, StatusRecord],
                     evaluations: Mapping[str, StatusRecord], known: Iterable[str] = ()) -> EvalTable:
    """Every run's evaluation results as columns (``trainings``: training status records, by run id;
    ``evaluations``: ``expdir.read_all_evaluations``). A configured primary metric that no run reported
    still gets its (empty) column unless it is one of the ``known`` columns (``final_loss``)."""
    runs = sorted(mapping.runs, key=lambda r: r.index)
    results = {r.run_id: run_results(r, trainings[r.run_id].started) for r in runs if r.evaluations}
    if not results:
        return EvalTable([], [], {})  # the experiment evaluates no run
    found = metric_columns(runs, results)
    metrics = [m.name for m in found]
    primary = mapping.evaluation.primary_metric if mapping.evaluation else None
    if primary and primary not in metrics and primary not in set(known):
        metrics.append(primary)  # a column that stays empty says plainly that nobody reported it
    cells = {r.run_id: {EVAL_COLUMN: eval_state(r, results[r.run_id], evaluations.get(r.run_id)),
                        **run_values(r, results[r.run_id], found)}
             for r in runs if r.evaluations}
    columns = [EVAL_COLUMN, *metrics, *(c for m in found for c in m.columns)]
    return EvalTable(columns, metrics, cells)


def run_results(run: RunEntry, started: str | None) -> dict[str, EvalResult]:
    """``EvalEntry.name`` -> result, for the run's evaluations that wrote one since its training last started.

    A result older than the training (a run trained again with ``--force``) is of other weights, so it
    is left out, as ``collect`` leaves out an older attempt's log.
    """
    found = {}
    for entry in run.evaluations:
        path = Path(entry.result)
        try:
            if written_before(path, started):
                continue
        except OSError:
            continue  # no result yet
        result = read_eval_result(path)
        if result is not None:
            found[entry.name] = result
    return found


def metric_columns(runs: list[RunEntry], results: Mapping[str, Mapping[str, EvalResult]]) -> list[MetricColumn]:
    """The metrics reported, ordered by their evaluator's first entry in the mapping, then as reported.

    The order does not depend on which runs happen to have finished, so results.csv keeps its
    columns from one ``collect`` to the next.
    """
    evaluator_rank: dict[Evaluator, int] = {}
    epochs: dict[Evaluator, set[int]] = {}
    several: set[Evaluator] = set()  # evaluators some run evaluates at more than one epoch
    reported: dict[str, Evaluator] = {}
    for run in runs:
        own: dict[Evaluator, int] = {}
        for entry in run.evaluations:
            own[entry.evaluator] = own.get(entry.evaluator, 0) + 1
            if own[entry.evaluator] > 1:
                several.add(entry.evaluator)
            evaluator_rank.setdefault(entry.evaluator, len(evaluator_rank))
            epochs.setdefault(entry.evaluator, set()).add(entry.epoch)
            result = results.get(run.run_id, {}).get(entry.name)
            for name in result.metrics if result else ():
                reported.setdefault(name, entry.evaluator)  # a name two evaluators report: the first one's
    order = sorted(reported, key=lambda n: evaluator_rank[reported[n]])  # stable: report order within one evaluator
    # runs of different lengths evaluated at their own last epoch need no per-epoch columns: one value each
    return [MetricColumn(n, reported[n], tuple(sorted(epochs[reported[n]])) if reported[n] in several else ())
            for n in order]


def run_values(run: RunEntry, results: Mapping[str, EvalResult],
               columns: list[MetricColumn]) -> dict[str, float | None]:
    """A run's metric cells: each metric at the run's last epoch its evaluator evaluates, and per epoch.

    The unsuffixed value is the *last* planned epoch's, empty while that one has no result: an
    earlier epoch's value would be compared with other runs' final ones without anyone noticing.
    """
    values: dict[str, float | None] = {}
    for column in columns:
        entries = [e for e in run.evaluations if e.evaluator == column.evaluator]
        by_epoch = {e.epoch: _metric(results.get(e.name), column.name) for e in entries}
        values[column.name] = by_epoch[max(by_epoch)] if by_epoch else None
        for epoch in column.epochs if len(column.epochs) > 1 else ():
            values[column.epoch_column(epoch)] = by_epoch.get(epoch)
    return values


def _metric(result: EvalResult | None, name: str) -> float | None:
    return result.metrics.get(name) if result else None


def eval_state(run: RunEntry, results: Mapping[str, EvalResult], record: StatusRecord | None) -> str:
    """The ``eval`` cell: ``completed``, ``failed``, ``running``, ``pending``, or ``2/3`` (``1/3 (1 failed)``).

    An evaluation counts as completed when its result file is there and readable; one its record
    calls completed without such a file counts as failed.

    >>> run = RunEntry("run_000", 0, "c", "0", "o", {}, "passed", None,
    ...                evaluations=(EvalEntry(Evaluator.HELDOUT, 0, "c", "/nowhere.json"),))
    >>> eval_state(run, {}, StatusRecord("run_000", State.RUNNING))
    'running'
    """
    states = [_entry_state(e, results, record) for e in run.evaluations]
    done, failed, total = states.count("completed"), sum(s in ("failed", "cancelled") for s in states), len(states)
    if done == total:
        return "completed"
    if failed == total:
        return "cancelled" if set(states) == {"cancelled"} else "failed"
    if done == failed == 0:
        return "running" if "running" in states else "pending"
    return f"{done}/{total}" + (f" ({failed} failed)" if failed else "")


def _entry_state(entry: EvalEntry, results: Mapping[str, EvalResult], record: StatusRecord | None) -> str:
    if entry.name in results:
        return "completed"
    if record is None:
        return "pending"
    info = (record.evaluations or {}).get(entry.name) or {}
    state = str(info.get("state") or "")
    if state == "completed":
        return "failed"  # it said so, but left no readable result
    if state:
        return state
    # No word on this evaluation: the job as a whole (one that died before its first evaluation).
    return str(record.state) if record.state in (State.RUNNING, State.FAILED, State.CANCELLED) else "pending"


def is_number(value: Any) -> bool:
    """A value that can be averaged: a float or int (not a bool), and not NaN.

    >>> is_number(0.5), is_number(float("nan")), is_number(None), is_number(True)
    (True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
