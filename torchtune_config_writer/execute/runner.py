"""Run the configs of an experiment directory and record each run's status.

A run starts as ``tune run <recipe> --config configs/run_NNN.yaml`` (torchrun
options for distributed recipes); a custom recipe file starts as
``python recipe.py --config ...`` (through torchrun when distributed), since
``tune run`` cannot run a recipe given by path.

``run_one`` runs one run (what each SLURM array task calls); ``run_experiment``
runs a selection locally, one after another or N at a time. Both only read the
experiment directory (Appendix B) and write ``status/`` and ``logs/``.

Each run is a child process in its own session, so that Ctrl-C or SIGTERM
reaches this process only; it then stops the child (and torchrun's workers)
and records ``cancelled``. A run is never left ``running`` except when this
process itself is killed with SIGKILL.

    >>> code = run_one("outputs/tiny_rank_lr", 0)                    # doctest: +SKIP
    >>> summary = run_experiment("outputs/tiny_rank_lr", parallel=2)  # doctest: +SKIP
    >>> summary.exit_code                                            # doctest: +SKIP
    0
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from ..errors import ConfigWriterError, RunNotRunnableError
from ..expdir import (
    LOG_DIR, RunEntry, RunMapping, State, StatusRecord, format_parameters, load_mapping,
    local_eval_log_file, local_log_file, now_iso, read_all, read_status, slurm_log_file, write_status,
)
from . import evaluation, launch, oom, requeue, tracking
from .metadata import record_metadata
from .selection import check_all_runnable, check_runnable, find_run, select_runs

#: Environment variable giving torchrun's --nproc_per_node for distributed recipes.
NPROC_ENV = "TORCHTUNE_CONFIG_WRITER_NPROC_PER_NODE"

# Seconds a stopped child gets to exit after SIGTERM before it is killed.
_KILL_GRACE_S = 10.0
_POLL_S = 0.1


class _Interrupted(BaseException):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP while runs are in progress."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# ----------------------------------------------------------------------------- one child process


def tune_command() -> list[str]:
    """The ``tune`` of this Python environment (not whichever ``tune`` is first on PATH)."""
    exe = Path(sys.executable).parent / "tune"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torchtune._cli.tune"]


def build_command(mapping: RunMapping, run: RunEntry, nproc_per_node: int | str | None = None) -> list[str]:
    """The command line of a run, relative to the experiment directory.

    >>> m = dataclasses.replace(mapping, recipe="lora_finetune_single_device", distributed=False)  # doctest: +SKIP
    >>> build_command(m, run)[-4:]                                                                 # doctest: +SKIP
    ['run', 'lora_finetune_single_device', '--config', 'configs/run_000.yaml']
    """
    # `tune run /path/recipe.py` hands the path to runpy.run_module, which refuses it: a recipe file runs itself.
    # Inside a SLURM job of several nodes, a distributed run spreads over them (srun + a torchrun rendezvous).
    spread = launch.multinode_for(launch.planned_nodes(mapping, run), os.environ) if mapping.distributed else None
    return launch.launch_command(mapping.recipe, run.current_config, distributed=mapping.distributed,
                                 nproc_per_node=nproc_for(nproc_per_node), multinode=spread,
                                 tune=tune_command(), python=sys.executable)


def nproc_for(nproc_per_node: int | str | None = None) -> int | str:
    """Processes per node for a distributed run: the argument, $TORCHTUNE_CONFIG_WRITER_NPROC_PER_NODE,
    SLURM's $SLURM_GPUS_ON_NODE, else torchrun's ``auto`` (one per GPU, or per CPU without GPUs)."""
    for value in (nproc_per_node, os.environ.get(NPROC_ENV), os.environ.get("SLURM_GPUS_ON_NODE")):
        if value not in (None, ""):
            return value
    return "auto"



def _exit_code(returncode: int) -> int:
    # Popen reports death by signal N as -N; record it as a shell (and SLURM) would: 128 + N.
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Child:
    """A started run (or a run's evaluation, with ``evaluation``): its process, status record and open log."""

    exp_dir: Path
    mapping: RunMapping
    run: RunEntry
    proc: subprocess.Popen
    record: StatusRecord
    log: IO | None
    evaluation: bool = False
    t0: float = field(default_factory=time.monotonic)
    done: bool = False
    warnings: list[str] = field(default_factory=list)
    """What went wrong around the run without failing it (tracking, metadata), for the progress line."""

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def finish(self, state: State | None = None) -> State:
        """Record the outcome of an exited child (``completed``/``failed``, or ``state``)."""
        code = _exit_code(self.proc.wait())
        self.record = dataclasses.replace(self.record, state=state or (State.COMPLETED if code == 0 else State.FAILED),
                                          exit_code=code, ended=now_iso())
        if self.evaluation:
            report = evaluation.read_report(evaluation.report_path(self.exp_dir, self.run))
            self.record = dataclasses.replace(self.record, evaluations=evaluation.evaluation_states(self.run, report))
        if self.log and not self.log.closed:
            self.log.write(f"\n# {self.record.state} with exit code {code} at {self.record.ended}\n")
            self.log.close()
        write_status(self.exp_dir, self.record, evaluation=self.evaluation)
        self.done = True
        self._report_elsewhere()
        return self.record.state

    def _report_elsewhere(self) -> None:
        """After the status record: metadata.json (training) and the tracking run. Neither may undo the result."""
        if self.evaluation:
            train = read_status(self.exp_dir, self.run.run_id)
            warning = tracking.log_evaluation(self.mapping, self.run, train, evaluation.results_of(self.run))
        else:
            warning = record_metadata(self.mapping, self.run, self.record)
            if warning:
                self.warnings.append(warning)
            warning = tracking.end_run(self.mapping, self.run, self.record)
        if warning:
            self.warnings.append(warning)

    def stop(self) -> str:
        """Stop the child (and its own children) and record ``cancelled``, unless it had already ended."""
        if self.proc.poll() is not None:
            return self.finish()
        kill_group(self.proc)
        return self.finish(State.CANCELLED)


def kill_group(proc: subprocess.Popen, grace_s: float = _KILL_GRACE_S) -> None:
    """SIGTERM the child's process group (torchrun and its workers), SIGKILL it after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(exp_dir: Path, mapping: RunMapping, run: RunEntry, *, capture: bool,
           nproc_per_node: int | str | None = None, env: dict[str, str] | None = None,
           evaluation_of: bool = False, force: bool = False, resume: requeue.Resume | None = None) -> _Child:
    """Record ``running`` and start the run's command (its evaluation's, with ``evaluation_of``) with cwd = the
    experiment directory. ``force`` (evaluation only): evaluate again what already has a result. ``resume``:
    a restarted SLURM task's overrides (``resume_from_checkpoint=True``) and record fields (execute/requeue.py)."""
    rid = run.run_id
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if capture:
        # a retry's attempt (out of memory) writes its own log: the failed attempt's stays readable
        log_rel = local_eval_log_file(rid) if evaluation_of else (
            local_log_file(rid) if run.attempt == 1 else oom.attempt_log_file(rid, run.attempt))
    elif job:
        log_rel = slurm_log_file(job, task or "")
    else:
        log_rel = None  # output goes to our own stdout, wherever that is
    record = StatusRecord(rid, State.RUNNING, started=now_iso(), host=socket.gethostname(),
                          slurm_job_id=os.environ.get("SLURM_JOB_ID"), slurm_array_job_id=job,
                          slurm_array_task_id=task, log=log_rel,
                          attempt=run.attempt if run.attempts and not evaluation_of else None)
    if evaluation_of:
        report = evaluation.report_path(exp_dir, run)
        report.unlink(missing_ok=True)  # a report of an earlier attempt must not speak for this one
        evaluation.drop_stale_results(exp_dir, run)
        cmd = evaluation.eval_command(run, report, force=force)
        record = dataclasses.replace(record, evaluations=evaluation.evaluation_states(run, {}))
    else:
        cmd = build_command(mapping, run, nproc_per_node)
        if resume is not None:  # overrides go after --config; the config file itself is unchanged
            cmd += list(resume.overrides)
            record = dataclasses.replace(record, **resume.record_fields())
        tracked = tracking.start_run(mapping, run)  # raises, clearly, before anything started
        if tracked is not None:
            env = {**(env if env is not None else os.environ), **tracked.env}
            record = dataclasses.replace(record, tracking_run_id=tracked.run_id)
    log = None
    if capture:
        (exp_dir / LOG_DIR).mkdir(exist_ok=True)
        log = open(exp_dir / log_rel, "w", buffering=1)  # one file per run, replaced by a rerun
        log.write(f"# {shlex.join(cmd)}\n# cwd {exp_dir}\n# started {record.started} on {record.host}\n")
    else:
        print(f"# {shlex.join(cmd)}", flush=True)  # the task's log says what ran, as a local run's log does
    write_status(exp_dir, record, evaluation=evaluation_of)
    if not evaluation_of:
        record_metadata(mapping, run, record)  # a failure here shows again, as a warning, when the run ends
    try:
        proc = subprocess.Popen(
            cmd, cwd=exp_dir, stdin=subprocess.DEVNULL, env=env,
            stdout=log if log else None, stderr=subprocess.STDOUT if log else None,
            start_new_session=True,  # Ctrl-C reaches us, not the child: we stop it and record it
        )
    except OSError as e:
        # The command itself could not start (tune missing?): a failed run, not a crash of the runner.
        record = dataclasses.replace(record, state=State.FAILED, exit_code=127, ended=now_iso())
        if log:
            log.write(f"# could not start {cmd[0]}: {e}\n")
            log.close()
        write_status(exp_dir, record, evaluation=evaluation_of)
        hint = ("is SLURM's srun on the PATH of the job's first node?" if cmd[0] == "srun"
                else f"is torchtune installed in {sys.prefix}?")
        raise ConfigWriterError(f"{rid}: could not start `{shlex.join(cmd)}`: {e}; {hint}") from None
    return _Child(exp_dir, mapping, run, proc, record, log, evaluation=evaluation_of)


class _Signals:
    """While active, SIGINT, SIGTERM (``scancel``) and SIGHUP raise ``_Interrupted`` in the main thread.

    Inside ``with signals.held():`` (starting a child, recording a status) a
    signal is held back and raised when the block ends, so that a run is never
    started without being tracked, nor its status written halfway through.
    Outside the main thread, where handlers cannot be installed, it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, extra: tuple[int, ...] = ()) -> None:
        self.signals = self.SIGNALS + tuple(extra)  # SIGUSR1 in a SLURM task: its time limit is near
        self._old: dict[int, Any] = {}
        self._holding = False
        self._pending: int | None = None

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in self.signals}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._holding:
            self._pending = self._pending or signum
        else:
            raise _Interrupted(signum)

    def hold_from_now(self) -> None:
        """Hold back every further signal (while cleaning up after one: a second Ctrl-C must not
        interrupt the cleanup and leave runs `running`; the cleanup ends within the kill grace)."""
        self._holding = True

    @contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            signum, self._pending = self._pending, None
            raise _Interrupted(signum)


# ----------------------------------------------------------------------------- public API


def run_one(exp_dir: str | Path, index: int | str, *, nproc_per_node: int | str | None = None,
            capture_output: bool | None = None, force: bool = False) -> int:
    """Run one run of an experiment directory and return its exit code.

    Refuses (``RunNotRunnableError``) a run whose validation did not pass, whose
    config was edited after validation, or — unless ``force`` — that already
    completed (training it again would overwrite its checkpoints and logs). Output goes to ``logs/run_NNN.log``;
    inside a SLURM job (``$SLURM_JOB_ID`` set) it goes to the task's own stdout
    (SLURM's ``logs/%A_%a.out``) unless ``capture_output=True``. On SIGINT,
    SIGTERM (``scancel``) or SIGHUP the child is stopped, the run recorded
    ``cancelled``, and 128 + the signal number returned.

    >>> run_one("outputs/tiny_rank_lr", 3)      # doctest: +SKIP
    0
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    run = find_run(mapping, index)
    check_runnable(exp, run)
    record = read_status(exp, run.run_id)
    if record.state == State.COMPLETED and not force:
        raise RunNotRunnableError(
            f"{run.run_id} already completed (ended {record.ended}); its checkpoints and logs are kept. "
            "To train it again, use --force (run or submit)."
        )
    resume = requeue.plan_start(mapping, run, record)  # a requeued task resumes from its saved epoch (J.4)
    return _run_to_end(exp, mapping, run, capture_output, nproc_per_node=nproc_per_node, resume=resume)


def run_eval_one(exp_dir: str | Path, index: int | str, *, force: bool = False,
                 capture_output: bool | None = None) -> int:
    """Evaluate one run (by index or run id) whose training completed; return the evaluation's exit code.

    Refuses (``RunNotRunnableError``, saying why) a run without evaluations, one whose training did not
    complete, or whose evaluation configs changed since validation. Evaluations that already have a
    result are not repeated unless ``force``. Records ``status/eval/run_NNN.json``; output goes to
    ``logs/run_NNN.eval.log`` (inside SLURM, the task's own log). What each SLURM evaluation task runs.

    >>> run_eval_one("outputs/tiny_rank_lr", 3)      # doctest: +SKIP
    0
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    run = find_run(mapping, index)
    evaluation.check_evaluable(exp, run)
    return _run_to_end(exp, mapping, run, capture_output, evaluation_of=True, force=force)


def _run_to_end(exp: Path, mapping: RunMapping, run: RunEntry, capture_output: bool | None, **start: Any) -> int:
    """Start one child (a training or an evaluation), wait for it and record it; on a signal stop it and record that."""
    capture = capture_output if capture_output is not None else "SLURM_JOB_ID" not in os.environ
    child = None
    warned = not start.get("evaluation_of") and requeue.applies()
    with _Signals(extra=(signal.SIGUSR1,) if warned else ()) as signals:
        try:
            with signals.held():
                child = _start(exp, mapping, run, capture=capture, **start)
            while child.proc.poll() is None:
                try:
                    child.proc.wait()
                except _Interrupted as e:
                    if e.signum != signal.SIGUSR1:
                        raise
                    # SLURM's warning before the time limit: requeue the task, or run on into the limit
                    with signals.held():
                        go, why = requeue.decide(mapping, run, child.record)
                        if not go:
                            child.record = requeue.note_not_requeued(exp, child.record, why)
                    if go:
                        signals.hold_from_now()  # requeueing makes SLURM SIGTERM this process
                        kill_group(child.proc)
                        child.done = True
                        requeue.requeue_task(exp, child.record, why, _exit_code(child.proc.wait()))
                        return 128 + int(signal.SIGUSR1)
            with signals.held():
                child.finish()
            for warning in child.warnings:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            return child.record.exit_code
        except (KeyboardInterrupt, _Interrupted) as e:
            signals.hold_from_now()
            if child is not None and not child.done:
                child.stop()
            return 128 + _signum(e)


def _signum(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, _Interrupted) else int(signal.SIGINT)


@dataclass
class RunSummary:
    """What ``run_experiment`` did; ``exit_code`` is 0 only when no run (nor evaluation) failed or was cancelled."""

    total: int
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Selected but not run: already completed (or running elsewhere)."""
    evaluated: list[str] = field(default_factory=list)
    """Runs whose evaluation completed."""
    eval_failed: list[str] = field(default_factory=list)
    """Runs whose evaluation failed or was cancelled."""
    retried: list[str] = field(default_factory=list)
    """Runs (once per retry) whose attempt ran out of memory and whose next attempt was started."""
    interrupted_by: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return 128 + self.interrupted_by
        return 1 if (self.failed or self.cancelled or self.eval_failed) else 0


def plan_runs(exp_dir: str | Path, runs: str | Iterable[int] | None = None, *, rerun_failed: bool = False,
              force: bool = False, mapping: RunMapping | None = None) -> tuple[list[RunEntry], dict[str, str]]:
    """Which selected runs to start, and why each of the others is skipped (run id -> reason).

    Completed runs are skipped unless ``force``; ``rerun_failed`` keeps only
    failed and cancelled runs; a run marked ``running`` is skipped unless
    ``force`` (another process may be running it).
    """
    exp = Path(exp_dir)
    mapping = mapping or load_mapping(exp)
    states = read_all(exp, mapping)
    todo, skipped = [], {}
    for run in select_runs(mapping, runs):
        rec = states[run.run_id]
        if rerun_failed and rec.state not in (State.FAILED, State.CANCELLED):
            skipped[run.run_id] = f"{rec.state}, and only failed or cancelled runs are rerun"
        elif rec.state == State.COMPLETED and not force:
            skipped[run.run_id] = "already completed (--force runs it again)"
        elif rec.state == State.RUNNING and not force:
            skipped[run.run_id] = (
                f"marked running on {rec.host} since {rec.started}; if no process runs it any more, use --force"
            )
        else:
            todo.append(run)
    return todo, skipped


def plan_evaluations(exp_dir: str | Path, runs: str | Iterable[int] | None = None, *, force: bool = False,
                     mapping: RunMapping | None = None) -> tuple[list[RunEntry], dict[str, str]]:
    """Which selected runs ``run --eval-only`` evaluates, and why each of the others is not (run id -> reason).

    A run is evaluated when its training completed and some evaluation has no result yet (every
    evaluation again with ``force``). Raises ``RunNotRunnableError`` when the experiment evaluates nothing.
    """
    exp = Path(exp_dir)
    mapping = mapping or load_mapping(exp)
    if not any(r.evaluations for r in mapping.runs):
        raise RunNotRunnableError("this experiment evaluates nothing: add an evaluation: section to the experiment "
                                  "file and generate it again (into a new directory if its runs have trained)")
    todo, skipped = [], {}
    for run in select_runs(mapping, runs):
        try:
            evaluation.check_evaluable(exp, run)
        except RunNotRunnableError as e:
            skipped[run.run_id] = str(e).removeprefix(f"{run.run_id} ").removeprefix(f"{run.run_id}: ")
            continue
        if evaluation.needs_evaluation(exp, run, force=force):
            todo.append(run)
        else:
            skipped[run.run_id] = "already evaluated (--force evaluates it again)"
    return todo, skipped


def run_experiment(exp_dir: str | Path, runs: str | Iterable[int] | None = None, parallel: int = 1,
                   rerun_failed: bool = False, force: bool = False, eval_only: bool = False,
                   echo: Callable[[str], None] | None = None) -> RunSummary:
    """Run the selected runs locally, ``parallel`` at a time, evaluate each right after it completes,
    and return a summary.

    Every run to start is checked first (``check_runnable``): if any may not
    run, nothing starts and ``RunNotRunnableError`` lists them all. A run that
    fails is not evaluated (its line says so). ``eval_only`` trains nothing: it
    evaluates the selected runs whose training completed. On Ctrl-C or SIGTERM
    the running children are stopped and recorded ``cancelled``; runs not
    started keep their status. Progress lines go to ``echo`` (default print).

    >>> run_experiment("outputs/tiny_rank_lr", runs="0-1", parallel=2).completed   # doctest: +SKIP
    ['run_000', 'run_001']
    """
    say = echo or (lambda line: print(line, flush=True))
    if parallel < 1:
        raise ConfigWriterError(f"--parallel must be at least 1, got {parallel}")
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    if eval_only:
        todo, skipped = plan_evaluations(exp, runs, force=force, mapping=mapping)
    else:
        todo, skipped = plan_runs(exp, runs, rerun_failed=rerun_failed, force=force, mapping=mapping)
        check_all_runnable(exp, todo, "so none was started")
    if mapping.tracking is not None and todo and not eval_only:
        tracking.check_reachable(mapping.tracking)  # once, before anything starts
    summary = RunSummary(total=len(todo), skipped=list(skipped))
    for rid, why in skipped.items():
        say(f"skip {rid}: {why}")
    if not todo:
        say("nothing to evaluate" if eval_only else "nothing to run")
        return summary
    evaluated = any(r.evaluations for r in todo)
    say(f"{'evaluating' if eval_only else 'running'} {len(todo)} run(s) of {mapping.experiment_name}, "
        f"{parallel} at a time" + (", each evaluated when it completes" if evaluated and not eval_only else "")
        + f"; logs in {exp / LOG_DIR}")
    env = _thread_env(parallel)
    # (run, evaluate?) in order; a completed training puts its evaluation first, so results come early
    queue: list[tuple[RunEntry, bool]] = [(r, eval_only) for r in todo]
    active: list[_Child] = []
    with _Signals() as signals:
        try:
            while queue or active:
                while queue and len(active) < parallel:
                    with signals.held():
                        run, is_eval = queue.pop(0)
                        active.append(_start(exp, mapping, run, capture=True, env=env, evaluation_of=is_eval,
                                             force=force and eval_only))
                    say(f"  {'evaluating' if is_eval else 'started'} {run.run_id}  "
                        + (f"({len(run.evaluations)} evaluation(s))" if is_eval
                           else format_parameters(run.parameters, sep=' ')))
                for child in [c for c in active if c.proc.poll() is not None]:
                    retry_lines: list[str] = []
                    with signals.held():
                        state = child.finish()
                        active.remove(child)
                        # out of memory, with oom_retry: the run's next attempt starts next (oom.py)
                        again = oom.retry_locally(exp, mapping, child.run, child.record, retry_lines.append) \
                            if not child.evaluation and state == State.FAILED else None
                        if again is None:
                            _count(summary, child, state)
                        else:
                            summary.retried.append(child.run_id)
                            queue.insert(0, (again, False))
                        if not child.evaluation and state == State.COMPLETED and child.run.evaluations:
                            queue.insert(0, (child.run, True))
                    say(_progress(exp, summary, child, len(todo)))
                    for line in retry_lines:
                        say(line)
                time.sleep(_POLL_S)
        except BaseException as e:
            # Whatever stopped the loop, no child outlives it and no run stays `running`.
            signals.hold_from_now()
            interrupted = isinstance(e, (KeyboardInterrupt, _Interrupted))
            if interrupted:
                summary.interrupted_by = _signum(e)
                say(f"\ninterrupted by {signal.Signals(summary.interrupted_by).name}: stopping {len(active)} run(s)")
            for child in active:
                if not child.done:
                    _count(summary, child, child.stop())
            summary.not_started = [r.run_id for r, is_eval in queue if is_eval == eval_only]
            if not interrupted:
                raise
    say(_summary_line(summary, eval_only))
    return summary


def _count(summary: RunSummary, child: _Child, state: State) -> None:
    if child.evaluation:
        (summary.evaluated if state == State.COMPLETED else summary.eval_failed).append(child.run_id)
    else:
        getattr(summary, state.value).append(child.run_id)


def _progress(exp: Path, summary: RunSummary, child: _Child, total: int) -> str:
    """The line printed when a child ends: training state or evaluation metrics, and why it failed."""
    rid, state = child.run_id, child.record.state
    if child.evaluation:
        line = f"  {rid} evaluated in {child.elapsed:.1f} s: {evaluation.summary_line(child.run) or 'no metrics'}" \
            if state == State.COMPLETED else f"  {rid} evaluation {state} in {child.elapsed:.1f} s" + _why(exp, child)
    else:
        done = len(summary.completed) + len(summary.failed)
        line = f"[{done}/{total}] {rid} {state} in {child.elapsed:.1f} s" + _why(exp, child)
        if state != State.COMPLETED and child.run.evaluations:
            line += "; not evaluated (its training did not complete)"
    return line + "".join(f"\n  warning: {w}" for w in child.warnings)


def _thread_env(parallel: int) -> dict[str, str] | None:
    """The children's environment: with several runs at once, each gets its share of the cores.

    torch uses every core in each process by default; N runs on one machine then
    oversubscribe it and (measured, tiny model, 2 cores) run slower together than
    one after another. An OMP_NUM_THREADS set by the user is kept.
    """
    if parallel <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}


def _why(exp: Path, child: _Child) -> str:
    """For a failed run: its exit code, log and last log line (usually the exception)."""
    record = child.record
    if record.state != State.FAILED:
        return ""
    last = ""
    try:
        lines = [ln for ln in (exp / str(record.log)).read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("# ")]
        last = f": {lines[-1].strip()[:200]}" if lines else ""
    except OSError:
        pass
    return f" (exit {record.exit_code}, see {record.log}){last}"


def _summary_line(s: RunSummary, eval_only: bool = False) -> str:
    parts = [] if eval_only else [f"{len(s.completed)} completed", f"{len(s.failed)} failed"]
    if s.evaluated or s.eval_failed:
        parts.append(f"{len(s.evaluated)} evaluated" + (f", {len(s.eval_failed)} evaluation(s) failed" if s.eval_failed else ""))
    if s.retried:
        parts.append(f"{len(s.retried)} retried after running out of memory")
    if s.cancelled:
        parts.append(f"{len(s.cancelled)} cancelled")
    if s.not_started:
        parts.append(f"{len(s.not_started)} not started (still {State.PENDING} or as before)")
    if s.skipped:
        parts.append(f"{len(s.skipped)} skipped")
    line = "summary: " + ", ".join(parts)
    if s.failed:
        line += f"\nfailed: {', '.join(s.failed)}; after fixing the cause, rerun them with --rerun-failed"
    if s.eval_failed:
        line += (f"\nevaluation failed: {', '.join(s.eval_failed)} (see logs/<run>.eval.log); after fixing the cause, "
                 "evaluate them again with --eval-only (their training is kept)")
    return line
