"""The evaluation program: every config given, in one process, one result file each.

``python -m torchtune_config_writer.evaluate [--report REPORT.json] [--force] CONFIG.yaml ...``

Each config is read with OmegaConf and dispatched on its ``evaluator`` key.
Configs that evaluate the same checkpoint are run one after the other and share
the loaded model (``loading.ModelCache``); the order is otherwise the order
given. A config whose ``result_file`` exists is skipped unless ``--force``. A
config that fails is logged with its traceback (on stderr: this is a log file)
and the next one runs; the exit status is 1 when any failed.

One progress line per config goes to stdout, as does one ``loading checkpoint``
line each time a model is actually loaded.

    >>> run_configs([Path("eval/run_000/epoch_0.heldout.yaml")], report=Path("r.json"))   # doctest: +SKIP
    loading checkpoint /exp/runs/run_000/epoch_0 (torchtune.models.llama2.llama2)
    [1/1] heldout@epoch_0 run_000: completed in 0.41 s (heldout_loss=5.8312)
    0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..expdir import EvalEntry, EvalResult, Evaluator, write_eval_result
from .loading import ModelCache, checkpoint_key
from .outcome import Outcome
from .report import Report, State

Echo = Callable[[str], None]
#: Longest error text kept in the report (the traceback is in the log).
_ERROR_CHARS = 300


@dataclass
class Job:
    """One config file, read (or not: ``error`` says why)."""

    index: int
    path: Path
    cfg: Any = None
    """The OmegaConf DictConfig; None when the file could not be read."""
    error: BaseException | None = None

    @property
    def name(self) -> str:
        """``EvalEntry.name`` (``heldout@epoch_0``); for an unreadable config, from its file name."""
        try:
            entry = EvalEntry(Evaluator(str(self.cfg.evaluator)), int(self.cfg.epoch), str(self.path),
                              str(self.cfg.get("result_file")))
            return entry.name
        except Exception:  # noqa: BLE001 - a broken config still needs a report key
            # eval/run_000/epoch_0.heldout.yaml -> heldout@epoch_0, the name it would have had
            stem, _, evaluator = self.path.name.removesuffix(".yaml").partition(".")
            return f"{evaluator}@{stem}" if evaluator else self.path.stem

    @property
    def label(self) -> str:
        run = self.cfg.get("run_id") if self.cfg is not None else None
        return f"{self.name} {run}" if run else self.name


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run every config; the exit status (0, or 1 when any failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m torchtune_config_writer.evaluate",
        description="Evaluate checkpoints as the given evaluation configs say, in one process.")
    parser.add_argument("configs", nargs="+", type=Path, metavar="CONFIG.yaml")
    parser.add_argument("--report", type=Path, help="write each config's state, seconds and error to this JSON file")
    parser.add_argument("--force", action="store_true", help="evaluate again configs whose result file exists")
    args = parser.parse_args(argv)
    # Progress bars (lm-eval's requests, datasets' loading) only clutter the log this output goes to.
    os.environ.setdefault("TQDM_DISABLE", "1")
    return run_configs(args.configs, report=args.report, force=args.force)


def run_configs(paths: Sequence[Path], *, report: Path | None = None, force: bool = False,
                echo: Echo | None = None) -> int:
    """Evaluate every config; 1 when any failed, else 0."""
    say = echo or _print
    jobs = _ordered([_read(i, Path(p)) for i, p in enumerate(paths)])
    cache = ModelCache(echo=say)
    book = Report(report)
    for number, job in enumerate(jobs, 1):
        start = time.perf_counter()
        prefix = f"[{number}/{len(jobs)}] {job.label}"
        try:
            state, note = _run(job, cache, force)
        except Exception as exc:  # noqa: BLE001 - one failing config must not stop the others
            seconds = time.perf_counter() - start
            print(f"--- {job.path}: {job.name} failed", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            error = one_line(exc, _ERROR_CHARS)
            book.add(job.name, State.FAILED, seconds, error)
            say(f"{prefix}: FAILED in {seconds:.2f} s ({error})")
            continue
        seconds = time.perf_counter() - start
        book.add(job.name, state, seconds)
        say(f"{prefix}: {state.value} in {seconds:.2f} s ({note})")
    return 1 if book.failed else 0


def _run(job: Job, cache: ModelCache, force: bool) -> tuple[State, str]:
    """Evaluate one config and write its result; (state, what to print)."""
    if job.error is not None:
        raise job.error
    cfg = job.cfg
    evaluator = Evaluator(str(cfg.evaluator))
    result_file = Path(str(_required(cfg, "result_file")))
    if result_file.exists() and not force:
        return State.SKIPPED, f"{result_file} exists; --force evaluates again"
    outcome, seconds, extra = _evaluate(evaluator, cfg, cache)
    details = {**outcome.details, **extra, "config": str(job.path.resolve())}
    write_eval_result(result_file, EvalResult(evaluator=evaluator, epoch=int(_required(cfg, "epoch")),
                                              metrics=outcome.metrics, seconds=round(seconds, 3),
                                              checkpoint=outcome.checkpoint, details=details))
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(outcome.metrics.items())[:4])
    return State.COMPLETED, shown


def _evaluate(evaluator: Evaluator, cfg: Any, cache: ModelCache) -> tuple[Outcome, float, dict[str, Any]]:
    """(outcome, seconds of the evaluation itself, details about loading)."""
    if evaluator is Evaluator.INSPECT:
        from .inspect_eval import evaluate_inspect

        start = time.perf_counter()
        outcome = evaluate_inspect(cfg)
        return outcome, outcome.seconds if outcome.seconds is not None else time.perf_counter() - start, {}
    loaded, fresh = cache.get(cfg)
    _seed(cfg)
    start = time.perf_counter()
    if evaluator is Evaluator.HELDOUT:
        from .heldout import evaluate_heldout

        outcome = evaluate_heldout(cfg, loaded)
    else:
        from .harness import evaluate_lm_eval

        outcome = evaluate_lm_eval(cfg, loaded)
    extra = {"load_seconds": round(loaded.load_seconds, 3) if fresh else 0.0, "shared_model": not fresh}
    seconds = outcome.seconds if outcome.seconds is not None else time.perf_counter() - start
    return outcome, seconds, extra


def _seed(cfg: Any) -> None:
    from torchtune import training

    seed = cfg.get("seed")
    training.set_seed(seed=int(seed) if seed is not None else None)


def _required(cfg: Any, key: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise ValueError(f"the config has no {key!r}")
    return value


def _read(index: int, path: Path) -> Job:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
        if not hasattr(cfg, "get") or "evaluator" not in cfg:
            raise ValueError(f"{path} is not an evaluation config (it has no 'evaluator' key)")
        return Job(index, path, cfg)
    except Exception as exc:  # noqa: BLE001 - reported when its turn comes, like any other failure
        return Job(index, path, error=exc)


def _ordered(jobs: list[Job]) -> list[Job]:
    """The configs in the order given, except that those sharing a checkpoint follow the first of them."""
    keys = {job.index: _key(job) for job in jobs}
    first: dict[str, int] = {}
    for job in jobs:
        if keys[job.index] is not None:
            first.setdefault(keys[job.index], job.index)
    return sorted(jobs, key=lambda job: (first.get(keys[job.index], job.index), job.index))


def _key(job: Job) -> str | None:
    if job.cfg is None:
        return None
    try:
        return checkpoint_key(job.cfg)
    except Exception:  # noqa: BLE001 - a malformed section fails later, in its own turn, with its own message
        return None


def _print(line: str) -> None:
    print(line, flush=True)
