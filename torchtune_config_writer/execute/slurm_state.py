"""The runs' live state: status records merged with what squeue says of their SLURM tasks.

Parsing squeue's output is done by pure functions (``parse_squeue``,
``wait_status``, ``duration``); ``query_tasks`` only runs squeue. ``run_states``
merges each run's status record with its latest task (``merge``), and its
evaluation's record with its latest evaluation task (``merge_eval``);
``format_status`` prints the ``status`` table. Nothing here imports torch,
torchtune or pydantic.

    >>> parse_squeue("41|0|RUNNING|0|0:05|None\\n")
    {('41', 0): TaskState(job_id='41', task_id=0, state=<SlurmState.RUNNING: 'RUNNING'>, exit_code=0, seconds=5, reason='None')}
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import SlurmError
from ..expdir import (
    EVAL_JOB, TRAIN_JOB, JobRecord, RunEntry, RunMapping, SlurmState, State, StatusRecord, format_parameters, load_mapping, read_all,
    read_all_evaluations, read_jobs,
)

#: Record states ``submit --failed`` resubmits, and the SLURM states that count as failed.
RESUBMIT_STATES = frozenset({State.FAILED, State.CANCELLED}) | {s for s in SlurmState if s.failed}

#: squeue's reason for a task whose dependency can never be met: an evaluation task whose training
#: task did not complete (``aftercorr``). With ``--kill-on-invalid-dep=yes`` SLURM cancels it at once
#: (state CANCELLED, exit 0, no time used); it never starts, so it never writes a status record.
DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"


@dataclass(frozen=True)
class TaskState:
    """One array task as ``squeue -t all`` sees it."""

    job_id: str
    task_id: int
    state: SlurmState
    exit_code: int | None
    seconds: float | None
    reason: str


@dataclass(frozen=True)
class Submission:
    """The SLURM task that last ran, or will run, a run; ``since`` orders it against local attempts."""

    job_id: str
    task_id: int
    since: str

    @property
    def key(self) -> tuple[str, int]:
        return self.job_id, self.task_id

    @property
    def name(self) -> str:
        return f"{self.job_id}_{self.task_id}"


@dataclass(frozen=True)
class RunState:
    """A run's state for ``status``: a ``State`` from its status record, or a ``SlurmState`` live from SLURM."""

    run_id: str
    index: int
    parameters: dict[str, Any]
    state: State | SlurmState
    exit_code: int | None
    seconds: float | None
    job: str | None
    """The SLURM task (``JOB_TASK``) that ran it or will run it."""
    name: str | None = None
    """The run's ``run_name``, when the experiment names its runs."""
    evaluation: EvalState | None = None
    """Its evaluation's state; None when the run is not evaluated."""
    note: str | None = None
    """Its record's note (why it failed when SLURM, not the task, said how it ended; ...)."""
    attempt: int = 1
    """The attempt of the run its state is of (``RunEntry.attempts``: out-of-memory retries)."""
    requeues: int = 0
    """Times its task was requeued (time limit warning, preemption) during this attempt (Appendix J.4)."""

    @property
    def label(self) -> str:
        """The STATE column: the state, and ``(requeued 2x)`` when the task was requeued."""
        return f"{self.state} (requeued {self.requeues}x)" if self.requeues else str(self.state)


@dataclass(frozen=True)
class EvalState:
    """A run's evaluation for ``status`` and ``submit``: its record merged with its SLURM evaluation task.

    >>> EvalState("run_001", 1, SlurmState.CANCELLED, None, done=0, total=2, skipped="training failed").label
    'skipped (training failed)'
    >>> EvalState("run_002", 2, State.FAILED, "7_2", done=2, total=3).label
    '2/3'
    """

    run_id: str
    index: int
    state: State | SlurmState
    job: str | None
    """The SLURM task (``JOB_TASK``) that evaluated it or will."""
    done: int = 0
    """Evaluations of the run that completed (from its record)."""
    total: int = 0
    """Evaluations the run has (``RunEntry.evaluations``)."""
    skipped: str | None = None
    """Why it never ran, when it never will: ``training failed`` (SLURM cancelled it for its dependency)."""

    @property
    def partial(self) -> bool:
        """Ended unsuccessfully after some, not all, of its evaluations completed."""
        return 0 < self.done < self.total and self.state != State.COMPLETED and not self.active

    @property
    def active(self) -> bool:
        """Queued or running (a task SLURM will cancel for its dependency is not)."""
        return not self.skipped and (self.state == State.RUNNING
                                     or (isinstance(self.state, SlurmState) and self.state.active))

    @property
    def resubmit(self) -> bool:
        """What ``submit --failed`` evaluates again (its training permitting): failed, cancelled, skipped."""
        return bool(self.skipped) or self.state in RESUBMIT_STATES

    @property
    def label(self) -> str:
        """The EVAL column: ``completed``, ``RUNNING``, ``2/3``, ``skipped (training failed)``..."""
        if self.skipped:
            return f"skipped ({self.skipped})"
        if self.partial:
            return f"{self.done}/{self.total}" + (f" {self.state}" if isinstance(self.state, SlurmState) else "")
        return str(self.state)

    @property
    def category(self) -> str:
        """What the footer counts it as."""
        return "skipped" if self.skipped else "partial" if self.partial else str(self.state)


# ----------------------------------------------------------------------------- squeue


_SQUEUE_FORMAT = "ArrayJobID:|,ArrayTaskID:|,State:|,exit_code:|,TimeUsed:|,Reason:"


def cluster_config() -> str | None:
    """``scontrol show config``'s text (the cluster's settings: MaxArraySize, JobCompType...), or None when
    scontrol is missing or does not answer (it waits ~9 s for a controller that is down)."""
    scontrol = shutil.which("scontrol")
    if not scontrol:
        return None
    try:
        return subprocess.run([scontrol, "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def query_tasks(job_ids: Iterable[str]) -> dict[tuple[str, int], TaskState] | None:
    """The tasks of these array jobs known to SLURM, or None when squeue is missing or fails.

    Finished tasks are listed until MinJobAge passes; older ones are simply absent.
    """
    ids = sorted({str(j) for j in job_ids})
    squeue = shutil.which("squeue")
    if not squeue or not ids:
        return None if not squeue else {}
    try:
        proc = subprocess.run([squeue, "-h", "-r", "-t", "all", "-j", ",".join(ids), "-O", _SQUEUE_FORMAT],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # Every id aged out of slurmctld: squeue calls that an invalid job id.
        return {} if "Invalid job id" in proc.stderr else None
    return parse_squeue(proc.stdout)


def parse_squeue(text: str) -> dict[tuple[str, int], TaskState]:
    """Array tasks from ``squeue -h -r -O`` lines in ``_SQUEUE_FORMAT`` (other lines and states are skipped)."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 6 or not parts[1].isdigit():
            continue  # not an array task
        try:
            state = SlurmState(parts[2].split()[0])
        except (ValueError, IndexError):
            continue  # a state this version does not know: the record says what it can
        out[(parts[0], int(parts[1]))] = TaskState(parts[0], int(parts[1]), state, wait_status(parts[3]),
                                                   duration(parts[4]), parts[5])
    return out


def wait_status(text: str) -> int | None:
    """squeue's exit_code is a wait status: exit 1 shows as 256, a signal N as N. Return a shell-style code.

    >>> wait_status("256"), wait_status("9"), wait_status("n/a")
    (1, 137, None)
    """
    if not text.isdigit():
        return None
    status = int(text)
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


def duration(text: str) -> float | None:
    """``[D-]HH:MM:SS`` / ``MM:SS`` -> seconds.

    >>> duration("1-00:00:05"), duration("01:05"), duration("INVALID")
    (86405, 65, None)
    """
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


# ----------------------------------------------------------------------------- merging


def submissions(exp_dir: str | Path, mapping: RunMapping, records: dict[str, StatusRecord], *,
                kind: str = TRAIN_JOB, jobs: list[JobRecord] | None = None) -> dict[int, Submission]:
    """Run index -> the SLURM task that last ran or will run it (``kind="eval"``: that evaluated it or will).

    The latest submission of that kind in slurm_jobs.yaml, else the task named in
    the run's status record (an array submitted by hand with ``sbatch submit.sbatch``).
    ``records`` are the training records, or the evaluation ones for ``eval``;
    ``jobs``, slurm_jobs.yaml when the caller read it already.
    """
    subs: dict[int, Submission] = {}
    for job in read_jobs(exp_dir) if jobs is None else jobs:
        if job.kind != kind:
            continue  # an evaluation task of run i is not its training task, nor the other way round
        for i in job.indices:
            subs[i] = Submission(job.job_id, job.task_of(i), job.submitted)
    for run in mapping.runs:
        rec = records.get(run.run_id)
        task = rec.slurm_task if rec else None
        if run.index not in subs and task:
            subs[run.index] = Submission(*task, str(rec.started or ""))
    return subs


#: States of a task that ended and was put back in the queue (a requeue: SLURM's after a preemption or node
#: failure, or ours before a time limit); a record the task wrote before is then of its earlier start.
_QUEUED_AGAIN = frozenset({SlurmState.PENDING, SlurmState.REQUEUED, SlurmState.REQUEUE_HOLD, SlurmState.REQUEUE_FED})


def merge(run: RunEntry, rec: StatusRecord, sub: Submission | None, task: TaskState | None) -> RunState:
    """One run's state from its record, its latest SLURM task (``sub``) and what squeue says of that task."""
    rec_job = rec.slurm_task
    state: State | SlurmState = rec.state
    if rec.slurm_state and rec.state in (State.FAILED, State.CANCELLED) and rec.slurm_state in SlurmState.__members__:
        state = SlurmState(rec.slurm_state)  # recorded from squeue/sacct (sacct.settle): OUT_OF_MEMORY, TIMEOUT...
    exit_code, seconds = rec.exit_code, rec.wall_seconds(until_now=True)
    job = f"{rec_job[0]}_{rec_job[1]}" if rec_job else None
    if sub is not None and task is None:
        if rec_job is None and rec.state == State.PENDING:
            job = sub.name  # submitted, but SLURM no longer remembers the task (MinJobAge passed)
    elif sub is not None and task is not None:
        from_this_task = rec_job == sub.key
        finished = from_this_task and rec.state in (State.COMPLETED, State.FAILED, State.CANCELLED)
        later_local_run = not from_this_task and bool(rec.started) and str(rec.started) > sub.since
        if finished and rec.state != State.COMPLETED and task.state in _QUEUED_AGAIN:
            state, job = task.state, sub.name  # SLURM requeued it itself (preemption, node failure): queued again
        elif finished:
            if rec.state == State.CANCELLED and task.state.failed and task.state != SlurmState.CANCELLED:
                state = task.state  # run_one saw only a SIGTERM; SLURM knows why (TIMEOUT, PREEMPTED, ...)
        elif task.state.active:
            state, job = task.state, sub.name
            if not from_this_task:  # the record (if any) is of an earlier attempt
                exit_code, seconds = None, (None if task.state == SlurmState.PENDING else task.seconds)
        elif task.state.failed and not later_local_run:
            # Ended without a final record: cancelled while pending, killed (NODE_FAIL, OOM), or the
            # setup failed before run_one started.
            state, exit_code, seconds, job = task.state, task.exit_code, task.seconds, sub.name
    return RunState(run.run_id, run.index, dict(run.parameters), state, exit_code, seconds, job, run.name,
                    note=rec.note, attempt=attempt_of(run, rec, job), requeues=rec.requeues)


def attempt_of(run: RunEntry, rec: StatusRecord, job: str | None) -> int:
    """Which attempt a run's shown state is of: its record's when the state comes from the record (its
    task, or a local run), else (a newer SLURM task, or no record) the run's current attempt.

    >>> from ..expdir import Attempt
    >>> run = RunEntry("run_000", 0, "c", "0", "/o", {}, "passed", None, attempts=(Attempt(2, "c2", "0", "oom"),))
    >>> rec = StatusRecord("run_000", State.FAILED, started="t", slurm_array_job_id="5", slurm_array_task_id="0")
    >>> attempt_of(run, rec, "5_0"), attempt_of(run, rec, "9_0")
    (1, 2)
    """
    own = f"{rec.slurm_task[0]}_{rec.slurm_task[1]}" if rec.slurm_task else None
    return (rec.attempt or 1) if rec.started and job == own else run.attempt


def merge_eval(run: RunEntry, rec: StatusRecord, sub: Submission | None, task: TaskState | None,
               training: State | SlurmState) -> EvalState | None:
    """One run's evaluation state: its record and latest evaluation task merged as ``merge`` does for
    training, then told apart where the evaluation never ran because its training did not complete.

    ``training`` is the run's merged training state. None when the run is not evaluated.

    >>> run = RunEntry("run_001", 1, "c", "0", "/o", {}, "passed", None, evaluations=(None, None))
    >>> task = TaskState("8", 1, SlurmState.CANCELLED, 0, 0, "DependencyNeverSatisfied")
    >>> merge_eval(run, StatusRecord("run_001"), Submission("8", 1, ""), task, State.FAILED).label
    'skipped (training failed)'
    """
    total = len(run.evaluations)
    if not total:
        return None
    merged = merge(run, rec, sub, task)
    done = sum(1 for v in (rec.evaluations or {}).values() if isinstance(v, dict) and v.get("state") == "completed")
    why = "training cancelled" if training in (State.CANCELLED, SlurmState.CANCELLED) else "training failed"
    skipped = None
    never_started = sub is not None and rec.slurm_task != sub.key  # the record (if any) is of an earlier attempt
    if task is not None and never_started and task.reason == DEPENDENCY_NEVER_SATISFIED:
        # SLURM cancelled it (or is about to) because training task i did not complete: it never runs.
        skipped = why
    elif merged.state == State.PENDING and training in RESUBMIT_STATES:
        # No evaluation ran, and none will until the run trains again (a local run, or SLURM forgot the task).
        skipped = why
    return EvalState(run.run_id, run.index, merged.state, merged.job, done, total, skipped)


def run_states(exp_dir: str | Path, mapping: RunMapping | None = None, *, use_slurm: bool = True,
               live: dict[tuple[str, int], TaskState] | None = None, strict: bool = False) -> list[RunState]:
    """Every run's state, in index order: its status record, overridden by SLURM for submitted runs.

    SLURM wins when the run's latest array task is queued or running (PENDING,
    RUNNING), or when it ended without writing a final record (cancelled while
    pending, TIMEOUT, NODE_FAIL: the record is missing, older, or still says
    running). ``live`` is squeue's answer when the caller already has it;
    without squeue (or with ``use_slurm=False``) the records alone count. ``strict`` (``submit``): raise
    ``SlurmError`` instead when runs were submitted and squeue cannot say whether they are still queued.

    >>> [(s.run_id, s.state) for s in run_states("outputs/demo")]     # doctest: +SKIP
    [('run_000', <State.COMPLETED: 'completed'>), ('run_001', <SlurmState.RUNNING: 'RUNNING'>)]
    """
    return status_of(exp_dir, mapping, use_slurm=use_slurm, live=live, strict=strict)[0]


def status_of(exp_dir: str | Path, mapping: RunMapping | None = None, *, use_slurm: bool = True,
              live: dict[tuple[str, int], TaskState] | None = None, strict: bool = False) -> tuple[list[RunState], str]:
    """``run_states``, and a note saying why SLURM's view is missing when squeue could not be asked, and how
    many runs wait to be submitted under slurm.max_submit (``feed.status_note``) ("" else).

    Evaluated runs carry their evaluation's state (``RunState.evaluation``); one squeue
    call asks for the training and the evaluation tasks together.
    """
    mapping = mapping or load_mapping(exp_dir)
    jobs = read_jobs(exp_dir)
    records = read_all(exp_dir, mapping)
    subs = submissions(exp_dir, mapping, records, jobs=jobs)
    eval_records = read_all_evaluations(exp_dir, mapping)
    eval_subs = submissions(exp_dir, mapping, eval_records, kind=EVAL_JOB, jobs=jobs) if eval_records else {}
    note = settle_note = ""
    if live is None and use_slurm and (subs or eval_subs):
        live = query_tasks({s.job_id for s in [*subs.values(), *eval_subs.values()]})
        if live is None:
            why = "squeue is not on PATH" if shutil.which("squeue") is None else "squeue failed"
            if strict:  # a submitted run whose task may still be queued would be submitted a second time
                raise SlurmError(f"{why}, so whether the runs submitted earlier (slurm_jobs.yaml) are still queued "
                                 "or running is unknown, and nothing was submitted; try again when squeue answers")
            note = f"({why}: states of submitted runs are from their status records only)"
        else:  # tasks that ended without recording it (squeue forgot them: sacct) get their end recorded
            from .sacct import settle

            settled = settle(exp_dir, mapping, live, records, subs, eval_records, eval_subs)
            records, eval_records, settle_note = settled.records, settled.eval_records, settled.note
    live = live or {}
    states = []
    for run in sorted(mapping.runs, key=lambda r: r.index):
        sub = subs.get(run.index)
        state = merge(run, records[run.run_id], sub, live.get(sub.key) if sub else None)
        if run.evaluations:
            esub = eval_subs.get(run.index)
            evaluation = merge_eval(run, eval_records[run.run_id], esub, live.get(esub.key) if esub else None,
                                    state.state)
            state = dataclasses.replace(state, evaluation=evaluation)
        states.append(state)
    from .feed import status_note  # here: feed imports this module

    queue = status_note(exp_dir, states, slurm_known=use_slurm and not note)  # runs waiting under slurm.max_submit
    return states, "\n".join(filter(None, [note, settle_note, queue]))


# ----------------------------------------------------------------------------- the status table


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s}s" if s < 60 else (f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m")


def format_status(states: list[RunState], variables: Iterable[str] | None = None, slurm_note: str = "",
                  progress: dict[str, Any] | None = None) -> str:
    """The ``status`` table: one row per run, then counts per state.

    A NAME column follows RUN when any run has a name: people know runs by the names they gave
    them, and the id stays because ``--runs`` and the files use it. An EVAL column, last
    (its values may hold blanks), comes when any run is evaluated (``-`` for runs that are not).
    An ATTEMPT column follows STATE when any run is past its first attempt (out-of-memory retries).
    STEP, LOSS and ETA follow WALL when ``progress`` (run id -> ``progress.Progress``) is given and
    any run is running.
    """
    from .progress import fmt_eta, fmt_loss, running

    progressing = progress is not None and any(running(s.state) for s in states)
    progress = progress or {}
    keys = list(variables or dict.fromkeys(k for s in states for k in s.parameters))
    named = any(s.name for s in states)
    retried = any(s.attempt > 1 for s in states)
    evaluated = [s.evaluation for s in states if s.evaluation is not None]
    rows = [["RUN", *(["NAME"] if named else []), "PARAMETERS", "STATE", *(["ATTEMPT"] if retried else []), "EXIT",
             "WALL", *(["STEP", "LOSS", "ETA"] if progressing else []), "JOB",
             *(["EVAL"] if evaluated else [])]]
    for s in states:
        params = format_parameters({k: s.parameters[k] for k in keys if k in s.parameters}, short=True, sep=" ")
        rows.append([s.run_id, *([s.name or "-"] if named else []), params or "-", s.label,
                     *([str(s.attempt)] if retried else []),
                     "-" if s.exit_code is None else str(s.exit_code), _fmt_seconds(s.seconds),
                     *(_progress_cells(progress.get(s.run_id), fmt_loss, fmt_eta) if progressing else []),
                     s.job or "-",
                     *([s.evaluation.label if s.evaluation else "-"] if evaluated else [])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts = Counter(str(s.state) for s in states)
    lines.append("")
    lines.append(f"{len(states)} run(s): " + ", ".join(f"{n} {st}" for st, n in counts.items()))
    if evaluated:
        lines.append(eval_footer(evaluated))
    if retried:
        lines.append("ATTEMPT: runs that ran out of memory are tried again with half the batch size "
                     "(run_mapping.yaml lists what each attempt changed).")
    if any(isinstance(s.state, SlurmState) for s in states) or any(isinstance(e.state, SlurmState)
                                                                   and not e.skipped for e in evaluated):
        lines.append("UPPER CASE states are SLURM's (live from SLURM, or recorded from it when a task could not "
                     "record its end); lower case ones from the runs' status records.")
    lines.extend(_notes(states))
    if slurm_note:
        lines.append(slurm_note)
    return "\n".join(lines)


def _progress_cells(p: Any, fmt_loss: Any, fmt_eta: Any) -> list[str]:
    return [p.label, fmt_loss(p.loss), fmt_eta(p.eta)] if p is not None else ["-", "-", "-"]


def _notes(states: list[RunState], most: int = 10) -> list[str]:
    """``run_003: <its record's note>`` for runs that did not complete, at most ``most`` of them."""
    noted = [s for s in states if s.note and s.state != State.COMPLETED]
    lines = [f"{s.run_id}: {s.note}" for s in noted[:most]]
    return lines + ([f"... and {len(noted) - most} more note(s) in status/*.json"] if len(noted) > most else [])


def eval_footer(evaluations: list[EvalState]) -> str:
    """The footer's evaluation counts, and what its less obvious words mean.

    >>> print(eval_footer([EvalState("run_000", 0, State.COMPLETED, None, 2, 2),
    ...                    EvalState("run_001", 1, SlurmState.CANCELLED, None, 0, 2, "training failed")]))
    2 evaluation(s): 1 completed, 1 skipped
    skipped: never ran because the run's training did not complete; `submit --failed` trains and evaluates it again.
    """
    counts = Counter(e.category for e in evaluations)
    lines = [f"{len(evaluations)} evaluation(s): " + ", ".join(f"{n} {c}" for c, n in counts.items())]
    if counts["partial"]:
        lines.append("N/M: N of the run's M evaluations completed, the others failed; "
                     "`submit --failed` evaluates it again.")
    if counts["skipped"]:
        lines.append("skipped: never ran because the run's training did not complete; "
                     "`submit --failed` trains and evaluates it again.")
    return "\n".join(lines)
