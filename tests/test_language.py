"""The experiment language: zip, derived, exclude, seeds, sample, run_name, include/presets,
expressions and per-run SLURM resources — what each means, and every mistake's message."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from torchtune_config_writer import expdir, generate_configs
from torchtune_config_writer.errors import ConfigWriterError
from torchtune_config_writer.execute.submit import submit

from helpers import LORA_1B, write_experiment

STUDY = f"""\
experiment_name: rank_study
base_config: {LORA_1B}
variables:
  lora_rank: [8, 16, 32, 64]
zip:
  - lr: [1.0e-4, 3.0e-4]
    batch_size: [4, 8]
derived:
  lora_alpha: "{{{{ 2 * lora_rank }}}}"
  gradient_accumulation_steps: "{{{{ 32 // batch_size }}}}"
exclude:
  - {{lora_rank: 64, lr: 3.0e-4}}
  - "{{{{ lora_rank == 8 and batch_size == 8 }}}}"
seeds: [1, 2, 3]
run_name: "r{{{{ lora_rank }}}}-lr{{{{ lr }}}}-s{{{{ seed }}}}"
controls:
  epochs: 1
  metric_logger.log_dir: "{{{{ output_dir }}}}/metrics"
slurm:
  time: "{{{{ '08:00:00' if lora_rank >= 32 else '04:00:00' }}}}"
"""


def plan(tmp_path: Path, body: str, **kwargs):
    return generate_configs(write_experiment(tmp_path, body), tmp_path / "out", write=False, validate=False, **kwargs)


def error_of(tmp_path: Path, body: str, name: str = "experiment.yaml") -> str:
    path = write_experiment(tmp_path, body, name)
    with pytest.raises(ConfigWriterError) as info:
        generate_configs(path, tmp_path / "out", validate=False)
    assert not (tmp_path / "out").exists()  # nothing written on error
    return str(info.value)


# ----------------------------------------------------------------------------- the study of the issue, end to end


def test_the_study_expands_as_written(tmp_path):
    result = generate_configs(write_experiment(tmp_path, STUDY), tmp_path / "out")  # validated, written
    # 4 ranks x 2 zipped (lr, batch) = 8 combinations; (64, 3e-4) and (8, batch 8) excluded; x 3 seeds
    expected = [(r, lr, b, s) for r, (lr, b) in itertools.product([8, 16, 32, 64], [(1e-4, 4), (3e-4, 8)])
                for s in (1, 2, 3) if not (r == 64 and lr == 3e-4) and not (r == 8 and b == 8)]
    assert [tuple(r.labels.values()) for r in result.runs] == expected
    assert result.counts.summary() == "8 combinations, 2 excluded, 6 runs × 3 seeds = 18 runs"
    assert [r.run_id for r in result.runs] == [f"run_{i:03d}" for i in range(18)]  # dense after exclusion
    first = result.runs[0]
    assert first.name == "r8-lr0.0001-s1"
    assert first.plain["model"]["lora_alpha"] == 16 and type(first.plain["model"]["lora_alpha"]) is int
    assert first.plain["gradient_accumulation_steps"] == 8 and first.plain["seed"] == 1
    assert first.plain["metric_logger"]["log_dir"] == f"{first.output_dir}/metrics"
    assert [r.configuration for r in result.runs[:7]] == [0, 0, 0, 1, 1, 1, 2]
    assert all(r.validation == expdir.Validation.PASSED for r in result.runs)

    exp = tmp_path / "out"
    mapping = expdir.load_mapping(exp)
    assert mapping.variables == ("model.lora_rank", "optimizer.lr", "batch_size", "seed") and mapping.seeded
    assert mapping.derived == ("model.lora_alpha", "gradient_accumulation_steps", "metric_logger.log_dir")
    run = mapping.runs[9]
    assert (run.name, run.seed, run.configuration) == ("r32-lr0.0001-s1", 1, 3)
    assert run.derived["model.lora_alpha"] == 64 and run.metric_log.dir == f"{run.output_dir}/metrics"
    # the first run's resources are the experiment's; runs with rank >= 32 differ in their time limit
    assert mapping.slurm.time == "04:00:00" and run.resources == {"time": "08:00:00"}
    groups = expdir.script_groups(mapping)
    assert [(g.script, g.resources.time, len(g.indices)) for g in groups] == [
        ("submit.sbatch", "04:00:00", 9), ("submit_1.sbatch", "08:00:00", 9)]
    for g in groups:
        text = (exp / g.script).read_text()
        assert f"#SBATCH --time={g.resources.time}" in text
        assert f"#SBATCH --array={expdir.compress_ranges(g.indices)}" in text
    # the written config says what the run is
    head = (exp / "configs" / "run_009.yaml").read_text().splitlines()[:6]
    assert "# Name: r32-lr0.0001-s1" in head and any(h.startswith("# Derived: model.lora_alpha=64") for h in head)


def test_submit_sends_each_resource_group_as_its_own_array(tmp_path):
    generate_configs(write_experiment(tmp_path, STUDY), tmp_path / "out")
    echoed: list[str] = []
    arrays = submit(tmp_path / "out", dry_run=True, echo=echoed.append)
    assert [(Path(a.command[-2]).name, a.array) for a in arrays] == [("submit.sbatch", "0-8"), ("submit_1.sbatch", "9-17")]
    arrays = submit(tmp_path / "out", runs="7-10", dry_run=True, echo=echoed.append)
    assert [(Path(a.command[-2]).name, a.array) for a in arrays] == [("submit.sbatch", "7-8"), ("submit_1.sbatch", "9-10")]


# ----------------------------------------------------------------------------- expressions


def test_expression_types_and_names(tmp_path):
    result = plan(tmp_path, f"""\
experiment_name: names
base_config: {LORA_1B}
variables:
  lora_rank: [8]
derived:
  lora_alpha: "{{{{ model.lora_rank * 2 }}}}"
  dataset.packed: "{{{{ run_index == 0 }}}}"
  model.lora_attn_modules: "{{{{ ['q_proj', 'v_proj'] }}}}"
  checkpointer.output_dir: "{{{{ output_dir }}}}/ck-{{{{ run_name }}}}-{{{{ experiment_name }}}}"
  max_steps_per_epoch: "{{{{ lora_alpha + 1 }}}}"
  lora_dropout: "{{{{ weight_decay * 10 }}}}"
controls:
  weight_decay: 0.003
  tokenizer.path: ${{checkpointer.checkpoint_dir}}/tokenizer.model
  profiler.output_dir: "{{{{ output_dir }}}}/profile"
  metric_logger.log_dir: "{{{{ date }}}}/{{{{ run_id }}}}"
""")
    config = result.runs[0].plain
    assert config["model"]["lora_alpha"] == 16
    assert math.isclose(config["model"]["lora_dropout"], 0.03)  # a float, from a control by the name written
    assert config["dataset"]["packed"] is True
    assert config["model"]["lora_attn_modules"] == ["q_proj", "v_proj"]
    out = result.runs[0].output_dir
    assert config["checkpointer"]["output_dir"] == f"{out}/ck-run_000-names"  # text around: a string
    assert config["max_steps_per_epoch"] == 17  # an earlier derived key by its name
    assert config["tokenizer"]["path"] == "${checkpointer.checkpoint_dir}/tokenizer.model"  # torchtune's own, untouched
    assert config["profiler"]["output_dir"] == f"{out}/profile"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d/run_000", config["metric_logger"]["log_dir"])


def test_derived_keys_are_ordered_by_what_they_read(tmp_path):
    result = plan(tmp_path, f"""\
experiment_name: order
base_config: {LORA_1B}
variables:
  lora_rank: [4]
derived:
  max_steps_per_epoch: "{{{{ model.lora_alpha * 10 }}}}"
  lora_alpha: "{{{{ lora_rank * 4 }}}}"
""")
    assert result.runs[0].plain["max_steps_per_epoch"] == 160


@pytest.mark.parametrize("body, message", [
    ("derived:\n  lora_alpha: \"{{ 2 * lora_rnk }}\"\n",
     r"experiment.yaml:6 \(derived\): unknown name 'lora_rnk' in '\{\{ 2 \* lora_rnk \}\}'. Did you mean 'lora_rank'"),
    ("derived:\n  lora_alpha: \"{{ max_steps_per_epoch }}\"\n  max_steps_per_epoch: \"{{ model.lora_alpha }}\"\n",
     r"experiment.yaml:\d+ \(derived\): these values depend on each other in a cycle: .*lora_alpha.*max_steps_per_epoch"),
    ("derived:\n  lora_alpha: \"{{ 2 * \"\n", r"experiment.yaml:6 \(derived\): .* is not a valid expression"),
    ("exclude:\n  - \"{{ run_id == 'run_000' }}\"\n", r"exclude\): 'run_id' is not known here: runs are numbered after"),
    ("run_name: \"{{ output_dir }}\"\n", r"\(run_name\): 'output_dir' is not known here"),
    ("exclude:\n  - \"{{ lora_rank }}\"\n", r"exclude\): must be true or false, got 8"),
    ("derived:\n  lora_alpha: \"{{ 1 // (lora_rank - 8) }}\"\n", r"\(derived\) \(for run_000\): .* failed: ZeroDivisionError"),
    ("derived:\n  lora_alpha: \"{{ model.lora_rnk }}\"\n", r"\(for run_000\): .*has no attribute 'lora_rnk'"),
    ("derived:\n  lora_alpha: \"{{ ''.__class__ }}\"\n", r"derived.*(not allowed|unsafe|has no attribute)"),
    ("variables:\n  lora_dropout: [\"{{ lora_rank }}\"]\n", r"'lora_rank' is not known here: a value in an axis may read only"),
])
def test_expression_mistakes(tmp_path, body, message):
    base = f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: [8]\n"
    if body.startswith("variables:"):
        base, body = f"experiment_name: e\nbase_config: {LORA_1B}\n", body.replace("variables:\n", "variables:\n  lora_rank: [8]\n")
    assert re.search(message, error_of(tmp_path, base + body))


def test_axis_values_may_be_expressions_of_the_experiment(tmp_path):
    result = plan(tmp_path, f"experiment_name: ax\nbase_config: {LORA_1B}\nvariables:\n"
                            "  checkpointer.output_dir: [\"/scratch/{{ experiment_name }}/a\", /b]\n")
    assert [r.labels["checkpointer.output_dir"] for r in result.runs] == ["/scratch/ax/a", "/b"]


# ----------------------------------------------------------------------------- mistakes in the axes


@pytest.mark.parametrize("body, message", [
    ("zip:\n  - lr: [1.0e-4, 2.0e-4]\n    batch_size: [4]\n",
     r"experiment.yaml:4 \(zip\): the lists of a zip group must be of equal length .*lr: 2, batch_size: 1"),
    ("variables:\n  lr: [1.0e-4]\nzip:\n  - lr: [2.0e-4]\n    batch_size: [4]\n",
     r"experiment.yaml:6 \(zip.0\): 'lr' is an axis twice \(in variables and zip.0\)"),
    ("variables:\n  lr: [1.0e-4]\nsample:\n  n: 2\n  space:\n    optimizer.lr: {uniform: [0.1, 0.2]}\n",
     r"'lr' and 'optimizer.lr' \(variables and sample\) both set 'optimizer.lr'"),
    ("variables:\n  lora_rank: [8]\nderived:\n  lora_rank: \"{{ 8 }}\"\n", r"\(derived\): 'lora_rank' is derived and also an axis"),
    ("controls:\n  epochs: 1\nderived:\n  epochs: \"{{ 2 }}\"\n", r"\(derived\): 'epochs' is derived and also a control"),
    ("variables:\n  lora_rank: [8]\nderived:\n  model.lora_rank: \"{{ 8 }}\"\n", r"both set 'model.lora_rank'"),
    ("variables:\n  lora_rank: [8, 16]\nexclude:\n  - {lora_rnak: 8}\n",
     r"experiment.yaml:6 \(exclude\): exclude names 'lora_rnak', which is not an axis.*Did you mean 'lora_rank'"),
    ("variables:\n  lora_rank: [8, 16]\nexclude:\n  - {lora_rank: [8, 16]}\n", r"exclude removes all 2 combinations"),
    ("variables:\n  lora_rank: [8, 16]\nexclude:\n  - lora_rank\n", r"\(exclude\): 'lora_rank' is neither a mapping nor an expression"),
    ("sample:\n  n: 2\n  space:\n    lr: {log_uniform: [0, 1.0e-3]}\n", r"experiment.yaml:6: sample.space.lr: log_uniform needs bounds above 0"),
    ("sample:\n  n: 2\n  space:\n    lr: {uniform: [0.3, 0.1]}\n", r"experiment.yaml:6: sample.space.lr: uniform: low \(0.3\) must be below high"),
    ("sample:\n  n: 2\n  space:\n    lr: {choice: []}\n", r"experiment.yaml:6: sample.space.lr: choice is empty"),
    ("sample:\n  n: 0\n  space:\n    lr: {choice: [1]}\n", r"experiment.yaml:4: sample.n: Input should be greater than or equal to 1"),
    ("sample:\n  n: 2\n  space:\n    lr: {uniformm: [0, 1]}\n", r"experiment.yaml:6: unknown key 'sample.space.lr.uniformm'. Did you mean 'uniform'"),
    ("sample:\n  n: 9\n  space:\n    lr: {choice: [1.0e-4, 2.0e-4]}\n", r"sample point \d repeats point \d"),
    ("seeds: [1, 1]\n", r"experiment.yaml:3 \(seeds\): seeds repeats a value"),
    ("variables:\n  lora_rank: [8, 16]\nrun_name: fixed\n", r"run_name 'fixed' is the same for run_000 and run_001"),
    ("variables:\n  lora_rank: [8, 16]\nrun_name: \"r{{ lora_rank // 100 }}\"\n", r"experiment.yaml:5 \(run_name\): run_name 'r0' is the same"),
    ("variables:\n  lora_rank: [8, 16]\noutput:\n  runs_dir: \"/scratch/{{ experiment_name }}\"\n", r"output.runs_dir '/scratch/e' is the same for run_000 and run_001"),
    ("slurm:\n  time: \"{{ 'soon' }}\"\n", r"experiment.yaml:4 \(slurm\): slurm.time is 'soon' for run_000: 'soon' is not a SLURM time limit"),
    ("variables:\n  lora_rank: [8, 16]\nslurm:\n  job_name: \"j{{ lora_rank }}\"\n",
     r"experiment.yaml:6 \(slurm\): slurm.job_name is 'j8' for run_000 but 'j16' for run_001; one submission has one job_name"),
    ("derived:\n  lora_alpha: {{ 2 * lora_rank }}\n", r"experiment.yaml:4: the value of 'lora_alpha' looks like an expression written without quotes"),
    ("variables:\n  lora_rank: [8, 16]\nderived:\n  lora_alpha: \"{{ 2 * lora_rank }}\"\nexclude:\n  - \"{{ lora_alpha > 16 }}\"\n",
     r"'lora_alpha' is not known here: 'lora_alpha' is computed per run after exclusion"),
    ("slurm:\n  tiem: \"{{ '1:00:00' }}\"\n", r"unknown key 'slurm.tiem'. Did you mean 'time'"),
])
def test_language_mistakes_name_the_place_and_the_fix(tmp_path, body, message):
    text = error_of(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\n" + body)
    assert re.search(message, text), text


def test_an_exclude_rule_that_matches_no_value_is_noted(tmp_path):
    result = plan(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: [8, 16]\n"
                            "exclude:\n  - {lora_rank: 32}\n")
    assert len(result.runs) == 2
    assert any("lora_rank=32 is none of its values" in n for n in result.cautions)


def test_the_experiment_directory_may_be_named_by_an_expression(tmp_path):
    body = f"experiment_name: e\nbase_config: {LORA_1B}\noutput:\n  experiment_dir: \"out/{{{{ experiment_name }}}}-{{{{ date }}}}\"\n"
    result = generate_configs(write_experiment(tmp_path, body), write=False, validate=False)
    assert re.fullmatch(r"e-\d{4}-\d\d-\d\d", result.experiment_dir.name) and result.experiment_dir.parent == tmp_path / "out"
    body = body.replace("experiment_name }}", "run_name }}")
    with pytest.raises(ConfigWriterError, match=r"experiment.yaml:4 \(output\): 'run_name' is not known here: "
                                                r"output.experiment_dir is one directory"):
        generate_configs(write_experiment(tmp_path, body), write=False, validate=False)


def test_sampling_is_the_same_in_every_generation(tmp_path):
    body = (f"experiment_name: s\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: [8, 16]\nsample:\n  n: 3\n  seed: 7\n"
            "  space:\n    lr: {log_uniform: [1.0e-5, 1.0e-3]}\n    lora_dropout: {uniform: [0.0, 0.1]}\n"
            "    lr_scheduler.num_warmup_steps: {choice: [0, 50, 100]}\n")
    a, b = plan(tmp_path, body), plan(tmp_path, body)
    assert [r.labels for r in a.runs] == [r.labels for r in b.runs] and len(a.runs) == 6
    assert [r.labels["lr"] for r in a.runs[:3]] == [r.labels["lr"] for r in a.runs[3:]]  # each point with every rank
    for run in a.runs:
        assert 1e-5 <= run.plain["optimizer"]["lr"] <= 1e-3 and run.plain["lr_scheduler"]["num_warmup_steps"] in (0, 50, 100)
    assert a.counts.summary() == "6 combinations = 6 runs"


def test_runs_dir_expression_names_each_runs_directory(tmp_path):
    result = plan(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lora_rank: [8, 16]\n"
                            "run_name: \"rank{{ lora_rank }}\"\noutput:\n  runs_dir: \"scratch/{{ run_name }}\"\n")
    assert [r.output_dir for r in result.runs] == [tmp_path / "scratch/rank8", tmp_path / "scratch/rank16"]
    assert result.runs[1].plain["output_dir"] == str(tmp_path / "scratch/rank16")


# ----------------------------------------------------------------------------- include and presets


def test_include_merges_fragments_in_order_and_the_file_wins(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets/lab.yaml").write_text(
        "include: [../common.yaml]\ncontrols:\n  lr: 0.5\n  epochs: 3\nslurm:\n  partition: a100\n  time: '2:00:00'\n")
    (tmp_path / "common.yaml").write_text("controls:\n  batch_size: 7\n  epochs: 2\n")
    result = plan(tmp_path, f"experiment_name: inc\nbase_config: {LORA_1B}\ninclude: [presets/lab.yaml, cpu]\n"
                            "controls:\n  optimizer.lr: 0.25\nslurm:\n  time: '9:00:00'\n")
    config = result.runs[0].plain
    assert config["optimizer"]["lr"] == 0.25       # the file's own key wins over the fragment's alias of it
    assert config["epochs"] == 3 and config["batch_size"] == 7  # a later fragment wins over the one it includes
    assert config["device"] == "cpu" and config["dtype"] == "fp32" and config["optimizer"]["fused"] is False
    assert (result.slurm.partition, result.slurm.time, result.slurm.gpus_per_run) == ("a100", "9:00:00", 0)


def test_a_variable_wins_over_an_included_control(tmp_path):
    (tmp_path / "frag.yaml").write_text("controls:\n  lora_rank: 4\n")
    result = plan(tmp_path, f"experiment_name: inc\nbase_config: {LORA_1B}\ninclude: [frag.yaml]\n"
                            "variables:\n  lora_rank: [8, 16]\n")
    assert [r.plain["model"]["lora_rank"] for r in result.runs] == [8, 16]


def test_generate_keeps_the_resolved_experiment(tmp_path):
    generate_configs(write_experiment(tmp_path, f"experiment_name: inc\nbase_config: {LORA_1B}\ninclude: [cpu]\n"),
                     tmp_path / "out", validate=False)
    resolved = yaml.safe_load((tmp_path / "out" / expdir.RESOLVED_EXPERIMENT_FILE).read_text())
    assert resolved["controls"]["device"] == "cpu" and resolved["experiment_name"] == "inc"


@pytest.mark.parametrize("files, body, message", [
    ({}, "include: [cpuu]\n", r"experiment.yaml:3: include 'cpuu' is no shipped preset and no file. Did you mean 'cpu'"),
    ({}, "include: [nope/lab.yaml]\n", r"experiment.yaml:3: include 'nope/lab.yaml': no file .*nope/lab.yaml"),
    ({"a.yaml": "include: [b.yaml]\n", "b.yaml": "include: [a.yaml]\n"}, "include: [a.yaml]\n", r"include cycle \(a.yaml -> b.yaml -> a.yaml\)"),
    ({"a.yaml": "controls:\n  epochs: 1\nslurm:\n  partiton: x\n"}, "include: [a.yaml]\n",
     r"a.yaml:4: unknown key 'slurm.partiton'. Did you mean 'partition'"),
    ({"a.yaml": "controls:\n  epochs: 1\ncontrol:\n  x: 1\n"}, "include: [a.yaml]\n",
     r"a.yaml:3: unknown key 'control' in an included file. Did you mean 'controls'"),
    ({"a.yaml": "controls:\n  epoch: 1\n"}, "include: [a.yaml]\n", r"a.yaml:2 \(controls\): unknown key 'epoch'.*Did you mean 'epochs'"),
    ({"a.yaml": "- 1\n"}, "include: [a.yaml]\n", r"a.yaml: an included file's top level must be a mapping"),
])
def test_include_mistakes(tmp_path, files, body, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    text = error_of(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\n" + body)
    assert re.search(message, text), text


# ----------------------------------------------------------------------------- property: an independent expansion


axis_values = st.lists(st.sampled_from([1, 2, 3, 5, 8]), min_size=1, max_size=3, unique=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    variables=st.dictionaries(st.sampled_from(["epochs", "batch_size", "max_steps_per_epoch"]), axis_values, max_size=2),
    zipped=st.integers(0, 3),
    seeds=st.one_of(st.none(), st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True)),
    exclude_value=st.one_of(st.none(), st.sampled_from([1, 2, 3])),
    order=st.booleans(),
)
def test_runs_equal_an_independent_expansion(tmp_path, variables, zipped, seeds, exclude_value, order):
    """Grid order (sections as written, zip groups where written, seeds fastest), exclusion, dense ids,
    derived values: recomputed here without the tool's code."""
    zip_group = {"lora_rank": [4 * (i + 1) for i in range(zipped)], "lora_dropout": [i / 10 for i in range(zipped)]}
    sections = {"variables": variables, "zip": [zip_group] if zipped else []}
    doc = {"experiment_name": "prop", "base_config": LORA_1B}
    for name in (["zip", "variables"] if order else ["variables", "zip"]):
        if sections[name]:
            doc[name] = sections[name]
    if seeds:
        doc["seeds"] = seeds
    doc["derived"] = {"lora_alpha": "{{ 3 * model.lora_rank }}"}
    first = next(iter(variables), None)
    if exclude_value is not None and first:
        doc["exclude"] = [{first: exclude_value}]

    axes: list[list[dict]] = []
    for name in (["zip", "variables"] if order else ["variables", "zip"]):
        if name == "variables":
            axes += [[{k: v} for v in values] for k, values in variables.items()]
        elif zipped:
            axes.append([{"lora_rank": r, "lora_dropout": d} for r, d in zip(*zip_group.values())])
    if seeds:
        axes.append([{"seed": s} for s in seeds])
    expected = []
    for combo in itertools.product(*axes):
        labels = {k: v for part in combo for k, v in part.items()}
        if exclude_value is not None and first and labels[first] == exclude_value:
            continue
        expected.append(labels)

    path = tmp_path / f"prop_{abs(hash(json.dumps(doc, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if not expected:
        with pytest.raises(ConfigWriterError, match="exclude removes all"):
            generate_configs(path, tmp_path / "never", write=False, validate=False)
        return
    result = generate_configs(path, tmp_path / "never", write=False, validate=False)
    assert [r.labels for r in result.runs] == expected
    assert [r.run_id for r in result.runs] == [f"run_{i:03d}" for i in range(len(expected))]
    base_rank = 64  # the base config's model.lora_rank
    for run, labels in zip(result.runs, expected):
        assert run.plain["model"]["lora_alpha"] == 3 * labels.get("lora_rank", base_rank)
        assert run.plain["seed"] == labels.get("seed")
        without_seed = tuple((k, v) for k, v in labels.items() if k != "seed")
        assert run.configuration == list(dict.fromkeys(
            tuple((k, v) for k, v in e.items() if k != "seed") for e in expected)).index(without_seed)


def test_include_may_be_one_name_and_a_fragment_keeps_its_description(tmp_path):
    (tmp_path / "frag.yaml").write_text("description: the fragment's own words\ncontrols:\n  epochs: 2\n")
    result = plan(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\ninclude: frag.yaml\n"
                            "zip:\n  - model: {lora_rank: [4, 8], lora_alpha: [8, 16]}\n")
    assert result.experiment.description is None and result.runs[0].plain["epochs"] == 2
    assert [r.parameters for r in result.runs] == [{"model.lora_rank": 4, "model.lora_alpha": 8},
                                                   {"model.lora_rank": 8, "model.lora_alpha": 16}]


def test_seeds_set_seed_even_when_the_base_has_none(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  lora_rank: 8\nepochs: 1\n")
    result = plan(tmp_path, "experiment_name: e\nbase_config_file: base.yaml\nrecipe: lora_finetune_single_device\n"
                            "seeds: [3, 4]\n")
    assert [r.plain["seed"] for r in result.runs] == [3, 4]


def test_a_list_in_the_base_swept_with_scalars_says_to_write_lists(tmp_path):
    text = error_of(tmp_path, f"experiment_name: e\nbase_config: {LORA_1B}\nvariables:\n  lora_attn_modules: [q_proj, v_proj]\n")
    assert re.search(r"experiment.yaml:4 \(variables\): 'model.lora_attn_modules': the base config has a list .* "
                     r"write one list per run: model.lora_attn_modules: \[\[q_proj\], \[v_proj\]\]", text), text
