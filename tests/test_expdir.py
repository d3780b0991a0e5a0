"""The experiment-directory contract (expdir.py): what generate writes is what the execute side reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from torchtune_config_writer import expdir, generate_configs
from torchtune_config_writer.errors import ExperimentDirError
from torchtune_config_writer.expdir import (
    JobRecord, MetricLog, SlurmPlan, State, StatusRecord, load_mapping, read_jobs, read_status,
)

from helpers import run_table


def test_run_mapping_round_trips(tmp_path):
    mapping = dataclasses.replace(
        run_table(3, SlurmPlan(max_concurrent=2, max_array_size=7, gpus_per_run=0, time="1:00:00"), name="rt"),
        variables=("optimizer.lr",),
    )
    runs = list(mapping.runs)
    runs[1] = dataclasses.replace(runs[1], parameters={"optimizer.lr": 0.001}, metric_log=MetricLog("/x/logs", "m.txt"))
    mapping = dataclasses.replace(mapping, runs=tuple(runs))
    expdir.write_mapping(tmp_path, mapping)
    assert load_mapping(tmp_path) == mapping
    assert load_mapping(tmp_path).run_id_of(1) == "run_001"


def test_generate_records_what_execution_needs(tiny_assets, tmp_path):
    exp = tmp_path / "exp"
    generate_configs({
        "experiment_name": "contract", "base_config_file": str(tiny_assets.base_config),
        "recipe": "lora_finetune_single_device", "variables": {"optimizer.lr": [1e-3, 2e-3]},
        "controls": {"metric_logger": {"filename": "metrics.txt"}},
        "slurm": {"max_concurrent": 1, "max_array_size": 5}, "output": {"experiment_dir": str(exp)},
    }, validate=False)
    mapping = load_mapping(exp)
    assert (mapping.slurm.max_concurrent, mapping.slurm.max_array_size) == (1, 5)
    assert mapping.slurm.gpus_per_run == 0  # every run's device is cpu
    for run in mapping.runs:
        # ${output_dir}/logs resolved now, so collect never parses the config
        assert run.metric_log == MetricLog(str(Path(run.output_dir) / "logs"), "metrics.txt")
    assert "torchtune_config_writer:" not in (exp / expdir.SCRIPT_FILE).read_text()  # no settings in a comment


def test_a_directory_of_another_format_says_to_regenerate(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    path = exp / expdir.MAPPING_FILE
    path.write_text(path.read_text().replace(f"format: {expdir.FORMAT}\n", ""))
    with pytest.raises(ExperimentDirError, match="written by another version.*generate the experiment again"):
        load_mapping(exp)
    data = yaml.safe_load(path.read_text())
    data["format"] = expdir.FORMAT
    del data["runs"][0]["metric_log"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ExperimentDirError, match=r"runs\[0\] lacks metric_log"):
        load_mapping(exp)


def test_status_records_ignore_fields_a_newer_version_adds(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    expdir.status_path(exp, "run_000").parent.mkdir()
    expdir.status_path(exp, "run_000").write_text('{"state": "failed", "exit_code": 2, "written_by": "a newer version"}')
    assert read_status(exp, "run_000") == StatusRecord("run_000", State.FAILED, exit_code=2)


def test_jobs_are_appended_under_a_lock_file_opened_for_writing(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    job = JobRecord("7", "2026-01-01T00:00:00+00:00", "0%1", 0, (0,), "sbatch ...")
    with expdir.jobs_lock(exp):
        expdir.append_job(exp, job)
        expdir.append_job(exp, dataclasses.replace(job, job_id="8"))
    assert [j.job_id for j in read_jobs(exp)] == ["7", "8"]
    assert (exp / expdir.JOBS_LOCK_FILE).is_file()


def test_an_unlockable_directory_is_a_clear_error(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    (exp / expdir.JOBS_LOCK_FILE).mkdir()  # opening it read-write fails, as an unwritable directory would
    with pytest.raises(ExperimentDirError, match="cannot lock .*nothing was submitted"):
        with expdir.jobs_lock(exp):
            pass


def test_a_job_sbatch_accepted_is_named_when_it_cannot_be_recorded(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}])
    (exp / expdir.JOBS_FILE).mkdir()  # the record cannot be replaced: an OSError, as on a full or broken disk
    job = JobRecord("4242", "2026-01-01T00:00:00+00:00", "0", 0, (0,), "sbatch ...")
    with pytest.raises(ExperimentDirError, match=r"SLURM accepted job 4242 .*scancel 4242"):
        expdir.append_job(exp, job)


def test_parameters_are_formatted_one_way():
    params = {"model.lora_rank": 8, "optimizer.lr": 0.001, "a.lr": 1}
    assert expdir.format_parameters(params) == "model.lora_rank=8, optimizer.lr=0.001, a.lr=1"
    assert expdir.format_parameters(params, short=True, sep=" ") == "lora_rank=8 optimizer.lr=0.001 a.lr=1"


def test_run_ids_keep_the_experiments_width(tmp_path):
    mapping = run_table(2)
    wide = dataclasses.replace(mapping, runs=tuple(dataclasses.replace(r, run_id=f"run_{r.index:04d}") for r in mapping.runs))
    assert (wide.run_id_of(1), wide.run_id_of(7)) == ("run_0001", "run_0007")
    from torchtune_config_writer.errors import RunSelectionError
    from torchtune_config_writer.execute.selection import select_runs

    with pytest.raises(RunSelectionError, match=r"runs 0-1 \(run_0000 .. run_0001\)"):
        select_runs(wide, "5")


def test_the_fast_json_copy_is_used_only_while_it_matches_the_yaml(make_experiment_dir):
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 3e-3}])
    assert (exp / expdir.MAPPING_CACHE_FILE).is_file()
    path = exp / expdir.MAPPING_FILE
    path.write_text(path.read_text().replace("validation: passed", "validation: failed"))  # edited by hand
    assert [r.validation for r in load_mapping(exp).runs] == ["failed", "failed"]
    (exp / expdir.MAPPING_CACHE_FILE).write_text("{not json")  # a damaged copy is ignored too
    assert load_mapping(exp).runs[1].parameters == {"optimizer.lr": 3e-3}


def test_metric_log_paths_keep_their_characters():
    from torchtune_config_writer.compile.writer import metric_log

    logger = {"_component_": "torchtune.training.metric_logging.DiskLogger", "log_dir": "${output_dir}/logs"}
    odd = Path("/e/runs/a\\1b")  # a backslash followed by a digit: a group reference to re.sub
    assert metric_log({"metric_logger": logger}, odd, Path("/e")) == MetricLog(f"{odd}/logs", None)
    relative = {"metric_logger": {**logger, "log_dir": "metrics", "filename": "m.txt"}}
    assert metric_log(relative, odd, Path("/e")) == MetricLog("/e/metrics", "m.txt")
    assert metric_log({"metric_logger": {"_component_": "torchtune.training.metric_logging.StdoutLogger"}},
                      odd, Path("/e")) is None
