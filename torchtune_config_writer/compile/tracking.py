"""The ``tracking:`` section: each run's ``metric_logger`` becomes torchtune's MLflow or W&B logger.

``tracking_plan`` resolves the section once (names evaluated, relative paths
made absolute against the experiment file) into the ``TrackingPlan`` that
run_mapping.yaml records; ``logger_section`` is the ``metric_logger`` every
run gets, and ``run_names`` each run's own name in it. What torchtune does
not log (swept parameters, final status, evaluation metrics) the execute side
adds to the same tracking run (``execute/tracking.py``).

    >>> plan = tracking_plan(exp, Path("/exp"))            # doctest: +SKIP
    >>> logger_section(plan)["_component_"]                 # doctest: +SKIP
    'torchtune.training.metric_logging.MLFlowLogger'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExperimentSchemaError
from ..expdir import TrackingPlan
from .expressions import check_names, compile_expression

if TYPE_CHECKING:
    from .plan import PlannedRun
    from .schema import Experiment

MLFLOW_LOGGER = "torchtune.training.metric_logging.MLFlowLogger"
WANDB_LOGGER = "torchtune.training.metric_logging.WandBLogger"
#: The key of each logger that names the run.
NAME_KEY = {"mlflow": "run_name", "wandb": "name"}


def tracking_plan(exp: Experiment, experiment_dir: Path) -> TrackingPlan | None:
    """The resolved ``tracking:`` section; None without one."""
    settings = exp.tracking
    if settings is None:
        return None
    where = exp.where("tracking", "experiment")
    expr = compile_expression(settings.experiment, where)
    check_names(expr, exp.experiment_names(), {n: "tracking.experiment names the whole experiment; it may read only "
                "experiment_name, timestamp and date (run_name names each run)" for n in ("run_id", "run_name", "seed")})
    name = str(expr.evaluate(exp.experiment_names())).strip()
    if not name:
        raise ExperimentSchemaError(f"{where}: tracking.experiment is empty; give a name, e.g. \"{{{{ experiment_name }}}}\"")
    if settings.backend == "wandb":
        return TrackingPlan(backend="wandb", experiment=name, project=settings.project, mode=settings.mode,
                            tags=dict(settings.tags), entity=settings.entity)
    return TrackingPlan(backend="mlflow", experiment=name, tracking_uri=absolute_uri(settings.tracking_uri, exp.base_dir),
                        tags=dict(settings.tags))


def absolute_uri(uri: str | None, base: Path) -> str | None:
    """A relative ``sqlite:///x.db`` or ``file:x`` path made absolute against ``base`` (runs start elsewhere).

    >>> absolute_uri("sqlite:///runs/mlflow.db", Path("/home/me/study"))
    'sqlite:////home/me/study/runs/mlflow.db'
    >>> absolute_uri("http://127.0.0.1:5000", Path("/x"))
    'http://127.0.0.1:5000'
    """
    if uri is None:
        return None
    for scheme in ("sqlite:///", "file:"):
        if uri.startswith(scheme):
            rest = uri[len(scheme):]
            if scheme == "file:" and rest.startswith("//"):
                return uri  # file:///abs: already absolute
            if rest.startswith("/"):
                return uri
            return f"{scheme}{(base / rest).resolve()}" if scheme == "file:" else f"sqlite:///{(base / rest).resolve()}"
    return uri


def logger_section(plan: TrackingPlan) -> dict[str, Any]:
    """The ``metric_logger`` every run gets (its name is set per run, under ``NAME_KEY``)."""
    if plan.backend == "wandb":
        # No dir, id or tags here: the runner passes them through the environment (WANDB_DIR is the run's
        # output_dir, a fresh WANDB_RUN_ID per attempt, WANDB_TAGS with the swept values), and a key in the
        # config would override them.
        section: dict[str, Any] = {"_component_": WANDB_LOGGER, "project": plan.project, "group": plan.experiment}
        if plan.entity:
            section["entity"] = plan.entity
        if plan.mode:
            section["mode"] = plan.mode
        return section
    section = {"_component_": MLFLOW_LOGGER, "experiment_name": plan.experiment}
    if plan.tracking_uri:
        section["tracking_uri"] = plan.tracking_uri
    return section


def run_names(exp: Experiment, runs: list[PlannedRun]) -> list[str]:
    """Each run's name in the tracking backend, from ``tracking.run_name`` (default: its run_name, else its id)."""
    assert exp.tracking is not None
    where = exp.where("tracking", "run_name")
    expr = compile_expression(exp.tracking.run_name, where)
    names = []
    for run in runs:
        ctx = {**exp.experiment_names(), **run.labels, "seed": run.seed, "run_id": run.run_id,
               "run_index": run.index, "run_name": run.name if run.name is not None else run.run_id}
        check_names(expr, set(ctx), {})
        name = str(expr.evaluate(ctx)).strip()
        if not name or "\n" in name:
            raise ExperimentSchemaError(f"{where}: tracking.run_name is {name!r} for {run.run_id}; a name must be "
                                        "non-empty, on one line")
        names.append(name)
    return names
