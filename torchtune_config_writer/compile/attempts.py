"""A run's next attempt after it ran out of memory: half the batch, twice the gradient accumulation.

The attempt's config is the run's current config (``RunEntry.current_config``)
read with the round-trip loader, so torchtune's comments, the key order and the
header stay; only ``batch_size`` (halved, rounded down) and
``gradient_accumulation_steps`` (doubled) change, so each optimizer step still
sees the same number of samples. When that cannot hold, the attempt says so in
its ``note`` (an odd batch size; a config without gradient accumulation, or
one whose ``optimizer_in_bwd`` forbids it); a run already at ``batch_size: 1``
gets no further attempt. The config is validated like every generated one
(``validate.validate_configs``: binding, types, ranges, recipe rules) and read
back as torchtune reads it, then written beside the run's own config as
``configs/run_003.attempt_2.yaml`` (never over an existing file) and recorded in
run_mapping.yaml (``expdir.add_attempt``).

The execute side asks for it through the hidden command ``torchtune-config-writer
attempt EXPERIMENT_DIR INDEX --after N`` (it may not import this side).

    >>> attempt = write_attempt("outputs/sweep", 3, after=1)     # doctest: +SKIP
    >>> attempt.config, attempt.changes                            # doctest: +SKIP
    ('configs/run_003.attempt_2.yaml', {'batch_size': [8, 4], 'gradient_accumulation_steps': [1, 2]})
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import AttemptError
from ..expdir import CONFIGS_DIR, Attempt, RunEntry, add_attempt, load_mapping

BATCH = "batch_size"
ACCUMULATION = "gradient_accumulation_steps"
#: ``Attempt.reason`` of an out-of-memory retry.
OOM = "oom"


def attempt_config_file(run_id: str, number: int) -> str:
    """Where attempt ``number`` of a run keeps its config, relative to the experiment directory.

    >>> attempt_config_file("run_003", 2)
    'configs/run_003.attempt_2.yaml'
    """
    return f"{CONFIGS_DIR}/{run_id}.attempt_{number}.yaml"


@dataclass(frozen=True)
class Halved:
    """The values of one out-of-memory retry: what changes (dotted key -> [old, new]) and what a reader must know."""

    changes: dict[str, list[Any]]
    note: str | None
    """None when the effective batch (batch_size x gradient_accumulation_steps) stays the same."""


def halve(config: dict, run_id: str = "the run") -> Halved:
    """Half the batch size (rounded down) and twice the gradient accumulation of a config (plain or round-trip).

    Raises ``AttemptError`` when the config has no integer batch_size or it is already 1.

    >>> halve({"batch_size": 8, "gradient_accumulation_steps": 1}).changes
    {'batch_size': [8, 4], 'gradient_accumulation_steps': [1, 2]}
    >>> halve({"batch_size": 5, "gradient_accumulation_steps": 2}).note
    'the effective batch size changes from 10 to 8 (batch_size 5 is odd)'
    >>> halve({"batch_size": 8}).note
    'the effective batch size changes from 8 to 4 (the config has no gradient_accumulation_steps)'
    """
    batch = config.get(BATCH)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise AttemptError(f"{run_id}: its config has no whole-number {BATCH} (found {batch!r}), so there is no "
                           "batch to halve; no further attempt was written")
    if batch == 1:
        raise AttemptError(
            f"{run_id} ran out of memory with {BATCH}: 1 already, so halving cannot help and no further attempt was "
            "written; it needs less memory another way (enable_activation_checkpointing: True, a shorter "
            "max_seq_len, a smaller model, a GPU with more memory or more GPUs): change the experiment file and "
            "generate it again"
        )
    new_batch = batch // 2
    changes: dict[str, list[Any]] = {BATCH: [batch, new_batch]}
    steps = config.get(ACCUMULATION, 1)
    if ACCUMULATION in config and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise AttemptError(f"{run_id}: its {ACCUMULATION} is {steps!r}, not a whole number, so it cannot be doubled; "
                           "no further attempt was written")
    why = None
    if ACCUMULATION not in config:
        why = f"the config has no {ACCUMULATION}"
        new_steps = steps
    elif config.get("optimizer_in_bwd") is True:
        why = f"optimizer_in_bwd: True cannot accumulate gradients, so {ACCUMULATION} stays {steps}"
        new_steps = steps
    else:
        new_steps = steps * 2
        changes[ACCUMULATION] = [steps, new_steps]
        if batch % 2:
            why = f"{BATCH} {batch} is odd"
    before, after = batch * steps, new_batch * new_steps
    note = None if before == after else f"the effective batch size changes from {before} to {after} ({why})"
    return Halved(changes, note)


def write_attempt(exp_dir: str | Path, index: int, *, after: int | None = None, reason: str = OOM,
                  dry_run: bool = False) -> Attempt:
    """Write and record the next attempt of run ``index`` (unless ``dry_run``); return it.

    ``after`` is the attempt that failed: when the run is at another one already (another
    process wrote a retry first), nothing is written. Raises ``AttemptError`` (one line, what
    and why) when no attempt can be written: batch_size 1 already, or the new config fails validation.
    """
    from .schema import to_plain
    from .yamlio import load

    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    run = mapping.by_index.get(index)
    if run is None:
        raise AttemptError(f"{exp} has no run with index {index} (it has {len(mapping.runs)} runs)")
    if after is not None and run.attempt != after:
        raise AttemptError(f"{run.run_id} is at attempt {run.attempt} already, not {after}; its next attempt was "
                           "written by another process, so nothing was written")
    number = run.attempt + 1
    source = exp / run.current_config
    try:
        tree = load(source.read_text())
    except OSError as e:
        raise AttemptError(f"{run.run_id}: cannot read its config {source} ({e.strerror or e})") from None
    if not isinstance(tree, dict):
        raise AttemptError(f"{run.run_id}: its config {source} is not a mapping of keys")
    halved = halve(tree, run.run_id)
    for key, (_, new) in halved.changes.items():
        tree[key] = new  # a scalar replaced in place: the comment beside it stays
    rel = attempt_config_file(run.run_id, number)
    text = _with_header(_dump(tree), run, number, rel, halved, reason)
    plain = to_plain(tree)
    _validate(run, number, mapping.recipe, plain, text)
    attempt = Attempt(number=number, config=rel, config_sha256=hashlib.sha256(text.encode()).hexdigest(),
                      reason=reason, changes=halved.changes, note=halved.note,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if dry_run:
        return attempt
    _write_new(exp / rel, text)
    add_attempt(exp, index, attempt)
    return attempt


def describe(run: RunEntry | str, attempt: Attempt) -> str:
    """One line for people: which attempt, its config, what changed, and the note.

    >>> a = Attempt(2, "configs/run_003.attempt_2.yaml", "0", "oom", {"batch_size": [8, 4]}, "x changes")
    >>> describe("run_003", a)
    'run_003 attempt 2: configs/run_003.attempt_2.yaml (batch_size 8 -> 4; x changes)'
    """
    rid = run if isinstance(run, str) else run.run_id
    changed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in attempt.changes.items())
    kept = "; " + attempt.note if attempt.note else ("; the effective batch size stays the same"
                                                     if ACCUMULATION in attempt.changes else "")
    return f"{rid} attempt {attempt.number}: {attempt.config} ({changed}{kept})"


# ----------------------------------------------------------------------------- helpers


def _dump(tree: Any) -> str:
    from .yamlio import dump

    return dump(tree)


def _with_header(text: str, run: RunEntry, number: int, rel: str, halved: Halved, reason: str) -> str:
    """The dumped config with its header comment saying which attempt it is, and its own ``--config`` path."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    head = [ln.replace(f"--config {run.current_config}", f"--config {rel}") for ln in lines[:n]]
    why = "ran out of memory" if reason == OOM else f"failed ({reason})"
    changed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in halved.changes.items())
    from .yamlio import comment_text

    head.append(comment_text(f"# Attempt {number}: attempt {number - 1} {why}; {changed}"
                             + (f"; {halved.note}" if halved.note else "; the effective batch size stays the same"))
                + "\n")
    return "".join(head + lines[n:])


def _validate(run: RunEntry, number: int, recipe: str, plain: dict, text: str) -> None:
    """Refuse (``AttemptError``) an attempt whose config fails validation or reads back as something else."""
    from .readback import check_written
    from .validate import validate_configs

    problems = [p for p in validate_configs([(run.run_id, plain)], recipe) if not p.warning]
    if problems:
        raise AttemptError(f"attempt {number} of {run.run_id} would fail validation, so it was not written: "
                           + "; ".join(f"{p.key}: {p.message}" for p in problems[:5]))
    check_written(run.run_id, text, plain)


def _write_new(path: Path, text: str) -> None:
    """Write ``path`` atomically, never over an existing file (one with these very bytes is kept as it is)."""
    data = text.encode()
    if path.exists():
        if path.read_bytes() == data:
            return  # written by an earlier try that stopped before recording it
        raise AttemptError(f"{path} exists already and holds another config; it was not replaced (delete it if no "
                           "run uses it, then retry)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before run_mapping.yaml names it
        os.link(tmp, path)  # fails if the file appeared meanwhile: never a silent overwrite
    except FileExistsError:
        if path.read_bytes() != data:
            raise AttemptError(f"{path} was written by another process at the same time with another config; "
                               "it was not replaced") from None
    finally:
        tmp.unlink(missing_ok=True)

