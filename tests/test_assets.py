"""The tiny offline assets: real tokenizer, real model weights, real data, usable configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchtune_config_writer.demo.assets import MODEL_DIMS, NUM_RECORDS, PLACEHOLDER, VOCAB_SIZE, build_tiny_assets
from torchtune_config_writer.errors import ConfigWriterError


def test_tokenizer_loads_in_torchtune_and_round_trips_unseen_text(tiny_assets):
    from torchtune.models.llama2 import llama2_tokenizer

    tok = llama2_tokenizer(str(tiny_assets.tokenizer))
    assert tok.vocab_size == VOCAB_SIZE
    text = "the cat reads old books — naïve ✓"  # characters not in the training text: byte fallback
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id == 1 and ids[-1] == tok.eos_id == 2
    assert max(ids) < VOCAB_SIZE
    assert tok.decode(ids) == text


def test_weights_load_into_llama2_and_lora_llama2(tiny_assets):
    import torch
    from torchtune.models.llama2 import llama2, lora_llama2

    state = torch.load(tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file, weights_only=True)
    llama2(vocab_size=VOCAB_SIZE, **MODEL_DIMS).load_state_dict(state, strict=True)

    lora = lora_llama2(["q_proj", "v_proj"], vocab_size=VOCAB_SIZE, lora_rank=4, lora_alpha=8, **MODEL_DIMS)
    missing, unexpected = lora.load_state_dict(state, strict=False)
    assert not unexpected
    assert missing and all("lora_" in k for k in missing)  # only the adapters are new
    # Only the weights live in checkpoint_dir: torchtune copies anything else into every epoch dir.
    assert [p.name for p in tiny_assets.checkpoint_dir.iterdir()] == [tiny_assets.checkpoint_file]


def test_dataset_is_alpaca_shaped(tiny_assets):
    records = json.loads(tiny_assets.data_file.read_text())
    assert len(records) == NUM_RECORDS
    assert all(set(r) == {"instruction", "input", "output"} and r["output"] for r in records)


def test_configs_point_at_the_built_files(tiny_assets):
    from omegaconf import OmegaConf

    text = tiny_assets.base_config.read_text()
    assert PLACEHOLDER not in text
    assert "# Model Arguments" in text  # comments survive (they are copied into generated configs)
    cfg = OmegaConf.load(tiny_assets.base_config)
    assert Path(cfg.tokenizer.path) == tiny_assets.tokenizer
    assert Path(cfg.checkpointer.checkpoint_dir) == tiny_assets.checkpoint_dir
    assert Path(cfg.dataset.data_files) == tiny_assets.data_file
    assert cfg.model.vocab_size == VOCAB_SIZE and cfg.model.embed_dim == MODEL_DIMS["embed_dim"]
    experiment = OmegaConf.load(tiny_assets.experiment)
    assert (tiny_assets.experiment.parent / experiment.base_config_file) == tiny_assets.base_config


def test_second_build_reuses_everything(tiny_assets):
    files = [tiny_assets.tokenizer, tiny_assets.checkpoint_dir / tiny_assets.checkpoint_file,
             tiny_assets.data_file, tiny_assets.base_config, tiny_assets.experiment]
    before = {f: f.stat().st_mtime_ns for f in files}
    again = build_tiny_assets(tiny_assets.root)
    assert again == tiny_assets
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_build_is_deterministic(tiny_assets, tmp_path):
    import torch

    other = build_tiny_assets(tmp_path / "other")
    assert other.data_file.read_bytes() == tiny_assets.data_file.read_bytes()
    assert other.tokenizer.read_bytes() == tiny_assets.tokenizer.read_bytes()
    a = torch.load(tiny_assets.checkpoint_dir / "model.pt", weights_only=True)
    b = torch.load(other.checkpoint_dir / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_example_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigWriterError, match="tiny_lora_cpu.yaml.*reinstall the package"):
        build_tiny_assets(tmp_path / "a", example_dir=tmp_path / "nowhere")


def test_the_tiny_example_ships_inside_the_package():
    # a pip-installed package has no example_configs/: the demo must find its files in the package
    from pathlib import Path

    from torchtune_config_writer.demo import assets

    root = Path(assets.__file__).parent
    assert assets.EXAMPLE_DIR == root / "tiny"
    package_data = re.search(r"\[tool.setuptools.package-data\]\n(.*)\n", (root.parent.parent / "pyproject.toml").read_text())
    assert '"demo/tiny/*.yaml"' in package_data.group(1)
    for name in ("tiny_lora_cpu.yaml", "experiment.yaml"):
        assert (root / "tiny" / name).is_file()
        # example_configs/tiny shows the same files to readers of the repository
        assert (root.parent.parent / "example_configs" / "tiny" / name).read_text() == (root / "tiny" / name).read_text()
