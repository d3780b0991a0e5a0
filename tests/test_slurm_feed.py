"""Submit limits (``slurm.max_submit``, execute/feed.py): the queue that the experiment's own array tasks
feed as they end, so that never more than N of its tasks are queued or running — against a real
single-node SLURM (tests/slurm_cluster.py), with real trainings of the tiny model.

Fast tests parse sacctmgr's output, decide feed steps and print dry runs; ``slow`` ones submit for real.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from torchtune_config_writer import expdir
from torchtune_config_writer.compile import sbatch
from torchtune_config_writer.compile.schema import SlurmSettings
from torchtune_config_writer.errors import SlurmError
from torchtune_config_writer.execute import feed, slurm_state, submit
from torchtune_config_writer.execute.feed import (
    AssocLimits, Decision, Limit, QosLimits, choose_limit, decide, parse_assoc, parse_qos,
)
from torchtune_config_writer.expdir import FeedQueue, QueuedTask, State, load_mapping, read_feed, read_jobs
from helpers import cli

from test_slurm_eval import add_evaluations


@pytest.fixture
def capped_dir(make_experiment_dir, tiny_assets):
    """A hand-made experiment directory of ``n`` tiny runs (1 training step each) with its submit scripts."""
    def make(n: int, *, evaluated: bool = False, **settings) -> Path:
        settings = SlurmSettings(**{"gpus_per_run": 0, "cpus_per_task": 1, **settings})
        exp = make_experiment_dir([{"optimizer.lr": 1e-3 * (i + 1)} for i in range(n)],
                                  slurm=sbatch.plan_resources(settings, [("run_000", "cpu", None)])[0],
                                  derived=[{"max_steps_per_epoch": 1}] * n)
        mapping = add_evaluations(exp, tiny_assets.base_config) if evaluated else load_mapping(exp)
        sbatch.write_submit_scripts(exp, mapping, settings)
        return exp
    return make


# ----------------------------------------------------------------------------- sacctmgr


ASSOC = """\
lab|||40|normal|normal,long
lab|gpu|25||long|long
other||10|||normal
"""
QOS = """\
normal|30||
long|||100
debug|2||
"""


def test_sacctmgr_rows_are_parsed() -> None:
    assert parse_assoc(ASSOC)[1] == AssocLimits("lab", "gpu", 25, None, "long", ("long",))
    assert parse_assoc("garbage\n\n") == []
    assert parse_qos(QOS) == {"normal": QosLimits("normal", 30, None, None), "long": QosLimits("long", None, None, 100),
                              "debug": QosLimits("debug", 2, None, None)}


@pytest.mark.parametrize("account, qos_name, partition, expected", [
    (None, None, None, Limit(10, "sacctmgr: association other MaxSubmitJobs=10")),  # unknown account: the tightest
    ("lab", None, None, Limit(25, "sacctmgr: association lab/gpu MaxSubmitJobs=25")),
    ("lab", None, "cpu", Limit(30, "sacctmgr: QOS normal MaxSubmitJobsPerUser=30")),  # lab's own row: GrpSubmit 40
    ("LAB", "debug", "cpu", Limit(2, "sacctmgr: QOS debug MaxSubmitJobsPerUser=2")),
    ("nobody", None, None, Limit(30, "sacctmgr: QOS normal MaxSubmitJobsPerUser=30")),  # no row: QOS 'normal'
])
def test_the_tightest_applicable_limit_wins(account, qos_name, partition, expected) -> None:
    got = choose_limit(parse_assoc(ASSOC), parse_qos(QOS), account=account, qos_name=qos_name, partition=partition)
    assert got == expected


def test_no_limit_anywhere_is_none() -> None:
    assert choose_limit(parse_assoc("lab||||normal|normal\n"), parse_qos("normal|||\n")) is None
    assert choose_limit([], {}) is None


def test_without_accounting_sacctmgr_reports_no_limit(make_experiment_dir) -> None:
    # This machine's SLURM has no slurmdbd: sacctmgr fails, and that means no limit, not an error.
    mapping = load_mapping(make_experiment_dir([{"optimizer.lr": 1e-3}]))
    assert feed.detect_limit(mapping) is None
    assert feed.limit_of(mapping) is None
    capped = dataclasses.replace(mapping, slurm=dataclasses.replace(mapping.slurm, max_submit=4))
    assert feed.limit_of(capped) == Limit(4, "slurm.max_submit")


# ----------------------------------------------------------------------------- the feed decision


NOW = feed._now()


def _fed(*keys: str, ago: float = 1.0) -> dict[str, str]:
    return {k: (NOW - timedelta(seconds=ago)).isoformat() for k in keys}


@pytest.mark.parametrize("active, me, fed, queued, expected", [
    ({"1_0"}, "1_0", {}, 5, Decision(2, False)),            # itself counts: 3 - 1
    (set(), None, {}, 8, Decision(3, False)),               # submit from the login node
    ({"1_0", "1_1"}, "1_0", {}, 1, Decision(1, False)),     # no more than the queue holds
    ({"1_0", "1_1", "1_2"}, "1_0", {}, 5, Decision(0, False)),               # the others have yet to feed
    ({"1_0", "1_1", "1_2"}, "1_0", _fed("1_1"), 5, Decision(0, True)),       # 1_1 is leaving: wait for its room
    ({"1_0", "1_1", "1_2"}, "1_0", _fed("1_1", ago=3600), 5, Decision(0, False)),  # fed long ago: requeued
    ({"1_0", "1_1", "1_2"}, "1_0", _fed("1_0"), 5, Decision(0, False)),      # its own feed is no one leaving
    ({"1_0", "1_1", "1_2", "1_3"}, None, _fed("1_1", "1_2", "1_3"), 2, Decision(0, True)),
    ({"1_0"}, "1_0", {}, 0, Decision(0, False)),
])
def test_decide(active, me, fed, queued, expected) -> None:
    assert decide(3, active, me, fed, queued, NOW) == expected


def test_a_task_that_leaves_without_submitting_always_leaves_someone_who_will() -> None:
    # Exhaustively over small cases: leaving (submit 0, no wait) happens only when an active task other than
    # the feeding one has not fed lately, i.e. will run its own feed step later. Else the queue would stall.
    import itertools

    for cap in (2, 3, 4):
        for n in range(0, cap + 3):
            active = {f"9_{i}" for i in range(n)}
            for me in [None, *sorted(active)[:1]]:
                others = sorted(active - {me})
                for fed_mask in itertools.product([False, True], repeat=len(others)):
                    fed = _fed(*[k for k, f in zip(others, fed_mask) if f])
                    d = decide(cap, active, me, fed, 5, NOW)
                    if d.submit == 0 and not d.wait:
                        assert any(k not in fed for k in others), (cap, active, me, fed)
                    assert len(active) + d.submit <= max(cap, len(active))


# ----------------------------------------------------------------------------- submit without a cluster


def test_dry_run_says_what_a_capped_submit_does(capped_dir) -> None:
    exp = capped_dir(8, max_submit=3)
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("at most 3 of this experiment's tasks queued or running at once (slurm.max_submit): "
                        "would submit 3 of 8 tasks now; the rest wait in slurm_queue.yaml and each task submits "
                        "more as it ends")
    assert len(lines) == 2 and "--array=0-2 " in lines[1] and lines[1].endswith("submit.sbatch 0")
    assert read_feed(exp) is None and not (exp / expdir.JOBS_FILE).exists()


def test_dry_run_under_a_cap_with_evaluations_has_no_dependent_arrays(capped_dir) -> None:
    exp = capped_dir(3, evaluated=True, max_submit=2)
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would submit 2 of 3 tasks now" in result.stdout
    assert "the 3 evaluation(s) are queued as their runs complete" in result.stdout
    assert "eval.sbatch" not in result.stdout and "aftercorr" not in result.stdout


def test_a_submission_that_fits_under_the_cap_is_the_ordinary_one(capped_dir) -> None:
    exp = capped_dir(2, evaluated=True, max_submit=4)  # 2 trainings + 2 dependent evaluations = 4 tasks
    lines: list[str] = []
    arrays = submit.submit(exp, dry_run=True, echo=lines.append)
    assert [a.kind for a in arrays] == ["train", "eval"] and "aftercorr" in lines[1]


def test_max_concurrent_1_cannot_feed_under_a_cap(capped_dir) -> None:
    exp = capped_dir(5, max_submit=3, max_concurrent=1)
    with pytest.raises(SlurmError, match="slurm.max_concurrent 1 under a submit limit .* cannot feed the queue"):
        submit.submit(exp, dry_run=True, echo=lambda line: None)
    exp = capped_dir(5, max_submit=3, max_concurrent=2)  # the cap becomes 2, and each array keeps %2
    lines: list[str] = []
    submit.submit(exp, dry_run=True, echo=lines.append)
    assert "at most 2 of this experiment's tasks" in lines[0] and "--array=0-1%2 " in lines[1]


def test_generate_refuses_a_cap_of_one() -> None:
    with pytest.raises(Exception, match="1 cannot work: a task that ends still counts against the limit"):
        SlurmSettings(max_submit=1)


def test_withdraw_and_refuse_queued(capped_dir) -> None:
    exp = capped_dir(4, max_submit=2)
    expdir.write_feed(exp, FeedQueue(2, "slurm.max_submit", (QueuedTask(1), QueuedTask(2), QueuedTask(3, "eval")),
                                     {"5_0": QueuedTask(0, "eval")}))
    with pytest.raises(SlurmError, match="already waiting in slurm_queue.yaml .*: run_002"):
        submit.submit(exp, runs="2", dry_run=True, echo=lambda line: None)
    assert feed.withdraw(exp, [0, 2, 3]) == [2, 3]
    queue = read_feed(exp)
    assert queue.items == (QueuedTask(1),) and queue.awaiting == {}
    assert feed.withdraw(exp, [7]) == [] and read_feed(exp) == queue


def test_a_plain_dry_run_of_a_queued_experiment_reports_the_queue(capped_dir) -> None:
    exp = capped_dir(4, max_submit=2)
    expdir.write_feed(exp, FeedQueue(2, "slurm.max_submit", (QueuedTask(2), QueuedTask(3))))
    result = cli("submit", str(exp), "--dry-run")
    assert result.exit_code == 0 and "slurm_queue.yaml holds 2 tasks still to submit" in result.stdout
    status = cli("status", str(exp), "--no-slurm")
    assert "2 run(s) wait to be submitted (at most 2 tasks queued or running at once, slurm.max_submit)" in status.stdout
    assert "none will submit them" not in status.stdout  # --no-slurm: whether a task is active is unknown


def test_a_task_outside_slurm_or_without_a_queue_does_not_feed(capped_dir, monkeypatch, capsys) -> None:
    exp = capped_dir(2, max_submit=2)
    feed.after_task(exp)  # no queue file: nothing at all
    expdir.write_feed(exp, FeedQueue(2, "slurm.max_submit", (QueuedTask(1),)))
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    feed.after_task(exp)  # not an array task
    assert read_feed(exp).items == (QueuedTask(1),) and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- real SLURM


class QueueWatcher:
    """Polls squeue every 0.2 s in a thread and keeps the most tasks it ever saw queued or running at once
    (the test cluster runs nothing but this test's jobs meanwhile)."""

    def __init__(self, cluster) -> None:
        self.cluster, self.peak, self.polls = cluster, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(self.cluster.active_jobs()))
            self.polls += 1
            self._stop.wait(0.2)

    def __enter__(self) -> "QueueWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _wait_done(cluster, exp: Path, timeout: float = 600) -> float:
    """Wait until no task is queued or running and the queue is empty (a task submits before it leaves,
    so the cluster is never idle while the feed goes on)."""
    t0 = time.monotonic()
    cluster.wait_idle(timeout)
    return time.monotonic() - t0


def _jobcomp_peak(cluster, job_ids: set[str]) -> int:
    """The most of these jobs' tasks SLURM's own job-completion records show between submission and end at
    once. The records have whole seconds, so a task that submits its successor in the second it ends
    counts as leaving first: this catches a limit broken for a second or more, not for less."""
    events = []
    for line in (cluster.root / "log" / "jobcomp.txt").read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("ArrayJobId") in job_ids:
            events += [(fields["SubmitTime"], 1), (fields["EndTime"], -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # at equal times, ends first
        level += step
        peak = max(peak, level)
    return peak


def _logs(exp: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + p.read_text()[-1200:] for p in sorted((exp / "logs").glob("*.out")))


@pytest.mark.slow
def test_a_cap_of_3_with_8_runs_never_queues_more_than_3_and_all_complete(slurm_cluster, capped_dir) -> None:
    exp = capped_dir(8, max_submit=3)
    with QueueWatcher(slurm_cluster) as watcher:
        t0 = time.monotonic()
        result = cli("submit", str(exp))
        submit_s = time.monotonic() - t0
        assert result.exit_code == 0, result.output
        # The CLI returned (nothing left on the login node); 3 tasks went to SLURM, 5 wait for them.
        assert result.stdout.splitlines()[0] == (
            "at most 3 of this experiment's tasks queued or running at once (slurm.max_submit): submitting 3 of "
            "8 tasks now; the rest wait in slurm_queue.yaml and each task submits more as it ends")
        assert [j.indices for j in read_jobs(exp)] == [(0, 1, 2)]
        assert [i.index for i in read_feed(exp).items] == [3, 4, 5, 6, 7]
        status = cli("status", str(exp)).stdout
        assert "5 run(s) wait to be submitted (at most 3 tasks queued or running at once, slurm.max_submit)" in status
        wall = _wait_done(slurm_cluster, exp)
    states = slurm_state.run_states(exp)
    assert [s.state for s in states] == [State.COMPLETED] * 8, cli("status", str(exp)).stdout + _logs(exp)
    jobs = read_jobs(exp)
    trained = sorted(i for j in jobs for i in j.indices)
    assert trained == list(range(8))  # each run submitted exactly once
    assert read_feed(exp).items == () and "wait to be submitted" not in cli("status", str(exp)).stdout
    assert watcher.peak == 3, f"at most {watcher.peak} tasks at once in {watcher.polls} polls"
    assert _jobcomp_peak(slurm_cluster, {j.job_id for j in jobs}) == 3  # (0 would mean no record was read)
    fed = [line for line in _logs(exp).splitlines() if line.startswith("submitted job array")]
    assert len(fed) == len(jobs) - 1  # every array but the first was submitted by an ending task
    print(f"\n8 runs under max_submit 3: submit returned in {submit_s:.1f} s, all done in {wall:.0f} s, "
          f"{len(jobs)} arrays, peak {watcher.peak} in {watcher.polls} squeue polls")


@pytest.mark.slow
def test_evaluations_under_a_cap_come_as_their_runs_complete(slurm_cluster, capped_dir) -> None:
    exp = capped_dir(3, evaluated=True, max_submit=2)
    with QueueWatcher(slurm_cluster) as watcher:
        result = cli("submit", str(exp))
        assert result.exit_code == 0, result.output
        assert "the 3 evaluation(s) are queued as their runs complete" in result.stdout
        _wait_done(slurm_cluster, exp)
    mapping = load_mapping(exp)
    records, evals = expdir.read_all(exp, mapping), expdir.read_all_evaluations(exp, mapping)
    assert [r.state for r in records.values()] == ["completed"] * 3, _logs(exp)
    assert [e.state for e in evals.values()] == ["completed"] * 3, _logs(exp)
    for run in mapping.runs:
        assert expdir.read_eval_result(run.evaluations[0].result).metrics["heldout_loss"] > 0
    jobs = read_jobs(exp)
    assert sorted(i for j in jobs if j.kind == "eval" for i in j.indices) == [0, 1, 2]
    assert not any("--dependency" in j.command for j in jobs)
    # Evaluations come early: run_000's evaluation was submitted before the last training was.
    first_eval = next(n for n, j in enumerate(jobs) if j.kind == "eval")
    last_train = max(n for n, j in enumerate(jobs) if j.kind == "train" and 2 in j.indices)
    assert first_eval <= last_train + 1
    assert watcher.peak == 2 and read_feed(exp).items == () and read_feed(exp).awaiting == {}


@pytest.mark.slow
def test_a_queue_nobody_feeds_is_shown_and_submit_resumes_it(slurm_cluster, capped_dir) -> None:
    # Both tasks are killed (SIGKILL to the whole task) before they reach their feed step: nothing is left
    # to submit run_002. status says so; a plain submit submits it, and it completes.
    setup = [*sbatch.default_setup(), '[ "$INDEX" = 2 ] || [ -f go ] || sleep 60']
    exp = capped_dir(3, max_submit=2, setup=setup)
    assert cli("submit", str(exp)).exit_code == 0
    job = read_jobs(exp)[0].job_id
    deadline = time.monotonic() + 60
    while len([t for t in slurm_cluster.active_jobs() if t.startswith(job)]) < 2 or \
            "RUNNING" not in slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=KILL", "--full", job)
    slurm_cluster.wait_idle(60)
    status = cli("status", str(exp)).stdout
    assert "1 run(s) wait to be submitted" in status
    assert "No task of this experiment is queued or running, so none will submit them" in status
    assert f"`torchtune-config-writer submit {exp}` submits the next ones and resumes" in status
    (exp / "go").touch()
    result = cli("submit", str(exp))
    assert result.exit_code == 0, result.output
    assert "slurm_queue.yaml holds 1 task still to submit" in result.stdout
    assert read_jobs(exp)[-1].indices == (2,) and read_feed(exp).items == ()
    slurm_cluster.wait_idle(300)
    assert expdir.read_all(exp, load_mapping(exp))["run_002"].state == "completed", _logs(exp)
    assert "wait to be submitted" not in cli("status", str(exp)).stdout


@pytest.mark.slow
def test_a_feed_step_whose_sbatch_is_refused_keeps_the_queue_and_the_exit_code(slurm_cluster, capped_dir) -> None:
    # The "compute nodes" refuse sbatch (an sbatch first on the tasks' PATH fails, as some sites make it):
    # each task still ends with its run's own exit code and record, says why in its log, and leaves the
    # queue as it was; status then says that nothing will submit it.
    setup = [*sbatch.default_setup(), 'mkdir -p refuse && printf \'#!/bin/sh\\necho "sbatch: error: not on compute '
             'nodes" >&2\\nexit 1\\n\' > refuse/sbatch && chmod +x refuse/sbatch', 'export PATH="$PWD/refuse:$PATH"']
    exp = capped_dir(3, max_submit=2, setup=setup)
    assert cli("submit", str(exp)).exit_code == 0
    slurm_cluster.wait_idle(300)
    records = expdir.read_all(exp, load_mapping(exp))
    assert [records[r].state for r in ("run_000", "run_001")] == ["completed", "completed"], _logs(exp)
    assert [records[r].exit_code for r in ("run_000", "run_001")] == [0, 0]
    tasks = slurm_state.query_tasks([read_jobs(exp)[0].job_id])
    assert {t.state for t in tasks.values()} == {"COMPLETED"}  # the feed step did not change the exit code
    assert "feed: sbatch refused array 1 of 1 (runs 2): sbatch: error: not on compute nodes" in _logs(exp)
    assert [i.index for i in read_feed(exp).items] == [2] and len(read_jobs(exp)) == 1
    assert "none will submit them" in cli("status", str(exp)).stdout


@pytest.mark.slow
def test_a_feed_step_waits_for_tasks_that_already_fed_to_leave(slurm_cluster, capped_dir) -> None:
    # Two tasks of the experiment hold the cap of 2 and have both done their feed step (they only exit
    # now): nobody else will feed, so the feed waits (lock released) until they leave, then submits.
    # The queued runs' tasks end at once in their setup (no training needed to test the feed).
    exp = capped_dir(4, max_submit=2, setup=["exit 0"])
    job = slurm_cluster.run("sbatch", "--parsable", "--array=0-1", "--output=/dev/null", "--wrap", "sleep 6",
                            ).stdout.strip()
    expdir.append_job(exp, expdir.JobRecord(job, "", "0-1", 0, (0, 1), "sbatch --wrap 'sleep 6'"))
    deadline = time.monotonic() + 30
    while sorted(slurm_cluster.run("squeue", "-h", "-r", "-t", "RUNNING", "-j", job, "-o", "%i").stdout.split()) != [
            f"{job}_0", f"{job}_1"]:  # (a fed task still pending was requeued: it is not leaving)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    now = feed._now().isoformat(timespec="seconds")
    expdir.write_feed(exp, FeedQueue(2, "slurm.max_submit", (QueuedTask(2), QueuedTask(3)),
                                     fed={f"{job}_0": now, f"{job}_1": now}))
    lines: list[str] = []
    with QueueWatcher(slurm_cluster) as watcher:
        outcome = feed.feed(exp, echo=lines.append)
    assert "feed: no room for the 2 tasks left; waiting for tasks that already submitted theirs" in lines[0]
    assert [a.chunk.indices for a in outcome.arrays] == [(2, 3)] and read_feed(exp).items == ()
    assert watcher.peak <= 2
    slurm_cluster.wait_idle(60)


@pytest.mark.slow
def test_a_feed_step_does_not_wait_for_a_fed_task_that_was_requeued(slurm_cluster, capped_dir) -> None:
    # A task that fed and then went back to pending (requeued at its time limit, J.4) will feed again when
    # it ends: waiting for it to leave would be in vain, so the feed step leaves the queue to it.
    exp = capped_dir(4, max_submit=2, setup=["exit 0"])
    job = slurm_cluster.run("sbatch", "--parsable", "--hold", "--array=0-1", "--output=/dev/null", "--wrap",
                            "true").stdout.strip()
    expdir.append_job(exp, expdir.JobRecord(job, "", "0-1", 0, (0, 1), "sbatch --hold --wrap true"))
    now = feed._now().isoformat(timespec="seconds")
    expdir.write_feed(exp, FeedQueue(2, "slurm.max_submit", (QueuedTask(2), QueuedTask(3)),
                                     fed={f"{job}_0": now, f"{job}_1": now}))
    lines: list[str] = []
    outcome = feed.feed(exp, echo=lines.append)
    slurm_cluster.run("scancel", job)
    assert outcome.arrays == [] and not outcome.wait and lines == []
    queue = read_feed(exp)
    assert [i.index for i in queue.items] == [2, 3] and queue.fed == {}  # pending tasks are not leaving


@pytest.mark.slow
def test_out_of_memory_retries_under_a_cap_go_through_the_queue(slurm_cluster, tiny_assets, tmp_path: Path) -> None:
    # Each run runs out of memory at batch 4 and fits at 2 (J.3): the task that failed resubmits its run
    # from inside itself, which under the cap queues the retry (the task still fills its place) for the
    # feed steps to submit. All three complete on their second attempt, never more than 2 tasks at once.
    from torchtune_config_writer import generate_configs

    from test_oom_retry import oom_recipe

    exp = tmp_path / "exp"
    generate_configs({
        "experiment_name": "oom_capped", "base_config_file": str(tiny_assets.base_config),
        "recipe": str(oom_recipe(tmp_path / "recipe", above=2)),
        "variables": {"optimizer.lr": [1e-3, 2e-3, 3e-3]},
        "controls": {"batch_size": 4, "gradient_accumulation_steps": 1, "max_steps_per_epoch": 1, "epochs": 1},
        "slurm": {"gpus_per_run": 0, "cpus_per_task": 1, "max_submit": 2},
        "oom_retry": {"max_attempts": 2},
        "output": {"experiment_dir": str(exp)},
    })
    with QueueWatcher(slurm_cluster) as watcher:
        assert "submitting 2 of 3 tasks now" in cli("submit", str(exp)).stdout
        _wait_done(slurm_cluster, exp)
    records = expdir.read_all(exp, load_mapping(exp))
    assert [(r.state, r.attempt) for r in records.values()] == [("completed", 2)] * 3, _logs(exp)
    assert sorted(i for j in read_jobs(exp) for i in j.indices) == [0, 0, 1, 1, 2, 2]
    assert watcher.peak <= 2 and read_feed(exp).items == ()
