"""Tasks squeue has forgotten (execute/sacct.py): sacct's answers parsed, the records they settle, and a
SIGKILLed task on a real SLURM whose MinJobAge is 2 s: it ends as failed, not running forever.

Fast tests parse text captured from ``sacct -c`` on the local SLURM 22.05 (accounting none,
jobcomp/filetxt) and decide on hand-made records; the ``slow`` one starts its own cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from torchtune_config_writer import expdir
from torchtune_config_writer.execute import sacct, slurm_state
from torchtune_config_writer.execute.sacct import TaskEnd, plan, settled_record
from torchtune_config_writer.execute.slurm_state import Submission, TaskState
from torchtune_config_writer.expdir import JobRecord, RunEntry, SlurmState, State, StatusRecord, write_status
from helpers import cli, wait_for

SUBMITTED = "2026-01-01T00:00:00+00:00"
RUN = RunEntry("run_000", 0, "configs/run_000.yaml", "0", "/o", {}, "passed", None)
SUB = Submission("41", 0, SUBMITTED)

# `sacct -c -n -P -o JobID,State,ExitCode,Elapsed,Start,End -j 2,3,1,4,5,6` on the local SLURM 22.05
# (jobcomp/filetxt): array tasks 1_0 (exit 0), 1_1 (exit 3), 1_3 (its shell SIGKILLed), 1_2 (scancel),
# and 5_1 (SIGKILLed) / 5_0 (`scancel --signal=KILL`), named by raw job id; one line repeats (a requeue).
JOBCOMP = """\
2|COMPLETED|0:0|00:00:00|2026-11-24T05:24:52|2026-11-24T05:24:52
3|FAILED|3:0|00:00:00|2026-11-24T05:24:52|2026-11-24T05:24:52
1|FAILED|0:9|00:00:00|2026-11-24T05:24:53|2026-11-24T05:24:53
4|CANCELLED|0:0|00:00:02|2026-11-24T05:24:53|2026-11-24T05:24:55
5|PREEMPTED|0:15|00:00:03|2026-11-24T05:27:50|2026-11-24T05:27:53
5|FAILED|0:9|00:00:06|2026-11-24T05:27:58|2026-11-24T05:28:04
6|CANCELLED|0:0|00:00:16|2026-11-24T05:27:58|2026-11-24T05:28:14
"""

# The same fields from `sacct -n -P -X` where accounting exists: array tasks by name, a pending
# range, a state with its canceller, a step line (left out by -X, skipped if present), and a
# state this module does not know.
ACCOUNTING = """\
41_0|COMPLETED|0:0|00:02:10|2026-01-01T10:00:00|2026-01-01T10:02:10
41_1|OUT_OF_MEMORY|0:125|00:01:05|2026-01-01T10:00:00|2026-01-01T10:01:05
41_2|CANCELLED by 1000|0:15|1-00:00:05|2026-01-01T10:00:00|2026-01-02T10:00:05
41_2.batch|CANCELLED|0:15|1-00:00:05|2026-01-01T10:00:00|2026-01-02T10:00:05
41_3|TIMEOUT|0:0|04:00:00|2026-01-01T10:00:00|2026-01-01T14:00:00
41_4|NODE_FAIL|0:0|00:10:00|2026-01-01T10:00:00|2026-01-01T10:10:00
41_[5-7]|PENDING|0:0|00:00:00|Unknown|Unknown
41_8|SOMETHING_NEW|0:0|00:00:00|Unknown|Unknown
"""


def test_sacct_lines_parse_by_job_name_last_line_winning() -> None:
    ends = sacct.parse_sacct(JOBCOMP)
    assert {k: (e.state, e.exit_code) for k, e in ends.items()} == {
        "2": ("COMPLETED", 0), "3": ("FAILED", 3), "1": ("FAILED", 137), "4": ("CANCELLED", 0),
        "5": ("FAILED", 137), "6": ("CANCELLED", 0)}
    assert ends["6"].seconds == 16
    assert datetime.fromisoformat(ends["6"].ended) - datetime.fromisoformat(ends["6"].started) == timedelta(seconds=16)
    assert ends["6"].ended.endswith("+00:00")  # records keep UTC times


def test_accounting_lines_parse_by_array_task_name() -> None:
    ends = sacct.parse_sacct(ACCOUNTING)
    assert sorted(ends) == ["41_0", "41_1", "41_2", "41_3", "41_4", "41_[5-7]"]
    assert (ends["41_1"].state, ends["41_1"].exit_code) == (SlurmState.OUT_OF_MEMORY, 253)
    assert (ends["41_2"].state, ends["41_2"].seconds) == (SlurmState.CANCELLED, 86405)
    assert ends["41_[5-7]"].started is None and ends["41_[5-7]"].state.active


def test_exit_codes_times_and_jobcomp_type() -> None:
    assert [sacct.exit_code(t) for t in ("0:0", "2:0", "0:9", "0:15", "x", "")] == [0, 2, 137, 143, None, None]
    assert sacct.sacct_time("None") is None and sacct.sacct_time("2026-01-01T10:00:00")
    assert sacct.jobcomp_type("JobCompHost = localhost\nJobCompType             = jobcomp/none\n") == "jobcomp/none"
    assert sacct.jobcomp_type("AccountingStorageType = accounting_storage/none\n") is None


# ----------------------------------------------------------------------------- deciding


def running(**fields) -> StatusRecord:
    """The record of task 41_0 (raw id 57) that says running."""
    return StatusRecord("run_000", State.RUNNING, started=SUBMITTED, slurm_job_id="57", slurm_array_job_id="41",
                        slurm_array_task_id="0", log="logs/41_0.out", **fields)


def end(state: SlurmState, code: int = 0, ended: str = "2026-01-01T00:05:00+00:00") -> TaskEnd:
    return TaskEnd("57", state, code, 300, SUBMITTED, ended)


def test_a_forgotten_running_task_is_asked_about_and_recorded_as_sacct_says() -> None:
    c = plan(RUN, running(), SUB, None)
    assert c is not None and c.task is None and sacct.raw_job_id(c) == "57"
    new = settled_record(c, end(SlurmState.OUT_OF_MEMORY, 137), source="sacct -c")
    assert (new.state, new.slurm_state, new.exit_code, new.ended) == (
        State.FAILED, "OUT_OF_MEMORY", 137, "2026-01-01T00:05:00+00:00")
    assert new.started == SUBMITTED and new.log == "logs/41_0.out" and "sacct -c" in new.note
    cancelled = settled_record(c, end(SlurmState.CANCELLED), source="sacct")
    assert (cancelled.state, cancelled.slurm_state) == (State.CANCELLED, "CANCELLED")
    # what it shows, and that `submit --failed` takes it
    merged = slurm_state.merge(RUN, new, SUB, None)
    assert (merged.state, merged.exit_code) == (SlurmState.OUT_OF_MEMORY, 137)
    assert merged.state in slurm_state.RESUBMIT_STATES and "OUT_OF_MEMORY" in merged.note


def test_nobody_knows_a_forgotten_running_task_it_fails_saying_so() -> None:
    c = plan(RUN, running(), SUB, None)
    new = settled_record(c, None, source="neither squeue nor sacct -c lists it")
    assert (new.state, new.slurm_state, new.exit_code) == (State.FAILED, None, None)
    assert new.note == ("SLURM no longer knows task 41_0 (neither squeue nor sacct -c lists it) "
                        "and it recorded no end")
    # a task that never wrote a record is left alone when nobody knows how it ended
    assert settled_record(plan(RUN, StatusRecord("run_000"), SUB, None), None, source="x") is None


def test_what_is_never_recorded() -> None:
    now = datetime(2026, 1, 1, 1, tzinfo=timezone.utc)
    done = dataclasses.replace(running(), state=State.COMPLETED, exit_code=0)
    failed = dataclasses.replace(running(), state=State.FAILED, exit_code=1)
    forgotten = None
    assert plan(RUN, done, SUB, forgotten) is None                       # the task's own final record
    assert plan(RUN, failed, SUB, TaskState("41", 0, SlurmState.FAILED, 1, 5, "")) is None
    assert plan(RUN, running(), None, forgotten) is None                 # never submitted
    assert plan(RUN, running(), SUB, TaskState("41", 0, SlurmState.RUNNING, None, 5, ""), now=now) is None
    assert plan(RUN, running(), SUB, TaskState("41", 0, SlurmState.COMPLETED, 0, 5, ""), now=now) is None
    local = StatusRecord("run_000", State.RUNNING, started="2026-01-02T00:00:00+00:00")  # a later local run
    assert plan(RUN, local, SUB, forgotten) is None
    # an evaluation whose training did not complete is skipped, not cancelled
    assert plan(RUN, StatusRecord("run_000"), SUB, forgotten, evaluation=True, trained=False) is None
    dep = TaskState("41", 0, SlurmState.CANCELLED, 0, 0, slurm_state.DEPENDENCY_NEVER_SATISFIED)
    assert plan(RUN, StatusRecord("run_000"), SUB, dep, evaluation=True) is None
    # sacct says COMPLETED, or a job with the same id that ended before this submission: nothing to record
    c = plan(RUN, running(), SUB, forgotten)
    assert settled_record(c, end(SlurmState.COMPLETED), source="sacct") is None
    assert settled_record(c, end(SlurmState.FAILED, 1, ended="2025-12-31T00:00:00+00:00"), source="sacct") is None


def test_squeue_shows_it_ended_the_record_waits_for_the_grace_period() -> None:
    task = TaskState("41", 0, SlurmState.NODE_FAIL, 0, 300.0, "NodeDown")
    just_ended = datetime.fromisoformat(SUBMITTED) + timedelta(seconds=310)
    assert plan(RUN, running(), SUB, task, now=just_ended) is None          # its final record may be on its way
    c = plan(RUN, running(), SUB, task, now=just_ended + timedelta(seconds=sacct.GRACE_S))
    new = settled_record(c, None, source="squeue")
    assert (new.state, new.slurm_state, new.ended) == (State.FAILED, "NODE_FAIL", "2026-01-01T00:05:00+00:00")


def test_a_cancelled_record_learns_slurms_reason_and_nothing_else_changes() -> None:
    own = dataclasses.replace(running(), state=State.CANCELLED, exit_code=143, ended="2026-01-01T01:00:00+00:00")
    c = plan(RUN, own, SUB, TaskState("41", 0, SlurmState.TIMEOUT, 143, 3600, "TimeLimit"))
    new = settled_record(c, None, source="squeue")
    assert new == dataclasses.replace(own, slurm_state="TIMEOUT")
    assert plan(RUN, new, SUB, TaskState("41", 0, SlurmState.TIMEOUT, 143, 3600, "")) is None  # once


def test_cancelled_while_pending_gets_a_record_naming_its_task() -> None:
    attempt = expdir.Attempt(2, "configs/run_000.attempt2.yaml", "1", "oom")
    run = dataclasses.replace(RUN, attempts=(attempt,))
    c = plan(run, StatusRecord("run_000"), SUB, TaskState("41", 0, SlurmState.CANCELLED, 0, 0, "None"))
    new = settled_record(c, None, source="squeue")
    assert (new.state, new.slurm_state, new.slurm_task, new.attempt, new.started) == (
        State.CANCELLED, "CANCELLED", ("41", 0), 2, None)


def test_settle_writes_records_from_squeue_and_keeps_what_tasks_wrote(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": v} for v in (1e-3, 2e-3, 3e-3, 4e-3)])
    expdir.append_job(exp, JobRecord("41", SUBMITTED, "0-3", 0, (0, 1, 2, 3), "sbatch submit.sbatch"))
    base = {"started": SUBMITTED, "slurm_array_job_id": "41"}
    write_status(exp, StatusRecord("run_000", State.COMPLETED, exit_code=0, **base, slurm_array_task_id="0"))
    write_status(exp, StatusRecord("run_001", State.RUNNING, **base, slurm_array_task_id="1"))
    write_status(exp, StatusRecord("run_003", State.RUNNING, **base, slurm_array_task_id="3"))
    before = {p.name: p.read_text() for p in (exp / "status").glob("*.json")}
    live = {("41", 0): TaskState("41", 0, SlurmState.COMPLETED, 0, 5, "None"),
            ("41", 1): TaskState("41", 1, SlurmState.OUT_OF_MEMORY, 0, 5, "OutOfMemory"),
            ("41", 2): TaskState("41", 2, SlurmState.CANCELLED, 0, 0, "None"),
            ("41", 3): TaskState("41", 3, SlurmState.RUNNING, None, 5, "None")}
    mapping = expdir.load_mapping(exp)
    records = expdir.read_all(exp, mapping)
    subs = slurm_state.submissions(exp, mapping, records)
    settled = sacct.settle(exp, mapping, live, records, subs, {}, {})
    assert settled.written == ("run_001", "run_002") and settled.note == ""
    on_disk = expdir.read_all(exp, mapping)
    assert (on_disk["run_001"].state, on_disk["run_001"].slurm_state) == (State.FAILED, "OUT_OF_MEMORY")
    assert (on_disk["run_002"].state, on_disk["run_002"].slurm_task) == (State.CANCELLED, ("41", 2))
    assert settled.records["run_001"] == on_disk["run_001"]
    for name in ("run_000.json", "run_003.json"):  # completed by its task; still running
        assert (exp / "status" / name).read_text() == before[name]
    # the next call finds nothing to do
    assert sacct.settle(exp, mapping, live, on_disk, subs, {}, {}).written == ()


def test_settle_records_evaluations_in_their_own_records(make_experiment_dir) -> None:
    exp = make_experiment_dir([{"optimizer.lr": v} for v in (1e-3, 2e-3)])
    expdir.append_job(exp, JobRecord("41", SUBMITTED, "0-1", 0, (0, 1), "sbatch submit.sbatch"))
    expdir.append_job(exp, JobRecord("42", SUBMITTED, "0-1", 0, (0, 1), "sbatch eval.sbatch", kind="eval"))
    base = {"started": SUBMITTED, "slurm_array_job_id": "41"}
    write_status(exp, StatusRecord("run_000", State.COMPLETED, exit_code=0, **base, slurm_array_task_id="0"))
    write_status(exp, StatusRecord("run_001", State.FAILED, exit_code=1, **base, slurm_array_task_id="1"))
    evals = {"heldout_epoch0": {"state": "running"}}
    write_status(exp, StatusRecord("run_000", State.RUNNING, started=SUBMITTED, slurm_array_job_id="42",
                                   slurm_array_task_id="0", evaluations=evals), evaluation=True)
    live = {("41", 0): TaskState("41", 0, SlurmState.COMPLETED, 0, 5, "None"),
            ("41", 1): TaskState("41", 1, SlurmState.FAILED, 1, 5, "NonZeroExitCode"),
            ("42", 0): TaskState("42", 0, SlurmState.OUT_OF_MEMORY, 0, 5, "OutOfMemory"),
            ("42", 1): TaskState("42", 1, SlurmState.CANCELLED, 0, 0, slurm_state.DEPENDENCY_NEVER_SATISFIED)}
    mapping = expdir.load_mapping(exp)
    records = expdir.read_all(exp, mapping)
    eval_records = {r.run_id: expdir.read_status(exp, r.run_id, evaluation=True) for r in mapping.runs}
    subs = slurm_state.submissions(exp, mapping, records)
    eval_subs = slurm_state.submissions(exp, mapping, eval_records, kind="eval")
    settled = sacct.settle(exp, mapping, live, records, subs, eval_records, eval_subs)
    assert settled.written == ("run_000 (evaluation)",)  # run_001's evaluation is skipped, not cancelled
    rec = expdir.read_status(exp, "run_000", evaluation=True)
    assert (rec.state, rec.slurm_state, rec.evaluations) == (State.FAILED, "OUT_OF_MEMORY", evals)
    assert expdir.read_status(exp, "run_000").state == State.COMPLETED  # the training record is not touched
    assert not expdir.eval_status_path(exp, "run_001").exists()


# ----------------------------------------------------------------------------- real SLURM


@pytest.fixture(scope="module")
def forgetful_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster of our own whose squeue forgets finished jobs after 2 s (MinJobAge), as a busy one does
    after 300 s; no accounting, a job-completion file (``sacct -c``)."""
    import slurm_cluster as sc

    missing = sc.missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}); run .ci/install_slurm.sh")
    with sc.slurm_cluster(tmp_path_factory.mktemp("forgetful"), min_job_age=2, gpus=0) as cluster:
        yield cluster


def _task_process(exp: Path, index: int) -> int | None:
    """The pid of ``python -m torchtune_config_writer task EXP INDEX`` (what the array task runs)."""
    want = ["torchtune_config_writer", "task", str(exp), str(index)]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(args[i:i + 4] == want for i in range(len(args))):
            return int(proc.name)
    return None


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.slow
def test_a_sigkilled_task_ends_as_failed_once_squeue_forgets_it(forgetful_cluster, tiny_assets, tmp_path,
                                                                monkeypatch) -> None:
    from torchtune_config_writer import generate_configs

    exp = tmp_path / "exp"
    generate_configs({
        "experiment_name": "sigkill", "base_config_file": str(tiny_assets.base_config),
        "recipe": "lora_finetune_single_device",
        # run_000 trains long enough to be killed halfway; run_001 completes
        "variables": {"max_steps_per_epoch": [100, 2]}, "controls": {"epochs": 2, "log_every_n_steps": 1},
        "slurm": {"gpus_per_run": 0, "cpus_per_task": 1}, "output": {"experiment_dir": str(exp)},
    })
    assert cli("submit", str(exp)).exit_code == 0
    job = expdir.read_jobs(exp)[0].job_id
    metric_dir = Path(expdir.load_mapping(exp).runs[0].metric_log.dir)
    wait_for("run_000 training", lambda: any(p.read_text().startswith("Step ") for p in metric_dir.glob("*.txt"))
              if metric_dir.is_dir() else False)
    # SIGKILL, as the kernel's out-of-memory killer or a dying node would: the task records nothing.
    task = _task_process(exp, 0)
    assert task, "the array task's process was not found"
    children = _children(task)
    os.kill(task, signal.SIGKILL)
    for child in children:  # the training runs in its own session (this cluster's proctrack cannot reach it)
        os.killpg(child, signal.SIGKILL)
    record = expdir.read_status(exp, "run_000")
    assert record.state == State.RUNNING and record.slurm_job_id  # what it will say forever unless settled
    forgetful_cluster.wait_idle()
    wait_for("squeue to forget the tasks", lambda: not forgetful_cluster.run(
        "squeue", "-h", "-r", "-t", "all", "-j", job, check=False).stdout.strip())
    completed_before = expdir.status_path(exp, "run_001").read_text()

    status = cli("status", str(exp))
    assert status.exit_code == 0, status.output
    assert re.search(rf"run_000 .* FAILED +137 +\S+ +{job}_0", status.stdout), status.stdout
    assert re.search(r"run_001 .* completed +0", status.stdout), status.stdout
    assert "run_000: task" in status.stdout and "sacct -c" in status.stdout  # the note says how it is known
    record = expdir.read_status(exp, "run_000")
    assert (record.state, record.slurm_state, record.exit_code) == (State.FAILED, "FAILED", 137)
    assert record.ended and record.started and record.log  # the task's own fields are kept
    assert expdir.status_path(exp, "run_001").read_text() == completed_before

    # Recorded: later calls need not ask sacct (here it cannot be found at all) and agree.
    shim = tmp_path / "bin"
    shim.mkdir()
    for tool in ("squeue", "sbatch", "scontrol"):
        (shim / tool).symlink_to(forgetful_cluster_binary(tool))
    monkeypatch.setenv("PATH", str(shim))
    again = cli("status", str(exp))
    assert re.search(r"run_000 .* FAILED +137", again.stdout) and "not on PATH" not in again.stdout, again.stdout
    dry = cli("submit", str(exp), "--failed", "--dry-run")
    assert re.findall(r"--array=(\S+)", dry.stdout) == ["0"], dry.output
    from torchtune_config_writer.results.collect import collect_rows

    _, rows = collect_rows(exp)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    print(f"\nrecord after settling: {json.dumps(expdir._plain(record))}")


def forgetful_cluster_binary(name: str) -> str:
    import slurm_cluster as sc

    return sc.find_binary(name)
