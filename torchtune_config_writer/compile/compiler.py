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
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SweepError, TorchtuneValidationError
from ..expdir import (
    REPORT_FILE, RUNS_DIR, SlurmPlan, TrackingPlan, Validation, config_file, format_parameters, is_recipe_file,
)
from .expressions import check_names, compile_expression, has_template
from .keys import Key, Setting, check_conflicts, check_nested, resolve_key
from .loaders import BaseConfig, load_base_config
from .evaluation import EvalConfig, plan_evaluations
from .memory import Budget, MemoryEstimate, budget_of, estimate_runs, memory_problems
from .merge import apply
from .plan import Counts, PlannedRun, build_plan, refuse_output_dir, resolve_axes, resolve_computed
from .render import Renderer
from .sbatch import check_nodes, plan_resources
from .tokens import check_evaluation_time
from .sweep import canonical
from .tracking import NAME_KEY, logger_section, run_names, tracking_plan
from .schema import Experiment, SlurmSettings, load_experiment, to_plain
from .yamlio import comment_text
from .checks.paths import anchor_inputs, anchor_value, path_warnings
from .validate import Problem, validate_configs
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
    name: str | None = None
    derived: dict[str, Any] = field(default_factory=dict)
    """Dotted path → value of every key computed by an expression."""
    seed: Any = None
    configuration: int = 0
    """Runs that differ only in their seed share this number."""
    resources: dict[str, Any] = field(default_factory=dict)
    """SLURM resources in which this run differs from ``GenerationResult.slurm``."""
    validation: Validation = Validation.SKIPPED
    problems: list[str] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    """Estimated peak GPU memory per device (Appendix H); None for runs on the CPU or not validated."""
    tracking_name: str | None = None
    """Its run name in the tracking backend (None without ``tracking:``)."""
    tokens: int | None = None
    """Tokens it trains on, counted when its ``slurm.time`` is ``auto`` (compile/tokens.py)."""
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
    """Every axis, by dotted path."""
    derived: list[str]
    runs: list[RunResult]
    slurm: SlurmPlan
    """The resolved ``slurm:`` settings recorded in run_mapping.yaml."""
    slurm_settings: SlurmSettings
    """The ``slurm:`` section with its expressions evaluated (as for the first run): what the scripts are written from."""
    counts: Counts
    """How many combinations, excluded, seeds and runs."""
    problems: list[Problem]
    validated: bool
    written: bool = False
    warnings: list[Problem] = field(default_factory=list)
    """Input files not found on this machine (the runs may still find them where they run)."""
    notes: list[str] = field(default_factory=list)
    """Settings the compiler chose for the user (e.g. no GPU for runs on the CPU)."""
    cautions: list[str] = field(default_factory=list)
    """Likely mistakes that are not errors (e.g. an exclude rule that matches no value)."""
    memory_budget: Budget | None = None
    """The ``hardware:`` GPU memory every run's estimate was checked against (None: no check)."""
    evaluations: dict[str, list[EvalConfig]] = field(default_factory=dict)
    """Run id -> its evaluation configs (empty without ``evaluation:``)."""
    tracking: TrackingPlan | None = None
    """The resolved ``tracking:`` section (None without one)."""

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
        from .tokens import count_tokens

        counted = count_tokens(result)  # slurm.time: auto (Appendix J.5)
        if counted:
            result.notes.append(counted)
    else:
        result.evaluations = plan_evaluations(result, check_except=None)[0]
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
    found = validate_configs(configs, result.recipe) + path_warnings(configs, result.experiment_dir)
    # after validation: the model's component is known to import, and torchtune is loaded already
    estimates = estimate_runs(result)
    for run, estimate in zip(result.runs, estimates):
        run.memory = estimate
    result.memory_budget = budget_of(result)
    found += memory_problems(result, estimates)
    result.validated = True
    # a run whose training config failed gets no evaluation checks: its errors are reported once
    failed = {p.run_id for p in found if not p.warning}
    result.evaluations, eval_found = plan_evaluations(result, check_except=failed)
    found += eval_found
    result.problems = [p for p in found if not p.warning]
    result.warnings = [p for p in found if p.warning]
    by_run: dict[str, list[str]] = {}
    for p in result.problems:
        by_run.setdefault(p.run_id, []).append(f"{p.key}: {p.message}")
    for run in result.runs:
        run.problems = by_run.get(run.run_id, [])
        run.validation = Validation.FAILED if run.problems else Validation.PASSED


def compile_experiment(exp: Experiment, experiment_dir: Path) -> GenerationResult:
    """Build every run's config in memory (no validation, nothing written)."""
    base = load_base_config(exp)
    template = base.data
    controls, expression_controls = [], []
    for raw, value in exp.controls.items():
        where = exp.where("controls", raw)
        key = resolve_key(raw, template, where)
        refuse_output_dir(key, where)
        check_nested(key, value, template, where)
        controls.append(Setting(key, "controls", value, exp.layer("controls", raw)))
        if has_template(value):
            expression_controls.append((raw, key, value))  # set per run, with the derived keys
        else:
            apply(template, key, value)

    tracking = tracking_plan(exp, experiment_dir)
    if tracking is not None:
        if "metric_logger" in exp.controls:
            raise SweepError(f"{exp.where('controls', 'metric_logger')}: metric_logger is set by the tracking: section "
                             "(torchtune's MLflow or W&B logger); remove controls.metric_logger, or remove tracking:")
        apply(template, Key("metric_logger", ("metric_logger",), "set" if "metric_logger" in template else "add"),
              logger_section(tracking))
    anchored = anchor_inputs(template, exp.base_dir, experiment_dir)
    axes, axis_keys = resolve_axes(exp, template)
    computed = resolve_computed(exp, template, expression_controls)
    swept = [Setting(a.key, a.kind, layer=exp.layer("variables", a.label) if a.kind == "variables" else exp.layer(a.kind))
             for a in axis_keys]
    swept += [Setting(c.key, "derived", layer=exp.layer("derived", c.label)) for c in computed if c.section == "derived"]
    check_conflicts(controls, swept, exp.where)

    runs_root = _runs_root(exp, experiment_dir)
    plan = build_plan(exp, template, to_plain(template), experiment_dir, runs_root, axes, axis_keys, computed)
    output_key = Key("output_dir", ("output_dir",), "set" if "output_dir" in template else "add")
    if "output_dir" in template:
        # every run's output_dir has the same length, so its comment sits in the same column in every config
        template["output_dir"] = str(plan.runs[0].output_dir)
        _mark_output_dir(template)
    renderer = Renderer(template)
    names = run_names(exp, plan.runs) if tracking is not None else [None] * len(plan.runs)
    name_key = Key("metric_logger", ("metric_logger", NAME_KEY[tracking.backend]), "add") if tracking else None
    runs = []
    for p, tracking_name in zip(plan.runs, names):
        overrides = [(name_key, tracking_name)] if name_key else []
        for key, value in p.overrides:
            value, note = anchor_value(key.path, value, exp.base_dir, experiment_dir)
            overrides.append((key, value))
            if note and note not in anchored:
                anchored.append(note)
        text, config = renderer.render(overrides + [(output_key, str(p.output_dir))])
        runs.append(
            RunResult(
                run_id=p.run_id,
                index=p.index,
                config_path=experiment_dir / config_file(p.run_id),
                output_dir=p.output_dir,
                parameters=p.parameters,
                labels=p.labels,
                name=p.name,
                derived=p.derived,
                seed=p.seed,
                configuration=p.configuration,
                text=_header(exp, base, p) + text,
                plain=config,
                tracking_name=tracking_name,
            )
        )
    _refuse_collisions(runs, [a.key.path for a in axis_keys] + [c.key.path for c in computed])
    slurm, resources, slurm_note, slurm_settings = plan_resources(
        exp.slurm, [(r.run_id, r.plain.get("device", "cuda"), p.slurm) for r, p in zip(runs, plan.runs)], exp.where)
    for run, own in zip(runs, resources):
        run.resources = own
    check_nodes(base.recipe, base.distributed, slurm, resources, [r.run_id for r in runs], exp.where)
    check_evaluation_time(exp, [r.resources.get("time", slurm.time) for r in runs])
    return GenerationResult(
        experiment=exp,
        experiment_dir=experiment_dir,
        recipe=base.recipe,
        base=base.name or str(base.path),
        distributed=base.distributed,
        variables=[a.key.dotted for a in axis_keys],
        derived=[c.key.dotted for c in computed],
        runs=runs,
        slurm=slurm,
        slurm_settings=slurm_settings,
        counts=plan.counts,
        problems=[],
        validated=False,
        notes=anchored + ([slurm_note] if slurm_note else []),
        cautions=plan.notes,
        tracking=tracking,
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
        where = exp.where("output", "experiment_dir")
        expr = compile_expression(exp.output.experiment_dir, where)
        check_names(expr, exp.experiment_names(), {n: "output.experiment_dir is one directory for all runs; it may "
                    "read only experiment_name, timestamp and date" for n in ("run_id", "run_name", "seed", "output_dir")})
        return (exp.base_dir / Path(str(expr.evaluate(exp.experiment_names()))).expanduser()).resolve()
    stamp = exp.created.strftime("%Y%m%d_%H%M%S")
    candidate = Path.cwd() / "outputs" / f"{exp.experiment_name}_{stamp}"
    n = 2
    while candidate.exists():
        candidate = Path.cwd() / "outputs" / f"{exp.experiment_name}_{stamp}_{n}"
        n += 1
    return candidate


# ----------------------------------------------------------------------------- checks


def _refuse_collisions(runs: list[RunResult], var_paths: list[tuple[str, ...]]) -> None:
    seen: dict[str, RunResult] = {}
    for run in runs:
        body = dict(run.plain)
        body.pop("output_dir", None)
        # 0 and 0.0 (or 1e-4 and 0.0001) are one value to torchtune: compare numbers, not their spelling
        digest = json.dumps(canonical(body), sort_keys=True, default=str)
        if digest in seen:
            first = seen[digest]
            raise SweepError(
                f"{first.run_id} and {run.run_id} would be identical configs ({format_parameters(run.labels)}); "
                f"remove the repeated variable value{_spelling_note(first.labels, run.labels)}"
            )
        seen[digest] = run
    if len(runs) > 1:
        for path, value in _output_leaves(runs[0].plain):
            if path in var_paths or not isinstance(value, str) or "${" in value:
                continue
            raise SweepError(
                f"{'.'.join(path)} is the fixed path '{value}' in every run, so runs would overwrite each other's "
                f"files; set it to a path under ${{output_dir}} (e.g. {'.'.join(path)}: {_own_path(path)}) "
                "— every run gets its own output_dir"
            )


def _spelling_note(first: dict[str, Any], second: dict[str, Any]) -> str:
    """" (note 0 and 0.0 are the same number)" when two runs' values differ only in how numbers are written."""
    pairs = [f"{a} and {second[k]}" for k, a in first.items() if k in second and _spelled_apart(a, second[k])]
    return f" (note {'; '.join(pairs)} are the same number)" if pairs else ""


def _spelled_apart(a: Any, b: Any) -> bool:
    def digest(v: Any) -> str:
        return json.dumps(canonical(v), sort_keys=True, default=str)  # json keeps true apart from 1

    return str(a) != str(b) and digest(a) == digest(b)


def _own_path(path: tuple[str, ...]) -> str:
    """Where a nested output key usually points in torchtune's configs: the run's output_dir, or a folder in it."""
    return "${output_dir}" if path[-1] == "output_dir" else "${output_dir}/logs"


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


def _header(exp: Experiment, base: BaseConfig, run: PlannedRun) -> str:
    lines = [
        f"# Generated by torchtune_config_writer {__version__} for experiment '{exp.experiment_name}', {run.run_id}",
        f"# Base: {base.name or base.path} (recipe {base.recipe})",
    ]
    if run.name is not None:
        lines.append(f"# Name: {run.name}")
    if run.parameters:
        lines.append(f"# Parameters: {format_parameters(run.parameters)}")
    if run.derived:
        lines.append(f"# Derived: {format_parameters(run.derived)}")
    launch = f"python {base.recipe}" if is_recipe_file(base.recipe) else f"tune run {base.recipe}"
    lines.append(f"# Run: {launch} --config {config_file(run.run_id)}")
    # a value may hold a line break: escaped, or its tail would become live YAML
    return "\n".join(comment_text(line) for line in lines) + "\n\n"
