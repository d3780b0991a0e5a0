"""Submit an experiment directory's runs as SLURM job arrays of its ``submit.sbatch``.

``submit`` checks the selected runs, splits them into arrays
(``expdir.plan_arrays``) and appends each array's job id to ``slurm_jobs.yaml``
under the experiment's submission lock. Its settings (max_concurrent,
max_array_size) come from run_mapping.yaml. It reads only the experiment
directory (Appendix B) and runs only the SLURM client tools; a dry run needs
no cluster at all.

    >>> [a.job_id for a in submit(exp_dir, runs="0-3")]                               # doctest: +SKIP
    ['41']
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ExperimentDirError, SlurmError
from ..expdir import (
    FORCE_ENV, LOG_DIR, SCRIPT_FILE, SLURM_LOG_PATTERN, ArrayChunk, JobRecord, RunEntry, RunMapping, SlurmState,
    State, append_job, compress_ranges, jobs_lock, load_mapping, plan_arrays, script_groups,
)
from .selection import check_all_runnable, select_runs
from .slurm_state import RESUBMIT_STATES, RunState, run_states


@dataclass(frozen=True)
class SubmittedArray:
    """One ``sbatch`` call of ``submit``; ``job_id`` is None on a dry run."""

    command: list[str]
    chunk: ArrayChunk
    array: str
    """The ``--array`` value."""
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


def select_for_submit(mapping: RunMapping, states: list[RunState], runs: str | None,
                      failed: bool, force: bool = False) -> tuple[list[RunEntry], list[str]]:
    """The runs to submit, and the completed ones left out.

    ``runs`` is a --runs SPEC (None = all); ``failed`` keeps only failed/cancelled
    ones; completed runs are left out unless ``force`` (a rerun overwrites them).
    """
    by_id = {s.run_id: s.state for s in states}
    selected = select_runs(mapping, runs)
    if failed:
        selected = [r for r in selected if by_id[r.run_id] in RESUBMIT_STATES]
    completed = [] if force else [r.run_id for r in selected if by_id[r.run_id] == State.COMPLETED]
    return [r for r in selected if r.run_id not in completed], completed


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


def _refuse_unsubmittable(exp: Path, selected: list[RunEntry], states: list[RunState]) -> None:
    """Raise, naming every offender, unless all selected runs are runnable and none is queued or running."""
    check_all_runnable(exp, selected, "so nothing was submitted")
    wanted = {r.index for r in selected}
    busy = [s for s in states if s.index in wanted
            and (s.state == State.RUNNING or (isinstance(s.state, SlurmState) and s.state.active))]
    if busy:
        raise SlurmError(
            "already queued or running, so nothing was submitted: "
            + ", ".join(f"{s.run_id} ({s.state}{', job ' + s.job if s.job else ''})" for s in busy)
            + "; wait for them, `scancel` them, or leave them out with --runs (a run recorded 'running' that "
            "no process runs any more: delete its status/run_NNN.json)"
        )


def submit(exp_dir: str | Path, runs: str | None = None, *, failed: bool = False, dry_run: bool = False,
           force: bool = False, echo: Callable[[str], None] = print,
           note: Callable[[str], None] = lambda line: None) -> list[SubmittedArray]:
    """Submit the selected runs of an experiment directory as job array(s) of its ``submit.sbatch``
    (and ``submit_1.sbatch``... for runs that ask for other resources: one array per script at least).

    Every selected run must be runnable (validation passed, config unchanged) and
    not already queued or running; otherwise nothing is submitted. Completed
    runs are left out unless ``force`` (then their tasks train them again). Sweeps over
    MaxArraySize become several arrays (the offset is the script's argument);
    with ``max_concurrent`` each waits for the previous one so that at most K
    runs ever run at once. Job ids are appended to ``slurm_jobs.yaml``.
    ``echo`` gets the progress (on a dry run, the sbatch commands); ``note``
    what a dry run assumed instead of asking the cluster.

    >>> [a.job_id for a in submit("outputs/demo", failed=True)]      # doctest: +SKIP
    ['57']
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    groups = script_groups(mapping)
    for group in groups:
        if not (exp / group.script).is_file():
            raise ExperimentDirError(f"{exp / group.script} is missing; generate the experiment again to write it")
    # Under the lock, two submits neither lose each other's job ids nor both submit the same runs.
    with contextlib.nullcontext() if dry_run else jobs_lock(exp):
        states = run_states(exp, mapping)
        selected, completed = select_for_submit(mapping, states, runs, failed, force)
        if completed:
            echo(f"skip {len(completed)} completed run(s) ({', '.join(completed[:5])}"
                 f"{', ...' if len(completed) > 5 else ''}); --force submits them again")
        if not selected:
            echo("no failed or cancelled runs: nothing to submit" if failed else "no runs selected: nothing to submit")
            return []
        _refuse_unsubmittable(exp, selected, states)
        sbatch = shutil.which("sbatch")
        if not sbatch and not dry_run:
            raise SlurmError("sbatch is not on PATH: submit from a SLURM login node (or run the runs here with "
                             "`torchtune-config-writer run`)")
        check_log_dir(exp)
        size = array_size(mapping, ask_cluster=not dry_run)
        if dry_run:
            note(f"(dry run: nothing submitted; arrays of at most {size} tasks, from slurm.max_array_size; "
                 "a real submit also obeys the cluster's MaxArraySize)")
        wanted = {r.index for r in selected}
        # runs asking for other resources go in arrays of their own script
        chunks = [(exp / g.script, chunk) for g in groups
                  for chunk in plan_arrays((i for i in g.indices if i in wanted), size)]
        if not dry_run:
            (exp / LOG_DIR).mkdir(exist_ok=True)  # SLURM does not create the directory of --output
        return _submit_chunks(exp, mapping, chunks, sbatch or "sbatch", force=force, dry_run=dry_run, echo=echo)


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


def _submit_chunks(exp: Path, mapping: RunMapping, chunks: list[tuple[Path, ArrayChunk]], sbatch: str, *,
                   force: bool, dry_run: bool, echo: Callable[[str], None]) -> list[SubmittedArray]:
    k = mapping.slurm.max_concurrent
    done: list[SubmittedArray] = []
    for n, (script, chunk) in enumerate(chunks):
        array = chunk.spec(k)
        cmd = [sbatch, "--parsable", f"--array={array}", f"--chdir={exp}"]
        if force:
            cmd.append(f"--export=ALL,{FORCE_ENV}=1")  # the task may then train a completed run again
        if k and done:
            # Separate arrays each have their own %K; chaining keeps the total at K.
            cmd.append(f"--dependency=afterany:{done[-1].job_id or '<job id of the previous array>'}")
        cmd += [str(script), str(chunk.offset)]
        if dry_run:
            echo(shlex.join(cmd))
            done.append(SubmittedArray(cmd, chunk, array))
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=exp, timeout=120)
        if proc.returncode != 0:
            raise SlurmError(f"sbatch refused array {n + 1} of {len(chunks)} (runs "
                             f"{compress_ranges(chunk.indices)}): {proc.stderr.strip() or proc.stdout.strip()}"
                             + (f"; arrays already submitted: {', '.join(str(d.job_id) for d in done)}" if done else ""))
        item = SubmittedArray(cmd, chunk, array, proc.stdout.strip().split(";")[0])
        append_job(exp, JobRecord(job_id=str(item.job_id), submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  array=array, offset=chunk.offset, indices=chunk.indices, command=shlex.join(cmd)))
        echo(f"submitted job array {item.job_id}: {len(chunk.task_ids)} run(s) "
             f"({_describe_runs(mapping, chunk.indices)}), --array={array}"
             + (f", offset {chunk.offset}" if chunk.offset else "")
             + (f", {script.name}" if script.name != SCRIPT_FILE else ""))
        done.append(item)
    return done


def _describe_runs(mapping: RunMapping, indices: Iterable[int]) -> str:
    ids = sorted(indices)
    return mapping.run_id_of(ids[0]) if len(ids) == 1 else f"indices {compress_ranges(ids)}"
