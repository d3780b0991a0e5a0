"""Compile experiment.yaml files (variables and controls) into validated torchtune configs, and run them.

The package has two halves that meet only in the experiment directory:
``compile/`` (experiment.yaml → experiment directory) and ``execute/`` plus
``results/`` (experiment directory → runs → results), both through the
contract in ``expdir.py``. ``cli/`` is the command line, ``demo/`` the tiny
offline model that lets everything run on a CPU.

    >>> from torchtune_config_writer import generate_configs
    >>> result = generate_configs("experiment.yaml")          # doctest: +SKIP
    >>> [run.run_id for run in result.runs]                    # doctest: +SKIP
    ['run_000', 'run_001']
"""

__version__ = "0.1.0"

from .errors import *  # noqa: F401,F403  (the documented error hierarchy)


def __getattr__(name: str):
    # The API is loaded on first use so that `import torchtune_config_writer` stays cheap.
    if name in ("generate_configs", "GenerationResult", "RunResult"):
        from .compile import compiler

        return getattr(compiler, name)
    raise AttributeError(name)
