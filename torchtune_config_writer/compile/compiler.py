"""Compile an experiment into runs and validate them; ``generate_configs`` is the whole compile side.

The one-way flow: experiment spec (schema) → base config (loaders) → keys →
merge → run plan (sweep) → rendered configs (render) → validation (validate)
→ files (writer). Nothing here imports the execute side.

    >>> result = generate_configs("example_configs/lora_rank_study.yaml",
    ...                           output_dir="outputs/rank")      # doctest: +SKIP
    >>> [(r.run_id, r.parameters) for r in result.runs]            # doctest: +SKIP
    [('run_000', {'model.lora_rank': 8}), ...]
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConflictingKeyError, ExperimentSchemaError, SweepError, TorchtuneValidationError
from ..expdir import REPORT_FILE, RUNS_DIR, SlurmPlan, Validation, config_file, format_parameters, is_recipe_file
from .keys import Key, check_conflicts, check_nested, resolve_key
from .loaders import BaseConfig, load_base_config
from .merge import apply
from .render import Renderer
from .sbatch import plan_slurm
from .schema import Experiment, load_experiment
from .sweep import RunPlan, plan_runs
from .validate import Problem, path_warnings, validate_configs
from .writer import check_run_dirs, check_target, write_experiment_dir

# Keys that hold per-run output paths; a fixed value shared by all runs makes them overwrite each other.
_OUTPUT_KEY_NAMES = ("output_dir", "log_dir")


@dataclass
class RunResult:
    run_id: str
    index: int
    config_path: Path
    """Absolute path of configs/run_NNN.yaml (where it is, or would be, written)."""
    output_dir: Path
    parameters: dict[str, Any]
    """Resolved dotted path → value."""
    labels: dict[str, Any]
    """The same values under the names the experiment file used."""
    validation: Validation = Validation.SKIPPED
    problems: list[str] = field(default_factory=list)
    text: str = field(default="", repr=False)
    plain: dict = field(default_factory=dict, repr=False)
    """The config as a plain dict, sharing unchanged parts with the other runs: read it, never change it."""
    _own_config: dict | None = field(default=None, repr=False)

    @property
    def config(self) -> dict:
        """The config as a plain dict of this run's own (changing it changes no other run)."""
        if self._own_config is None:
            # copied on first use: runs share their unchanged parts, which costs nothing for 10,000 runs
            self._own_config = copy.deepcopy(self.plain)
        return self._own_config


@dataclass
class GenerationResult:
    experiment: Experiment
    experiment_dir: Path
    """Where the directory is (or, for ``validate``, would be) written."""
    recipe: str
    base: str
    """Built-in config name or base file path."""
    distributed: bool
    variables: list[str]
    runs: list[RunResult]
    slurm: SlurmPlan
    """The resolved ``slurm:`` settings recorded in run_mapping.yaml."""
    problems: list[Problem]
    validated: bool
    written: bool = False
    warnings: list[Problem] = field(default_factory=list)
    """Input files not found on this machine (the runs may still find them where they run)."""
    notes: list[str] = field(default_factory=list)
    """Settings the compiler chose for the user (e.g. no GPU for runs on the CPU)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def generate_configs(
    experiment: str | Path | dict | Experiment,
    output_dir: str | Path | None = None,
    *,
    force: bool = False,
    validate: bool = True,
    write: bool = True,
    strict: bool = True,
) -> GenerationResult:
    """Compile ``experiment``, validate every run, and write the experiment directory.

    ``write=False`` does everything in memory (the ``validate`` command).
    With ``strict`` (the default) failed validation raises
    ``TorchtuneValidationError`` — after the directory and its report are
    written, so the failing configs can be inspected. The error carries the
    result as ``.result``.
    """
    exp = load_experiment(experiment)
    experiment_dir = resolve_experiment_dir(exp, output_dir)
    if write:
        check_target(experiment_dir, force)
    result = compile_experiment(exp, experiment_dir)
    if write:
        check_run_dirs([r.output_dir for r in result.runs], experiment_dir)
    if validate:
        _validate(result)
    if write:
        write_experiment_dir(result, force)
    if strict and result.problems:
        failed = sum(r.validation == Validation.FAILED for r in result.runs)
        err = TorchtuneValidationError(
            f"{failed} of {len(result.runs)} configs failed validation:\n"
            + "\n".join(f"  {p}" for p in result.problems)
            + (f"\n  Report: {experiment_dir / REPORT_FILE}" if write else ""),
            result.problems,
        )
        err.result = result
        raise err
    return result


def _validate(result: GenerationResult) -> None:
    """Validate every run in this process; record the problems on the result and on each run."""
    configs = [(r.run_id, r.plain) for r in result.runs]
    result.problems = validate_configs(configs)
    result.warnings = path_warnings(configs, result.experiment_dir)
    by_run: dict[str, list[str]] = {}
    for p in result.problems:
        by_run.setdefault(p.run_id, []).append(f"{p.key}: {p.message}")
    for run in result.runs:
        run.problems = by_run.get(run.run_id, [])
        run.validation = Validation.FAILED if run.problems else Validation.PASSED
    result.validated = True


def compile_experiment(exp: Experiment, experiment_dir: Path) -> GenerationResult:
    """Build every run's config in memory (no validation, nothing written)."""
    base = load_base_config(exp)
    template = base.data
    control_keys: list[Key] = []
    for raw, value in exp.controls.items():
        where = exp.where("controls", raw)
        key = resolve_key(raw, template, where)
        _refuse_output_dir(key, where)
        check_nested(key, value, template, where)
        apply(template, key, value)
        control_keys.append(key)

    var_keys = []
    for raw, values in exp.variables.items():
        where = exp.where("variables", raw)
        key = resolve_key(raw, template, where)
        _refuse_output_dir(key, where)
        if key.op == "delete":
            raise ExperimentSchemaError(f"{where}: '{raw}' deletes a key; deleting belongs in controls ('{raw}: null')")
        for value in values:
            check_nested(key, value, template, where)
        var_keys.append(key)
    check_conflicts(control_keys, list(exp.controls.values()), var_keys, exp.where)

    by_path = dict(zip([k.dotted for k in var_keys], var_keys))
    plans = plan_runs({k.dotted: v for k, v in zip(var_keys, exp.variables.values())})
    runs_root = _runs_root(exp, experiment_dir)
    output_key = Key("output_dir", ("output_dir",), "set" if "output_dir" in template else "add")
    if "output_dir" in template:
        # every run's output_dir has the same length, so its comment sits in the same column in every config
        template["output_dir"] = str(runs_root / plans[0].run_id)
        _mark_output_dir(template)
    renderer = Renderer(template)
    runs = []
    for plan in plans:
        output_dir = runs_root / plan.run_id
        overrides = [(by_path[p], v) for p, v in plan.parameters.items()] + [(output_key, str(output_dir))]
        text, config = renderer.render(overrides)
        labels = {k.raw: v for k, v in zip(var_keys, plan.parameters.values())}
        runs.append(
            RunResult(
                run_id=plan.run_id,
                index=plan.index,
                config_path=experiment_dir / config_file(plan.run_id),
                output_dir=output_dir,
                parameters=plan.parameters,
                labels=labels,
                text=_header(exp, base, plan, labels) + text,
                plain=config,
            )
        )
    _refuse_collisions(runs, [k.path for k in var_keys])
    slurm, slurm_note = plan_slurm(exp.slurm, (r.plain.get("device", "cuda") for r in runs))
    return GenerationResult(
        experiment=exp,
        experiment_dir=experiment_dir,
        recipe=base.recipe,
        base=base.name or str(base.path),
        distributed=base.distributed,
        variables=[k.dotted for k in var_keys],
        runs=runs,
        slurm=slurm,
        problems=[],
        validated=False,
        notes=[slurm_note] if slurm_note else [],
    )


_OUTPUT_DIR_COMMENT = "# this run's own directory, set by torchtune_config_writer"


def _mark_output_dir(template: Any) -> None:
    """Replace the base's comment on ``output_dir`` (e.g. "/tmp may be deleted...") with what it now is."""
    token = template.ca.items.get("output_dir", [None] * 4)[2]
    if token is None:
        template.yaml_add_eol_comment(_OUTPUT_DIR_COMMENT, "output_dir")
        return
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    _, newline, following = token.value.partition("\n")  # the token also holds the blank lines and comments after it
    # a fresh token (column 0) puts the comment two spaces after the value, not in the base's old column
    template.ca.items["output_dir"][2] = CommentToken(f" {_OUTPUT_DIR_COMMENT}{newline}{following}", CommentMark(0), None)


def resolve_experiment_dir(exp: Experiment, output_dir: str | Path | None) -> Path:
    """``--output-dir``, else ``output.experiment_dir`` (relative to the experiment file), else a fresh timestamped dir."""
    if output_dir is not None:
        return Path(output_dir).expanduser().resolve()
    if exp.output.experiment_dir:
        return (exp.base_dir / Path(exp.output.experiment_dir).expanduser()).resolve()
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    candidate = Path.cwd() / "outputs" / f"{exp.experiment_name}_{stamp}"
    n = 2
    while candidate.exists():
        candidate = Path.cwd() / "outputs" / f"{exp.experiment_name}_{stamp}_{n}"
        n += 1
    return candidate


# ----------------------------------------------------------------------------- checks


def _refuse_output_dir(key: Key, section: str) -> None:
    if key.path == ("output_dir",):
        raise ConflictingKeyError(
            f"{section}: output_dir is set for you: each run gets its own (<experiment dir>/runs/run_NNN) "
            "so runs never overwrite each other's checkpoints. To put run outputs elsewhere (e.g. scratch), "
            "set output.runs_dir instead."
        )


def _refuse_collisions(runs: list[RunResult], var_paths: list[tuple[str, ...]]) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        body = dict(run.plain)
        body.pop("output_dir", None)
        digest = json.dumps(body, sort_keys=True, default=str)
        if digest in seen:
            raise SweepError(
                f"{seen[digest]} and {run.run_id} would be identical configs ({format_parameters(run.labels)}); "
                "remove the repeated variable value (note 1e-4 and 0.0001 are the same number)"
            )
        seen[digest] = run.run_id
    if len(runs) > 1:
        for path, value in _output_leaves(runs[0].plain):
            if path in var_paths or not isinstance(value, str) or "${" in value:
                continue
            raise SweepError(
                f"{'.'.join(path)} is the fixed path '{value}' in every run, so runs would overwrite each other's "
                f"files; set it to a path under ${{output_dir}} (e.g. {'.'.join(path)}: ${{output_dir}}/{path[-1]}) "
                "— every run gets its own output_dir"
            )


def _output_leaves(node: Any, prefix: tuple[str, ...] = ()):
    if isinstance(node, dict):
        for k, v in node.items():
            path = prefix + (str(k),)
            if isinstance(v, dict):
                if v.get("enabled") is False:
                    continue  # a disabled profiler writes nothing
                yield from _output_leaves(v, path)
            elif len(path) > 1 and path[-1] in _OUTPUT_KEY_NAMES:
                yield path, v


def _runs_root(exp: Experiment, experiment_dir: Path) -> Path:
    if exp.output.runs_dir:
        # several experiments may share one scratch root: keep them apart by directory name
        return (exp.base_dir / Path(exp.output.runs_dir).expanduser()).resolve() / experiment_dir.name
    return experiment_dir / RUNS_DIR


def _header(exp: Experiment, base: BaseConfig, plan: RunPlan, labels: dict[str, Any]) -> str:
    lines = [
        f"# Generated by torchtune_config_writer {__version__} for experiment '{exp.experiment_name}', {plan.run_id}",
        f"# Base: {base.name or base.path} (recipe {base.recipe})",
    ]
    if labels:
        lines.append(f"# Parameters: {format_parameters(plan.parameters)}")
    launch = f"python {base.recipe}" if is_recipe_file(base.recipe) else f"tune run {base.recipe}"
    lines.append(f"# Run: {launch} --config {config_file(plan.run_id)}")
    return "\n".join(lines) + "\n\n"
