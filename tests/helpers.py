"""Small helpers shared by the compiler tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from click.testing import CliRunner, Result

from torchtune_config_writer import expdir
from torchtune_config_writer.cli import main

LORA_1B = "llama3_2/1B_lora_single_device"


def run_table(n: int, slurm: expdir.SlurmPlan | None = None, name: str = "demo") -> expdir.RunMapping:
    """A run table of ``n`` runs (run_000 ...), for tests of what reads run_mapping.yaml."""
    runs = tuple(expdir.RunEntry(expdir.run_id(i), i, expdir.config_file(expdir.run_id(i)), "0" * 64, f"/o/{i}", {},
                                 expdir.Validation.PASSED, None) for i in range(n))
    return expdir.RunMapping(name, "lora_finetune_single_device", False, None, "/base.yaml", "2026-01-01T00:00:00",
                             "test", (), expdir.Validation.PASSED, slurm or expdir.SlurmPlan(), runs)


def write_experiment(tmp_path: Path, body: str, name: str = "experiment.yaml") -> Path:
    """Write an experiment file and return its path."""
    path = tmp_path / name
    path.write_text(body)
    return path


def custom_recipe(directory: Path) -> Path:
    """A user's own recipe file: a copy of torchtune's single-device LoRA recipe, outside any package."""
    import shutil

    from torchtune_config_writer.compile import registry

    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(registry.configs_dir().parent / "lora_finetune_single_device.py", directory / "my_recipe.py"))


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process; returns click's Result (stdout, stderr, exit_code)."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 300.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
    return value
