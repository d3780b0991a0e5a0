"""The execute-side commands: ``run``, ``submit``, ``status``, ``cancel`` and the hidden ``task`` each array task runs.

    $ torchtune-config-writer run outputs/tiny_rank_lr --runs 0-1 --parallel 2
    $ torchtune-config-writer submit outputs/tiny_rank_lr --dry-run
    $ torchtune-config-writer submit outputs/tiny_rank_lr --failed
    $ torchtune-config-writer submit outputs/tiny_rank_lr --eval-only
    $ torchtune-config-writer status outputs/tiny_rank_lr --watch
    $ torchtune-config-writer cancel outputs/tiny_rank_lr --runs 3-5
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("run")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option("--runs", "runs", metavar="SPEC", default=None,
              help="Runs to run: indexes, ranges and run ids, e.g. '0-3,7', 'run_002' or 'all' (default all).")
@click.option("--parallel", type=int, default=1, show_default=True, metavar="N",
              help="Runs at a time (on one machine each run competes for the same cores).")
@click.option("--rerun-failed", is_flag=True, help="Run only the selected runs that failed or were cancelled.")
@click.option("--force", is_flag=True, help="Also run completed runs (and runs marked running) again; with "
              "--eval-only, evaluate again what already has results.")
@click.option("--eval-only", is_flag=True, help="Train nothing: evaluate the selected runs whose training completed "
              "and whose evaluation did not.")
def run_cmd(experiment_dir: Path, runs: str | None, parallel: int, rerun_failed: bool, force: bool,
            eval_only: bool) -> None:
    """Run an experiment directory's configs locally, recording status/ and logs/; each run is evaluated
    right after it completes when the experiment has an evaluation: section.

    Completed runs are skipped. Ctrl-C stops the running runs and records them
    as cancelled. Exit code 1 when a run or an evaluation failed.
    """
    from ..execute.runner import run_experiment

    if eval_only and rerun_failed:
        raise click.UsageError("--eval-only trains nothing, so --rerun-failed has no runs to rerun; use one of them")
    summary = run_experiment(experiment_dir, runs=runs, parallel=parallel, rerun_failed=rerun_failed,
                             force=force, eval_only=eval_only, echo=click.echo)
    sys.exit(summary.exit_code)


@click.command("submit")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--runs", "runs", metavar="SPEC", help="Submit only these runs: '0-3,7', 'run_002' or 'all'.")
@click.option("--failed", is_flag=True,
              help="Submit only what failed or was cancelled (within --runs): runs whose training failed are "
                   "trained and evaluated again; runs whose training completed but whose evaluation failed are "
                   "only evaluated again.")
@click.option("--eval-only", is_flag=True,
              help="Only evaluate: runs whose training completed and whose evaluation did not (with --force: "
                   "completed evaluations too).")
@click.option("--dry-run", is_flag=True, help="Print the sbatch commands; submit nothing (needs no cluster).")
@click.option("--force", is_flag=True,
              help="Also submit completed runs (training them again overwrites their outputs); with --eval-only, "
                   "evaluate completed evaluations again.")
@click.option("--time", "time_limit", metavar="HH:MM:SS",
              help="Time limit of the training tasks of this submission (overrides slurm.time, auto included).")
@click.option("--evidence", multiple=True, metavar="DIR", type=click.Path(file_okay=False),
              help="With slurm.time: auto, also measure throughput on the completed runs of this experiment "
                   "directory (repeatable; sibling directories are always searched).")
@click.option("--retry-oom", is_flag=True,
              help="Submit the selected runs whose latest attempt ran out of memory, each as its next attempt: "
                   "half the batch size, twice the gradient accumulation (at most oom_retry.max_attempts "
                   "attempts, 3 without it); with --failed, the other failed runs as they are too.")
def submit_cmd(experiment_dir: str, runs: str | None, failed: bool, eval_only: bool, dry_run: bool,
               force: bool, time_limit: str | None, evidence: tuple[str, ...], retry_oom: bool) -> None:
    """Submit the runs of EXPERIMENT_DIR as a SLURM job array (submit.sbatch).

    When the runs are evaluated, each training array gets an evaluation array
    (eval.sbatch) whose task i starts as soon as training task i completed,
    and is cancelled by SLURM when it failed. Only validated, unchanged configs
    are submitted, and completed runs only with --force; job ids are appended
    to slurm_jobs.yaml. `status` shows how the runs are doing.
    """
    from ..execute.submit import submit

    if retry_oom and eval_only:
        raise click.UsageError("--retry-oom trains runs again and --eval-only trains nothing; use one of them")
    arrays = submit(experiment_dir, runs, failed=failed, eval_only=eval_only, dry_run=dry_run, force=force,
                    echo=click.echo, note=lambda line: click.echo(line, err=True), time=time_limit, evidence=evidence,
                    retry_oom=retry_oom)
    if arrays and not dry_run:
        click.echo(f"follow them with: torchtune-config-writer status {experiment_dir}")


@click.command("status")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--no-slurm", is_flag=True, help="Read the status records only; do not ask squeue.")
@click.option("--watch", is_flag=True,
              help="Redraw until no run or evaluation is queued or running: progress bars in a terminal, else one "
                   "line per run whose state or step changed, and the table at the end. Ctrl-C stops watching.")
@click.option("--interval", type=click.FloatRange(min=1), default=10, show_default=True, metavar="S",
              help="With --watch: seconds between looks (each asks squeue once).")
def status_cmd(experiment_dir: str, no_slurm: bool, watch: bool, interval: float) -> None:
    """Show every run of EXPERIMENT_DIR: name (if named), parameters, state, exit code, wall time, SLURM job,
    and its evaluation (EVAL) when runs are evaluated; for running runs, the step reached of all
    (STEP), the latest loss and an ETA, from their metric logs.

    States come from the runs' status records; for submitted runs squeue adds
    what the records cannot know (PENDING, RUNNING, CANCELLED before start, TIMEOUT),
    and sacct how the tasks squeue has forgotten ended (recorded in their records).
    """
    from ..execute import progress, slurm_state
    from ..expdir import load_mapping

    mapping = load_mapping(experiment_dir)

    def snapshot() -> tuple[list, dict, str]:
        states, note = slurm_state.status_of(experiment_dir, mapping, use_slurm=not no_slurm)
        running = progress.of_running(experiment_dir, mapping, states)
        return states, running, slurm_state.format_status(states, mapping.variables, note, progress=running)

    if not watch:
        click.echo(snapshot()[2])
        return
    try:
        progress.watch(experiment_dir, snapshot, interval=interval, out=click.get_text_stream("stdout"))
    except KeyboardInterrupt:
        click.echo("\nstopped watching (the runs go on)", err=True)


@click.command("cancel")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--runs", "runs", metavar="SPEC", help="Cancel only these runs: '0-3,7', 'run_002' or 'all'.")
@click.option("--wait", type=click.FloatRange(min=0), default=15, show_default=True, metavar="S",
              help="Seconds a running task gets to record its own cancellation before cancel records it.")
def cancel_cmd(experiment_dir: str, runs: str | None, wait: float) -> None:
    """Cancel the queued and running SLURM tasks (training and evaluation) of the runs of EXPERIMENT_DIR
    (or of --runs) and record them as cancelled; runs still waiting to be submitted (slurm.max_submit)
    are withdrawn. Completed runs are left alone. `submit --failed` submits them again.
    """
    from ..execute.cancel import cancel

    report = cancel(experiment_dir, runs, wait=wait, echo=lambda line: click.echo(line, err=True))
    click.echo(report.text())


@click.command("task", hidden=True)
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=str))
@click.argument("index", type=int)
@click.option("--eval", "evaluation", is_flag=True,
              help="Evaluate the run (its training must have completed) instead of training it.")
def task_cmd(experiment_dir: str, index: int, evaluation: bool) -> None:
    """Run one run (by index), or with --eval evaluate it, and exit with its exit code; what each SLURM
    array task executes (submit.sbatch runs `task DIR INDEX`, eval.sbatch `task --eval DIR INDEX`)."""
    import os

    from ..expdir import FORCE_ENV

    force = os.environ.get(FORCE_ENV) == "1"  # set by `submit --force`
    try:
        if evaluation:
            from ..execute.runner import run_eval_one

            sys.exit(run_eval_one(experiment_dir, index, force=force))
        from ..execute.runner import run_one

        code = run_one(experiment_dir, index, force=force)
        if code != 0:  # out of memory, with oom_retry: write the next attempt and submit the run again
            from ..execute.oom import after_task

            after_task(experiment_dir, index, code, echo=click.echo)
        sys.exit(code)
    finally:
        # Last, even when the run failed or was refused: under slurm.max_submit the ending task submits
        # the next queued tasks (a no-op without a queue; never raises, so the exit code above stands).
        from ..execute import feed

        feed.after_task(experiment_dir)


COMMANDS = (run_cmd, submit_cmd, status_cmd, cancel_cmd, task_cmd)
