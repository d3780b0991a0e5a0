"""Values against the ranges and sets the code expects: lr > 0, dropout in [0, 1), known dtypes.

Two kinds of keys:

- keys checked here in full, type and range in one message (the top-level
  counts, ``seed``, ``dtype``, ``device`` and every component's ``lr``;
  ``value_types.LEFT_TO_RANGES_*`` keeps them out of the type check);
- component arguments whose type the annotation check owns (``lora_rank``,
  ``lora_alpha``, ``*dropout``): only their range is checked here, and only
  when the type is right, so a key is never reported twice.

An implausible but legal value (lr 2 with AdamW) is a warning, never a refusal.

    >>> [f.message for f in check_ranges({"epochs": 0})]
    ['must be an integer >= 1, got 0']
    >>> [f.warning for f in check_ranges({"optimizer": {"_component_": "torch.optim.AdamW", "lr": 3}})]
    [True]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

from ...errors import did_you_mean
from .. import sigcache
from ..components import import_torchtune
from . import Finding
from .binding import component_nodes
from .value_types import LEFT_TO_RANGES_ARGS, LEFT_TO_RANGES_TOP, UNRESOLVED, Desc, fits, fix_for, recipe_source, resolve_value, show

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|npu|hpu|meta)(:\d+)?$")
#: set_seed refuses seeds outside numpy's uint32 (less the number of processes - 1)
_SEED_MAX = 2**32 - 1
#: torch.set_deterministic_debug_mode's settings
_DEBUG_MODES = ("default", "warn", "error", 0, 1, 2)
#: Above this an Adam-family lr is almost surely a typo (fine-tuning uses about 1e-5 to 1e-3).
_ADAM_LR_WARN = 0.1
#: Above this any optimizer's lr is almost surely a typo.
_ANY_LR_WARN = 10.0


@dataclass(frozen=True)
class _Rule:
    """A number in a range: its type, the test, and the words saying both."""

    desc: Desc
    ok: Callable[[Any], bool]
    says: str
    why: str = ""
    """What the value is, to say after a value out of range."""


def _at_least_1(v: Any) -> bool:
    return v is None or v >= 1


_COUNT = _Rule("int", lambda v: v >= 1, "an integer >= 1")
#: Top-level keys checked here, type and range together.
TOP_RULES: dict[str, _Rule] = {
    "epochs": _COUNT,
    "batch_size": _COUNT,
    "gradient_accumulation_steps": _COUNT,
    "log_every_n_steps": _COUNT,
    "max_steps_per_epoch": _Rule({"union": ["int", "none"]}, _at_least_1, "an integer >= 1 or null",
                                 "null trains on the whole dataset each epoch"),
    "seed": _Rule({"union": ["int", "none"]}, lambda v: v is None or 0 <= v <= _SEED_MAX,
                  f"an integer from 0 to {_SEED_MAX} or null", "null draws a new seed per run"),
}
#: Component arguments whose range is checked once the annotation check found the type right.
ARG_RULES: dict[str, _Rule] = {
    "lora_rank": _Rule("int", lambda v: v >= 1, "an integer >= 1", "the rank of each LoRA adapter"),
    "lora_alpha": _Rule("float", lambda v: v > 0, "a number > 0", "LoRA scales its update by lora_alpha / lora_rank"),
}
_DROPOUT = _Rule("float", lambda v: 0 <= v < 1, "a number in [0, 1)", "a dropout probability; 1 would drop everything")

assert set(TOP_RULES) | {"dtype", "device"} == LEFT_TO_RANGES_TOP, "value_types must skip exactly the keys checked here"


def check_ranges(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Every value of ``cfg`` outside the range or set its code accepts."""
    for key, rule in TOP_RULES.items():
        if key in cfg:
            yield from _check_rule(cfg, key, key, cfg[key], rule, owns_type=True)
    yield from _check_dtype(cfg, recipe)
    yield from _check_device(cfg)
    yield from _check_debug_mode(cfg)
    yield from _check_model_type(cfg)
    for path, node in component_nodes(cfg):
        yield from _check_node(cfg, path, node)


def _check_node(cfg: dict, path: str, node: dict) -> Iterator[Finding]:
    for arg, raw in node.items():
        arg = str(arg)
        if arg in LEFT_TO_RANGES_ARGS:
            yield from _check_lr(cfg, f"{path}.{arg}", raw, str(node.get("_component_", "")))
        rule = ARG_RULES.get(arg) or (_DROPOUT if arg.endswith("dropout") else None)
        if rule:
            yield from _check_rule(cfg, f"{path}.{arg}", arg, raw, rule, owns_type=False)


def _check_rule(cfg: dict, key: str, arg: str, raw: Any, rule: _Rule, owns_type: bool) -> Iterator[Finding]:
    value = resolve_value(cfg, key, raw)
    if value is UNRESOLVED:
        return
    if not fits(value, rule.desc):
        if owns_type:  # otherwise the annotation check reports the type
            yield Finding(key, _wrong(arg, raw, value, rule))
        return
    if not rule.ok(value):
        why = f" ({rule.why})" if rule.why else ""
        yield Finding(key, f"must be {rule.says}, got {show(value)}{why}")


def _wrong(arg: str, raw: Any, value: Any, rule: _Rule) -> str:
    fix = fix_for(arg, raw, value, rule.desc)
    return f"must be {rule.says}, got {show(value)}" + (f". {fix}" if fix else "")


# ----------------------------------------------------------------------------- lr


def _check_lr(cfg: dict, key: str, raw: Any, component: str) -> Iterator[Finding]:
    lr = resolve_value(cfg, key, raw)
    if lr is UNRESOLVED:
        return
    if isinstance(lr, dict) and "_component_" in lr:
        return  # a tensor built by a component: nothing to compare
    if not fits(lr, "float") or not lr > 0:  # `not >` refuses nan too
        fix = fix_for("lr", raw, lr, "float") if not fits(lr, "float") else "Write a learning rate such as 2e-5"
        yield Finding(key, f"must be a positive number, got {show(lr)}" + (f". {fix}" if fix else ""))
        return
    name = component.rsplit(".", 1)[-1]
    limit = _ADAM_LR_WARN if "adam" in name.lower() else _ANY_LR_WARN
    if lr > limit:
        yield Finding(key, f"lr {lr} is implausibly large for {name or 'this optimizer'} (fine-tuning usually uses "
                           f"1e-5 to 1e-3); check the exponent, e.g. 2e-5 rather than 2e5", warning=True)


# ----------------------------------------------------------------------------- dtype, device, debug mode, model_type


def _check_dtype(cfg: dict, recipe: str) -> Iterator[Finding]:
    if "dtype" not in cfg:
        return
    dtype = resolve_value(cfg, "dtype", cfg["dtype"])
    if dtype is None or dtype is UNRESOLVED:
        return  # training.get_dtype(None) is fp32
    refuses = _refuses_fp16(recipe)
    offered = [d for d in _dtypes() if d != "fp16" or refuses is False]
    if dtype == "fp16":
        if refuses is None or (refuses and not _recipe_rule_says_fp16(recipe)):
            who = f"the {recipe} recipe refuses" if refuses else "torchtune's training recipes refuse"
            msg = f"{who} fp16 (they train in bf16 or fp32 only); use dtype: bf16, or fp32 on hardware without bf16"
            yield Finding("dtype", msg, warning=refuses is None)  # a recipe we cannot read may take it
    elif dtype not in _dtypes():
        hint = did_you_mean(str(dtype), offered, n=1) or f" Use {' or '.join(offered[:2])}."
        yield Finding("dtype", f"must be one of {', '.join(offered)}, got {show(dtype)}.{hint}")


@lru_cache(maxsize=None)
def _refuses_fp16(recipe: str) -> bool | None:
    """Whether the recipe raises on fp16 (read from its source); None when its source cannot be read."""
    source = recipe_source(recipe)
    if source is None:
        return None
    return re.search(r"==\s*torch\.float16\s*:\s*\n\s*raise", source) is not None


@lru_cache(maxsize=None)
def _recipe_rule_says_fp16(recipe: str) -> bool:
    """Whether recipe_rules already refuses fp16 for this recipe (its table cites the recipe's line): say it once."""
    from .recipe_rules import check_recipe_rules

    return any(f.key == "dtype" for f in check_recipe_rules({"dtype": "fp16"}, recipe))


def _check_device(cfg: dict) -> Iterator[Finding]:
    if "device" not in cfg:
        return
    device = resolve_value(cfg, "device", cfg["device"])
    if device is not UNRESOLVED and not (isinstance(device, str) and _DEVICE.match(device)):
        yield Finding("device", f"must be a device such as cpu, cuda or cuda:0, got {show(device)}")


def _check_debug_mode(cfg: dict) -> Iterator[Finding]:
    mode = resolve_value(cfg, "cudnn_deterministic_mode", cfg.get("cudnn_deterministic_mode"))
    if mode is None or mode is UNRESOLVED or not isinstance(mode, (str, int)):
        return  # a wrong type is the annotation check's
    if isinstance(mode, bool) or mode not in _DEBUG_MODES:
        hint = did_you_mean(str(mode), [str(m) for m in _DEBUG_MODES[:3]], n=1)
        yield Finding("cudnn_deterministic_mode", "must be null, default, warn or error (or 0, 1, 2: "
                                                  f"torch.set_deterministic_debug_mode's settings), got {show(mode)}.{hint}")


def _check_model_type(cfg: dict) -> Iterator[Finding]:
    checkpointer = cfg.get("checkpointer")
    if isinstance(checkpointer, dict) and "model_type" in checkpointer:
        known = _model_types()
        if known and checkpointer["model_type"] not in known:
            yield Finding("checkpointer.model_type", f"unknown model_type {checkpointer['model_type']!r}." + (
                did_you_mean(str(checkpointer["model_type"]), known, n=1) or f" Known: {', '.join(known)}"
            ))


@lru_cache(maxsize=1)
def _dtypes() -> tuple[str, ...]:
    """The dtype names training.get_dtype accepts, best first."""
    names = tuple(sigcache.cached("dtypes", (), lambda: list(_dtypes_now())))
    return tuple(sorted(names, key=lambda d: (d != "bf16", d != "fp32", d)))


def _dtypes_now() -> tuple[str, ...]:
    import_torchtune()
    from torchtune.training.precision import PRECISION_STR_TO_DTYPE

    return tuple(PRECISION_STR_TO_DTYPE)


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
