"""inspect-ai tasks on a run's Hugging Face format weights, through inspect's ``hf/`` provider.

inspect loads the model itself with transformers (``model_path`` is the epoch
folder a run saved with ``FullModelHFCheckpointer``), so nothing is shared with
the torchtune evaluators. Decoding is greedy (``do_sample: false``) unless the
config's ``model_args`` say otherwise.

A LoRA run's epoch folder also holds ``adapter_config.json``, which makes
transformers try to load the folder as a PEFT adapter (and fail on
``base_model_name_or_path``). The merged weights sit next to it, so inspect is
pointed at a temporary folder of links to everything but the adapter files.

Metric names are ``<task>/<metric>`` (``count/accuracy``); a task with several
scorers names them ``<task>/<scorer>/<metric>``. Standard errors (``stderr``)
go to the details, as lm-eval's do.

    >>> evaluate_inspect(cfg)                                            # doctest: +SKIP
    Outcome(metrics={'count/accuracy': 0.9}, details={'log': '.../inspect/2026-...eval', ...}, ...)
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .outcome import Outcome, package_version

#: Files of a PEFT adapter: transformers treats a folder holding them as an adapter, not a model.
_ADAPTER_PREFIX = "adapter_"


def evaluate_inspect(cfg: DictConfig) -> Outcome:
    """Run the config's inspect ``tasks`` on ``model_path`` and collect each scorer's metrics."""
    from inspect_ai import eval as inspect_eval

    model_path = Path(str(cfg.model_path))
    if not model_path.is_dir():
        raise FileNotFoundError(f"model_path {model_path} is not a folder")
    tasks = [str(t) for t in OmegaConf.to_container(cfg.tasks, resolve=True)]
    extra = OmegaConf.to_container(cfg.model_args, resolve=True) if cfg.get("model_args") else {}
    log_dir = str(cfg.log_dir) if cfg.get("log_dir") else None
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    _quiet_inspect()
    start = time.perf_counter()  # inspect's own import above is once per process: not timed
    with model_folder(model_path) as folder:
        model_args: dict[str, Any] = {"model_path": str(folder), "device": str(cfg.get("device", "cpu")),
                                      "do_sample": False, **extra}
        logs = inspect_eval(tasks, model=f"hf/{model_path.name}", model_args=model_args, limit=cfg.get("limit"),
                            log_dir=log_dir, display="none", seed=cfg.get("seed"))
    seconds = time.perf_counter() - start
    metrics: dict[str, float] = {}
    stderrs: dict[str, float] = {}
    log_files: list[str] = []
    for log in logs:
        if log.status != "success":
            message = log.error.message if log.error else f"status {log.status}"
            raise RuntimeError(f"inspect task {log.eval.task} did not finish: {message}")
        for name, value in scores_of(log).items():
            (stderrs if name.split("/")[-1].endswith("stderr") else metrics)[name] = value
        if log.location:
            log_files.append(str(log.location))
    if not metrics:
        raise RuntimeError(f"inspect reported no metric for {tasks}")
    details = {"tasks": tasks, "stderr": stderrs, "logs": log_files,
               "samples": {log.eval.task: _samples(log) for log in logs},
               "inspect_ai_version": package_version("inspect_ai")}
    return Outcome(metrics, details, str(model_path), seconds)


def scores_of(log: Any) -> dict[str, float]:
    """One log's metrics as ``<task>/<metric>`` (``<task>/<scorer>/<metric>`` with several scorers)."""
    task = str(log.eval.task).split("/")[-1]
    scores = log.results.scores if log.results else []
    out: dict[str, float] = {}
    for score in scores:
        prefix = task if len(scores) == 1 else f"{task}/{score.name}"
        for name, metric in score.metrics.items():
            if isinstance(metric.value, (int, float)) and not isinstance(metric.value, bool):
                out[f"{prefix}/{name}"] = float(metric.value)
    return out


@contextlib.contextmanager
def model_folder(path: Path) -> Iterator[Path]:
    """``path`` itself, or, when it holds adapter files, a temporary folder linking to everything else.

    >>> with model_folder(Path("/exp/runs/run_000/epoch_0")) as folder:    # doctest: +SKIP
    ...     sorted(p.name for p in folder.iterdir())
    ['config.json', 'model-00001-of-00001.safetensors', 'tokenizer.model', ...]
    """
    entries = list(path.iterdir())
    if not any(e.name.startswith(_ADAPTER_PREFIX) for e in entries):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="inspect_model_") as tmp:
        for entry in entries:
            if not entry.name.startswith(_ADAPTER_PREFIX):
                (Path(tmp) / entry.name).symlink_to(entry.resolve())
        yield Path(tmp)


def _samples(log: Any) -> dict[str, int]:
    results = log.results
    return {"total": results.total_samples, "completed": results.completed_samples} if results else {}


def _quiet_inspect() -> None:
    # transformers warns about the pad token on every generate call; the evaluation log wants outcomes.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

