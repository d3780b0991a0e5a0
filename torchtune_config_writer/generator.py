"""Compile an experiment into runs, validate them, and write the experiment directory.

The one-way flow: experiment spec → base config → run plan → files → report.

    >>> result = generate_configs("example_configs/lora_rank_sweep.yaml",
    ...                           output_dir="outputs/rank")      # doctest: +SKIP
    >>> [(r.run_id, r.parameters) for r in result.runs]            # doctest: +SKIP
    [('run_000', {'model.lora_rank': 8}), ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__
from .errors import (
    ConflictingKeyError,
    ExperimentDirError,
    ExperimentSchemaError,
    SweepError,
    TorchtuneValidationError,
)
from .keys import Key, check_conflicts, check_nested, resolve_key
from .loaders import BaseConfig, load_base_config
from .merge import apply
from .render import Renderer
from .schema import Experiment, load_experiment
from .sweep import RunPlan, plan_runs
from .validate import Problem, path_warnings, validate_configs
from .yamlio import dump, dump_plain

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
    validation: str = "skipped"
    """passed | failed | skipped"""
    problems: list[str] = field(default_factory=list)
    text: str = field(default="", repr=False)
    config: dict = field(default_factory=dict, repr=False)


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
    problems: list[Problem]
    validated: bool
    written: bool = False
    warnings: list[Problem] = field(default_factory=list)
    """Input files not found on this machine (the runs may still find them where they run)."""

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
        _check_target(experiment_dir, force)
    result = compile_experiment(exp, experiment_dir)
    if write:
        _check_run_dirs(result)
    if validate:
        configs = [(r.run_id, r.config) for r in result.runs]
        result.problems = validate_configs(configs)
        result.warnings = path_warnings(configs, experiment_dir)
        by_run: dict[str, list[str]] = {}
        for p in result.problems:
            by_run.setdefault(p.run_id, []).append(f"{p.key}: {p.message}")
        for run in result.runs:
            run.problems = by_run.get(run.run_id, [])
            run.validation = "failed" if run.problems else "passed"
        result.validated = True
    if write:
        write_experiment_dir(result, force)
    if strict and result.problems:
        err = TorchtuneValidationError(
            f"{sum(r.validation == 'failed' for r in result.runs)} of {len(result.runs)} configs failed validation:\n"
            + "\n".join(f"  {p}" for p in result.problems)
            + (f"\n  Report: {experiment_dir / 'validation_report.txt'}" if write else ""),
            result.problems,
        )
        err.result = result
        raise err
    return result


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
                config_path=experiment_dir / "configs" / f"{plan.run_id}.yaml",
                output_dir=output_dir,
                parameters=plan.parameters,
                labels=labels,
                text=_header(exp, base, plan, labels) + text,
                config=config,
            )
        )
    _refuse_collisions(runs, [k.path for k in var_keys])
    return GenerationResult(
        experiment=exp,
        experiment_dir=experiment_dir,
        recipe=base.recipe,
        base=base.name or str(base.path),
        distributed=base.distributed,
        variables=[k.dotted for k in var_keys],
        runs=runs,
        problems=[],
        validated=False,
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
        body = dict(run.config)
        body.pop("output_dir", None)
        digest = json.dumps(body, sort_keys=True, default=str)
        if digest in seen:
            raise SweepError(
                f"{seen[digest]} and {run.run_id} would be identical configs ({_fmt(run.labels)}); "
                "remove the repeated variable value (note 1e-4 and 0.0001 are the same number)"
            )
        seen[digest] = run.run_id
    if len(runs) > 1:
        for path, value in _output_leaves(runs[0].config):
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


def _check_target(experiment_dir: Path, force: bool) -> None:
    if experiment_dir.exists() and not experiment_dir.is_dir():
        raise ExperimentDirError(f"'{experiment_dir}' exists and is a file; choose another --output-dir")
    if not experiment_dir.exists() or not any(experiment_dir.iterdir()):
        return
    if not force:
        raise ExperimentDirError(
            f"'{experiment_dir}' already exists and is not empty; nothing was written. "
            "Choose another --output-dir, or pass --force to replace an earlier generation that has not run."
        )
    if not (experiment_dir / "run_mapping.yaml").is_file():
        raise ExperimentDirError(
            f"'{experiment_dir}' is not an experiment directory (no run_mapping.yaml); --force only replaces "
            "an earlier generation. Choose another --output-dir."
        )
    started = _started_runs(experiment_dir)
    if started:
        raise ExperimentDirError(
            f"'{experiment_dir}' holds results of {len(started)} run(s) ({', '.join(started[:5])}"
            f"{', ...' if len(started) > 5 else ''}); --force never deletes runs. Choose another --output-dir, "
            "or move that directory away yourself."
        )


def _started_runs(experiment_dir: Path) -> list[str]:
    names = {p.stem for p in (experiment_dir / "status").glob("run_*.json")}
    runs_dir = experiment_dir / "runs"
    if runs_dir.is_dir():
        names |= {p.name for p in runs_dir.iterdir() if p.is_dir() and any(p.iterdir())}
    return sorted(names)


def _check_run_dirs(result: GenerationResult) -> None:
    inside = result.experiment_dir
    used = [
        r.run_id for r in result.runs
        if not r.output_dir.is_relative_to(inside) and r.output_dir.is_dir() and any(r.output_dir.iterdir())
    ]
    if used:
        raise ExperimentDirError(
            f"the run output directories of {', '.join(used[:5])} already hold files (under "
            f"'{result.runs[0].output_dir.parent}'); another experiment wrote there. Set output.runs_dir elsewhere."
        )


def _runs_root(exp: Experiment, experiment_dir: Path) -> Path:
    if exp.output.runs_dir:
        # several experiments may share one scratch root: keep them apart by directory name
        return (exp.base_dir / Path(exp.output.runs_dir).expanduser()).resolve() / experiment_dir.name
    return experiment_dir / "runs"


# ----------------------------------------------------------------------------- writing


def write_experiment_dir(result: GenerationResult, force: bool = False) -> None:
    """Write every file into a temporary sibling directory, then move it into place in one rename."""
    final = result.experiment_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _write_files(result, tmp)
        if final.exists():
            _check_target(final, force)  # re-check: a run may have started since
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.written = True


def _write_files(result: GenerationResult, root: Path) -> None:
    exp = result.experiment
    (root / "configs").mkdir()
    (root / "experiment.yaml").write_text(exp.source_text if exp.source_text is not None else dump(_experiment_dict(exp)))
    runs = []
    for run in result.runs:
        data = run.text.encode()
        (root / "configs" / f"{run.run_id}.yaml").write_bytes(data)
        runs.append({
            "run_id": run.run_id,
            "index": run.index,
            "config": f"configs/{run.run_id}.yaml",
            "config_sha256": hashlib.sha256(data).hexdigest(),
            "output_dir": str(run.output_dir),
            "parameters": run.parameters,
            "validation": run.validation,
        })
    mapping = {
        "experiment_name": exp.experiment_name,
        "recipe": result.recipe,
        "distributed": result.distributed,
        ("base_config" if exp.base_config else "base_config_file"): result.base,
        "created": datetime.now().isoformat(timespec="seconds"),
        "tool_version": __version__,
        "variables": result.variables,
        "validation": "skipped" if not result.validated else ("failed" if result.problems else "passed"),
        "runs": runs,
    }
    (root / "run_mapping.yaml").write_text(dump_plain(mapping))
    (root / "validation_report.txt").write_text(validation_report(result))
    from .sbatch import write_submit_script

    # ``root`` is a temporary directory renamed into place afterwards: the script names no path.
    write_submit_script(root, mapping, exp.slurm)


def validation_report(result: GenerationResult) -> str:
    """The text of validation_report.txt."""
    lines = [
        f"experiment: {result.experiment.experiment_name}",
        f"base: {result.base} (recipe {result.recipe})",
        f"runs: {len(result.runs)}",
        "",
    ]
    if not result.validated:
        lines.append("validation skipped (--no-validate); these configs have not been checked")
        return "\n".join(lines) + "\n"
    for run in result.runs:
        status = "PASS" if run.validation == "passed" else "FAIL"
        lines.append(f"{status} {run.run_id} ({_fmt(run.labels) or 'no variables'})")
        lines.extend(f"     {p}" for p in run.problems)
    failed = sum(r.validation == "failed" for r in result.runs)
    lines += ["", f"{len(result.runs) - failed} passed, {failed} failed"]
    if result.warnings:
        lines += ["", "Warnings (not errors; checked on the machine that generated the configs):"]
        lines += [f"  {w}" for w in summarize_warnings(result.warnings, len(result.runs))]
    return "\n".join(lines) + "\n"


def summarize_warnings(warnings: list[Problem], total_runs: int) -> list[str]:
    """One line per distinct warning, naming the runs it concerns (``all 64 runs`` when it is every run)."""
    runs: dict[tuple[str, str], list[str]] = {}
    for w in warnings:
        runs.setdefault((w.key, w.message), []).append(w.run_id)
    lines = []
    for (key, message), ids in runs.items():
        which = f"all {total_runs} runs" if len(ids) == total_runs and total_runs > 1 else ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        lines.append(f"{key}: {message} ({which})")
    return lines


def _experiment_dict(exp: Experiment) -> dict:
    data = exp.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("experiment_name", exp.experiment_name)
    return data


def _header(exp: Experiment, base: BaseConfig, plan: RunPlan, labels: dict[str, Any]) -> str:
    lines = [
        f"# Generated by torchtune_config_writer {__version__} for experiment '{exp.experiment_name}', {plan.run_id}",
        f"# Base: {base.name or base.path} (recipe {base.recipe})",
    ]
    if labels:
        lines.append(f"# Parameters: {_fmt(plan.parameters)}")
    lines.append(f"# Run: tune run {base.recipe} --config configs/{plan.run_id}.yaml")
    return "\n".join(lines) + "\n\n"


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
