"""``slurm.time: auto`` (Appendix J.5): tokens counted by ``generate`` (compile/tokens.py), time limits estimated
by ``submit`` from completed runs of the same model and recipe (execute/walltime.py).

Fast tests check the arithmetic and the evidence rules on hand-made experiment directories (status records
written as a run writes them); slow ones count a real dataset with torchtune, train a real tiny run and let
its throughput set the other runs' limits, and hand such a limit to a real SLURM.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_experiment_dir
from torchtune_config_writer import expdir
from torchtune_config_writer.cli import main
from torchtune_config_writer.compile.tokens import trained_tokens
from torchtune_config_writer.errors import ExperimentDirError, SlurmError, ValidationError
from torchtune_config_writer.execute import submit as submit_mod, walltime
from torchtune_config_writer.expdir import ArrayChunk, State, StatusRecord, load_mapping, write_status
from helpers import cli


# ----------------------------------------------------------------------------- the arithmetic


def test_limit_is_tokens_over_throughput_times_safety_rounded_up_to_minutes() -> None:
    # 600,000 tokens at 1,000 tokens/s: 600 s; x 1.5 = 900 s = 15 min exactly (no rounding up past it)
    assert walltime.limit_minutes(600_000, 1_000.0, 1.5) == 15
    assert walltime.limit_minutes(600_000, 1_000.0, 2.0) == 20          # the safety factor scales it
    assert walltime.limit_minutes(600_001, 1_000.0, 1.5) == 16          # a fraction of a minute is a minute
    assert walltime.limit_minutes(600_000, 1_000.0, 1.5, lead_seconds=300) == 20  # the warning signal's lead
    # the floor: a tiny run still gets MIN_MINUTES; an explicit floor is obeyed
    assert walltime.limit_minutes(10, 1_000.0, 1.5) == walltime.MIN_MINUTES == 5
    assert walltime.limit_minutes(10, 1_000.0, 1.5, floor=1) == 1
    with pytest.raises(ValueError):
        walltime.limit_minutes(10, 0.0, 1.5)


def test_limits_are_written_as_slurm_times() -> None:
    assert [walltime.format_limit(m) for m in (5, 59, 60, 61, 24 * 60 - 1, 24 * 60, 3 * 24 * 60 + 75)] == [
        "00:05:00", "00:59:00", "01:00:00", "01:01:00", "23:59:00", "1-00:00:00", "3-01:15:00"]
    assert walltime.check_time(" 90 ") == "90" and walltime.check_time("1-02:00:00") == "1-02:00:00"
    for bad in ("1h", "auto", "02:00:00x", ""):
        with pytest.raises(SlurmError, match="not a SLURM time limit"):
            walltime.check_time(bad)


def test_the_model_key_is_the_model_section_alone() -> None:
    base = ("# Generated\noutput_dir: /o/run_000\nmodel:\n  _component_: torchtune.models.llama2.lora_llama2\n"
            "  lora_rank: 8  # higher is slower\n  lora_alpha: 16.0\n  lora_attn_modules: [q_proj, v_proj]\n"
            "\n# a comment between keys\ntokenizer:\n  path: /t\nseed: 1\n")
    key = walltime.model_key(base)
    assert json.loads(key) == {"_component_": "torchtune.models.llama2.lora_llama2", "lora_rank": 8, "lora_alpha": 16,
                               "lora_attn_modules": ["q_proj", "v_proj"]}
    # what is outside model: (seed, paths, comments) and how a whole number is spelled do not matter
    other = base.replace("seed: 1", "seed: 2").replace("/o/run_000", "/o/run_001").replace("16.0", "16")
    assert walltime.model_key(other) == key
    assert walltime.model_key(base.replace("lora_rank: 8", "lora_rank: 16")) != key
    assert walltime.model_key("model: {_component_: m, rank: 8}\n") == '{"_component_": "m", "rank": 8}'
    assert walltime.model_key("seed: 1\n") is None


def test_arrays_are_split_so_each_has_one_limit() -> None:
    chunks = [ArrayChunk(0, (0, 1, 2, 3)), ArrayChunk(4, (0, 1))]
    limits = {0: "00:05:00", 1: "00:09:00", 2: "00:05:00", 3: "00:09:00", 4: "00:09:00", 5: "00:09:00"}
    split = walltime.split_by_limit(chunks, limits)
    assert [(c.offset, c.spec()) for c in split] == [(0, "0,2"), (0, "1,3"), (4, "0-1")]
    assert {limits[i] for c in split for i in c.indices} == set(limits.values())
    assert all(len({limits[i] for i in c.indices}) == 1 for c in split)
    assert walltime.split_by_limit(chunks, {}) == chunks  # no limits: the arrays as they were


def test_trained_tokens_follows_the_recipe_loop() -> None:
    # 400 samples of 110 tokens on average, batch 4: 100 batches per epoch
    assert trained_tokens(400, 44_000, epochs=1, batch_size=4) == 44_000
    assert trained_tokens(400, 44_000, epochs=3, batch_size=4) == 132_000
    assert trained_tokens(402, 44_220, epochs=1, batch_size=4) == 44_000       # the last partial batch is dropped
    # max_steps_per_epoch x gradient_accumulation_steps batches at most: 5 x 2 x 4 = 40 samples
    assert trained_tokens(400, 44_000, epochs=2, batch_size=4, gradient_accumulation_steps=2,
                          max_steps_per_epoch=5) == 8_800
    # a cap above what the data holds changes nothing; 2 ranks read ceil(401/2)=201 samples each: 50 batches of 4
    assert trained_tokens(400, 44_000, epochs=1, batch_size=4, max_steps_per_epoch=1000) == 44_000
    assert trained_tokens(401, 44_110, epochs=1, batch_size=4, world_size=2) == 44_000
    assert trained_tokens(0, 0, epochs=1, batch_size=4) == 0


# ----------------------------------------------------------------------------- evidence, on hand-made directories


def _auto_experiment(directory: Path, base_config: Path, runs: list[dict], tokens: list[int | None], *,
                     recipe: str = "lora_finetune_single_device", time: str = "auto", requeue: bool = True) -> Path:
    """An experiment directory as generate writes it with slurm.time: auto (tokens recorded per run)."""
    write_experiment_dir(directory, base_config, runs, recipe=recipe, name=directory.name)
    mapping = load_mapping(directory)
    mapping = dataclasses.replace(
        mapping, slurm=expdir.SlurmPlan(gpus_per_run=0, time=time, requeue=requeue),
        runs=tuple(dataclasses.replace(r, tokens=t) for r, t in zip(mapping.runs, tokens)))
    expdir.write_mapping(directory, mapping)
    (directory / expdir.SCRIPT_FILE).write_text("#!/bin/bash\n")  # submit checks that the script exists
    return directory


def _completed(exp: Path, run_id: str, seconds: float, **fields) -> None:
    """A completed run's status record, as run_one writes it (times in whole seconds)."""
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    write_status(exp, StatusRecord(run_id, State.COMPLETED, exit_code=0, started=start.isoformat(),
                                   ended=(start + timedelta(seconds=seconds)).isoformat(), **fields))


RANK_8, RANK_16 = {"optimizer.lr": 1e-3}, {"model.lora_rank": 16, "optimizer.lr": 1e-3}


def test_limits_come_from_completed_runs_of_the_same_model_and_recipe(tmp_path: Path, tiny_assets) -> None:
    base = tiny_assets.base_config
    root = tmp_path / "outputs"
    exp = _auto_experiment(root / "study", base, [RANK_8, {"optimizer.lr": 2e-3}, RANK_16, {"optimizer.lr": 3e-3},
                                                  {"optimizer.lr": 4e-3}, {"optimizer.lr": 5e-3}],
                           [60_000, 30_000, 50_000, 600_000, 1_200_000, None])
    _completed(exp, "run_000", 100)                  # evidence: 60,000 tokens in 100 s
    _completed(exp, "run_001", 10, requeues=1)       # requeued: its record times only its last part
    _completed(exp, "run_002", 1)                    # another model (lora_rank 16)
    write_status(exp, StatusRecord("run_005", State.FAILED, exit_code=1, started="2026-01-01T12:00:00+00:00",
                                   ended="2026-01-01T12:00:09+00:00"))  # failed: no evidence (and no tokens)
    same = _auto_experiment(root / "pilot", base, [RANK_8, RANK_8 | {"optimizer.lr": 9e-3}], [40_000, 10_000])
    _completed(same, "run_000", 100)                 # evidence from a sibling: 40,000 tokens in 100 s
    _completed(same, "run_001", 50, resumed_from_epoch=0)   # resumed: not evidence
    other = _auto_experiment(root / "full", base, [RANK_8], [1_000_000], recipe="full_finetune_single_device")
    _completed(other, "run_000", 1)                  # another recipe: not evidence
    (root / "not_an_experiment").mkdir()             # folders around it that are not experiments are skipped
    (root / "broken").mkdir()
    (root / "broken" / expdir.MAPPING_FILE).write_text("format: 1\nruns: []\n")

    mapping = load_mapping(exp)
    todo = [mapping.by_index[3], mapping.by_index[4]]
    got = walltime.plan_limits(exp, mapping, todo)
    # (60,000 + 40,000) tokens / (100 + 100) s = 500 tokens/s; run_003: 600,000 / 500 x 1.5 + 300 s = 2,100 s
    assert got.limits == {3: "00:35:00", 4: "01:05:00"}
    assert got.lines == ("time limits from 2 completed runs (1 of this experiment, 1 of pilot) at 500 tokens/s x 1.5 "
                         "+ 300 s for the warning signal: 00:35:00 for run 3, 01:05:00 for run 4",)
    # the other model's run gets its own throughput: run_002's 50,000 tokens in 1 s
    rank16 = walltime.plan_limits(exp, mapping, [mapping.by_index[2]])
    assert rank16.limits == {2: "00:06:00"}  # 50,000 / 50,000 x 1.5 = 1.5 s + 300 s: 6 minutes

    # submit splits the array by limit and passes each --time on the sbatch command line
    dry = cli("submit", str(exp), "--dry-run", "--runs", "3-4")
    assert dry.exit_code == 0, dry.output
    commands = [line for line in dry.stdout.splitlines() if "sbatch" in line]
    assert [re.search(r"--array=(\S+)", c).group(1) for c in commands] == ["3", "4"]
    assert [re.search(r"--time=(\S+)", c).group(1) for c in commands] == ["00:35:00", "01:05:00"]
    assert "time limits from 2 completed runs" in dry.stdout


def test_without_requeue_the_limit_has_no_warning_lead(tmp_path: Path, tiny_assets) -> None:
    exp = _auto_experiment(tmp_path / "e", tiny_assets.base_config, [RANK_8, {"optimizer.lr": 2e-3}],
                           [10_000, 1_000_000], requeue=False)
    _completed(exp, "run_000", 10)  # 1,000 tokens/s
    mapping = load_mapping(exp)
    got = walltime.plan_limits(exp, mapping, [mapping.by_index[1]])
    assert got.limits == {1: "00:25:00"}  # 1,000 s x 1.5 = 1,500 s
    assert "warning" not in got.lines[0] and "from 1 completed run (1 of this experiment)" in got.lines[0]


def test_no_evidence_is_refused_with_what_was_looked_for_and_the_ways_out(tmp_path: Path, tiny_assets) -> None:
    root = tmp_path / "outputs"
    exp = _auto_experiment(root / "study", tiny_assets.base_config, [RANK_8, {"optimizer.lr": 2e-3}], [1000, 1000])
    other = _auto_experiment(root / "ranks", tiny_assets.base_config, [RANK_16], [1000])
    _completed(other, "run_000", 5)  # a sibling, but with another model
    result = CliRunner().invoke(main, ["submit", str(exp), "--dry-run"])
    assert result.exit_code == 1
    message = result.output
    assert "slurm.time is auto, but no completed run with recipe lora_finetune_single_device, model " \
           "torchtune.models.llama2.lora_llama2 (" in message
    assert "lora_rank=8" in message and "0 GPUs" in message and "2 run(s) (run_000, run_001)" in message
    assert f"this experiment ({exp.resolve()}) and 1 other experiment directory under {root.resolve()}" in message
    assert f"submit {exp.resolve()} --runs 0 --time 02:00:00" in message and "--evidence DIR" in message
    assert "Traceback" not in message
    # nothing was submitted, nothing recorded
    assert not (exp / expdir.JOBS_FILE).exists()
    # an --evidence directory that is not an experiment is an error of its own
    with pytest.raises(ExperimentDirError, match="--evidence .*nowhere"):
        submit_mod.submit(exp, dry_run=True, echo=lambda line: None, evidence=[tmp_path / "nowhere"])


def test_the_time_option_overrides_the_estimate_for_one_submission(tmp_path: Path, tiny_assets) -> None:
    exp = _auto_experiment(tmp_path / "e", tiny_assets.base_config, [RANK_8, {"optimizer.lr": 2e-3}], [1000, 9000])
    result = cli("submit", str(exp), "--dry-run", "--time", "01:30:00")  # no evidence needed
    assert result.exit_code == 0, result.output
    assert "time limit 01:30:00 for all 2 run(s) (--time)" in result.stdout
    assert re.findall(r"--time=(\S+)", result.stdout) == ["01:30:00"]
    assert re.findall(r"--array=(\S+)", result.stdout) == ["0-1"]
    bad = CliRunner().invoke(main, ["submit", str(exp), "--dry-run", "--time", "soon"])
    assert bad.exit_code == 1 and "--time 'soon' is not a SLURM time limit" in bad.output
    # an explicit slurm.time is left to the script unless --time overrides it
    fixed = _auto_experiment(tmp_path / "f", tiny_assets.base_config, [RANK_8], [None], time="02:00:00")
    assert "--time" not in cli("submit", str(fixed), "--dry-run").stdout
    assert "--time=10" in cli("submit", str(fixed), "--dry-run", "--time", "10").stdout


def test_evidence_from_a_directory_elsewhere(tmp_path: Path, tiny_assets) -> None:
    exp = _auto_experiment(tmp_path / "a" / "study", tiny_assets.base_config, [RANK_8], [200_000])
    pilot = _auto_experiment(tmp_path / "b" / "pilot", tiny_assets.base_config, [RANK_8], [100_000])
    _completed(pilot, "run_000", 100)  # 1,000 tokens/s, not a sibling of the study
    with pytest.raises(SlurmError, match="no completed run"):
        submit_mod.submit(exp, dry_run=True, echo=lambda line: None)
    lines: list[str] = []
    arrays = submit_mod.submit(exp, dry_run=True, echo=lines.append, evidence=[pilot])
    assert [a.command[4] for a in arrays] == ["--time=00:10:00"]  # 200 s x 1.5 + 300 s = 600 s
    assert any("(1 of pilot) at 1,000 tokens/s" in line for line in lines)


def test_a_resubmitted_run_without_evidence_keeps_its_previous_limit(tmp_path: Path, tiny_assets) -> None:
    # a pilot submitted with --time failed (out of memory, say): no run completed, so nothing to measure
    exp = _auto_experiment(tmp_path / "e", tiny_assets.base_config, [RANK_8, {"optimizer.lr": 2e-3}], [1000, 1000])
    expdir.append_job(exp, expdir.JobRecord("41", "2026-01-01T12:00:00+00:00", "0", 0, (0,),
                                            f"sbatch --parsable --array=0 --chdir={exp} --time=02:00:00 x 0"))
    write_status(exp, StatusRecord("run_000", State.FAILED, exit_code=1, slurm_array_job_id="41",
                                   slurm_array_task_id="0"))
    mapping = load_mapping(exp)
    got = walltime.plan_limits(exp, mapping, [mapping.by_index[0]])
    assert got.limits == {0: "02:00:00"} and "keep the time limit of their previous submission" in got.lines[0]
    # the run never submitted has no previous limit: still refused
    with pytest.raises(SlurmError, match="no completed run"):
        walltime.plan_limits(exp, mapping, [mapping.by_index[0], mapping.by_index[1]])
    # a limit that ran out is not reused
    write_status(exp, StatusRecord("run_000", State.FAILED, exit_code=0, slurm_state="TIMEOUT"))
    with pytest.raises(SlurmError, match="no completed run"):
        walltime.plan_limits(exp, mapping, [mapping.by_index[0]])


def test_runs_without_a_token_count_are_refused(tmp_path: Path, tiny_assets) -> None:
    exp = _auto_experiment(tmp_path / "e", tiny_assets.base_config, [RANK_8], [None])
    with pytest.raises(SlurmError, match="have no token count \\(run_000\\).*--no-validate.*--time"):
        submit_mod.submit(exp, dry_run=True, echo=lambda line: None)


# ----------------------------------------------------------------------------- generate


def _generate(tiny_assets, exp_dir: Path, *, variables: dict, controls: dict | None = None, slurm: dict | None = None,
              validate: bool = True, **more):
    from torchtune_config_writer import generate_configs

    return generate_configs({
        "experiment_name": exp_dir.name,
        "base_config_file": str(tiny_assets.base_config),
        "recipe": "lora_finetune_single_device",
        "variables": variables,
        "controls": controls or {},
        "slurm": {"gpus_per_run": 0, "time": "auto", **(slurm or {})},
        "output": {"experiment_dir": str(exp_dir)},
        **more,
    }, validate=validate)


def test_time_auto_writes_no_time_line(tmp_path: Path, tiny_assets) -> None:
    _generate(tiny_assets, tmp_path / "auto", variables={"optimizer.lr": [1e-3, 2e-3]}, validate=False)
    text = (tmp_path / "auto" / expdir.SCRIPT_FILE).read_text()
    assert "#SBATCH --time" not in text and "#SBATCH --array=0-1" in text
    assert load_mapping(tmp_path / "auto").slurm.time_auto
    _generate(tiny_assets, tmp_path / "fixed", variables={"optimizer.lr": [1e-3]}, slurm={"time": "02:00:00"},
              validate=False)
    assert "#SBATCH --time=02:00:00" in (tmp_path / "fixed" / expdir.SCRIPT_FILE).read_text()


def test_evaluations_need_their_own_time_with_time_auto(tmp_path: Path, tiny_assets) -> None:
    heldout = {"heldout": {"data_files": str(tiny_assets.data_file)}}
    with pytest.raises(ValidationError, match="set evaluation.slurm.time"):
        _generate(tiny_assets, tmp_path / "a", variables={"optimizer.lr": [1e-3]}, validate=False, evaluation=heldout)
    with pytest.raises(ValidationError, match="evaluation.slurm.time cannot be auto"):
        _generate(tiny_assets, tmp_path / "b", variables={"optimizer.lr": [1e-3]}, validate=False,
                  evaluation={**heldout, "slurm": {"time": "auto"}}, slurm={"time": "01:00:00"})
    _generate(tiny_assets, tmp_path / "c", variables={"optimizer.lr": [1e-3]}, validate=False,
              evaluation={**heldout, "slurm": {"time": "00:30:00"}})
    assert "#SBATCH --time=00:30:00" in (tmp_path / "c" / expdir.EVAL_SCRIPT_FILE).read_text()
    assert "#SBATCH --time" not in (tmp_path / "c" / expdir.SCRIPT_FILE).read_text()


def _alpaca_prompt(record: dict) -> str:
    """torchtune's alpaca template (AlpacaToMessages), spelled out here."""
    head = "Below is an instruction that describes a task"
    tail = "Write a response that appropriately completes the request.\n\n"
    if record["input"]:
        return (f"{head}, paired with an input that provides further context. {tail}"
                f"### Instruction:\n{record['instruction']}\n\n### Input:\n{record['input']}\n\n### Response:\n")
    return f"{head}. {tail}### Instruction:\n{record['instruction']}\n\n### Response:\n"


def _independent_lengths(tiny_assets, max_seq_len: int) -> list[int]:
    """Each record's tokens as the recipe sees them, tokenized here with SentencePiece itself: BOS, the prompt in
    llama2's chat template ([INST] ... [/INST]), the response, EOS; cut at max_seq_len."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_assets.tokenizer))
    records = json.loads(tiny_assets.data_file.read_text())
    return [min(max_seq_len, 2 + len(sp.encode(f"[INST] {_alpaca_prompt(r)} [/INST]")) + len(sp.encode(r["output"])))
            for r in records]


@pytest.mark.slow
def test_generate_records_the_tokens_each_run_trains_on(tmp_path: Path, tiny_assets) -> None:
    exp = tmp_path / "counted"
    result = _generate(tiny_assets, exp, variables={"tokenizer.max_seq_len": [256, 110], "max_steps_per_epoch": [3, None]},
                       controls={"epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2})
    note = next(n for n in result.notes if n.startswith("slurm.time auto"))
    assert "counted the tokens of 4 run(s)" in note and "from 2 tokenized dataset(s) of 800 samples" in note
    mapping = load_mapping(exp)
    records = len(json.loads(tiny_assets.data_file.read_text()))
    for run in mapping.runs:
        lengths = _independent_lengths(tiny_assets, run.parameters["tokenizer.max_seq_len"])
        assert len(lengths) == records == 400
        steps = run.parameters["max_steps_per_epoch"]
        # batches per epoch: 400 // 4 = 100, or 3 steps x 2 accumulated batches = 6 when capped
        batches = 100 if steps is None else min(100, steps * 2)
        expected = round(sum(lengths) * (batches * 4) / records * 2)
        assert run.tokens == expected, (run.run_id, run.parameters)
    short = _independent_lengths(tiny_assets, 110)
    assert max(short) == 110 and min(short) < 110  # some records were cut, some were not: truncation was counted
    assert "tokens" in (exp / expdir.MAPPING_FILE).read_text()


@pytest.mark.slow
def test_a_dataset_that_cannot_be_loaded_is_a_generate_error(tmp_path: Path, tiny_assets) -> None:
    with pytest.raises(ValidationError) as err:
        _generate(tiny_assets, tmp_path / "hub", variables={"optimizer.lr": [1e-3]},
                  controls={"dataset": {"_component_": "torchtune.datasets.alpaca_dataset",
                                        "source": "no-such-user/no-such-dataset", "split": "train"}})
    message = str(err.value)
    assert "slurm.time is auto" in message and "run_000" in message and "give slurm.time explicitly" in message
    assert not (tmp_path / "hub").exists()  # nothing written


# ----------------------------------------------------------------------------- a real training as evidence


@pytest.mark.slow
def test_a_trained_run_sets_the_limits_of_the_others_and_of_a_sibling(tmp_path: Path, tiny_assets) -> None:
    root = tmp_path / "outputs"
    exp = root / "sweep"
    _generate(tiny_assets, exp, variables={"epochs": [1, 30, 90]}, controls={"max_steps_per_epoch": 2})
    result = cli("run", str(exp), "--runs", "0")  # a real tiny training, locally
    assert result.exit_code == 0, result.output
    mapping = load_mapping(exp)
    rec = expdir.read_status(exp, "run_000")
    assert rec.state == State.COMPLETED
    tps = mapping.by_index[0].tokens / max(1.0, rec.wall_seconds())

    def expected(run) -> str:
        return walltime.format_limit(max(5, math.ceil((run.tokens / tps * 1.5 + 300) / 60)))

    dry = cli("submit", str(exp), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "skip 1 completed run(s) (run_000)" in dry.stdout
    assert f"time limits from 1 completed run (1 of this experiment) at {tps:,.0f} tokens/s x 1.5" in dry.stdout
    limits = {i: expected(mapping.by_index[i]) for i in (1, 2)}
    commands = [line for line in dry.stdout.splitlines() if "sbatch" in line]
    got = {}
    for c in commands:
        limit = re.search(r"--time=(\S+)", c).group(1)
        for task in re.search(r"--array=(\S+)", c).group(1).split(","):
            got[int(task)] = limit
    assert got == limits
    assert len(commands) == len(set(limits.values()))  # one array per distinct limit

    # a sibling experiment with the same model and recipe is measured by the same run
    sibling = root / "more"
    _generate(tiny_assets, sibling, variables={"optimizer.lr": [2e-3, 4e-3]}, controls={"max_steps_per_epoch": 2})
    dry = cli("submit", str(sibling), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "time limits from 1 completed run (1 of sweep)" in dry.stdout
    assert re.findall(r"--time=(\S+)", dry.stdout) == [expected(load_mapping(sibling).by_index[0])]
    # ... but not one with another model
    other = root / "rank16"
    _generate(tiny_assets, other, variables={"optimizer.lr": [2e-3]},
              controls={"max_steps_per_epoch": 2, "model.lora_rank": 16})
    refused = CliRunner().invoke(main, ["submit", str(other), "--dry-run"])
    assert refused.exit_code == 1 and "no completed run with recipe lora_finetune_single_device" in refused.output
    assert "lora_rank=16" in refused.output and "2 other experiment directories" in refused.output


@pytest.mark.slow
def test_the_estimated_limit_reaches_slurm(slurm_cluster, tmp_path: Path, tiny_assets) -> None:
    exp = _auto_experiment(tmp_path / "e", tiny_assets.base_config, [RANK_8, {"optimizer.lr": 2e-3}],
                           [10_000, 1_000_000], requeue=False)
    from torchtune_config_writer.compile.sbatch import write_submit_scripts

    write_submit_scripts(exp, load_mapping(exp))  # the real script: no #SBATCH --time with auto
    _completed(exp, "run_000", 10)  # 1,000 tokens/s: run_001 needs 1,000 s x 1.5 = 25 minutes
    result = cli("submit", str(exp), "--runs", "1")
    assert result.exit_code == 0, result.output
    job = expdir.read_jobs(exp)[-1].job_id
    shown = slurm_cluster.run("scontrol", "-o", "show", "job", job).stdout
    slurm_cluster.run("scancel", job)
    assert re.search(r"TimeLimit=(\S+)", shown).group(1) == "00:25:00"
    slurm_cluster.wait_idle(120)
