"""Read an experiment directory (Appendix B): its run table, the runs' status records, run selections.

Everything here depends only on the directory contract, never on the generator.

    >>> mapping = load_mapping("outputs/tiny_rank_lr")                 # doctest: +SKIP
    >>> [r["run_id"] for r in select_runs(mapping, "0-1,run_003")]     # doctest: +SKIP
    ['run_000', 'run_001', 'run_003']
    >>> read_all("outputs/tiny_rank_lr")["run_000"]["state"]          # doctest: +SKIP
    'pending'
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .atomic import atomic_write_text
from .errors import ConfigWriterError, ExperimentDirError

MAPPING_FILE = "run_mapping.yaml"
STATUS_DIR = "status"
LOG_DIR = "logs"
#: Set (to 1) in a SLURM task's environment by ``submit --force``: the task may train a completed run again.
FORCE_ENV = "TORCHTUNE_CONFIG_WRITER_FORCE"

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
STATES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)

# Keys every run of run_mapping.yaml must have (Appendix B).
_RUN_KEYS = ("run_id", "index", "config", "config_sha256", "output_dir", "parameters", "validation")


class RunSelectionError(ConfigWriterError):
    """A ``--runs`` selection names runs that do not exist or cannot be parsed."""


class RunNotRunnableError(ConfigWriterError):
    """A run may not be executed: its validation did not pass or its config was edited since."""


# ----------------------------------------------------------------------------- run_mapping.yaml


def load_mapping(exp_dir: str | Path) -> dict[str, Any]:
    """Load ``run_mapping.yaml`` of an experiment directory as plain dicts and lists.

    Raises ``ExperimentDirError`` (saying what to pass instead) when ``exp_dir``
    is not an experiment directory or its run table lacks a required key.

    >>> load_mapping("outputs/tiny_rank_lr")["runs"][0]["config"]      # doctest: +SKIP
    'configs/run_000.yaml'
    """
    exp = Path(exp_dir)
    path = exp / MAPPING_FILE
    if not path.is_file():
        if exp.is_file() and exp.suffix in (".yaml", ".yml"):
            hint = f"'{exp}' is a file; generate it first (torchtune-config-writer generate {exp}) and pass the directory it writes"
        elif not exp.exists():
            hint = f"'{exp}' does not exist; pass the directory that `generate` wrote"
        else:
            hint = f"'{exp}' has no {MAPPING_FILE}, so it is not an experiment directory; pass the directory that `generate` wrote"
        raise ExperimentDirError(hint)
    try:
        data = YAML(typ="safe").load(path.read_text())
    except YAMLError as e:
        raise ExperimentDirError(f"{path}: not valid YAML ({e}); regenerate the experiment directory") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ExperimentDirError(f"{path}: has no 'runs' list; regenerate the experiment directory")
    for i, run in enumerate(data["runs"]):
        missing = [k for k in _RUN_KEYS if not isinstance(run, dict) or k not in run]
        if missing:
            raise ExperimentDirError(
                f"{path}: runs[{i}] lacks {', '.join(missing)}; the file was edited or written by another "
                "version: regenerate the experiment directory"
            )
    data.setdefault("variables", [])
    data.setdefault("distributed", False)
    return data


def find_run(mapping: dict[str, Any], index: int | str) -> dict[str, Any]:
    """The run with this index (``3``, ``"3"``) or run id (``"run_003"``)."""
    return select_runs(mapping, str(index))[0]


# ----------------------------------------------------------------------------- --runs SPEC

_RANGE = re.compile(r"^(\d+|run_\d+)\s*-\s*(\d+|run_\d+)$")


def select_runs(mapping: dict[str, Any], spec: str | Iterable[int] | None) -> list[dict[str, Any]]:
    """The runs a ``--runs`` selection names, in index order, each once.

    ``spec`` is ``None`` or ``"all"`` (every run), a comma list of indexes,
    ranges and run ids (``"0-3,7"``, ``"run_002"``, ``"run_001-run_004"``),
    or an iterable of indexes.

    >>> m = {"runs": [{"run_id": f"run_{i:03d}", "index": i} for i in range(8)]}
    >>> [r["index"] for r in select_runs(m, "0-2,run_007,1")]
    [0, 1, 2, 7]
    """
    runs = mapping["runs"]
    by_index = {int(r["index"]): r for r in runs}
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return sorted(runs, key=lambda r: int(r["index"]))
    wanted = _parse_spec(spec) if isinstance(spec, str) else [int(i) for i in spec]
    unknown = sorted({i for i in wanted if i not in by_index})
    if unknown:
        raise RunSelectionError(
            f"no run {', '.join(str(i) for i in unknown)} in this experiment: it has {_describe(by_index)}; "
            "select runs as '0-3,7', 'run_002' or 'all'"
        )
    if not wanted:
        raise RunSelectionError("the run selection is empty; select runs as '0-3,7', 'run_002' or 'all'")
    return [by_index[i] for i in sorted(set(wanted))]


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
        raise RunSelectionError(
            f"cannot read '{token}' in --runs '{spec}'; write indexes, ranges or run ids: '0-3,7', 'run_002' or 'all'"
        )
    return int(m.group(1))


def _describe(by_index: dict[int, Any]) -> str:
    if not by_index:
        return "no runs"
    ids = sorted(by_index)
    if len(ids) == 1:
        return f"only run {ids[0]} (run_{ids[0]:03d})"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"runs {ids[0]}-{ids[-1]} (run_{ids[0]:03d} .. run_{ids[-1]:03d})"
    return "runs " + ", ".join(map(str, ids))


# ----------------------------------------------------------------------------- runnable?


def config_sha256(path: Path) -> str:
    """sha256 of a file's bytes, as recorded in ``config_sha256``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_runnable(exp_dir: str | Path, run: dict[str, Any] | int | str) -> Path:
    """Return the run's config path, or raise ``RunNotRunnableError`` saying why it may not run.

    A run may run only when its ``validation`` is ``passed`` and its config file
    is byte-for-byte the file that was validated (same sha256).

    >>> check_runnable("outputs/tiny_rank_lr", 0)        # doctest: +SKIP
    PosixPath('outputs/tiny_rank_lr/configs/run_000.yaml')
    """
    exp = Path(exp_dir)
    if not isinstance(run, dict):
        run = find_run(load_mapping(exp), run)
    rid, config = run["run_id"], exp / run["config"]
    validation = run.get("validation")
    if validation == "failed":
        raise RunNotRunnableError(
            f"{rid} may not run: its config {run['config']} failed validation when it was generated "
            f"(see {exp / 'validation_report.txt'}); fix the experiment file and generate it again"
        )
    if validation != "passed":
        raise RunNotRunnableError(
            f"{rid} may not run: its config {run['config']} was not validated (validation: {validation}); "
            "generate the experiment again without --no-validate"
        )
    if not config.is_file():
        raise RunNotRunnableError(f"{rid} may not run: its config {config} is missing; generate the experiment again")
    actual = config_sha256(config)
    if actual != run["config_sha256"]:
        raise RunNotRunnableError(
            f"{rid} may not run: {config} was changed after validation (sha256 {actual[:12]}..., "
            f"recorded {str(run['config_sha256'])[:12]}...); put the change in the experiment file and generate "
            "again (or restore the generated file)"
        )
    return config


def check_all_runnable(exp_dir: str | Path, runs: Iterable[dict[str, Any]], consequence: str) -> None:
    """``check_runnable`` every run; if any may not run, raise one ``RunNotRunnableError`` naming them all.

    ``consequence`` says what the caller therefore did not do ("so none was started").

    >>> check_all_runnable("outputs/tiny_rank_lr", runs, "so nothing was submitted")   # doctest: +SKIP
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


# ----------------------------------------------------------------------------- status/run_NNN.json


def status_path(exp_dir: str | Path, run_id: str) -> Path:
    return Path(exp_dir) / STATUS_DIR / f"{run_id}.json"


def pending_record(run_id: str) -> dict[str, Any]:
    """The record of a run that has no status file yet."""
    return {"run_id": run_id, "state": PENDING, "exit_code": None, "started": None, "ended": None,
            "host": None, "slurm_job_id": None, "log": None}


def read_status(exp_dir: str | Path, run_id: str) -> dict[str, Any]:
    """The run's status record; a run without a status file is ``pending``."""
    path = status_path(exp_dir, run_id)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return pending_record(run_id)
    except (OSError, ValueError) as e:
        raise ExperimentDirError(f"{path}: unreadable status record ({e}); delete it to mark {run_id} pending") from None
    if not isinstance(record, dict) or record.get("state") not in STATES:
        raise ExperimentDirError(
            f"{path}: 'state' must be one of {', '.join(STATES)}; delete the file to mark {run_id} pending"
        )
    return {**pending_record(run_id), **record}


def write_status(exp_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write a status record atomically: readers see the old file or the new one, never half of one.

    >>> write_status(exp, {"run_id": "run_000", "state": "running"})   # doctest: +SKIP
    """
    if record.get("state") not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {record.get('state')!r}")
    path = status_path(exp_dir, record["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")  # readable by colleagues on a shared cluster
    return path


def read_all(exp_dir: str | Path, mapping: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every run's status record, keyed by run id, in index order (missing files read as pending)."""
    mapping = mapping or load_mapping(exp_dir)
    return {r["run_id"]: read_status(exp_dir, r["run_id"]) for r in select_runs(mapping, None)}


def wall_seconds(record: dict[str, Any], *, until_now: bool = False) -> float | None:
    """Seconds from a record's ``started`` to its ``ended`` (to now for a run still going, with
    ``until_now``); None when the times are missing or unreadable. Never negative (clock skew between nodes)."""
    try:
        start = datetime.fromisoformat(record["started"])
        if record.get("ended"):
            end = datetime.fromisoformat(record["ended"])
        elif until_now:
            end = datetime.now(start.tzinfo)
        else:
            return None
    except (TypeError, ValueError, KeyError):
        return None
    return max(0.0, (end - start).total_seconds())
