"""Tracking: what the tool adds to each run's MLflow or W&B record, around torchtune's own logger.

``generate`` replaces a tracked run's ``metric_logger`` with torchtune's
``MLFlowLogger`` or ``WandBLogger``; inside ``tune run`` those log the per-step
loss, lr and tokens/s and the flattened config. They cannot know what the tool
knows, so the runner calls this module around the training child:

    check_reachable(plan)        once, before any run starts: fails fast when the backend cannot be used
    start_run(mapping, run)      before ``tune run``: the run's id and the environment the child needs
    end_run(mapping, run, rec)   after it: final status, exit code, wall time
    log_evaluation(...)          after its evaluation: every metric, step = epoch

What lands in the run (MLflow names; W&B gets the same as config keys, tags ``key=value`` and summary):

- params ``sweep/<path>`` (each axis: variables, zip, sample, ``seed``) and ``derived/<path>``; the
  prefix keeps them apart from torchtune's flattened config params (``optimizer.lr``...), which
  MLflow refuses to log twice with different values;
- tags ``<path>=<value>`` for the same values (so the UI can group and filter by them), the
  experiment's ``tracking.tags``, ``tcw.run_id``, ``tcw.experiment``, ``tcw.configuration`` (runs
  that differ only in their seed share it), ``status`` (``running``, then the status record's state)
  and ``tcw.exit_code``;
- metrics ``wall_time_s`` (as results.csv calls it) and ``eval/<metric>`` (``eval/count_mc/acc``,
  ``eval/heldout_loss``) plus ``eval/<evaluator>_seconds``, at step = the evaluated epoch.

MLflow: ``start_run`` creates the run (and the experiment, when missing) and the child resumes it
through ``MLFLOW_RUN_ID``: one run per training. W&B: nothing is written before the child starts;
``start_run`` picks the run id (``run_000-1a2b3c4d``: a fresh one per attempt, so a rerun is a new
run) and the child creates the run with it; ``end_run`` and ``log_evaluation`` resume that id. In
``mode: offline`` every such step writes its own ``<dir>/wandb/offline-run-<time>-<id>/``;
``wandb sync <dir>/wandb/offline-run-*-<id>`` uploads them as one run, in order.

Failures: ``check_reachable`` and ``start_run`` raise ``TrackingError`` (a ``ConfigWriterError``,
so the CLI prints its message: what is wrong, where, how to fix it). ``end_run`` and
``log_evaluation`` never raise for the backend's sake: the training result is already in
``status/``; they return a one-line warning for the runner to show, or None when all was logged.

mlflow and wandb are optional (the ``tracking`` extra); they are imported inside the functions
that need them, so the execute side loads neither unless a run is tracked.

    >>> tracked = start_run(mapping, mapping.runs[0])                   # doctest: +SKIP
    >>> sorted(tracked.env)                                            # doctest: +SKIP
    ['MLFLOW_DISABLE_TELEMETRY', 'MLFLOW_EXPERIMENT_NAME', 'MLFLOW_RUN_ID', 'MLFLOW_TRACKING_URI']
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigWriterError, one_line
from ..expdir import EvalResult, RunEntry, RunMapping, State, StatusRecord, TrackingPlan

MLFLOW = "mlflow"
WANDB = "wandb"
BACKENDS = (MLFLOW, WANDB)

#: Prefixes of the tool's params: torchtune logs the config's own dotted paths, never one with a slash.
SWEEP_PREFIX = "sweep/"
DERIVED_PREFIX = "derived/"
STATUS_TAG = "status"
RUN_ID_TAG = "tcw.run_id"
EXPERIMENT_TAG = "tcw.experiment"
CONFIGURATION_TAG = "tcw.configuration"
EXIT_CODE_TAG = "tcw.exit_code"
#: The wall time metric: results.csv's column name.
WALL_METRIC = "wall_time_s"
EVAL_PREFIX = "eval/"
#: torchtune's WandBLogger logs to this project when its config names none.
WANDB_DEFAULT_PROJECT = "torchtune"
#: Seconds to wait for an MLflow server's /health (a dead one otherwise costs minutes of client retries).
PROBE_TIMEOUT_S = 10.0

INSTALL_HINT = "pip install 'torchtune_config_writer[tracking]'"

# MLflow's limits (mlflow/utils/validation.py): longer values are refused, not truncated.
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 5000
_MAX_BATCH_METRICS = 1000
# W&B refuses tags outside 1..64 characters; the child reads WANDB_TAGS split on commas.
_MAX_WANDB_TAG = 64

_MLFLOW_STATUS = {State.COMPLETED: "FINISHED", State.FAILED: "FAILED", State.CANCELLED: "KILLED"}


class TrackingError(ConfigWriterError):
    """The tracking backend cannot be used: its package is missing, its server does not answer, or it refused."""


@dataclass(frozen=True)
class TrackedRun:
    """A run's record in the tracking backend, created (or named) before its training starts."""

    run_id: str
    """The backend's run id; the runner keeps it in the status record (``StatusRecord.tracking_run_id``)."""
    env: dict[str, str]
    """Environment variables the training child needs, on top of the runner's own."""


# ----------------------------------------------------------------------------- the API


def check_reachable(plan: TrackingPlan) -> None:
    """Fail fast, before any run starts, when ``plan``'s backend cannot be used.

    Checks that the package is installed and, for MLflow, that the store answers (an
    ``http(s)`` server's /health, then a query; an sqlite file's folder is created); for
    W&B online, that an API key is configured and accepted; for W&B offline, that its
    folder can be created. Raises ``TrackingError`` saying what is wrong and how to fix it.

    >>> check_reachable(TrackingPlan("mlflow", "exp", tracking_uri="http://127.0.0.1:1"))   # doctest: +SKIP
    Traceback (most recent call last):
    TrackingError: nothing answers at http://127.0.0.1:1 (Connection refused): start the MLflow server ...
    """
    _check_backend(plan)
    if plan.backend == MLFLOW:
        uri = _mlflow_uri(plan)
        _probe(uri)
        client = _mlflow_client(uri)
        try:
            client.search_experiments(max_results=1)
        except Exception as e:  # the store's own errors (sqlite, auth, HTTP) all mean the same to the user
            raise TrackingError(f"MLflow at {uri} cannot be used: {one_line(e)}") from None
    else:
        _check_wandb(plan)


def start_run(mapping: RunMapping, run: RunEntry) -> TrackedRun | None:
    """Create ``run``'s tracking run before it trains; None when the experiment is not tracked.

    MLflow: the run is created (its experiment too, if missing), named ``run.tracking_name``,
    with the tags and params listed in the module docstring and status RUNNING; the child's
    MLFlowLogger resumes it through ``MLFLOW_RUN_ID``. W&B: only the id is chosen and the tags
    travel in ``WANDB_TAGS``; the child's WandBLogger creates the run. Raises ``TrackingError``
    (the runner then records the run failed without starting it).

    >>> start_run(mapping, mapping.runs[0]).env["MLFLOW_RUN_ID"]      # doctest: +SKIP
    '3f0c9a...'
    """
    plan = mapping.tracking
    if plan is None:
        return None
    _check_backend(plan)
    if plan.backend == MLFLOW:
        return _mlflow_start(plan, mapping, run)
    return _wandb_start(plan, mapping, run)


def end_run(mapping: RunMapping, run: RunEntry, record: StatusRecord) -> str | None:
    """After ``run`` trained: its final status (tag and run state), exit code and wall time.

    ``record`` is its final status record (completed, failed or cancelled; the MLflow run
    ends FINISHED, FAILED or KILLED). Returns None when everything was logged, else a one-line
    warning: the training result stands in ``status/`` whatever the backend does.

    >>> end_run(mapping, run, read_status(exp, run.run_id))            # doctest: +SKIP
    """
    plan = mapping.tracking
    if plan is None:
        return None
    if record.state not in _MLFLOW_STATUS:
        raise ValueError(f"end_run needs a final status record, got {record.state}")
    if not record.tracking_run_id:
        return f"{run.run_id}: no tracking run id in its status record, so its end was not logged to {plan.backend}"
    try:
        if plan.backend == MLFLOW:
            _mlflow_end(plan, run, record)
        else:
            _wandb_end(plan, mapping, run, record)
    except Exception as e:  # whatever the backend raises: the result is safe, say so once
        return _warning(plan, run, record, "its end (status, wall time)", e)
    return None


def log_evaluation(mapping: RunMapping, run: RunEntry, record: StatusRecord,
                   results: list[EvalResult]) -> str | None:
    """After ``run``'s evaluation: every metric of every result, to the run ``record.tracking_run_id``.

    ``record`` is the training's status record (it holds the tracking run id). Metrics are
    named ``eval/<metric>`` at step = the evaluated epoch, with ``eval/<evaluator>_seconds``.
    Returns None when all was logged (or there was nothing to log), else a one-line warning.

    >>> log_evaluation(mapping, run, read_status(exp, run.run_id), results)   # doctest: +SKIP
    """
    plan = mapping.tracking
    if plan is None or not results:
        return None
    if not record.tracking_run_id:
        return (f"{run.run_id}: its training has no tracking run id in status/, so its evaluation metrics "
                f"were not logged to {plan.backend} (they are in results.csv)")
    try:
        if plan.backend == MLFLOW:
            _mlflow_log_evaluation(plan, record, results)
        else:
            _wandb_log_evaluation(plan, mapping, run, record, results)
    except Exception as e:  # as in end_run: the results are on disk already
        return _warning(plan, run, record, "its evaluation metrics", e)
    return None


# ----------------------------------------------------------------------------- what is logged


def run_values(run: RunEntry) -> dict[str, Any]:
    """The run's own values, by dotted path: every axis (``seed`` included), then the derived ones.

    >>> run_values(RunEntry("run_000", 0, "c", "0", "/o", {"optimizer.lr": 0.001}, "passed", None,
    ...                     derived={"model.lora_alpha": 16}, seed=None))
    {'optimizer.lr': 0.001, 'model.lora_alpha': 16}
    """
    values = dict(run.parameters)
    if run.seed is not None:
        values.setdefault("seed", run.seed)
    for path, value in run.derived.items():
        values.setdefault(path, value)
    return values


def run_params(run: RunEntry) -> dict[str, str]:
    """The params the tool logs: ``sweep/<axis>`` and ``derived/<path>`` (never a torchtune config key).

    >>> run_params(RunEntry("run_000", 0, "c", "0", "/o", {"optimizer.lr": 0.001, "seed": 1}, "passed", None,
    ...                     derived={"model.lora_alpha": 16}, seed=1))
    {'sweep/optimizer.lr': '0.001', 'sweep/seed': '1', 'derived/model.lora_alpha': '16'}
    """
    return {k: _text(v, _MAX_PARAM_VALUE) for k, v in _prefixed_values(run).items()}


def _prefixed_values(run: RunEntry) -> dict[str, Any]:
    """``run_params`` with the values as they are (W&B's config keeps numbers as numbers)."""
    values = {_key(SWEEP_PREFIX + k): v for k, v in run.parameters.items()}
    if run.seed is not None:
        values.setdefault(_key(SWEEP_PREFIX + "seed"), run.seed)
    values.update({_key(DERIVED_PREFIX + k): v for k, v in run.derived.items()})
    return values


def run_tags(mapping: RunMapping, run: RunEntry, state: State) -> dict[str, str]:
    """The run's tags: the experiment's ``tracking.tags``, each value by its path, then the tool's own.

    Later ones win: a ``tracking.tags`` entry named like an axis or ``status`` is overridden.

    >>> plan = TrackingPlan("mlflow", "exp", tags={"team": "nlp"})
    >>> m = RunMapping("exp", "r", False, None, "b", "", "", (), "passed", None, (), tracking=plan)
    >>> r = RunEntry("run_000", 0, "c", "0", "/o", {"optimizer.lr": 0.001}, "passed", None)
    >>> list(run_tags(m, r, State.RUNNING).items())      # doctest: +NORMALIZE_WHITESPACE
    [('team', 'nlp'), ('optimizer.lr', '0.001'), ('tcw.run_id', 'run_000'), ('tcw.experiment', 'exp'),
     ('tcw.configuration', '0'), ('status', 'running')]
    """
    plan_tags = mapping.tracking.tags if mapping.tracking else {}
    tags = {_key(k): _text(v, _MAX_TAG_VALUE) for k, v in plan_tags.items()}
    tags.update({_key(k): _text(v, _MAX_TAG_VALUE) for k, v in run_values(run).items()})
    tags.update({RUN_ID_TAG: run.run_id, EXPERIMENT_TAG: mapping.experiment_name,
                 CONFIGURATION_TAG: str(run.configuration), STATUS_TAG: str(state)})
    return tags


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """One result's metrics as logged: ``eval/<metric>`` and ``eval/<evaluator>_seconds``.

    >>> eval_metrics(EvalResult("lm_eval", 0, {"count_mc/acc": 0.75}, seconds=2.5))
    {'eval/count_mc/acc': 0.75, 'eval/lm_eval_seconds': 2.5}
    """
    metrics = {_key(EVAL_PREFIX + name): float(value) for name, value in result.metrics.items()}
    if result.seconds is not None:
        metrics[_key(f"{EVAL_PREFIX}{result.evaluator}_seconds")] = float(result.seconds)
    return metrics


def _key(name: str) -> str:
    """``name`` with what MLflow refuses in a key (anything but letters, digits, ``_-. /:``) made ``_``."""
    cleaned = re.sub(r"[^\w.\- /:]", "_", str(name)).lstrip("/")
    return re.sub(r"/{2,}", "/", cleaned) or "_"


def _text(value: Any, limit: int) -> str:
    """A value as the backend stores it (a string), cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exit_code(record: StatusRecord) -> int:
    """The exit code W&B gets (it decides finished or failed): 0 only for a completed run."""
    if record.state == State.COMPLETED:
        return 0
    return record.exit_code if record.exit_code else 1


def _millis(iso: str | None) -> int:
    """An ISO time as MLflow's milliseconds since the epoch (now when missing or unreadable)."""
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(time.time() * 1000)


# ----------------------------------------------------------------------------- checks and messages


def _check_backend(plan: TrackingPlan) -> None:
    """The backend is one we know and its package is installed (found without importing it)."""
    if plan.backend not in BACKENDS:
        raise TrackingError(f"tracking.backend '{plan.backend}' is not supported: use mlflow or wandb in "
                            "experiment.yaml and generate again")
    if importlib.util.find_spec(plan.backend) is None:
        raise TrackingError(
            f"tracking.backend is {plan.backend}, but the {plan.backend} package is not installed in {sys.prefix}: "
            f"{INSTALL_HINT} (or pip install {plan.backend}), or remove tracking: from experiment.yaml and "
            "generate again")


def _warning(plan: TrackingPlan, run: RunEntry, record: StatusRecord, what: str, e: BaseException) -> str:
    where = f"MLflow at {_mlflow_uri_or_none(plan)}" if plan.backend == MLFLOW else f"W&B project {_project(plan)}"
    return (f"{run.run_id}: {what} could not be logged to {where} (run {record.tracking_run_id}): {one_line(e)}; "
            "the result itself is recorded in status/ and results.csv")


# ----------------------------------------------------------------------------- MLflow


def _mlflow_uri_or_none(plan: TrackingPlan) -> str | None:
    return plan.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def _mlflow_uri(plan: TrackingPlan) -> str:
    uri = _mlflow_uri_or_none(plan)
    if not uri:
        raise TrackingError("tracking.backend is mlflow but no tracking_uri is set: add tracking.tracking_uri "
                            "(sqlite:///mlflow.db or http://host:port) to experiment.yaml and generate again")
    return uri


def _probe(uri: str) -> None:
    """For an ``http(s)`` URI: GET /health once, without MLflow's retries (minutes against a dead server).

    For an ``sqlite:///`` URI: create the database's folder (sqlite creates the file, not folders).
    """
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot create {folder} for the MLflow database {uri}: {e.strerror or e}; "
                                "fix tracking.tracking_uri in experiment.yaml and generate again") from None
        return
    if not uri.startswith(("http://", "https://")):
        return  # databricks, other stores: the client's query in check_reachable speaks for them
    health = uri.rstrip("/") + "/health"
    fix = ("start the MLflow server (e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
           "sqlite:///mlflow.db`), or point tracking.tracking_uri in experiment.yaml at a running one and generate "
           "again")
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        reason = getattr(reason, "strerror", None) or reason
        raise TrackingError(f"nothing answers at {uri} ({reason}): {fix}") from None
    if status != 200:
        raise TrackingError(f"{uri} answered HTTP {status} to /health, so it is not a working MLflow server: {fix}")


def _mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri`` (mlflow imported here: only tracked runs load it)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from offline clusters
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise TrackingError(f"mlflow cannot be imported ({e}): {INSTALL_HINT}") from None
    return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside an sqlite database (``mlartifacts/``), else the server's
    choice. Without it MLflow would use ``./mlruns`` of whatever folder the runner was started from."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def _experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created when missing (tolerating another process creating it first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # created meanwhile by a parallel run
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise TrackingError(f"MLflow experiment '{name}' at {uri} is deleted: restore it (`mlflow experiments "
                            f"restore --experiment-id {found.experiment_id}`), or choose another tracking.experiment")
    return found.experiment_id


def _mlflow_start(plan: TrackingPlan, mapping: RunMapping, run: RunEntry) -> TrackedRun:
    uri = _mlflow_uri(plan)
    _probe(uri)
    client = _mlflow_client(uri)
    created = None
    try:
        experiment_id = _experiment_id(client, uri, plan.experiment)
        created = client.create_run(experiment_id, run_name=run.tracking_name or run.label,
                                    tags=run_tags(mapping, run, State.RUNNING))
        _log_params(client, created.info.run_id, run_params(run))
    except TrackingError:
        raise
    except Exception as e:  # sqlite, HTTP, validation: one message, the run does not start
        if created is not None:
            _abandon(client, created.info.run_id)
        raise TrackingError(f"{run.run_id}: could not create its MLflow run in experiment '{plan.experiment}' at "
                            f"{uri}: {one_line(e)}") from None
    run_id = created.info.run_id
    return TrackedRun(run_id, {
        "MLFLOW_RUN_ID": run_id,  # MLFlowLogger's start_run resumes this run instead of creating one
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": plan.experiment,  # the run's experiment: resuming from another one fails
        "MLFLOW_DISABLE_TELEMETRY": "true",
    })


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])


def _abandon(client: Any, run_id: str) -> None:
    """Mark a half-created run FAILED, so it does not look like a run in progress (best effort)."""
    try:
        client.set_terminated(run_id, status="FAILED")
    except Exception:  # already failing: the original error is the one to report
        pass


def _mlflow_end(plan: TrackingPlan, run: RunEntry, record: StatusRecord) -> None:
    from mlflow.entities import Metric, RunTag

    uri = _mlflow_uri(plan)
    _probe(uri)
    client = _mlflow_client(uri)
    ended = _millis(record.ended)
    tags = [RunTag(STATUS_TAG, str(record.state))]
    if record.exit_code is not None:
        tags.append(RunTag(EXIT_CODE_TAG, str(record.exit_code)))
    wall = record.wall_seconds()
    metrics = [] if wall is None else [Metric(WALL_METRIC, wall, ended, 0)]
    client.log_batch(record.tracking_run_id, metrics=metrics, tags=tags)
    # After the child: its MLFlowLogger ended the run FINISHED (or, crashing, left it RUNNING)
    client.set_terminated(record.tracking_run_id, status=_MLFLOW_STATUS[record.state], end_time=ended)


def _mlflow_log_evaluation(plan: TrackingPlan, record: StatusRecord, results: list[EvalResult]) -> None:
    from mlflow.entities import Metric

    uri = _mlflow_uri(plan)
    _probe(uri)
    client = _mlflow_client(uri)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, r.epoch) for r in results for k, v in eval_metrics(r).items()]
    for i in range(0, len(metrics), _MAX_BATCH_METRICS):
        client.log_batch(record.tracking_run_id, metrics=metrics[i:i + _MAX_BATCH_METRICS])


# ----------------------------------------------------------------------------- W&B


def _project(plan: TrackingPlan) -> str:
    return plan.project or WANDB_DEFAULT_PROJECT


def _wandb_dir(plan: TrackingPlan, run: RunEntry) -> str:
    """Where W&B writes locally: ``tracking.dir``, else the run's output_dir (the child and the runner have
    different working directories, and offline, both must write into the same ``wandb/`` folder)."""
    return plan.dir or run.output_dir


def wandb_tags(tags: dict[str, str]) -> list[str]:
    """Tags as W&B takes them: ``key=value`` strings of 1 to 64 characters, without commas.

    >>> wandb_tags({"optimizer.lr": "0.001", "data": "a,b"})
    ['optimizer.lr=0.001', 'data=a;b']
    """
    out = []
    for key, value in tags.items():
        tag = f"{key}={value}".replace(",", ";")  # WANDB_TAGS is split on commas
        out.append(tag if len(tag) <= _MAX_WANDB_TAG else tag[: _MAX_WANDB_TAG - 1] + "…")
    return out


def _check_wandb(plan: TrackingPlan) -> None:
    """Offline: its folder can be created. Online: an API key is configured and the server accepts it."""
    if plan.mode in ("offline", "dryrun", "disabled"):
        if plan.dir:
            try:
                Path(plan.dir).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise TrackingError(f"cannot create the W&B folder {plan.dir}: {e.strerror or e}; fix tracking.dir "
                                    "in experiment.yaml and generate again") from None
        return
    import wandb

    offline = "or set tracking.mode: offline in experiment.yaml (upload later with `wandb sync`) and generate again"
    try:
        logged_in = wandb.login(verify=True, prompt=False)
    except Exception as e:  # AuthenticationError, CommError: a bad key or a server out of reach
        raise TrackingError(f"W&B cannot be reached or refused the API key ({one_line(e)}): check the network and "
                            f"`wandb login`, {offline}") from None
    if not logged_in:
        raise TrackingError(f"no W&B API key is configured: run `wandb login` or set WANDB_API_KEY, {offline}")


def _wandb_start(plan: TrackingPlan, mapping: RunMapping, run: RunEntry) -> TrackedRun:
    # A fresh id per attempt: a rerun of a failed run is a new W&B run, as it is a new MLflow run
    run_id = f"{re.sub(r'[^A-Za-z0-9_-]', '_', run.run_id)}-{secrets.token_hex(4)}"
    folder = _wandb_dir(plan, run)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrackingError(f"{run.run_id}: cannot create the W&B folder {folder}: {e.strerror or e}") from None
    env = {
        "WANDB_RUN_ID": run_id,
        "WANDB_RESUME": "allow",  # create the run with this id (online: or continue it, should it exist)
        # The config's own `tags:` would replace these: the compile side leaves tags to this variable
        "WANDB_TAGS": ",".join(wandb_tags(run_tags(mapping, run, State.RUNNING))),
        "WANDB_PROJECT": _project(plan),
        "WANDB_RUN_GROUP": plan.experiment,
        "WANDB_NAME": run.tracking_name or run.label,
        "WANDB_DIR": folder,
    }
    if plan.mode:
        env["WANDB_MODE"] = plan.mode
    return TrackedRun(run_id, env)


def _wandb_resume(plan: TrackingPlan, mapping: RunMapping, run: RunEntry, record: StatusRecord) -> Any:
    """Resume the run ``record.tracking_run_id`` from this process (offline: a new segment of it), with its
    tags as they stand now (the last segment's tags are the run's tags once synced)."""
    import wandb

    return wandb.init(
        id=record.tracking_run_id, resume="allow", project=_project(plan), group=plan.experiment,
        name=run.tracking_name or run.label, mode=plan.mode, dir=_wandb_dir(plan, run),
        tags=wandb_tags(run_tags(mapping, run, record.state)),
        reinit="create_new",  # the runner may hold other runs; never finish or reuse theirs
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_save_requirements=False),
    )


def _wandb_end(plan: TrackingPlan, mapping: RunMapping, run: RunEntry, record: StatusRecord) -> None:
    wb = _wandb_resume(plan, mapping, run, record)
    try:
        # torchtune's config already holds every value under its own path; these mark which were swept
        wb.config.update(_prefixed_values(run), allow_val_change=True)
        wall = record.wall_seconds()
        if wall is not None:
            wb.summary[WALL_METRIC] = wall
        wb.summary[STATUS_TAG] = str(record.state)
        if record.exit_code is not None:
            wb.summary[EXIT_CODE_TAG] = record.exit_code
    finally:
        wb.finish(exit_code=_exit_code(record))


def _wandb_log_evaluation(plan: TrackingPlan, mapping: RunMapping, run: RunEntry, record: StatusRecord,
                          results: list[EvalResult]) -> None:
    wb = _wandb_resume(plan, mapping, run, record)
    try:
        wb.define_metric("epoch")
        wb.define_metric(EVAL_PREFIX + "*", step_metric="epoch")  # charts against the epoch, not W&B's step
        for result in sorted(results, key=lambda r: r.epoch):
            wb.log({**eval_metrics(result), "epoch": result.epoch})
    finally:
        wb.finish(exit_code=_exit_code(record))
