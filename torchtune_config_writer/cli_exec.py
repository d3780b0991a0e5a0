"""CLI commands that execute: ``run``, ``collect`` and ``demo``.

    $ torchtune-config-writer run outputs/tiny_rank_lr --runs 0-1 --parallel 2
    $ torchtune-config-writer collect outputs/tiny_rank_lr
    $ torchtune-config-writer demo --workdir demo_outputs

Registered on the main group in cli.py; user mistakes are ``ConfigWriterError``s,
which the group prints as one ``Error: ...`` line.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import click

from .errors import ConfigWriterError, ExperimentDirError


@click.command("run")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option("--runs", "runs", metavar="SPEC", default=None,
              help="Runs to run: indexes, ranges and run ids, e.g. '0-3,7', 'run_002' or 'all' (default all).")
@click.option("--parallel", type=int, default=1, show_default=True, metavar="N",
              help="Runs at a time (on one machine each run competes for the same cores).")
@click.option("--rerun-failed", is_flag=True, help="Run only the selected runs that failed or were cancelled.")
@click.option("--force", is_flag=True, help="Also run completed runs (and runs marked running) again.")
def run_cmd(experiment_dir: Path, runs: str | None, parallel: int, rerun_failed: bool, force: bool) -> None:
    """Run an experiment directory's configs locally with `tune run`, recording status/ and logs/.

    Completed runs are skipped. Ctrl-C stops the running runs and records them
    as cancelled. Exit code 1 when a run failed.
    """
    from .runner import run_experiment

    summary = run_experiment(experiment_dir, runs=runs, parallel=parallel, rerun_failed=rerun_failed,
                             force=force, echo=click.echo)
    sys.exit(summary.exit_code)


@click.command("collect")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
def collect_cmd(experiment_dir: Path) -> None:
    """Write results.csv and results.md (parameters, status, steps, losses, tokens/s, wall time) and print the table."""
    from .results import collect

    csv_path = collect(experiment_dir)
    click.echo(csv_path.with_suffix(".md").read_text())
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.md')}")


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo_outputs"), show_default=True,
              help="Where the tiny assets and the demo experiment go.")
@click.option("--parallel", type=int, default=2, show_default=True, metavar="N",
              help="Runs at a time (each gets its share of the cores).")
def demo_cmd(workdir: Path, parallel: int) -> None:
    """From nothing to a results table: build a tiny model, generate a 4-run sweep, run it on CPU, collect.

    Everything is built offline under WORKDIR (about a minute on 2 cores):
    WORKDIR/assets (tokenizer, weights, data, the example configs) and
    WORKDIR/experiment (the generated experiment directory).
    """
    from .assets import build_tiny_assets
    from .generator import generate_configs
    from .results import collect
    from .runner import run_experiment
    from .status import MAPPING_FILE

    t0 = time.monotonic()
    workdir = workdir.resolve()
    exp_dir = workdir / "experiment"
    # Only an experiment directory from an earlier demo is replaced, never another folder.
    if exp_dir.exists() and not (exp_dir / MAPPING_FILE).is_file():
        raise ExperimentDirError(f"{exp_dir} exists and is not an experiment directory; pick another --workdir")

    click.echo(f"1/4 building tiny assets in {workdir / 'assets'}")
    assets = build_tiny_assets(workdir / "assets")
    if exp_dir.exists():
        shutil.rmtree(exp_dir)
    click.echo(f"2/4 generating {assets.experiment} -> {exp_dir}")
    result = generate_configs(assets.experiment, output_dir=exp_dir)
    if not getattr(result, "ok", True):
        raise ConfigWriterError(f"the demo experiment failed validation; see {exp_dir / 'validation_report.txt'}")

    # `datasets` caches the JSON data set; keep that cache inside the demo's folder too.
    os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets_cache"))
    click.echo("3/4 running")
    summary = run_experiment(exp_dir, parallel=parallel, echo=click.echo)

    click.echo("4/4 collecting\n")
    csv_path = collect(exp_dir)
    click.echo(csv_path.with_suffix(".md").read_text())
    click.echo(f"experiment directory: {exp_dir}\ndemo took {time.monotonic() - t0:.0f} s")
    sys.exit(summary.exit_code)
