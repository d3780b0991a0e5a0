"""The experiment directory: the one contract between the compile side and the execute side.

``generate`` writes an experiment directory; ``run``, ``submit``, ``status`` and
``collect`` read it, and only it (Appendix B). This module owns that contract:
the file names, the typed records (``RunMapping`` and its ``RunEntry`` rows,
``StatusRecord``, ``JobRecord``), the states, and the functions that load and
dump them. No other module spells a run_mapping.yaml key or a status file name.
It imports neither torch, torchtune nor pydantic, so the commands that only
read a directory start in a fraction of a second.

    >>> mapping = load_mapping("outputs/tiny_rank_lr")                 # doctest: +SKIP
    >>> mapping.runs[0].config, mapping.slurm.max_concurrent            # doctest: +SKIP
    ('configs/run_000.yaml', 2)
    >>> read_status("outputs/tiny_rank_lr", "run_000").state           # doctest: +SKIP
    <State.PENDING: 'pending'>
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from .atomic import atomic_write_text
from .errors import ExperimentDirError

#: Version of the run_mapping.yaml layout; a directory with another one must be generated again.
FORMAT = 3

# ----------------------------------------------------------------------------- file names

EXPERIMENT_FILE = "experiment.yaml"
#: experiment.yaml with its ``include:`` fragments merged in (written only when it has includes).
RESOLVED_EXPERIMENT_FILE = "experiment.resolved.yaml"
MAPPING_FILE = "run_mapping.yaml"
#: The same data as JSON, written with it; read instead when it matches the YAML's sha256.
MAPPING_CACHE_FILE = ".run_mapping.json"
#: Held while run_mapping.yaml is rewritten after generation (``add_attempt``).
MAPPING_LOCK_FILE = ".run_mapping.lock"
REPORT_FILE = "validation_report.txt"
SCRIPT_FILE = "submit.sbatch"
#: The job-array script of the runs whose SLURM resources differ from the first run's (``submit_1.sbatch``...).
SCRIPT_FILE_N = "submit_{n}.sbatch"
JOBS_FILE = "slurm_jobs.yaml"
JOBS_LOCK_FILE = ".slurm_jobs.lock"
CONFIGS_DIR = "configs"
RUNS_DIR = "runs"
STATUS_DIR = "status"
LOG_DIR = "logs"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
LOSS_PLOT = "loss_curves.svg"
#: The primary metric (an evaluation metric, else final_loss) against each variable, written by ``collect``.
METRIC_PLOT = "metric_by_variable.svg"
#: The evaluation configs, one folder per run: ``eval/run_000/epoch_0.lm_eval.yaml`` (Appendix B).
EVAL_DIR = "eval"
#: The job-array script of the evaluations (``eval_1.sbatch``... for the other resource groups).
EVAL_SCRIPT_FILE = "eval.sbatch"
EVAL_SCRIPT_FILE_N = "eval_{n}.sbatch"
#: Written into each run's output_dir when it starts and again when it ends.
METADATA_FILE = "metadata.json"
#: Where SLURM writes an array task's output (``%A`` job id, ``%a`` task id).
SLURM_LOG_PATTERN = f"{LOG_DIR}/%A_%a.out"
#: Set (to 1) in a SLURM task's environment by ``submit --force``: the task may train a completed run again.
FORCE_ENV = "TORCHTUNE_CONFIG_WRITER_FORCE"


def config_file(run_id: str) -> str:
    """A run's config, relative to the experiment directory: ``configs/run_000.yaml``."""
    return f"{CONFIGS_DIR}/{run_id}.yaml"


def local_log_file(run_id: str) -> str:
    """The log of a local run: ``logs/run_000.log``."""
    return f"{LOG_DIR}/{run_id}.log"


def slurm_log_file(array_job_id: str, task_id: str | int) -> str:
    """The log SLURM writes for one array task (``SLURM_LOG_PATTERN`` filled in)."""
    return f"{LOG_DIR}/{array_job_id}_{task_id}.out"


def status_path(exp_dir: str | Path, run_id: str) -> Path:
    return Path(exp_dir) / STATUS_DIR / f"{run_id}.json"


def eval_status_path(exp_dir: str | Path, run_id: str) -> Path:
    """The status record of a run's evaluation: ``status/eval/run_000.json``."""
    return Path(exp_dir) / STATUS_DIR / EVAL_DIR / f"{run_id}.json"


def local_eval_log_file(run_id: str) -> str:
    """The log of a run's local evaluation: ``logs/run_000.eval.log``."""
    return f"{LOG_DIR}/{run_id}.eval.log"


def eval_config_file(run_id: str, epoch: int, evaluator: str) -> str:
    """An evaluation config, relative to the experiment directory: ``eval/run_000/epoch_0.lm_eval.yaml``."""
    return f"{EVAL_DIR}/{run_id}/epoch_{epoch}.{evaluator}.yaml"


def eval_result_file(output_dir: str | Path, epoch: int, evaluator: str) -> str:
    """Where an evaluation writes its result, inside the run's output_dir: ``.../eval/epoch_0/lm_eval.json``."""
    return str(Path(output_dir) / EVAL_DIR / f"epoch_{epoch}" / f"{evaluator}.json")


# ----------------------------------------------------------------------------- states


class _Str(str, Enum):
    """A string enum that prints as its value (``f"{State.PENDING}"`` is ``pending``)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class State(_Str):
    """A run's state as its status record says (lower case)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The values a status record's ``state`` may have.
_STATE_VALUES = frozenset(s.value for s in State)


class SlurmState(_Str):
    """A job state as SLURM reports it (upper case); ``status`` shows these for submitted runs."""

    BOOT_FAIL = "BOOT_FAIL"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    COMPLETING = "COMPLETING"
    CONFIGURING = "CONFIGURING"
    DEADLINE = "DEADLINE"
    FAILED = "FAILED"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PENDING = "PENDING"
    PREEMPTED = "PREEMPTED"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    RESIZING = "RESIZING"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    REVOKED = "REVOKED"
    RUNNING = "RUNNING"
    SIGNALING = "SIGNALING"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"
    TIMEOUT = "TIMEOUT"

    @property
    def active(self) -> bool:
        """Queued or running: the task has not finished."""
        return self in _SLURM_ACTIVE

    @property
    def failed(self) -> bool:
        """Ended without success (a task that never wrote a final status record shows this)."""
        return self in _SLURM_FAILED


_SLURM_ACTIVE = frozenset({
    SlurmState.PENDING, SlurmState.CONFIGURING, SlurmState.RUNNING, SlurmState.COMPLETING, SlurmState.SUSPENDED,
    SlurmState.REQUEUED, SlurmState.REQUEUE_HOLD, SlurmState.REQUEUE_FED, SlurmState.RESV_DEL_HOLD,
    SlurmState.RESIZING, SlurmState.SIGNALING, SlurmState.STAGE_OUT, SlurmState.STOPPED,
})
_SLURM_FAILED = frozenset({
    SlurmState.FAILED, SlurmState.CANCELLED, SlurmState.TIMEOUT, SlurmState.NODE_FAIL, SlurmState.OUT_OF_MEMORY,
    SlurmState.PREEMPTED, SlurmState.BOOT_FAIL, SlurmState.DEADLINE, SlurmState.REVOKED, SlurmState.SPECIAL_EXIT,
})


class Validation(_Str):
    """What validation said of a run (or of the whole experiment) when it was generated."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class Evaluator(_Str):
    """What an evaluation computes (``evaluation:`` in experiment.yaml)."""

    HELDOUT = "heldout"
    """Mean per-token loss on a held-out dataset, with torchtune's own components."""
    LM_EVAL = "lm_eval"
    """lm-evaluation-harness tasks, on the run's merged weights."""
    INSPECT = "inspect"
    """inspect-ai tasks, on the run's weights in Hugging Face format."""


# ----------------------------------------------------------------------------- run_mapping.yaml


@dataclass(frozen=True)
class MetricLog:
    """Where a run's DiskLogger writes (resolved at generation): ``dir`` and, if fixed, the file name."""

    dir: str
    filename: str | None = None


@dataclass(frozen=True)
class SlurmPlan:
    """The ``slurm:`` settings the execute side needs, as resolved when the directory was generated."""

    max_concurrent: int | None = None
    """At most this many runs at once (``--array=...%K``), across all arrays of a submission."""
    max_array_size: int = 1001
    """Largest array task id + 1; the cluster's MaxArraySize wins when smaller."""
    gpus_per_run: int = 1
    nodes: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    constraint: str | None = None
    max_submit: int | None = None
    """At most this many of the experiment's tasks queued or running at once (a QoS MaxSubmitJobs), a
    feeding task included; None: ``submit`` asks ``sacctmgr`` and, when it finds no limit, submits everything."""
    time_safety: float = 1.5
    """With ``time: auto``: a run's limit is its tokens / measured tokens per second times this."""
    requeue: bool = True
    """With a time limit: ask for a warning signal before it, requeue the task and resume the run."""
    signal_seconds: int = 300
    """How long before the time limit the warning (SIGUSR1) comes (``--signal=B:USR1@N``)."""
    max_requeues: int = 3
    """A run requeued this many times without saving a new epoch is not requeued again."""

    @property
    def time_auto(self) -> bool:
        """``time: auto``: each run's limit comes from the measured throughput of earlier runs."""
        return self.time == TIME_AUTO


#: ``slurm.time`` value asking for time limits estimated from completed runs.
TIME_AUTO = "auto"


@dataclass(frozen=True)
class OomRetryPlan:
    """``oom_retry:``: a run that fails out of memory is tried again with half the batch size."""

    max_attempts: int = 3
    """Attempts in all, the first included."""


@dataclass(frozen=True)
class Attempt:
    """A later attempt of a run (2, 3, ...): the config it trains with, and why and how it differs.

    Attempt 1 is the run's own ``config``; ``RunEntry.attempts`` lists the others, oldest first.
    """

    number: int
    config: str
    """Its config, relative to the experiment directory (``configs/run_003.attempt_2.yaml``)."""
    config_sha256: str
    reason: str
    """Why it was made: ``oom`` (the previous attempt ran out of memory)."""
    changes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Dotted key -> [previous value, this attempt's value]."""
    note: str | None = None
    """What else a reader must know (``the effective batch size changes from 6 to 4``)."""
    created: str = ""


@dataclass(frozen=True)
class MemoryRecord:
    """A run's estimated peak GPU memory per device, as ``generate`` computed it (Appendix H)."""

    total_gib: float
    breakdown: dict[str, float]
    """GiB per term: weights, gradients, optimizer, activations, logits, overhead."""
    gpus: int = 1
    """GPUs the estimate assumes the run's state is sharded over."""
    budget_gib: float | None = None
    """The ``hardware:`` memory per GPU it was checked against (None: not checked)."""


@dataclass(frozen=True)
class EvalEntry:
    """One evaluation of a run: an evaluator on one epoch's checkpoint."""

    evaluator: Evaluator
    epoch: int
    config: str
    """Its config, relative to the experiment directory (``eval/run_000/epoch_0.heldout.yaml``)."""
    result: str
    """The JSON file it writes (an ``EvalResult``), absolute, inside the run's output_dir."""
    config_sha256: str = ""
    """sha256 of the config as written; an evaluation whose config changed since may not run."""

    @property
    def name(self) -> str:
        """``lm_eval@epoch_0``: how status and logs name it."""
        return f"{self.evaluator}@epoch_{self.epoch}"


@dataclass(frozen=True)
class EvaluationPlan:
    """The experiment's ``evaluation:`` settings the execute and results sides need."""

    primary_metric: str | None = None
    """The metric results rank runs by (``count_mc/acc``); None: the first metric an evaluation reports."""
    goal: str | None = None
    """``max`` or ``min``; None: from the metric's name (losses and perplexities are minimized)."""
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``SlurmPlan`` fields the evaluation tasks set for themselves (``{"time": "00:30:00"}``); the others
    are the training ones. Only what ``evaluation.slurm`` names, so a default value can be asked for too."""


@dataclass(frozen=True)
class TrackingPlan:
    """The ``tracking:`` settings: where every run (and its evaluation) is logged."""

    backend: str
    """``mlflow`` or ``wandb``."""
    experiment: str
    """MLflow experiment name / W&B group, as resolved at generation."""
    tracking_uri: str | None = None
    """MLflow tracking URI (``sqlite:////abs/mlflow.db``, ``http://host:port``)."""
    project: str | None = None
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user)."""
    mode: str | None = None
    """W&B mode (``online``, ``offline``)."""
    dir: str | None = None
    """W&B's local folder (absolute); None: each run's own output_dir (``<output_dir>/wandb/``)."""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class GitInfo:
    """The git state of the experiment file's repository when the directory was generated."""

    commit: str
    dirty: bool
    """True when the repository had uncommitted changes."""
    root: str


@dataclass(frozen=True)
class RunEntry:
    """One run of the experiment: a row of run_mapping.yaml."""

    run_id: str
    index: int
    """Position in the sweep; array task T of a job submitted with offset O runs index T + O."""
    config: str
    """Its config, relative to the experiment directory."""
    config_sha256: str
    """sha256 of the config file as written; a run whose file changed since may not run."""
    output_dir: str
    parameters: dict[str, Any]
    """Axis (resolved dotted path) -> this run's value, in axis order: variables, zip, sample, then ``seed``."""
    validation: Validation
    metric_log: MetricLog | None
    """Where its metrics go; None when its metric logger is not torchtune's DiskLogger."""
    name: str | None = None
    """Its ``run_name`` (None when the experiment names no runs)."""
    derived: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Values computed from expressions (``derived:`` and ``{{ }}`` controls), by dotted path."""
    seed: Any = None
    """Its value of the ``seeds:`` axis (None without one)."""
    configuration: int = 0
    """Runs that differ only in their seed share this number (dense, in run order)."""
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    """SLURM resources in which this run differs from ``RunMapping.slurm`` (empty: the same)."""
    memory: MemoryRecord | None = None
    """Its estimated peak GPU memory (None: on the CPU, not estimated, or written before estimates existed)."""
    evaluations: tuple[EvalEntry, ...] = ()
    """What is evaluated after it trains, in order (empty without ``evaluation:``)."""
    tracking_name: str | None = None
    """Its run name in the tracking backend (None without ``tracking:``)."""
    attempts: tuple[Attempt, ...] = ()
    """Its later attempts (out-of-memory retries), oldest first; empty: it trains with ``config``."""
    tokens: int | None = None
    """Tokens it trains on (dataset tokens x epochs), counted by ``generate`` for ``slurm.time: auto``."""

    @property
    def label(self) -> str:
        """How people see the run: its name, else its id."""
        return self.name or self.run_id

    @property
    def attempt(self) -> int:
        """The number of its current attempt (1 until a retry was written)."""
        return self.attempts[-1].number if self.attempts else 1

    @property
    def current_config(self) -> str:
        """The config its next training uses: the latest attempt's, else ``config``."""
        return self.attempts[-1].config if self.attempts else self.config

    def config_of(self, attempt: int | None) -> str:
        """The config attempt ``attempt`` trains with (1 or None: ``config``; an unknown number: the current one)."""
        if not attempt or attempt == 1:
            return self.config
        return next((a.config for a in self.attempts if a.number == attempt), self.current_config)

    @property
    def current_sha256(self) -> str:
        """sha256 of ``current_config`` as written."""
        return self.attempts[-1].config_sha256 if self.attempts else self.config_sha256


@dataclass(frozen=True)
class RunMapping:
    """The whole run_mapping.yaml: the experiment, how to launch and submit its runs, and the runs."""

    experiment_name: str
    recipe: str
    """A registry recipe name, or the absolute path of a recipe .py file."""
    distributed: bool
    """True when runs start through torchrun."""
    base_config: str | None
    base_config_file: str | None
    created: str
    tool_version: str
    variables: tuple[str, ...]
    """Every axis (dotted path): variables, zip and sample keys, then ``seed`` when there are seeds."""
    validation: Validation
    slurm: SlurmPlan
    """Experiment-wide settings, and the resources of the first run (a run lists where it differs)."""
    runs: tuple[RunEntry, ...]
    derived: tuple[str, ...] = ()
    """Dotted paths set by expressions, per run."""
    seeded: bool = False
    """True when the experiment has ``seeds:`` (results then aggregate over seeds per configuration)."""
    evaluation: EvaluationPlan | None = None
    """None when the experiment evaluates nothing."""
    tracking: TrackingPlan | None = None
    """None when runs are tracked by nothing but their DiskLogger (or their own metric_logger)."""
    git: GitInfo | None = None
    """None when the experiment file is not in a git repository (or git is missing)."""
    oom_retry: OomRetryPlan | None = None
    """None: a run that runs out of memory is not retried by itself (``submit --retry-oom`` still can)."""
    resumable: bool = False
    """The recipe resumes from its last saved epoch (``resume_from_checkpoint=True``) after a requeue."""
    format: int = FORMAT

    @cached_property
    def by_index(self) -> dict[int, RunEntry]:
        return {r.index: r for r in self.runs}

    @property
    def base(self) -> str:
        return self.base_config or self.base_config_file or "?"

    def run_id_of(self, index: int) -> str:
        """The run id of ``index`` (as wide as the experiment's own ids: ``run_007`` or ``run_0007``)."""
        run = self.by_index.get(index)
        return run.run_id if run else run_id(index, self.id_width)

    @property
    def id_width(self) -> int:
        return len(self.runs[0].run_id) - len("run_") if self.runs else 3


def is_recipe_file(recipe: str) -> bool:
    """True for a recipe given as a path to a .py file, False for a name in torchtune's registry."""
    return recipe.endswith(".py")


def run_id(index: int, width: int = 3) -> str:
    """``run_007`` (``width`` digits)."""
    return f"run_{index:0{width}d}"


#: Keys a run may lack: added to format 3 later, so older directories still load.
_OPTIONAL_RUN_KEYS = ("memory", "evaluations", "tracking_name", "attempts", "tokens")
_RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunEntry) if f.name not in _OPTIONAL_RUN_KEYS)


def _mapping_data(mapping: RunMapping) -> dict[str, Any]:
    data = _plain(mapping)
    data.pop("base_config_file" if mapping.base_config else "base_config")
    order = ["format", "experiment_name", "recipe", "distributed", "base_config", "base_config_file", "created",
             "tool_version", "git", "variables", "derived", "seeded", "validation", "resumable", "slurm", "oom_retry",
             "evaluation", "tracking", "runs"]
    for key in ("git", "evaluation", "tracking", "oom_retry"):  # optional sections: absent rather than null
        if data.get(key) is None:
            data.pop(key, None)
    for run in data["runs"]:
        for key in _OPTIONAL_RUN_KEYS:
            if run.get(key) in (None, []):
                run.pop(key, None)
    return {k: data[k] for k in order if k in data}


def dump_mapping(mapping: RunMapping, data: dict[str, Any] | None = None) -> str:
    """The text of run_mapping.yaml (``data``: ``_mapping_data(mapping)`` when the caller has it)."""
    text = yaml.dump(data or _mapping_data(mapping), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096)
    return "# The run table of this experiment directory (Appendix B); written by `generate`, read by\n" \
           "# run, submit, status and collect. Do not edit: regenerate from experiment.yaml instead.\n" + text


def write_mapping(exp_dir: str | Path, mapping: RunMapping) -> Path:
    """Write run_mapping.yaml, and beside it the same data as JSON for fast reading (``MAPPING_CACHE_FILE``)."""
    path = Path(exp_dir) / MAPPING_FILE
    data = _mapping_data(mapping)
    text = dump_mapping(mapping, data)
    atomic_write_text(path, text)  # tasks read it while a retry (``add_attempt``) rewrites it
    try:
        blob = json.dumps({"source_sha256": hashlib.sha256(text.encode()).hexdigest(), "data": data}, allow_nan=False)
    except ValueError:
        return path  # a NaN or infinite value: JSON cannot carry it, the YAML alone will be read
    if json.loads(blob)["data"] == data:  # else e.g. a non-string key: again the YAML alone
        atomic_write_text(Path(exp_dir) / MAPPING_CACHE_FILE, blob)
    return path


def add_attempt(exp_dir: str | Path, index: int, attempt: Attempt) -> RunEntry:
    """Record a new attempt of run ``index`` in run_mapping.yaml (under its lock, atomically) and return
    the run as it is now. Tasks of other runs may do the same at the same moment from other nodes.

    >>> add_attempt(exp, 3, Attempt(2, "configs/run_003.attempt_2.yaml", sha, "oom")).attempt   # doctest: +SKIP
    2
    """
    from filelock import FileLock

    exp = Path(exp_dir)
    with FileLock(str(exp / MAPPING_LOCK_FILE), timeout=120):
        mapping = load_mapping(exp)
        run = mapping.by_index[index]
        if attempt.number != run.attempt + 1:
            raise ExperimentDirError(f"{run.run_id} is at attempt {run.attempt}; attempt {attempt.number} "
                                     "cannot follow it (another process recorded one first?)")
        new = dataclasses.replace(run, attempts=(*run.attempts, attempt))
        write_mapping(exp, dataclasses.replace(mapping, runs=tuple(new if r.index == index else r
                                                                   for r in mapping.runs)))
    return new


def _read_mapping_data(path: Path) -> Any:
    """run_mapping.yaml's data: from the JSON copy when it was written from these very bytes, else the YAML.

    libyaml still builds every node in Python: 10,000 runs take ~2 s as YAML, ~0.03 s as JSON.
    An edited (or older) run_mapping.yaml no longer matches the copy's sha256, so it is read itself.
    """
    raw = path.read_bytes()
    try:
        cached = json.loads((path.parent / MAPPING_CACHE_FILE).read_text())
        if cached["source_sha256"] == hashlib.sha256(raw).hexdigest():
            return cached["data"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no usable copy: read the YAML
    return yaml.load(raw.decode(), Loader=_Loader)


def load_mapping(exp_dir: str | Path) -> RunMapping:
    """Load ``run_mapping.yaml`` of an experiment directory.

    Raises ``ExperimentDirError`` (saying what to pass instead, or to
    regenerate) when ``exp_dir`` is not an experiment directory, or its run
    table was written by another version or edited by hand.

    >>> load_mapping("outputs/tiny_rank_lr").runs[0].config      # doctest: +SKIP
    'configs/run_000.yaml'
    """
    exp = Path(exp_dir)
    path = exp / MAPPING_FILE
    if not path.is_file():
        if exp.is_file() and exp.suffix in (".yaml", ".yml"):
            hint = f"'{exp}' is a file; generate it first (torchtune-config-writer generate {exp}) and pass the directory it writes"
        elif not exp.exists():
            hint = f"'{exp}' does not exist; pass the directory that `generate` wrote"
        else:
            hint = f"'{exp}' has no {MAPPING_FILE}, so it is not an experiment directory; pass the directory that `generate` wrote"
        raise ExperimentDirError(hint)
    regenerate = "generate the experiment again (into a new directory if its runs have started)"
    try:
        data = _read_mapping_data(path)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ExperimentDirError(f"{path}: not valid YAML ({e}); {regenerate}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ExperimentDirError(f"{path}: has no 'runs' list; {regenerate}")
    if data.get("format") != FORMAT:
        raise ExperimentDirError(
            f"{path} was written by another version of torchtune_config_writer (format {data.get('format', 1)}, "
            f"this version reads format {FORMAT}); {regenerate}"
        )
    for i, run in enumerate(data["runs"]):
        missing = [k for k in _RUN_KEYS if not isinstance(run, dict) or k not in run]
        if missing:
            raise ExperimentDirError(f"{path}: runs[{i}] lacks {', '.join(missing)}; the file was edited or written "
                                     f"by another version of torchtune_config_writer: {regenerate}")
    try:
        return RunMapping(
            experiment_name=str(data["experiment_name"]), recipe=str(data["recipe"]),
            distributed=bool(data["distributed"]), base_config=data.get("base_config"),
            base_config_file=data.get("base_config_file"), created=str(data["created"]),
            tool_version=str(data["tool_version"]), variables=tuple(str(v) for v in data["variables"]),
            validation=Validation(data["validation"]), slurm=_build(SlurmPlan, data["slurm"]),
            runs=tuple(_run_entry(r) for r in data["runs"]),
            derived=tuple(str(v) for v in data["derived"]), seeded=bool(data["seeded"]),
            evaluation=_evaluation_plan(data.get("evaluation")),
            tracking=None if data.get("tracking") is None else _build(TrackingPlan, data["tracking"]),
            git=None if data.get("git") is None else _build(GitInfo, data["git"]),
            oom_retry=None if data.get("oom_retry") is None else _build(OomRetryPlan, data["oom_retry"]),
            resumable=bool(data.get("resumable", False)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ExperimentDirError(
            f"{path}: malformed ({type(e).__name__}: {e}); the file was edited by hand: {regenerate}"
        ) from None


def _run_entry(data: dict[str, Any]) -> RunEntry:
    log = data["metric_log"]
    return RunEntry(
        run_id=str(data["run_id"]), index=int(data["index"]), config=str(data["config"]),
        config_sha256=str(data["config_sha256"]), output_dir=str(data["output_dir"]),
        parameters=dict(data["parameters"] or {}), validation=Validation(data["validation"]),
        metric_log=None if log is None else MetricLog(str(log["dir"]), log.get("filename")),
        name=None if data["name"] is None else str(data["name"]), derived=dict(data["derived"] or {}),
        seed=data["seed"], configuration=int(data["configuration"]), resources=dict(data["resources"] or {}),
        memory=_memory_record(data.get("memory")),
        evaluations=tuple(EvalEntry(Evaluator(e["evaluator"]), int(e["epoch"]), str(e["config"]), str(e["result"]),
                                    str(e.get("config_sha256") or "")) for e in data.get("evaluations") or ()),
        tracking_name=None if data.get("tracking_name") is None else str(data["tracking_name"]),
        attempts=tuple(_build(Attempt, {**a, "changes": dict(a.get("changes") or {})}) for a in data.get("attempts") or ()),
        tokens=None if data.get("tokens") is None else int(data["tokens"]),
    )


def _evaluation_plan(data: Any) -> EvaluationPlan | None:
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(SlurmPlan)}
    return EvaluationPlan(primary_metric=data.get("primary_metric"), goal=data.get("goal"),
                          slurm={k: v for k, v in (data.get("slurm") or {}).items() if k in names})


def _memory_record(data: Any) -> MemoryRecord | None:
    if data is None:
        return None
    return MemoryRecord(total_gib=float(data["total_gib"]), breakdown={str(k): float(v) for k, v in data["breakdown"].items()},
                        gpus=int(data.get("gpus", 1)), budget_gib=None if data.get("budget_gib") is None else float(data["budget_gib"]))


# ----------------------------------------------------------------------------- status/run_NNN.json


@dataclass(frozen=True)
class StatusRecord:
    """What ``status/run_NNN.json`` says of a run; a run without one is ``pending``."""

    run_id: str
    state: State = State.PENDING
    exit_code: int | None = None
    started: str | None = None
    """ISO time with zone; ``ended`` likewise."""
    ended: str | None = None
    host: str | None = None
    slurm_job_id: str | None = None
    slurm_array_job_id: str | None = None
    slurm_array_task_id: str | None = None
    log: str | None = None
    """Its log, relative to the experiment directory."""
    tracking_run_id: str | None = None
    """The run's id in the tracking backend (MLflow run id, W&B run id), once it started."""
    evaluations: dict[str, dict[str, Any]] | None = None
    """Only in an evaluation's record: ``EvalEntry.name`` -> ``{"state", "seconds", "error"}`` per evaluation."""
    attempt: int | None = None
    """Which attempt of the run (``RunEntry.attempts``) this record is of; None: the first."""
    slurm_state: str | None = None
    """SLURM's end state (``OUT_OF_MEMORY``, ``TIMEOUT``, ``NODE_FAIL``...) when the task could not record its
    own end and ``status`` learned it from squeue or sacct; ``state`` then says failed or cancelled."""
    requeues: int = 0
    """Times SLURM requeued the task (time limit warning, preemption) while it ran this attempt."""
    resumed_from_epoch: int | None = None
    """The saved epoch this attempt resumed from (``resume_from_checkpoint``); None: it started afresh."""
    note: str | None = None
    """One line for ``status``: why it was requeued, why it could not resume, ..."""
    first_started: str | None = None
    """When this attempt first started, before any requeue (``started`` is its latest start); None when it
    never restarted. A saved epoch older than this belongs to an earlier training and is never resumed from."""

    @property
    def slurm_task(self) -> tuple[str, int] | None:
        """(array job id, task id) of the SLURM task that wrote this record, if one did."""
        job, task = self.slurm_array_job_id, self.slurm_array_task_id
        return (str(job), int(task)) if job and str(task).isdigit() else None

    def wall_seconds(self, *, until_now: bool = False) -> float | None:
        """Seconds from ``started`` to ``ended`` (to now for a run still going, with ``until_now``);
        None when the times are missing or unreadable. Never negative (clock skew between nodes)."""
        try:
            start = datetime.fromisoformat(str(self.started))
            if self.ended:
                end = datetime.fromisoformat(self.ended)
            elif until_now:
                end = datetime.now(start.tzinfo)
            else:
                return None
        except (TypeError, ValueError):
            return None
        return max(0.0, (end - start).total_seconds())


def now_iso() -> str:
    """Now as records write their times: ISO 8601 in UTC, whole seconds (``written_before`` allows for them)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_tail(path: str | Path | None, size: int) -> str:
    """The last ``size`` bytes of a file (a run's log) as text; "" when it is missing or unreadable.

    Logs of long trainings grow large; what status and the retry logic look for is at their end.
    """
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def written_before(path: str | Path, started: str | None) -> bool:
    """True when ``path`` was last written before the attempt that started at ``started`` (a status
    record's ISO time): the file belongs to an earlier attempt (an older log, a score of older weights).

    False when ``started`` is missing or unreadable. Status times have whole seconds, so a file of
    that same second counts as the attempt's. Raises OSError when ``path`` cannot be read.
    """
    try:
        t0 = datetime.fromisoformat(str(started)).timestamp() if started else None
    except ValueError:
        return False
    return t0 is not None and Path(path).stat().st_mtime < t0 - 1


def metric_log_files(log: MetricLog | None, since: str | None = None) -> list[Path]:
    """A run's DiskLogger files written since ``since`` (a status record's ISO time), oldest first.

    Each start of a training writes a new ``log_<time>.txt`` into the run's log directory (unless the
    config fixes the file name): the last file is the latest start's; a run requeued and resumed
    (Appendix J.4) continues its step numbers in a new file. [] without a DiskLogger or files.
    """
    if log is None:
        return []  # metrics went to another logger (wandb, tensorboard...)
    folder = Path(log.dir)
    try:
        if log.filename:
            files = [folder / log.filename] if (folder / log.filename).is_file() else []
        else:  # one listing and no stat per entry: pathlib's glob costs far more, times 10,000 runs
            files = [folder / e.name for e in os.scandir(folder) if e.name.endswith(".txt") and e.is_file()]
        files = [f for f in files if not written_before(f, since)]
        return sorted(files, key=lambda f: f.stat().st_mtime) if len(files) > 1 else files
    except OSError:  # no log directory (yet), or a file removed meanwhile
        return []


def read_status(exp_dir: str | Path, run_id: str, *, evaluation: bool = False) -> StatusRecord:
    """The run's status record (its evaluation's with ``evaluation``); without a status file, ``pending``."""
    path = eval_status_path(exp_dir, run_id) if evaluation else status_path(exp_dir, run_id)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return StatusRecord(run_id)
    except (OSError, ValueError) as e:
        raise ExperimentDirError(f"{path}: unreadable status record ({e}); delete it to mark {run_id} pending") from None
    if not isinstance(data, dict) or data.get("state") not in _STATE_VALUES:
        states = ", ".join(s.value for s in State)
        raise ExperimentDirError(f"{path}: 'state' must be one of {states}; delete the file to mark {run_id} pending")
    return _build(StatusRecord, {**data, "run_id": run_id, "state": State(data["state"])})


def write_status(exp_dir: str | Path, record: StatusRecord, *, evaluation: bool = False) -> Path:
    """Write a status record (an evaluation's with ``evaluation``) atomically: readers see the old file
    or the new one, never half of one.

    >>> write_status(exp, StatusRecord("run_000", State.RUNNING))   # doctest: +SKIP
    """
    if not isinstance(record.state, State):
        raise ValueError(f"state must be a State, got {record.state!r}")
    path = eval_status_path(exp_dir, record.run_id) if evaluation else status_path(exp_dir, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_plain(record), indent=1) + "\n")
    return path


def read_all(exp_dir: str | Path, mapping: RunMapping) -> dict[str, StatusRecord]:
    """Every run's status record, keyed by run id, in index order (missing files read as pending).

    Lists ``status/`` once instead of trying one file per run: most runs of a
    large sweep have no record yet.
    """
    present = recorded_run_ids(exp_dir)
    return {r.run_id: read_status(exp_dir, r.run_id) if r.run_id in present else StatusRecord(r.run_id)
            for r in sorted(mapping.runs, key=lambda r: r.index)}


def read_all_evaluations(exp_dir: str | Path, mapping: RunMapping) -> dict[str, StatusRecord]:
    """Every evaluated run's evaluation record, keyed by run id (missing files read as pending)."""
    folder = Path(exp_dir) / STATUS_DIR / EVAL_DIR
    present = {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()
    return {r.run_id: read_status(exp_dir, r.run_id, evaluation=True) if r.run_id in present else StatusRecord(r.run_id)
            for r in sorted(mapping.runs, key=lambda r: r.index) if r.evaluations}


def recorded_run_ids(exp_dir: str | Path) -> set[str]:
    """The runs that have a status record (any state): the ones that ever started."""
    try:  # one listing, no stat per entry (pathlib's glob costs far more for 10,000 records)
        return {e.name[:-5] for e in os.scandir(Path(exp_dir) / STATUS_DIR) if e.name.endswith(".json") and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


# ----------------------------------------------------------------------------- evaluation results


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation found: the JSON file at ``EvalEntry.result``.

    Metric names are what results.csv calls its columns: ``heldout_loss``,
    ``<task>/<metric>`` for lm-eval and inspect-ai (``count_mc/acc``).
    """

    evaluator: Evaluator
    epoch: int
    metrics: dict[str, float]
    seconds: float | None = None
    """Wall time of the evaluation itself (model loading excluded when shared)."""
    checkpoint: str | None = None
    """The checkpoint folder it evaluated."""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Evaluator-specific extras (token counts, lm-eval versions, inspect log path)."""


def write_eval_result(path: str | Path, result: EvalResult) -> Path:
    """Write an evaluation result atomically (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_plain(result), indent=1, allow_nan=True) + "\n")
    return path


def read_eval_result(path: str | Path) -> EvalResult | None:
    """The result at ``path``; None when there is none yet or it cannot be read (never an exception)."""
    try:
        data = json.loads(Path(path).read_text())
        return EvalResult(Evaluator(data["evaluator"]), int(data["epoch"]),
                          {str(k): float(v) for k, v in data["metrics"].items() if isinstance(v, (int, float))},
                          data.get("seconds"), data.get("checkpoint"), dict(data.get("details") or {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ----------------------------------------------------------------------------- metadata.json


def write_metadata(output_dir: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a run's ``metadata.json`` into its output_dir (created if needed), atomically."""
    path = Path(output_dir) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_plain(dict(data)), indent=1, default=str) + "\n")
    return path


def read_metadata(output_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``metadata.json``; None when it has none or it cannot be read."""
    try:
        data = json.loads((Path(output_dir) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- slurm_jobs.yaml


#: ``JobRecord.kind`` (and ``QueuedTask.kind``): an array of training tasks, or of evaluation tasks.
TRAIN_JOB, EVAL_JOB = "train", "eval"


@dataclass(frozen=True)
class JobRecord:
    """One job array submitted by ``submit``: task T ran the run whose index is T + offset."""

    job_id: str
    submitted: str
    array: str
    """The ``--array`` value, e.g. ``0-3%2``."""
    offset: int
    indices: tuple[int, ...]
    command: str
    kind: str = TRAIN_JOB
    """``train``, or ``eval`` for an array of ``eval.sbatch`` (evaluations only)."""

    def task_of(self, index: int) -> int:
        return index - self.offset


def read_jobs(exp_dir: str | Path) -> list[JobRecord]:
    """The job arrays recorded in ``slurm_jobs.yaml``, oldest first ([] when none)."""
    path = Path(exp_dir) / JOBS_FILE
    if not path.is_file():
        return []
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
        jobs = data.get("jobs") if isinstance(data, dict) else None
        return [JobRecord(str(j["job_id"]), str(j.get("submitted") or ""), str(j.get("array") or ""),
                          int(j.get("offset") or 0), _job_indices(j.get("indices")),
                          str(j.get("command") or ""), str(j.get("kind") or TRAIN_JOB))
                for j in jobs or [] if isinstance(j, dict) and j.get("job_id")]
    except Exception as e:  # a damaged file must not hide the runs' states
        raise ExperimentDirError(f"{path}: unreadable ({e}); fix or delete it (it only lists submitted job ids)") from None


@contextlib.contextmanager
def jobs_lock(exp_dir: str | Path) -> Iterator[None]:
    """Hold the experiment's submission lock (a lock file opened read-write, so it works on NFS too).

    Two ``submit``s of one experiment then neither lose each other's job ids nor
    submit the same runs twice. An OSError here (a read-only or full disk, an
    NFS without locking) is an ``ExperimentDirError`` raised before anything is submitted.
    """
    from filelock import FileLock, Timeout

    path = Path(exp_dir) / JOBS_LOCK_FILE
    lock = FileLock(str(path), timeout=600)
    try:
        lock.acquire()
    except Timeout:
        raise ExperimentDirError(f"another submit of this experiment has held {path} for 10 minutes; "
                                 "wait for it to finish (or delete the file if no submit is running)") from None
    except OSError as e:
        raise ExperimentDirError(f"cannot lock {path} ({e.strerror or e}), so nothing was submitted; make the "
                                 "experiment directory writable (on NFS: mount it with locking enabled)") from None
    try:
        yield
    finally:
        lock.release()


def append_job(exp_dir: str | Path, job: JobRecord) -> None:
    """Append one submitted array to ``slurm_jobs.yaml`` (read, append, atomic replace).

    Call it inside ``jobs_lock``. An OSError here is an ``ExperimentDirError``
    naming the job id, so a job that sbatch accepted is never silently forgotten.
    """
    try:
        # indices as ranges ("0-1000"): a 10,000-run submission lists 10 ranges, not 10,000 numbers that
        # every later append and every status would parse again
        jobs = [{**_plain(dataclasses.replace(j, indices=())), "indices": compress_ranges(j.indices)}
                for j in read_jobs(exp_dir) + [job]]
        text = yaml.dump({"jobs": jobs}, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)
        atomic_write_text(Path(exp_dir) / JOBS_FILE,
                          "# Job arrays submitted by `torchtune-config-writer submit`, oldest first.\n"
                          "# Array task T of a job ran the run whose index is T + offset.\n" + text)
    except OSError as e:
        raise ExperimentDirError(
            f"SLURM accepted job {job.job_id} (runs {job.array}, offset {job.offset}), but it could not be recorded "
            f"in {Path(exp_dir) / JOBS_FILE}: {e.strerror or e}. Record it by hand or `scancel {job.job_id}`; "
            "status still finds its tasks through their status records once they start"
        ) from None


# ----------------------------------------------------------------------------- slurm_queue.yaml (slurm.max_submit)

#: The tasks ``submit`` has yet to submit under a submit limit (``slurm.max_submit``, Appendix J.1): the
#: experiment's array tasks submit them as they end (``execute/feed.py``). Written under ``jobs_lock``.
FEED_FILE = "slurm_queue.yaml"


@dataclass(frozen=True)
class QueuedTask:
    """One array task still to submit: train run ``index`` (``kind="train"``), or evaluate it (``"eval"``)."""

    index: int
    kind: str = TRAIN_JOB
    force: bool = False
    """Submit it with ``FORCE_ENV=1`` (``submit --force``)."""
    evaluate: bool = False
    """A training whose run is evaluated: queue the evaluation (at the front) once this training completes."""
    time: str | None = None
    """Its ``--time`` (``slurm.time: auto``, ``submit --time``); None: the script's own."""


@dataclass(frozen=True)
class FeedQueue:
    """``slurm_queue.yaml``: the limit, what is still to submit, and what the feeding tasks did.

    >>> q = FeedQueue(3, "slurm.max_submit", (QueuedTask(5), QueuedTask(6)))
    >>> [t.index for t in q.items], q.waiting
    ([5, 6], 2)
    """

    max_submit: int
    """At most this many of the experiment's tasks queued or running at once."""
    source: str = ""
    """Where the limit comes from: ``slurm.max_submit``, or what ``sacctmgr`` reported."""
    items: tuple[QueuedTask, ...] = ()
    """Still to submit, front first."""
    awaiting: dict[str, QueuedTask] = dataclasses.field(default_factory=dict)
    """Training task (``JOB_TASK``) -> the evaluation to queue once that task has completed its run."""
    fed: dict[str, str] = dataclasses.field(default_factory=dict)
    """Tasks (``JOB_TASK``) that already did their feed step -> when (ISO time); only active ones are kept."""

    @property
    def waiting(self) -> int:
        """Tasks still to submit."""
        return len(self.items)


def read_feed(exp_dir: str | Path) -> FeedQueue | None:
    """The experiment's ``slurm_queue.yaml``; None when it has none (nothing was ever submitted under a limit)."""
    path = Path(exp_dir) / FEED_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ExperimentDirError(f"{path}: unreadable ({e.strerror or e}); make it readable") from None
    try:
        data = yaml.load(text, Loader=_Loader)
        return FeedQueue(int(data["max_submit"]), str(data.get("source") or ""), _queued_tasks(data.get("items")),
                         {str(k): _build(QueuedTask, t) for k, t in (data.get("awaiting") or {}).items()},
                         {str(k): str(v) for k, v in (data.get("fed") or {}).items()})
    except Exception as e:  # edited by hand, or cut short by a full disk
        raise ExperimentDirError(
            f"{path}: unreadable ({type(e).__name__}: {e}); it lists the runs still to be submitted under "
            "slurm.max_submit: fix it, or delete it and submit the runs that never started again "
            "(`submit` skips completed runs)") from None


def _queued_tasks(groups: Any) -> tuple[QueuedTask, ...]:
    """The queue's ``items``: groups of tasks alike (``{indices: "3-9999", kind: train, ...}``), front first."""
    out: list[QueuedTask] = []
    for g in groups or ():
        fields = {k: v for k, v in g.items() if k != "indices"}
        indices = g["indices"]
        out.extend(QueuedTask(i, **fields) for i in (expand_ranges(indices) if isinstance(indices, str) else [indices]))
    return tuple(out)


def _task_groups(items: Iterable[QueuedTask]) -> list[dict[str, Any]]:
    """Consecutive tasks alike with rising indices as one group: 10,000 queued runs are one line, not 10,000
    (every feed step reads and writes the file under the submission lock)."""
    groups: list[tuple[dict[str, Any], list[int]]] = []
    for item in items:
        fields = {k: v for k, v in _plain(item).items() if k != "index"}
        if groups and groups[-1][0] == fields and item.index > groups[-1][1][-1]:
            groups[-1][1].append(item.index)
        else:
            groups.append((fields, [item.index]))
    return [{"indices": compress_ranges(ids), **fields} for fields, ids in groups]


def write_feed(exp_dir: str | Path, queue: FeedQueue) -> None:
    """Write ``slurm_queue.yaml`` atomically (call it inside ``jobs_lock``).

    >>> _task_groups([QueuedTask(0, "eval"), QueuedTask(5), QueuedTask(6), QueuedTask(8), QueuedTask(2)])[1]
    {'indices': '5-6,8', 'kind': 'train', 'force': False, 'evaluate': False, 'time': None}
    """
    data = {**_plain(queue), "items": _task_groups(queue.items)}
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=4096)
    atomic_write_text(Path(exp_dir) / FEED_FILE,
                      "# Tasks still to submit under slurm.max_submit, front first; each array task of this\n"
                      "# experiment submits more as it ends (`submit` resumes it). Written under .slurm_jobs.lock.\n"
                      + text)


# ----------------------------------------------------------------------------- arrays: which task runs which run


@dataclass(frozen=True)
class ArrayChunk:
    """One job array: task ``t`` runs the run with index ``t + offset`` (the script's argument)."""

    offset: int
    task_ids: tuple[int, ...]

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(t + self.offset for t in self.task_ids)

    def spec(self, max_concurrent: int | None = None) -> str:
        """The ``--array`` value: ``0-3%2``, ``3,7%2``."""
        return compress_ranges(self.task_ids) + (f"%{max_concurrent}" if max_concurrent else "")


def compress_ranges(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    out, ids = [], sorted(set(ids))
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def expand_ranges(text: str) -> tuple[int, ...]:
    """The inverse of ``compress_ranges``: ``"0-2,5"`` -> ``(0, 1, 2, 5)``.

    >>> expand_ranges("0-2,5,7-8")
    (0, 1, 2, 5, 7, 8)
    """
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else (int(lo),))
    return tuple(out)


def _job_indices(value: Any) -> tuple[int, ...]:
    """slurm_jobs.yaml's ``indices``: ranges (``"0-1000"``), or a list of numbers as earlier versions wrote."""
    if isinstance(value, str):
        return expand_ranges(value)
    if isinstance(value, int):
        return (value,)  # a single run: YAML reads "7" as a number
    return tuple(int(i) for i in value or ())


def plan_arrays(indices: Iterable[int], max_array_size: int) -> list[ArrayChunk]:
    """Split run indices into arrays whose task ids stay below ``max_array_size`` (SLURM's MaxArraySize).

    >>> [(c.offset, c.spec()) for c in plan_arrays(range(7), 3)]
    [(0, '0-2'), (3, '0-2'), (6, '0')]
    """
    if max_array_size < 1:
        raise ValueError("max_array_size must be at least 1")
    groups: dict[int, list[int]] = {}
    for i in sorted(set(int(i) for i in indices)):
        groups.setdefault(i // max_array_size, []).append(i)
    return [ArrayChunk(k * max_array_size, tuple(i - k * max_array_size for i in ids)) for k, ids in groups.items()]


@dataclass(frozen=True)
class ScriptGroup:
    """Runs that ask SLURM for the same resources: they share one job-array script."""

    script: str
    """Its file name in the experiment directory (``submit.sbatch``, ``submit_1.sbatch``, ...)."""
    resources: SlurmPlan
    """``RunMapping.slurm`` with the group's own resources."""
    indices: tuple[int, ...]


def script_groups(mapping: RunMapping, *, evaluation: bool = False) -> list[ScriptGroup]:
    """The runs grouped by their SLURM resources, in order of first appearance; the first is ``submit.sbatch``.

    With ``evaluation``: the evaluation scripts (``eval.sbatch``, ``eval_1.sbatch``...) of the runs that
    are evaluated, grouped alike; their resources are ``evaluation.slurm`` where it sets them.

    >>> [g.script for g in script_groups(mapping)]                       # doctest: +SKIP
    ['submit.sbatch', 'submit_1.sbatch']
    """
    if evaluation:
        return _eval_groups(mapping)
    found: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for run in sorted(mapping.runs, key=lambda r: r.index):
        # most runs share the experiment's resources: no JSON for those (submit groups 10,000 runs several times)
        key = json.dumps(run.resources, sort_keys=True, default=str) if run.resources else "{}"
        found.setdefault(key, (run.resources, []))[1].append(run.index)
    return [
        ScriptGroup(SCRIPT_FILE if n == 0 else SCRIPT_FILE_N.format(n=n),
                    dataclasses.replace(mapping.slurm, **resources), tuple(indices))
        for n, (resources, indices) in enumerate(found.values())
    ]


def _eval_groups(mapping: RunMapping) -> list[ScriptGroup]:
    """Evaluation scripts: the training groups, each with evaluation.slurm's resources (when given) on top."""
    own = mapping.evaluation.slurm if mapping.evaluation else {}
    groups = []
    for n, group in enumerate(script_groups(mapping)):
        indices = tuple(i for i in group.indices if mapping.by_index[i].evaluations)
        if not indices:
            continue
        # an evaluation is one process on one node, whatever the training spread over (nodes > 1)
        resources = dataclasses.replace(group.resources, **{"nodes": 1, **own})
        groups.append(ScriptGroup(EVAL_SCRIPT_FILE if n == 0 else EVAL_SCRIPT_FILE_N.format(n=n), resources, indices))
    return groups


# ----------------------------------------------------------------------------- parameters, for people


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """``model.lora_rank`` -> ``lora_rank`` where the last part is unique among ``keys``.

    >>> short_names(["model.lora_rank", "optimizer.lr", "a.lr"])
    {'model.lora_rank': 'lora_rank', 'optimizer.lr': 'optimizer.lr', 'a.lr': 'a.lr'}
    """
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_parameters(params: Mapping[str, Any], *, short: bool = False, sep: str = ", ") -> str:
    """``lora_rank=8, lr=0.001``: a run's parameters for a message, a log line or a label.

    >>> format_parameters({"model.lora_rank": 8, "optimizer.lr": 0.001}, short=True, sep=" ")
    'lora_rank=8 lr=0.001'
    """
    names = short_names(params) if short else {k: k for k in params}
    return sep.join(f"{names[k]}={v}" for k, v in params.items())


# ----------------------------------------------------------------------------- plumbing

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10,000 runs load in well under a second
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _plain(value: Any) -> Any:
    """Records as YAML/JSON-safe data: dataclasses to dicts, enums to their values, tuples to lists.

    (Not ``dataclasses.asdict``: it deep-copies every value, which costs seconds for 10,000 runs.)
    """
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """``cls(**data)`` keeping only the fields ``cls`` has (records written by a newer tool may carry more)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a mapping, got {type(data).__name__}")
    names = _field_names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))  # asked once per record: 10,000 times by status
