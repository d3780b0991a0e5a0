import subprocess
import sys

import pytest

from torchtune_config_writer.compile import registry
from torchtune_config_writer.errors import BaseConfigNotFoundError


def test_builtin_config_resolves_to_the_file_tune_cp_copies():
    found = registry.find_config("llama3_2/1B_lora_single_device")
    assert found.recipe == "lora_finetune_single_device"
    assert found.path.is_file() and found.path.name == "1B_lora_single_device.yaml"


def test_registry_has_the_shipped_recipes_and_configs():
    names = [r.name for r in registry.recipes()]
    assert "full_finetune_distributed" in names and registry.recipe_info("full_finetune_distributed").supports_distributed
    assert len(registry.builtin_configs()) > 100


def test_unknown_config_lists_the_closest_names():
    with pytest.raises(BaseConfigNotFoundError) as e:
        registry.find_config("llama3_2/1B_lora_singel_device")
    assert "llama3_2/1B_lora_single_device" in str(e.value)


def test_registry_and_ls_do_not_import_torch():
    code = (
        "import sys; from torchtune_config_writer.compile import registry, schema;"
        "registry.builtin_configs(); from torchtune_config_writer.cli import main;"
        "assert 'torch' not in sys.modules and 'torchtune' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ls_cli_filters(tmp_path):
    out = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "ls", "qwen2_5/0.5B"],
                         capture_output=True, text=True, check=True).stdout
    assert "qwen2_5/0.5B_lora_single_device" in out and "llama3_2" not in out
