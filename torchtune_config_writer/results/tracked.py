"""Training metrics of runs tracked in MLflow: their metric_logger wrote there instead of a DiskLogger log.

With ``tracking: {backend: mlflow}`` torchtune's MLFlowLogger logs loss, lr and
tokens per second per step to the run's MLflow run (its id is in the status
record), so ``collect`` reads them back from there through MLflow's client.
W&B keeps offline runs in binary files that only its own tools read: their
losses stay in W&B (the evaluation metrics still come from the result files).

    >>> steps = mlflow_steps(mapping.tracking, record)         # doctest: +SKIP
    >>> steps[1]["loss"]                                        # doctest: +SKIP
    6.37
"""

from __future__ import annotations

from typing import Any

from ..expdir import StatusRecord, TrackingPlan

#: What torchtune's recipes log per step (collect summarizes these).
_STEP_METRICS = ("loss", "lr", "tokens_per_second_per_gpu")


def mlflow_steps(plan: TrackingPlan | None, record: StatusRecord, client: Any = None) -> dict[int, dict[str, float]]:
    """Metrics per step of the run's MLflow run; {} when it is not tracked in MLflow or cannot be read.

    ``client``: an MlflowClient to reuse across runs (one is made from the plan's URI otherwise).
    """
    if plan is None or plan.backend != "mlflow" or not record.tracking_run_id:
        return {}
    try:
        client = client or mlflow_client(plan)
        steps: dict[int, dict[str, float]] = {}
        for name in _STEP_METRICS:
            for m in client.get_metric_history(record.tracking_run_id, name):
                steps.setdefault(int(m.step), {})[name] = float(m.value)
        return steps
    except Exception:  # an unreachable server or a deleted run must not stop collect: the cells stay empty
        return {}


def mlflow_client(plan: TrackingPlan) -> Any:
    """An MlflowClient for the plan's tracking URI (raises ImportError without mlflow)."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(plan.tracking_uri) if plan.tracking_uri else MlflowClient()
