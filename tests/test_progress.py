"""Live progress (execute/progress.py), ``status --watch`` and ``cancel`` (execute/cancel.py).

Progress is read from the logs of a real tiny training (30 steps over 2 epochs); ``--watch`` is driven
by hand-made snapshots and, on the real SLURM (tests/slurm_cluster.py), run as a command that must end
by itself when the runs end; ``cancel`` cancels pending and running tasks of a real array.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchtune_config_writer import expdir
from torchtune_config_writer.execute import cancel, progress, slurm_state
from torchtune_config_writer.execute.progress import Progress
from torchtune_config_writer.execute.slurm_state import EvalState, RunState
from torchtune_config_writer.expdir import MetricLog, SlurmState, State, StatusRecord
from helpers import cli, wait_for

STEPS_PER_EPOCH, EPOCHS = 15, 2


# ----------------------------------------------------------------------------- parsing


# What lora_finetune_single_device printed in a run's log (tqdm redraws separated by carriage returns).
BAR_TEXT = ("Loss is initialized.\n"
            "\r  0%|          | 0/100 [00:00<?, ?it/s]"
            "\r1|1|Loss: 6.433365345001221:   1%|          | 1/100 [00:03<05:16,  3.20s/it]"
            "\r1|2|Loss: 6.455992698669434:   2%|▏         | 2/100 [00:04<03:15,  1.99s/it]"
            "\r2|199|Loss: 4.186375617980957: 99%|█████████▉| 99/100 [00:38<00:00,  2.61it/s]\n"
            "Saving final epoch checkpoint.\n")


def test_the_progress_bar_gives_steps_per_epoch_and_the_latest_step() -> None:
    bar = progress.bar_state(BAR_TEXT)
    assert (bar.epoch, bar.step, bar.per_epoch) == (2, 199, 100) and bar.loss == pytest.approx(4.1864, abs=1e-4)
    assert progress.bar_state("Generating train split: 400 examples [00:00, 44908.10 examples/s]") is None


def test_total_steps_and_eta() -> None:
    assert progress.total_steps({"epochs": 2, "max_steps_per_epoch": None}, 100) == 200
    assert progress.total_steps({"epochs": 2, "max_steps_per_epoch": 20}, 15) == 30  # the bar knows the data ran out
    assert progress.total_steps({"epochs": "2", "max_steps_per_epoch": 20}, None) is None
    assert progress.total_steps({"epochs": True, "max_steps_per_epoch": 20}, None) is None
    assert progress.eta_seconds(50, 100.0, 150) == 300.0 and progress.eta_seconds(5, 0.0, 10) is None
    assert Progress(5, 10, None, None).fraction == 0.5 and Progress(None, 10, None, None).label == "-"


# ----------------------------------------------------------------------------- a real training


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_assets):
    """One tiny LoRA run trained locally for 2 epochs of 15 steps, logging every step."""
    from conftest import write_experiment_dir
    from torchtune_config_writer.execute.runner import run_experiment

    exp = tmp_path_factory.mktemp("progress") / "exp"
    write_experiment_dir(exp, tiny_assets.base_config,
                         [{"epochs": EPOCHS, "max_steps_per_epoch": STEPS_PER_EPOCH, "log_every_n_steps": 1}])
    summary = run_experiment(exp, echo=lambda line: None)
    assert summary.exit_code == 0
    return exp


def _as_running(exp: Path) -> StatusRecord:
    """Its record as it was while it trained."""
    return dataclasses.replace(expdir.read_status(exp, "run_000"), state=State.RUNNING, ended=None, exit_code=None)


@pytest.mark.slow
def test_progress_of_a_finished_log_is_all_steps_with_the_last_loss(trained) -> None:
    exp = trained
    run = expdir.load_mapping(exp).runs[0]
    rec = _as_running(exp)
    metric = progress.metric_log_file(run, rec.started)
    steps = [line for line in metric.read_text().splitlines() if line.startswith("Step ")]
    assert len(steps) == EPOCHS * STEPS_PER_EPOCH
    p = progress.progress_of(exp, run, rec)
    last_loss = float(re.search(r"loss:(\S+)", steps[-1]).group(1))
    assert (p.step, p.total, p.loss, p.eta) == (30, 30, last_loss, 0.0)
    bar = progress.bar_state((exp / rec.log).read_text())
    assert (bar.epoch, bar.step, bar.per_epoch) == (EPOCHS, 30, STEPS_PER_EPOCH)


@pytest.mark.slow
def test_progress_halfway_from_the_logs_as_they_were(trained, tmp_path) -> None:
    # The logs as they stood at step 12: the metric log's first 12 lines, the run log up to that bar.
    exp = trained
    run = expdir.load_mapping(exp).runs[0]
    rec = _as_running(exp)
    metric = progress.metric_log_file(run, rec.started)
    lines = metric.read_text().splitlines(keepends=True)
    halfway = tmp_path / "logs"
    halfway.mkdir()
    (halfway / metric.name).write_text("".join(lines[:12]))
    text = (exp / rec.log).read_text()
    cut = text.index("|12|Loss: ")
    (exp / "logs" / "halfway.log").write_text(text[:text.index("[", cut) + 1])
    run = dataclasses.replace(run, metric_log=MetricLog(str(halfway)))
    p = progress.progress_of(exp, run, dataclasses.replace(rec, log="logs/halfway.log"))
    assert (p.step, p.total) == (12, EPOCHS * STEPS_PER_EPOCH)
    assert p.loss == float(re.search(r"loss:(\S+)", lines[11]).group(1))
    assert p.eta is not None and p.eta > 0 and p.label == "12/30"
    # before the bar is printed, the config's max_steps_per_epoch gives the total
    p = progress.progress_of(exp, run, dataclasses.replace(rec, log=None))
    assert (p.step, p.total) == (12, EPOCHS * STEPS_PER_EPOCH)
    # a log of an earlier attempt (written before this record's start) is not this attempt's progress
    later = dataclasses.replace(rec, started="2999-01-01T00:00:00+00:00", log=None)
    assert progress.progress_of(exp, run, later) is None


@pytest.mark.slow
def test_status_shows_progress_columns_only_while_a_run_runs(trained) -> None:
    exp = trained
    done = cli("status", str(exp), "--no-slurm")
    assert "STEP" not in done.stdout and "completed" in done.stdout
    path = expdir.status_path(exp, "run_000")
    finished = path.read_text()
    try:
        expdir.write_status(exp, _as_running(exp))
        shown = cli("status", str(exp), "--no-slurm").stdout
        assert re.match(r"RUN +PARAMETERS +STATE +EXIT +WALL +STEP +LOSS +ETA +JOB$", shown.splitlines()[0]), shown
        assert re.search(r"run_000 .* running +- +\S+ +30/30 +\d\.\d+ +0s +-", shown), shown
    finally:
        path.write_text(finished)


@pytest.mark.slow
def test_watch_imports_neither_torch_nor_torchtune(trained) -> None:
    code = ("import sys\nfrom torchtune_config_writer.cli import main\n"
            f"sys.argv = ['x', 'status', '--watch', '--interval', '1', {str(trained)!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchtune')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "1 run(s): 1 completed" in out.stdout, out.stdout + out.stderr
    assert "IMPORTED []" in out.stdout, out.stdout


# ----------------------------------------------------------------------------- --watch, driven by hand


def _state(rid: str, state, job: str | None = None, evaluation=None) -> RunState:
    return RunState(rid, int(rid[-1]), {}, state, None, None, job, evaluation=evaluation)


def _snapshots(frames: list[tuple[list[RunState], dict[str, Progress]]]):
    it = iter(frames)

    def snapshot():
        states, prog = next(it)
        return states, prog, slurm_state.format_status(states, progress=prog)
    return snapshot


FRAMES = [
    ([_state("run_0", SlurmState.RUNNING, "41_0"), _state("run_1", SlurmState.PENDING, "41_1"),
      _state("run_2", State.COMPLETED)], {"run_0": Progress(10, 30, 5.5, 40.0)}),
    ([_state("run_0", SlurmState.RUNNING, "41_0"), _state("run_1", SlurmState.PENDING, "41_1"),
      _state("run_2", State.COMPLETED)], {"run_0": Progress(10, 30, 5.5, 35.0)}),   # nothing new: no line
    ([_state("run_0", State.COMPLETED, "41_0"),
      _state("run_1", SlurmState.RUNNING, "41_1", EvalState("run_1", 1, SlurmState.PENDING, "42_1", total=1)),
      _state("run_2", State.COMPLETED)], {"run_1": Progress(3, 30, 6.1, None)}),
    ([_state("run_0", State.COMPLETED, "41_0"),
      _state("run_1", State.COMPLETED, "41_1", EvalState("run_1", 1, State.COMPLETED, "42_1", done=1, total=1)),
      _state("run_2", State.COMPLETED)], {}),
]


def test_watch_without_a_terminal_prints_a_line_per_change_and_the_table_at_the_end() -> None:
    out = io.StringIO()
    naps = []
    states = progress.watch("exp", _snapshots(FRAMES), interval=5, out=out, tty=False, sleep=naps.append)
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in out.getvalue().splitlines()]
    assert lines[:5] == [
        "run_0 RUNNING 41_0 step 10/30 loss 5.5 eta 40s",
        "run_1 PENDING 41_1",
        "run_0 completed 41_0",
        "run_1 RUNNING 41_1 step 3/30 loss 6.1 eta - eval PENDING",
        "run_1 completed 41_1 eval completed",
    ], out.getvalue()
    assert "3 run(s): 3 completed" in out.getvalue() and naps == [5, 5, 5]
    assert [s.state for s in states] == [State.COMPLETED] * 3


def test_watch_in_a_terminal_draws_bars_then_the_table() -> None:
    out = io.StringIO()
    progress.watch("exp", _snapshots(FRAMES), interval=5, out=out, tty=True, sleep=lambda s: None)
    text = out.getvalue()
    assert "3 run(s): 3 completed" in text and "Ctrl-C stops watching" in text and "10/30" in text


def test_watch_ends_at_once_when_nothing_is_active() -> None:
    out = io.StringIO()
    progress.watch("exp", _snapshots(FRAMES[-1:]), out=out, tty=False, sleep=lambda s: pytest.fail("slept"))
    assert out.getvalue().startswith("RUN ")


# ----------------------------------------------------------------------------- cancel, decided by hand


def test_cancel_targets_queued_and_running_tasks_and_leaves_the_rest() -> None:
    running_rec = StatusRecord("run_0", State.RUNNING, slurm_array_job_id="41", slurm_array_task_id="0")
    records = {("run_0", False): running_rec}
    states = [
        _state("run_0", SlurmState.RUNNING, "41_0", EvalState("run_0", 0, SlurmState.PENDING, "42_0", total=1)),
        _state("run_1", SlurmState.PENDING, "41_1"),
        _state("run_2", State.COMPLETED, "41_2"),
        _state("run_3", State.RUNNING),                   # a local run
        _state("run_4", SlurmState.RUNNING, "41_4"),     # its setup runs: no record of its own yet
        _state("run_5", State.COMPLETED, "41_5", EvalState("run_5", 5, SlurmState.CANCELLED, "42_5", total=1,
                                                           skipped="training failed")),
    ]
    found, local = cancel.targets(states, lambda rid, ev: records.get((rid, ev), StatusRecord(rid)))
    assert [(t.what, t.job, t.state, t.started) for t in found] == [
        ("run_0", "41_0", "RUNNING", True), ("the evaluation of run_0", "42_0", "PENDING", False),
        ("run_1", "41_1", "PENDING", False), ("run_4", "41_4", "RUNNING", False)]
    assert local == ["run_3"]
    report = cancel.Report(cancelled=found[:2], recorded=["the evaluation of run_0"], untouched=2)
    assert report.text().splitlines() == [
        "cancelled 2 task(s): run_0 (RUNNING, 41_0), the evaluation of run_0 (PENDING, 42_0)",
        "recorded as cancelled: the evaluation of run_0; the others recorded it themselves",
        "left alone: 2 run(s) with nothing queued or running"]
    assert "nothing to cancel" in cancel.Report().text()


def test_cancel_records_tasks_that_will_never_run_and_leaves_started_ones(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": v} for v in (1e-3, 2e-3, 3e-3)])
    task = {"slurm_array_job_id": "41", "started": "2026-01-01T00:00:00+00:00"}
    # run_001 was requeued (pending again, its own record); run_002's task has just started
    expdir.write_status(exp, StatusRecord("run_001", State.PENDING, slurm_array_task_id="1", requeues=1, **task))
    expdir.write_status(exp, StatusRecord("run_002", State.RUNNING, slurm_array_task_id="2", **task))
    pending = [cancel.Target(f"run_00{i}", False, f"41_{i}", "PENDING", False) for i in range(3)]
    assert cancel._record_pending(exp, pending) == ["run_000", "run_001"]
    new, requeued, started = (expdir.read_status(exp, f"run_00{i}") for i in range(3))
    assert (new.state, new.slurm_state, new.slurm_task, new.started) == (State.CANCELLED, "CANCELLED", ("41", 0), None)
    assert (requeued.state, requeued.requeues, requeued.started) == (State.CANCELLED, 1, task["started"])
    assert started.state == State.RUNNING  # it records its own end when SIGTERM reaches it


# ----------------------------------------------------------------------------- real SLURM


def _tiny(tiny_assets, exp: Path, steps: list[int], *, epochs: int = 1, slurm: dict | None = None) -> Path:
    from torchtune_config_writer import generate_configs

    generate_configs({
        "experiment_name": "progress", "base_config_file": str(tiny_assets.base_config),
        "recipe": "lora_finetune_single_device", "variables": {"max_steps_per_epoch": steps},
        "controls": {"epochs": epochs, "log_every_n_steps": 1},
        "slurm": {"gpus_per_run": 0, "cpus_per_task": 1, **(slurm or {})}, "output": {"experiment_dir": str(exp)},
    })
    return exp


@pytest.mark.slow
def test_cancel_pending_then_running_tasks_on_slurm(slurm_cluster, tiny_assets, tmp_path) -> None:
    # run_000 trains 200 steps; the others wait their turn (max_concurrent 1)
    exp = _tiny(tiny_assets, tmp_path / "exp", [100, 2, 3], epochs=2, slurm={"max_concurrent": 1})
    assert cli("submit", str(exp)).exit_code == 0
    job = expdir.read_jobs(exp)[0].job_id
    metric_dir = Path(expdir.load_mapping(exp).runs[0].metric_log.dir)
    wait_for("run_000 to log a step", lambda: metric_dir.is_dir() and any(
        "Step " in p.read_text() for p in metric_dir.glob("*.txt")))
    status = cli("status", str(exp)).stdout
    assert re.search(rf"run_000 .* RUNNING +- +\S+ +\d+/200 +\d\.\d+ +\S+ +{job}_0", status), status
    assert re.search(rf"run_001 .* PENDING +- +- +- +- +- +{job}_1", status), status

    first = cli("cancel", str(exp), "--runs", "1-2")
    assert first.exit_code == 0, first.output
    assert f"cancelled 2 task(s): run_001 (PENDING, {job}_1), run_002 (PENDING, {job}_2)" in first.stdout
    assert "recorded as cancelled: run_001, run_002" in first.stdout
    for rid, task in (("run_001", 1), ("run_002", 2)):
        rec = expdir.read_status(exp, rid)
        assert (rec.state, rec.slurm_state, rec.slurm_task) == (State.CANCELLED, "CANCELLED", (job, task))
    assert expdir.read_status(exp, "run_000").state == State.RUNNING  # not selected: still training

    second = cli("cancel", str(exp))
    assert second.exit_code == 0, second.output
    assert f"cancelled 1 task(s): run_000 (RUNNING, {job}_0)" in second.stdout
    assert "left alone: 2 run(s)" in second.stdout
    rec = expdir.read_status(exp, "run_000")
    assert rec.state == State.CANCELLED and rec.ended, rec
    if "recorded as cancelled" not in second.stdout:  # the task recorded it itself on SIGTERM, as it should
        assert rec.note is None and rec.exit_code == 143
    slurm_cluster.wait_idle()
    assert "nothing to cancel" in cli("cancel", str(exp)).stdout
    status = cli("status", str(exp)).stdout
    assert "3 run(s): 1 cancelled, 2 CANCELLED" in status, status  # the first recorded by its task
    dry = cli("submit", str(exp), "--failed", "--dry-run")
    assert re.findall(r"--array=(\S+)", dry.stdout) == ["0-2%1"], dry.output
    print(f"\nrun_000 after cancel: {json.dumps(expdir._plain(rec))}")


@pytest.mark.slow
def test_watch_without_a_terminal_ends_when_the_runs_end(slurm_cluster, tiny_assets, tmp_path) -> None:
    exp = _tiny(tiny_assets, tmp_path / "exp", [3, 4])
    assert cli("submit", str(exp)).exit_code == 0
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "status", str(exp), "--watch",
                          "--interval", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "2 run(s): 2 completed" in out.stdout, out.stdout
    assert not slurm_cluster.active_jobs()
    changes = [line for line in out.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d run_00\d ", line)]
    assert all(re.match(r"\S+ run_00\d (PENDING|RUNNING|CONFIGURING|COMPLETING|running|completed)\b", line)
               for line in changes), out.stdout
    print(f"\nwatched 2 runs to their end in {time.monotonic() - t0:.1f} s:\n{out.stdout}")
