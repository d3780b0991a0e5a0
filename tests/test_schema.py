import pytest

from torchtune_config_writer.errors import EmptyVariableError, ExperimentSchemaError
from torchtune_config_writer.compile.schema import load_experiment

from helpers import LORA_1B, write_experiment


def test_minimal_dict_defaults():
    exp = load_experiment({"experiment_name": "a", "base_config": LORA_1B})
    assert exp.framework == "torchtune"
    assert exp.variables == {} and exp.controls == {}
    assert exp.slurm.max_array_size == 1001


def test_nested_variables_flatten_to_dotted_keys():
    exp = load_experiment({"experiment_name": "a", "base_config": LORA_1B,
                           "variables": {"model": {"lora_rank": [8, 16]}, "lr": [1e-4]}})
    assert exp.variables == {"model.lora_rank": [8, 16], "lr": [1e-4]}


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"experiment_name": "a", "base_confg": LORA_1B}, "Did you mean 'base_config'"),
        ({"experiment_name": "a", "base_config": LORA_1B, "base_config_file": "x.yaml", "recipe": "r"}, "not both"),
        ({"experiment_name": "a"}, "no base config"),
        ({"experiment_name": "a", "base_config_file": "x.yaml"}, "recipe is required"),
        ({"experiment_name": "../etc", "base_config": LORA_1B}, "not usable as a directory name"),
        ({"experiment_name": "a b", "base_config": LORA_1B}, "not usable as a directory name"),
        ({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"nodes": 0}}, "slurm.nodes"),
        ({"experiment_name": "a", "base_config": LORA_1B, "framework": "hf"}, "only 'torchtune'"),
        ({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"partiton": "gpu"}}, "Did you mean 'partition'"),
        ({"experiment_name": "a", "base_config": LORA_1B, "slurm": {"time": "soon"}}, "not a SLURM time limit"),
        ({"experiment_name": "a", "base_config": LORA_1B, "variables": {"lr": 0.1}}, "must be a list of values"),
        ({"experiment_name": "a", "base_config": LORA_1B, "variables": {"model": {"_component_": "x"}}}, "must be a list"),
        ({"experiment_name": "a", "base_config": LORA_1B, "controls": [1]}, "'controls' must be a mapping"),
        ({"base_config": LORA_1B}, "missing required key 'experiment_name'"),
    ],
)
def test_schema_errors(data, fragment):
    with pytest.raises(ExperimentSchemaError, match=None) as e:
        load_experiment(data)
    assert fragment in str(e.value)


def test_empty_variable_is_its_own_error(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: a\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: []\n")
    with pytest.raises(EmptyVariableError) as e:
        load_experiment(path)
    assert "experiment.yaml:4" in str(e.value) and "lora_rank" in str(e.value)


def test_malformed_yaml_reports_file_line_and_column(tmp_path):
    path = write_experiment(tmp_path, "experiment_name: a\ncontrols: [epochs: 1\n")
    with pytest.raises(ExperimentSchemaError) as e:
        load_experiment(path)
    assert str(e.value).startswith(f"{path}:3:1: invalid YAML")


def test_duplicate_key_is_an_error(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: a\nbase_config: {LORA_1B}\ncontrols:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ExperimentSchemaError) as e:
        load_experiment(path)
    assert "duplicate key 'epochs'" in str(e.value) and ":5:" in str(e.value)


def test_unknown_top_level_key_names_its_line(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: a\nbase_config: {LORA_1B}\nvaraibles: {{}}\n")
    with pytest.raises(ExperimentSchemaError) as e:
        load_experiment(path)
    assert f"{path}:3" in str(e.value) and "Did you mean 'variables'" in str(e.value)


def test_relative_base_config_file_is_relative_to_the_experiment(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    path = write_experiment(sub, "experiment_name: a\nbase_config_file: base.yaml\nrecipe: full_finetune_single_device\n")
    assert load_experiment(path).base_config_file == sub.resolve() / "base.yaml"


def test_key_locations_are_recorded(tmp_path):
    path = write_experiment(tmp_path, f"experiment_name: a\nbase_config: {LORA_1B}\nvariables:\n  model:\n    lora_rank: [8]\ncontrols:\n  epochs: 1\n")
    exp = load_experiment(path)
    assert exp.where("variables", "model.lora_rank") == f"{path}:5 (variables)"
    assert exp.where("controls", "epochs") == f"{path}:7 (controls)"


def test_missing_file(tmp_path):
    with pytest.raises(ExperimentSchemaError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
