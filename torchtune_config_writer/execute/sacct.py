"""Tasks squeue has forgotten: how they ended, from ``sacct``, recorded in their status records.

squeue lists a finished task only until MinJobAge passes (300 s by default). A task that
could not write its own end (SIGKILLed, killed for memory, its node failed) leaves its
record saying ``running``; once squeue forgets it, only ``sacct`` still knows how it ended.
``settle`` (called once by ``slurm_state.status_of``, so by ``status`` and ``submit`` alike)
finds such tasks, asks sacct about them alone, and writes the real end into their records
(``state`` failed or cancelled, ``slurm_state`` FAILED, OUT_OF_MEMORY, TIMEOUT, NODE_FAIL...),
so that later calls need not ask again and ``status``, ``submit --failed`` and ``collect`` agree.

sacct answers from the accounting database (``sacct -X -j 41_3``: array tasks by name) or,
without accounting, from the job-completion file (``sacct -c``, JobCompType=jobcomp/filetxt).
That file names jobs by their raw id only (SLURM 22.05's reader does not know the array
fields), so it is asked about tasks whose record gave their raw id (``SLURM_JOB_ID``):
the ones that started. Parsing is done by pure functions (``parse_sacct``, ``exit_code``,
``sacct_time``, ``jobcomp_type``) and ``plan``/``settled_record`` decide what to write;
``query_ended`` and ``settle`` only run the tools and read and write files.

    >>> parse_sacct("41_3|OUT_OF_MEMORY|0:125|00:01:05|2026-01-01T10:00:00|2026-01-01T10:01:05\\n")["41_3"].state
    <SlurmState.OUT_OF_MEMORY: 'OUT_OF_MEMORY'>
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from ..errors import ConfigWriterError
from ..expdir import (
    RunEntry, RunMapping, SlurmState, State, StatusRecord, read_status, slurm_log_file, write_status,
)
from .slurm_state import DEPENDENCY_NEVER_SATISFIED, Submission, TaskState, cluster_config

#: A task squeue shows as ended while its record still says running is recorded only this long
#: after it ended: the task writes its final record just before it exits, and a shared file
#: system may show the login node the older file for a while (status shows SLURM's state meanwhile).
GRACE_S = 60.0

#: A sacct line that ended this long before the task was submitted is another job with the same id
#: (job ids restart when a controller loses its state).
_SKEW_S = 120.0

_FIELDS = "JobID,State,ExitCode,Elapsed,Start,End"
_FINAL = (State.COMPLETED, State.FAILED, State.CANCELLED)
_CHUNK = 500  # ids per sacct call: a command line stays short on any system


@dataclass(frozen=True)
class TaskEnd:
    """How one job ended, as one sacct line says."""

    job: str
    """As sacct names it: ``41_3`` (accounting), or the raw job id ``57`` (job-completion file)."""
    state: SlurmState
    exit_code: int | None
    seconds: float | None
    started: str | None
    """ISO time with zone (UTC); None when SLURM has none (cancelled before it started)."""
    ended: str | None


# ----------------------------------------------------------------------------- parsing (pure)


def parse_sacct(text: str) -> dict[str, TaskEnd]:
    """``sacct -n -P -o JobID,State,ExitCode,Elapsed,Start,End`` lines -> job name -> its end.

    Steps (``41_3.batch``), unparsable lines and states this version does not know are
    skipped; of several lines for one job (a requeued job in the job-completion file) the
    last, the latest, wins. ``CANCELLED by 1000`` reads as CANCELLED.

    >>> ends = parse_sacct("57|FAILED|0:9|00:00:06|2026-11-24T05:27:58|2026-11-24T05:28:04\\n57.batch|FAILED|0:9|||\\n")
    >>> ends["57"].state, ends["57"].exit_code, ends["57"].seconds, list(ends)
    (<SlurmState.FAILED: 'FAILED'>, 137, 6, ['57'])
    """
    from .slurm_state import duration

    out: dict[str, TaskEnd] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 6 or not parts[0] or "." in parts[0]:
            continue
        try:
            state = SlurmState((parts[1].split() or [""])[0])
        except ValueError:
            continue
        out[parts[0]] = TaskEnd(parts[0], state, exit_code(parts[2]), duration(parts[3]) if parts[3] else None,
                                sacct_time(parts[4]), sacct_time(parts[5]))
    return out


def exit_code(text: str) -> int | None:
    """sacct's ``EXIT:SIGNAL`` as a shell-style code (a signal N is 128 + N).

    >>> exit_code("1:0"), exit_code("0:9"), exit_code("0:0"), exit_code("")
    (1, 137, 0, None)
    """
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig else code


def sacct_time(text: str) -> str | None:
    """sacct's local ``YYYY-MM-DDTHH:MM:SS`` as an ISO time in UTC (how status records keep times);
    None for ``Unknown``, ``None`` and the like.

    >>> sacct_time("Unknown"), sacct_time("2026-01-01T10:00:00") is not None
    (None, True)
    """
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.astimezone()  # sacct prints the local time of the machine it runs on
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def jobcomp_type(config: str) -> str | None:
    """JobCompType from ``scontrol show config`` (``jobcomp/filetxt``...), or None.

    >>> jobcomp_type("JobCompLoc    = /var/log/slurm/jobcomp.txt\\nJobCompType   = jobcomp/filetxt\\n")
    'jobcomp/filetxt'
    """
    m = re.search(r"^JobCompType\s*=\s*(\S+)", config, re.MULTILINE)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- asking sacct


@dataclass(frozen=True)
class Answer:
    """What sacct said about the tasks it was asked about."""

    source: str
    """``sacct`` (accounting) or ``sacct -c`` (the job-completion file)."""
    ends: dict[tuple[str, int], TaskEnd]
    asked: frozenset[tuple[str, int]]
    """The tasks it was asked about (the job-completion file can only be asked about started ones)."""


def query_ended(tasks: dict[tuple[str, int], str | None]) -> Answer | str:
    """Ask sacct how these array tasks ended; ``tasks``: (array job id, task id) -> raw job id if known.

    Returns an ``Answer``, or one line saying why sacct could not be asked. With
    accounting, every task is asked about by name; without it, the job-completion
    file is read (``sacct -c``), by raw id, for the tasks whose raw id is known.
    """
    sacct = shutil.which("sacct")
    if not sacct:
        return "sacct is not on PATH"
    names = sorted(f"{j}_{t}" for j, t in tasks)
    text, error = _run([sacct, "-n", "-P", "-X", "-o", _FIELDS], names)
    if error is None:
        ends = parse_sacct(text)
        return Answer("sacct", {key: ends[f"{key[0]}_{key[1]}"] for key in tasks if f"{key[0]}_{key[1]}" in ends},
                      frozenset(tasks))
    kind = _jobcomp_kind()
    if kind != "jobcomp/filetxt":
        return (f"sacct cannot be asked ({error}) and the cluster keeps no job-completion file SLURM can read "
                f"(JobCompType {kind or 'unknown'})")
    raw = {key: str(r) for key, r in tasks.items() if r and str(r).isdigit()}
    text, error_c = _run([sacct, "-c", "-n", "-P", "-o", _FIELDS], sorted(set(raw.values())))
    if error_c is not None:
        return f"sacct cannot be asked ({error}), nor read the job-completion file ({error_c})"
    ends = parse_sacct(text)
    return Answer("sacct -c", {key: ends[r] for key, r in raw.items() if r in ends}, frozenset(raw))


def _run(cmd: list[str], ids: list[str]) -> tuple[str, str | None]:
    """Run ``cmd -j <ids>`` in chunks; (stdout of all, None) or ("", the first error's line)."""
    out = []
    for i in range(0, len(ids), _CHUNK):
        try:
            proc = subprocess.run([*cmd, "-j", ",".join(ids[i:i + _CHUNK])], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "", str(e)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            return "", (lines[-1].strip() if lines else f"exit code {proc.returncode}")
        out.append(proc.stdout)
    return "".join(out), None


def _jobcomp_kind() -> str | None:
    config = cluster_config()
    return None if config is None else jobcomp_type(config)


# ----------------------------------------------------------------------------- deciding (pure)


@dataclass(frozen=True)
class Candidate:
    """A run's (or its evaluation's) latest task that ended, or may have, without a final record."""

    run: RunEntry
    record: StatusRecord
    """Its record as read (the write happens only if the file still holds exactly this)."""
    sub: Submission
    evaluation: bool
    task: TaskState | None
    """What squeue says of the task; None: squeue no longer knows it (ask sacct)."""

    @property
    def from_this_task(self) -> bool:
        return self.record.slurm_task == self.sub.key


def plan(run: RunEntry, rec: StatusRecord, sub: Submission | None, task: TaskState | None, *,
         evaluation: bool = False, trained: bool = True, now: datetime | None = None) -> Candidate | None:
    """The candidate this run's task is, or None when there is nothing to record.

    Something is recorded only for the run's latest SLURM task, when SLURM says (or
    squeue's silence shows) it ended without success and without a final record of its
    own: its record says running, or it never wrote one (cancelled while pending, a failed
    setup). Never over a final record the task wrote itself (but a ``cancelled`` one learns
    SLURM's reason: TIMEOUT, PREEMPTED...), never for an active task or a COMPLETED one, never
    for a later local run. ``trained``: an evaluation's training completed (an evaluation that
    never started because its training failed is *skipped*, and left so). ``task`` is squeue's
    view (None: forgotten). A running record whose task squeue shows ended waits ``GRACE_S``.

    >>> run = RunEntry("run_001", 1, "c", "0", "/o", {}, "passed", None)
    >>> rec = StatusRecord("run_001", State.RUNNING, started="2026-01-01T00:00:00+00:00",
    ...                    slurm_array_job_id="41", slurm_array_task_id="1")
    >>> plan(run, rec, Submission("41", 1, "2026-01-01T00:00:00+00:00"), None).task is None   # forgotten: ask sacct
    True
    """
    if sub is None:
        return None
    from_this = rec.slurm_task == sub.key
    if from_this and rec.state in _FINAL:
        reason = task is not None and task.state.failed and task.state != SlurmState.CANCELLED
        if rec.state == State.CANCELLED and reason and not rec.slurm_state:
            return Candidate(run, rec, sub, evaluation, task)  # learn why SLURM stopped it
        return None
    if not from_this and rec.started and str(rec.started) > sub.since:
        return None  # a local run after the submission: its record speaks for the run
    if not from_this and evaluation and not trained:
        return None  # skipped: it never runs until its training completes
    if task is None:
        return Candidate(run, rec, sub, evaluation, None)
    if task.state.active or not task.state.failed:
        return None
    if not from_this and task.reason == DEPENDENCY_NEVER_SATISFIED:
        return None
    if from_this:
        end = _end_of(rec.started, task.seconds)
        now = now or datetime.now(timezone.utc)
        if end is None or (now - end).total_seconds() < GRACE_S:
            return None
    return Candidate(run, rec, sub, evaluation, task)


def _end_of(started: str | None, seconds: float | None) -> datetime | None:
    try:
        return datetime.fromisoformat(str(started)) + timedelta(seconds=seconds or 0)
    except (TypeError, ValueError):
        return None


def raw_job_id(c: Candidate) -> str | None:
    """The task's own job id (SLURM_JOB_ID), known when the task wrote a record."""
    return str(c.record.slurm_job_id) if c.from_this_task and c.record.slurm_job_id else None


def settled_record(c: Candidate, end: TaskEnd | None, *, source: str, log: str | None = None) -> StatusRecord | None:
    """The record to write for a candidate, from sacct's ``end`` (or squeue's view in ``c.task``), or None.

    ``source`` says where ``end`` came from; with ``end`` None (and no squeue view), who was
    asked and did not know the task: then only a record that says running from this very task
    is ended, as failed, saying so. ``log``:
    the task's log, relative to the experiment directory, when the record names none.

    >>> run = RunEntry("run_001", 1, "c", "0", "/o", {}, "passed", None)
    >>> rec = StatusRecord("run_001", State.RUNNING, started="2026-01-01T00:00:00+00:00",
    ...                    slurm_array_job_id="41", slurm_array_task_id="1", slurm_job_id="57")
    >>> c = plan(run, rec, Submission("41", 1, "2026-01-01T00:00:00+00:00"), None)
    >>> end = TaskEnd("57", SlurmState.OUT_OF_MEMORY, 137, 65, "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:05+00:00")
    >>> new = settled_record(c, end, source="sacct -c")
    >>> new.state, new.slurm_state, new.exit_code, new.ended
    (<State.FAILED: 'failed'>, 'OUT_OF_MEMORY', 137, '2026-01-01T00:01:05+00:00')
    """
    rec, name = c.record, c.sub.name
    if c.from_this_task and rec.state in _FINAL:  # a cancelled record: add SLURM's reason, change nothing else
        return dataclasses.replace(rec, slurm_state=str(c.task.state)) if c.task is not None else None
    base = rec if c.from_this_task else StatusRecord(
        rec.run_id, slurm_array_job_id=c.sub.job_id, slurm_array_task_id=str(c.sub.task_id),
        attempt=c.run.attempt if c.run.attempts else None)
    if not base.log and log:
        base = dataclasses.replace(base, log=log)
    if end is None and c.task is not None:  # squeue still shows it ended
        end = TaskEnd(name, c.task.state, c.task.exit_code, c.task.seconds, None,
                      _iso(_end_of(rec.started, c.task.seconds)) if c.from_this_task else None)
        source = "squeue"
    if end is not None:
        if end.state.active or not end.state.failed or not _after(end, c.sub.since):
            return None  # still going, completed (then it wrote its record), or another job with this id
        state = State.CANCELLED if end.state == SlurmState.CANCELLED else State.FAILED
        return dataclasses.replace(
            base, state=state, slurm_state=str(end.state), exit_code=end.exit_code,
            started=base.started or end.started, ended=end.ended or base.ended,
            note=f"task {name} ended {end.state} without recording its end (from {source})")
    if not c.from_this_task or rec.state != State.RUNNING:
        return None  # never started, as far as anyone knows: leave it to the next submit
    return dataclasses.replace(rec, state=State.FAILED,
                               note=f"SLURM no longer knows task {name} ({source}) and it recorded no end")


def _after(end: TaskEnd, since: str) -> bool:
    try:
        t_end = datetime.fromisoformat(str(end.ended)) if end.ended else None
        t_sub = datetime.fromisoformat(since) if since else None
    except ValueError:
        return True
    return t_end is None or t_sub is None or (t_sub - t_end).total_seconds() < _SKEW_S


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds") if t else None


# ----------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Settled:
    """What ``settle`` recorded: the updated records, and a note for ``status`` ("" when none)."""

    records: dict[str, StatusRecord]
    eval_records: dict[str, StatusRecord]
    written: tuple[str, ...] = ()
    """``run_001`` (training) and ``run_001 (evaluation)`` for each record written."""
    note: str = ""


def settle(exp_dir: str | Path, mapping: RunMapping, live: dict[tuple[str, int], TaskState],
           records: dict[str, StatusRecord], subs: dict[int, Submission],
           eval_records: dict[str, StatusRecord], eval_subs: dict[int, Submission]) -> Settled:
    """Record how the runs' latest tasks ended where squeue shows (or its silence shows) that they ended
    without a final record; sacct is asked once, about the forgotten ones only.

    ``live`` must be squeue's complete answer for the submitted job ids: a task of theirs
    that it does not list has ended (pending and running tasks are always listed).
    Evaluations are settled after training, so that an evaluation whose training failed stays
    *skipped*. Records that cannot be written (a read-only directory) are left as they were.
    """
    exp = Path(exp_dir)
    records, eval_records = dict(records), dict(eval_records)
    written: list[str] = []
    notes: list[str] = []
    for evaluation in (False, True):
        recs, subs_of = (eval_records, eval_subs) if evaluation else (records, subs)
        candidates = []
        for run in sorted(mapping.runs, key=lambda r: r.index):
            if run.run_id not in recs:
                continue
            sub = subs_of.get(run.index)
            trained = records[run.run_id].state == State.COMPLETED
            c = plan(run, recs[run.run_id], sub, live.get(sub.key) if sub else None, evaluation=evaluation,
                     trained=trained)
            if c is not None:
                candidates.append(c)
        if not candidates:
            continue
        forgotten = {c.sub.key: raw_job_id(c) for c in candidates if c.task is None}
        answer: Answer | str | None = query_ended(forgotten) if forgotten else None
        if isinstance(answer, str) and answer not in notes:
            notes.append(answer)
        for c in candidates:
            if c.task is None and not isinstance(answer, Answer):
                # squeue's silence says it ended; how, nobody can tell
                new = settled_record(c, None, source=f"squeue does not list it; {answer}")
            elif c.task is None:
                if c.sub.key not in answer.asked:
                    continue  # the job-completion file cannot be asked about a task that never started
                end = answer.ends.get(c.sub.key)
                new = settled_record(c, end, source=answer.source if end else f"neither squeue nor {answer.source} "
                                     "lists it", log=_log(exp, c))
            else:
                new = settled_record(c, None, source="squeue", log=_log(exp, c))
            if new is None or new == c.record:
                continue
            if new.ended is None:
                new = dataclasses.replace(new, ended=_log_mtime(exp, new))
            now_on_disk = _write(exp, c, new)
            if now_on_disk is None:
                notes.append(f"could not record how task {c.sub.name} ended in {exp / 'status'} (not writable?)")
                continue
            recs[c.run.run_id] = now_on_disk
            if now_on_disk is new:
                written.append(c.run.run_id + (" (evaluation)" if evaluation else ""))
    note = "; ".join(dict.fromkeys(notes))
    return Settled(records, eval_records, tuple(written), f"({note})" if note else "")


def _log(exp: Path, c: Candidate) -> str | None:
    """The task's SLURM log, when it wrote one and its record names none."""
    rel = slurm_log_file(*c.sub.key)
    return rel if (exp / rel).is_file() else None


def _write(exp: Path, c: Candidate, new: StatusRecord) -> StatusRecord | None:
    """Write ``new`` unless the record changed since it was read (its task, or another ``status``, wrote
    it meanwhile: that one stands). Returns the record now on disk; None when it could not be written."""
    try:
        current = read_status(exp, c.run.run_id, evaluation=c.evaluation)
        if current != c.record:
            return current
        write_status(exp, new, evaluation=c.evaluation)
        return new
    except (OSError, ConfigWriterError):  # read-only directory; an unreadable record is reported by status
        return None


def _log_mtime(exp: Path, rec: StatusRecord) -> str | None:
    """When a task that recorded no end last wrote its log: the best guess of when it died."""
    try:
        t = (exp / rec.log).stat().st_mtime if rec.log else None
    except OSError:
        return None
    return _iso(datetime.fromtimestamp(t, timezone.utc)) if t else None
