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
def ls_cmd(pattern: str | None) -> None:
    """List torchtune recipes and their configs (PATTERN filters, e.g. 'llama3_2' or '*lora*')."""
    import fnmatch

    from ..compile import registry

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
def validate_cmd(experiment: str) -> None:
    """Check EXPERIMENT end to end, torchtune validation included, writing nothing."""
    from ..compile.compiler import generate_configs

    _report(lambda: generate_configs(experiment, write=False), write=False)


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
    from ..expdir import MAPPING_FILE, REPORT_FILE, SCRIPT_FILE, Validation, format_parameters

    runs = result.runs
    click.echo(f"✓ Loaded base config: {result.base} (recipe {result.recipe})")
    verb = "Generated" if write else "Compiled"
    click.echo(f"✓ {verb} {len(runs)} config{'s' if len(runs) != 1 else ''}" + (f" in {result.experiment_dir / 'configs'}" if write else ""))
    shown = runs if len(runs) <= 50 else runs[:20] + [None] + runs[-5:]
    for run in shown:
        if run is None:
            click.echo(f"  ... {len(runs) - 25} more ...")
            continue
        mark = "✗" if run.validation == Validation.FAILED else "-"
        click.echo(f"  {mark} configs/{run.run_id}.yaml ({format_parameters(run.labels) or 'no variables'})")
        for problem in run.problems:
            click.echo(f"      {problem}")
    if not result.validated:
        click.echo("! Validation skipped: these runs are marked unvalidated and `run`/`submit` will refuse them")
    elif result.ok:
        click.echo(f"✓ Validated {len(runs)} config{'s' if len(runs) != 1 else ''}: all passed")
    for note in result.notes:
        click.echo(f"✓ {note}")
    if result.warnings:
        lines = summarize_warnings(result.warnings, len(runs))
        click.echo(f"! {len(lines)} warning{'s' if len(lines) != 1 else ''}: input files not found on this machine "
                   "(fine if the runs will see them elsewhere)")
        for line in lines:
            click.echo(f"    {line}")
    if write and result.written:
        script = f", {SCRIPT_FILE}" if (result.experiment_dir / SCRIPT_FILE).exists() else ""
        click.echo(f"✓ Wrote {MAPPING_FILE}, {REPORT_FILE}, experiment.yaml{script}")


COMMANDS = (ls_cmd, generate_cmd, validate_cmd)
