"""Out-of-memory retries (Appendix J.3): detection (execute/oom.py), the next attempt's config
(compile/attempts.py, the hidden ``attempt`` command), and the retry in a local ``run``, inside a
SLURM task and for ``submit --retry-oom``; ``status`` and ``collect`` showing attempts.

No GPU here, so the one fake: a copy of torchtune's LoRA recipe (``oom_recipe``) that raises
``torch.OutOfMemoryError`` when ``batch_size`` is above a threshold, as a GPU that is too small would.
Everything else is real: torchtune validates the attempts, the tiny model trains, SLURM runs the tasks.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchtune_config_writer import expdir
from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.attempts import halve, write_attempt
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.errors import AttemptError
from torchtune_config_writer.execute import oom, slurm_state, submit
from torchtune_config_writer.expdir import State, StatusRecord, load_mapping, read_status, read_tail, write_status
from torchtune_config_writer.results.collect import collect_rows
from helpers import cli, custom_recipe

OOM_TRACEBACK = """\
INFO:torchtune.utils._logging:Model is initialized with precision torch.bfloat16.
Traceback (most recent call last):
  File "/opt/recipes/lora_finetune_single_device.py", line 803, in recipe_main
    recipe.train()
  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1751, in _call_impl
    return forward_call(*args, **kwargs)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.25 GiB \
of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.18 GiB memory in use.

# failed with exit code 1 at 2026-11-22T02:31:05+00:00
"""


def oom_recipe(directory: Path, above: int) -> Path:
    """torchtune's single-device LoRA recipe, except that it raises torch's out-of-memory error after its setup
    when ``batch_size`` is above ``above``: what a GPU too small for that batch does (the one fake here)."""
    path = custom_recipe(directory)
    text = path.read_text()
    anchor = "    recipe.setup(cfg=cfg)\n"
    assert text.count(anchor) == 1
    path.write_text(text.replace(anchor, anchor + (
        f"    if cfg.batch_size > {above}:  # the test's stand-in for a GPU that is too small\n"
        "        raise torch.OutOfMemoryError(\"CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \"\n"
        "                                     \"capacity of 15.77 GiB of which 1.06 GiB is free.\")\n")))
    return path


def generate(tiny_assets, exp_dir: Path, recipe: Path, batch_size: int, *, oom_retry: dict | None = None,
             slurm: dict | None = None) -> Path:
    """One tiny CPU run (2 optimizer steps) with ``batch_size`` and gradient accumulation 1, by the OOM recipe."""
    from torchtune_config_writer import generate_configs

    experiment = {
        "experiment_name": exp_dir.name,
        "base_config_file": str(tiny_assets.base_config),
        "recipe": str(recipe),
        "variables": {"optimizer.lr": [1e-3]},
        "controls": {"batch_size": batch_size, "gradient_accumulation_steps": 1, "max_steps_per_epoch": 2,
                     "epochs": 1},
        "output": {"experiment_dir": str(exp_dir)},
        "slurm": slurm or {"gpus_per_run": 0, "cpus_per_task": 1},
    }
    if oom_retry is not None:
        experiment["oom_retry"] = oom_retry
    generate_configs(experiment)
    return exp_dir


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("text, sign", [
    (OOM_TRACEBACK, "torch.OutOfMemoryError"),
    ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", "torch.cuda.OutOfMemoryError"),
    ("RuntimeError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 39.59 GiB total capacity)",
     "CUDA out of memory"),
    ("torch.OutOfMemoryError: HIP out of memory. Tried to allocate 512.00 MiB", "torch.OutOfMemoryError"),
    ("slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch. Some of your processes may have been killed "
     "by the cgroup out-of-memory handler.", "oom_kill event"),
    ("slurmstepd: error: Detected 2 oom-kill event(s) in StepId=8.0.", "oom-kill event"),
])
def test_out_of_memory_is_found_in_a_log(text: str, sign: str) -> None:
    assert oom.oom_in_log(text) == sign
    assert oom.oom_evidence(text, "FAILED") == f"{sign} in its log"


@pytest.mark.parametrize("text", [
    "ValueError: batch_size must be a positive integer value, but got batch_size=0",
    "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.",
    "RuntimeError: [enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory",
    "# run_000 ran out of memory; not retried",  # what this tool writes about it is not the evidence
    "",
])
def test_other_failures_are_not_out_of_memory(text: str) -> None:
    assert oom.oom_in_log(text) is None
    assert oom.oom_evidence(text, "FAILED", 0) is None


def test_slurm_and_the_job_cgroup_also_say_out_of_memory() -> None:
    assert oom.oom_evidence("Killed", "OUT_OF_MEMORY") == "SLURM state OUT_OF_MEMORY"
    assert oom.oom_evidence("Killed", expdir.SlurmState.OUT_OF_MEMORY) == "SLURM state OUT_OF_MEMORY"
    assert oom.oom_evidence("Killed", "TIMEOUT") is None
    assert oom.oom_evidence("Killed", None, cgroup_kills=1) == "the job cgroup counted 1 OOM kill(s)"
    v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"
    v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
    assert (oom.oom_kills(v2), oom.oom_kills(v1), oom.oom_kills("oom_kill_disable 0\n")) == (2, 1, None)
    # only this job's cgroups count (a parent's includes other jobs' kills); none outside a job cgroup
    files = oom.job_memory_files("12:memory:/slurm/uid_0/job_41/step_batch/task_0\n0::/init.scope\n", "41", "/cg")
    assert [str(f) for f in files] == ["/cg/memory/slurm/uid_0/job_41/step_batch/task_0/memory.oom_control",
                                       "/cg/memory/slurm/uid_0/job_41/step_batch/memory.oom_control",
                                       "/cg/memory/slurm/uid_0/job_41/memory.oom_control"]
    assert oom.job_memory_files("0::/system.slice/slurmstepd.scope/job_4/step_0\n", "41") == []


def test_only_the_tail_of_a_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("Step 1 | loss:6.3\n" * 100_000 + OOM_TRACEBACK)  # ~1.9 MB, the error at its end
    tail = read_tail(log, oom.TAIL_BYTES)
    assert len(tail.encode()) <= oom.TAIL_BYTES and oom.oom_in_log(tail) == "torch.OutOfMemoryError"
    early = tmp_path / "early.log"
    early.write_text(OOM_TRACEBACK + "Step 1 | loss:6.3\n" * 10_000)  # an old error, 180 KB before the end
    assert oom.oom_in_log(read_tail(early, oom.TAIL_BYTES)) is None
    assert read_tail(tmp_path / "missing.log", oom.TAIL_BYTES) == "" and read_tail(None, oom.TAIL_BYTES) == ""


# ----------------------------------------------------------------------------- the next attempt's config


def test_halving_keeps_the_effective_batch_or_says_why_not() -> None:
    assert halve({"batch_size": 8, "gradient_accumulation_steps": 1}) == \
        oom_halved({"batch_size": [8, 4], "gradient_accumulation_steps": [1, 2]}, None)
    assert halve({"batch_size": 6, "gradient_accumulation_steps": 4}).note is None  # 24 stays 24
    assert halve({"batch_size": 7, "gradient_accumulation_steps": 2}).note == \
        "the effective batch size changes from 14 to 12 (batch_size 7 is odd)"
    no_key = halve({"batch_size": 16})
    assert no_key.changes == {"batch_size": [16, 8]}
    assert no_key.note == "the effective batch size changes from 16 to 8 (the config has no gradient_accumulation_steps)"
    in_bwd = halve({"batch_size": 4, "gradient_accumulation_steps": 1, "optimizer_in_bwd": True})
    assert in_bwd.changes == {"batch_size": [4, 2]} and "optimizer_in_bwd: True cannot accumulate" in in_bwd.note
    with pytest.raises(AttemptError, match=r"run_007 ran out of memory with batch_size: 1 already.*no further attempt"):
        halve({"batch_size": 1, "gradient_accumulation_steps": 8}, "run_007")
    for bad in ({"batch_size": "${bs}"}, {}, {"batch_size": 4, "gradient_accumulation_steps": "two"}):
        with pytest.raises(AttemptError, match="no further attempt|cannot be doubled"):
            halve(bad)


def oom_halved(changes: dict, note: str | None):
    from torchtune_config_writer.compile.attempts import Halved

    return Halved(changes, note)


def test_attempts_halve_until_batch_one_keeping_comments(tiny_assets, tmp_path: Path) -> None:
    exp = generate(tiny_assets, tmp_path / "exp", "lora_finetune_single_device", 8)
    original = (exp / "configs/run_000.yaml").read_text()
    previous = original
    for number, (batch, steps) in enumerate([(4, 2), (2, 4), (1, 8)], start=2):
        attempt = write_attempt(exp, 0, after=number - 1)
        run = load_mapping(exp).runs[0]
        assert run.attempt == number and run.current_config == f"configs/run_000.attempt_{number}.yaml"
        assert attempt.changes == {"batch_size": [batch * 2, batch], "gradient_accumulation_steps": [steps // 2, steps]}
        assert attempt.note is None and attempt.reason == "oom" and attempt.created
        text = (exp / attempt.config).read_text()
        assert hashlib.sha256(text.encode()).hexdigest() == attempt.config_sha256 == run.current_sha256
        data = yaml.safe_load(text)
        assert (data["batch_size"], data["gradient_accumulation_steps"]) == (batch, steps)
        # torchtune's comments and every other line stay; one header line says what this attempt is
        assert "lora_rank: 8  # higher increases accuracy and memory" in text and "# Optimizer and Scheduler" in text
        changed = [ln for ln in difflib.unified_diff(previous.splitlines(), text.splitlines(), lineterm="", n=0)
                   if ln[:1] in "+-" and ln[:3] not in ("---", "+++")]
        # the header's run line names the attempt's config, and a line says what changed; nothing else moves
        header = [ln for ln in changed if ln[1:2] == "#"]
        assert header[-2:] == [f"+# Run: tune run lora_finetune_single_device --config {attempt.config}",
                               f"+# Attempt {number}: attempt {number - 1} ran out of memory; batch_size {batch * 2} "
                               f"-> {batch}, gradient_accumulation_steps {steps // 2} -> {steps}; the effective "
                               "batch size stays the same"]
        assert [ln for ln in changed if ln[1:2] != "#"] == [
            f"-batch_size: {batch * 2}", f"+batch_size: {batch}",
            f"-gradient_accumulation_steps: {steps // 2}", f"+gradient_accumulation_steps: {steps}"]
        previous = text
    assert [a.number for a in load_mapping(exp).runs[0].attempts] == [2, 3, 4]
    with pytest.raises(AttemptError, match="batch_size: 1 already"):
        write_attempt(exp, 0, after=4)
    assert not (exp / "configs/run_000.attempt_5.yaml").exists() and load_mapping(exp).runs[0].attempt == 4


def test_an_attempt_never_overwrites_and_never_skips_one(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"batch_size": 5}])
    squatter = exp / "configs/run_000.attempt_2.yaml"
    squatter.write_text("batch_size: 99\n")
    with pytest.raises(AttemptError, match="exists already and holds another config"):
        write_attempt(exp, 0, after=1)
    assert squatter.read_text() == "batch_size: 99\n" and load_mapping(exp).runs[0].attempts == ()
    squatter.unlink()
    attempt = write_attempt(exp, 0, after=1)
    assert attempt.note == "the effective batch size changes from 5 to 4 (batch_size 5 is odd)"
    assert load_mapping(exp).runs[0].attempts[0].note == attempt.note  # recorded in run_mapping.yaml
    with pytest.raises(AttemptError, match="at attempt 2 already, not 1"):  # a stale caller: attempt 2 never ran
        write_attempt(exp, 0, after=1)


def test_an_attempt_that_fails_validation_is_not_written(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": "fast"}])  # written by hand, never validated
    with pytest.raises(AttemptError, match=r"attempt 2 of run_000 would fail validation.*optimizer\.lr"):
        write_attempt(exp, 0, after=1)
    assert not (exp / "configs/run_000.attempt_2.yaml").exists() and load_mapping(exp).runs[0].attempts == ()


def test_the_execute_side_writes_attempts_through_the_hidden_command(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"batch_size": 2}])
    line = oom.write_next_attempt(exp, 0, after=1)
    assert line == ("run_000 attempt 2: configs/run_000.attempt_2.yaml (batch_size 2 -> 1, "
                    "gradient_accumulation_steps 1 -> 2; the effective batch size stays the same)")
    with pytest.raises(AttemptError) as refused:  # its own error line, not a traceback
        oom.write_next_attempt(exp, 0, after=2)
    assert str(refused.value).startswith("run_000 ran out of memory with batch_size: 1 already")


# ----------------------------------------------------------------------------- status, collect, submit --retry-oom


def test_status_and_collect_show_the_attempt_a_run_completed_with(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"batch_size": 8}, {"batch_size": 8}])
    write_attempt(exp, 0, after=1)
    write_attempt(exp, 0, after=2)
    write_status(exp, StatusRecord("run_000", State.COMPLETED, 0, "2026-01-01T00:00:00+00:00",
                                   "2026-01-01T00:00:09+00:00", attempt=3))
    write_status(exp, StatusRecord("run_001", State.FAILED, 1, "2026-01-01T00:00:00+00:00",
                                   "2026-01-01T00:00:02+00:00"))
    states = slurm_state.run_states(exp, use_slurm=False)
    assert [(s.state, s.attempt) for s in states] == [(State.COMPLETED, 3), (State.FAILED, 1)]
    table = slurm_state.format_status(states, ["batch_size"]).splitlines()
    assert table[0].split()[:5] == ["RUN", "PARAMETERS", "STATE", "ATTEMPT", "EXIT"]
    assert table[1].split()[:5] == ["run_000", "batch_size=8", "completed", "3", "0"]
    assert any(ln.startswith("ATTEMPT: runs that ran out of memory") for ln in table)
    columns, rows = collect_rows(exp)
    assert columns[-3:] == ["attempt", "batch_size_used", "gradient_accumulation_steps_used"]
    assert [(r["status"], r["attempt"], r["batch_size_used"], r["gradient_accumulation_steps_used"]) for r in rows] \
        == [("completed", 3, 2, 4), ("failed", 1, 8, 1)]
    # an experiment without retries keeps its usual table
    plain = make_experiment_dir([{"batch_size": 8}])
    assert "attempt" not in collect_rows(plain)[0]
    assert "ATTEMPT" not in slurm_state.format_status(slurm_state.run_states(plain, use_slurm=False))


def _handmade_with_submit_script(make_experiment_dir, runs: list[dict]) -> Path:
    settings = SlurmSettings(gpus_per_run=0)
    exp = make_experiment_dir(runs, slurm=sbatch.plan_resources(settings, [("run_000", "cpu", None)])[0])
    sbatch.write_submit_scripts(exp, load_mapping(exp), settings)
    return exp


def _failed(exp: Path, run_id: str, log_text: str, **fields) -> None:
    (exp / "logs").mkdir(exist_ok=True)
    (exp / f"logs/{run_id}.log").write_text(log_text)
    write_status(exp, StatusRecord(run_id, State.FAILED, 1, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:03+00:00",
                                   log=f"logs/{run_id}.log", **fields))


def test_submit_retry_oom_dry_run_says_what_it_would_do_and_writes_nothing(make_experiment_dir) -> None:
    exp = _handmade_with_submit_script(make_experiment_dir, [{"batch_size": 8}, {"batch_size": 8}, {"batch_size": 1}])
    _failed(exp, "run_000", OOM_TRACEBACK)
    _failed(exp, "run_001", "ValueError: something else\n")
    _failed(exp, "run_002", OOM_TRACEBACK)
    result = cli("submit", str(exp), "--retry-oom", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("run_000: attempt 1 ran out of memory (torch.OutOfMemoryError in its log); (dry run, not "
                        "written) run_000 attempt 2: configs/run_000.attempt_2.yaml (batch_size 8 -> 4, "
                        "gradient_accumulation_steps 1 -> 2; the effective batch size stays the same)")
    assert lines[1].startswith("skip run_002: run_002 ran out of memory with batch_size: 1 already")
    assert re.search(r"sbatch --parsable --array=0 .*submit\.sbatch 0$", lines[2])  # run_000 only
    assert len(lines) == 3
    assert not (exp / "configs/run_000.attempt_2.yaml").exists() and load_mapping(exp).runs[0].attempts == ()
    # with --failed, the other failed run goes too (as it is); the one that cannot be halved does not
    result = cli("submit", str(exp), "--retry-oom", "--failed", "--dry-run")
    assert re.search(r"--array=0-1 ", result.stdout), result.output
    # nothing ran out of memory: nothing to retry
    result = cli("submit", str(exp), "--retry-oom", "--runs", "1", "--dry-run")
    assert result.stdout.strip() == "no selected run failed out of memory: nothing to retry"
    assert cli("submit", str(exp), "--retry-oom", "--eval-only").exit_code == 2


def test_a_written_attempt_that_never_started_is_submitted_again_not_halved_again(make_experiment_dir) -> None:
    exp = _handmade_with_submit_script(make_experiment_dir, [{"batch_size": 8}])
    _failed(exp, "run_000", OOM_TRACEBACK)
    write_attempt(exp, 0, after=1)  # e.g. a task wrote it, then could not reach sbatch
    lines: list[str] = []
    arrays = submit.submit(exp, retry_oom=True, dry_run=True, echo=lines.append)
    assert lines[0] == "run_000: attempt 1 ran out of memory; attempt 2 was written and never started: submitting it"
    assert [a.chunk.indices for a in arrays] == [(0,)] and load_mapping(exp).runs[0].attempt == 2


def test_without_oom_retry_a_task_only_says_how_to_retry(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"batch_size": 8}])
    _failed(exp, "run_000", OOM_TRACEBACK)
    lines: list[str] = []
    assert oom.after_task(exp, 0, 1, echo=lines.append) is False
    assert lines[0] == "# run_000: attempt 1 ran out of memory (torch.OutOfMemoryError in its log)"
    assert lines[1].startswith("# not retried: the experiment has no oom_retry: section; `torchtune-config-writer "
                               f"submit {exp} --runs 0 --retry-oom`")
    assert load_mapping(exp).runs[0].attempts == ()
    _failed(exp, "run_000", "ValueError: not memory\n")
    lines.clear()
    assert oom.after_task(exp, 0, 1, echo=lines.append) is False and lines == []


# ----------------------------------------------------------------------------- real trainings


@pytest.mark.slow
def test_local_run_retries_an_out_of_memory_run_with_half_the_batch(tiny_assets, tmp_path: Path) -> None:
    recipe = oom_recipe(tmp_path / "recipe", above=2)
    exp = generate(tiny_assets, tmp_path / "local_oom", recipe, 4, oom_retry={"max_attempts": 2})
    lines: list[str] = []
    from torchtune_config_writer.execute.runner import run_experiment

    summary = run_experiment(exp, echo=lines.append)
    assert (summary.completed, summary.failed, summary.retried, summary.exit_code) == (["run_000"], [], ["run_000"], 0)
    text = "\n".join(lines)
    assert "run_000 failed" in text and "torch.OutOfMemoryError: CUDA out of memory" in text
    assert ("run_000 ran out of memory (torch.OutOfMemoryError in its log); retrying: run_000 attempt 2: "
            "configs/run_000.attempt_2.yaml (batch_size 4 -> 2, gradient_accumulation_steps 1 -> 2; "
            "the effective batch size stays the same)") in text
    assert "1 completed, 0 failed, 1 retried after running out of memory" in text
    record = read_status(exp, "run_000")
    assert (record.state, record.attempt, record.log) == (State.COMPLETED, 2, "logs/run_000.attempt_2.log")
    assert "torch.OutOfMemoryError" in (exp / "logs/run_000.log").read_text()  # the failed attempt's log stays
    trained = yaml.safe_load((Path(load_mapping(exp).runs[0].output_dir) / "torchtune_config.yaml").read_text())
    assert (trained["batch_size"], trained["gradient_accumulation_steps"]) == (2, 2)


@pytest.mark.slow
def test_slurm_tasks_retry_out_of_memory_until_the_batch_fits(slurm_cluster, tiny_assets, tmp_path: Path) -> None:
    recipe = oom_recipe(tmp_path / "recipe", above=2)
    retried = generate(tiny_assets, tmp_path / "retried", recipe, 8, oom_retry={"max_attempts": 3})
    plain = generate(tiny_assets, tmp_path / "plain", recipe, 4)  # no oom_retry: not retried by itself
    for exp in (retried, plain):
        assert cli("submit", str(exp)).exit_code == 0
    slurm_cluster.wait_idle(600)

    # attempt 1 (batch 8) and 2 (batch 4) ran out of memory; attempt 3 (batch 2, accumulation 4) completed
    run = load_mapping(retried).runs[0]
    assert [(a.number, a.reason, a.changes, a.note) for a in run.attempts] == [
        (2, "oom", {"batch_size": [8, 4], "gradient_accumulation_steps": [1, 2]}, None),
        (3, "oom", {"batch_size": [4, 2], "gradient_accumulation_steps": [2, 4]}, None)]
    record = read_status(retried, "run_000")
    assert (record.state, record.attempt) == (State.COMPLETED, 3), _logs(retried)
    trained = yaml.safe_load((Path(run.output_dir) / "torchtune_config.yaml").read_text())
    assert (trained["batch_size"], trained["gradient_accumulation_steps"]) == (2, 4)
    jobs = expdir.read_jobs(retried)
    assert len(jobs) == 3  # the first submission and one resubmission by each failed task
    first = (retried / expdir.slurm_log_file(jobs[0].job_id, 0)).read_text()
    assert "torch.OutOfMemoryError" in first and "# run_000 attempt 2: configs/run_000.attempt_2.yaml" in first
    status = cli("status", str(retried)).stdout.splitlines()
    assert status[0].split()[:5] == ["RUN", "PARAMETERS", "STATE", "ATTEMPT", "EXIT"]
    assert status[1].split()[2:4] == ["completed", "3"], status
    columns, rows = collect_rows(retried)
    assert (rows[0]["status"], rows[0]["attempt"], rows[0]["batch_size_used"],
            rows[0]["gradient_accumulation_steps_used"]) == ("completed", 3, 2, 4)

    # without oom_retry: failed, not retried, and its log says how; then `submit --retry-oom` retries it
    assert read_status(plain, "run_000").state == State.FAILED and load_mapping(plain).runs[0].attempts == ()
    job = expdir.read_jobs(plain)[0].job_id
    assert "# not retried: the experiment has no oom_retry: section" in \
        (plain / expdir.slurm_log_file(job, 0)).read_text()
    result = cli("submit", str(plain), "--retry-oom")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("run_000: attempt 1 ran out of memory (torch.OutOfMemoryError in its log); "
                                    "run_000 attempt 2: configs/run_000.attempt_2.yaml (batch_size 4 -> 2")
    slurm_cluster.wait_idle(600)
    record = read_status(plain, "run_000")
    assert (record.state, record.attempt) == (State.COMPLETED, 2), _logs(plain)
    assert cli("submit", str(plain), "--retry-oom").stdout.strip() == \
        "no selected run failed out of memory: nothing to retry"


def _logs(exp: Path) -> str:
    """The task logs, for a failure message."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((exp / "logs").glob("*")))


def test_the_attempt_command_is_hidden() -> None:
    out = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and " attempt " not in out.stdout


def test_a_task_resubmitting_its_run_is_not_stopped_by_that_runs_waiting_evaluation(make_experiment_dir) -> None:
    import dataclasses

    from torchtune_config_writer.errors import SlurmError

    exp = make_experiment_dir([{"batch_size": 8}])
    run = dataclasses.replace(load_mapping(exp).runs[0], evaluations=(
        expdir.EvalEntry(expdir.Evaluator.HELDOUT, 0, "eval/run_000/epoch_0.heldout.yaml", "/o/r.json"),))
    # the training task failed (its record), its evaluation task still waits for it in the queue
    waiting = slurm_state.EvalState("run_000", 0, expdir.SlurmState.PENDING, "8_0", total=1)
    states = [slurm_state.RunState("run_000", 0, {}, State.FAILED, 1, 3.0, "7_0", evaluation=waiting)]
    with pytest.raises(SlurmError, match=r"already queued or running.*the evaluation of run_000 \(PENDING, job 8_0\)"):
        submit._refuse_unsubmittable(exp, [run], [], states)
    submit._refuse_unsubmittable(exp, [run], [], states, retry=True)  # SLURM cancels it: the failed task was its dependency


def test_a_task_that_cannot_reach_sbatch_leaves_its_attempt_for_submit_retry_oom(make_experiment_dir,
                                                                                  monkeypatch) -> None:
    import dataclasses

    exp = _handmade_with_submit_script(make_experiment_dir, [{"batch_size": 8}])
    expdir.write_mapping(exp, dataclasses.replace(load_mapping(exp), oom_retry=expdir.OomRetryPlan(3)))
    _failed(exp, "run_000", OOM_TRACEBACK)
    monkeypatch.setenv("PATH", "/nonexistent")  # a compute node without the SLURM client tools
    lines: list[str] = []
    assert oom.after_task(exp, 0, 1, echo=lines.append) is False
    assert lines[1].startswith("# run_000 attempt 2: configs/run_000.attempt_2.yaml (batch_size 8 -> 4")
    assert lines[2].startswith("# attempt 2 was written but not submitted: sbatch is not on PATH")
    assert lines[2].endswith(f"`torchtune-config-writer submit {exp} --runs 0 --retry-oom` submits it")
    assert load_mapping(exp).runs[0].attempt == 2
    lines.clear()
    arrays = submit.submit(exp, retry_oom=True, dry_run=True, echo=lines.append)
    assert lines[0].endswith("attempt 2 was written and never started: submitting it") and len(arrays) == 1
