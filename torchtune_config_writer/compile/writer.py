"""Write a compiled experiment as an experiment directory (Appendix B), atomically and never over runs.

Everything goes into a temporary sibling directory that is renamed into place,
so a directory exists whole or not at all. The run table is an
``expdir.RunMapping``: what it records is all the execute side will ever read.

    >>> write_experiment_dir(compile_experiment(exp, Path("outputs/rank")))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import ExperimentDirError
from ..expdir import (
    CONFIGS_DIR, EXPERIMENT_FILE, MAPPING_FILE, RESOLVED_EXPERIMENT_FILE, REPORT_FILE, RUNS_DIR, EvalEntry,
    EvaluationPlan, GitInfo, MetricLog, OomRetryPlan, RunEntry, RunMapping, SlurmPlan, Validation, config_file, format_parameters,
    recorded_run_ids, write_mapping,
)
from .resumable import recipe_resumes
from .sbatch import write_submit_scripts
from .yamlio import dump

if TYPE_CHECKING:
    from .compiler import GenerationResult
    from .evaluation import EvalConfig
    from .schema import Experiment
    from .validate import Problem


# ----------------------------------------------------------------------------- never over runs


def check_target(experiment_dir: Path, force: bool) -> None:
    """Refuse to write where something would be lost: a file, a foreign folder, or runs that started."""
    if experiment_dir.exists() and not experiment_dir.is_dir():
        raise ExperimentDirError(f"'{experiment_dir}' exists and is a file; choose another --output-dir")
    if not experiment_dir.exists() or not any(experiment_dir.iterdir()):
        return
    if not force:
        raise ExperimentDirError(
            f"'{experiment_dir}' already exists and is not empty; nothing was written. "
            "Choose another --output-dir, or pass --force to replace an earlier generation that has not run."
        )
    if not (experiment_dir / MAPPING_FILE).is_file():
        raise ExperimentDirError(
            f"'{experiment_dir}' is not an experiment directory (no {MAPPING_FILE}); --force only replaces "
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
    names = recorded_run_ids(experiment_dir)
    runs_dir = experiment_dir / RUNS_DIR
    if runs_dir.is_dir():
        names |= {p.name for p in runs_dir.iterdir() if p.is_dir() and any(p.iterdir())}
    return sorted(names)


def check_run_dirs(output_dirs: list[Path], experiment_dir: Path) -> None:
    """Refuse run output directories outside the experiment directory that already hold files."""
    used = [d.name for d in output_dirs if not d.is_relative_to(experiment_dir) and d.is_dir() and any(d.iterdir())]
    if used:
        raise ExperimentDirError(
            f"the run output directories of {', '.join(used[:5])} already hold files (under "
            f"'{output_dirs[0].parent}'); another experiment wrote there. Set output.runs_dir elsewhere."
        )


# ----------------------------------------------------------------------------- writing


def write_experiment_dir(result: GenerationResult, force: bool = False) -> None:
    """Write every file into a temporary sibling directory, then move it into place in one rename."""
    final = result.experiment_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _write_files(result, tmp)
        if final.exists():
            check_target(final, force)  # re-check: a run may have started since
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
    (root / CONFIGS_DIR).mkdir()
    (root / EXPERIMENT_FILE).write_text(exp.source_text if exp.source_text is not None else dump(_experiment_dict(exp)))
    if exp.resolved_text is not None:  # the includes may change or move: keep what this generation used
        (root / RESOLVED_EXPERIMENT_FILE).write_text(exp.resolved_text)
    from .readback import check_written

    runs = []
    for run in result.runs:
        check_written(run.run_id, run.text, run.plain)  # torchtune must read what was validated, or nothing is written
        data = run.text.encode()
        (root / config_file(run.run_id)).write_bytes(data)
        evaluations = _write_eval_configs(root, result.evaluations.get(run.run_id, []))
        runs.append(RunEntry(
            run_id=run.run_id, index=run.index, config=config_file(run.run_id),
            config_sha256=hashlib.sha256(data).hexdigest(), output_dir=str(run.output_dir),
            parameters=run.parameters, validation=run.validation,
            metric_log=metric_log(run.plain, run.output_dir, result.experiment_dir),
            name=run.name, derived=run.derived, seed=run.seed, configuration=run.configuration,
            resources=run.resources,
            memory=None if run.memory is None else run.memory.record(result.memory_budget),
            evaluations=evaluations, tracking_name=run.tracking_name, tokens=run.tokens,
        ))
    mapping = RunMapping(
        experiment_name=exp.experiment_name,
        recipe=result.recipe,
        distributed=result.distributed,
        base_config=result.base if exp.base_config else None,
        base_config_file=None if exp.base_config else result.base,
        created=datetime.now().isoformat(timespec="seconds"),
        tool_version=__version__,
        variables=tuple(result.variables),
        derived=tuple(result.derived),
        seeded=exp.seeds is not None,
        validation=Validation.SKIPPED if not result.validated else (
            Validation.FAILED if result.problems else Validation.PASSED),
        slurm=result.slurm,
        runs=tuple(runs),
        evaluation=_evaluation_plan(exp),
        tracking=result.tracking,
        git=git_info(exp.source_path.parent if exp.source_path else None),
        oom_retry=None if exp.oom_retry is None else OomRetryPlan(max_attempts=exp.oom_retry.max_attempts),
        resumable=recipe_resumes(result.recipe),  # a requeued task resumes only then (Appendix J.4)
    )
    write_mapping(root, mapping)
    (root / REPORT_FILE).write_text(validation_report(result))
    # ``root`` is a temporary directory renamed into place afterwards: the script names no path.
    write_submit_scripts(root, mapping, result.slurm_settings)


def _write_eval_configs(root: Path, configs: list[EvalConfig]) -> tuple[EvalEntry, ...]:
    """Write a run's evaluation configs; return their run_mapping entries, each with its file's sha256."""
    entries = []
    for ev in configs:
        data = ev.text.encode()
        path = root / ev.entry.config
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(dataclasses.replace(ev.entry, config_sha256=hashlib.sha256(data).hexdigest()))
    return tuple(entries)


def _evaluation_plan(exp: Experiment) -> EvaluationPlan | None:
    settings = exp.evaluation
    if settings is None:
        return None
    given = settings.slurm.model_dump(exclude_unset=True) if settings.slurm is not None else {}
    names = {f.name for f in dataclasses.fields(SlurmPlan)}
    return EvaluationPlan(primary_metric=settings.primary_metric, goal=settings.goal,
                          slurm={k: v for k, v in given.items() if k in names})


def git_info(directory: Path | None) -> GitInfo | None:
    """The commit (and whether there are uncommitted changes) of the git repository holding ``directory``;
    None outside a repository or without git. Recorded so that a result can be traced to the code that made it."""
    git = shutil.which("git")
    if directory is None or git is None:
        return None

    def ask(*args: str) -> str | None:
        try:
            proc = subprocess.run([git, "-C", str(directory), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = ask("rev-parse", "HEAD")
    if not commit:
        return None
    status = ask("status", "--porcelain", "--untracked-files=no")
    return GitInfo(commit=commit, dirty=bool(status), root=ask("rev-parse", "--show-toplevel") or str(directory))


_OUTPUT_DIR_REF = re.compile(r"\$\{\s*output_dir\s*\}")


def metric_log(config: dict, output_dir: Path, experiment_dir: Path) -> MetricLog | None:
    """Where a run's DiskLogger writes, resolved now so that ``collect`` never parses a config.

    None when the run logs metrics elsewhere (W&B, TensorBoard, stdout). The
    usual ``${output_dir}/logs`` is filled in directly; any other interpolation
    is resolved by OmegaConf, as the run itself will. A relative directory is
    relative to the experiment directory, where runs start.

    >>> metric_log({"metric_logger": {"_component_": "torchtune.training.metric_logging.DiskLogger",
    ...             "log_dir": "${output_dir}/logs"}}, Path("/e/runs/run_000"), Path("/e"))
    MetricLog(dir='/e/runs/run_000/logs', filename=None)
    """
    logger = config.get("metric_logger")
    if not isinstance(logger, dict) or not str(logger.get("_component_", "")).endswith("DiskLogger"):
        return None
    log_dir: Any = logger.get("log_dir")
    filename: Any = logger.get("filename")
    if isinstance(log_dir, str):
        # a function, not a replacement string: a backslash in the path must stay a backslash
        log_dir = _OUTPUT_DIR_REF.sub(lambda _: str(output_dir), log_dir)
    if "${" in str(log_dir) or "${" in str(filename):
        log_dir, filename = _resolve_with_omegaconf(config, output_dir)
    if not log_dir:
        return MetricLog(str(output_dir / "logs"), None)
    path = Path(str(log_dir)).expanduser()
    return MetricLog(str(path if path.is_absolute() else experiment_dir / path), str(filename) if filename else None)


def _resolve_with_omegaconf(config: dict, output_dir: Path) -> tuple[Any, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.create({**config, "output_dir": str(output_dir)})
        return cfg.metric_logger.get("log_dir"), cfg.metric_logger.get("filename")
    except OmegaConfBaseException:
        return None, None  # validation reports the broken interpolation; the default is the best guess


# ----------------------------------------------------------------------------- the report


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
        status = "PASS" if run.validation == Validation.PASSED else "FAIL"
        lines.append(f"{status} {run.run_id} ({format_parameters(run.labels) or 'no variables'})")
        lines.extend(f"     {p}" for p in run.problems)
    failed = sum(r.validation == Validation.FAILED for r in result.runs)
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
