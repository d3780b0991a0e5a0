"""``cancel``: stop the queued and running SLURM tasks of selected runs and record them as cancelled.

Order matters: first the runs waiting in the submission queue of ``slurm.max_submit`` are withdrawn
(``feed.withdraw``), so that no ending task submits what is being cancelled; then squeue is asked
which tasks of the selected runs (training and evaluation) are queued or running, and those are
cancelled with a few ``scancel JOB_TASK ...`` calls. A pending task never starts, so ``cancel``
writes its record (state cancelled, slurm_state CANCELLED); a running task records its own
cancellation when SLURM's SIGTERM reaches it (``runner.run_one``), and ``cancel`` writes it only if
it has not within ``wait`` seconds. Completed runs and runs nobody runs are untouched; a run
running locally (``run``) is not a SLURM task and is only reported.

    >>> report = cancel("outputs/demo", runs="0-3")       # doctest: +SKIP
    >>> print(report.text())                              # doctest: +SKIP
    cancelled 2 task(s): run_000 (RUNNING, 41_0), run_001 (PENDING, 41_1)
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigWriterError, SlurmError
from ..expdir import EVAL_JOB, SlurmState, State, StatusRecord, load_mapping, now_iso, read_feed, read_status, write_status
from .selection import select_runs
from .slurm_state import RunState, status_of

_CHUNK = 200  # task names per scancel call


@dataclass(frozen=True)
class Target:
    """One SLURM task to cancel."""

    run_id: str
    evaluation: bool
    job: str
    """``JOB_TASK``."""
    state: str
    """What it was when cancelled: ``PENDING``, ``RUNNING``..."""
    started: bool
    """Its task wrote a record already (it runs): it records its own cancellation."""

    @property
    def what(self) -> str:
        return f"the evaluation of {self.run_id}" if self.evaluation else self.run_id


@dataclass
class Report:
    """What ``cancel`` did, for the user."""

    cancelled: list[Target] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    """Targets (``Target.what``) whose cancellation ``cancel`` recorded itself."""
    withdrawn: list[str] = field(default_factory=list)
    """Runs taken out of the submission queue (``slurm.max_submit``)."""
    local: list[str] = field(default_factory=list)
    """Runs recorded running with no SLURM task (a local ``run``): not cancelled."""
    untouched: int = 0
    """Selected runs with nothing queued or running (completed, failed, never submitted)."""
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = []
        if self.cancelled:
            lines.append(f"cancelled {len(self.cancelled)} task(s): "
                         + ", ".join(f"{t.what} ({t.state}, {t.job})" for t in self.cancelled))
        if self.withdrawn:
            lines.append(f"withdrew {len(self.withdrawn)} run(s) waiting to be submitted (slurm.max_submit): "
                         + _ids(self.withdrawn))
        if self.recorded:
            lines.append(f"recorded as cancelled: {_ids(self.recorded)}"
                         + ("" if len(self.recorded) == len(self.cancelled) + len(self.withdrawn)
                            else "; the others recorded it themselves"))
        if self.local:
            lines.append(f"not SLURM tasks, so not cancelled: {_ids(self.local)} (recorded running by a local "
                         "`run`; stop it where it runs, with Ctrl-C)")
        if not self.cancelled and not self.withdrawn:
            lines.append("nothing to cancel: no selected run or evaluation is queued or running")
        if self.untouched:
            lines.append(f"left alone: {self.untouched} run(s) with nothing queued or running")
        lines.extend(self.errors)
        return "\n".join(lines)


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")



def targets(states: list[RunState], records: Callable[[str, bool], StatusRecord]) -> tuple[list[Target], list[str]]:
    """The SLURM tasks to cancel among ``states`` (queued or running, training and evaluation), and the runs
    recorded running locally. ``records(run_id, evaluation)`` reads a record (to tell started tasks)."""
    out, local = [], []
    for s in states:
        if isinstance(s.state, SlurmState) and s.state.active and s.job:
            out.append(Target(s.run_id, False, s.job, str(s.state), _started(records(s.run_id, False), s.job)))
        elif s.state == State.RUNNING and not s.job:
            local.append(s.run_id)
        ev = s.evaluation
        if ev is not None and ev.active and isinstance(ev.state, SlurmState) and ev.job:
            out.append(Target(s.run_id, True, ev.job, str(ev.state), _started(records(s.run_id, True), ev.job)))
    return out, local


def _started(rec: StatusRecord, job: str) -> bool:
    own = f"{rec.slurm_task[0]}_{rec.slurm_task[1]}" if rec.slurm_task else None
    return own == job and rec.state == State.RUNNING


def cancel(exp_dir: str | Path, runs: str | None = None, *, wait: float = 15.0,
           echo: Callable[[str], None] = lambda line: None) -> Report:
    """Cancel the queued and running tasks of the selected runs (``runs``: a --runs SPEC, None = all) and
    record them as cancelled; withdraw those still waiting to be submitted. ``wait``: seconds a running
    task gets to record its own cancellation. Raises ``SlurmError`` when squeue cannot be asked
    (what runs would be unknown) or scancel is missing.
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    selected = select_runs(mapping, runs)
    report = Report()
    report.withdrawn = _withdraw(exp, mapping, [r.index for r in selected])
    wanted = {r.run_id for r in selected}
    states, note = status_of(exp, mapping)
    if note.startswith(("(squeue is not on PATH", "(squeue failed")):
        raise SlurmError(f"{note.strip('()')}; so nothing was cancelled (withdrawn from the submission queue: "
                         f"{_ids(report.withdrawn) if report.withdrawn else 'none'})")
    chosen = [s for s in states if s.run_id in wanted]
    found, report.local = targets(chosen, lambda rid, ev: read_status(exp, rid, evaluation=ev))
    withdrawn = set(report.withdrawn)  # a set: thousands of runs against thousands withdrawn
    report.untouched = sum(1 for s in chosen if not _busy(s) and s.run_id not in withdrawn)
    if found:
        scancel = shutil.which("scancel")
        if not scancel:
            raise SlurmError("scancel is not on PATH: cancel from a SLURM login node")
        report.errors += _scancel(scancel, [t.job for t in found])
        report.cancelled = found
        echo(f"scancel sent to {len(found)} task(s); recording them")
        report.recorded += _record_pending(exp, [t for t in found if not t.started])
        report.recorded += _record_running(exp, [t for t in found if t.started], wait)
    return report


def _busy(s: RunState) -> bool:
    active = s.state == State.RUNNING or (isinstance(s.state, SlurmState) and s.state.active)
    return active or (s.evaluation is not None and s.evaluation.active)


def _withdraw(exp: Path, mapping, indices: list[int]) -> list[str]:
    """Take the selected runs out of the submission queue, recording each withdrawn training (and each
    withdrawn evaluation of a trained run) as cancelled, so that ``submit --failed`` submits them again."""
    from . import feed

    queue = read_feed(exp)
    if queue is None or not queue.items:
        return []
    kinds: dict[int, set[str]] = {}
    for item in queue.items:
        kinds.setdefault(item.index, set()).add(item.kind)
    out = feed.withdraw(exp, indices)
    ids = []
    for index in out:
        rid = mapping.run_id_of(index)
        ids.append(rid)
        for kind in sorted(kinds.get(index, ())):
            evaluation = kind == EVAL_JOB
            rec = read_status(exp, rid, evaluation=evaluation)
            if rec.state == State.PENDING:  # a failed or cancelled record already says it must be submitted again
                _write(exp, StatusRecord(rid, State.CANCELLED, ended=now_iso(), attempt=rec.attempt,
                                         note="withdrawn by `cancel` before it was submitted"), evaluation)
    return ids


def _scancel(scancel: str, jobs: list[str]) -> list[str]:
    """scancel the tasks, a few calls in all; the lines of what it refused (tasks that ended meanwhile)."""
    errors = []
    for i in range(0, len(jobs), _CHUNK):
        try:
            proc = subprocess.run([scancel, *jobs[i:i + _CHUNK]], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmError(f"scancel failed ({e}); nothing more was cancelled") from None
        errors += [f"scancel: {line.strip()}" for line in proc.stderr.splitlines() if line.strip()]
    return errors


def _record_pending(exp: Path, pending: list[Target]) -> list[str]:
    """Record tasks that never started as cancelled (they never will), unless one started meanwhile."""
    done = []
    for t in pending:
        job, task = t.job.rsplit("_", 1)
        rec = read_status(exp, t.run_id, evaluation=t.evaluation)
        own = rec.slurm_task == (job, int(task))
        if own and rec.state == State.RUNNING:
            continue  # it started after all, and records its own end
        # a requeued task's own record (pending again) keeps what it says of earlier starts
        base = rec if own else StatusRecord(t.run_id, attempt=rec.attempt,
                                            evaluations=rec.evaluations if t.evaluation else None)
        new = dataclasses.replace(base, state=State.CANCELLED, ended=now_iso(), slurm_array_job_id=job,
                                  slurm_array_task_id=task, slurm_state=str(SlurmState.CANCELLED),
                                  note=f"task {t.job} cancelled by `cancel` while {t.state}")
        if _write(exp, new, t.evaluation):
            done.append(t.what)
    return done


def _record_running(exp: Path, running: list[Target], wait: float) -> list[str]:
    """Give running tasks ``wait`` seconds to record their own cancellation, then record it for the rest."""
    deadline = time.monotonic() + wait
    left = list(running)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [t for t in left if read_status(exp, t.run_id, evaluation=t.evaluation).state == State.RUNNING]
    done = []
    for t in left:
        rec = read_status(exp, t.run_id, evaluation=t.evaluation)
        if rec.state != State.RUNNING:
            continue
        new = dataclasses.replace(rec, state=State.CANCELLED, ended=now_iso(), slurm_state=str(SlurmState.CANCELLED),
                                  note=f"task {t.job} cancelled by `cancel`; it did not record its end within "
                                       f"{wait:g} s")
        if _write(exp, new, t.evaluation):
            done.append(t.what)
    return done


def _write(exp: Path, record: StatusRecord, evaluation: bool) -> bool:
    try:
        write_status(exp, record, evaluation=evaluation)
        return True
    except OSError as e:
        raise ConfigWriterError(f"could not record {record.run_id} as cancelled in {exp / 'status'}: "
                                f"{e.strerror or e}; its SLURM task was cancelled all the same") from None
