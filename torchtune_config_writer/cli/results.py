"""The results command: ``collect``.

    $ torchtune-config-writer collect outputs/tiny_rank_lr
    $ torchtune-config-writer collect outputs/tiny_rank_lr --metric heldout_loss
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("collect")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option("--metric", default=None, metavar="NAME",
              help="Rank runs and compare values by this results.csv column (count_mc/acc, heldout_loss, "
                   "final_loss...) instead of the evaluation's primary_metric.")
@click.option("--goal", type=click.Choice(["max", "min"]), default=None,
              help="Whether higher (max) or lower (min) is better for the primary metric; default: the "
                   "evaluation's goal, else from its name (losses and perplexities: min).")
def collect_cmd(experiment_dir: Path, metric: str | None, goal: str | None) -> None:
    """Write results.csv and results.md (names, parameters, status, steps, losses, tokens/s, wall time, evaluation
    metrics; with seeds, mean ± std per configuration; per variable, by the primary metric), loss_curves.svg and
    metric_by_variable.svg, and print results.md."""
    from ..expdir import LOSS_PLOT, METRIC_PLOT
    from ..results.collect import collect

    csv_path = collect(experiment_dir, metric=metric, goal=goal)
    md = csv_path.with_suffix(".md").read_text(encoding="utf-8")
    click.echo(md)
    plots = [csv_path.parent / name for name in (METRIC_PLOT, LOSS_PLOT) if f"]({name})" in md]  # this collect's
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.md')}" + "".join(f", {p}" for p in plots))


COMMANDS = (collect_cmd,)
