"""Time limits and preemption: requeue a SLURM task before its limit and resume the run where it stopped.

A task's script asks SLURM for a warning (``#SBATCH --signal=B:USR1@N``, ``--requeue``,
``--open-mode=append``; ``compile/sbatch.py``) when the run has a time limit and
``slurm.requeue`` is on. What happens then, in the task (``runner.run_one`` calls this module):

1. SIGUSR1 arrives ``N`` seconds before the limit. ``should_requeue`` decides: requeue while the run
   has been requeued fewer than ``slurm.max_requeues`` times, or whenever it saved a new epoch since it
   (re)started and its recipe can resume from it (progress); otherwise the training goes on into the
   limit, SLURM ends the task ``TIMEOUT`` and the record's note says why it was not requeued.
2. ``requeue_task`` stops the training, records the run ``pending`` with ``requeues`` + 1 and a note,
   and asks SLURM to requeue the task (``scontrol requeue JOB_TASK``): SLURM kills the job script and
   queues the same task again (squeue: PENDING, reason BeginTime, for about two minutes).
3. When the task starts again (``SLURM_RESTART_COUNT`` > 0: requeued by us, by preemption or after a
   node failure), ``plan_start`` looks for an epoch this attempt saved (``saved_epoch``). With a
   recipe that resumes (``RunMapping.resumable``) the training restarts with
   ``resume_from_checkpoint=True`` as a command-line override (the config file is unchanged, so its
   sha256 check still passes) and ``resumed_from_epoch`` is recorded; otherwise it starts afresh and
   the note says so.

torchtune 0.6.1 resumes like this: the checkpointer loads ``recipe_state/recipe_state.pt`` from the
output directory (written with every epoch but the last), a LoRA adapter from the highest ``epoch_N``
folder, but a full finetune's weights from ``checkpointer.checkpoint_files`` *relative to the output
directory*: so for a full finetune those are pointed at ``epoch_N``'s weight files as well.

    >>> should_requeue(requeues=1, max_requeues=3, progressed=False, enabled=True)
    (True, 'requeue 2 of at most 3 without a new saved epoch')
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..expdir import RunEntry, RunMapping, State, StatusRecord, now_iso, write_status

#: SLURM's count of how often it restarted this job (our requeue, preemption, node failure).
RESTART_ENV = "SLURM_RESTART_COUNT"

#: Where torchtune keeps the recipe state (optimizer, epochs run, data loader) of the last non-final epoch.
RECIPE_STATE = Path("recipe_state") / "recipe_state.pt"

_EPOCH_DIR = re.compile(r"epoch_(\d+)")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# OmegaConf's dotlist grammar reads these unquoted inside [...]; anything else is quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")


@dataclass(frozen=True)
class Resume:
    """How a run starts in this task: extra ``key=value`` overrides and fields for its status record.

    ``Resume()`` is a fresh start (nothing added).
    """

    overrides: tuple[str, ...] = ()
    requeues: int = 0
    resumed_from_epoch: int | None = None
    first_started: str | None = None
    note: str | None = None

    def record_fields(self) -> dict[str, object]:
        return {"requeues": self.requeues, "resumed_from_epoch": self.resumed_from_epoch,
                "first_started": self.first_started, "note": self.note}


@dataclass(frozen=True)
class SavedEpoch:
    """The epoch a run can resume from (``saved_epoch``), and what torchtune needs to be told."""

    epoch: int
    overrides: tuple[str, ...]
    set_aside: tuple[str, ...] = ()
    """Newer ``epoch_M`` folders renamed ``interrupted_epoch_M``: a save cut short by the stop, the final
    epoch of a training stopped while exiting, or an earlier training's; torchtune would take the highest
    folder for the adapter otherwise."""


# ----------------------------------------------------------------------------- pure decisions


def should_requeue(*, requeues: int, max_requeues: int, progressed: bool, enabled: bool = True) -> tuple[bool, str]:
    """Whether a task warned of its time limit is requeued, and why (a phrase for the record's note).

    ``progressed``: a new epoch was saved since the task (re)started *and* the recipe resumes from it;
    such a run is requeued whatever its count, since every requeue gets it further. Without progress it
    is requeued while ``requeues < max_requeues``, so a run that never reaches an epoch inside one time
    limit is not requeued for ever.

    >>> should_requeue(requeues=3, max_requeues=3, progressed=True)
    (True, 'a new epoch was saved since it started')
    >>> should_requeue(requeues=3, max_requeues=3, progressed=False)
    (False, 'requeued 3 time(s) already (slurm.max_requeues: 3) without saving a new epoch')
    """
    if not enabled:
        return False, "slurm.requeue is off"
    if progressed:
        return True, "a new epoch was saved since it started"
    if requeues < max_requeues:
        return True, f"requeue {requeues + 1} of at most {max_requeues} without a new saved epoch"
    return False, (f"requeued {requeues} time(s) already (slurm.max_requeues: {max_requeues}) "
                   "without saving a new epoch")


def is_restart(previous: StatusRecord, run: RunEntry, env: Mapping[str, str]) -> bool:
    """True when this start continues the same attempt of the run after a requeue or preemption.

    Either SLURM restarted the very task that wrote ``previous`` (``SLURM_RESTART_COUNT`` > 0), or
    ``previous`` says the attempt was requeued and did not finish (a requeue whose ``scontrol`` failed,
    resubmitted by hand). A completed run, or a record of another attempt, never counts.

    >>> rec = StatusRecord("run_000", State.CANCELLED, slurm_array_job_id="7", slurm_array_task_id="0")
    >>> run = RunEntry("run_000", 0, "c", "0", "/o", {}, "passed", None)
    >>> is_restart(rec, run, {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "0", "SLURM_RESTART_COUNT": "1"})
    True
    >>> is_restart(rec, run, {"SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "0"})
    False
    """
    if previous.state == State.COMPLETED or (previous.attempt or 1) != run.attempt:
        return False
    task = (env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID"))
    restarted = _int(env.get(RESTART_ENV)) > 0 and previous.slurm_task is not None \
        and previous.slurm_task == (str(task[0]), _int(task[1], -1))
    return restarted or (previous.requeues > 0 and previous.state in (State.PENDING, State.CANCELLED))


def override_list(key: str, values: list[str]) -> str:
    """A ``key=[a,b]`` override for ``tune run`` (OmegaConf dotlist), quoting what needs it.

    >>> override_list("checkpointer.checkpoint_files", ["epoch_1/model-00001-of-00001.bin"])
    'checkpointer.checkpoint_files=[epoch_1/model-00001-of-00001.bin]'
    """
    def one(v: str) -> str:
        return v if _PLAIN.fullmatch(v) else "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{key}=[{','.join(one(v) for v in values)}]"


# ----------------------------------------------------------------------------- the output directory


def saved_epoch(output_dir: str | Path, since: str | None = None, *, set_aside: bool = False) -> SavedEpoch | None:
    """The epoch the run in ``output_dir`` can resume from, or None.

    That is the ``epoch_N`` folder written last before ``recipe_state/recipe_state.pt`` (torchtune
    writes an epoch's weights, then its recipe state), not older than ``since`` (ISO time: when this
    attempt first started; anything older belongs to an earlier training). With ``set_aside``, higher
    ``epoch_M`` folders are renamed ``interrupted_epoch_M`` so that torchtune, which takes the highest
    folder, resumes from this one. Reads file times only: nothing is loaded.

    >>> saved_epoch("runs/run_000").epoch                       # doctest: +SKIP
    1
    """
    out = Path(output_dir)
    state = out / RECIPE_STATE
    try:
        state_time = state.stat().st_mtime
    except OSError:
        return None
    floor = _timestamp(since) - 1 if since else None  # status times have whole seconds
    if floor is not None and state_time < floor:
        return None  # an earlier training's recipe state
    epochs = {}
    for folder in _epoch_dirs(out):
        newest = _newest(folder)
        if newest is not None:
            epochs[int(_EPOCH_DIR.fullmatch(folder.name).group(1))] = (folder, newest)
    written = [(t, n) for n, (_, t) in epochs.items() if t <= state_time and (floor is None or t >= floor)]
    if not written:
        return None
    _, epoch = max(written)
    folder = epochs[epoch][0]
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    overrides = ["resume_from_checkpoint=True"]
    adapter = "adapter_model.pt" in files
    dcp = ".metadata" in files or any(f.endswith(".distcp") for f in files)
    if not adapter and not dcp:
        # A full finetune: torchtune reads checkpoint_files relative to output_dir when resuming.
        weights = [f"{folder.name}/{f}" for f in files if f.endswith(_WEIGHT_SUFFIXES) and not f.startswith("adapter")]
        if not weights:
            return None
        # `~` first: the base config may give checkpoint_files as a mapping (filename_format), and a list
        # cannot be merged over a mapping.
        overrides += ["~checkpointer.checkpoint_files", override_list("checkpointer.checkpoint_files", weights)]
    aside = []
    if set_aside:
        for n in sorted(k for k in epochs if k > epoch):
            aside.append(_set_aside(epochs[n][0]))
    return SavedEpoch(epoch, tuple(overrides), tuple(aside))


def progressed_since(output_dir: str | Path, started: str | None) -> bool:
    """True when an epoch with its recipe state was saved at or after ``started`` (ISO time)."""
    if not started:
        return False
    found = saved_epoch(output_dir)
    if found is None:
        return False
    folder = Path(output_dir) / f"epoch_{found.epoch}"
    newest = _newest(folder)
    return newest is not None and newest >= _timestamp(started) - 1


def _epoch_dirs(out: Path) -> list[Path]:
    try:
        return [p for p in out.iterdir() if p.is_dir() and _EPOCH_DIR.fullmatch(p.name)]
    except OSError:
        return []


def _newest(folder: Path) -> float | None:
    times = [p.stat().st_mtime for p in folder.iterdir() if p.is_file()]
    return max(times) if times else None


def _set_aside(folder: Path) -> str:
    target = folder.with_name(f"interrupted_{folder.name}")
    k = 1
    while target.exists():
        k += 1
        target = folder.with_name(f"interrupted_{folder.name}.{k}")
    folder.rename(target)
    return target.name


def _timestamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0


def _int(text: object, default: int = 0) -> int:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return default


# ----------------------------------------------------------------------------- in the task


def plan_start(mapping: RunMapping, run: RunEntry, previous: StatusRecord,
               env: Mapping[str, str] | None = None) -> Resume:
    """How ``run`` starts: afresh, or — restarted after a requeue or preemption — from its saved epoch.

    ``previous`` is its status record before this start. Only a restart of the same attempt resumes
    (``is_restart``); it keeps counting ``requeues`` (a preemption, which the task saw only as SIGTERM,
    is counted here) and ``first_started``.
    """
    env = os.environ if env is None else env
    if not is_restart(previous, run, env):
        return Resume()
    counted = previous.state == State.PENDING and previous.requeues > 0  # we requeued it and counted that
    requeues = previous.requeues if counted else previous.requeues + 1
    first = previous.first_started or previous.started
    why = "requeued" if counted else f"restarted by SLURM ({previous.state} before)"
    found = saved_epoch(run.output_dir, first, set_aside=mapping.resumable)
    if found is None:
        return Resume((), requeues, None, first, f"{why}; no epoch saved yet, so it started again from the beginning")
    if not mapping.resumable:
        return Resume((), requeues, None, first,
                      f"{why}; its recipe cannot resume (it reads no resume_from_checkpoint), so it started again "
                      f"from the beginning although epoch {found.epoch} was saved")
    aside = f" (set aside {', '.join(found.set_aside)})" if found.set_aside else ""
    return Resume(found.overrides, requeues, found.epoch, first,
                  f"{why}; resumed from saved epoch {found.epoch}{aside}")


def applies(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a SLURM task (the only place a time-limit warning comes from)."""
    return "SLURM_JOB_ID" in (os.environ if env is None else env)


def decide(mapping: RunMapping, run: RunEntry, record: StatusRecord) -> tuple[bool, str]:
    """``should_requeue`` for a run whose task was just warned; ``record`` is its current (running) record."""
    progressed = mapping.resumable and progressed_since(run.output_dir, record.started)
    ok, why = should_requeue(requeues=record.requeues, max_requeues=mapping.slurm.max_requeues,
                             progressed=progressed, enabled=mapping.slurm.requeue)
    if ok and shutil.which("scontrol") is None:
        return False, "scontrol is not on this node's PATH"
    return ok, why


def note_not_requeued(exp_dir: Path, record: StatusRecord, why: str) -> StatusRecord:
    """Record, in the running record, that the warning came and why the task runs on into its limit."""
    record = dataclasses.replace(record, note=f"time limit near at {now_iso()}; not requeued: {why}")
    write_status(exp_dir, record)
    print(f"# {record.note}", flush=True)
    return record


def requeue_task(exp_dir: Path, record: StatusRecord, why: str, exit_code: int,
                 env: Mapping[str, str] | None = None) -> StatusRecord:
    """Record the stopped run as requeued (``pending``, ``requeues`` + 1) and ask SLURM to requeue its task.

    Call it after the training child has been stopped. SLURM then kills this job script (SIGTERM): the
    caller must hold signals back and return. When ``scontrol requeue`` fails, the record says
    ``cancelled`` with the reason; a later start of the run still resumes (``is_restart``).
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", "")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    requeues = record.requeues + 1
    record = dataclasses.replace(
        record, state=State.PENDING, exit_code=exit_code, ended=now_iso(), requeues=requeues,
        first_started=record.first_started or record.started,
        note=f"time limit near: requeued {job} ({why}); it resumes from its last saved epoch when it starts again")
    write_status(exp_dir, record)  # before scontrol: SLURM kills this process soon after requeueing
    print(f"# {record.note}", flush=True)
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60,
                              check=False)
        # Killed by a signal: SLURM, requeueing, is already stopping every process of the job, scontrol too.
        error = "" if proc.returncode <= 0 else (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"
    except (OSError, subprocess.TimeoutExpired) as e:
        error = str(e)
    if error:
        record = dataclasses.replace(
            record, state=State.CANCELLED,
            note=f"time limit near: stopped, but `scontrol requeue {job}` failed ({error}); "
                 "`submit --failed` starts it again from its last saved epoch")
        write_status(exp_dir, record)
        print(f"# {record.note}", flush=True)
    return record

