"""Time limits and preemption (Appendix J.4): the warning signal, requeueing a task, resuming from a saved epoch.

Fast tests check the ``#SBATCH`` lines, the requeue decision, how a saved epoch is found in an
output directory and which recipes resume. ``slow`` ones train the tiny CPU model in real SLURM
array tasks (tests/slurm_cluster.py): a warning sent exactly as SLURM sends it
(``scancel --signal=USR1 --batch``), and a real one-minute time limit.

SLURM delays a requeued task's new start by about two minutes (squeue: PENDING, reason BeginTime);
the slow tests move that start to now (``scontrol update StartTime=now``) to keep the suite short.
That changes when the task starts again, nothing of what it then does.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import pytest
from helpers import cli, run_table, wait_for

from torchtune_config_writer import expdir
from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.resumable import reads_resume_key, recipe_resumes
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.execute import requeue, slurm_state
from torchtune_config_writer.expdir import (
    RunEntry,
    SlurmState,
    State,
    StatusRecord,
    load_mapping,
    read_jobs,
    read_status,
)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]


def _render(settings: SlurmSettings) -> tuple[str, str]:
    plan, _, note, _ = sbatch.plan_resources(settings, [("run_000", "cpu", None)])
    return sbatch.render_submit_script(run_table(2, plan), settings), note


# ----------------------------------------------------------------------------- fast: the script


def test_warning_requeue_and_append_lines_come_with_a_time_limit() -> None:
    text, note = _render(SlurmSettings(time="2:00:00", signal_seconds=600))
    assert _lines(text)[4:8] == ["#SBATCH --time=2:00:00", "#SBATCH --signal=B:USR1@600", "#SBATCH --requeue",
                                 "#SBATCH --open-mode=append"]
    assert "signal_seconds" not in note
    # no time limit, or requeue off: nothing to warn of
    for settings in (SlurmSettings(), SlurmSettings(time="2:00:00", requeue=False)):
        assert not any(x in _render(settings)[0] for x in ("--signal", "--requeue", "--open-mode"))


def test_a_warning_too_close_to_the_limit_comes_at_half_of_it_and_generate_says_so() -> None:
    text, note = _render(SlurmSettings(time="1", signal_seconds=300))
    assert "#SBATCH --signal=B:USR1@30\n" in text
    assert "30 s (not 300 s)" in note and "half" in note
    assert sbatch.warning_lead("10:00", 300) == (300, "")  # 10 minutes: 300 s is half, still fine
    assert [sbatch.time_limit_seconds(t) for t in ("5", "5:30", "1:00:00", "2-0", "2-1:30", "0", "auto")] == [
        300, 330, 3600, 172800, 178200, None, None]


def test_the_evaluation_script_asks_for_no_warning() -> None:
    settings = SlurmSettings(time="1:00:00")
    plan = sbatch.plan_resources(settings, [("run_000", "cpu", None)])[0]
    mapping = run_table(1, plan)
    entry = expdir.EvalEntry(next(iter(expdir.Evaluator)), 0, "evals/run_000/e.yaml", "evals/run_000/e.json")
    mapping = dataclasses.replace(mapping, runs=tuple(dataclasses.replace(r, evaluations=(entry,))
                                                      for r in mapping.runs))
    text = sbatch.render_eval_script(mapping, settings)
    assert "--time=1:00:00" in text and "--signal" not in text and "--requeue" not in text


# ----------------------------------------------------------------------------- fast: decisions


@pytest.mark.parametrize("requeues, progressed, enabled, expected", [
    (0, False, True, True), (2, False, True, True), (3, False, True, False), (3, True, True, True),
    (9, True, True, True), (0, True, False, False),
])
def test_requeue_decision(requeues: int, progressed: bool, enabled: bool, expected: bool) -> None:
    go, why = requeue.should_requeue(requeues=requeues, max_requeues=3, progressed=progressed, enabled=enabled)
    assert go is expected and why


RUN = RunEntry("run_000", 0, "configs/run_000.yaml", "0" * 64, "/o", {}, expdir.Validation.PASSED, None)
TASK = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "0"}


def _rec(state: str, **kw) -> StatusRecord:
    return StatusRecord("run_000", State(state), slurm_array_job_id="7", slurm_array_task_id="0",
                        **{"started": "2026-01-01T00:00:00+00:00", **kw})


def test_only_a_restart_of_the_same_attempt_resumes() -> None:
    restarted = {**TASK, "SLURM_RESTART_COUNT": "1"}
    assert requeue.is_restart(_rec("pending", requeues=1), RUN, restarted)
    assert requeue.is_restart(_rec("cancelled"), RUN, restarted)  # preempted: the task saw only SIGTERM
    assert requeue.is_restart(_rec("running"), RUN, restarted)  # killed outright (node failure)
    assert not requeue.is_restart(_rec("completed"), RUN, restarted)
    assert not requeue.is_restart(_rec("cancelled"), RUN, TASK)  # a new submission, not a restart
    assert not requeue.is_restart(_rec("cancelled", attempt=2), RUN, restarted)  # another attempt's record
    other = {**restarted, "SLURM_ARRAY_JOB_ID": "8"}
    assert not requeue.is_restart(_rec("cancelled"), RUN, other)
    # requeued, but scontrol failed and the user resubmitted: still the same training
    assert requeue.is_restart(_rec("cancelled", requeues=1), RUN, TASK)


def _epoch(out: Path, n: int, *files: str) -> None:
    (out / f"epoch_{n}").mkdir(parents=True, exist_ok=True)
    for f in files:
        (out / f"epoch_{n}" / f).write_bytes(b"w")
    time.sleep(0.02)  # distinct file times, in the order torchtune writes them


def _recipe_state(out: Path) -> None:
    (out / "recipe_state").mkdir(parents=True, exist_ok=True)
    (out / requeue.RECIPE_STATE).write_bytes(b"s")
    time.sleep(0.02)


def test_saved_epoch_of_a_lora_and_of_a_full_finetune(tmp_path: Path) -> None:
    lora = tmp_path / "lora"
    _epoch(lora, 0, "adapter_model.pt", "model-00001-of-00001.bin")
    _recipe_state(lora)
    found = requeue.saved_epoch(lora)
    assert found.epoch == 0 and found.overrides == ("resume_from_checkpoint=True",)
    full = tmp_path / "full"
    _epoch(full, 0, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json")
    _recipe_state(full)
    assert requeue.saved_epoch(full).overrides == (
        "resume_from_checkpoint=True", "~checkpointer.checkpoint_files",
        "checkpointer.checkpoint_files=[epoch_0/model-00001-of-00002.safetensors,"
        "epoch_0/model-00002-of-00002.safetensors]")
    assert requeue.override_list("k", ["epoch_0/a b.bin"]) == "k=['epoch_0/a b.bin']"


def test_saved_epoch_skips_a_cut_short_save_and_an_earlier_training(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _epoch(out, 0, "adapter_model.pt")
    _epoch(out, 1, "adapter_model.pt")
    _recipe_state(out)
    _epoch(out, 2, "adapter_model.pt")  # stopped while saving epoch 2: no recipe state of it
    assert requeue.saved_epoch(out).epoch == 1
    found = requeue.saved_epoch(out, set_aside=True)
    assert found.set_aside == ("interrupted_epoch_2",) and not (out / "epoch_2").exists()
    # everything there is older than this attempt's first start: an earlier training's, never resumed from
    from datetime import datetime, timedelta, timezone

    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat(timespec="seconds")
    assert requeue.saved_epoch(out, since=later) is None
    assert requeue.saved_epoch(tmp_path / "nothing") is None


def test_plan_start_resumes_only_a_resumable_recipe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _epoch(out, 0, "adapter_model.pt")
    _recipe_state(out)
    run = dataclasses.replace(RUN, output_dir=str(out))
    previous = _rec("pending", requeues=1, started="2000-01-01T00:00:00+00:00")
    env = {**TASK, "SLURM_RESTART_COUNT": "1"}
    mapping = run_table(1)
    resumable = dataclasses.replace(mapping, resumable=True)
    plan = requeue.plan_start(resumable, run, previous, env)
    assert (plan.overrides, plan.requeues, plan.resumed_from_epoch) == (("resume_from_checkpoint=True",), 1, 0)
    assert plan.first_started == previous.started
    fresh = requeue.plan_start(mapping, run, previous, env)
    assert fresh.overrides == () and fresh.resumed_from_epoch is None and "cannot resume" in fresh.note
    assert requeue.plan_start(resumable, run, previous, TASK | {"SLURM_RESTART_COUNT": "0"}).requeues == 1
    assert requeue.plan_start(resumable, run, _rec("cancelled"), env).requeues == 1  # a preemption counts
    assert requeue.plan_start(resumable, run, _rec("failed"), TASK) == requeue.Resume()


def test_which_recipes_resume(tmp_path: Path) -> None:
    assert recipe_resumes("lora_finetune_single_device") and recipe_resumes("full_finetune_distributed")
    assert not recipe_resumes("eleuther_eval") and not recipe_resumes("ppo_full_finetune_single_device")
    mine = tmp_path / "mine.py"
    mine.write_text("def recipe(cfg):\n    return cfg.get('resume_from_checkpoint', False)\n")
    assert recipe_resumes(str(mine))
    mine.write_text("# resume_from_checkpoint is not read here\ndef recipe(cfg):\n    return cfg.epochs\n")
    assert not recipe_resumes(str(mine)) and not reads_resume_key("not python (")


def test_status_shows_requeues_and_a_task_slurm_queued_again() -> None:
    sub = slurm_state.Submission("7", 0, "2026-01-01T00:00:00+00:00")
    pending = slurm_state.TaskState("7", 0, SlurmState.PENDING, 0, 0, "BeginTime")
    state = slurm_state.merge(RUN, _rec("pending", requeues=1), sub, pending)
    assert state.label == "PENDING (requeued 1x)"
    # preempted and requeued by SLURM: the record says cancelled, but the task is queued again
    assert slurm_state.merge(RUN, _rec("cancelled"), sub, pending).state == SlurmState.PENDING
    timeout = slurm_state.TaskState("7", 0, SlurmState.TIMEOUT, 0, 60, "TimeLimit")
    assert slurm_state.merge(RUN, _rec("cancelled"), sub, timeout).state == SlurmState.TIMEOUT
    done = slurm_state.TaskState("7", 0, SlurmState.COMPLETED, 0, 60, "None")
    assert slurm_state.merge(RUN, _rec("completed", requeues=2), sub, done).label == "completed (requeued 2x)"


# ----------------------------------------------------------------------------- real SLURM


FULL_MODEL = """model:
  _component_: torchtune.models.llama2.llama2
  vocab_size: 512
  num_layers: 2
  num_heads: 4
  num_kv_heads: 4
  embed_dim: 64
  intermediate_dim: 128
  max_seq_len: 256
"""


def _full_base(tiny_assets, path: Path) -> Path:
    """The tiny LoRA config turned into a full finetune of the same model (full_finetune_single_device)."""
    text = Path(tiny_assets.base_config).read_text()
    text = re.sub(r"model:\n(  .*\n)+", FULL_MODEL, text, count=1)
    text = text.replace("save_adapter_weights_only: False\n", "") + "optimizer_in_bwd: False\n"
    text = text.replace("lr: 3e-3", "lr: 1e-3")
    path.write_text(text)
    return path


def _generate(tiny_assets, exp: Path, *, recipe: str, base: Path | None = None, epochs: int, steps: int,
              slurm: dict) -> Path:
    from torchtune_config_writer import generate_configs

    generate_configs({
        "experiment_name": exp.name, "base_config_file": str(base or tiny_assets.base_config), "recipe": recipe,
        "variables": {"seed": [1]}, "controls": {"max_steps_per_epoch": steps, "epochs": epochs},
        "slurm": {"gpus_per_run": 0, "cpus_per_task": 1, **slurm}, "output": {"experiment_dir": str(exp)},
    })
    return exp


class _NoRequeueDelay:
    """While active, a requeued task of ``jobs`` (squeue: PENDING, reason BeginTime) starts 5 s after it was
    requeued rather than SLURM's two minutes; counts how often that happened. (At once is too soon: SLURM
    refuses to start it while the previous start's job credential is still revoked.)"""

    def __init__(self, cluster, jobs: list[str], after: float = 5.0) -> None:
        self.cluster, self.jobs, self.after, self.moved = cluster, jobs, after, 0
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _NoRequeueDelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            out = self.cluster.run("squeue", "-h", "-r", "-t", "PENDING", "-j", ",".join(self.jobs),
                                   "-o", "%i %r", check=False).stdout
            waiting = {line.partition(" ")[0] for line in out.splitlines() if line.endswith(" BeginTime")}
            self._seen = {task: self._seen.get(task, time.monotonic()) for task in waiting}
            for task, since in self._seen.items():
                if time.monotonic() - since >= self.after:
                    self.cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now", check=False)
                    self.moved += 1
                    self._seen[task] = float("inf")  # once per wait


def _wait_ended(cluster, exps: list[Path], timeout: float) -> None:
    """Until every run has a final record, or no task has been active for 15 s. (An idle squeue alone is not
    enough: a task being requeued is briefly in none of the active states.)"""
    ends = (State.COMPLETED, State.FAILED, State.CANCELLED)
    idle_since = [None]

    def ended() -> bool:
        if cluster.active_jobs():
            idle_since[0] = None
            return False
        idle_since[0] = idle_since[0] or time.monotonic()
        final = all(read_status(e, "run_000").state in ends for e in exps)
        return final or time.monotonic() - idle_since[0] > 15
    wait_for("the runs to end", ended, timeout)


def _task_log(exp: Path, record: StatusRecord) -> str:
    return (exp / record.log).read_text(errors="replace")


@pytest.mark.slow
def test_a_warned_task_is_requeued_and_resumes_lora_and_full(slurm_cluster, tiny_assets, tmp_path: Path) -> None:
    # A LoRA and a full finetune, side by side; each is warned (as SLURM warns: SIGUSR1 to the batch
    # script) once its first epoch is saved, while it trains the next.
    slow = {"time": "30", "signal_seconds": 60}  # a limit never reached: the warning comes from the test
    lora = _generate(tiny_assets, tmp_path / "lora", recipe="lora_finetune_single_device", epochs=3, steps=15,
                     slurm=slow)
    full = _generate(tiny_assets, tmp_path / "full", recipe="full_finetune_single_device", epochs=3, steps=15,
                     slurm=slow, base=_full_base(tiny_assets, tmp_path / "full.yaml"))
    assert load_mapping(lora).resumable and load_mapping(full).resumable
    assert "#SBATCH --signal=B:USR1@60" in (lora / "submit.sbatch").read_text()
    exps = [lora, full]
    for exp in exps:
        assert cli("submit", str(exp)).exit_code == 0
    jobs = [read_jobs(exp)[0].job_id for exp in exps]
    t0 = time.monotonic()
    with _NoRequeueDelay(slurm_cluster, jobs) as moved:
        for exp, job in zip(exps, jobs):
            out = exp / "runs" / "run_000"
            state = out / requeue.RECIPE_STATE
            wait_for(f"{exp.name}'s first saved epoch", state.is_file, 300)
            slurm_cluster.run("scancel", "--signal=USR1", "--batch", f"{job}_0")
        wait_for("the requeues", lambda: all(read_status(e, "run_000").requeues for e in exps), 120)
        requeued = {e.name: slurm_state.run_states(e)[0] for e in exps}
        _wait_ended(slurm_cluster, exps, 600)
    wall = time.monotonic() - t0
    for exp in exps:
        rec = read_status(exp, "run_000")
        log = _task_log(exp, rec)
        assert rec.state == State.COMPLETED, log[-3000:]
        assert rec.requeues == 1 and rec.resumed_from_epoch in (0, 1), rec
        assert rec.note.startswith("requeued; resumed from saved epoch"), rec.note
        out = exp / "runs" / "run_000"
        assert all((out / f"epoch_{n}").is_dir() for n in range(3))
        # --open-mode=append: the first start's output is still there, and torchtune loaded the recipe state
        assert log.count("-> run index 0") == 2 and "time limit near: requeued" in log
        assert "Loading the recipe state" in log and "resume_from_checkpoint=True" in log
        assert "completed (requeued 1x)" in cli("status", str(exp)).stdout
    assert "epoch_0/model-00001-of-00001.bin" in _task_log(full, read_status(full, "run_000"))
    assert all(str(s.state) in ("PENDING", "RUNNING") for s in requeued.values()), requeued
    print(f"\nwarned, requeued and resumed, LoRA and full side by side: {wall:.1f} s; requeue delays skipped: "
          f"{moved.moved}")


def _not_resumable_recipe(directory: Path) -> Path:
    """torchtune's LoRA recipe with its one read of ``resume_from_checkpoint`` replaced by False."""
    from torchtune_config_writer.compile import registry

    text = registry.recipe_file("lora_finetune_single_device").read_text()
    assert text.count("cfg.resume_from_checkpoint") == 1
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "no_resume.py"
    path.write_text(text.replace("cfg.resume_from_checkpoint", "False"))
    return path


@pytest.mark.slow
def test_a_recipe_that_cannot_resume_starts_again_and_says_so(slurm_cluster, tiny_assets, tmp_path: Path) -> None:
    exp = _generate(tiny_assets, tmp_path / "exp", recipe=str(_not_resumable_recipe(tmp_path / "recipes")),
                    epochs=2, steps=12, slurm={"time": "30", "signal_seconds": 60})
    assert not load_mapping(exp).resumable
    assert cli("submit", str(exp)).exit_code == 0
    job = read_jobs(exp)[0].job_id
    out = exp / "runs" / "run_000"
    with _NoRequeueDelay(slurm_cluster, [job]):
        wait_for("the first saved epoch", lambda: (out / requeue.RECIPE_STATE).is_file(), 300)
        slurm_cluster.run("scancel", "--signal=USR1", "--batch", f"{job}_0")
        _wait_ended(slurm_cluster, [exp], 600)
    rec = read_status(exp, "run_000")
    log = _task_log(exp, rec)
    assert rec.state == State.COMPLETED and rec.requeues == 1 and rec.resumed_from_epoch is None, log[-3000:]
    assert "cannot resume" in rec.note and "started again from the beginning" in rec.note
    assert "resume_from_checkpoint=True" not in log and "Loading the recipe state" not in log
    assert (out / "epoch_1").is_dir()


@pytest.mark.slow
def test_a_real_time_limit_requeues_and_the_run_resumes(slurm_cluster, tiny_assets, tmp_path: Path) -> None:
    # The acceptance test: a one-minute limit (SLURM's smallest) and a warning 30 s before it.
    # SLURM checks limits about every 30 s, so the warning comes 0-30 s after each start (measured: as
    # early as 6 s, before torchtune saved anything). The training (25 epochs of ~2 s, ~50 s idle) needs
    # longer than 30 s from a fresh start, so a start that saved nothing is warned again and a later start
    # resumes. The number of requeues is SLURM's timing: not asserted beyond "at least one".
    exp = _generate(tiny_assets, tmp_path / "exp", recipe="lora_finetune_single_device", epochs=25, steps=150,
                    slurm={"time": "1", "signal_seconds": 30, "max_requeues": 10})
    assert "#SBATCH --signal=B:USR1@30" in (exp / "submit.sbatch").read_text()
    assert cli("submit", str(exp)).exit_code == 0
    job = read_jobs(exp)[0].job_id
    t0 = time.monotonic()
    with _NoRequeueDelay(slurm_cluster, [job]):
        _wait_ended(slurm_cluster, [exp], 900)
    rec = read_status(exp, "run_000")
    log = _task_log(exp, rec)
    assert rec.state == State.COMPLETED, log[-4000:]
    assert rec.requeues >= 1 and rec.resumed_from_epoch is not None, rec
    assert all((exp / "runs" / "run_000" / f"epoch_{n}").is_dir() for n in range(25))
    assert log.count("-> run index 0") == rec.requeues + 1
    status = cli("status", str(exp)).stdout
    assert f"completed (requeued {rec.requeues}x)" in status, status
    print(f"\n1-minute limit: completed after {rec.requeues} requeue(s), resumed from epoch "
          f"{rec.resumed_from_epoch}, {time.monotonic() - t0:.1f} s")
