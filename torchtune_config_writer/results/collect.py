"""Collect the runs' metrics into results.csv and results.md.

For each run of ``run_mapping.yaml``: who it is (id, name, configuration,
seed), its parameters and derived values, its status record, and what
torchtune's DiskLogger wrote (``Step 3 | loss:6.37 lr:0.00029
tokens_per_second_per_gpu:27375.6``) under the metric log directory that
run_mapping.yaml records for it (resolved at generation: no config is parsed
here). A run without logs or status gets empty cells, never an error.

Runs that were evaluated add their evaluation metrics (``metrics.py``) and an
``eval`` state column. One metric is primary (``--metric``, else the
evaluation's ``primary_metric``, else the first evaluation metric, else
``final_loss``): results.md ranks runs and compares each variable's values by
it, and ``metric_by_variable.svg`` plots it against every variable.

A run that ran out of memory and was tried again (``RunEntry.attempts``) is one row, of its latest
attempt; when any run was, the table says which attempt and with what batch size (``ATTEMPT_COLUMNS``).

An experiment with ``seeds:`` runs every configuration once per seed; results.md
then also has one row per configuration, each metric as mean ± standard
deviation over its completed seeds, with n.

    >>> path = collect("outputs/tiny_rank_lr")          # doctest: +SKIP
    >>> print(path.with_suffix(".md").read_text())       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..expdir import (
    LOSS_PLOT, METRIC_PLOT, RESULTS_CSV, RESULTS_MD, RunEntry, RunMapping, State, StatusRecord,
    load_mapping, metric_log_files, read_all, read_all_evaluations,
)
from .metrics import EVAL_COLUMN, EvalTable, Primary, choose_primary, is_number, read_evaluations
from .tracked import mlflow_client, mlflow_steps
from .plots import curve_label, loss_plot_svg, metric_plot_svg

#: Who a run is: always in results.csv (empty when the experiment has no names or seeds), so a script
#: reading it needs no special case.
IDENTITY_COLUMNS = ["run_id", "name", "configuration"]
METRIC_COLUMNS = ["status", "exit_code", "steps", "final_loss", "min_loss", "mean_tokens_per_s", "wall_time_s"]
#: Added when any run was tried again after running out of memory: which attempt the row is of, and the
#: batch size and gradient accumulation that attempt trained with (read from its config).
ATTEMPT_COLUMNS = ["attempt", "batch_size_used", "gradient_accumulation_steps_used"]
#: The metrics averaged over a configuration's seeds (``steps`` is a count, not an outcome).
SEED_METRICS = ["final_loss", "min_loss", "mean_tokens_per_s", "wall_time_s"]
#: The dotted path of the ``seeds:`` axis among the variables (the config's top-level ``seed``).
SEED = "seed"
#: The primary metric of an experiment that evaluates nothing.
TRAINING_LOSS = Primary("final_loss", "min", "training loss: no evaluation metric")

# One search over the whole log rather than a match per line: 10,000 runs' logs hold ~10^5-10^6 lines.
_STEP_LINES = re.compile(r"^[ \t]*Step (\d+) \| [ \t]*(\S.*)$", re.MULTILINE)


def parse_disk_log(text: str) -> dict[int, dict[str, float]]:
    """Metrics per step from DiskLogger lines (later lines of a step add to or replace earlier ones).

    >>> parse_disk_log("Step 1 | loss:6.4 lr:0.001 \\nStep 2 | loss:6.1 tokens_per_second_per_gpu:900.5 \\n")
    {1: {'loss': 6.4, 'lr': 0.001}, 2: {'loss': 6.1, 'tokens_per_second_per_gpu': 900.5}}
    """
    steps: dict[int, dict[str, float]] = {}
    for step, pairs in _STEP_LINES.findall(text):
        metrics = steps.setdefault(int(step), {})
        for pair in pairs.split():
            name, colon, value = pair.partition(":")
            if colon and name:
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


def run_steps(run: RunEntry, record: StatusRecord) -> dict[int, dict[str, float]]:
    """The metrics a run's latest attempt logged, per step ({} when it logged nothing yet).

    A requeued attempt (Appendix J.4) wrote one log per start since it first started; they are read
    oldest first, so a resumed start's steps replace the ones the interrupted start logged past its
    last saved epoch, and the whole training's curve is kept.
    """
    since = record.first_started if record.requeues and record.first_started else record.started
    steps: dict[int, dict[str, float]] = {}
    for log in metric_log_files(run.metric_log, since):
        try:
            steps.update(parse_disk_log(log.read_text(errors="replace")))
        except OSError:
            continue
    return steps


Row = tuple[RunEntry, StatusRecord, dict[int, dict[str, float]]]


def collect_rows(exp_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one row per run) of an experiment directory: results.csv before formatting."""
    exp = Path(exp_dir)
    mapping = load_mapping(exp)
    runs = _runs_with_steps(exp, mapping)
    return _table(mapping, runs, _evaluations(exp, mapping, runs), exp=exp)


def _evaluations(exp: Path, mapping: RunMapping, runs: list[Row]) -> EvalTable:
    """The runs' evaluation columns (none when nothing is evaluated)."""
    return read_evaluations(mapping, {run.run_id: rec for run, rec, _ in runs}, read_all_evaluations(exp, mapping),
                            known=METRIC_COLUMNS)


def _runs_with_steps(exp: Path, mapping: RunMapping) -> list[Row]:
    """(run, status record, logged metrics per step) for every run, in index order: read once."""
    statuses = read_all(exp, mapping)
    runs = sorted(mapping.runs, key=lambda r: r.index)
    client = None
    if mapping.tracking is not None and mapping.tracking.backend == "mlflow" and any(r.metric_log is None for r in runs):
        try:
            client = mlflow_client(mapping.tracking)
        except ImportError:
            client = None  # mlflow not installed here: the tracked runs' loss cells stay empty
    return [(run, statuses[run.run_id], run_steps(run, statuses[run.run_id])
             or (mlflow_steps(mapping.tracking, statuses[run.run_id], client) if client else {})) for run in runs]


def axes(mapping: RunMapping) -> list[str]:
    """The variables that tell configurations apart: all of them but the ``seeds:`` axis."""
    return [v for v in mapping.variables if not (mapping.seeded and v == SEED)]


def seed_of(run: RunEntry) -> Any:
    """The seed a run trains with when the experiment sets one per run: its ``seeds:`` value, else a
    ``seed`` variable or derived value; None when all runs keep the base's (or a control's) seed."""
    if run.seed is not None:
        return run.seed
    return run.parameters.get(SEED, run.derived.get(SEED))


def _derived_columns(mapping: RunMapping, taken: list[str]) -> dict[str, str]:
    """Derived path -> its column; ``derived.`` in front of a path that would shadow another column."""
    return {d: (f"derived.{d}" if d in taken else d) for d in mapping.derived if d != SEED}


def _table(mapping: RunMapping, runs: list[Row], evals: EvalTable | None = None,
           exp: Path | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    keys = [v for v in axes(mapping) if v != SEED]  # a plain ``seed`` variable is shown as the seed column
    tried = exp is not None and any(run.attempts for run, _, _ in runs)  # out-of-memory retries: ATTEMPT_COLUMNS
    derived = _derived_columns(mapping, [*IDENTITY_COLUMNS, *keys, SEED, *METRIC_COLUMNS])
    rows = []
    for run, rec, steps in runs:
        row: dict[str, Any] = {"run_id": run.run_id, "name": run.name, "configuration": run.configuration}
        row.update({k: run.parameters.get(k) for k in keys})
        row[SEED] = seed_of(run)
        row.update({col: run.derived.get(path) for path, col in derived.items()})
        row.update(status=str(rec.state), exit_code=rec.exit_code)
        row.update(summarize(steps))
        row["wall_time_s"] = rec.wall_seconds()
        if tried:
            row.update(attempt_cells(exp, run, rec))
        if evals is not None:
            row.update(evals.cells.get(run.run_id, {}))
        rows.append(row)
    eval_columns = evals.columns if evals is not None else []
    return [*IDENTITY_COLUMNS, *keys, SEED, *derived.values(), *METRIC_COLUMNS, *(ATTEMPT_COLUMNS if tried else []),
            *eval_columns], rows


def attempt_cells(exp: Path, run: RunEntry, rec: StatusRecord) -> dict[str, Any]:
    """The ``ATTEMPT_COLUMNS`` of a run: the attempt its status record is of (its current one before it
    started), and the batch_size and gradient_accumulation_steps of that attempt's config (None where the
    config has none, or cannot be read)."""
    number = (rec.attempt or 1) if rec.started else run.attempt
    values = _top_level_values(exp / run.config_of(number), ("batch_size", "gradient_accumulation_steps"))
    return {"attempt": number, "batch_size_used": values.get("batch_size"),
            "gradient_accumulation_steps_used": values.get("gradient_accumulation_steps")}


def _top_level_values(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The scalar values of top-level ``keys`` in a config file, from their own lines only.

    Parsing every run's whole config took ~4.6 s for 10,000 runs; generated configs write top-level
    keys at column 0 (``batch_size: 4``), so each wanted line is parsed alone. {} when unreadable.
    """
    found: dict[str, Any] = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, rest = line.partition(":")
                if sep and key in keys and key not in found:
                    value = yaml.load(rest.split(" #", 1)[0] or "null", Loader=_YAML_LOADER)
                    found[key] = value if isinstance(value, (int, float, str)) else None
                    if len(found) == len(keys):
                        break
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return found


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _cell(value: Any, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_MD_DIGITS = {"final_loss": 4, "min_loss": 4, "mean_tokens_per_s": 1, "wall_time_s": 1}


def metric_digits(metric: str) -> int:
    """Decimals results.md shows a metric with: rates and times 1, losses and evaluation metrics 4."""
    return _MD_DIGITS.get(metric, 4)


def markdown_table(columns: list[str], rows: list[dict[str, Any]], digits: dict[str, int] | None = None) -> str:
    """A GitHub-markdown table of the rows (losses to 4 decimals, rates and times to 1; ``digits``: more columns')."""
    places = {**_MD_DIGITS, **(digits or {})}

    def cell(col: str, value: Any) -> str:
        return _cell(value, places.get(col)).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _md_columns(mapping: RunMapping, columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """results.md's per-run columns: the csv's, less the identity columns that would be empty or say nothing."""
    unused = set()
    if not any(r["name"] for r in rows):
        unused.add("name")
    if not mapping.seeded:
        unused.add("configuration")  # every run is its own configuration
    if all(r[SEED] is None for r in rows):
        unused.add(SEED)
    return [c for c in columns if c not in unused]


def _completed(rows: list[dict[str, Any]], metric: str) -> list[float]:
    """``metric`` of the completed runs that have it: a failed or unfinished run's partial log (or its
    evaluation) is never averaged, nor is a NaN (a diverged run), which would make every mean NaN."""
    return [r[metric] for r in rows if r.get("status") == State.COMPLETED and is_number(r.get(metric))]


def mean_std(values: list[float], digits: int | None = None) -> str:
    """``mean ± sample standard deviation``; the deviation of a single value is ``-``, no value gives "".

    >>> mean_std([2.0, 2.5, 3.0], 4), mean_std([6.0], 1), mean_std([])
    ('2.5000 ± 0.5000', '6.0 ± -', '')
    """
    if not values:
        return ""
    std = _cell(statistics.stdev(values), digits) if len(values) > 1 else "-"
    return f"{_cell(statistics.fmean(values), digits)} ± {std}"


def _configurations(rows: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Rows grouped by configuration, in order of first appearance (a row without one stands alone)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("configuration", id(r)), []).append(r)
    return groups


def by_configuration(keys: list[str], rows: list[dict[str, Any]], eval_metrics: list[str] = ()) -> str:
    """One markdown row per configuration (the runs that differ only in their seed).

    Its axis values (``keys``), how many seeds it has and how many completed, then for each of
    ``SEED_METRICS`` and ``eval_metrics`` the mean ± sample standard deviation over the completed seeds
    that have it, and their number ``n``: a seed that failed or is still running is counted, never averaged.
    """
    metrics = [*SEED_METRICS, *eval_metrics]
    table_rows = []
    for configuration, group in _configurations(rows).items():
        row: dict[str, Any] = {"configuration": configuration, **{k: group[0].get(k) for k in keys},
                               "seeds": len(group), "completed": sum(r.get("status") == State.COMPLETED for r in group)}
        for metric in metrics:
            values = _completed(group, metric)
            row[metric], row[f"{metric} n"] = mean_std(values, metric_digits(metric)), len(values)
        table_rows.append(row)
    columns = [c for m in metrics for c in (m, f"{m} n")]
    return markdown_table(["configuration", *keys, "seeds", "completed", *columns], table_rows)


def configuration_means(rows: list[dict[str, Any]], metric: str) -> list[tuple[list[dict[str, Any]], float]]:
    """(its runs, mean ``metric`` over its completed runs) per configuration that has one, in order."""
    return [(group, statistics.fmean(values)) for group in _configurations(rows).values()
            if (values := _completed(group, metric))]


def by_variable(variables: list[str], rows: list[dict[str, Any]], primary: Primary = TRAINING_LOSS) -> str:
    """One markdown table per variable: for each of its values, how the runs with it did by ``primary``.

    The question a sweep asks is "what did this variable do?", so each value gets the mean of the
    primary metric over the ``n`` completed runs with it that have one (the other variables, and the
    seeds, averaged out) and the best of a configuration with it: a configuration's mean over its
    seeds, so one lucky seed does not make a value look best. When the primary metric is an
    evaluation's, the mean training loss stays beside it: a low loss with a poor score is overfitting.

    >>> print(by_variable(["lr"], [{"lr": 0.1, "status": "completed", "final_loss": 2.0}]))
    ### lr
    <BLANKLINE>
    | lr | runs | completed | n | mean final_loss ↓ | best final_loss ↓ |
    |---|---|---|---|---|---|
    | 0.1 | 1 | 1 | 1 | 2.0000 | 2.0000 |
    """
    mean, best = f"mean {primary.label}", f"best {primary.label}"
    loss = f"mean {TRAINING_LOSS.label}" if primary.metric != TRAINING_LOSS.metric else None
    digits = {mean: metric_digits(primary.metric), best: metric_digits(primary.metric), **({loss: 4} if loss else {})}
    sections = []
    for var in variables:
        values: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            values.setdefault(_cell(r.get(var)), []).append(r)
        table_rows = []
        for value, group in values.items():
            found = _completed(group, primary.metric)
            per_configuration = [m for _, m in configuration_means(group, primary.metric)]
            row = {
                var: value,
                "runs": len(group),
                "completed": sum(r.get("status") == State.COMPLETED for r in group),
                "n": len(found),
                mean: statistics.fmean(found) if found else None,
                best: primary.best(per_configuration) if per_configuration else None,
            }
            if loss:
                losses = _completed(group, TRAINING_LOSS.metric)
                row[loss] = statistics.fmean(losses) if losses else None
            table_rows.append(row)
        columns = [var, "runs", "completed", "n", mean, best, *([loss] if loss else [])]
        sections.append(f"### {var}\n\n{markdown_table(columns, table_rows, digits)}")
    return "\n\n".join(sections)


def results_markdown(mapping: RunMapping, columns: list[str], rows: list[dict[str, Any]],
                     primary: Primary = TRAINING_LOSS, evals: EvalTable | None = None) -> str:
    """results.md without the plots: the primary metric and the best run by it, the run table, then
    per configuration (with seeds) and per variable."""
    evals = evals or EvalTable([], [], {})
    digits = {c: metric_digits(c) for c in evals.columns if c != EVAL_COLUMN}
    counts = Counter(r["status"] for r in rows)
    md = (
        f"# Results: {mapping.experiment_name}\n\n{best_line(mapping, rows, primary, evals.metrics)}\n\n"
        f"{markdown_table(_md_columns(mapping, columns, rows), rows, digits)}\n\n"
        f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". "
        + ("Losses and tokens/s from each run's MLflow run" if mapping.tracking and mapping.tracking.backend == "mlflow"
           else "Losses and tokens/s from each run's DiskLogger log") + "; wall time from status/.\n"
    )
    md += _evaluation_note(rows, evals)
    if mapping.seeded:
        md += ("\n## By configuration\n\nRuns that differ only in their seed form a configuration. Each metric: "
               "mean ± sample standard deviation over the completed seeds that have it (- for one), "
               "and n, how many those are.\n\n" + by_configuration(axes(mapping), rows, evals.metrics) + "\n")
    variables = axes(mapping)
    if variables:
        md += "\n## By variable\n\n" + _by_variable_legend(primary, mapping.seeded) + "\n\n" + \
              by_variable(variables, rows, primary) + "\n"
    return md


def _evaluation_note(rows: list[dict[str, Any]], evals: EvalTable) -> str:
    """How far the runs' evaluations got, and which epoch the metric columns hold ("" without evaluations)."""
    states = Counter(r[EVAL_COLUMN] for r in rows if r.get(EVAL_COLUMN))
    if not states:
        return ""
    per_epoch = any("@epoch_" in c for c in evals.columns)
    return ("\nEvaluations (the eval column: how many of a run's evaluations completed): "
            + ", ".join(f"{s} for {n} run{'s' if n > 1 else ''}" for s, n in states.items())
            + ". Each metric column holds the run's last evaluated epoch"
            + (", the @epoch_N columns every epoch" if per_epoch else "") + ".\n")


def _by_variable_legend(primary: Primary, seeded: bool) -> str:
    """What the by-variable columns are (the arrow: which way is better)."""
    text = (f"mean {primary.label}: over the n completed runs with the value that have {primary.metric} "
            f"({primary.arrow}: {primary.better_word} is better); best {primary.label}: the best "
            + ("configuration's mean over its seeds" if seeded else "of them") + ".")
    if primary.metric != TRAINING_LOSS.metric:
        text += f" mean {TRAINING_LOSS.label}: the training loss of the completed runs with the value."
    return text


def best_line(mapping: RunMapping, rows: list[dict[str, Any]], primary: Primary, eval_metrics: list[str] = ()) -> str:
    """results.md's first line: the primary metric, its direction, and the best completed run by it
    (with seeds, the configuration with the best mean over its completed seeds).

    >>> m = RunMapping("e", "r", False, None, None, "", "", ("lr",), "passed", None, ())
    >>> best_line(m, [{"run_id": "run_000", "lr": 0.1, "status": "completed", "final_loss": 2.0}], TRAINING_LOSS)
    'Primary metric: **final_loss ↓** (lower is better; training loss: no evaluation metric). Best run: run_000 (lr=0.1) with 2.0000.'
    """
    head = f"Primary metric: **{primary.label}** ({primary.better_word} is better; {primary.source})."
    metric, places = primary.metric, metric_digits(primary.metric)
    keys = [v for v in axes(mapping) if v != SEED]
    if not any(is_number(r.get(metric)) for r in rows):
        others = [m for m in eval_metrics if m != metric and any(is_number(r.get(m)) for r in rows)]
        hint = (f"; the evaluations reported {', '.join(others)} (rank by one with `collect --metric NAME`)"
                if others else "")
        return f"{head} **No run has reported {metric} yet**{hint}."
    if mapping.seeded:
        means = configuration_means(rows, metric)
        if means:
            group, value = primary.pick(means)
            who = ", ".join(f"{k}={_cell(group[0].get(k))}" for k in keys)
            n = len(_completed(group, metric))
            return (f"{head} Best configuration: {group[0].get('configuration')}"
                    + (f" ({who})" if who else "") + f" with mean {_cell(value, places)} over {n} completed seeds.")
    done = [(r, r[metric]) for r in rows if r.get("status") == State.COMPLETED and is_number(r.get(metric))]
    if not done:
        return f"{head} No completed run has {metric} yet."
    row, value = primary.pick(done)
    about = [f"{row['name']}"] if row.get("name") else []
    about += [", ".join(f"{k}={_cell(row.get(k))}" for k in keys)] if keys else []
    return f"{head} Best run: {row['run_id']}" + (f" ({'; '.join(about)})" if about else "") + \
        f" with {_cell(value, places)}."


def metric_points(variables: list[str], rows: list[dict[str, Any]],
                  metric: str) -> dict[str, list[tuple[Any, float, str]]]:
    """Variable -> (its value, ``metric``, run label) for every completed run that has both: the plot's points.

    >>> metric_points(["lr"], [{"run_id": "run_000", "lr": 0.1, "status": "completed", "acc": 0.5}], "acc")
    {'lr': [(0.1, 0.5, 'run_000')]}
    """
    done = [r for r in rows if r.get("status") == State.COMPLETED and is_number(r.get(metric))]
    return {var: [(r[var], r[metric], " ".join(filter(None, [r["run_id"], r.get("name")]))) for r in done
                  if r.get(var) is not None] for var in variables}


def _write_metric_plot(exp: Path, mapping: RunMapping, rows: list[dict[str, Any]], primary: Primary) -> str:
    """Write metric_by_variable.svg when a completed run has the primary metric; the markdown linking it, else ""."""
    path = exp / METRIC_PLOT
    panels = metric_points(axes(mapping), rows, primary.metric)
    if not any(panels.values()):
        path.unlink(missing_ok=True)  # an earlier collect's plot (of another metric, perhaps) would mislead
        return ""
    swept = {var: [r[var] for r in rows if r.get(var) is not None] for var in panels}
    path.write_text(metric_plot_svg(panels, primary, mapping.experiment_name, swept), encoding="utf-8")
    return f"\n![{primary.label} by variable]({METRIC_PLOT})\n"


def loss_curves(runs: list[Row]) -> dict[str, list[tuple[int, float]]]:
    """Legend label -> (step, loss) points, per run; a label shared by two runs gets the run id added."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for run, _, steps in runs:
        label = curve_label(run)
        if label in curves:  # two curves under one key would silently become one
            label = f"{label} ({run.run_id})"
        curves[label] = [(step, m["loss"]) for step, m in sorted(steps.items()) if "loss" in m]
    return curves


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[_cell(r.get(c)) for c in columns] for r in rows])


def metric_choices(evals: EvalTable) -> list[str]:
    """The columns ``collect --metric`` may name: the averaged training metrics and every evaluation metric."""
    return [*SEED_METRICS, *(c for c in evals.columns if c != EVAL_COLUMN)]


def collect(exp_dir: str | Path, metric: str | None = None, goal: str | None = None) -> Path:
    """Write results.csv, results.md (UTF-8) and the plots into the experiment directory; return the csv's path.

    ``metric`` and ``goal`` (``max``/``min``) choose the primary metric instead of the experiment's
    ``evaluation:`` settings; a ``metric`` that is no column raises ``UnknownMetricError``.

    >>> collect("outputs/tiny_rank_lr", metric="count_mc/acc")        # doctest: +SKIP
    PosixPath('outputs/tiny_rank_lr/results.csv')
    """
    exp = Path(exp_dir)
    mapping = load_mapping(exp)
    runs = _runs_with_steps(exp, mapping)
    evals = _evaluations(exp, mapping, runs)
    columns, rows = _table(mapping, runs, evals, exp=exp)
    primary = choose_primary(mapping, evals.metrics, metric_choices(evals), metric, goal)  # before writing anything
    csv_path = exp / RESULTS_CSV
    write_csv(csv_path, columns, rows)
    md = results_markdown(mapping, columns, rows, primary, evals)
    md += _write_metric_plot(exp, mapping, rows, primary)
    curves = loss_curves(runs)
    if any(curves.values()):
        svg = loss_plot_svg(curves, f"Training loss: {mapping.experiment_name}")
        (exp / LOSS_PLOT).write_text(svg, encoding="utf-8")
        md += f"\n![training loss per run]({LOSS_PLOT})\n"
    (exp / RESULTS_MD).write_text(md, encoding="utf-8")
    return csv_path
