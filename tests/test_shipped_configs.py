"""Every config torchtune ships and accepts passes a plain sweep: the checks refuse nothing torchtune would run."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from torchtune_config_writer import generate_configs
from torchtune_config_writer.compile import registry
from torchtune_config_writer.compile.components import import_torchtune

SHIPPED = [(r.name, c) for r in registry.recipes() for c in r.configs]


def torchtune_refusal(path) -> str | None:
    """Why torchtune's own ``config.validate`` refuses the file as shipped (the vision configs need torchvision)."""
    if not path.is_file():
        return "listed in the registry, but not shipped"
    tt = import_torchtune()
    try:
        tt.config.validate(OmegaConf.load(path))
    except Exception as e:
        return f"torchtune refuses it here: {str(e).splitlines()[0][:200]}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("recipe, name", SHIPPED, ids=[f"{r}:{c}" for r, c in SHIPPED])
def test_every_shipped_config_that_torchtune_accepts_passes_a_plain_sweep(recipe, name, tmp_path):
    found = registry.builtin_configs()[name]
    refusal = torchtune_refusal(found.path)
    if refusal:
        pytest.skip(refusal)
    text = found.path.read_text()
    # a plain sweep of the one setting every training config has; eval and generation configs get two seeds
    variables = {"epochs": [1, 2]} if "\nepochs:" in text else {"+seed": [1, 2]} if "\nseed:" not in text else {"seed": [1, 2]}
    exp = {"experiment_name": "shipped", "base_config": name, "recipe": recipe, "variables": variables}
    result = generate_configs(exp, output_dir=tmp_path / "exp", write=False, strict=False)
    assert result.problems == [], "\n".join(map(str, result.problems))
    assert len(result.runs) == 2
