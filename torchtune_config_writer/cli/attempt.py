"""The hidden ``attempt`` command: write a run's next attempt (compile side), for the execute side to call.

The execute side may not import the compile side, so a SLURM task, ``submit
--retry-oom`` and ``run`` start ``python -m torchtune_config_writer attempt DIR
INDEX --after N`` when a run ran out of memory, and quote its ``Error:`` line
when it refuses.

    $ torchtune-config-writer attempt outputs/sweep 3 --after 1
    run_003 attempt 2: configs/run_003.attempt_2.yaml (batch_size 8 -> 4, gradient_accumulation_steps 1 -> 2; ...)
"""

from __future__ import annotations

import click


@click.command("attempt", hidden=True)
@click.argument("experiment_dir", type=click.Path(file_okay=False))
@click.argument("index", type=int)
@click.option("--after", type=int, default=None, metavar="N",
              help="The attempt that failed; nothing is written when the run is at another attempt already.")
@click.option("--reason", type=click.Choice(["oom"]), default="oom", show_default=True,
              help="Why the run is tried again (oom: it ran out of memory).")
@click.option("--dry-run", is_flag=True, help="Validate and describe the attempt; write and record nothing.")
def attempt_cmd(experiment_dir: str, index: int, after: int | None, reason: str, dry_run: bool) -> None:
    """Write the next attempt of run INDEX: half its batch size, twice its gradient accumulation, validated,
    as configs/run_NNN.attempt_K.yaml, recorded in run_mapping.yaml."""
    from ..compile.attempts import describe, write_attempt
    from ..expdir import load_mapping

    attempt = write_attempt(experiment_dir, index, after=after, reason=reason, dry_run=dry_run)
    run = load_mapping(experiment_dir).by_index[index]
    click.echo(("(dry run, not written) " if dry_run else "") + describe(run, attempt))


COMMANDS = (attempt_cmd,)
