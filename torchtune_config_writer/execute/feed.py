"""Submit limits (``slurm.max_submit``): at most N of the experiment's tasks queued or running at once,
all runs submitted in the end, and no process left on the login node (Appendix J.1).

``submit`` puts what does not fit in the experiment's queue (``slurm_queue.yaml``) and submits what
does; every array task then runs a *feed step* as it ends (``after_task``, called by the ``task``
command): under the experiment's submission lock it counts the experiment's active tasks (squeue,
array tasks one by one, itself included) and submits as many queued tasks as the limit leaves room
for, as one array per script. A training task that completes its run puts the run's evaluation at
the front of the queue. A feed step that finds no room exits when another active task has yet to
do its own feed step (that one will), and otherwise waits (polling squeue, lock released) for one of
the tasks that already fed to leave the queue.

The limit is ``slurm.max_submit``, else what ``sacctmgr`` says of the user's association and QOS
(``detect_limit``; none where accounting does not exist). Parsing and deciding are pure functions
(``parse_assoc``, ``parse_qos``, ``choose_limit``, ``decide``); the rest runs squeue and sbatch.

    >>> decide(3, active={"41_0", "41_1", "41_2"}, me="41_0", fed={}, queued=5)
    Decision(submit=0, wait=False)
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..errors import ConfigWriterError, SlurmError, one_line
from ..expdir import (
    EVAL_JOB, FEED_FILE, FORCE_ENV, LOG_DIR, TRAIN_JOB, FeedQueue, QueuedTask, RunEntry, RunMapping, SlurmState, State,
    jobs_lock, load_mapping, plan_arrays, read_feed, read_jobs, read_status, script_groups, write_feed,
)
from .slurm_state import query_tasks

#: Seconds between squeue polls while a feed step waits for room.
POLL_SECONDS = 2.0
#: How long a feed step waits for a task that already fed to leave the queue.
WAIT_SECONDS = 120.0
#: A task that fed this long ago and is still active was requeued (or is stuck): it will feed again.
LEAVING_SECONDS = WAIT_SECONDS + 60.0
#: sacctmgr talks to slurmdbd, which may be slow or absent.
SACCTMGR_TIMEOUT = 15


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ----------------------------------------------------------------------------- the limit


@dataclass(frozen=True)
class Limit:
    """How many of the experiment's tasks may be queued or running at once, and who says so."""

    value: int
    source: str
    """``slurm.max_submit``, or what sacctmgr reported (``QOS normal MaxSubmitJobsPerUser``)."""


@dataclass(frozen=True)
class AssocLimits:
    """One row of ``sacctmgr show assoc``: an association of the user and its submit limits."""

    account: str
    partition: str
    max_submit: int | None
    grp_submit: int | None
    default_qos: str
    qos: tuple[str, ...]


@dataclass(frozen=True)
class QosLimits:
    """One row of ``sacctmgr show qos``: a QOS's submit limits (None: unlimited)."""

    name: str
    per_user: int | None
    per_account: int | None
    group: int | None


ASSOC_FORMAT = "Account,Partition,MaxSubmitJobs,GrpSubmitJobs,DefaultQOS,QOS"
QOS_FORMAT = "Name,MaxSubmitJobsPerUser,MaxSubmitJobsPerAccount,GrpSubmitJobs"


def _count(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None  # empty: no limit


def parse_assoc(text: str) -> list[AssocLimits]:
    """Rows of ``sacctmgr -n -P show assoc user=U format=<ASSOC_FORMAT>``.

    >>> parse_assoc("lab|gpu|25||normal|high,normal\\n")
    [AssocLimits(account='lab', partition='gpu', max_submit=25, grp_submit=None, default_qos='normal', qos=('high', 'normal'))]
    """
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        rows.append(AssocLimits(parts[0].strip(), parts[1].strip(), _count(parts[2]), _count(parts[3]),
                                parts[4].strip(), tuple(q.strip() for q in parts[5].split(",") if q.strip())))
    return rows


def parse_qos(text: str) -> dict[str, QosLimits]:
    """QOS name -> its submit limits, from ``sacctmgr -n -P show qos format=<QOS_FORMAT>``.

    >>> parse_qos("normal|25||\\nhigh|||100\\n")["normal"].per_user
    25
    """
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0].strip():
            out[parts[0].strip()] = QosLimits(parts[0].strip(), _count(parts[1]), _count(parts[2]), _count(parts[3]))
    return out


def choose_limit(assocs: list[AssocLimits], qos: dict[str, QosLimits], *, account: str | None = None,
                 qos_name: str | None = None, partition: str | None = None) -> Limit | None:
    """The tightest submit limit that applies to this user's jobs, or None when none does.

    Associations: those of ``account`` (and ``partition``) when given, else all of the user's (the
    tightest wins: the job's account is unknown until it runs). QOS: ``qos_name``, else the
    associations' default QOS, else ``normal``.

    >>> choose_limit(parse_assoc("lab||||normal|normal\\n"), parse_qos("normal|25||\\n"))
    Limit(value=25, source='sacctmgr: QOS normal MaxSubmitJobsPerUser=25')
    >>> choose_limit([], {}) is None
    True
    """
    rows = [a for a in assocs if (account is None or a.account.lower() == account.lower())
            and (partition is None or not a.partition or a.partition == partition)]
    found: list[tuple[int, str]] = []
    for a in rows:
        where = f"association {a.account}" + (f"/{a.partition}" if a.partition else "")
        if a.max_submit is not None:
            found.append((a.max_submit, f"{where} MaxSubmitJobs={a.max_submit}"))
        if a.grp_submit is not None:
            found.append((a.grp_submit, f"{where} GrpSubmitJobs={a.grp_submit}"))
    names = [qos_name] if qos_name else sorted({a.default_qos for a in rows if a.default_qos}) or ["normal"]
    for name in names:
        q = qos.get(name)
        if q is None:
            continue
        for value, what in ((q.per_user, "MaxSubmitJobsPerUser"), (q.per_account, "MaxSubmitJobsPerAccount"),
                            (q.group, "GrpSubmitJobs")):
            if value is not None:
                found.append((value, f"QOS {name} {what}={value}"))
    if not found:
        return None
    value, why = min(found)
    return Limit(value, f"sacctmgr: {why}")


def _sacctmgr(*args: str) -> str | None:
    exe = shutil.which("sacctmgr")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, "-n", "-P", *args], capture_output=True, text=True, timeout=SACCTMGR_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None  # no slurmdbd (no accounting): no limit to obey


def detect_limit(mapping: RunMapping) -> Limit | None:
    """The submit limit sacctmgr reports for this user (None where accounting does not exist)."""
    user = _user()
    assoc = _sacctmgr("show", "assoc", f"user={user}", f"format={ASSOC_FORMAT}")
    if assoc is None:
        return None
    qos = _sacctmgr("show", "qos", f"format={QOS_FORMAT}") or ""
    return choose_limit(parse_assoc(assoc), parse_qos(qos), account=mapping.slurm.account,
                        qos_name=mapping.slurm.qos, partition=mapping.slurm.partition)


def limit_of(mapping: RunMapping, *, ask: bool = True) -> Limit | None:
    """``slurm.max_submit`` if set, else (when ``ask``) what sacctmgr reports, else None: no limit."""
    if mapping.slurm.max_submit is not None:
        return Limit(mapping.slurm.max_submit, "slurm.max_submit")
    return detect_limit(mapping) if ask else None


def effective_cap(limit: Limit, mapping: RunMapping) -> int:
    """The limit, or ``max_concurrent`` when smaller (each fed array has its own %K, so the cap keeps K)."""
    k = mapping.slurm.max_concurrent
    return min(limit.value, k) if k else limit.value


def _check_cap(limit: Limit, cap: int) -> None:
    if cap < 2:
        why = (f"slurm.max_concurrent {cap} under a submit limit ({limit.source})" if cap < limit.value
               else f"a submit limit of {cap} ({limit.source})")
        raise SlurmError(
            f"{why} cannot feed the queue: a task that ends counts against the limit while it submits the next "
            "one, so with room for one task nothing more could ever be submitted; ask for a limit of 2 or more, "
            "set slurm.max_concurrent to 2 or more, or submit at most one run at a time with --runs")


# ----------------------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Decision:
    """What a feed step does now: submit this many queued tasks; or, when 0, wait for room or leave."""

    submit: int
    wait: bool


def leaving(active: Iterable[str], me: str | None, fed: dict[str, str], now: datetime | None = None) -> list[str]:
    """Active tasks other than ``me`` that did their feed step lately: they are about to leave the queue."""
    now = now or _now()
    out = []
    for key in active:
        if key == me or key not in fed:
            continue
        try:
            age = (now - datetime.fromisoformat(fed[key])).total_seconds()
        except ValueError:
            continue
        if age < LEAVING_SECONDS:
            out.append(key)
    return sorted(out)


def decide(cap: int, active: set[str], me: str | None, fed: dict[str, str], queued: int,
           now: datetime | None = None) -> Decision:
    """One feed step's decision, from the experiment's active tasks (``JOB_TASK``; ``me``, the task feeding,
    among them while it runs) and the tasks that already fed.

    Room is ``cap - len(active)``: submit that many (at most ``queued``). Without room, wait when a task
    that already fed is still listed (it leaves within seconds, freeing room that no one else would
    use); else leave: every other active task has yet to feed, and the first of them to end will.

    >>> decide(3, {"7_0", "7_1"}, "7_0", {}, queued=5)
    Decision(submit=1, wait=False)
    >>> decide(3, {"7_0", "7_1", "7_2"}, "7_0", {"7_1": _now().isoformat()}, queued=5)
    Decision(submit=0, wait=True)
    """
    if queued <= 0:
        return Decision(0, False)
    room = cap - len(active)
    if room > 0:
        return Decision(min(room, queued), False)
    return Decision(0, bool(leaving(active, me, fed, now)))


# ----------------------------------------------------------------------------- squeue

#: States of a task that is about to leave the queue once it fed (not one requeued and pending again).
_LEAVING_STATES = frozenset({SlurmState.RUNNING, SlurmState.COMPLETING, SlurmState.SIGNALING,
                             SlurmState.STAGE_OUT})


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a container): squeue takes the number
        return str(os.getuid())


def active_tasks(exp: Path) -> dict[str, SlurmState] | None:
    """The experiment's queued or running array tasks (``JOB_TASK`` -> state), counted one by one; None when
    squeue cannot be asked. One squeue call over the job ids in slurm_jobs.yaml (``slurm_state.query_tasks``,
    which ``status`` asks too)."""
    ids = {j.job_id for j in read_jobs(exp)}
    if not ids:
        return {}
    tasks = query_tasks(ids)
    if tasks is None:
        return None
    return {f"{job}_{task}": t.state for (job, task), t in tasks.items() if t.state.active}


# ----------------------------------------------------------------------------- the feed step


@dataclass
class Outcome:
    """What a feed (or a capped ``submit``) did: the arrays it submitted, and whether it must wait for room."""

    arrays: list = dataclasses.field(default_factory=list)
    wait: bool = False
    waiting: int = 0
    """Tasks left in the queue."""
    failed: bool = False
    """sbatch refused (or was missing): the rest stays queued for the next feed step."""


#: The SLURM_* variables sbatch reads as input (its man page); every other SLURM_* variable was set by SLURM
#: for the job the feed step runs in, and would reach the next job stale (``--export=ALL``).
SBATCH_INPUT = frozenset({"SLURM_CONF", "SLURM_CLUSTERS", "SLURM_DEBUG_FLAGS", "SLURM_EXIT_ERROR", "SLURM_HINT",
                          "SLURM_UMASK"})


def task_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment sbatch runs in from a feed step: without the ending job's own SLURM_* variables
    (a stale SLURM_MEM_PER_CPU beside the next job's SLURM_MEM_PER_NODE makes srun fail) and without
    FORCE_ENV (only ``force`` items carry it, on their own sbatch line).

    >>> task_env({"SLURM_JOB_ID": "7", "SLURM_CONF": "/etc/slurm.conf", "PATH": "/bin", FORCE_ENV: "1"})
    {'SLURM_CONF': '/etc/slurm.conf', 'PATH': '/bin'}
    """
    return {k: v for k, v in environ.items() if k != FORCE_ENV and (not k.startswith("SLURM_") or k in SBATCH_INPUT)}


def _group(mapping: RunMapping, items: list[QueuedTask], size: int, exp: Path) -> list[tuple[list[QueuedTask], object]]:
    """The queued tasks as few planned arrays as can hold them: one per (kind, script, force, time)."""
    from .submit import PlannedArray

    scripts = {TRAIN_JOB: {i: g.script for g in script_groups(mapping) for i in g.indices},
               EVAL_JOB: {i: g.script for g in script_groups(mapping, evaluation=True) for i in g.indices}}
    groups: dict[tuple, list[QueuedTask]] = {}
    for item in items:
        script = scripts[item.kind].get(item.index)
        if script is None:
            continue  # the run is gone from the experiment (or no longer evaluated): the caller drops it
        groups.setdefault((item.kind, script, item.force, item.time), []).append(item)
    out = []
    for (kind, script, force, limit), members in groups.items():
        by_index = {m.index: m for m in members}
        for chunk in plan_arrays(by_index, size):
            out.append(([by_index[i] for i in chunk.indices], PlannedArray(kind, exp / script, chunk, force=force,
                                                                           time=limit)))
    return out


class _HeldSignals:
    """Block the signals that stop a task (scancel, time limit warnings) while sbatch runs and its job id is
    recorded, so that a job SLURM accepted is never left out of slurm_jobs.yaml while it stays queued."""

    SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2})

    def __enter__(self) -> None:
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def _queue_evaluations(exp: Path, mapping: RunMapping, queue: FeedQueue, me: str | None,
                       active: dict[str, SlurmState]) -> FeedQueue:
    """Move to the front of the queue the evaluations of trainings that completed: ``me``'s, and those of
    training tasks no longer active (one killed before its feed step). A training that did not complete
    gets no evaluation; its entry is kept only while it may still run again (``me``, requeued)."""
    front: list[QueuedTask] = []
    awaiting = dict(queue.awaiting)
    for key, item in queue.awaiting.items():
        if key != me and key in active:
            continue  # still training
        run = mapping.by_index.get(item.index)
        rec = read_status(exp, run.run_id) if run else None
        task = rec.slurm_task if rec else None
        completed = rec is not None and rec.state == State.COMPLETED and task is not None and f"{task[0]}_{task[1]}" == key
        if completed:
            front.append(item)
            del awaiting[key]
        elif key != me:
            del awaiting[key]  # it ended without completing: no evaluation (``submit --failed`` retrains and evaluates)
    return dataclasses.replace(queue, items=(*front, *queue.items), awaiting=awaiting)


def _submit_batch(exp: Path, mapping: RunMapping, queue: FeedQueue, n: int, sbatch: str, outcome: Outcome,
                  echo: Callable[[str], None]) -> tuple[FeedQueue, Exception | None]:
    """Submit the first ``n`` queued tasks, as few arrays as can hold them; return the queue without the
    submitted ones (with the evaluations their trainings will queue), and what stopped it, if anything
    (the tasks of that array and of the ones after it stay at the front)."""
    from .submit import _submit_plan, array_size

    batch, rest = list(queue.items[:n]), list(queue.items[n:])
    planned = _group(mapping, batch, array_size(mapping), exp)
    env = task_env(os.environ)  # (also for a submit made inside a task: an out-of-memory retry)
    grouped = [m for members, _ in planned for m in members]
    for item in batch:
        if item not in grouped:
            echo(f"feed: run index {item.index} has no {'evaluation' if item.kind == EVAL_JOB else 'training'} "
                 "script in this experiment (generated again since?): dropped from the queue")
    awaiting = dict(queue.awaiting)
    for k, (members, plan) in enumerate(planned):
        try:
            done = _submit_plan(exp, mapping, [plan], sbatch, dry_run=False, echo=echo, env=env)
        except Exception as e:  # refused (SlurmError), or sbatch hung: keep them for the next feed step
            kept = [m for ms, _ in planned[k:] for m in ms]
            return dataclasses.replace(queue, items=(*[i for i in batch if i in kept], *rest), awaiting=awaiting), e
        outcome.arrays.extend(done)
        for item in members:
            if item.kind == TRAIN_JOB and item.evaluate:
                awaiting[f"{done[0].job_id}_{item.index - plan.chunk.offset}"] = QueuedTask(item.index, EVAL_JOB, item.force)
    return dataclasses.replace(queue, items=tuple(rest), awaiting=awaiting), None


def _feed_once(exp: Path, mapping: RunMapping, me: str | None, *, echo: Callable[[str], None],
               raise_errors: bool = False) -> Outcome:
    """One pass of a feed step; call it inside ``jobs_lock``. Never waits."""
    queue = read_feed(exp)
    if queue is None:
        return Outcome()
    active = active_tasks(exp)
    if active is None:
        raise SlurmError("squeue cannot be asked, so the experiment's queued and running tasks cannot be counted")
    now = _now()
    # Kept only for tasks that are leaving: the others left (forget them), or were requeued and are
    # waiting to run again (a time limit, J.4): they will feed again when they end.
    fed = {k: v for k, v in queue.fed.items() if active.get(k) in _LEAVING_STATES}
    if me is not None and active.get(me, SlurmState.RUNNING) in _LEAVING_STATES:
        fed[me] = now.isoformat(timespec="seconds")
    queue = _queue_evaluations(exp, mapping, dataclasses.replace(queue, fed=fed), me, active)
    decision = decide(queue.max_submit, set(active), me, queue.fed, queue.waiting, now)
    outcome = Outcome(wait=decision.wait, waiting=queue.waiting)
    if decision.submit:
        sbatch = shutil.which("sbatch")
        if not sbatch:
            write_feed(exp, queue)
            raise SlurmError(f"sbatch is not on PATH on this node ({os.uname().nodename})")
        (exp / LOG_DIR).mkdir(exist_ok=True)
        with _HeldSignals():  # until the queue says what was submitted: else it would be submitted twice
            queue, error = _submit_batch(exp, mapping, queue, decision.submit, sbatch, outcome, echo)
            write_feed(exp, queue)
        outcome.waiting = queue.waiting
        if error is not None:
            if raise_errors:
                raise error if isinstance(error, ConfigWriterError) else SlurmError(one_line(error))
            echo(f"feed: {error if isinstance(error, ConfigWriterError) else one_line(error)}; "
                 f"{_tasks(queue.waiting)} left in {FEED_FILE}")
            outcome.wait, outcome.failed = False, True
        return outcome
    write_feed(exp, queue)
    return outcome


def feed(exp_dir: str | Path, me: str | None = None, *, wait: bool = True, echo: Callable[[str], None] = print,
         first: Outcome | None = None) -> Outcome:
    """A feed step: submit what the limit leaves room for, waiting (lock released, squeue polled every
    ``POLL_SECONDS``, at most ``WAIT_SECONDS``) while only tasks that already fed stand in the way.

    ``me`` is the ending task (``JOB_TASK``); None for ``submit`` itself. ``first``: a pass already made.
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    total = first or Outcome()
    outcome = first
    deadline, said = time.monotonic() + WAIT_SECONDS, False
    while True:
        if outcome is None:
            with jobs_lock(exp):
                outcome = _feed_once(exp, mapping, me, echo=echo)
            total.arrays.extend(outcome.arrays)
            total.waiting = outcome.waiting
        if outcome.arrays and outcome.waiting and not outcome.failed:
            outcome = None  # room may remain (more tasks left while it submitted): look again at once
            continue
        if not (outcome.wait and wait and outcome.waiting):
            return total
        if not said:
            echo(f"feed: no room for the {_tasks(outcome.waiting)} left; waiting for tasks that already submitted "
                 "theirs to leave the queue")
            said = True
        if time.monotonic() > deadline:
            echo(f"feed: no room in the queue after {WAIT_SECONDS:.0f} s; {_tasks(outcome.waiting)} left in "
                 f"{FEED_FILE} for the next task that ends (or `torchtune-config-writer submit {exp}`)")
            return total
        time.sleep(POLL_SECONDS)
        outcome = None


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Interruptible:
    """While a feed step runs (it may wait up to ``WAIT_SECONDS``), a signal that would end the task
    (scancel, the time limit) ends the feed step instead, so that the task still exits with its run's code."""

    def __enter__(self) -> None:
        def stop(signum: int, frame: object) -> None:
            raise _Interrupted(signum)

        self.old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)


def after_task(exp_dir: str | Path) -> None:
    """The feed step an array task runs as it ends (``task`` command, last): never raises, so the task's
    own exit code stands; says what it did (or why it could not) in the task's log."""
    try:
        exp = Path(exp_dir).resolve()
        queue = read_feed(exp)
        if queue is None or not (queue.items or queue.awaiting):
            return  # nothing waits to be submitted under a limit
        job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        if not job or not task:
            return  # not a SLURM array task (run by hand)
        with _Interruptible():
            feed(exp, f"{job}_{task}", echo=lambda line: print(line, file=sys.stderr, flush=True))
    except _Interrupted as e:
        print(f"feed: stopped by signal {e.signum}; the queue ({FEED_FILE}) is as it was: the next task that ends "
              f"submits from it, or `torchtune-config-writer submit {exp_dir}`", file=sys.stderr, flush=True)
    except Exception as e:  # a failed feed must not change how the run is recorded
        why = str(e) if isinstance(e, ConfigWriterError) else one_line(e)
        print(f"feed: could not submit more of the experiment's queued runs: {why}; they stay in "
              f"{FEED_FILE}: the next task that ends tries again, or `torchtune-config-writer submit "
              f"{exp_dir}`", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- submit, resume, withdraw, status


def _tasks(n: int) -> str:
    return f"{n} task{'s' if n != 1 else ''}"


def submit_capped(exp: Path, mapping: RunMapping, train: list[RunEntry], evaluate: list[RunEntry], *,
                  force: bool = False, times: dict[int, str | None] | None = None, dry_run: bool = False,
                  echo: Callable[[str], None] = print, note: Callable[[str], None] = lambda line: None
                  ) -> Outcome | None:
    """``submit`` under a submit limit (call it inside ``jobs_lock``): queue the selected tasks, say so, and
    submit what fits now. None when there is no limit, or when everything fits under it now: then
    ``submit`` submits its ordinary arrays (evaluations following their trainings by dependency).

    Under a limit the evaluations are not dependent arrays (their pending tasks would fill the limit):
    a training that completes queues its run's evaluation at the front (``_queue_evaluations``).
    """
    limit = limit_of(mapping, ask=not dry_run)
    if limit is None:
        if dry_run and shutil.which("sacctmgr"):
            note("(dry run: sacctmgr not asked for a submit limit; a real submit obeys the one it reports, "
                 "or slurm.max_submit)")
        return None
    times = times or {}
    items = ([QueuedTask(r.index, EVAL_JOB, force) for r in evaluate]
             + [QueuedTask(r.index, TRAIN_JOB, force, bool(r.evaluations), times.get(r.index)) for r in train])
    later = sum(1 for r in train if r.evaluations)  # evaluations queued as their trainings complete
    queue = None if dry_run else read_feed(exp)
    active = {} if dry_run else active_tasks(exp)
    if active is None:
        raise SlurmError(f"squeue cannot be asked, so the tasks this experiment has queued cannot be counted "
                         f"against the submit limit ({limit.source}); nothing was submitted")
    if len(active) + len(items) + later <= limit.value and not (queue and queue.items):
        return None  # it all fits: the ordinary arrays (with their dependent evaluation arrays)
    cap = effective_cap(limit, mapping)
    _check_cap(limit, cap)
    room = max(0, min(cap - len(active), len(items) + (queue.waiting if queue else 0)))
    queued_before = queue.waiting if queue else 0
    total = len(items) + queued_before
    say = (f"at most {cap} of this experiment's tasks queued or running at once ({limit.source}"
           + (f", slurm.max_concurrent {cap}" if cap < limit.value else "") + "): "
           + (f"{'would submit' if dry_run else 'submitting'} {room} of {_tasks(total)} now" if room
              else f"no room now ({len(active)} queued or running)")
           + f"; the rest wait in {FEED_FILE} and each task submits more as it ends"
           + (f"; the {later} evaluation(s) are queued as their runs complete" if later else ""))
    echo(say)
    if dry_run:
        from .submit import _submit_plan

        arrays = []
        for _, planned in _group(mapping, items[:room], _size(mapping, ask=False), exp):
            arrays += _submit_plan(exp, mapping, [planned], "sbatch", dry_run=True, echo=echo)
        return Outcome(arrays, waiting=total - room)
    queue = queue or FeedQueue(cap, limit.source)
    write_feed(exp, dataclasses.replace(queue, max_submit=cap, source=limit.source, items=(*queue.items, *items)))
    try:
        return _feed_once(exp, mapping, None, echo=echo, raise_errors=True)
    except SlurmError as e:
        left = read_feed(exp)
        raise SlurmError(f"{e}; the {_tasks(left.waiting if left else 0)} not submitted wait in {FEED_FILE}: once "
                         f"this is fixed, `torchtune-config-writer submit {exp}` submits them (or delete the file "
                         "to forget them)") from None


def _size(mapping: RunMapping, *, ask: bool = True) -> int:
    from .submit import array_size

    return array_size(mapping, ask_cluster=ask)


def settle(exp: Path, outcome: Outcome | None, *, echo: Callable[[str], None] = print) -> list:
    """After a capped ``submit`` left the lock: look again, and wait for room where only tasks that already
    fed fill the queue (they leave within seconds and would submit nothing more). The arrays submitted."""
    if outcome is None:
        return []
    if outcome.arrays and not outcome.waiting or not outcome.arrays and not outcome.wait or outcome.failed:
        return outcome.arrays
    return feed(exp, None, echo=echo, first=outcome).arrays


def resume(exp: Path, mapping: RunMapping, *, dry_run: bool = False, echo: Callable[[str], None] = print) -> list | None:
    """A plain ``submit`` of an experiment whose queue still holds tasks: submit what fits now (a task killed
    before its feed step, or sbatch refused on the nodes, may have left nobody to). None: no queue."""
    queue = read_feed(exp)
    if queue is None or not queue.items:
        return None
    echo(f"{FEED_FILE} holds {_tasks(queue.waiting)} still to submit (at most {queue.max_submit} queued or "
         f"running at once, {queue.source}): {'a real submit would submit' if dry_run else 'submitting'} what "
         "fits now; each task submits more as it ends (name runs with --runs, or use --failed, to submit others)")
    if dry_run:
        return []
    if not shutil.which("sbatch"):
        raise SlurmError("sbatch is not on PATH: submit from a SLURM login node")
    with jobs_lock(exp):
        outcome = _feed_once(exp, mapping, None, echo=echo, raise_errors=True)
    arrays = settle(exp, outcome, echo=echo)
    if not arrays:
        echo(f"no room now: the experiment's queued and running tasks fill the limit; they submit the "
             f"{_tasks(outcome.waiting)} left as they end")
    return arrays


def refuse_queued(exp: Path, train: list[RunEntry], evaluate: list[RunEntry]) -> None:
    """Raise when a selected run (or its evaluation) is already waiting in the queue to be submitted."""
    queue = read_feed(exp)
    if queue is None or not queue.items:
        return
    queued = {item.index for item in queue.items}
    clash = sorted({r.run_id for r in [*train, *evaluate] if r.index in queued})
    if clash:
        raise SlurmError(
            f"already waiting in {FEED_FILE} to be submitted (slurm.max_submit), so nothing was submitted: "
            + ", ".join(clash[:5]) + (", ..." if len(clash) > 5 else "")
            + f"; `torchtune-config-writer submit {exp}` (no options) submits the queue as far as the limit "
            "allows, and --runs leaves them out")


def withdraw(exp_dir: str | Path, indices: Iterable[int], *, locked: bool = False) -> list[int]:
    """Take these runs out of the queue (their queued trainings and evaluations, and the evaluations their
    running trainings would queue); return the indices that had queued tasks. ``locked``: the caller
    holds ``jobs_lock`` already. For ``cancel``: withdraw first, then scancel, so that no ending task
    submits what is being cancelled.

    >>> withdraw("outputs/big", [3, 4])       # doctest: +SKIP
    [3]
    """
    exp = Path(exp_dir)
    wanted = {int(i) for i in indices}
    with contextlib.nullcontext() if locked else jobs_lock(exp):
        queue = read_feed(exp)
        if queue is None:
            return []
        out = sorted({item.index for item in queue.items if item.index in wanted})
        kept = tuple(item for item in queue.items if item.index not in wanted)
        awaiting = {k: item for k, item in queue.awaiting.items() if item.index not in wanted}
        if kept != queue.items or awaiting != queue.awaiting:
            write_feed(exp, dataclasses.replace(queue, items=kept, awaiting=awaiting))
        return out


def status_note(exp_dir: str | Path, states: list, *, slurm_known: bool) -> str:
    """``status``'s lines about the queue: how many runs wait, and, when no task of the experiment is queued
    or running any more, that none will submit them and what does ("" without waiting tasks).

    ``states`` are ``slurm_state.RunState``s; ``slurm_known``: squeue was asked (else activity is unknown).
    """
    queue = read_feed(exp_dir)
    if queue is None or not queue.items:
        return ""
    runs = len({i.index for i in queue.items if i.kind == TRAIN_JOB})
    evals = sum(1 for i in queue.items if i.kind == EVAL_JOB)
    what = " and ".join(filter(None, [f"{runs} run(s)" if runs else "", f"{evals} evaluation(s)" if evals else ""]))
    line = (f"{what} wait to be submitted (at most {queue.max_submit} tasks queued or running at once, "
            f"{queue.source}); the experiment's tasks submit them as they end.")
    live = any(isinstance(s.state, SlurmState) and s.state.active for s in states) or any(
        s.evaluation is not None and s.evaluation.active and isinstance(s.evaluation.state, SlurmState) for s in states)
    if slurm_known and not live:
        line += (f"\nNo task of this experiment is queued or running, so none will submit them (a task was killed "
                 "before its feed step, or sbatch failed on the compute nodes: see the end of the latest task "
                 f"logs). `torchtune-config-writer submit {exp_dir}` submits the next ones and resumes.")
    return line
