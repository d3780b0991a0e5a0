"""The results command: ``collect``.

    $ torchtune-config-writer collect outputs/tiny_rank_lr
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("collect")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
def collect_cmd(experiment_dir: Path) -> None:
    """Write results.csv and results.md (names, parameters, status, steps, losses, tokens/s, wall time; with
    seeds, mean ± std per configuration) and loss_curves.svg, and print results.md."""
    from ..results.collect import collect

    csv_path = collect(experiment_dir)
    click.echo(csv_path.with_suffix(".md").read_text(encoding="utf-8"))
    click.echo(f"wrote {csv_path} and {csv_path.with_suffix('.md')}")


COMMANDS = (collect_cmd,)
