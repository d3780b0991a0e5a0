"""The layout's promises: which side imports which, and what the light commands never load.

``lint-imports`` checks the contracts in pyproject.toml statically (every import
in every module, lazy ones included); the subprocess tests check at run time
that ``status``, ``collect``, ``submit --dry-run`` and ``ls`` load neither
torch, torchtune nor pydantic, and that ``init`` and ``schema`` (which need
pydantic, the schema's source) load neither torch nor torchtune.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.expdir import load_mapping

HEAVY = ("torch", "torchtune", "pydantic", "omegaconf")

# Runs the CLI in a fresh interpreter and reports which heavy packages it loaded.
_DRIVER = """
import json, sys
from torchtune_config_writer.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit as e:
    if e.code:
        raise
print("LOADED " + json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (HEAVY,)


def _loaded(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED "))
    return json.loads(line[len("LOADED "):])


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 kept, 0 broken" in proc.stdout


@pytest.fixture
def experiment_dir(make_experiment_dir) -> Path:
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    sbatch.write_submit_scripts(exp, load_mapping(exp), SlurmSettings(gpus_per_run=0))
    return exp


@pytest.mark.parametrize("command", ["status", "collect", "submit --dry-run"])
def test_reading_commands_load_no_torch_torchtune_or_pydantic(experiment_dir, command):
    assert _loaded(*command.split(), str(experiment_dir)) == []


def test_ls_loads_no_torch_torchtune_or_pydantic():
    assert _loaded("ls", "llama3_2") == []


@pytest.mark.parametrize("command", ["init", "schema"])
def test_authoring_commands_load_no_torch_or_torchtune(tmp_path, command):
    target = tmp_path / ("experiment.yaml" if command == "init" else "experiment.schema.json")
    loaded = _loaded(command, "-o", str(target))
    assert target.is_file()
    assert not {"torch", "torchtune"} & set(loaded), loaded
