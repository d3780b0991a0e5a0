"""Submit an experiment directory's runs as SLURM job arrays of its ``submit.sbatch`` (and ``eval.sbatch``).

``submit`` checks the selected runs, splits them into arrays
(``expdir.plan_arrays``) and appends each array's job id to ``slurm_jobs.yaml``
under the experiment's submission lock. When the runs are evaluated, every
training array is followed by an evaluation array with the same task ids whose
task i waits for training task i to complete (``--dependency=aftercorr``), so
the evaluation of early runs overlaps the training of later ones; SLURM cancels
the evaluation of a training task that failed (``--kill-on-invalid-dep=yes``,
reason DependencyNeverSatisfied). Its settings (max_concurrent, max_array_size)
come from run_mapping.yaml. It reads only the experiment directory (Appendix B)
and runs only the SLURM client tools; a dry run needs no cluster at all.

    >>> [a.job_id for a in submit(exp_dir, runs="0-3")]                               # doctest: +SKIP
    ['41', '42']
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ExperimentDirError, SlurmError
from ..expdir import (
    EVAL_JOB, EVAL_SCRIPT_FILE, FORCE_ENV, LOG_DIR, TRAIN_JOB, SCRIPT_FILE, SLURM_LOG_PATTERN, ArrayChunk, JobRecord, RunEntry,
    RunMapping, SlurmState, State, append_job, compress_ranges, jobs_lock, load_mapping, now_iso, plan_arrays,
    script_groups,
)
from . import evaluation, feed, oom, tracking, walltime
from .selection import check_all_runnable, select_runs
from .slurm_state import RESUBMIT_STATES, RunState, cluster_config, run_states

#: Seconds one sbatch call may take. sbatch retries by itself while the controller is busy or its job
#: table is full (MaxJobCount, every array task counted), which can last for ever.
SBATCH_TIMEOUT = 120


@dataclass(frozen=True)
class SubmittedArray:
    """One ``sbatch`` call of ``submit``; ``job_id`` is None on a dry run."""

    command: list[str]
    chunk: ArrayChunk
    array: str
    """The ``--array`` value."""
    job_id: str | None = None
    kind: str = TRAIN_JOB
    """``train``, or ``eval`` for an array of ``eval.sbatch``."""
    after: str | None = None
    """For an evaluation array: the training array whose tasks its tasks follow (a placeholder on a dry run)."""


@dataclass(frozen=True)
class PlannedArray:
    """One array ``submit`` will submit, before it has a job id."""

    kind: str
    script: Path
    chunk: ArrayChunk
    follows: int | None = None
    """For an evaluation array: the position (in the plan) of the training array whose tasks it follows."""
    force: bool = False
    """Export ``FORCE_ENV=1`` to its tasks: they may train, or evaluate, a completed run again."""
    time: str | None = None
    """``--time`` for its tasks (``slurm.time: auto`` or ``submit --time``); None: the script's own."""


def cluster_max_array_size() -> int | None:
    """MaxArraySize of the cluster (``scontrol show config``), or None when it cannot be asked."""
    out = cluster_config()
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE) if out else None
    return int(m.group(1)) if m else None


def select_for_submit(mapping: RunMapping, states: list[RunState], runs: str | None,
                      failed: bool, force: bool = False) -> tuple[list[RunEntry], list[str]]:
    """The runs to train, and the completed ones left out.

    ``runs`` is a --runs SPEC (None = all); ``failed`` keeps only failed/cancelled
    ones; completed runs are left out unless ``force`` (a rerun overwrites them).
    """
    by_id = {s.run_id: s.state for s in states}
    selected = select_runs(mapping, runs)
    if failed:
        selected = [r for r in selected if by_id[r.run_id] in RESUBMIT_STATES]
    completed = [] if force else [r.run_id for r in selected if by_id[r.run_id] == State.COMPLETED]
    skip = set(completed)  # a set: 10,000 runs against 10,000 completed ones would be 10^8 comparisons
    return [r for r in selected if r.run_id not in skip], completed


def select_evaluations(mapping: RunMapping, states: list[RunState], runs: str | None, *, failed: bool,
                       force: bool = False) -> tuple[list[RunEntry], list[str], list[str]]:
    """The runs to evaluate without training them, and (run ids) the untrained and the evaluated ones left out.

    Only runs whose training completed can be evaluated alone. ``failed`` keeps the
    evaluations that failed, were cancelled, or were skipped because an earlier training
    failed; otherwise every evaluation that did not complete (all of them with ``force``).

    >>> picked, untrained, evaluated = select_evaluations(mapping, states, None, failed=True)   # doctest: +SKIP
    """
    by_index = {s.index: s for s in states}
    picked, untrained, evaluated = [], [], []
    for run in select_runs(mapping, runs):
        state = by_index[run.index]
        ev = state.evaluation
        if not run.evaluations or ev is None:
            continue
        if failed and not ev.resubmit:
            continue
        if state.state != State.COMPLETED:
            untrained.append(run.run_id)
        elif ev.state == State.COMPLETED and not force:
            evaluated.append(run.run_id)
        else:
            picked.append(run)
    return picked, untrained, evaluated


def check_log_dir(exp: Path) -> None:
    """Refuse an experiment directory SLURM cannot write task logs under (``logs/%A_%a.out`` in it)."""
    text = str(exp)
    for c, why in (("%", "expands % patterns"), ("\\", "drops backslashes and then ignores %A_%a")):
        if c in text:
            raise SlurmError(
                f"the experiment directory {text!r} contains {c!r}: SLURM {why} in the task log path "
                f"({SLURM_LOG_PATTERN} under it); move it, or generate it again into a directory "
                "(output.experiment_dir) without that character"
            )
    if any(not c.isprintable() for c in text):
        raise SlurmError(f"the experiment directory {text!r} contains a control character; sbatch cannot take it")


def _refuse_unsubmittable(exp: Path, train: list[RunEntry], evaluate: list[RunEntry], states: list[RunState],
                          retry: bool = False) -> None:
    """Raise, naming every offender, unless all selected runs are runnable and none is queued or running
    (neither the training of ``train`` nor the evaluation of any run to be evaluated). With ``retry`` (a
    task resubmitting its own failed run) the evaluations of ``train`` are not counted: each waits for the
    failed training task, so SLURM cancels it."""
    check_all_runnable(exp, [*train, *evaluate], "so nothing was submitted")
    training = {r.index for r in train}
    evaluations = {r.index for r in evaluate} | {r.index for r in train if r.evaluations}
    busy = [f"{s.run_id} ({s.state}{', job ' + s.job if s.job else ''})" for s in states if s.index in training
            and (s.state == State.RUNNING or (isinstance(s.state, SlurmState) and s.state.active))]
    busy += [f"the evaluation of {s.run_id} ({s.evaluation.state}{', job ' + s.evaluation.job if s.evaluation.job else ''})"
             for s in states if s.index in evaluations and s.evaluation is not None and s.evaluation.active
             and not (retry and s.index in training)]
    if busy:
        raise SlurmError(
            "already queued or running, so nothing was submitted: " + ", ".join(busy)
            + "; wait for them, `scancel` them, or leave them out with --runs (a run recorded 'running' that "
            "no process runs any more: delete its status/run_NNN.json, or status/eval/run_NNN.json)"
        )


def _check_eval_configs(exp: Path, runs: Iterable[RunEntry]) -> None:
    """Refuse evaluations whose configs are missing or changed: their tasks would wait in the queue only to fail."""
    problems = [p for run in runs for p in evaluation.config_problems(exp, run)]
    if problems:
        raise ExperimentDirError(
            f"{len(problems)} evaluation config(s) cannot be used, so nothing was submitted: {'; '.join(problems[:5])}"
            f"{'; ...' if len(problems) > 5 else ''}"
        )


def submit(exp_dir: str | Path, runs: str | None = None, *, failed: bool = False, eval_only: bool = False,
           dry_run: bool = False, force: bool = False, echo: Callable[[str], None] = print,
           note: Callable[[str], None] = lambda line: None, time: str | None = None,
           evidence: Iterable[str | Path] = (), retry_oom: bool = False, retry: bool = False) -> list[SubmittedArray]:
    """Submit the selected runs of an experiment directory as job array(s) of its ``submit.sbatch``
    (and ``submit_1.sbatch``... for runs that ask for other resources: one array per script at least),
    each followed by an evaluation array of ``eval.sbatch`` when its runs are evaluated.

    Every selected run must be runnable (validation passed, config unchanged) and
    not already queued or running; otherwise nothing is submitted. Completed
    runs are left out unless ``force`` (then their tasks train them again). ``failed``
    trains (and evaluates) again the runs whose training failed, and only evaluates
    again those whose training completed but whose evaluation failed, was cancelled
    or skipped. ``eval_only`` submits evaluation arrays alone, for runs whose training
    completed and whose evaluation did not (all of them with ``force``). Sweeps over
    MaxArraySize become several arrays (the offset is the script's argument);
    with ``max_concurrent`` each waits for the previous one of its kind so that at most K
    runs ever train (and K evaluate) at once. Job ids are appended to ``slurm_jobs.yaml``.
    ``echo`` gets the progress (on a dry run, the sbatch commands); ``note``
    what a dry run assumed instead of asking the cluster. ``time`` is the training tasks' ``--time`` for this
    submission; with ``slurm.time: auto`` (and no ``time``) each run's limit is estimated from completed runs
    found in this experiment, its sibling directories and ``evidence`` (``walltime.plan_limits``).
    ``retry_oom``: only the selected runs whose latest attempt ran out of memory, each with its next
    attempt written first (``oom.prepare_retries``; with ``failed``, the other failed runs too). ``retry``:
    a task resubmitting its own failed run (its evaluation task, which SLURM cancels, is not in the way).

    >>> [(a.kind, a.job_id) for a in submit("outputs/demo", failed=True)]      # doctest: +SKIP
    [('train', '57'), ('eval', '58'), ('eval', '59')]
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    groups = script_groups(mapping)
    eval_groups = script_groups(mapping, evaluation=True)
    if eval_only and not eval_groups:
        raise SlurmError("no run of this experiment is evaluated (its experiment file has no evaluation: section), "
                         "so --eval-only has nothing to submit")
    for group in ([] if eval_only else groups) + eval_groups:
        if not (exp / group.script).is_file():
            raise ExperimentDirError(f"{exp / group.script} is missing; generate the experiment again to write it")
    if not (runs or failed or eval_only or force or retry_oom or retry):
        resumed = feed.resume(exp, mapping, dry_run=dry_run, echo=echo)  # the runs queued under slurm.max_submit
        if resumed is not None:
            return resumed
    # Under the lock, two submits neither lose each other's job ids nor both submit the same runs.
    with contextlib.nullcontext() if dry_run else jobs_lock(exp):
        states = run_states(exp, mapping, strict=not dry_run)  # squeue down: refuse rather than submit twice
        if retry_oom:  # each run whose latest attempt ran out of memory gets its next attempt (oom.py)
            runs, mapping = oom.prepare_retries(exp, mapping, states, runs, failed=failed, dry_run=dry_run, echo=echo)
            if runs is None:
                return []
        train, evaluate = _select(mapping, states, runs, failed=failed, eval_only=eval_only, force=force, echo=echo)
        if not train and not evaluate:
            echo("no failed or cancelled runs or evaluations: nothing to submit" if failed
                 else "no evaluations to submit" if eval_only else "no runs selected: nothing to submit")
            return []
        _refuse_unsubmittable(exp, train, evaluate, states, retry=retry)
        feed.refuse_queued(exp, train, evaluate)
        _check_eval_configs(exp, [*(r for r in train if r.evaluations), *evaluate])
        limits = walltime.plan_limits(exp, mapping, train, evidence=evidence, override=time)
        sbatch = shutil.which("sbatch")
        if not sbatch and not dry_run:
            raise SlurmError("sbatch is not on PATH: submit from a SLURM login node (or run the runs here with "
                             "`torchtune-config-writer run`)")
        check_log_dir(exp)
        if mapping.tracking is not None and train and not dry_run:
            # once, here: a dead server fails the submission, not every task; and a new sqlite store is
            # created now rather than by many tasks starting at the same moment
            tracking.check_reachable(mapping.tracking)
        size = array_size(mapping, ask_cluster=not dry_run)
        if dry_run:
            note(f"(dry run: nothing submitted; arrays of at most {size} tasks, from slurm.max_array_size; "
                 "a real submit also obeys the cluster's MaxArraySize)")
        plan = plan_submission(exp, mapping, train, evaluate, size, force=force, limits=limits.limits)
        for line in limits.lines:
            echo(line)
        if not dry_run:
            (exp / LOG_DIR).mkdir(exist_ok=True)  # SLURM does not create the directory of --output
        capped = feed.submit_capped(exp, mapping, train, evaluate, force=force, times=limits.limits,
                                    dry_run=dry_run, echo=echo, note=note)
        if capped is None:  # no submit limit (slurm.max_submit, sacctmgr), or all of it fits under the limit now
            # a task resubmitting its run (retry): sbatch without that task's own SLURM_* variables
            env = feed.task_env(os.environ) if retry else None
            return _submit_plan(exp, mapping, plan, sbatch or "sbatch", dry_run=dry_run, echo=echo, env=env)
    return feed.settle(exp, capped, echo=echo)  # outside the lock: it may wait for room (feed.py)


def _select(mapping: RunMapping, states: list[RunState], runs: str | None, *, failed: bool, eval_only: bool,
            force: bool, echo: Callable[[str], None]) -> tuple[list[RunEntry], list[RunEntry]]:
    """(runs to train, and evaluate when evaluated; runs only to evaluate), saying what was left out and why."""
    train: list[RunEntry] = []
    if not eval_only:
        train, completed = select_for_submit(mapping, states, runs, failed, force)
        if completed:
            echo(f"skip {len(completed)} completed run(s) ({_ids(completed)}); --force submits them again")
            if not failed:  # (--failed evaluates them itself)
                _hint_evaluations(completed, states, echo)
    evaluate: list[RunEntry] = []
    if eval_only or failed:
        evaluate, untrained, evaluated = select_evaluations(mapping, states, runs, failed=failed, force=force)
        if eval_only and untrained:
            echo(f"skip {len(untrained)} run(s) whose training has not completed ({_ids(untrained)}); "
                 f"`submit{' --failed' if failed else ''}` trains and evaluates them")
        if evaluated:
            echo(f"skip {len(evaluated)} evaluated run(s) ({_ids(evaluated)}); --force evaluates them again")
    return train, evaluate


def _hint_evaluations(completed: list[str], states: list[RunState], echo: Callable[[str], None]) -> None:
    """Say which skipped (trained) runs still wait for an evaluation, and what submits it."""
    by_id = {s.run_id: s.evaluation for s in states}
    pending = [rid for rid in completed if by_id[rid] is not None and by_id[rid].state == State.PENDING
               and not by_id[rid].skipped]
    failed = [rid for rid in completed if by_id[rid] is not None and by_id[rid].resubmit]
    if pending:
        echo(f"{len(pending)} of them not evaluated yet ({_ids(pending)}): --eval-only evaluates them")
    if failed:
        echo(f"{len(failed)} of them with a failed evaluation ({_ids(failed)}): --failed evaluates them again")


def _ids(run_ids: list[str]) -> str:
    return ", ".join(run_ids[:5]) + (", ..." if len(run_ids) > 5 else "")


def plan_submission(exp: Path, mapping: RunMapping, train: list[RunEntry], evaluate: list[RunEntry], size: int, *,
                    force: bool = False, limits: dict[int, str | None] | None = None) -> list[PlannedArray]:
    """The arrays to submit, in order: each training array, then right after it the evaluation
    array of its evaluated runs (same task ids and offset, so that task i follows task i);
    then the evaluation-only arrays of ``evaluate``. ``force`` goes to every array. ``limits`` (run index ->
    ``--time``) splits training arrays so that each has one limit (``walltime.plan_limits``).

    (A retrained run needs no ``force`` to be evaluated again: its evaluation drops
    results older than its latest training.)

    >>> [(p.kind, p.chunk.spec(), p.follows) for p in plan_submission(exp, mapping, runs, [], 1001)]  # doctest: +SKIP
    [('train', '0-2', None), ('eval', '0-2', 0)]
    """
    eval_script = {i: exp / g.script for g in script_groups(mapping, evaluation=True) for i in g.indices}
    wanted = {r.index for r in train}
    plan: list[PlannedArray] = []
    for group in script_groups(mapping):  # runs asking for other resources go in arrays of their own script
        for chunk in walltime.split_by_limit(plan_arrays((i for i in group.indices if i in wanted), size), limits or {}):
            plan.append(PlannedArray(TRAIN_JOB, exp / group.script, chunk, force=force,
                                     time=(limits or {}).get(chunk.indices[0])))
            follows = len(plan) - 1
            by_script: dict[Path, list[int]] = {}
            for i in chunk.indices:
                if i in eval_script:
                    by_script.setdefault(eval_script[i], []).append(i)
            for script, indices in by_script.items():
                plan.append(PlannedArray(EVAL_JOB, script, ArrayChunk(chunk.offset, tuple(i - chunk.offset for i in indices)),
                                         follows, force=force))
    alone = {r.index for r in evaluate}
    for group in script_groups(mapping, evaluation=True):
        for chunk in plan_arrays((i for i in group.indices if i in alone), size):
            plan.append(PlannedArray(EVAL_JOB, exp / group.script, chunk, force=force))
    return plan


def sbatch_command(sbatch: str, exp: Path, item: PlannedArray, array: str, *, previous: str | None = None,
                   training: str | None = None) -> list[str]:
    """The sbatch command line of one planned array.

    ``previous``: the job id of the previous array of the same kind, which this one waits
    for (``afterany``: separate arrays each have their own %K; chaining keeps the total at K).
    ``training``: for an evaluation array following a training array, that array's job id.

    >>> item = PlannedArray("eval", Path("/e/eval.sbatch"), ArrayChunk(0, (0, 1)), follows=0)
    >>> shlex.join(sbatch_command("sbatch", Path("/e"), item, "0-1", training="41"))
    'sbatch --parsable --array=0-1 --chdir=/e --dependency=aftercorr:41 --kill-on-invalid-dep=yes /e/eval.sbatch 0'
    """
    cmd = [sbatch, "--parsable", f"--array={array}", f"--chdir={exp}"]
    if item.time:
        cmd.append(f"--time={item.time}")  # the command line overrides the script's #SBATCH --time
    if item.force:
        cmd.append(f"--export=ALL,{FORCE_ENV}=1")  # the task may then train (or evaluate) a completed run again
    after = ([f"aftercorr:{training}"] if training else []) + ([f"afterany:{previous}"] if previous else [])
    if after:
        cmd.append("--dependency=" + ",".join(after))  # a comma: every one of them must be met
    if training:
        # aftercorr alone leaves the evaluation of a failed training task pending forever
        # (DependencyNeverSatisfied); with this SLURM cancels that task and no other.
        cmd.append("--kill-on-invalid-dep=yes")
    return cmd + [str(item.script), str(item.chunk.offset)]


def array_size(mapping: RunMapping, *, ask_cluster: bool = True) -> int:
    """The largest array to submit: the experiment's max_array_size, or the cluster's MaxArraySize if smaller.

    A dry run does not ask (``ask_cluster=False``): it must not need a cluster, and
    scontrol waits ~9 s for a controller that does not answer.
    """
    size = mapping.slurm.max_array_size
    if not ask_cluster:
        return size
    cluster_size = cluster_max_array_size()
    return min(size, cluster_size) if cluster_size else size  # the cluster's own limit wins


def _max_concurrent(mapping: RunMapping, kind: str) -> int | None:
    """K of ``--array=...%K``: the training one, or for evaluations ``evaluation.slurm``'s where it sets one."""
    if kind == EVAL_JOB:
        groups = script_groups(mapping, evaluation=True)
        return groups[0].resources.max_concurrent if groups else None
    return mapping.slurm.max_concurrent


def _submit_plan(exp: Path, mapping: RunMapping, plan: list[PlannedArray], sbatch: str, *,
                 dry_run: bool, echo: Callable[[str], None], env: dict[str, str] | None = None) -> list[SubmittedArray]:
    done: list[SubmittedArray] = []
    last: dict[str, str] = {}  # kind -> job id of the latest array of that kind
    numbers = {n: sum(1 for p in plan[:n + 1] if p.kind == TRAIN_JOB) for n, p in enumerate(plan) if p.kind == TRAIN_JOB}
    for n, item in enumerate(plan):
        k = _max_concurrent(mapping, item.kind)
        array = item.chunk.spec(k)
        previous = last.get(item.kind) if k else None
        training = None
        if item.follows is not None:
            training = done[item.follows].job_id or f"<job id of training array {numbers[item.follows]}>"
        cmd = sbatch_command(sbatch, exp, item, array, previous=previous, training=training)
        if dry_run:
            echo(shlex.join(cmd))
            last[item.kind] = "<job id of the previous " + ("evaluation array>" if item.kind == EVAL_JOB else "array>")
            done.append(SubmittedArray(cmd, item.chunk, array, kind=item.kind, after=training))
            continue
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=exp, timeout=SBATCH_TIMEOUT, env=env)
        except subprocess.TimeoutExpired as e:
            rest = sorted({i for p in plan[n:] if p.kind == TRAIN_JOB for i in p.chunk.indices})
            raise SlurmError(_sbatch_timeout(item, n, len(plan), e, done, rest)) from None
        if proc.returncode != 0:
            what = "evaluation array" if item.kind == EVAL_JOB else "array"
            hint = ""
            if item.follows is not None:
                hint = (f"; training array {training} was submitted without its evaluation: once it ends, "
                        "`submit --eval-only` evaluates its runs")
            raise SlurmError(f"sbatch refused {what} {n + 1} of {len(plan)} (runs "
                             f"{compress_ranges(item.chunk.indices)}): {proc.stderr.strip() or proc.stdout.strip()}"
                             + (f"; arrays already submitted: {', '.join(str(d.job_id) for d in done)}" if done else "")
                             + hint)
        item_done = SubmittedArray(cmd, item.chunk, array, proc.stdout.strip().split(";")[0], item.kind, training)
        append_job(exp, JobRecord(job_id=str(item_done.job_id),
                                  submitted=now_iso(), array=array,
                                  offset=item.chunk.offset, indices=item.chunk.indices, command=shlex.join(cmd),
                                  kind=item.kind))
        echo(_submitted_line(mapping, item, item_done))
        last[item.kind] = str(item_done.job_id)
        done.append(item_done)
    return done


def _sbatch_timeout(item: PlannedArray, n: int, total: int, e: subprocess.TimeoutExpired,
                    done: list[SubmittedArray], rest: list[int]) -> str:
    """The message for an sbatch that did not answer: what it last said, what may have been submitted, what to do."""
    said = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    said = said.strip().splitlines()[-1] if said.strip() else "nothing"
    return (f"sbatch did not answer within {SBATCH_TIMEOUT} s for array {n + 1} of {total} (runs "
            f"{compress_ranges(item.chunk.indices)}); it said: {said}. 'temporarily unable to accept job' means the "
            "controller is overloaded or its job table is full (MaxJobCount counts every queued array task: "
            "ask your administrators, or submit fewer runs at once with --runs or slurm.max_submit)"
            + (f"; arrays already submitted and recorded: {', '.join(str(d.job_id) for d in done)}" if done else "")
            + ". If `squeue --me` shows an array of this experiment that slurm_jobs.yaml does not list, scancel it "
            "before submitting again" + (f"; then `submit --runs {compress_ranges(rest)}` submits the runs not "
                                         "submitted" if done and rest else ""))


def _submitted_line(mapping: RunMapping, item: PlannedArray, done: SubmittedArray) -> str:
    chunk = item.chunk
    what = "evaluation array" if item.kind == EVAL_JOB else "job array"
    default = EVAL_SCRIPT_FILE if item.kind == EVAL_JOB else SCRIPT_FILE
    return (f"submitted {what} {done.job_id}: {len(chunk.task_ids)} run(s) "
            f"({_describe_runs(mapping, chunk.indices)}), --array={done.array}"
            + (f", offset {chunk.offset}" if chunk.offset else "")
            + (f", {item.script.name}" if item.script.name != default else "")
            + (f"; task i starts when task i of {done.after} completed" if done.after else ""))


def _describe_runs(mapping: RunMapping, indices: Iterable[int]) -> str:
    ids = sorted(indices)
    return mapping.run_id_of(ids[0]) if len(ids) == 1 else f"indices {compress_ranges(ids)}"
