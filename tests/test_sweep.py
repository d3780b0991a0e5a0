import itertools

from hypothesis import given, strategies as st

from torchtune_config_writer.compile.sweep import count_runs, plan_runs, run_id


def test_first_variable_varies_slowest():
    runs = plan_runs({"a": [1, 2], "b": ["x", "y", "z"]})
    assert [r.run_id for r in runs] == [f"run_{i:03d}" for i in range(6)]
    assert [tuple(r.parameters.values()) for r in runs] == list(itertools.product([1, 2], ["x", "y", "z"]))


def test_no_variables_is_one_run():
    assert [r.parameters for r in plan_runs({})] == [{}]


def test_run_ids_widen_past_one_thousand():
    assert run_id(999, 1000) == "run_999"
    assert run_id(0, 1001) == "run_0000" and run_id(1000, 1001) == "run_1000"
    assert run_id(5, 3) == "run_005"


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.lists(st.integers(), min_size=1, max_size=3), max_size=4))
def test_plan_size_and_unique_ids(variables):
    runs = plan_runs(variables)
    assert len(runs) == count_runs(variables)
    assert len({r.run_id for r in runs}) == len(runs)
    assert sorted({len(r.run_id) for r in runs}) == [len(runs[0].run_id)]
