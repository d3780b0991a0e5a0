"""Turn variables into the list of runs: the full cartesian product.

Variables combine in the order they are written, the first varying slowest
(as ``itertools.product``). Runs are numbered ``run_000``, ``run_001``, ...;
past 1,000 runs the number is as wide as the largest index needs.

    >>> [r.parameters for r in plan_runs({"a": [1, 2], "b": ["x"]})]
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .. import expdir


@dataclass(frozen=True)
class RunPlan:
    index: int
    run_id: str
    parameters: dict[str, Any]
    """Variable (resolved dotted path) → this run's value, in variable order."""


def run_id(index: int, total: int) -> str:
    """``run_007`` for a sweep under 1,000 runs, ``run_0007`` for up to 10,000, and so on."""
    return expdir.run_id(index, max(3, len(str(max(total - 1, 0)))))


def count_runs(variables: dict[str, list[Any]]) -> int:
    total = 1
    for values in variables.values():
        total *= len(values)
    return total


def plan_runs(variables: dict[str, list[Any]]) -> list[RunPlan]:
    """Every combination of variable values, as numbered runs (one run when there are no variables)."""
    names = list(variables)
    total = count_runs(variables)
    return [
        RunPlan(i, run_id(i, total), dict(zip(names, combo)))
        for i, combo in enumerate(itertools.product(*(variables[n] for n in names)))
    ]
