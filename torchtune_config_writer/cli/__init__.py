"""The command line: a thin click layer over the library, one module per side.

    compile.py   generate, validate, ls
    authoring.py init, schema: a starter experiment.yaml, and its JSON Schema for editors
    execute.py   run, submit, status, cancel (and the hidden per-task ``task``)
    attempt.py   the hidden ``attempt``: a run's next attempt after it ran out of memory
    results.py   collect
    demo.py      demo: all of it on a tiny model, on a CPU

Every ``ConfigWriterError`` becomes its message on stderr and exit code 1.
Commands import what they need when they run, so that ``--help``, ``ls``,
``status`` and ``collect`` never load torch, torchtune or pydantic.
"""

from __future__ import annotations

import sys

import click

from ..errors import ConfigWriterError


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


def _register() -> None:
    from . import attempt, authoring, compile, demo, execute, results

    for module in (compile, authoring, execute, results, demo, attempt):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
