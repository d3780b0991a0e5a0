"""Validate generated configs in one process: torchtune's own check and more.

Every run's config goes through the checks in ``checks/`` (binding, types,
ranges, recipe rules, consistency) and the interpolation check here; the
problems are collected, never raised one at a time, so one ``validate``
shows everything that is wrong in every run.

    >>> problems = validate_configs([("run_000", {"epochs": "two"})])   # doctest: +SKIP
    >>> str(problems[0])                                                  # doctest: +SKIP
    "run_000: epochs: must be an integer >= 1, got 'two'"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import did_you_mean
from .checks import Finding
from .checks.binding import check_components
from .checks.consistency import check_consistency
from .checks.ranges import check_ranges
from .checks.recipe_rules import check_recipe_rules
from .checks.value_types import check_types
from .tree import MISSING, all_paths, lookup, walk_paths


@dataclass(frozen=True)
class Problem:
    run_id: str
    key: str
    message: str
    warning: bool = False
    """Reported, not refused: a likely mistake (or an input file not on this machine) that may be meant."""

    def __str__(self) -> str:
        return f"{self.run_id}: {self.key}: {self.message}"


#: Every check of one config, in the order their findings are reported.
CHECKS = (check_components, check_types, check_ranges, check_recipe_rules, check_consistency)


def validate_configs(configs: Sequence[tuple[str, dict]], recipe: str = "") -> list[Problem]:
    """Check every ``(run_id, config)`` run by ``recipe``; return all problems (empty when all pass).

    Problems with ``warning`` set are reported but do not fail a run.
    Imports torchtune once, on the first call.
    """
    problems: list[Problem] = []
    for run_id, cfg in configs:
        problems.extend(Problem(run_id, f.key, f.message, f.warning) for f in check_config(cfg, recipe))
    return problems


def check_config(cfg: dict, recipe: str = "") -> list[Finding]:
    """Every finding for one config."""
    found = list(_check_interpolations(cfg))
    for check in CHECKS:
        found.extend(check(cfg, recipe))
    return found


# ----------------------------------------------------------------------------- interpolations

_INTERP = re.compile(r"\$\{([^${}]*)\}")


def _check_interpolations(cfg: dict) -> Iterator[Finding]:
    for parts, value in walk_paths(cfg):
        if not isinstance(value, str) or "${" not in value:
            continue
        path = ".".join(parts)
        for ref in _INTERP.findall(value):
            ref = ref.strip()
            if ":" in ref or ref.startswith("."):
                yield from _resolve_with_omegaconf(cfg, path)  # resolvers and relative refs: ask OmegaConf
                break
            if lookup(cfg, ref, index_lists=True) is MISSING:
                hint = did_you_mean(ref, all_paths(cfg), n=1, show=lambda m: f"${{{m}}}")
                yield Finding(path, f"interpolation '${{{ref}}}' points to a key the config does not have.{hint}")


def _resolve_with_omegaconf(cfg: dict, path: str) -> Iterator[Finding]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.select(OmegaConf.create(cfg), path, throw_on_missing=True)
    except OmegaConfBaseException as e:
        yield Finding(path, f"cannot resolve interpolation: {str(e).splitlines()[0]}")
    except Exception as e:  # a custom resolver may raise anything
        yield Finding(path, f"cannot resolve interpolation: {e}")
