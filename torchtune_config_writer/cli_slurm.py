"""The SLURM commands: ``submit``, ``status`` and the hidden ``task`` each array task runs.

Thin click wrappers over ``slurm.py`` (and ``runner.run_one`` for ``task``);
registered on the main group in ``cli.py``. Imports stay lazy so that
``torchtune-config-writer --help`` does not pay for them.

    $ torchtune-config-writer submit outputs/tiny_rank_lr --dry-run
    $ torchtune-config-writer submit outputs/tiny_rank_lr --failed
    $ torchtune-config-writer status outputs/tiny_rank_lr
"""

from __future__ import annotations

import sys

import click


@click.command("submit")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--runs", "runs", metavar="SPEC", help="Submit only these runs: '0-3,7', 'run_002' or 'all'.")
@click.option("--failed", is_flag=True, help="Submit only runs that failed or were cancelled (within --runs).")
@click.option("--dry-run", is_flag=True, help="Print the sbatch commands; submit nothing.")
@click.option("--force", is_flag=True, help="Also submit completed runs (training them again overwrites their outputs).")
def submit_cmd(experiment_dir: str, runs: str | None, failed: bool, dry_run: bool, force: bool) -> None:
    """Submit the runs of EXPERIMENT_DIR as a SLURM job array (submit.sbatch).

    Only validated, unchanged configs are submitted, and completed runs only with
    --force; job ids are appended to slurm_jobs.yaml. `status` shows how the runs are doing.
    """
    from . import slurm

    arrays = slurm.submit(experiment_dir, runs, failed=failed, dry_run=dry_run, force=force, echo=click.echo)
    if arrays and not dry_run:
        click.echo(f"follow them with: torchtune-config-writer status {experiment_dir}")


@click.command("status")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--no-slurm", is_flag=True, help="Read the status records only; do not ask squeue.")
def status_cmd(experiment_dir: str, no_slurm: bool) -> None:
    """Show every run of EXPERIMENT_DIR: parameters, state, exit code, wall time, SLURM job.

    States come from the runs' status records; for submitted runs squeue adds
    what the records cannot know (PENDING, RUNNING, CANCELLED before start, TIMEOUT).
    """
    import shutil

    from . import slurm
    from .status import load_mapping

    mapping = load_mapping(experiment_dir)
    jobs = slurm.submitted_job_ids(experiment_dir, mapping)
    note, live = "", None
    if jobs and not no_slurm:
        if shutil.which("squeue") is None:
            note = "(squeue is not on PATH: states of submitted runs are from their status records only)"
        else:
            live = slurm.query_tasks(jobs)
            if live is None:
                note = "(squeue failed: states of submitted runs are from their status records only)"
    states = slurm.run_states(experiment_dir, mapping, use_slurm=False, live=live)
    click.echo(slurm.format_status(states, mapping.get("variables"), note))


@click.command("task", hidden=True)
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.argument("index", type=int)
def task_cmd(experiment_dir: str, index: int) -> None:
    """Run one run (by index) and exit with its exit code; what each SLURM array task executes."""
    import os

    from .runner import run_one
    from .status import FORCE_ENV

    sys.exit(run_one(experiment_dir, index, force=os.environ.get(FORCE_ENV) == "1"))


COMMANDS = (submit_cmd, status_cmd, task_cmd)
