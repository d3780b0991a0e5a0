"""Runs that ran out of memory: how that is known, and how the run is tried again.

Detection is pure functions of text. An attempt ran out of memory when

- the tail of its log (``expdir.read_tail``: logs can be large, the error is at the end) has torch's
  ``OutOfMemoryError`` or its message ``CUDA out of memory`` (``HIP`` on ROCm), or slurmstepd's
  ``oom_kill event`` line (host memory; ``oom_in_log``);
- SLURM says ``OUT_OF_MEMORY`` (host memory over ``--mem``: the task was killed, so only SLURM knows;
  ``StatusRecord.slurm_state`` or the state ``status`` merged from squeue/sacct);
- inside the SLURM task itself, the job's memory cgroup counted an OOM kill (``cgroup_oom_kills``):
  slurmstepd writes its line, and SLURM sets OUT_OF_MEMORY, only after the task has ended.

``oom_evidence`` combines them. The retry writes the run's next attempt (half the batch size, twice
the gradient accumulation, validated) with the compile side's hidden ``attempt`` command, run as a
subprocess because this side may not import that one, and starts the run again: inside a SLURM task
whose run just failed (``after_task``, when the experiment has ``oom_retry:``), for ``submit
--retry-oom`` (``prepare_retries``) and in a local ``run`` (``retry_locally``).

    >>> oom_evidence("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    'torch.OutOfMemoryError in its log'
    >>> oom_evidence("", slurm_state="OUT_OF_MEMORY")
    'SLURM state OUT_OF_MEMORY'
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

from ..errors import AttemptError, ConfigWriterError
from ..expdir import (
    LOG_DIR, RunEntry, RunMapping, SlurmState, State, StatusRecord, compress_ranges, load_mapping, read_status,
    read_tail, slurm_log_file,
)

#: Attempts in all for ``submit --retry-oom`` when the experiment has no ``oom_retry:``.
DEFAULT_MAX_ATTEMPTS = 3
#: How much of the end of a log is read: the error is at its end, and logs may be gigabytes.
TAIL_BYTES = 64 * 1024

_OOM_IN_LOG = re.compile(
    r"torch\.(?:cuda\.)?OutOfMemoryError"       # the exception's name in the traceback
    r"|\b(?:CUDA|HIP) out of memory"            # its message (HIP: ROCm)
    r"|oom[-_]kill event"                       # slurmstepd: "Detected 1 oom_kill event in StepId=7.batch"
)


# ----------------------------------------------------------------------------- detection (pure)


def oom_in_log(text: str) -> str | None:
    """The latest out-of-memory sign in a log's text (``torch.OutOfMemoryError``...), or None.

    >>> oom_in_log("Traceback ...\\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB")
    'torch.OutOfMemoryError'
    >>> oom_in_log("slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch.")
    'oom_kill event'
    >>> oom_in_log("ValueError: batch_size must be positive") is None
    True
    """
    for line in reversed(text.splitlines()):  # the last line that has one, and its first (the exception's name)
        m = _OOM_IN_LOG.search(line)
        if m:
            return m.group()
    return None


def oom_kills(text: str) -> int | None:
    """The ``oom_kill`` count of a cgroup's ``memory.events`` (v2) or ``memory.oom_control`` (v1) text.

    >>> oom_kills("low 0\\nhigh 0\\nmax 3\\noom 1\\noom_kill 1\\n"), oom_kills("oom_kill_disable 0\\nunder_oom 0\\n")
    (1, None)
    """
    m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def job_memory_files(proc_cgroup: str, job_id: str, root: str = "/sys/fs/cgroup") -> list[Path]:
    """The files counting OOM kills of the SLURM job's memory cgroups that hold this process (from its own
    cgroup up to the job's, ``job_<id>``), read from ``/proc/self/cgroup``; [] outside a job's cgroup.

    Only the job's own cgroups: a parent's count includes other jobs' kills.

    >>> [str(p) for p in job_memory_files("0::/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0\\n", "7")]
    ['/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0/memory.events', \
'/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_batch/user/memory.events', \
'/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_batch/memory.events', \
'/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/memory.events']
    >>> [str(p) for p in job_memory_files("9:memory:/slurm/uid_0/job_7/step_batch\\n0::/\\n", "7")]
    ['/sys/fs/cgroup/memory/slurm/uid_0/job_7/step_batch/memory.oom_control', \
'/sys/fs/cgroup/memory/slurm/uid_0/job_7/memory.oom_control']
    >>> job_memory_files("0::/user.slice/user-1000.slice/session-2.scope\\n", "7")
    []
    """
    files: list[Path] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, name = Path(root), "memory.events"  # cgroup v2: one hierarchy
        elif "memory" in controllers.split(","):
            base, name = Path(root) / controllers, "memory.oom_control"  # cgroup v1: the memory hierarchy
        else:
            continue
        parts_of_path = [p for p in path.split("/") if p]
        if f"job_{job_id}" not in parts_of_path:
            continue
        top = parts_of_path.index(f"job_{job_id}")
        for end in range(len(parts_of_path), top, -1):
            files.append(base.joinpath(*parts_of_path[:end]) / name)
    return files


def oom_evidence(log_tail: str = "", slurm_state: str | None = None, cgroup_kills: int | None = None) -> str | None:
    """Why an attempt that failed counts as out of memory (for messages), or None when nothing says so.

    >>> oom_evidence("RuntimeError: DataLoader worker exited", "FAILED", 0) is None
    True
    >>> oom_evidence("Killed", None, 2)
    'the job cgroup counted 2 OOM kill(s)'
    """
    if slurm_state is not None and str(slurm_state) == SlurmState.OUT_OF_MEMORY:
        return f"SLURM state {SlurmState.OUT_OF_MEMORY}"
    sign = oom_in_log(log_tail)
    if sign:
        return f"{sign} in its log"
    if cgroup_kills:
        return f"the job cgroup counted {cgroup_kills} OOM kill(s)"
    return None


# ----------------------------------------------------------------------------- reading what the machine says


def cgroup_oom_kills() -> int | None:
    """OOM kills counted by this SLURM job's memory cgroups (the largest count); None outside SLURM, without a
    job cgroup (``TaskPlugin`` without cgroups) or when the files cannot be read."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        files = job_memory_files(Path("/proc/self/cgroup").read_text(), job)
    except OSError:
        return None
    counts = []
    for f in files:
        try:
            n = oom_kills(f.read_text())
        except OSError:
            continue
        if n is not None:
            counts.append(n)
    return max(counts) if counts else None


# ----------------------------------------------------------------------------- the retry


def max_attempts(mapping: RunMapping, *, asked: bool = False) -> int | None:
    """Attempts in all a run may have: ``oom_retry.max_attempts``; without ``oom_retry:``, 3 when the user
    ``asked`` (``submit --retry-oom``), else None (no retry)."""
    if mapping.oom_retry is not None:
        return mapping.oom_retry.max_attempts
    return DEFAULT_MAX_ATTEMPTS if asked else None


def write_next_attempt(exp: Path, index: int, after: int, *, dry_run: bool = False) -> str:
    """Write and record the next attempt of run ``index`` (``after``: the attempt that failed) with the hidden
    ``attempt`` command; return its one-line description. Raises ``AttemptError`` with the command's own
    error line when it refuses (batch_size 1 already, a config that would fail validation)."""
    cmd = [sys.executable, "-m", "torchtune_config_writer", "attempt", str(exp), str(index), "--after", str(after)]
    try:
        proc = subprocess.run(cmd + (["--dry-run"] if dry_run else []), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AttemptError(f"could not write the next attempt of run {index}: {e}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln.removeprefix("Error: ") for ln in lines if ln.startswith("Error: ")]
        raise AttemptError(errors[-1] if errors else (lines[-1] if lines else f"`attempt` exited {proc.returncode}"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else f"attempt {after + 1} of run {index} written"


def after_task(exp_dir: str | Path, index: int, exit_code: int, *, echo: Callable[[str], None] = print) -> bool:
    """In a SLURM task whose run just ended with ``exit_code``: when the run ran out of memory and the
    experiment has ``oom_retry:`` with attempts left, write its next attempt and submit the run again.

    Returns True when a retry was submitted. Never raises a ``ConfigWriterError``: what stopped the
    retry goes to ``echo`` (the task's log), and the task keeps its run's exit code.
    """
    if exit_code == 0:
        return False
    try:
        exp = Path(exp_dir).resolve()
        mapping = load_mapping(exp)
        run = mapping.by_index.get(index)
        if run is None:
            return False
        record = read_status(exp, run.run_id)
        if record.state != State.FAILED:
            return False  # cancelled (scancel, a time limit): not a memory problem
        evidence = oom_evidence(read_tail(exp / record.log if record.log else None, TAIL_BYTES), record.slurm_state,
                                cgroup_oom_kills())
        if evidence is None:
            return False
        failed = record.attempt or 1
        echo(f"# {run.run_id}: attempt {failed} ran out of memory ({evidence})")
        limit = max_attempts(mapping)
        if limit is None:
            echo(f"# not retried: the experiment has no oom_retry: section; `torchtune-config-writer submit {exp} "
                 f"--runs {index} --retry-oom` tries it again with half the batch size")
            return False
        if run.attempt > failed:
            echo(f"# not retried here: attempt {run.attempt} was written already")
            return False
        if failed >= limit:
            echo(f"# not retried: attempt {failed} was the last (oom_retry.max_attempts: {limit})")
            return False
        echo(f"# {write_next_attempt(exp, index, failed)}")
    except ConfigWriterError as e:
        echo(f"# not retried: {e}")
        return False
    from .submit import submit  # (submit imports this module)

    try:
        submit(exp, str(index), retry=True, echo=lambda line: echo(f"# {line}"))
    except ConfigWriterError as e:
        echo(f"# attempt {failed + 1} was written but not submitted: {e}; `torchtune-config-writer submit {exp} "
             f"--runs {index} --retry-oom` submits it")
        return False
    return True


def retry_locally(exp: Path, mapping: RunMapping, run: RunEntry, record: StatusRecord,
                  echo: Callable[[str], None]) -> RunEntry | None:
    """In a local ``run``, after a training ended: when it ran out of memory and the experiment has
    ``oom_retry:`` with attempts left, write its next attempt and return the run as it is now (to start
    again); else None. Lines for people go to ``echo``. (The next attempt logs to ``attempt_log_file``,
    so the failed attempt's log stays.)"""
    if record.state != State.FAILED:
        return None
    log = exp / record.log if record.log else None
    evidence = oom_evidence(read_tail(log, TAIL_BYTES), record.slurm_state)
    if evidence is None:
        return None
    failed, limit = record.attempt or 1, max_attempts(mapping)
    if limit is None:
        echo(f"  {run.run_id} ran out of memory ({evidence}); not retried: the experiment has no oom_retry: section")
        return None
    if failed >= limit:
        echo(f"  {run.run_id} ran out of memory ({evidence}) in attempt {failed}, the last "
             f"(oom_retry.max_attempts: {limit})")
        return None
    try:
        line = write_next_attempt(exp, run.index, failed)
    except ConfigWriterError as e:
        echo(f"  {run.run_id} ran out of memory ({evidence}); not retried: {e}")
        return None
    echo(f"  {run.run_id} ran out of memory ({evidence}); retrying: {line}")
    return load_mapping(exp).by_index[run.index]


def attempt_log_file(run_id: str, number: int) -> str:
    """The log of a local run's attempt 2, 3...: ``logs/run_000.attempt_2.log`` (attempt 1: ``logs/run_000.log``)."""
    return f"{LOG_DIR}/{run_id}.attempt_{number}.log"


def prepare_retries(exp: Path, mapping: RunMapping, states: Iterable, runs: str | None, *, failed: bool,
                    dry_run: bool, echo: Callable[[str], None]) -> tuple[str | None, RunMapping]:
    """``submit --retry-oom``: write the next attempt of each selected run whose latest attempt failed out
    of memory (at most ``oom_retry.max_attempts`` attempts, 3 without it), and return the --runs spec to
    submit with the mapping as it now is. The spec is those runs; with ``failed``, every selected run
    but the out-of-memory ones that cannot be retried. None: nothing to submit.

    ``states`` are ``slurm_state.RunState``s (their ``attempt`` is the attempt the state is of).
    A run whose next attempt was written but never started is submitted as it is.
    """
    from .selection import select_runs
    from .slurm_state import RESUBMIT_STATES

    limit = max_attempts(mapping, asked=True)
    by_index = {s.index: s for s in states}
    selected = select_runs(mapping, runs)
    retried: list[int] = []
    refused: dict[str, str] = {}
    for run in selected:
        state = by_index[run.index]
        if state.state not in RESUBMIT_STATES:
            continue
        record = read_status(exp, run.run_id)
        attempt = getattr(state, "attempt", None) or record.attempt or 1
        evidence = oom_evidence(read_tail(_log_of(exp, record, state), TAIL_BYTES),
                                str(state.state) if isinstance(state.state, SlurmState) else record.slurm_state)
        if evidence is None:
            continue
        if run.attempt > attempt:
            echo(f"{run.run_id}: attempt {attempt} ran out of memory; attempt {run.attempt} was written and never "
                 "started: submitting it")
            retried.append(run.index)
        elif attempt >= limit:
            refused[run.run_id] = f"attempt {attempt} ran out of memory and was the last (max attempts {limit})"
        else:
            try:
                line = write_next_attempt(exp, run.index, attempt, dry_run=dry_run)
            except AttemptError as e:
                refused[run.run_id] = str(e)
                continue
            echo(f"{run.run_id}: attempt {attempt} ran out of memory ({evidence}); {line}")
            retried.append(run.index)
    for rid, why in refused.items():
        echo(f"skip {rid}: {why}")
    if failed:
        keep = [r.index for r in selected if r.run_id not in refused]
    else:
        keep = retried
        if not retried and not refused:
            echo("no selected run failed out of memory: nothing to retry")
    if not keep:
        return None, mapping
    return compress_ranges(keep), (load_mapping(exp) if retried and not dry_run else mapping)


def _log_of(exp: Path, record: StatusRecord, state: object) -> Path | None:
    """The log of the attempt ``state`` is of: its SLURM task's when SLURM ran one the record is not of."""
    job = getattr(state, "job", None)
    own = record.slurm_task
    if job and "_" in job and (own is None or job != f"{own[0]}_{own[1]}"):
        array_job, task = job.rsplit("_", 1)
        return exp / slurm_log_file(array_job, task)
    return exp / record.log if record.log else None
