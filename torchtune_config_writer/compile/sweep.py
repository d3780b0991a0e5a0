"""Turn the experiment's axes into combinations: the grid, zipped groups, sampled points, seeds.

An ``Axis`` is a list of points, each point giving a value to one or more keys
(one key for a variable; every key of a ``zip`` group; every key of ``sample``).
Combinations are the cartesian product of the axes in order, the first axis
varying slowest (as ``itertools.product``); ``seeds`` is always the last axis, so
it varies fastest. Runs are numbered ``run_000``, ``run_001``, ... after
exclusion; past 1,000 runs the number is as wide as the largest index needs.

    >>> axes = [variable_axis("a", [1, 2]), zip_axis({"b": ["x", "y"], "c": [3, 4]})]
    >>> [c for c in combinations(axes)][:3]
    [{'a': 1, 'b': 'x', 'c': 3}, {'a': 1, 'b': 'y', 'c': 4}, {'a': 2, 'b': 'x', 'c': 3}]
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Iterator

from .. import expdir


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: ``points[i]`` gives a value to each of ``keys``."""

    keys: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]
    kind: str
    """``variables``, ``zip``, ``sample`` or ``seeds``."""


def variable_axis(key: str, values: list[Any]) -> Axis:
    return Axis((key,), tuple((v,) for v in values), "variables")


def zip_axis(group: dict[str, list[Any]]) -> Axis:
    """Keys that vary together: the n-th values of every list form one point (the lists are equally long)."""
    return Axis(tuple(group), tuple(zip(*group.values())), "zip")


def sample_axis(space: dict[str, Any], n: int, seed: int) -> Axis:
    """``n`` points drawn from ``space`` (key → object with ``draw(rng)``), the same for the same ``seed``.

    Keys are drawn in the order written, point after point, from one
    ``random.Random(seed)``: adding a key changes the points, changing ``n``
    keeps the first ones.
    """
    rng = random.Random(seed)
    return Axis(tuple(space), tuple(tuple(dist.draw(rng) for dist in space.values()) for _ in range(n)), "sample")


def seed_axis(seeds: list[int]) -> Axis:
    return Axis(("seed",), tuple((s,) for s in seeds), "seeds")


def count(axes: list[Axis]) -> int:
    total = 1
    for axis in axes:
        total *= len(axis.points)
    return total


def combinations(axes: list[Axis]) -> Iterator[dict[str, Any]]:
    """Every combination of the axes' points, as ``key → value`` in axis order (one empty one without axes)."""
    keys = [k for axis in axes for k in axis.keys]
    for combo in itertools.product(*(axis.points for axis in axes)):
        yield dict(zip(keys, itertools.chain.from_iterable(combo)))


def run_id(index: int, total: int) -> str:
    """``run_007`` for a sweep under 1,000 runs, ``run_0007`` for up to 10,000, and so on."""
    return expdir.run_id(index, max(3, len(str(max(total - 1, 0)))))


def same_value(a: Any, b: Any) -> bool:
    """Equality as a researcher means it: ``3e-4 == 0.0003`` but ``True != 1`` (YAML tells them apart)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def canonical(node: Any) -> Any:
    """``node`` with every integral float written as an int: 0 and 0.0 are one value to torchtune (bools stay bools)."""
    if isinstance(node, dict):
        return {k: canonical(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [canonical(v) for v in node]
    if isinstance(node, float) and node.is_integer():
        return int(node)
    return node


def matches(rule: dict[str, Any], values: dict[str, Any]) -> bool:
    """Does a mapping ``exclude`` rule match a combination? Every key must; a list value matches any item."""
    for key, wanted in rule.items():
        have = values[key]
        if same_value(have, wanted):
            continue
        if isinstance(wanted, list) and any(same_value(have, w) for w in wanted):
            continue
        return False
    return True
