"""Time limits from evidence (``slurm.time: auto``, Appendix J.5): each run's limit is its tokens divided by
the throughput completed runs of the same model and recipe reached, times a safety factor.

``generate`` records the tokens each run trains on (``RunEntry.tokens``, compile/tokens.py). ``submit``
gathers the evidence: completed runs with tokens and a measured training time (status record
``started`` to ``ended``: the training alone, its evaluation has its own record; runs that were requeued or
resumed are left out, their record holds only the last part), from this experiment, from the other
experiment directories next to it (its siblings under the same output root) and from ``submit --evidence DIR``.
A run counts only for runs with the same recipe, the same model (``model:`` of its config, component and
arguments, read as plain YAML) and the same number of GPUs. Then

    throughput = sum of tokens / sum of seconds over the evidence
    limit      = max(MIN_MINUTES, ceil((tokens / throughput x time_safety + warning lead) / 60 s)) minutes

where the warning lead is ``signal_seconds`` when the task asks for a warning signal before its limit
(``slurm.requeue``), so the warning never comes before the estimated end. Arrays are split so that each
gets one ``--time``. Everything but the reader (``completed_samples``) is a pure function.

    >>> limit_minutes(1_200_000, 1_000.0, 1.5)         # 1,800 s
    30
    >>> format_limit(limit_minutes(100, 1_000.0, 1.5)), format_limit(3 * 24 * 60 + 5)
    ('00:05:00', '3-00:05:00')
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import ExperimentDirError, SlurmError
from ..expdir import (
    MAPPING_FILE, TRAIN_JOB, ArrayChunk, JobRecord, RunEntry, RunMapping, SlurmState, State, compress_ranges, load_mapping,
    read_jobs, read_status, recorded_run_ids, script_groups,
)

#: The shortest limit ``submit`` asks for: below it, scheduling and startup dominate whatever was measured.
MIN_MINUTES = 5

_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ----------------------------------------------------------------------------- pure arithmetic


def limit_minutes(tokens: int, tokens_per_second: float, safety: float, *, lead_seconds: float = 0,
                  floor: int = MIN_MINUTES) -> int:
    """A run's time limit in whole minutes: ``tokens / tokens_per_second x safety + lead_seconds``, rounded up,
    at least ``floor``.

    >>> limit_minutes(600_000, 1_000.0, 1.5), limit_minutes(600_000, 1_000.0, 1.5, lead_seconds=300)
    (15, 20)
    >>> limit_minutes(600_001, 1_000.0, 1.0), limit_minutes(0, 1_000.0, 1.5)
    (11, 5)
    """
    if tokens_per_second <= 0:
        raise ValueError("tokens_per_second must be positive")
    seconds = tokens / tokens_per_second * safety + lead_seconds
    return max(floor, math.ceil(round(seconds, 6) / 60))  # round: 900.0000001 s is 15 minutes, not 16


def format_limit(minutes: int) -> str:
    """Minutes as a SLURM time limit: ``HH:MM:SS``, with days (``D-HH:MM:SS``) from 24 hours on.

    >>> format_limit(12), format_limit(24 * 60 + 1)
    ('00:12:00', '1-00:01:00')
    """
    days, rest = divmod(int(minutes), 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def check_time(value: str) -> str:
    """``submit --time``: a SLURM time limit (``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``), or ``SlurmError``."""
    text = str(value).strip()
    if not _TIME.fullmatch(text):
        raise SlurmError(f"--time {value!r} is not a SLURM time limit; write MM, HH:MM:SS or D-HH:MM:SS (e.g. 02:00:00)")
    return text


def model_key(config_text: str) -> str | None:
    """The model a config trains, as one comparable string: its top-level ``model:`` section (component and
    arguments) as sorted JSON, whole-number floats written as integers. None without a ``model:`` mapping.

    Only that section is parsed (the rest of a large config is skipped), with plain YAML, and each distinct
    section text once (a sweep's configs mostly share it): 10,000 configs take well under a second.

    >>> model_key("seed: 1\\nmodel:\\n  _component_: m.lora  # x\\n  rank: 8.0\\nepochs: 1\\n")
    '{"_component_": "m.lora", "rank": 8}'
    """
    found = _MODEL_LINE.search(config_text)
    if found is None:
        return None
    end = _TOP_LEVEL.search(config_text, found.end())  # the next top-level key ends the section
    key = _section_key(config_text[found.start():end.start() + 1 if end else len(config_text)])
    if key is None:  # an unusual layout: read the whole file
        key = _section_key(config_text)
    return key


_MODEL_LINE = re.compile(r"^model[ \t]*:", re.MULTILINE)
_TOP_LEVEL = re.compile(r"\n(?=[^\s#])")


@functools.lru_cache(maxsize=256)
def _section_key(text: str) -> str | None:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return json.dumps(_canonical(model), sort_keys=True, default=str) if isinstance(model, dict) else None


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


@dataclass(frozen=True)
class Kind:
    """What throughput is measured for: runs of one recipe training one model on this many GPUs."""

    recipe: str
    model: str
    """``model_key`` of its config."""
    gpus: int

    def describe(self) -> str:
        """``lora_finetune_single_device, torchtune.models.llama2.lora_llama2 (lora_rank=8, ...), 1 GPU``."""
        try:
            model = json.loads(self.model)
        except ValueError:
            model = {}
        args = ", ".join(f"{k}={v}" for k, v in model.items() if k != "_component_")
        args = args if len(args) <= 400 else args[:397] + "..."
        return (f"recipe {self.recipe}, model {model.get('_component_', '?')} ({args}), "
                f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}")


@dataclass(frozen=True)
class Sample:
    """One completed run used as evidence: the tokens it trained on and how long its training took."""

    experiment: str
    """Its experiment directory."""
    run_id: str
    kind: Kind
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Throughput:
    """Tokens per second over a set of samples (sum of tokens / sum of seconds)."""

    runs: int
    tokens: int
    seconds: float
    sources: tuple[tuple[str, int], ...]
    """(experiment directory, runs of it), in the order found."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def throughput(samples: Iterable[Sample]) -> Throughput | None:
    """The throughput of ``samples`` (None for none). A run timed at 0 s (status times have whole seconds)
    counts as 1 s.

    >>> k = Kind("r", "{}", 1)
    >>> throughput([Sample("/e", "run_000", k, 3000, 2.0), Sample("/e", "run_001", k, 1000, 0.0)]).tokens_per_second
    1333.3333333333333
    """
    samples = list(samples)
    if not samples:
        return None
    sources: dict[str, int] = {}
    for s in samples:
        sources[s.experiment] = sources.get(s.experiment, 0) + 1
    return Throughput(len(samples), sum(s.tokens for s in samples), sum(max(1.0, s.seconds) for s in samples),
                      tuple(sources.items()))


def split_by_limit(chunks: Iterable[ArrayChunk], limits: Mapping[int, str | None]) -> list[ArrayChunk]:
    """Each array split into arrays whose runs share one time limit (same offset, so task ids keep their runs).

    >>> [c.spec() for c in split_by_limit([ArrayChunk(0, (0, 1, 2, 3))], {0: "00:05:00", 1: "00:09:00", 2: "00:05:00"})]
    ['0,2', '1', '3']
    """
    out = []
    for chunk in chunks:
        groups: dict[str | None, list[int]] = {}
        for t in chunk.task_ids:
            groups.setdefault(limits.get(t + chunk.offset), []).append(t)
        out += [ArrayChunk(chunk.offset, tuple(ids)) for ids in groups.values()]
    return out


def previous_limits(jobs: Iterable[JobRecord]) -> dict[int, str]:
    """Each run's ``--time`` in the latest training array that named one (``slurm_jobs.yaml``'s commands).

    >>> previous_limits([JobRecord("41", "", "0-1", 0, (0, 1), "sbatch --parsable --array=0-1 --time=00:20:00 s 0")])
    {0: '00:20:00', 1: '00:20:00'}
    """
    found: dict[int, str] = {}
    for job in jobs:
        if job.kind != TRAIN_JOB:
            continue
        try:
            words = shlex.split(job.command)
        except ValueError:
            continue
        limit = next((w.split("=", 1)[1] for w in words if w.startswith("--time=")), None)
        if limit:
            found.update({i: limit for i in job.indices})
    return found


# ----------------------------------------------------------------------------- reading the evidence


def kind_of(exp: Path, mapping: RunMapping, run: RunEntry) -> Kind | None:
    """The run's ``Kind`` (its config read for the model); None when its config has no readable model."""
    try:
        model = model_key((exp / run.config).read_text())
    except (OSError, UnicodeDecodeError):
        return None
    if model is None:
        return None
    plan = dataclasses.replace(mapping.slurm, **run.resources)
    return Kind(mapping.recipe, model, max(0, int(plan.gpus_per_run)) * max(1, int(plan.nodes)))


def completed_samples(exp_dir: str | Path, recipes: set[str] | None = None) -> list[Sample]:
    """Every completed run of an experiment directory that can serve as evidence: it has tokens, start and end
    times, and was neither requeued nor resumed (its record then times only the last part of its training).

    ``recipes``: skip the whole directory unless its recipe is one of them (nothing else is read).
    Raises ExperimentDirError for a directory that is not a readable experiment directory.
    """
    exp = Path(exp_dir).resolve()
    mapping = load_mapping(exp)
    if recipes is not None and mapping.recipe not in recipes:
        return []
    counted = {r.run_id: r for r in mapping.runs if r.tokens is not None}
    present = recorded_run_ids(exp) & set(counted) if counted else set()
    samples = []
    for run_id in sorted(present):
        try:
            rec = read_status(exp, run_id)
        except ExperimentDirError:
            continue  # a damaged record is no evidence
        seconds = rec.wall_seconds()
        if rec.state != State.COMPLETED or seconds is None or rec.requeues or rec.resumed_from_epoch is not None:
            continue
        kind = kind_of(exp, mapping, counted[run_id])
        if kind is not None:
            samples.append(Sample(str(exp), run_id, kind, int(counted[run_id].tokens or 0), seconds))
    return samples


def evidence_dirs(exp: Path, extra: Iterable[str | Path] = ()) -> tuple[list[Path], list[Path]]:
    """(the experiment itself and its sibling experiment directories; the ``--evidence`` directories), each once.

    A sibling is a directory next to ``exp`` (not hidden) holding a run_mapping.yaml.
    """
    exp = exp.resolve()
    found = [exp]
    try:
        siblings = sorted(p for p in exp.parent.iterdir() if p != exp and not p.name.startswith(".")
                          and (p / MAPPING_FILE).is_file())
    except OSError:
        siblings = []
    found += siblings
    given = []
    for d in extra:
        path = Path(d).expanduser().resolve()
        if path not in found and path not in given:
            given.append(path)
    return found, given


def gather(exp: Path, extra: Iterable[str | Path] = (), recipes: set[str] | None = None
           ) -> tuple[list[Sample], list[Path], list[Path]]:
    """All evidence for ``exp``: (samples, the directories looked in by default, the ``--evidence`` ones).

    An unreadable sibling is skipped (it may be another tool's folder, or an older format); an unreadable
    ``--evidence`` directory is an ``ExperimentDirError``.
    """
    default, given = evidence_dirs(exp, extra)
    samples: list[Sample] = []
    for d in default:
        try:
            samples += completed_samples(d, recipes)
        except ExperimentDirError:
            if d == exp.resolve():
                raise
    for d in given:
        try:
            samples += completed_samples(d, recipes)
        except ExperimentDirError as e:
            raise ExperimentDirError(f"--evidence {d}: {e}") from None
    return samples, default, given


# ----------------------------------------------------------------------------- the limits of a submission


@dataclass(frozen=True)
class TimeLimits:
    """The ``--time`` of each training run to submit (by index; None: the script's own, if any), and what
    ``submit`` says about them."""

    limits: dict[int, str | None]
    lines: tuple[str, ...] = ()


def plan_limits(exp: Path, mapping: RunMapping, runs: list[RunEntry], *, evidence: Iterable[str | Path] = (),
                override: str | None = None) -> TimeLimits:
    """The time limits of ``runs`` (to be trained): ``override`` (``submit --time``) for all of them; else,
    for the runs whose ``slurm.time`` is ``auto``, the estimate from the evidence; else none (their script's).

    Raises ``SlurmError`` when a run with ``auto`` has no token count, or no evidence matches it, naming what
    was looked for, where, and the ways out.
    """
    if override is not None:
        limit = check_time(override)
        return TimeLimits({r.index: limit for r in runs},
                          (f"time limit {limit} for all {len(runs)} run(s) (--time)",) if runs else ())
    resources = {i: g.resources for g in script_groups(mapping) for i in g.indices}
    auto = [r for r in runs if resources[r.index].time_auto]
    if not auto:
        return TimeLimits({})
    uncounted = [r.run_id for r in auto if r.tokens is None]
    if uncounted:
        raise SlurmError(
            f"slurm.time is auto, but {len(uncounted)} run(s) have no token count ({_ids(uncounted)}): generate "
            "counts them only when it validates; generate the experiment again (without --no-validate), or give "
            "this submission a limit with --time HH:MM:SS")
    kinds: dict[Kind, list[RunEntry]] = {}
    for run in auto:
        kind = kind_of(exp, mapping, run)
        if kind is None:
            raise SlurmError(f"slurm.time is auto, but the model of {run.run_id} cannot be read from {run.config} "
                             "(a top-level model: section); give this submission a limit with --time HH:MM:SS")
        kinds.setdefault(kind, []).append(run)
    samples, default, given = gather(exp, evidence, {mapping.recipe})
    limits: dict[int, str | None] = {}
    lines = []
    for kind, todo in kinds.items():
        found = throughput(s for s in samples if s.kind == kind)
        if found is None:
            # A run submitted before (a pilot given --time, a run failed out of memory and retried) keeps
            # its last limit, unless that limit is what ended it.
            before = previous_limits(read_jobs(exp))
            if todo and all(r.index in before and read_status(exp, r.run_id).slurm_state != SlurmState.TIMEOUT
                            for r in todo):
                own = {r.index: before[r.index] for r in todo}
                limits.update(own)
                lines.append(f"no completed run to measure throughput on yet: run(s) {compress_ranges(own)} keep the "
                             f"time limit of their previous submission ({', '.join(sorted(set(own.values())))})")
                continue
            raise SlurmError(_no_evidence(exp, kind, todo, default, given))
        plan = resources[todo[0].index]
        lead = plan.signal_seconds if plan.requeue else 0
        own = {r.index: format_limit(limit_minutes(int(r.tokens or 0), found.tokens_per_second, plan.time_safety,
                                                   lead_seconds=lead)) for r in todo}
        limits.update(own)
        lines.append(describe(found, own, plan.time_safety, lead, exp,
                              kind if len(kinds) > 1 else None))
    return TimeLimits(limits, tuple(lines))


def describe(found: Throughput, limits: Mapping[int, str | None], safety: float, lead: float, exp: Path,
             kind: Kind | None = None) -> str:
    """``time limits from 3 completed runs (this experiment) at 41,000 tokens/s x 1.5: 00:12:00 for runs 0-5``."""
    by_limit: dict[str | None, list[int]] = {}
    for i, limit in sorted(limits.items()):
        by_limit.setdefault(limit, []).append(i)
    where = ", ".join(f"{n} of {'this experiment' if Path(d) == exp.resolve() else Path(d).name}"
                      for d, n in found.sources)
    parts = ", ".join(f"{limit} for {_runs(ids)}" for limit, ids in sorted(by_limit.items(), key=lambda kv: min(kv[1])))
    return ((f"{kind.describe()}: " if kind else "")
            + f"time limits from {found.runs:,} completed run{'s' if found.runs != 1 else ''} ({where}) at "
            f"{found.tokens_per_second:,.0f} tokens/s x {safety:g}"
            + (f" + {lead:g} s for the warning signal" if lead else "") + f": {parts}")


def _no_evidence(exp: Path, kind: Kind, runs: list[RunEntry], default: list[Path], given: list[Path]) -> str:
    siblings = len(default) - 1
    where = f"this experiment ({exp})" + (f" and {siblings} other experiment director{'y' if siblings == 1 else 'ies'} "
                                          f"under {exp.parent}" if siblings else f" (no other experiment directory under {exp.parent})")
    if given:
        where += " and --evidence " + ", ".join(str(d) for d in given)
    first = min(runs, key=lambda r: r.index)
    return (
        f"slurm.time is auto, but no completed run with {kind.describe()} was found to measure its throughput, "
        f"so the time limit of {len(runs)} run(s) ({_ids([r.run_id for r in runs])}) cannot be estimated. "
        f"Looked in {where}, for completed runs with a token count (experiments generated with slurm.time: auto). "
        f"Train a pilot first: `torchtune-config-writer submit {exp} --runs {first.index} --time 02:00:00` "
        f"(or locally: `torchtune-config-writer run {exp} --runs {first.index}`), then submit the rest; or point "
        "at an earlier experiment with --evidence DIR; or give this submission a limit with --time HH:MM:SS; or set "
        "slurm.time in experiment.yaml and generate again"
    )


def _runs(indices: list[int], width: int = 40) -> str:
    """``run 3``, ``runs 0-5``, ``1,200 runs (0-5,7-12,...)``: run indices for a line, cut short when long."""
    text = compress_ranges(indices)
    if len(indices) == 1:
        return f"run {text}"
    if len(text) <= width:
        return f"runs {text}"
    cut = text.rfind(",", 0, width)
    return f"{len(indices):,} runs ({text[:cut if cut > 0 else width]},...)"


def _ids(run_ids: list[str]) -> str:
    return ", ".join(run_ids[:5]) + (", ..." if len(run_ids) > 5 else "")
