"""The tokens each run trains on, counted by ``generate`` for ``slurm.time: auto`` (Appendix J.5).

``submit`` turns a run's tokens into its time limit (``execute/walltime.py``):
tokens / the tokens per second that completed runs of the same model and
recipe reached, times a safety factor. So the count must be what the recipe
really trains on: the run's tokenizer and dataset are instantiated with
torchtune exactly as the recipe does it (``config.instantiate(cfg.dataset,
tokenizer)``: truncation to the tokenizer's ``max_seq_len``, packing when
``packed: true``), every sample is tokenized once and the lengths summed;
that sum is then scaled to what the recipe's loop reads (``trained_tokens``):
``epochs`` passes over the batches its DataLoader yields (last partial batch
dropped), at most ``max_steps_per_epoch x gradient_accumulation_steps`` batches
per epoch. Runs that share a tokenizer and dataset (a learning-rate sweep)
share one count.

    >>> trained_tokens(400, 44_000, epochs=2, batch_size=4, gradient_accumulation_steps=1, max_steps_per_epoch=20)
    17600
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError, one_line
from ..expdir import TIME_AUTO, Validation

if TYPE_CHECKING:
    from .compiler import GenerationResult, RunResult
    from .schema import Experiment


@dataclass(frozen=True)
class DatasetTokens:
    """One tokenized dataset: how many samples the recipe's dataset has and their tokens in all."""

    samples: int
    tokens: int
    seconds: float = 0.0
    """How long instantiating and tokenizing it took."""


def trained_tokens(samples: int, tokens: int, *, epochs: int, batch_size: int, gradient_accumulation_steps: int = 1,
                   max_steps_per_epoch: int | None = None, world_size: int = 1) -> int:
    """Tokens a run reads in training: ``epochs`` times the samples its DataLoader yields per epoch, each the
    dataset's mean sample length.

    Per epoch each of ``world_size`` ranks gets ceil(samples / world_size) samples (the distributed sampler
    pads), in whole batches (``drop_last``), at most ``max_steps_per_epoch x gradient_accumulation_steps``
    batches (where the recipe's loop breaks). A capped epoch reads a shuffled subset, so the mean length is
    the expected one.

    >>> trained_tokens(400, 44_000, epochs=1, batch_size=4)            # every sample, once
    44000
    >>> trained_tokens(10, 1_000, epochs=3, batch_size=4)              # 2 whole batches of 4 per epoch
    2400
    >>> trained_tokens(400, 44_000, epochs=1, batch_size=4, gradient_accumulation_steps=2, max_steps_per_epoch=5)
    4400
    """
    if samples <= 0 or epochs <= 0:
        return 0
    per_rank = math.ceil(samples / world_size)
    batches = per_rank // batch_size
    if max_steps_per_epoch is not None:
        batches = min(batches, max_steps_per_epoch * gradient_accumulation_steps)
    read = batches * batch_size * world_size
    return round(tokens * read / samples * epochs)


def needs_tokens(result: GenerationResult) -> list[RunResult]:
    """The runs whose ``slurm.time`` is ``auto`` (their own resources or the experiment's) and whose config
    passed validation: the ones whose tokens are counted."""
    return [r for r in result.runs if r.resources.get("time", result.slurm.time) == TIME_AUTO
            and r.validation == Validation.PASSED]


def data_key(config: dict[str, Any]) -> str:
    """What a run's token count depends on (its tokenizer and dataset sections), as one string:
    runs with equal keys share a count."""
    return json.dumps([config.get("tokenizer"), config.get("dataset")], sort_keys=True, default=str)


def count_dataset(config: dict[str, Any]) -> DatasetTokens:
    """Instantiate the run's tokenizer and dataset as the recipe does and sum the samples' token counts.

    A preference dataset (DPO) counts both the chosen and the rejected sequence of a sample.
    Raises what torchtune or ``datasets`` raise (a missing file, a hub dataset without network), or
    ValueError for samples it cannot measure.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from .components import import_torchtune

    import_torchtune()
    from torchtune import config as tt_config
    from torchtune.datasets import ConcatDataset

    t0 = time.perf_counter()
    cfg = OmegaConf.create(config)
    if not isinstance(cfg.get("tokenizer"), DictConfig) or cfg.get("dataset") is None:
        raise ValueError("the config has no tokenizer or no dataset section to count tokens with")
    tokenizer = tt_config.instantiate(cfg.tokenizer)
    if isinstance(cfg.dataset, ListConfig):  # the recipe concatenates a list of datasets
        ds = ConcatDataset(datasets=[tt_config.instantiate(c, tokenizer) for c in cfg.dataset])
    else:
        ds = tt_config.instantiate(cfg.dataset, tokenizer)
    total = 0
    for i in range(len(ds)):
        total += _sample_tokens(ds[i])
    return DatasetTokens(len(ds), total, time.perf_counter() - t0)


def _sample_tokens(sample: Any) -> int:
    if isinstance(sample, dict):
        if "tokens" in sample:
            return len(sample["tokens"])
        pair = [k for k in ("chosen_input_ids", "rejected_input_ids") if k in sample]
        if pair:
            return sum(len(sample[k]) for k in pair)
    keys = ", ".join(map(str, sample)) if isinstance(sample, dict) else type(sample).__name__
    raise ValueError(f"its samples have no 'tokens' (nor chosen/rejected input ids) to count: {keys}")


def world_size(result: GenerationResult, run: RunResult) -> int:
    """Processes a distributed run trains on (its GPUs x nodes); 1 for a single-device recipe."""
    if not result.distributed:
        return 1
    own = {**{"gpus_per_run": result.slurm.gpus_per_run, "nodes": result.slurm.nodes}, **run.resources}
    return max(1, int(own["gpus_per_run"] or 1)) * max(1, int(own["nodes"] or 1))


def count_tokens(result: GenerationResult) -> str | None:
    """Set ``tokens`` of every run whose ``slurm.time`` is ``auto`` (``needs_tokens``); return the line
    ``generate`` prints on what was counted (None when no run needs it).

    Raises ``ValidationError`` naming the first run whose data cannot be loaded here, and the fix.
    """
    runs = needs_tokens(result)
    if not runs:
        return None
    from omegaconf import OmegaConf

    t0 = time.perf_counter()
    counted: dict[str, DatasetTokens] = {}
    for run in runs:
        key = data_key(run.plain)
        if key not in counted:
            try:
                counted[key] = count_dataset(run.plain)
            except Exception as e:  # torchtune, datasets and the hub raise anything: report it as one line
                raise ValidationError(
                    f"{result.experiment.where('slurm', 'time')}: slurm.time is auto, so generate counts the tokens "
                    f"each run trains on, but the tokenizer and dataset of {run.run_id} could not be loaded here "
                    f"({one_line(e, 300)}). Make them loadable on this machine (a hub dataset needs the network or "
                    "its files in the Hugging Face cache), or give slurm.time explicitly (e.g. 04:00:00)"
                ) from None
        data = counted[key]
        cfg = OmegaConf.create(run.plain)  # the recipe reads these through OmegaConf: interpolations resolved
        steps = cfg.get("max_steps_per_epoch")
        run.tokens = trained_tokens(
            data.samples, data.tokens, epochs=int(cfg.get("epochs", 1)), batch_size=int(cfg.get("batch_size", 1)),
            gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps") or 1),
            max_steps_per_epoch=None if steps is None else int(steps), world_size=world_size(result, run))
    samples = sum(d.samples for d in counted.values())
    return (f"slurm.time auto: counted the tokens of {len(runs)} run(s) ({_fmt(min(r.tokens for r in runs))}"
            + (f" to {_fmt(max(r.tokens for r in runs))}" if len({r.tokens for r in runs}) > 1 else "")
            + f" each) from {len(counted)} tokenized dataset(s) of {_fmt(samples)} samples in "
            f"{time.perf_counter() - t0:.1f} s; submit sets their time limits from completed runs")


def _fmt(n: int) -> str:
    return f"{n:,}"


def check_evaluation_time(exp: Experiment, times: list[str | None]) -> None:
    """Refuse ``auto`` as the evaluations' time limit: training throughput says nothing of how long an
    evaluation takes. ``times`` are the runs' own ``slurm.time``; an evaluation inherits it unless
    ``evaluation.slurm.time`` is given."""
    if exp.evaluation is None:
        return
    own = exp.evaluation.slurm.time if exp.evaluation.slurm is not None else None
    if own == TIME_AUTO:
        raise ValidationError(
            f"{exp.where('evaluation', 'slurm')}: evaluation.slurm.time cannot be auto: time limits are estimated "
            "from training throughput, which says nothing of how long an evaluation takes; give it as HH:MM:SS")
    if own is None and TIME_AUTO in times:
        raise ValidationError(
            f"{exp.where('slurm', 'time')}: slurm.time is auto and the runs are evaluated: the evaluation tasks "
            "would inherit it, but their time cannot be estimated from training throughput; "
            "set evaluation.slurm.time (e.g. 00:30:00)")
