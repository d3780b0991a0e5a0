"""The ``demo`` command: both halves end to end, on a tiny model built offline, on a CPU.

    $ torchtune-config-writer demo --workdir demo_outputs
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import click

from ..errors import ConfigWriterError, ExperimentDirError


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo_outputs"), show_default=True,
              help="Where the tiny assets and the demo experiment go.")
@click.option("--parallel", type=int, default=2, show_default=True, metavar="N",
              help="Runs at a time (each gets its share of the cores).")
def demo_cmd(workdir: Path, parallel: int) -> None:
    """From nothing to scored results: build a tiny model and a counting task, generate a 4-run study,
    train and evaluate every run on CPU, collect.

    Everything is built offline under WORKDIR (a few minutes on 2 cores):
    WORKDIR/assets (tokenizer, weights, data, the evaluation task, the example configs) and
    WORKDIR/experiment (the generated experiment directory: configs, eval configs, results and plots).
    """
    from ..compile.compiler import generate_configs
    from ..demo.assets import build_tiny_assets
    from ..execute.runner import run_experiment
    from ..expdir import LOSS_PLOT, MAPPING_FILE, METRIC_PLOT, REPORT_FILE
    from ..results.collect import collect

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
    click.echo(f"2/4 generating {assets.count_study} -> {exp_dir}")
    result = generate_configs(assets.count_study, output_dir=exp_dir)
    if not getattr(result, "ok", True):
        raise ConfigWriterError(f"the demo experiment failed validation; see {exp_dir / REPORT_FILE}")

    # `datasets` caches the JSON data set; keep that cache inside the demo's folder too.
    os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets_cache"))
    for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # the evaluators must never try to download
        os.environ.setdefault(offline, "1")
    click.echo("3/4 training, and evaluating each run as soon as it has trained")
    summary = run_experiment(exp_dir, parallel=parallel, echo=click.echo)

    click.echo("4/4 collecting\n")
    csv_path = collect(exp_dir)
    click.echo(csv_path.with_suffix(".md").read_text())
    for plot in (METRIC_PLOT, LOSS_PLOT):
        if (exp_dir / plot).is_file():
            click.echo(f"plot: {exp_dir / plot}")
    click.echo(f"experiment directory: {exp_dir}\ndemo took {time.monotonic() - t0:.0f} s")
    sys.exit(summary.exit_code)


COMMANDS = (demo_cmd,)
