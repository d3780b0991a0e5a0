"""Values against the ranges and sets the code expects: lr > 0, dropout in [0, 1), known dtypes.

    >>> [f.message for f in check_ranges({"epochs": 0})]
    ['must be an integer >= 1, got 0']
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterator

from ...errors import did_you_mean
from .. import sigcache
from ..components import import_torchtune
from . import Finding

_DTYPES = ("fp32", "bf16", "fp16", "fp64")
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|npu|hpu|meta)(:\d+)?$")


def check_ranges(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    for key in ("epochs", "batch_size", "gradient_accumulation_steps", "log_every_n_steps"):
        if key in cfg and not _positive_int(cfg[key]):
            yield Finding(key, f"must be an integer >= 1, got {cfg[key]!r}")
    if cfg.get("max_steps_per_epoch") is not None and not _positive_int(cfg["max_steps_per_epoch"]):
        yield Finding("max_steps_per_epoch", f"must be an integer >= 1 or null, got {cfg['max_steps_per_epoch']!r}")
    if cfg.get("seed") is not None and not (isinstance(cfg["seed"], int) and not isinstance(cfg["seed"], bool)):
        yield Finding("seed", f"must be an integer or null, got {cfg['seed']!r}")
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, dict) and "lr" in optimizer:
        lr = optimizer["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            if not (isinstance(lr, str) and "${" in lr):
                yield Finding("optimizer.lr", f"must be a positive number, got {lr!r}")
    if "dtype" in cfg and cfg["dtype"] is not None and cfg["dtype"] not in _DTYPES:
        yield Finding("dtype", f"must be one of {', '.join(_DTYPES)}, got {cfg['dtype']!r}." + did_you_mean(str(cfg["dtype"]), _DTYPES, n=1))
    if "device" in cfg and not (isinstance(cfg["device"], str) and _DEVICE.match(cfg["device"])):
        yield Finding("device", f"must be a device such as cpu, cuda or cuda:0, got {cfg['device']!r}")
    checkpointer = cfg.get("checkpointer")
    if isinstance(checkpointer, dict) and "model_type" in checkpointer:
        known = _model_types()
        if known and checkpointer["model_type"] not in known:
            yield Finding("checkpointer.model_type", f"unknown model_type {checkpointer['model_type']!r}." + (
                did_you_mean(str(checkpointer["model_type"]), known, n=1) or f" Known: {', '.join(known)}"
            ))


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@lru_cache(maxsize=1)
def _model_types() -> tuple[str, ...]:
    return tuple(sigcache.cached("model_types", (), lambda: list(_model_types_now())))


def _model_types_now() -> tuple[str, ...]:
    import_torchtune()
    try:
        from torchtune.training.checkpointing._utils import ModelType
    except ImportError:
        return ()
    return tuple(m.name for m in ModelType)
