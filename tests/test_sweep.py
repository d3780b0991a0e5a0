import itertools
import random

from hypothesis import given, strategies as st

from torchtune_config_writer.compile.schema import Distribution
from torchtune_config_writer.compile.sweep import (
    combinations, count, matches, run_id, same_value, sample_axis, seed_axis, variable_axis, zip_axis,
)


def test_first_axis_varies_slowest_and_seeds_fastest():
    axes = [variable_axis("a", [1, 2]), zip_axis({"b": ["x", "y"], "c": [3, 4]}), seed_axis([7, 8])]
    combos = list(combinations(axes))
    assert len(combos) == count(axes) == 8
    assert combos[:3] == [{"a": 1, "b": "x", "c": 3, "seed": 7}, {"a": 1, "b": "x", "c": 3, "seed": 8},
                          {"a": 1, "b": "y", "c": 4, "seed": 7}]
    assert [tuple(c.values()) for c in combos] == [
        (a, b, c, s) for a, (b, c), s in itertools.product([1, 2], [("x", 3), ("y", 4)], [7, 8])]


def test_no_axes_is_one_combination():
    assert list(combinations([])) == [{}]


def test_run_ids_widen_past_one_thousand():
    assert run_id(999, 1000) == "run_999"
    assert run_id(0, 1001) == "run_0000" and run_id(1000, 1001) == "run_1000"
    assert run_id(5, 3) == "run_005"


def test_sampling_is_reproducible_and_within_bounds():
    space = {"lr": Distribution(log_uniform=(1e-5, 1e-3)), "drop": Distribution(uniform=(0.0, 0.1)),
             "steps": Distribution(choice=[0, 50, 100]), "rank": Distribution(int_uniform=(4, 6))}
    a, b = sample_axis(space, 20, seed=3), sample_axis(space, 20, seed=3)
    assert a == b and a.keys == ("lr", "drop", "steps", "rank")
    assert sample_axis(space, 20, seed=4) != a
    assert sample_axis(space, 5, seed=3).points == a.points[:5]  # more points keep the first ones
    for lr, drop, steps, rank in a.points:
        assert 1e-5 <= lr <= 1e-3 and 0.0 <= drop <= 0.1 and steps in (0, 50, 100) and rank in (4, 5, 6)
    # the draws are those of random.Random(seed), key after key, point after point
    rng = random.Random(3)
    first_lr = 10 ** rng.uniform(-5, -3)
    assert abs(a.points[0][0] - first_lr) / first_lr < 1e-9


def test_exclusion_rules_match_like_a_researcher_means():
    assert same_value(3e-4, 0.0003) and not same_value(True, 1) and not same_value(1, True)
    assert matches({"a": 1, "b": [2, 3]}, {"a": 1, "b": 3, "c": 9})
    assert not matches({"a": 1, "b": [2, 3]}, {"a": 1, "b": 4})
    assert matches({"m": ["q", "v"]}, {"m": ["q", "v"]})  # a list axis value is matched whole too


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.lists(st.integers(), min_size=1, max_size=3), max_size=4))
def test_grid_size_and_unique_ids(variables):
    axes = [variable_axis(k, v) for k, v in variables.items()]
    combos = list(combinations(axes))
    assert len(combos) == count(axes)
    ids = [run_id(i, len(combos)) for i in range(len(combos))]
    assert len(set(ids)) == len(ids) and len({len(i) for i in ids}) == 1
