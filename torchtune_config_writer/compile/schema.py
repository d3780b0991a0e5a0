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
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import EmptyVariableError, ExperimentSchemaError, did_you_mean

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OutputSettings(_Strict):
    """Where generated files and run outputs go."""

    experiment_dir: str | None = None
    """The experiment directory; default ``outputs/<name>_<timestamp>``. Relative to the experiment file."""
    runs_dir: str | None = None
    """Root of the runs' ``output_dir``s (checkpoints, logs); default ``<experiment_dir>/runs``."""


class SlurmSettings(_Strict):
    """Settings of the generated ``submit.sbatch`` job array (all optional)."""

    job_name: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_run: int | None = Field(None, ge=0)
    """GPUs per run; default 0 when every run's device is cpu, else 1."""
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = None
    constraint: str | None = None
    extra_sbatch: list[str] = Field(default_factory=list)
    setup: list[str] | None = None
    """Shell lines run before each task; default: activate the environment ``generate`` ran in."""
    max_concurrent: int | None = Field(None, ge=1)
    stagger_seconds: float = Field(0, ge=0)
    max_array_size: int = Field(1001, ge=1)

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, v: int) -> int:
        if v > 1:
            raise ValueError(
                f"{v} nodes per run is not supported yet: each run starts with torchrun --nnodes 1 on one node, "
                "so the other nodes would sit idle; set nodes: 1 (or leave it out) and use gpus_per_run for more GPUs"
            )
        return v

    @field_validator("time")
    @classmethod
    def _check_time(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", v):
            raise ValueError(f"'{v}' is not a SLURM time limit; write MM, HH:MM:SS or D-HH:MM:SS")
        return v


class Experiment(_Strict):
    """A parsed, schema-valid experiment definition."""

    experiment_name: str
    description: str | None = None
    framework: Literal["torchtune"] = "torchtune"
    base_config: str | None = None
    base_config_file: Path | None = None
    recipe: str | None = None
    variables: dict[str, list[Any]] = Field(default_factory=dict)
    controls: dict[str, Any] = Field(default_factory=dict)
    output: OutputSettings = Field(default_factory=OutputSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    source_path: Path | None = Field(None, exclude=True)
    """The experiment file this came from (None for a dict)."""
    source_text: str | None = Field(None, exclude=True)
    locations: dict[str, str] = Field(default_factory=dict, exclude=True)
    """``'controls.<key>'`` / ``'variables.<key>'`` → ``'file:line'``, for error messages."""

    def where(self, section: str, key: str) -> str:
        """``'experiment.yaml:12 (controls)'``, or just the section when the line is unknown."""
        loc = self.locations.get(f"{section}.{key}")
        return f"{loc} ({section})" if loc else section

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


# ----------------------------------------------------------------------------- loading


def load_experiment(source: str | Path | dict | Experiment) -> Experiment:
    """Parse and validate an experiment from a path, a dict, or pass an ``Experiment`` through."""
    if isinstance(source, Experiment):
        return source
    if isinstance(source, dict):
        return _build(to_plain(source), raw=source, where="experiment")
    path = Path(source)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise ExperimentSchemaError(f"experiment file '{path}' not found{hint}")
    text = path.read_text()
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise ExperimentSchemaError(f"{path}: the file is empty; see example_configs/ for a starting point")
    if not isinstance(raw, dict):
        raise ExperimentSchemaError(f"{path}: the top level must be a mapping of keys (experiment_name: ...)")
    exp = _build(to_plain(raw), raw=raw, where=str(path))
    exp.locations = _key_locations(raw, str(path))
    exp.source_path = path.resolve()
    exp.source_text = text
    if exp.base_config_file is not None and not exp.base_config_file.is_absolute():
        exp.base_config_file = (path.resolve().parent / exp.base_config_file)
    return exp


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
        return node.isoformat()  # OmegaConf reads 2024-01-01 as a string; so do we
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


def _key_locations(raw: Any, where: str) -> dict[str, str]:
    """File:line of every control key and (flattened) variable key."""
    out: dict[str, str] = {}
    controls = raw.get("controls")
    if isinstance(controls, dict):
        for key in controls:
            out[f"controls.{key}"] = _line_of(controls, key, where)

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"variables.{prefix}{key}"] = _line_of(node, key, where)

    if isinstance(raw.get("variables"), dict):
        walk(raw["variables"], "")
    return out


def _line_of(raw: Any, key: Any, where: str) -> str:
    """``file:line`` of ``key`` in a round-trip mapping, or just ``file``."""
    try:
        line = raw.lc.key(key)[0] + 1
        return f"{where}:{line}"
    except Exception:
        return where


def _build(data: dict, raw: Any, where: str) -> Experiment:
    """Validate plain data into an Experiment, translating pydantic errors into one message."""
    if "variables" in data:
        data = dict(data, variables=flatten_variables(data["variables"], where, raw.get("variables") if isinstance(raw, dict) else None))
    if "controls" in data and data["controls"] is None:
        data["controls"] = {}
    if "controls" in data and not isinstance(data["controls"], dict):
        raise ExperimentSchemaError(f"{_line_of(raw, 'controls', where)}: 'controls' must be a mapping of key -> value")
    try:
        return Experiment.model_validate(data)
    except pydantic.ValidationError as e:
        raise ExperimentSchemaError(_explain(e, raw, where)) from None


def _explain(err: pydantic.ValidationError, raw: Any, where: str) -> str:
    lines = []
    for item in err.errors():
        loc = [p for p in item["loc"] if p is not None]
        model: type[BaseModel] = Experiment
        node = raw
        for part in loc[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            field = model.model_fields.get(part) if isinstance(part, str) else None
            ann = getattr(field, "annotation", None)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
        key = ".".join(str(p) for p in loc) or "(top level)"
        place = _line_of(node, loc[-1], where) if loc else where
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
