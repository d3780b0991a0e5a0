"""The compile-side commands: ``generate``, ``validate`` and ``ls``.

    $ torchtune-config-writer generate experiment.yaml -o outputs/exp1
    $ torchtune-config-writer validate experiment.yaml
    $ torchtune-config-writer ls llama3_2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import click

from ..errors import ConfigWriterError, TorchtuneValidationError

if TYPE_CHECKING:
    from ..compile.compiler import GenerationResult


@click.command("ls")
@click.argument("pattern", required=False)
@click.option("--presets", is_flag=True, help="List the presets that `include:` can name instead.")
def ls_cmd(pattern: str | None, presets: bool) -> None:
    """List torchtune recipes and their configs (PATTERN filters, e.g. 'llama3_2' or '*lora*')."""
    import fnmatch

    from ..compile import registry

    if presets:
        _list_presets()
        return

    glob = pattern if pattern and any(c in pattern for c in "*?[") else f"*{pattern or ''}*"
    files = registry.builtin_configs()
    shown = 0
    click.echo(f"{'RECIPE':<40} CONFIG")
    for r in registry.recipes():
        names = [c for c in r.configs if fnmatch.fnmatch(c, glob)]
        if not names and not fnmatch.fnmatch(r.name, glob):
            continue
        for i, c in enumerate(names or ["-"]):
            missing = c in files and not files[c].path.is_file()
            click.echo(f"{r.name if i == 0 else '':<40} {c}" + ("  (file not shipped with this torchtune)" if missing else ""))
            shown += 1
    if not shown:
        raise ConfigWriterError(f"nothing matches '{pattern}'; run `torchtune-config-writer ls` to see every config")


def _list_presets() -> None:
    import yaml

    from ..compile.schema import presets

    click.echo(f"{'PRESET':<12} DESCRIPTION (use: include: [NAME])")
    for name, path in presets().items():
        data = yaml.safe_load(path.read_text()) or {}
        click.echo(f"{name:<12} {data.get('description', '')}")
        click.echo(f"{'':<12} {path}")


@click.command("generate")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Experiment directory to create (default: output.experiment_dir, else outputs/<name>_<timestamp>).")
@click.option("--force", is_flag=True, help="Replace an earlier generation in that directory (never one whose runs have started).")
@click.option("--no-validate", is_flag=True, help="Skip validation (runs are then marked unvalidated and will not be run).")
def generate_cmd(experiment: str, output_dir: str | None, force: bool, no_validate: bool) -> None:
    """Compile EXPERIMENT (experiment.yaml) into an experiment directory of validated configs."""
    from ..compile.compiler import generate_configs

    _report(lambda: generate_configs(experiment, output_dir, force=force, validate=not no_validate), write=True)


@click.command("validate")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--no-validate", "quick", is_flag=True, help="Show the plan only; skip torchtune's validation.")
def validate_cmd(experiment: str, quick: bool) -> None:
    """Show the run plan of EXPERIMENT and check it end to end (torchtune validation included); writes nothing."""
    from ..compile.compiler import generate_configs

    _report(lambda: generate_configs(experiment, write=False, validate=not quick), write=False)


plan_cmd = click.Command("plan", params=validate_cmd.params, callback=validate_cmd.callback,
                         help="The same as validate: the run table (ids, names, axes, derived values, "
                              "resources) and the counts, checked; writes nothing.")


def _report(action: Callable[[], GenerationResult], write: bool) -> None:
    """Run ``action`` and print each config with its parameters, then a summary."""
    try:
        result = action()
    except TorchtuneValidationError as e:
        result = e.result
        _print_runs(result, write)
        raise
    _print_runs(result, write)
    where = result.experiment_dir
    if write:
        click.echo(f"✓ Experiment directory: {where}")
        click.echo(f"  Next: torchtune-config-writer run {where}   (or: torchtune-config-writer submit {where})")
    else:
        click.echo("✓ Valid; nothing written")


def _print_runs(result: GenerationResult, write: bool) -> None:
    from ..compile.writer import summarize_warnings
    from ..expdir import MAPPING_FILE, REPORT_FILE, RESOLVED_EXPERIMENT_FILE

    runs = result.runs
    click.echo(f"✓ Loaded base config: {result.base} (recipe {result.recipe})")
    verb = "Generated" if write else "Planned"
    click.echo(f"✓ {verb} {result.counts.summary()}" + (f" in {result.experiment_dir / 'configs'}" if write else ""))
    for line in run_table(result):
        click.echo(f"  {line}")
    if not result.validated:
        click.echo("! Validation skipped: these runs are marked unvalidated and `run`/`submit` will refuse them")
    elif result.ok:
        click.echo(f"✓ Validated {len(runs)} config{'s' if len(runs) != 1 else ''}: all passed")
    for note in result.notes:
        click.echo(f"✓ {note}")
    if result.evaluations:
        per_run = max(len(v) for v in result.evaluations.values())
        kinds = ", ".join(dict.fromkeys(str(e.entry.evaluator) for v in result.evaluations.values() for e in v))
        click.echo(f"✓ Evaluation: {per_run} evaluation config(s) per run ({kinds}) in {result.experiment_dir / 'eval'}; "
                   "each run is evaluated after it trains")
    if result.tracking is not None:
        t = result.tracking
        where = t.tracking_uri or "MLflow's default store" if t.backend == "mlflow" else f"W&B project {t.project}"
        click.echo(f"✓ Tracking: every run logs to {t.backend} ({where}), experiment '{t.experiment}'")
    for caution in result.cautions:
        click.echo(f"! {caution}")
    if result.warnings:
        lines = summarize_warnings(result.warnings, len(runs))
        files = all(w.message.endswith("does not exist on this machine") for w in result.warnings)
        what = ": input files not found on this machine (fine if the runs will see them elsewhere)" if files \
            else " (likely mistakes, reported but not refused)"
        click.echo(f"! {len(lines)} warning{'s' if len(lines) != 1 else ''}{what}")
        for line in lines:
            click.echo(f"    {line}")
    if write and result.written:
        written = sorted(p.name for p in result.experiment_dir.glob("*.sbatch"))
        if (result.experiment_dir / RESOLVED_EXPERIMENT_FILE).is_file():
            written.insert(0, RESOLVED_EXPERIMENT_FILE)
        click.echo(f"✓ Wrote {MAPPING_FILE}, {REPORT_FILE}, {', '.join(['experiment.yaml'] + written)}")


def run_table(result: GenerationResult, limit: int = 50) -> list[str]:
    """The plan as a table: run, name, every axis, derived values, resources that differ; problems under a run.

    Past ``limit`` runs, the first 20 and the last 5 are shown.
    """
    from ..expdir import Validation, short_names

    runs = result.runs
    axes = list(runs[0].labels) if runs else []
    derived = list(dict.fromkeys(k for r in runs for k in r.derived))
    derived_names = short_names(derived)
    resources = list(dict.fromkeys(k for r in runs for k in r.resources))
    names = any(r.name is not None for r in runs)
    memory = any(r.memory is not None for r in runs)
    header = ["", "RUN"] + (["NAME"] if names else []) + axes + [derived_names[k] for k in derived] \
        + [f"slurm.{k}" for k in resources] + (["MEM"] if memory else [])
    shown = runs if len(runs) <= limit else runs[:20] + [None] + runs[-5:]
    rows: list[list[str] | str] = []
    for run in shown:
        if run is None:
            rows.append(f"... {len(runs) - 25} more ...")
            continue
        plan = result.slurm
        rows.append(["✗" if run.validation == Validation.FAILED else "-", run.run_id]
                    + ([run.name or "-"] if names else [])
                    + [_cell(run.labels[k]) for k in axes] + [_cell(run.derived.get(k, "")) for k in derived]
                    + [_cell(run.resources.get(k, getattr(plan, k))) for k in resources]
                    + ([_memory_cell(run)] if memory else []))
        rows += [f"    {p}" for p in run.problems]
    widths = [max(len(r[i]) for r in [header] + [r for r in rows if isinstance(r, list)]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for row in rows:
        out.append(row if isinstance(row, str) else "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return out + memory_lines(result)


def _memory_cell(run: object) -> str:
    est = getattr(run, "memory", None)
    return "-" if est is None else f"{est.total_gib:.1f} GiB"


def memory_lines(result: GenerationResult) -> list[str]:
    """Below the table: what MEM is measured against, and the largest run's estimate term by term."""
    estimated = [r for r in result.runs if r.memory is not None]
    if not estimated:
        return []
    largest = max(estimated, key=lambda r: r.memory.total_gib)
    budget = result.memory_budget
    against = f"checked against {budget.name}: {budget.gib:g} GiB per GPU" if budget else \
        "not checked (add hardware: gpu: ... to check)"
    gpus = f" per GPU of {largest.memory.gpus}" if largest.memory.gpus > 1 else ""
    return [f"MEM: estimated peak GPU memory per device (Appendix H), {against}",
            f"largest, {largest.run_id}: {largest.memory.total_gib:.1f} GiB{gpus} = {largest.memory.summary()}"]


def _cell(value: object, width: int = 28) -> str:
    text = str(value).encode("unicode_escape").decode() if isinstance(value, str) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


COMMANDS = (ls_cmd, generate_cmd, validate_cmd, plan_cmd)
