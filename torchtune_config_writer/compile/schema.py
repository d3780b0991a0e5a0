"""The experiment.yaml schema and its loader.

``load_experiment`` turns a file (or a dict) into an ``Experiment``; every
problem becomes one ``ExperimentSchemaError`` naming the file, line, key and a
fix. Nothing here imports torchtune.

    >>> exp = load_experiment({"experiment_name": "demo",
    ...                        "base_config": "llama3_2/1B_lora_single_device",
    ...                        "variables": {"lora_rank": [8, 16]}})
    >>> exp.variables
    {'lora_rank': [8, 16]}
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import EmptyVariableError, ExperimentSchemaError, did_you_mean

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class OutputSettings(_Strict):
    """Where generated files and run outputs go."""

    experiment_dir: str | None = None
    """The experiment directory; default ``outputs/<name>_<timestamp>``. Relative to the experiment file."""
    runs_dir: str | None = None
    """Root of the runs' ``output_dir``s (checkpoints, logs); default ``<experiment_dir>/runs``."""


class SlurmSettings(_Strict):
    """Settings of the generated ``submit.sbatch`` job array (all optional)."""

    job_name: str | None = None
    """The jobs' name in squeue; default the experiment name."""
    partition: str | None = None
    """``--partition``; may be an expression (then runs with other values get their own job-array script)."""
    account: str | None = None
    """``--account``; may be an expression."""
    qos: str | None = None
    """``--qos``; may be an expression."""
    time: str | None = None
    """Time limit per run (``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``), or ``auto`` (estimated at submit time from the
    measured throughput of completed runs with the same model and recipe); may be an expression."""
    time_safety: float = Field(1.5, ge=1)
    """With ``time: auto``: a run's limit is its tokens / measured tokens per second times this factor."""
    requeue: bool = True
    """With a time limit: a warning signal ``signal_seconds`` before it stops the run, SLURM requeues the task
    and the run resumes from its last saved epoch (where the recipe can)."""
    signal_seconds: int = Field(300, ge=10)
    """Seconds before the time limit that the warning signal (SIGUSR1) comes."""
    max_requeues: int = Field(3, ge=0)
    """A run requeued this many times without saving a new epoch is left as TIMEOUT."""
    max_submit: int | None = Field(None, ge=2)
    """At most this many of the experiment's tasks queued or running at once (the QoS's MaxSubmitJobs); the
    tasks submit the rest as they finish. Default: what ``sacctmgr`` says of your QoS/association, if anything."""
    nodes: int = Field(1, ge=1)
    """Nodes per run (distributed recipes only): each runs one torchrun agent with gpus_per_run GPUs (Appendix J.7)."""
    gpus_per_run: int | None = Field(None, ge=0)
    """GPUs per run (per node, with nodes > 1); default 0 when every run's device is cpu, else 1."""
    cpus_per_task: int | None = Field(None, ge=1)
    """``--cpus-per-task``; may be an expression."""
    mem: str | None = None
    """``--mem`` (e.g. ``64G``); may be an expression."""
    constraint: str | None = None
    """``--constraint`` (node features, e.g. ``a100``); may be an expression."""
    extra_sbatch: list[str] = Field(default_factory=list)
    """More ``#SBATCH`` options, one per entry (``--exclusive``)."""
    setup: list[str] | None = None
    """Shell lines run before each task; default: activate the environment ``generate`` ran in."""
    max_concurrent: int | None = Field(None, ge=1)
    """At most this many runs at once, across all arrays of a submission."""
    stagger_seconds: float = Field(0, ge=0)
    """Delay between task starts, so tasks do not race on shared caches."""
    max_array_size: int = Field(1001, ge=1)
    """Largest array task id + 1 (the cluster's MaxArraySize wins when smaller)."""

    @field_validator("time")
    @classmethod
    def _check_time(cls, v: str | None) -> str | None:
        if v is not None and v != "auto" and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", v):
            raise ValueError(f"'{v}' is not a SLURM time limit; write MM, HH:MM:SS, D-HH:MM:SS or auto")
        return v

    @field_validator("max_submit", mode="before")  # before ge=2, whose own message does not say why
    @classmethod
    def _check_max_submit(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v < 2:
            raise ValueError(f"{v} cannot work: a task that ends still counts against the limit while it submits "
                             "the next one, so the limit must leave room for 2; write 2 or more (or leave it out "
                             "to obey what sacctmgr reports)")
        return v


class HardwareSettings(_Strict):
    """The GPU each run gets: every run's estimated peak memory is checked against it (Appendix H)."""

    gpu: str | None = None
    """A GPU name: H200, H100-80GB, A100-80GB, A100-40GB, L40S, A6000, RTX4090, A10G, L4, V100-32GB, T4, ..."""
    gpu_memory_gb: float | None = Field(None, gt=0)
    """Memory per GPU in GiB (nvidia-smi's MiB / 1024), for a GPU the table does not know; instead of ``gpu``."""
    gpus_per_run: int | None = Field(None, ge=1)
    """GPUs each run shards its model over (distributed recipes); default slurm.gpus_per_run, else 1."""

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str | None) -> str | None:
        from .hardware import canonical_gpu

        return None if v is None else canonical_gpu(v)

    @model_validator(mode="after")
    def _one_budget(self) -> "HardwareSettings":
        if self.gpu is not None and self.gpu_memory_gb is not None:
            raise ValueError(f"give gpu ({self.gpu}) or gpu_memory_gb ({self.gpu_memory_gb:g}), not both")
        return self

    @property
    def budget_gib(self) -> float | None:
        """Memory per GPU in GiB; None when neither gpu nor gpu_memory_gb is given (estimates without a check)."""
        from .hardware import gpu_memory_gib

        return gpu_memory_gib(self.gpu) if self.gpu else self.gpu_memory_gb


class HeldoutSettings(_Strict):
    """Held-out loss: the run's own model, dataset component and loss on data it did not train on."""

    data_files: str | None = None
    """The held-out data (relative to the experiment file); fills the run's dataset component's ``data_files``."""
    dataset: dict[str, Any] | None = None
    """A whole dataset component instead (``_component_`` and its arguments), for data of another shape."""
    split: str | None = None
    """The split to read (default: the run's dataset's)."""
    batch_size: int = Field(8, ge=1)
    limit: int | None = Field(None, ge=1)
    """At most this many records (default: all)."""

    @model_validator(mode="after")
    def _one_source(self) -> "HeldoutSettings":
        if (self.data_files is None) == (self.dataset is None):
            raise ValueError("give data_files (a held-out file for the run's own dataset component) or dataset "
                             "(a whole dataset component), exactly one")
        if self.dataset is not None and "_component_" not in self.dataset:
            raise ValueError("dataset needs a _component_, e.g. {_component_: torchtune.datasets.alpaca_dataset, "
                             "source: json, data_files: heldout.json}")
        return self


class LmEvalSettings(_Strict):
    """lm-evaluation-harness tasks, through the harness's own evaluator and metrics."""

    tasks: list[str] = Field(min_length=1)
    """Task names: the harness's own, or ``task:`` names of YAML files under ``include_path``."""
    include_path: str | None = None
    """A folder of local task YAMLs (relative to the experiment file)."""
    limit: float | None = Field(None, gt=0)
    """At most this many items per task (a fraction below 1: that share of them)."""
    batch_size: int = Field(8, ge=1)
    max_seq_length: int | None = Field(None, ge=1)
    """Context length; default the run's tokenizer.max_seq_len, else its model's max_seq_len."""
    enable_kv_cache: bool = True


class InspectSettings(_Strict):
    """inspect-ai tasks (``file.py@task``), on the run's weights in Hugging Face format."""

    tasks: list[str] = Field(min_length=1)
    """``path/to/file.py@task_name`` (the path relative to the experiment file)."""
    limit: int | None = Field(None, ge=1)
    model_args: dict[str, Any] = Field(default_factory=dict)
    """More ``-M key=value`` arguments for inspect's ``hf/`` model."""


class EvaluationSlurm(_Strict):
    """Resources of the evaluation array tasks (default: the training ones)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    gpus_per_run: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = None
    constraint: str | None = None

    _check_time = field_validator("time")(SlurmSettings._check_time.__func__)  # (``auto`` allowed there too)


class EvaluationSettings(_Strict):
    """What to evaluate after each run trains; every (run, epoch, evaluator) gets a validated config under eval/."""

    epochs: Literal["last", "all"] | list[int] = "last"
    """Which epoch checkpoints: ``last``, ``all``, or a list of epoch numbers (0-based, as torchtune's ``epoch_N``)."""
    heldout: HeldoutSettings | None = None
    lm_eval: LmEvalSettings | None = None
    inspect: InspectSettings | None = None
    primary_metric: str | None = None
    """The metric results rank runs by (``count_mc/acc``, ``heldout_loss``); default the first one reported."""
    goal: Literal["max", "min"] | None = None
    """Whether the primary metric is better high or low; default from its name (losses are minimized)."""
    slurm: EvaluationSlurm | None = None
    """Resources of the evaluation tasks on SLURM (default: the training ones)."""

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("epochs is empty; write last, all, or a list such as [0, 2]")
            if any(e < 0 for e in v) or len(set(v)) != len(v):
                raise ValueError(f"epochs {v}: list each epoch once, counting from 0 (torchtune saves epoch_0, epoch_1...)")
        return v

    @model_validator(mode="after")
    def _something(self) -> "EvaluationSettings":
        if not (self.heldout or self.lm_eval or self.inspect):
            raise ValueError("nothing to evaluate: add heldout (data_files: ...), lm_eval (tasks: [...]) or "
                             "inspect (tasks: [file.py@task])")
        return self


class TrackingSettings(_Strict):
    """Log every run, and its evaluation, to MLflow or Weights & Biases."""

    backend: Literal["mlflow", "wandb"]
    tracking_uri: str | None = None
    """MLflow: ``sqlite:///mlflow.db`` (relative to the experiment file), ``http://host:5000``...; default MLflow's own."""
    project: str | None = None
    """W&B project (required for wandb)."""
    entity: str | None = None
    """W&B entity (team or user)."""
    mode: Literal["online", "offline"] | None = None
    """W&B mode; offline writes files that ``wandb sync`` uploads later."""
    experiment: str = "{{ experiment_name }}"
    """MLflow experiment / W&B group (may read experiment_name, timestamp, date)."""
    run_name: str = "{{ run_name }}"
    """Each run's name there (may read run_id, run_name, and the run's variables)."""
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _backend_keys(self) -> "TrackingSettings":
        if self.backend == "wandb":
            if not self.project:
                raise ValueError("wandb needs a project: add project: <name>")
            if self.tracking_uri:
                raise ValueError("tracking_uri is MLflow's; W&B takes project (and entity, mode)")
        else:
            for key in ("project", "entity", "mode"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is a W&B setting; MLflow takes tracking_uri and experiment")
        return self


class Distribution(_Strict):
    """How ``sample`` draws one key: exactly one of these."""

    uniform: tuple[float, float] | None = None
    """``[low, high]``: any float in between, evenly."""
    log_uniform: tuple[float, float] | None = None
    """``[low, high]``, both > 0: evenly on a log scale (learning rates, weight decay)."""
    int_uniform: tuple[int, int] | None = None
    """``[low, high]``: an integer, both ends included."""
    choice: list[Any] | None = None
    """One of these values, each equally likely."""

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of uniform, log_uniform, int_uniform or choice (got {', '.join(given) or 'none'}); "
                "e.g. {log_uniform: [1.0e-5, 1.0e-3]}"
            )
        if self.choice is not None and not self.choice:
            raise ValueError("choice is empty; list at least one value")
        for name in ("uniform", "log_uniform", "int_uniform"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{name}: low ({bounds[0]}) must be below high ({bounds[1]})")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform needs bounds above 0, got {list(self.log_uniform)}; use uniform for ranges that reach 0")
        return self

    def draw(self, rng: Any) -> Any:
        """One value from ``rng`` (a ``random.Random``)."""
        if self.uniform is not None:
            return rng.uniform(*self.uniform)
        if self.log_uniform is not None:
            low, high = (math.log(b) for b in self.log_uniform)
            return math.exp(rng.uniform(low, high))
        if self.int_uniform is not None:
            return rng.randint(*self.int_uniform)
        return self.choice[rng.randrange(len(self.choice))]


class SampleSettings(_Strict):
    """Random search: ``n`` points drawn from ``space``, the same for every generation with this ``seed``."""

    n: int = Field(ge=1)
    """How many points to draw."""
    seed: int = 0
    """The random seed of the draw: the same seed gives the same points."""
    space: dict[str, Distribution]
    """Key → distribution (uniform, log_uniform, int_uniform or choice)."""

    @field_validator("space")
    @classmethod
    def _not_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("space is empty; give at least one key, e.g. lr: {log_uniform: [1.0e-5, 1.0e-3]}")
        return v


class OomRetrySettings(_Strict):
    """``oom_retry:``: a run that runs out of memory is tried again with half the batch size and twice the
    gradient accumulation (the same effective batch), as a new attempt of the same run."""

    max_attempts: int = Field(3, ge=2)
    """Attempts in all, the first included."""


class Experiment(_Strict):
    """A parsed, schema-valid experiment definition."""

    experiment_name: str
    """Names the experiment and its default directory (letters, digits, '.', '_', '-')."""
    description: str | None = None
    """Free text, for people."""
    framework: Literal["torchtune"] = "torchtune"
    """Only torchtune."""
    include: list[str] = Field(default_factory=list)
    """Fragments merged first, in order (paths relative to the including file, or shipped preset names)."""
    base_config: str | None = None
    """A torchtune config name (``llama3_2/1B_lora_single_device``; ``ls`` lists them)."""
    base_config_file: Path | None = None
    """Your own base config file (relative to this file); needs ``recipe``."""
    recipe: str | None = None
    """The recipe (a torchtune recipe name or a .py file); default the base config's."""
    variables: dict[str, list[Any]] = Field(default_factory=dict)
    """The grid: every combination of these values becomes a run."""
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    """Groups of keys that vary together (equal-length lists); each group is one axis of the grid."""
    sample: SampleSettings | None = None
    """Random search: ``n`` points, each combined with every grid combination."""
    seeds: list[int] | None = None
    """Every configuration once per seed (sets the config's ``seed``); varies fastest."""
    exclude: list[dict[str, Any] | str] = Field(default_factory=list)
    """Combinations that do not become runs: a mapping of axis values, or an expression that is true."""
    derived: dict[str, Any] = Field(default_factory=dict)
    """Keys computed per run from ``{{ … }}`` expressions, after controls and variables."""
    run_name: str | None = None
    """A name per run, usually an expression (``r{{ lora_rank }}-s{{ seed }}``); must be unique."""
    controls: dict[str, Any] = Field(default_factory=dict)
    """Keys fixed for every run (values may be ``{{ }}`` expressions)."""
    output: OutputSettings = Field(default_factory=OutputSettings)
    """Where the experiment directory and the runs' outputs go."""
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    """The job arrays' settings; resources may be per-run expressions."""
    hardware: HardwareSettings | None = None
    """The GPU of each run; with it, a run whose estimated peak memory exceeds the GPU's is an error."""
    evaluation: EvaluationSettings | None = None
    """Evaluate every run after it trains: held-out loss, lm-eval and inspect-ai tasks."""
    tracking: TrackingSettings | None = None
    """Log every run and its evaluation to MLflow or W&B."""
    oom_retry: OomRetrySettings | None = None
    """Retry a run that runs out of memory with half the batch size (``{max_attempts: 3}``)."""

    slurm_expressions: dict[str, str] = Field(default_factory=dict, exclude=True)
    """``slurm:`` values that are expressions (evaluated per run); ``slurm`` holds the rest."""
    source_path: Path | None = Field(None, exclude=True)
    """The experiment file this came from (None for a dict)."""
    source_text: str | None = Field(None, exclude=True)
    resolved_text: str | None = Field(None, exclude=True)
    """The experiment with its includes merged in (None without includes)."""
    locations: dict[str, str] = Field(default_factory=dict, exclude=True)
    """``'controls.<key>'``, ``'zip.0.lr'``, ``'slurm.time'``... → ``'file:line'``, for error messages."""
    layers: dict[str, int] = Field(default_factory=dict, exclude=True)
    """``'controls.<key>'`` → which file set it (0 = the first included; higher wins)."""
    created: datetime.datetime = Field(default_factory=datetime.datetime.now, exclude=True)
    """When this generation started: ``timestamp``, ``date`` and the default directory name all use it."""
    axis_order: list[str] = Field(default_factory=list, exclude=True)
    """``variables``, ``zip`` and ``sample`` in the order written: the grid's axes follow it."""

    def where(self, section: str, key: str | int | None = None) -> str:
        """``'experiment.yaml:12 (controls)'``, or just the section when the line is unknown."""
        name = section if key is None else f"{section}.{key}"
        loc = self.locations.get(name) or self.locations.get(section)
        return f"{loc} ({section})" if loc else section

    def layer(self, section: str, key: str | None = None) -> int:
        """Which file set ``section.key`` (or the section); later files are higher."""
        return self.layers.get(section if key is None else f"{section}.{key}", 1 << 30)

    def experiment_names(self) -> dict[str, str]:
        """The names every expression may read: experiment_name, and the generation's timestamp and date."""
        return {"experiment_name": self.experiment_name, "timestamp": self.created.strftime("%Y%m%d_%H%M%S"),
                "date": self.created.strftime("%Y-%m-%d")}


    @field_validator("experiment_name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError(
                f"'{v}' is not usable as a directory name; use letters, digits, '.', '_' and '-' "
                "(at most 100, starting with a letter or digit)"
            )
        return v

    @model_validator(mode="after")
    def _check_base(self) -> "Experiment":
        if self.base_config and self.base_config_file:
            raise ValueError("give either base_config (a torchtune config name) or base_config_file (a path), not both")
        if not self.base_config and not self.base_config_file:
            raise ValueError(
                "no base config: add base_config (e.g. llama3_2/1B_lora_single_device; "
                "`torchtune-config-writer ls` lists them) or base_config_file (a path to your own YAML)"
            )
        if self.base_config_file and not self.recipe:
            raise ValueError(
                "recipe is required with base_config_file (e.g. recipe: lora_finetune_single_device); "
                "`torchtune-config-writer ls` lists the recipes"
            )
        return self

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the experiment are relative to."""
        return self.source_path.parent if self.source_path else Path.cwd()


def _check_language(exp: Experiment) -> None:
    """Checks across sections (zip lengths, a key in two axes...), each naming the file and line."""
    fail = lambda where, msg: ExperimentSchemaError(f"{where}: {msg}")  # noqa: E731
    for i, group in enumerate(exp.zip):
        if not group:
            raise fail(exp.where("zip", i), "the group is empty; list keys that vary together, e.g. "
                       "{lr: [1.0e-4, 3.0e-4], batch_size: [4, 8]}")
        lengths = {k: len(v) for k, v in group.items()}
        if len(set(lengths.values())) > 1:
            raise fail(exp.where("zip", i), "the lists of a zip group must be of equal length (the n-th values "
                       "go together), got " + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
        for k, n in lengths.items():
            if n == 0:
                raise fail(exp.where(f"zip.{i}", k), f"'{k}' has no values")
    seen: dict[str, str] = {}
    axes = [(k, "variables", k) for k in exp.variables]
    axes += [(k, f"zip.{i}", k) for i, g in enumerate(exp.zip) for k in g]
    axes += [(k, "sample.space", k) for k in (exp.sample.space if exp.sample else {})]
    axes += [("seed", "seeds", None)] if exp.seeds is not None else []
    for key, section, name in axes:
        if key in seen:
            raise fail(exp.where(section, name), f"'{key}' is an axis twice (in {seen[key]} and {section}); "
                       "a key varies in one place only")
        seen[key] = section
    if exp.seeds is not None:
        if not exp.seeds:
            raise fail(exp.where("seeds"), "seeds is empty; list at least one (e.g. seeds: [1, 2, 3]) or remove it")
        if len(set(exp.seeds)) != len(exp.seeds):
            raise fail(exp.where("seeds"), f"seeds repeats a value ({exp.seeds}); list each seed once")
    for key in exp.derived:
        if key in seen:
            raise fail(exp.where("derived", key), f"'{key}' is derived and also an axis ({seen[key]}); "
                       "a key is either swept or derived: remove one")
        if key in exp.controls and exp.layer("controls", key) >= exp.layer("derived", key):
            raise fail(exp.where("derived", key), f"'{key}' is derived and also a control; a key is either fixed "
                       "or derived: remove one")
    for i, rule in enumerate(exp.exclude):
        if isinstance(rule, dict) and not rule:
            raise fail(exp.where("exclude", i), "the rule is empty; give axis values ({lora_rank: 64}) or an expression")
        if isinstance(rule, str) and "{{" not in rule:
            raise fail(exp.where("exclude", i), f"{rule!r} is neither a mapping nor an expression; "
                       "wrap a condition in {{ }}, e.g. \"{{ lora_rank == 8 }}\"")


# ----------------------------------------------------------------------------- loading

#: Where the presets that ``include: [cpu]`` names live (``ls --presets`` lists them).
PRESETS_DIR = Path(__file__).parent / "presets"

# Sections whose keys merge across included files (a later file wins per key); any other value is replaced.
_MERGED_SECTIONS = ("variables", "controls", "derived", "output", "slurm", "sample", "hardware", "evaluation", "tracking",
                    "oom_retry")


def presets() -> dict[str, Path]:
    """The shipped presets by name (``cpu`` → ``.../presets/cpu.yaml``)."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def load_experiment(source: str | Path | dict | Experiment) -> Experiment:
    """Parse and validate an experiment from a path, a dict, or pass an ``Experiment`` through.

    ``include:`` fragments are read (recursively) and merged first, in order;
    the including file wins.
    """
    if isinstance(source, Experiment):
        return source
    if isinstance(source, dict):
        layers = [_Layer(source, "experiment", Path.cwd(), main=True)]
        if source.get("include"):
            layers = _read_includes(source, "experiment", Path.cwd(), ()) + layers
        return _build(layers)
    path = Path(source)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise ExperimentSchemaError(f"experiment file '{path}' not found{hint}")
    layers = _read_file(path.resolve(), str(path), (), main=True)
    exp = _build(layers)
    exp.source_path = path.resolve()
    exp.source_text = layers[-1].text
    if len(layers) > 1:
        from .yamlio import dump

        merged = _merge([_plain_layer(layer) for layer in layers])
        merged.pop("include", None)
        exp.resolved_text = (
            f"# {path.name} with its includes ({', '.join(exp.include)}) merged in, as generate used it.\n"
            f"# Relative paths in it are relative to {path.resolve().parent}.\n" + dump(merged)
        )
    if exp.base_config_file is not None and not exp.base_config_file.is_absolute():
        exp.base_config_file = (_origin_dir(layers, "base_config_file") / exp.base_config_file).resolve()
    return exp


class _Layer:
    """One file (or dict) of an experiment: its round-trip data, where it came from."""

    def __init__(self, raw: Any, where: str, directory: Path, text: str | None = None, main: bool = False):
        self.raw, self.where, self.directory, self.text, self.main = raw, where, directory, text, main


def _read_file(path: Path, where: str, chain: tuple[Path, ...], main: bool = False) -> list[_Layer]:
    """The layers of one file: its includes' layers (recursively, in order), then its own."""
    text = path.read_text()
    raw = parse_yaml(text, where)
    if raw is None:
        if main:
            raise ExperimentSchemaError(f"{where}: the file is empty; see example_configs/ for a starting point")
        raw = {}
    if not isinstance(raw, dict):
        what = "the top level" if main else "an included file's top level"
        raise ExperimentSchemaError(f"{where}: {what} must be a mapping of keys (controls: ...)")
    return _read_includes(raw, where, path.parent, chain + (path,)) + [_Layer(raw, where, path.parent, text, main)]


def _read_includes(raw: Any, where: str, directory: Path, chain: tuple[Path, ...]) -> list[_Layer]:
    items = raw.get("include")
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ExperimentSchemaError(f"{_line_of(raw, 'include', where)}: include must be a list of file paths or preset names")
    layers: list[_Layer] = []
    for i, item in enumerate(items):
        loc = _line_of(items, i, where) if hasattr(items, "lc") else _line_of(raw, "include", where)
        target = _find_include(item, directory, loc)
        if target in chain:
            cycle = " -> ".join(p.name for p in chain[chain.index(target):] + (target,))
            raise ExperimentSchemaError(f"{loc}: include cycle ({cycle}); a file cannot include itself, directly or not")
        shown = item if target.parent == PRESETS_DIR else str(target)
        layers += _read_file(target, f"{shown}" if target.parent != PRESETS_DIR else f"preset '{item}'", chain)
    return layers


def _find_include(item: str, directory: Path, loc: str) -> Path:
    """A preset name (``cpu``) or a path relative to the including file's directory."""
    shipped = presets()
    if item in shipped and "/" not in item and not item.endswith((".yaml", ".yml")):
        return shipped[item]
    path = (directory / Path(item).expanduser()).resolve()
    if path.is_file():
        return path
    if "/" not in item and not item.endswith((".yaml", ".yml")):
        hint = did_you_mean(item, list(shipped)) or f" Shipped presets: {', '.join(shipped)} (`ls --presets`)."
        raise ExperimentSchemaError(f"{loc}: include '{item}' is no shipped preset and no file.{hint}")
    raise ExperimentSchemaError(f"{loc}: include '{item}': no file {path} (paths are relative to the including file)")


def _origin_dir(layers: list[_Layer], key: str) -> Path:
    """The directory of the last file that set ``key``: relative paths are relative to it."""
    for layer in reversed(layers):
        if isinstance(layer.raw, dict) and key in layer.raw:
            return layer.directory
    return layers[-1].directory


def _plain_layer(layer: _Layer) -> dict:
    _refuse_unquoted_expressions(layer.raw, layer.where)
    data = to_plain(layer.raw)
    if not layer.main:
        data.pop("include", None)
        data.pop("description", None)  # a fragment's description describes the fragment, not the experiment
    elif isinstance(data.get("include"), str):
        data["include"] = [data["include"]]
    if "variables" in data:
        data["variables"] = flatten_variables(data["variables"], layer.where, layer.raw.get("variables"))
    if isinstance(data.get("zip"), list):
        raw_zip = layer.raw.get("zip")
        data["zip"] = [flatten_variables(g, layer.where, raw_zip[i]) if isinstance(g, dict) else g
                       for i, g in enumerate(data["zip"])]
    return data


_SCALAR_KEYS = (str, int, float, bool, type(None), datetime.date)


def _refuse_unquoted_expressions(node: Any, where: str) -> None:
    """``key: {{ 2 * rank }}`` without quotes is a YAML mapping inside a mapping; say to quote it."""
    if isinstance(node, dict):
        for key, value in node.items():
            # ruamel reads the inner {…} as a mapping used as a key (a CommentedKeyMap)
            if isinstance(value, dict) and len(value) == 1 and not isinstance(next(iter(value)), _SCALAR_KEYS) \
                    or not isinstance(key, _SCALAR_KEYS):
                raise ExperimentSchemaError(
                    f"{_line_of(node, key, where)}: the value of '{key}' looks like an expression written without "
                    "quotes, which YAML reads as a mapping; quote it: \"{{ ... }}\""
                )
            _refuse_unquoted_expressions(value, where)
    elif isinstance(node, list):
        for value in node:
            _refuse_unquoted_expressions(value, where)


def _merge(datas: list[dict]) -> dict:
    """Later layers win: the sections in ``_MERGED_SECTIONS`` key by key (nested), everything else whole."""
    out: dict = {}
    for data in datas:
        for key, value in data.items():
            if key in _MERGED_SECTIONS and isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _deep_merge(out[key], value)
            else:
                out[key] = value
    return out


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_yaml(text: str, where: str) -> Any:
    """Round-trip parse YAML, turning syntax errors and duplicate keys into one clear message."""
    from .yamlio import make_yaml

    try:
        return make_yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = (e.problem or "").strip()
        if "duplicate key" in problem or "found duplicate key" in str(e):
            key = re.search(r'duplicate key "?([^"\s]+)"?', str(e))
            name = f" '{key.group(1)}'" if key else ""
            raise ExperimentSchemaError(
                f"{loc}: duplicate key{name}; each key may appear once per mapping, remove or merge the repeats"
            ) from None
        raise ExperimentSchemaError(f"{loc}: invalid YAML: {problem or e}") from None
    except YAMLError as e:
        raise ExperimentSchemaError(f"{where}: invalid YAML: {e}") from None


def to_plain(node: Any) -> Any:
    """Convert ruamel round-trip nodes into plain dicts, lists, and Python scalars."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: to_plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (datetime.date, datetime.datetime)):
        return str(node)  # OmegaConf reads 2024-01-01 (10:00:00) as a string; so do we
    return node


def flatten_variables(variables: Any, where: str, raw: Any = None) -> dict[str, list[Any]]:
    """Flatten nested variable mappings (``model: {lora_rank: [8]}``) to dotted keys.

    A list is the sweep's values; a mapping nests one level deeper; anything
    else is a mistake (a fixed value belongs in ``controls``).
    """
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise ExperimentSchemaError(f"{where}: 'variables' must be a mapping of key -> list of values")
    flat: dict[str, list[Any]] = {}

    def walk(node: dict, prefix: str, raw_node: Any) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            loc = _line_of(raw_node, key, where)
            if isinstance(value, list):
                if not value:
                    raise EmptyVariableError(
                        f"{loc}: variable '{name}' has no values; list at least one (e.g. {name}: [8, 16]) "
                        "or move a fixed value to controls"
                    )
                flat[name] = value
            elif isinstance(value, dict):
                if not value or "_component_" in value:
                    raise ExperimentSchemaError(
                        f"{loc}: variable '{name}' must be a list of values; to sweep over whole "
                        f"components write {name}: [{{_component_: ...}}, {{_component_: ...}}]"
                    )
                walk(value, name + ".", raw_node.get(key) if isinstance(raw_node, dict) else None)
            else:
                raise ExperimentSchemaError(
                    f"{loc}: variable '{name}' must be a list of values, got {value!r}; "
                    f"write {name}: [{value!r}] or move it to controls (a fixed value)"
                )

    walk(variables, "", raw)
    return flat


def _index_locations(raw: Any, where: str, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """``file:line`` of every key and list item of a round-trip tree, by dotted name (``zip.0.lr``)."""
    out = {} if out is None else out
    if isinstance(raw, dict):
        for key, value in raw.items():
            name = f"{prefix}{key}"
            out[name] = _line_of(raw, key, where)
            _index_locations(value, where, name + ".", out)
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            name = f"{prefix}{i}"
            try:
                out[name] = f"{where}:{raw.lc.item(i)[0] + 1}"
            except Exception:
                pass
            _index_locations(value, where, name + ".", out)
    return out


def _line_of(raw: Any, key: Any, where: str) -> str:
    """``file:line`` of ``key`` in a round-trip mapping, or just ``file``."""
    try:
        line = raw.lc.key(key)[0] + 1
        return f"{where}:{line}"
    except Exception:
        return where


def _build(layers: list[_Layer]) -> Experiment:
    """Merge the layers and validate them into an Experiment, every problem one message with file:line."""
    locations: dict[str, str] = {}
    layer_of: dict[str, int] = {}
    datas = []
    for n, layer in enumerate(layers):
        if not layer.main:
            _check_fragment_keys(layer)
        data = _plain_layer(layer)
        for section in ("controls", "variables", "derived"):
            if section in data and data[section] is not None and not isinstance(data[section], dict):
                raise ExperimentSchemaError(f"{_line_of(layer.raw, section, layer.where)}: '{section}' must be a mapping of key -> value")
            for key in data.get(section) or {}:
                layer_of[f"{section}.{key}"] = n
        for section in ("zip", "sample", "seeds"):
            if section in data:
                layer_of[section] = n
        _index_locations(layer.raw, layer.where, "", locations)
        datas.append(data)
    data = _merge(datas)
    for section in ("controls", "derived"):
        if section in data and data[section] is None:
            data[section] = {}
    slurm_expressions = _split_slurm_expressions(data, locations)
    try:
        exp = Experiment.model_validate(data)
    except pydantic.ValidationError as e:
        raise ExperimentSchemaError(_explain(e, locations, layers[-1].where)) from None
    exp.locations = locations
    exp.layers = layer_of
    exp.slurm_expressions = slurm_expressions
    exp.axis_order = [k for k in data if k in ("variables", "zip", "sample")]
    _check_language(exp)
    return exp


def _check_fragment_keys(layer: _Layer) -> None:
    """An included file holds the sections of an experiment; anything else is a typo caught in its own file."""
    allowed = [n for n, f in Experiment.model_fields.items() if not f.exclude]
    for key in layer.raw:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed) or f" Allowed keys: {', '.join(allowed)}."
            if any(isinstance(v, dict) and "_component_" in v for v in layer.raw.values()):
                hint += " It looks like a torchtune config: name it with base_config_file instead of including it."
            raise ExperimentSchemaError(f"{_line_of(layer.raw, key, layer.where)}: unknown key '{key}' in an included file.{hint}")


def _split_slurm_expressions(data: dict, locations: dict[str, str]) -> dict[str, str]:
    """Take ``{{ … }}`` values out of ``slurm:`` (they are checked per run, once evaluated)."""
    slurm = data.get("slurm")
    if not isinstance(slurm, dict):
        return {}
    out = {}
    for key, value in list(slurm.items()):
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            if key not in SlurmSettings.model_fields:
                hint = did_you_mean(str(key), list(SlurmSettings.model_fields))
                raise ExperimentSchemaError(f"{locations.get(f'slurm.{key}', 'slurm')}: unknown key 'slurm.{key}'.{hint}")
            out[key] = value
            del slurm[key]
    data["slurm"] = slurm
    return out


def _explain(err: pydantic.ValidationError, locations: dict[str, str], where: str) -> str:
    lines = []
    for item in err.errors():
        loc = [p for p in item["loc"] if p is not None]
        model: type[BaseModel] = Experiment
        for part in loc[:-1]:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            ann = getattr(field, "annotation", None)
            for candidate in (ann, *getattr(ann, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    model = candidate
        key = ".".join(str(p) for p in loc) or "(top level)"
        place = _locate(locations, loc) or where
        if item["type"] == "extra_forbidden":
            allowed = [n for n, f in model.model_fields.items() if not f.exclude]
            hint = did_you_mean(str(loc[-1]), allowed) or f" Allowed keys: {', '.join(allowed)}."
            extra = ""
            if model is Experiment:
                extra = " (torchtune settings go under controls or variables)"
            lines.append(f"{place}: unknown key '{key}'.{hint}{extra}")
        elif item["type"] == "missing":
            lines.append(f"{place}: missing required key '{key}'")
        elif item["type"] == "literal_error" and loc and loc[-1] == "framework":
            lines.append(f"{place}: framework '{item.get('input')}' is not supported; only 'torchtune' is (or leave it out)")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"{place}: {key}: {msg}" if loc else f"{where}: {msg}")
    return "\n".join(lines)


def _locate(locations: dict[str, str], loc: list[Any]) -> str | None:
    """``file:line`` of the longest known prefix of a pydantic error location."""
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        found = locations.get(".".join(parts[:n]))
        if found:
            return found
    return None
