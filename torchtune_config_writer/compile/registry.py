"""torchtune's recipe registry, read without importing torchtune.

``import torchtune`` costs seconds (it imports torch); the registry is a plain
module of dataclasses, so we load that one file by path. Config files live in
``site-packages/recipes/configs`` — the same files ``tune cp`` copies.

    >>> find_config("llama3_2/1B_lora_single_device").recipe
    'lora_finetune_single_device'
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePath

from ..errors import BaseConfigNotFoundError, ConfigWriterError, close_matches


@dataclass(frozen=True)
class BuiltinConfig:
    name: str
    """Registry name, e.g. ``llama3_2/1B_lora_single_device``."""
    recipe: str
    """Recipe that runs it, e.g. ``lora_finetune_single_device``."""
    path: Path
    """The YAML file ``tune cp`` would copy."""


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    supports_distributed: bool
    configs: tuple[str, ...]


def _torchtune_root() -> Path:
    spec = importlib.util.find_spec("torchtune")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigWriterError("torchtune is not installed in this environment; run: pip install torchtune==0.6.1")
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def _registry() -> list:
    path = _torchtune_root() / "_recipe_registry.py"
    spec = importlib.util.spec_from_file_location("_tcw_torchtune_recipe_registry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports only dataclasses and typing
    return module.get_all_recipes()


def configs_dir() -> Path:
    """Directory holding torchtune's shipped recipe configs."""
    return _torchtune_root().parent / "recipes" / "configs"


def recipes() -> list[RecipeInfo]:
    """Every recipe in the registry, in registry order."""
    return [
        RecipeInfo(r.name, bool(r.supports_distributed), tuple(c.name for c in r.configs)) for r in _registry()
    ]


def recipe_info(name: str) -> RecipeInfo | None:
    """The registry entry of recipe ``name`` (None for a recipe given as a .py path or unknown)."""
    return next((r for r in recipes() if r.name == name), None)


def recipe_file(name: str) -> Path | None:
    """The source file of registry recipe ``name`` (None when it is not in the registry)."""
    entry = next((r for r in _registry() if r.name == name), None)
    return None if entry is None else _torchtune_root().parent / "recipes" / entry.file_path


def builtin_configs() -> dict[str, BuiltinConfig]:
    """Every shipped config by name. A name used by several recipes maps to its first recipe."""
    out: dict[str, BuiltinConfig] = {}
    root = configs_dir()
    for r in _registry():
        for c in r.configs:
            out.setdefault(c.name, BuiltinConfig(c.name, r.name, root / c.file_path))
    return out


def recipes_for_config(name: str) -> list[str]:
    """All recipes that list config ``name``."""
    return [r.name for r in _registry() if any(c.name == name for c in r.configs)]


def find_config(name: str) -> BuiltinConfig:
    """Look up a shipped config by name; an unknown name lists the closest ones."""
    name = name.removesuffix(".yaml")
    table = builtin_configs()
    if name in table:
        if not table[name].path.is_file():
            raise BaseConfigNotFoundError(
                f"base_config '{name}' is listed in torchtune's registry, but this torchtune install does not ship "
                f"its file ({table[name].path}). Copy the config from torchtune's repository and use base_config_file."
            )
        return table[name]
    close = close_matches(name, table, n=5, cutoff=0.5)
    family = name.split("/")[0]
    same_family = [n for n in table if n.startswith(family + "/")][:8]
    suggestions = close or same_family
    msg = f"base_config '{name}' is not a torchtune config."
    if suggestions:
        msg += "\n  Closest configs:\n" + "\n".join(f"    - {s}" for s in suggestions)
    msg += "\n  Run `torchtune-config-writer ls` for the full list, or use base_config_file for your own YAML."
    raise BaseConfigNotFoundError(msg)


def registry_recipe(recipe: str) -> str:
    """The registry name of ``recipe`` ('' when unknown); a ``.py`` path counts when its file name is a recipe's."""
    if not recipe:
        return ""
    names = _registry_names()
    if recipe in names:
        return recipe
    if recipe.endswith(".py"):
        # a copy made with `tune cp` keeps the file name; anything else we cannot tell cheaply
        return names.get(PurePath(recipe).stem, "")
    return ""


@lru_cache(maxsize=1)
def _registry_names() -> dict[str, str]:
    """Registry recipe names, by themselves and by their file stem (``dev/x`` is also ``x``)."""
    names: dict[str, str] = {}
    for r in recipes():
        names.setdefault(r.name, r.name)
        names.setdefault(PurePath(r.name).name, r.name)
    return names
