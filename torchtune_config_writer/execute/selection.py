"""Which runs a command acts on: ``--runs`` selections, and whether a run may run at all.

    >>> mapping = load_mapping("outputs/tiny_rank_lr")                      # doctest: +SKIP
    >>> [r.run_id for r in select_runs(mapping, "0-1,run_003")]             # doctest: +SKIP
    ['run_000', 'run_001', 'run_003']
    >>> check_runnable("outputs/tiny_rank_lr", mapping.runs[0])             # doctest: +SKIP
    PosixPath('outputs/tiny_rank_lr/configs/run_000.yaml')
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from ..errors import RunNotRunnableError, RunSelectionError
from ..expdir import REPORT_FILE, RunEntry, RunMapping, Validation, load_mapping

_RANGE = re.compile(r"^(\d+|run_\d+)\s*-\s*(\d+|run_\d+)$")
_HOW = "select runs as '0-3,7', 'run_002' or 'all'"


def select_runs(mapping: RunMapping, spec: str | Iterable[int] | None) -> list[RunEntry]:
    """The runs a ``--runs`` selection names, in index order, each once.

    ``spec`` is ``None`` or ``"all"`` (every run), a comma list of indexes,
    ranges and run ids (``"0-3,7"``, ``"run_002"``, ``"run_001-run_004"``),
    or an iterable of indexes.
    """
    by_index = mapping.by_index
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return [by_index[i] for i in sorted(by_index)]
    wanted = _parse_spec(spec) if isinstance(spec, str) else [int(i) for i in spec]
    unknown = sorted({i for i in wanted if i not in by_index})
    if unknown:
        raise RunSelectionError(
            f"no run {', '.join(str(i) for i in unknown)} in this experiment: it has {_describe(mapping)}; {_HOW}"
        )
    if not wanted:
        raise RunSelectionError(f"the run selection is empty; {_HOW}")
    return [by_index[i] for i in sorted(set(wanted))]


def find_run(mapping: RunMapping, index: int | str) -> RunEntry:
    """The run with this index (``3``, ``"3"``) or run id (``"run_003"``)."""
    return select_runs(mapping, str(index))[0]


def _parse_spec(spec: str) -> list[int]:
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        m = _RANGE.match(part)
        if m:
            lo, hi = _index_of(m.group(1), spec), _index_of(m.group(2), spec)
            if lo > hi:
                raise RunSelectionError(f"range '{part}' in --runs '{spec}' goes backwards; write {hi}-{lo}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(_index_of(part, spec))
    return out


def _index_of(token: str, spec: str) -> int:
    m = re.fullmatch(r"(?:run_)?(\d+)", token.strip())
    if not m:
        raise RunSelectionError(f"cannot read '{token}' in --runs '{spec}'; write indexes, ranges or run ids: "
                                "'0-3,7', 'run_002' or 'all'")
    return int(m.group(1))


def _describe(mapping: RunMapping) -> str:
    ids = sorted(mapping.by_index)
    if not ids:
        return "no runs"
    first, last = mapping.run_id_of(ids[0]), mapping.run_id_of(ids[-1])
    if len(ids) == 1:
        return f"only run {ids[0]} ({first})"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"runs {ids[0]}-{ids[-1]} ({first} .. {last})"
    return "runs " + ", ".join(map(str, ids))


def config_sha256(path: Path) -> str:
    """sha256 of a file's bytes, as recorded in a run's ``config_sha256``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_runnable(exp_dir: str | Path, run: RunEntry | int | str) -> Path:
    """Return the run's config path, or raise ``RunNotRunnableError`` saying why it may not run.

    ``run`` is a run of the experiment, or its index or run id. A run may run
    only when its validation passed and its config file is byte-for-byte the
    file that was validated (same sha256).
    """
    exp = Path(exp_dir)
    if not isinstance(run, RunEntry):
        run = find_run(load_mapping(exp), run)
    rid, config = run.run_id, exp / run.current_config  # a retry's attempt config once one was written
    if run.validation == Validation.FAILED:
        raise RunNotRunnableError(
            f"{rid} may not run: its config {run.config} failed validation when it was generated "
            f"(see {exp / REPORT_FILE}); fix the experiment file and generate it again"
        )
    if run.validation != Validation.PASSED:
        raise RunNotRunnableError(
            f"{rid} may not run: its config {run.config} was not validated (validation: {run.validation}); "
            "generate the experiment again without --no-validate"
        )
    if not config.is_file():
        raise RunNotRunnableError(f"{rid} may not run: its config {config} is missing; generate the experiment again")
    actual = config_sha256(config)
    if actual != run.current_sha256:
        raise RunNotRunnableError(
            f"{rid} may not run: {config} was changed after validation (sha256 {actual[:12]}..., "
            f"recorded {run.current_sha256[:12]}...); put the change in the experiment file and generate "
            "again (or restore the generated file)"
        )
    return config


def check_all_runnable(exp_dir: str | Path, runs: Iterable[RunEntry], consequence: str) -> None:
    """``check_runnable`` every run; if any may not run, raise one ``RunNotRunnableError`` naming them all.

    ``consequence`` says what the caller therefore did not do ("so none was started").
    """
    problems = []
    for run in runs:
        try:
            check_runnable(exp_dir, run)
        except RunNotRunnableError as e:
            problems.append(str(e))
    if problems:
        raise RunNotRunnableError(
            f"{len(problems)} of the selected runs may not run, {consequence}:\n  " + "\n  ".join(problems)
            + "\n(--runs selects only the others)"
        )
