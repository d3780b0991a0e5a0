"""Small helpers shared by the compiler tests."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

LORA_1B = "llama3_2/1B_lora_single_device"


def write_experiment(tmp_path: Path, body: str, name: str = "experiment.yaml") -> Path:
    """Write an experiment file and return its path."""
    path = tmp_path / name
    path.write_text(body)
    return path


def read_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text())
