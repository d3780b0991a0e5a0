"""SLURM at scale (Appendix J.8): sweeps split over MaxArraySize and chained, concurrent submits that
cannot submit a run twice, slurm_jobs.yaml that stays small, and the ways sbatch and squeue fail.

Fast tests use no cluster. ``slow`` ones start their own real SLURM (tests/slurm_cluster.py) with a
MaxArraySize of 5, so that a dozen runs already need three arrays; the figures for 10,000 runs are
measured by bench/bench_slurm_scale.py, not here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from torchtune_config_writer import expdir
from torchtune_config_writer.errors import SlurmError
from torchtune_config_writer.expdir import JobRecord, append_job, read_jobs

ARRAY_SIZE = 5


def _job(job_id: str, indices: tuple[int, ...], offset: int = 0) -> JobRecord:
    return JobRecord(job_id, "2026-01-01T00:00:00+00:00", expdir.compress_ranges(i - offset for i in indices),
                     offset, indices, f"sbatch --array=... submit.sbatch {offset}")


# ----------------------------------------------------------------------------- slurm_jobs.yaml, no cluster


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 3000), max_size=60))
def test_index_ranges_round_trip(indices: set[int]) -> None:
    assert expdir.expand_ranges(expdir.compress_ranges(indices)) == tuple(sorted(indices))


def test_jobs_file_lists_ranges_and_still_reads_lists(tmp_path: Path) -> None:
    append_job(tmp_path, _job("41", tuple(range(1001))))
    append_job(tmp_path, _job("42", tuple(range(1001, 2002)), offset=1001))
    append_job(tmp_path, _job("43", (2002, 2005, 2006, 2007), offset=2002))
    append_job(tmp_path, _job("44", (9,), offset=9))
    text = (tmp_path / expdir.JOBS_FILE).read_text()
    assert "indices: 0-1000\n" in text and "indices: 1001-2001\n" in text and len(text) < 2000
    jobs = read_jobs(tmp_path)
    assert [j.indices for j in jobs] == [tuple(range(1001)), tuple(range(1001, 2002)), (2002, 2005, 2006, 2007), (9,)]
    assert [j.task_of(j.indices[-1]) for j in jobs] == [1000, 1000, 5, 0]
    # a file written before indices were ranges
    (tmp_path / expdir.JOBS_FILE).write_text("jobs:\n- job_id: '7'\n  array: 0-2\n  offset: 3\n  indices: [3, 4, 5]\n")
    assert read_jobs(tmp_path)[0].indices == (3, 4, 5)


def test_submit_refuses_when_squeue_cannot_say_what_is_still_queued(make_experiment_dir, tmp_path, monkeypatch) -> None:
    # Without squeue, runs submitted earlier look pending (no task wrote a record yet): submitting them
    # again could train each twice. Nothing is submitted, and the message says why.
    from torchtune_config_writer.compile import sbatch
    from torchtune_config_writer.compile.schema import SlurmSettings
    from torchtune_config_writer.execute import submit

    settings_ = SlurmSettings(gpus_per_run=0)
    exp = make_experiment_dir([{"optimizer.lr": 1e-3}, {"optimizer.lr": 2e-3}],
                              slurm=sbatch.plan_resources(settings_, [("run_000", "cpu", None)])[0])
    sbatch.write_submit_scripts(exp, expdir.load_mapping(exp), settings_)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # neither squeue nor sbatch
    append_job(exp, _job("41", (0, 1)))
    before = (exp / expdir.JOBS_FILE).read_text()
    with pytest.raises(SlurmError, match="squeue is not on PATH, so whether the runs submitted earlier"):
        submit.submit(exp, echo=lambda line: None)
    assert (exp / expdir.JOBS_FILE).read_text() == before
    assert len(submit.submit(exp, dry_run=True, echo=lambda line: None)) == 1  # a dry run needs no cluster
    (exp / expdir.JOBS_FILE).unlink()  # nothing submitted before: only sbatch is missing
    with pytest.raises(SlurmError, match="sbatch is not on PATH"):
        submit.submit(exp, echo=lambda line: None)


# ----------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster of our own: MaxArraySize 5, and a partition the tests may set down."""
    import slurm_cluster as sc

    if sc.missing_binaries():
        pytest.skip("SLURM is not installed; run .ci/install_slurm.sh")
    with sc.slurm_cluster(tmp_path_factory.mktemp("slurm_scale"), max_array_size=ARRAY_SIZE, gpus=0) as c:
        yield c


def _experiment(assets, exp_dir: Path, runs: int, **slurm) -> Path:
    """A validated tiny CPU sweep of ``runs`` learning rates (2 steps each), chained arrays at most 2 at once."""
    from torchtune_config_writer import generate_configs

    generate_configs({
        "experiment_name": "scale", "base_config_file": str(assets.base_config),
        "recipe": "lora_finetune_single_device",
        "variables": {"optimizer.lr": [round(1e-4 * (i + 1), 6) for i in range(runs)]},
        "controls": {"max_steps_per_epoch": 2, "epochs": 1},
        "slurm": {"gpus_per_run": 0, "cpus_per_task": 1, "max_concurrent": 2, **slurm},
        "output": {"experiment_dir": str(exp_dir)},
    })
    return exp_dir


def _tasks(cluster, states: str = "all") -> set[tuple[str, int]]:
    """(array job id, task id) of every array task squeue knows in ``states``."""
    out = cluster.run("squeue", "-h", "-r", "-t", states, "-O", "ArrayJobID:|,ArrayTaskID:").stdout
    return {(j.strip(), int(t)) for j, t in (ln.split("|")[:2] for ln in out.splitlines()) if t.strip().isdigit()}


def _recorded(exp: Path) -> list[tuple[str, int]]:
    """(job, task) of every run in slurm_jobs.yaml, one entry per submission of a run."""
    return [(j.job_id, j.task_of(i)) for j in read_jobs(exp) for i in j.indices]


class _PartitionDown:
    """Tasks submitted meanwhile stay PENDING (reason PartitionDown) and never train; cancelled on exit."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def __enter__(self) -> None:
        self.cluster.run("scontrol", "update", "PartitionName=debug", "State=DOWN")

    def __exit__(self, *exc) -> None:
        mine = {j for j, _ in _tasks(self.cluster, "PENDING")}
        if mine:
            self.cluster.run("scancel", *sorted(mine))
        self.cluster.run("scontrol", "update", "PartitionName=debug", "State=UP")


# Two real `submit` processes, each told to write a marker file just before it asks for the experiment's
# submission lock; the test holds the lock until both markers exist, so that they race for it at once.
_RACER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from torchtune_config_writer import expdir
    from torchtune_config_writer.cli import main
    from torchtune_config_writer.execute import submit

    real = expdir.jobs_lock

    def announced(exp_dir):
        Path(sys.argv[1]).touch()  # about to wait for the lock
        return real(exp_dir)

    submit.jobs_lock = announced
    main(sys.argv[2:])
""")


def _race(exp: Path, tmp_path: Path, *selections: list[str]) -> list[subprocess.CompletedProcess]:
    """Start one `submit` per selection; release them at the same moment; return their results."""
    markers = [tmp_path / f"waiting_{n}" for n in range(len(selections))]
    for m in markers:
        m.unlink(missing_ok=True)  # left by an earlier race
    with expdir.jobs_lock(exp):
        procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(m), "submit", str(exp), *sel],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
                 for m, sel in zip(markers, selections)]
        deadline = time.monotonic() + 120
        while not all(m.exists() for m in markers):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.mark.slow
def test_two_submits_at_the_same_moment_submit_every_run_once(cluster, tiny_assets, tmp_path) -> None:
    exp = _experiment(tiny_assets, tmp_path / "exp", 12)
    with _PartitionDown(cluster):
        both = _race(exp, tmp_path, [], [])
        ok = [r for r in both if r.returncode == 0]
        refused = [r for r in both if r.returncode != 0]
        assert len(ok) == 1 and len(refused) == 1, [(r.returncode, r.stdout, r.stderr) for r in both]
        assert "already queued or running, so nothing was submitted" in refused[0].stderr
        assert "run_000 (PENDING, job " in refused[0].stderr
        # every run once: 12 runs over arrays of at most 5 (offsets 0, 5, 10), each chained to the one before
        jobs = read_jobs(exp)
        assert [(j.offset, j.array) for j in jobs] == [(0, "0-4%2"), (5, "0-4%2"), (10, "0-1%2")]
        assert all(f"--dependency=afterany:{a.job_id}" in b.command for a, b in zip(jobs, jobs[1:]))
        recorded = _recorded(exp)
        assert len(recorded) == 12 and set(recorded) == _tasks(cluster, "PENDING")

        # at the same moment, disjoint selections both go through; overlapping ones: one goes through, and
        # the other submits nothing and names the runs in its way; the rest then goes through alone
        exp2 = _experiment(tiny_assets, tmp_path / "exp2", 8)
        assert [r.returncode for r in _race(exp2, tmp_path / "exp2", ["--runs", "0-1"], ["--runs", "2-3"])] == [0, 0]
        first, second = _race(exp2, tmp_path / "exp2", ["--runs", "4-6"], ["--runs", "5-7"])
        winner, loser = (first, second) if first.returncode == 0 else (second, first)
        assert winner.returncode == 0 and loser.returncode == 1, (first, second)
        busy = loser.stderr.split("nothing was submitted: ")[1].split("; wait")[0]
        assert re.findall(r"(run_\d+) \(PENDING, job \d+_\d+\)", busy) == ["run_005", "run_006"], loser.stderr
        rest = "7" if "4-6" in winner.args else "4"
        third = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "submit", str(exp2), "--runs", rest],
                               capture_output=True, text=True)
        assert third.returncode == 0, third.stderr
        assert sorted(i for j in read_jobs(exp2) for i in j.indices) == list(range(8))
        assert set(_recorded(exp)) | set(_recorded(exp2)) == _tasks(cluster, "PENDING")
        status = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "status", str(exp)],
                                capture_output=True, text=True).stdout
        assert "12 run(s): 12 PENDING" in status
        for job, task in recorded:  # each run shows the task that will run it
            index = next(i for j in read_jobs(exp) if j.job_id == job for i in j.indices if j.task_of(i) == task)
            assert f"run_{index:03d}" in status and f" {job}_{task}" in status.split(f"run_{index:03d}")[1].split("\n")[0]


@pytest.mark.slow
def test_a_sweep_over_max_array_size_is_split_chained_and_fully_reported(cluster, tiny_assets, tmp_path) -> None:
    # 12 runs, MaxArraySize 5; four of them trained (few trainings keep the test short): runs 4, 5, 9 and 10
    # fall in three arrays (task 4 of offset 0; tasks 0 and 4 of offset 5; task 0 of offset 10), each
    # starting after the one before ended. status and collect still show all 12 runs.
    from torchtune_config_writer.execute import slurm_state
    from torchtune_config_writer.results.collect import collect_rows

    exp = _experiment(tiny_assets, tmp_path / "exp", 12)
    done = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "submit", str(exp), "--runs", "4,5,9,10"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    jobs = read_jobs(exp)
    assert [(j.offset, j.array, j.indices) for j in jobs] == [(0, "4%2", (4,)), (5, "0,4%2", (5, 9)), (10, "0%2", (10,))]
    assert all(f"--dependency=afterany:{a.job_id}" in b.command for a, b in zip(jobs, jobs[1:]))
    cluster.wait_idle(900)
    records = expdir.read_all(exp, expdir.load_mapping(exp))
    trained = [records[expdir.run_id(i)] for i in (4, 5, 9, 10)]
    # each run was trained by the task its array and offset say, once
    assert [(r.slurm_array_job_id, int(r.slurm_array_task_id)) for r in trained] == _recorded(exp)
    states = [s.state for s in slurm_state.run_states(exp)]
    assert [i for i, s in enumerate(states) if s == "completed"] == [4, 5, 9, 10]
    assert states.count("pending") == 8
    for earlier, later in zip(jobs, jobs[1:]):  # chained: no task of an array started before the previous ended
        last_end = max(records[expdir.run_id(i)].ended for i in earlier.indices)
        first_start = min(records[expdir.run_id(i)].started for i in later.indices)
        assert first_start >= last_end, (earlier.job_id, later.job_id)
    status = subprocess.run([sys.executable, "-m", "torchtune_config_writer", "status", str(exp)],
                            capture_output=True, text=True).stdout
    assert "12 run(s): 8 pending, 4 completed" in status and all(f"run_{i:03d}" in status for i in range(12))
    _, rows = collect_rows(exp)
    assert [r["run_id"] for r in rows] == [f"run_{i:03d}" for i in range(12)]
    assert [r["status"] for r in rows].count("completed") == 4
    assert all(r["steps"] == 2 and r["final_loss"] is not None for r in rows if r["status"] == "completed")


@pytest.mark.slow
def test_an_sbatch_the_controller_cannot_take_is_an_error_and_what_went_through_is_kept(
        tiny_assets, tmp_path, monkeypatch) -> None:
    # MaxJobCount 7 counts every queued array task: the first array (5 tasks) fits, the second does not,
    # and sbatch retries for ever ("temporarily unable to accept job"). submit stops it, says so, and keeps
    # the first array's id.
    import slurm_cluster as sc
    from torchtune_config_writer.execute import submit

    if sc.missing_binaries():
        pytest.skip("SLURM is not installed; run .ci/install_slurm.sh")
    exp = _experiment(tiny_assets, tmp_path / "exp", 8)
    monkeypatch.setattr(submit, "SBATCH_TIMEOUT", 8)
    with sc.slurm_cluster(tmp_path / "full", max_array_size=ARRAY_SIZE, max_job_count=7, gpus=0) as full:
        full.run("scontrol", "update", "PartitionName=debug", "State=DOWN")
        with pytest.raises(SlurmError) as refused:
            submit.submit(exp, echo=lambda line: None)
        jobs = read_jobs(exp)
        assert len(jobs) == 1 and jobs[0].indices == (0, 1, 2, 3, 4)
        message = str(refused.value)
        assert "did not answer within 8 s for array 2 of 2 (runs 5-7)" in message
        assert "temporarily unable to accept job" in message and "MaxJobCount" in message
        assert f"arrays already submitted and recorded: {jobs[0].job_id}" in message
        assert message.endswith("`submit --runs 5-7` submits the runs not submitted")
        assert _tasks(full, "PENDING") == set(_recorded(exp))  # nothing queued that slurm_jobs.yaml does not list
