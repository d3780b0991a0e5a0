"""Submit an experiment directory's ``submit.sbatch`` as SLURM job arrays and read the runs' live state.

``submit`` checks the selected runs, splits them into arrays (``sbatch.plan_arrays``)
and appends each array's job id to ``slurm_jobs.yaml``; ``run_states`` merges
the runs' status records with what squeue says of their tasks, and
``format_status`` prints the ``status`` table. Writing the script itself is
``sbatch.py``'s job. Everything here reads only the experiment directory
(Appendix B) and the SLURM client tools; nothing imports torch or torchtune.

    >>> [a.job_id for a in submit(exp_dir, runs="0-3")]                               # doctest: +SKIP
    ['41']
    >>> [s.state for s in run_states(exp_dir)]                                        # doctest: +SKIP
    ['completed', 'completed', 'RUNNING', 'PENDING']
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ruamel.yaml import YAML

from .atomic import atomic_write_text
from .errors import ExperimentDirError
from .sbatch import SCRIPT_FILE, ArrayChunk, SlurmError, compress_ranges, plan_arrays, read_header
from .status import (
    CANCELLED, COMPLETED, FAILED, FORCE_ENV, LOG_DIR, PENDING, RUNNING, check_all_runnable, load_mapping, read_all,
    select_runs, wall_seconds,
)

JOBS_FILE = "slurm_jobs.yaml"


#: SLURM states of a task that has not finished yet.
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})
#: SLURM states of a task that ended without success (a task that never wrote a status record shows these).
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                           "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})
#: States (record or SLURM) that ``submit --failed`` resubmits.
RESUBMIT_STATES = frozenset({FAILED, CANCELLED}) | FAILED_STATES


# ----------------------------------------------------------------------------- submission


@dataclass
class SubmittedArray:
    """One ``sbatch`` call of ``submit``; ``job_id`` is None on a dry run."""

    command: list[str]
    chunk: ArrayChunk
    job_id: str | None = None


def cluster_max_array_size() -> int | None:
    """MaxArraySize of the cluster (``scontrol show config``), or None when it cannot be asked."""
    scontrol = shutil.which("scontrol")
    if not scontrol:
        return None
    try:
        out = subprocess.run([scontrol, "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else None


def select_for_submit(mapping: dict[str, Any], states: list["RunState"], runs: str | None,
                      failed: bool, force: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs to submit, and the completed ones left out.

    ``runs`` is a --runs SPEC (None = all); ``failed`` keeps only failed/cancelled
    ones; completed runs are left out unless ``force`` (a rerun overwrites them).
    """
    by_id = {s.run_id: s.state for s in states}
    selected = select_runs(mapping, runs)
    if failed:
        selected = [r for r in selected if by_id[r["run_id"]] in RESUBMIT_STATES]
    completed = [] if force else [r["run_id"] for r in selected if by_id[r["run_id"]] == COMPLETED]
    return [r for r in selected if r["run_id"] not in completed], completed


def check_log_dir(exp: Path) -> None:
    """Refuse an experiment directory SLURM cannot write task logs under (``logs/%A_%a.out`` in it)."""
    text = str(exp)
    for c, why in (("%", "expands % patterns"), ("\\", "drops backslashes and then ignores %A_%a")):
        if c in text:
            raise SlurmError(
                f"the experiment directory {text!r} contains {c!r}: SLURM {why} in the task log path "
                f"(logs/%A_%a.out under it); move it, or generate it again into a directory "
                "(output.experiment_dir) without that character"
            )
    if any(not c.isprintable() for c in text):
        raise SlurmError(f"the experiment directory {text!r} contains a control character; sbatch cannot take it")


def _refuse_unsubmittable(exp: Path, selected: list[dict[str, Any]], states: list[RunState]) -> None:
    """Raise, naming every offender, unless all selected runs are runnable and none is queued or running."""
    check_all_runnable(exp, selected, "so nothing was submitted")
    wanted = {int(r["index"]) for r in selected}
    busy = [s for s in states if s.index in wanted and s.state in ACTIVE_STATES | {RUNNING}]
    if busy:
        raise SlurmError(
            "already queued or running, so nothing was submitted: "
            + ", ".join(f"{s.run_id} ({s.state}{', job ' + s.job if s.job else ''})" for s in busy)
            + "; wait for them, `scancel` them, or leave them out with --runs (a run recorded 'running' that "
            "no process runs any more: delete its status/run_NNN.json)"
        )


def submit(exp_dir: str | Path, runs: str | None = None, *, failed: bool = False, dry_run: bool = False,
           force: bool = False, echo: Callable[[str], None] = print) -> list[SubmittedArray]:
    """Submit the selected runs of an experiment directory as job array(s) of its ``submit.sbatch``.

    Every selected run must be runnable (validation passed, config unchanged) and
    not already queued or running; otherwise nothing is submitted. Completed
    runs are left out unless ``force`` (then their tasks train them again). Sweeps over
    MaxArraySize become several arrays (the offset is the script's argument);
    with ``max_concurrent`` each waits for the previous one so that at most K
    runs ever run at once. Job ids are appended to ``slurm_jobs.yaml``.

    >>> [a.job_id for a in submit("outputs/demo", failed=True)]      # doctest: +SKIP
    ['57']
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    script = exp / SCRIPT_FILE
    if not script.is_file():
        raise ExperimentDirError(f"{script} is missing; generate the experiment again to write it")
    states = run_states(exp, mapping)
    selected, completed = select_for_submit(mapping, states, runs, failed, force)
    if completed:
        echo(f"skip {len(completed)} completed run(s) ({', '.join(completed[:5])}{', ...' if len(completed) > 5 else ''}); "
             "--force submits them again")
    if not selected:
        echo("no failed or cancelled runs: nothing to submit" if failed else "no runs selected: nothing to submit")
        return []
    _refuse_unsubmittable(exp, selected, states)
    sbatch = shutil.which("sbatch")
    if not sbatch and not dry_run:
        raise SlurmError("sbatch is not on PATH: submit from a SLURM login node (or run the runs here with "
                         "`torchtune-config-writer run`)")
    check_log_dir(exp)
    header = read_header(script)
    size = int(header.get("max_array_size") or 1001)
    cluster_size = cluster_max_array_size()
    if cluster_size:
        size = min(size, cluster_size)  # the cluster's own limit wins over the experiment's setting
    k = header.get("max_concurrent")
    chunks = plan_arrays((int(r["index"]) for r in selected), size)
    if not dry_run:
        (exp / LOG_DIR).mkdir(exist_ok=True)  # SLURM does not create the directory of --output
    done: list[SubmittedArray] = []
    for n, chunk in enumerate(chunks):
        cmd = [sbatch or "sbatch", "--parsable", f"--array={chunk.spec(k)}", f"--chdir={exp}"]
        if force:
            cmd.append(f"--export=ALL,{FORCE_ENV}=1")  # the task may then train a completed run again
        if k and done:
            # Separate arrays each have their own %K; chaining keeps the total at K.
            cmd.append(f"--dependency=afterany:{done[-1].job_id or '<job id of the previous array>'}")
        cmd += [str(script), str(chunk.offset)]
        item = SubmittedArray(cmd, chunk)
        if dry_run:
            echo(shlex.join(cmd))
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=exp, timeout=120)
            if proc.returncode != 0:
                raise SlurmError(f"sbatch refused array {n + 1} of {len(chunks)} (runs "
                                 f"{compress_ranges(chunk.indices)}): {proc.stderr.strip() or proc.stdout.strip()}"
                                 + (f"; arrays already submitted: {', '.join(d.job_id for d in done)}" if done else ""))
            item.job_id = proc.stdout.strip().split(";")[0]
            record_job(exp, item)
            echo(f"submitted job array {item.job_id}: {len(chunk.task_ids)} run(s) "
                 f"({_describe_runs(chunk.indices)}), --array={chunk.spec(k)}"
                 + (f", offset {chunk.offset}" if chunk.offset else ""))
        done.append(item)
    return done


def _describe_runs(indices: Iterable[int]) -> str:
    ids = sorted(indices)
    return f"run_{ids[0]:03d}" if len(ids) == 1 else f"indices {compress_ranges(ids)}"


# ----------------------------------------------------------------------------- slurm_jobs.yaml


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the experiment directory itself (two submits must not lose each other's ids)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_jobs(exp_dir: str | Path) -> list[dict[str, Any]]:
    """The job arrays recorded in ``slurm_jobs.yaml``, oldest first ([] when none)."""
    path = Path(exp_dir) / JOBS_FILE
    if not path.is_file():
        return []
    try:
        data = YAML(typ="safe").load(path.read_text()) or {}
    except Exception as e:  # a damaged file must not hide the runs' states
        raise ExperimentDirError(
            f"{path}: unreadable ({e}); fix or delete it (it only lists submitted job ids)") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return [j for j in jobs or [] if isinstance(j, dict) and j.get("job_id")]


def record_job(exp_dir: Path, item: SubmittedArray) -> None:
    """Append one submitted array to ``slurm_jobs.yaml`` (read, append, atomic replace, under a lock)."""
    entry = {
        "job_id": str(item.job_id),
        "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "array": item.command[2].split("=", 1)[1],
        "offset": item.chunk.offset,
        "indices": list(item.chunk.indices),
        "command": shlex.join(item.command),
    }
    with _locked(exp_dir):
        jobs = read_jobs(exp_dir) + [entry]
        yaml = YAML(typ="safe")
        yaml.default_flow_style = None  # index lists on one line
        buf = io.StringIO()
        buf.write("# Job arrays submitted by `torchtune-config-writer submit`, oldest first.\n"
                  "# Array task T of a job ran the run whose index is T + offset.\n")
        yaml.dump({"jobs": jobs}, buf)
        atomic_write_text(exp_dir / JOBS_FILE, buf.getvalue())


def latest_tasks(jobs: list[dict[str, Any]]) -> dict[int, tuple[str, int, str]]:
    """Run index -> (job id, array task id, submitted) of the latest submission that includes it."""
    out = {}
    for job in jobs:
        offset = int(job.get("offset") or 0)
        for i in job.get("indices") or []:
            out[int(i)] = (str(job["job_id"]), int(i) - offset, str(job.get("submitted") or ""))
    return out


# ----------------------------------------------------------------------------- live state


@dataclass(frozen=True)
class TaskState:
    """One array task as ``squeue -t all`` sees it."""

    job_id: str
    task_id: int
    state: str
    exit_code: int | None
    seconds: float | None
    reason: str


def query_tasks(job_ids: Iterable[str]) -> dict[tuple[str, int], TaskState] | None:
    """The tasks of these array jobs known to SLURM, or None when squeue is missing or fails.

    Finished tasks are listed until MinJobAge passes; older ones are simply absent.
    """
    ids = sorted({str(j) for j in job_ids})
    squeue = shutil.which("squeue")
    if not squeue or not ids:
        return None if not squeue else {}
    fmt = "ArrayJobID:|,ArrayTaskID:|,State:|,exit_code:|,TimeUsed:|,Reason:"
    try:
        proc = subprocess.run([squeue, "-h", "-r", "-t", "all", "-j", ",".join(ids), "-O", fmt],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # Every id aged out of slurmctld: squeue calls that an invalid job id.
        return {} if "Invalid job id" in proc.stderr else None
    out = {}
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 6 or not parts[1].isdigit():
            continue  # not an array task
        out[(parts[0], int(parts[1]))] = TaskState(parts[0], int(parts[1]), parts[2].split()[0],
                                                   _wait_status(parts[3]), _duration(parts[4]), parts[5])
    return out


def _wait_status(text: str) -> int | None:
    """squeue's exit_code is a wait status: exit 1 shows as 256, a signal N as N. Return a shell-style code."""
    if not text.isdigit():
        return None
    status = int(text)
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


def _duration(text: str) -> float | None:
    """``[D-]HH:MM:SS`` / ``MM:SS`` -> seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


@dataclass
class RunState:
    """A run's state for ``status``: lower case from its status record, UPPER CASE live from SLURM."""

    run_id: str
    index: int
    parameters: dict[str, Any]
    state: str
    exit_code: int | None
    seconds: float | None
    job: str | None
    """The SLURM task (``JOB_TASK``) that ran it or will run it."""


def _job_of_record(rec: dict[str, Any]) -> tuple[str, int] | None:
    job, task = rec.get("slurm_array_job_id"), rec.get("slurm_array_task_id")
    return (str(job), int(task)) if job and str(task).isdigit() else None


def _submissions(exp: Path, runs: list[dict[str, Any]], records: dict[str, dict[str, Any]]
                 ) -> dict[int, tuple[str, int, str]]:
    """Run index -> (job id, task id, since) of the SLURM task that last ran or will run it.

    The latest submission in slurm_jobs.yaml, else the task named in the run's
    status record (an array submitted by hand with ``sbatch submit.sbatch``).
    """
    subs = latest_tasks(read_jobs(exp))
    for run in runs:
        rec = records[run["run_id"]]
        job = _job_of_record(rec)
        if int(run["index"]) not in subs and job:
            subs[int(run["index"])] = (*job, str(rec.get("started") or ""))
    return subs


def submitted_job_ids(exp_dir: str | Path, mapping: dict[str, Any] | None = None) -> list[str]:
    """The SLURM array job ids that ran or will run the experiment's runs (what ``status`` asks squeue about)."""
    mapping = mapping or load_mapping(exp_dir)
    subs = _submissions(Path(exp_dir), select_runs(mapping, None), read_all(exp_dir, mapping))
    return sorted({job for job, _, _ in subs.values()})


def _merge(run: dict[str, Any], rec: dict[str, Any], sub: tuple[str, int, str] | None,
           task: TaskState | None) -> RunState:
    """One run's state from its record, its latest SLURM task (``sub``) and what squeue says of that task."""
    rec_job = _job_of_record(rec)
    out = RunState(run["run_id"], int(run["index"]), dict(run.get("parameters") or {}), rec["state"],
                   rec.get("exit_code"), wall_seconds(rec, until_now=True), f"{rec_job[0]}_{rec_job[1]}" if rec_job else None)
    if sub is None:
        return out
    job = f"{sub[0]}_{sub[1]}"
    if task is None:
        if rec_job is None and rec["state"] == PENDING:
            out.job = job  # submitted, but SLURM no longer remembers the task (MinJobAge passed)
        return out
    from_this_task = rec_job == sub[:2]
    finished = from_this_task and rec["state"] in (COMPLETED, FAILED, CANCELLED)
    later_local_run = not from_this_task and bool(rec.get("started")) and str(rec["started"]) > sub[2]
    if finished:
        if rec["state"] == CANCELLED and task.state in FAILED_STATES - {"CANCELLED"}:
            out.state = task.state  # run_one saw only a SIGTERM; SLURM knows why (TIMEOUT, PREEMPTED, ...)
    elif task.state in ACTIVE_STATES:
        out.state, out.job = task.state, job
        if not from_this_task:  # the record (if any) is of an earlier attempt
            out.exit_code, out.seconds = None, (None if task.state == "PENDING" else task.seconds)
    elif task.state in FAILED_STATES and not later_local_run:
        # Ended without a final record: cancelled while pending, killed (NODE_FAIL, OOM), or the
        # setup failed before run_one started.
        out.state, out.exit_code, out.seconds, out.job = task.state, task.exit_code, task.seconds, job
    return out


def run_states(exp_dir: str | Path, mapping: dict[str, Any] | None = None, *, use_slurm: bool = True,
               live: dict[tuple[str, int], TaskState] | None = None) -> list[RunState]:
    """Every run's state, in index order: its status record, overridden by SLURM for submitted runs.

    SLURM wins when the run's latest array task is queued or running (PENDING,
    RUNNING), or when it ended without writing a final record (cancelled while
    pending, TIMEOUT, NODE_FAIL: the record is missing, older, or still says
    running). ``live`` is squeue's answer when the caller already has it;
    without squeue (or with ``use_slurm=False``) the records alone count.

    >>> [(s.run_id, s.state) for s in run_states("outputs/demo")]     # doctest: +SKIP
    [('run_000', 'completed'), ('run_001', 'RUNNING'), ('run_002', 'PENDING')]
    """
    exp = Path(exp_dir)
    mapping = mapping or load_mapping(exp)
    records = read_all(exp, mapping)
    runs = select_runs(mapping, None)
    subs = _submissions(exp, runs, records)
    if live is None and use_slurm and subs:
        live = query_tasks({job for job, _, _ in subs.values()})
    live = live or {}
    states = []
    for run in runs:
        sub = subs.get(int(run["index"]))
        states.append(_merge(run, records[run["run_id"]], sub, live.get(sub[:2]) if sub else None))
    return states


# ----------------------------------------------------------------------------- the status table


def _short_names(keys: list[str]) -> dict[str, str]:
    """``model.lora_rank`` -> ``lora_rank`` where the last part is unique among the keys."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s}s" if s < 60 else (f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m")


def format_status(states: list[RunState], variables: list[str] | None = None, slurm_note: str = "") -> str:
    """The ``status`` table: one row per run, then counts per state."""
    keys = list(variables or dict.fromkeys(k for s in states for k in s.parameters))
    short = _short_names(keys)
    rows = [("RUN", "PARAMETERS", "STATE", "EXIT", "WALL", "JOB")]
    for s in states:
        params = " ".join(f"{short[k]}={s.parameters[k]}" for k in keys if k in s.parameters)
        rows.append((s.run_id, params or "-", s.state, "-" if s.exit_code is None else str(s.exit_code),
                     _fmt_seconds(s.seconds), s.job or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append("")
    lines.append(f"{len(states)} run(s): " + ", ".join(f"{n} {st}" for st, n in counts.items()))
    if any(s.state.isupper() for s in states):
        lines.append("UPPER CASE states are live from SLURM; lower case ones from the runs' status records.")
    if slurm_note:
        lines.append(slurm_note)
    return "\n".join(lines)
