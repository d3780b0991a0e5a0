"""Load the base config an experiment starts from, comments and key order intact.

    >>> from torchtune_config_writer.compile.schema import load_experiment
    >>> base = load_base_config(load_experiment({"experiment_name": "x",
    ...     "base_config": "llama3_2/1B_lora_single_device"}))
    >>> base.recipe, base.data["model"]["lora_rank"]
    ('lora_finetune_single_device', 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from . import registry
from ..errors import BaseConfigNotFoundError, ExperimentSchemaError, did_you_mean
from ..expdir import is_recipe_file
from .schema import Experiment, parse_yaml


@dataclass
class BaseConfig:
    data: CommentedMap
    """The round-trip tree (comments, order and number formats kept)."""
    recipe: str
    """The recipe that runs it: a registry name or a path to a recipe .py file."""
    path: Path
    """The file it was read from."""
    name: str | None
    """Registry name for a built-in config, None for a user file."""

    @property
    def distributed(self) -> bool:
        """True when the recipe must be launched through torchrun.

        The registry says so for torchtune's recipes. A recipe file is distributed
        when it calls ``init_process_group``, as every distributed torchtune recipe
        does and no single-device one does.
        """
        if is_recipe_file(self.recipe):
            return calls_init_process_group(Path(self.recipe))
        info = registry.recipe_info(self.recipe)
        return bool(info and info.supports_distributed)


def calls_init_process_group(recipe_file: Path) -> bool:
    """True when the Python file calls ``init_process_group`` (``dist.init_process_group(...)`` or bare)."""
    import ast

    try:
        tree = ast.parse(recipe_file.read_text(), str(recipe_file))
    except (OSError, SyntaxError, ValueError) as e:
        raise ExperimentSchemaError(f"recipe file '{recipe_file}' cannot be read as Python: {e}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name == "init_process_group":
                return True
    return False


def load_base_config(exp: Experiment) -> BaseConfig:
    """Resolve and read ``exp.base_config`` (a torchtune name) or ``exp.base_config_file``."""
    if exp.base_config:
        found = registry.find_config(exp.base_config)
        recipe = _check_builtin_recipe(found, exp.recipe)
        return BaseConfig(_read(found.path), recipe, found.path, found.name)
    path = Path(exp.base_config_file)
    if not path.is_file():
        siblings = [p.name for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        hint = did_you_mean(path.name, siblings, n=1, show=lambda m: str(path.parent / m))
        msg = f"base_config_file '{path}' not found"
        if hint:
            msg += f".{hint}"
        elif not path.parent.is_dir():
            msg += f" (directory '{path.parent}' does not exist)."
        else:
            msg += "."
        msg += " A relative path is relative to the experiment file."
        raise BaseConfigNotFoundError(msg)
    return BaseConfig(_read(path), _check_custom_recipe(exp.recipe, exp), path.resolve(), None)


def _read(path: Path) -> CommentedMap:
    data = parse_yaml(path.read_text(), str(path))
    if not isinstance(data, CommentedMap):
        raise ExperimentSchemaError(f"{path}: a torchtune config must be a mapping of keys at the top level")
    return data


def _check_builtin_recipe(found: registry.BuiltinConfig, recipe: str | None) -> str:
    if recipe is None:
        return found.recipe
    allowed = registry.recipes_for_config(found.name)
    if recipe not in allowed:
        raise ExperimentSchemaError(
            f"recipe '{recipe}' does not run config '{found.name}'; it is run by: {', '.join(allowed)}. "
            "Remove `recipe` to use the registry's recipe, or fix it."
        )
    return recipe


def _check_custom_recipe(recipe: str, exp: Experiment) -> str:
    if is_recipe_file(recipe):
        path = Path(recipe) if Path(recipe).is_absolute() else exp.base_dir / recipe
        if not path.is_file():
            raise ExperimentSchemaError(f"recipe file '{path}' not found (a relative path is relative to the experiment file)")
        return str(path.resolve())
    names = [r.name for r in registry.recipes()]
    if recipe not in names:
        raise ExperimentSchemaError(
            f"recipe '{recipe}' is not a torchtune recipe."
            + did_you_mean(recipe, names, n=1)
            + " Run `torchtune-config-writer ls` for the list, or give a path to your recipe .py file."
        )
    return recipe
