"""``metadata.json`` in each run's output_dir: what ran, where, with what, and when.

Written when a run starts (``ended`` still null) and again when it ends, so a
run killed on the way still says what it was. Versions come from the installed
packages' metadata: reading them imports neither torch nor torchtune.

    >>> data = run_metadata(mapping, run, record)          # doctest: +SKIP
    >>> data["versions"]["torchtune"]                       # doctest: +SKIP
    '0.6.1'
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any

from ..expdir import RunEntry, RunMapping, StatusRecord, write_metadata

_PACKAGES = ("torchtune_config_writer", "torch", "torchtune", "torchao", "lm_eval", "inspect_ai", "mlflow", "wandb")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """The tool's version and those of the installed packages a run depends on (absent ones left out)."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return found


@lru_cache(maxsize=1)
def gpus() -> dict[str, Any] | None:
    """Name and count of the GPUs this process may use (``nvidia-smi``, narrowed by CUDA_VISIBLE_DEVICES); None without."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=index,name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    cards = [tuple(p.strip() for p in line.split(",", 1)) for line in out.splitlines() if "," in line]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible not in (None, ""):
        wanted = {v.strip() for v in visible.split(",")}
        cards = [c for c in cards if c[0] in wanted] or cards  # UUIDs instead of indexes: keep all
    if not cards:
        return None
    names = sorted({name for _, name in cards})
    return {"name": names[0] if len(names) == 1 else names, "count": len(cards)}


def run_metadata(mapping: RunMapping, run: RunEntry, record: StatusRecord) -> dict[str, Any]:
    """The content of a run's metadata.json for its status ``record`` (a start or an end)."""
    return {
        "experiment": mapping.experiment_name,
        "run_id": run.run_id,
        "name": run.name,
        "parameters": run.parameters,
        "derived": run.derived,
        "seed": run.seed,
        "recipe": mapping.recipe,
        "base": mapping.base,
        "config": run.current_config,
        "config_sha256": run.current_sha256,
        "attempt": run.attempt,
        "state": record.state,
        "exit_code": record.exit_code,
        "started": record.started,
        "ended": record.ended,
        "duration_s": record.wall_seconds(),
        "host": record.host,
        "gpus": gpus(),
        "slurm": {"job_id": record.slurm_job_id, "array_job_id": record.slurm_array_job_id,
                  "array_task_id": record.slurm_array_task_id,
                  # every node a multi-node run trained on (J.7); host and gpus above are the first node's
                  "nodes": os.environ.get("SLURM_JOB_NODELIST")} if record.slurm_job_id else None,
        "tracking_run_id": record.tracking_run_id,
        "versions": package_versions(),
        "git": mapping.git,
    }


def record_metadata(mapping: RunMapping, run: RunEntry, record: StatusRecord) -> str | None:
    """Write the run's metadata.json; return a warning instead of raising when it cannot be written
    (a full or read-only output disk must not turn a finished training into a crash of the runner)."""
    try:
        write_metadata(run.output_dir, run_metadata(mapping, run, record))
    except OSError as e:
        return f"{run.run_id}: could not write metadata.json in {run.output_dir}: {e.strerror or e}"
    return None
