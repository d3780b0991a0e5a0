"""``init`` and ``schema``: starters that validate as written, and a JSON Schema that agrees with the loader.

The starters are checked the way a user checks them, with the real ``validate``
(torchtune's validation included); the tiny one is also trained, in a slow test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner, Result

from torchtune_config_writer import generate_configs
from torchtune_config_writer.cli import main
from torchtune_config_writer.cli.authoring import (
    SCHEMA_FILE, STARTERS, TINY_ASSETS, config_kind, experiment_schema, fits,
)
from torchtune_config_writer.compile import registry
from torchtune_config_writer.compile.schema import parse_yaml, to_plain
from test_examples import DOC_CASES  # the experiments of the documents (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_TEMPLATES = [name for name, s in STARTERS.items() if s.default_base]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def read_yaml(path: Path) -> dict:
    return to_plain(parse_yaml(path.read_text(), str(path)))


@pytest.fixture
def prebuilt_tiny(tmp_path: Path, tiny_assets) -> Path:
    """tmp_path/tiny_assets is the session's build, so that ``init --template tiny`` only refreshes it."""
    (tmp_path / TINY_ASSETS).symlink_to(tiny_assets.root, target_is_directory=True)
    return tmp_path


# ----------------------------------------------------------------------------- init: every starter validates


@pytest.mark.parametrize("template", list(STARTERS))
def test_every_starter_validates_as_written(template, tmp_path, request):
    if template == "tiny":
        request.getfixturevalue("prebuilt_tiny")
    path = tmp_path / f"{template}_study.yaml"
    made = cli("init", "--template", template, "-o", path)
    assert made.exit_code == 0, made.output
    checked = cli("validate", path)
    assert checked.exit_code == 0, checked.output
    assert "all passed" in checked.output and "Valid; nothing written" in checked.output
    # The only remarks allowed are the model files of a machine that has not downloaded them yet.
    for line in checked.output.splitlines():
        if "does not exist on this machine" in line:
            assert template != "tiny" and ("tokenizer." in line or "checkpoint_dir" in line), line
    exp = read_yaml(path)
    assert exp["experiment_name"] == f"{template}_study"
    assert jsonschema.Draft202012Validator(experiment_schema()).is_valid(exp)


@pytest.mark.parametrize("template", REGISTRY_TEMPLATES)
def test_every_fitting_config_takes_its_starters_keys(template, tmp_path):
    """Any config `--base` accepts for a template compiles with it: the starter's keys are in every one."""
    table = registry.builtin_configs()
    bases = [n for n, c in table.items() if fits(template, config_kind(n, c.recipe)) and c.path.is_file()]
    assert STARTERS[template].default_base in bases
    for i, base in enumerate(bases):
        path = tmp_path / f"e{i}.yaml"
        made = cli("init", "-t", template, "--base", base, "-o", path, "--no-schema")
        assert made.exit_code == 0, (base, made.output)
        result = generate_configs(path, write=False, validate=False)
        assert result.base == base and len(result.runs) > 1


def test_a_distributed_base_asks_slurm_for_several_gpus(tmp_path):
    path = tmp_path / "e.yaml"
    assert cli("init", "--base", "llama3_2/1B_lora", "-o", path).exit_code == 0
    assert read_yaml(path)["slurm"]["gpus_per_run"] == 2
    assert cli("validate", path).exit_code == 0


def test_the_starter_repeats_the_bases_model_files_and_download_command(tmp_path):
    path = tmp_path / "qwen.yaml"
    assert cli("init", "--base", "qwen2_5/0.5B_lora_single_device", "-o", path).exit_code == 0
    controls = read_yaml(path)["controls"]
    base = read_yaml(registry.find_config("qwen2_5/0.5B_lora_single_device").path)
    assert controls["tokenizer.path"] == base["tokenizer"]["path"]
    assert controls["tokenizer.merges_file"] == base["tokenizer"]["merges_file"]  # Qwen's tokenizer has two files
    assert controls["checkpointer.checkpoint_dir"] == base["checkpointer"]["checkpoint_dir"]
    assert "#   tune download Qwen/Qwen2.5-0.5B-Instruct" in path.read_text()


# ----------------------------------------------------------------------------- init: files and defaults


def test_defaults_write_experiment_yaml_and_its_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = cli("init")
    assert made.exit_code == 0, made.output
    text = (tmp_path / "experiment.yaml").read_text()
    assert text.startswith(f"# yaml-language-server: $schema=./{SCHEMA_FILE}\n")
    exp = read_yaml(tmp_path / "experiment.yaml")
    assert exp["experiment_name"] == "lora_study" and exp["base_config"] == STARTERS["lora"].default_base
    assert json.loads((tmp_path / SCHEMA_FILE).read_text()) == experiment_schema()
    assert "validate experiment.yaml" in made.output


def test_no_schema_writes_no_schema_and_no_modeline(tmp_path):
    path = tmp_path / "e.yaml"
    assert cli("init", "-o", path, "--no-schema").exit_code == 0
    assert not (tmp_path / SCHEMA_FILE).exists()
    assert "yaml-language-server" not in path.read_text()


def test_init_never_overwrites_without_force(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("mine\n")
    refused = cli("init", "-o", path)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"{path} already exists" in refused.output and "-o FILE" in refused.output and "--force" in refused.output
    assert path.read_text() == "mine\n" and not (tmp_path / SCHEMA_FILE).exists()
    assert cli("init", "-o", path, "--force").exit_code == 0
    assert read_yaml(path)["experiment_name"] == "e"


def test_init_refuses_a_directory(tmp_path):
    res = cli("init", "-o", tmp_path)
    assert res.exit_code == 1 and "is a directory" in res.output and "experiment.yaml" in res.output


def test_a_schema_file_init_did_not_write_is_left_alone(tmp_path):
    (tmp_path / SCHEMA_FILE).write_text('{"title": "mine"}\n')
    res = cli("init", "-o", tmp_path / "e.yaml")
    assert res.exit_code == 0 and "left" in res.output
    assert (tmp_path / SCHEMA_FILE).read_text() == '{"title": "mine"}\n'


def test_an_older_schema_file_of_ours_is_refreshed(tmp_path):
    stale = experiment_schema() | {"$comment": "older"}
    (tmp_path / SCHEMA_FILE).write_text(json.dumps(stale))
    assert cli("init", "-o", tmp_path / "e.yaml").exit_code == 0
    assert json.loads((tmp_path / SCHEMA_FILE).read_text()) == experiment_schema()


# ----------------------------------------------------------------------------- init: mistakes


BAD_INIT = {
    "unknown template": (["--template", "lorra"], 2, ["Invalid value for '--template'", "'lora'"]),
    "unknown base": (["--base", "llama3_2/1B_lora_singel_device"], 1,
                     ["is not a torchtune config", "Did you mean 'llama3_2/1B_lora_single_device'", "ls lora"]),
    "base of another kind": (["-t", "lora", "--base", "llama3_2/1B_full_single_device"], 1,
                             ["is a full finetune config", "--template lora sets up a LoRA study", "Use --template full",
                              "llama3_2/1B_lora_single_device"]),
    "dpo needs a dpo config": (["-t", "dpo", "--base", "llama3_2/1B_lora_single_device"], 1,
                               ["is a LoRA config", "Use --template lora", "ls dpo"]),
    "no template for the recipe": (["-t", "full", "--base", "eleuther_evaluation"], 1,
                                   ["recipe eleuther_eval, which no template sets up", "set base_config by hand"]),
    "tiny takes no base": (["-t", "tiny", "--base", "llama3_2/1B_lora_single_device"], 1,
                           ["--base does not apply to --template tiny", "Leave --base out"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INIT))
def test_bad_init_options_say_what_and_how_to_fix(case, tmp_path):
    args, code, fragments = BAD_INIT[case]
    res = cli("init", *args, "-o", tmp_path / "e.yaml")
    assert res.exit_code == code and "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in res.output, res.output
    assert list(tmp_path.iterdir()) == []


def test_base_given_as_a_file_points_at_base_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("epochs: 1\n")
    res = cli("init", "--base", "mine.yaml", "-o", "e.yaml")
    assert res.exit_code == 1 and "not a file" in res.output and "base_config_file: mine.yaml" in res.output


# ----------------------------------------------------------------------------- schema


EXAMPLES = sorted(p for p in (ROOT / "example_configs").rglob("*.yaml")
                  if "assets" not in p.parts and "experiment_name" in read_yaml(p))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(cli("schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_prints_json_and_writes_the_same_to_a_file(tmp_path):
    printed = cli("schema")
    assert printed.exit_code == 0
    schema = json.loads(printed.stdout)
    assert schema["$id"] and schema["title"] and schema["$schema"].endswith("2020-12/schema")
    assert cli("schema", "-o", tmp_path / "s.json").exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_schema_describes_fields_from_their_docstrings_and_hides_internal_ones():
    schema = experiment_schema()
    output = schema["$defs"]["OutputSettings"]["properties"]
    assert "Relative to the experiment file" in output["experiment_dir"]["description"]
    assert schema["$defs"]["SlurmSettings"]["description"].startswith("Settings of the generated")
    assert not {"source_path", "source_text", "locations"} & set(schema["properties"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_schema_accepts_every_example(validator, path):
    errors = [e.message for e in validator.iter_errors(read_yaml(path))]
    assert errors == []


def test_examples_include_nested_variables():
    assert any(isinstance(v, dict) for p in EXAMPLES for v in (read_yaml(p).get("variables") or {}).values())


REJECTED = {
    "unknown top-level key": {"epochs": 2},
    "misspelled section": {"control": {"epochs": 2}},
    "unknown slurm key": {"slurm": {"partion": "gpu"}},
    "variable that is not a list": {"variables": {"lora_rank": 16}},
    "empty variable": {"variables": {"model": {"lora_rank": []}}},
    "name with a space": {"experiment_name": "rank study"},
    "negative gpus": {"slurm": {"gpus_per_run": -1}},
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_schema_rejects_what_the_loader_rejects(validator, case):
    from torchtune_config_writer.compile.schema import load_experiment
    from torchtune_config_writer.errors import ValidationError

    exp = {"experiment_name": "e", "base_config": "llama3_2/1B_lora_single_device"} | REJECTED[case]
    assert not validator.is_valid(exp)
    with pytest.raises(ValidationError):
        load_experiment(exp)


def test_schema_accepts_empty_sections(validator):
    assert validator.is_valid({"experiment_name": "e", "base_config": "x", "variables": None, "controls": None})


LANGUAGE = {
    "experiment_name": "language", "base_config": "llama3_2/1B_lora_single_device", "include": ["cpu"],
    "variables": {"model": {"lora_rank": [8, 16]}},
    "zip": [{"learning_rate": [1.0e-4, 3.0e-4], "batch_size": [4, 8]}],
    "seeds": [1, 2],
    "exclude": [{"lora_rank": 16, "batch_size": 4}, "{{ lora_rank == 8 and batch_size == 8 }}"],
    "derived": {"lora_alpha": "{{ 2 * lora_rank }}"},
    "run_name": "r{{ lora_rank }}-s{{ seed }}",
    "slurm": {"time": "01:00:00", "mem": "{{ '32G' if lora_rank > 8 else '16G' }}"},
}


# The documents' experiments, less those that show a mistake of the file itself (the loader refuses them).
LOADABLE_DOC_CASES = [pytest.param(case.values[0], id=case.id) for case in DOC_CASES
                      if not re.match(r"#\s*error:\s*(ExperimentSchemaError|EmptyVariableError)\b", case.values[0])]


@pytest.mark.parametrize("body", [pytest.param(LANGUAGE, id="language")] + LOADABLE_DOC_CASES)
def test_schema_accepts_what_the_loader_accepts(validator, tmp_path, monkeypatch, body):
    """Every experiment of the documents (and one of each section) that loads is valid to the editor too."""
    from torchtune_config_writer.compile.schema import load_experiment
    from torchtune_config_writer.errors import ConfigWriterError

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "example_configs" / "custom_base.yaml", tmp_path)
    path = tmp_path / "experiment.yaml"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    try:
        load_experiment(path)
    except ConfigWriterError:
        pytest.skip("the loader refuses it: a mistake of the file, which the schema need not accept")
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(read_yaml(path))]
    assert errors == []


# ----------------------------------------------------------------------------- tiny: it really trains


@pytest.mark.slow
def test_tiny_starter_trains_on_a_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = cli("init", "--template", "tiny", "-o", "tiny.yaml")
    assert made.exit_code == 0, made.output
    assert (tmp_path / TINY_ASSETS / "checkpoint" / "model.pt").is_file()  # built by init itself
    generated = cli("generate", "tiny.yaml", "-o", "out")
    assert generated.exit_code == 0, generated.output
    ran = cli("run", "out", "--runs", "0")
    assert ran.exit_code == 0, ran.output
    status = json.loads((tmp_path / "out" / "status" / "run_000.json").read_text())
    assert status["state"] == "completed", (tmp_path / "out" / "logs" / "run_000.log").read_text()[-2000:]
    assert (tmp_path / "out" / "runs" / "run_000" / "epoch_0" / "adapter_model.pt").is_file()
