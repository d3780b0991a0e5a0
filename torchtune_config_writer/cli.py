"""The command line: a thin click layer over the library.

Every ``ConfigWriterError`` becomes its message on stderr and exit code 1.
"""

from __future__ import annotations

import sys

import click

from .errors import ConfigWriterError


class _Group(click.Group):
    """Turns user errors into one clean message instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigWriterError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchtune_config_writer")
def main() -> None:
    """Compile experiment.yaml sweeps into validated torchtune configs, run them, collect results."""


@main.command("ls")
@click.argument("pattern", required=False)
def ls_cmd(pattern: str | None) -> None:
    """List torchtune recipes and their configs (PATTERN filters, e.g. 'llama3_2' or '*lora*')."""
    import fnmatch

    from . import registry

    glob = pattern if pattern and any(c in pattern for c in "*?[") else f"*{pattern or ''}*"
    shown = 0
    click.echo(f"{'RECIPE':<40} CONFIG")
    for r in registry.recipes():
        names = [c for c in r.configs if fnmatch.fnmatch(c, glob)]
        if not names and not fnmatch.fnmatch(r.name, glob):
            continue
        for i, c in enumerate(names or ["-"]):
            click.echo(f"{r.name if i == 0 else '':<40} {c}")
            shown += 1
    if not shown:
        raise ConfigWriterError(f"nothing matches '{pattern}'; run `torchtune-config-writer ls` to see every config")


# Commands defined in other modules register here.
