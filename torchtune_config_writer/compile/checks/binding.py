"""Every ``_component_`` binds to what it names, with what the recipe passes itself.

torchtune's ``config.validate`` binds each top-level node's arguments to the
component's signature, but forgives a missing argument (it cannot know what the
recipe adds). We know: the recipes call ``config.instantiate(cfg.optimizer,
model.parameters())``, ``config.instantiate(cfg.lr_scheduler, optimizer,
num_training_steps=..., last_epoch=...)``, ``config.instantiate(cfg.dataset,
tokenizer)`` and so on (``RECIPE_ARGS`` below). So for a known recipe each of
those nodes is bound *completely* with those arguments added: a missing
``source`` of ``instruct_dataset`` is an error, and so is a component the
recipe cannot call (torch's ``CosineAnnealingLR`` gets no ``num_training_steps``).

A signature bind depends only on the component and the argument *names*, so
answers are cached per (component, argument names, what the recipe passes),
in memory and between runs (``sigcache``).

    >>> list(check_components({"optimizer": {"_component_": "torch.optim.AdamW", "lrr": 1}}))  # doctest: +SKIP
    [Finding(key='optimizer', message="torch.optim.AdamW does not accept argument 'lrr'. Did you mean 'lr'?", ...)]

Recipes we don't know (a ``.py`` file of your own) keep torchtune's own
leniency for top-level nodes; nested nodes are bound partially (their parent,
not the recipe, calls them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from ...errors import did_you_mean
from .. import sigcache
from ..components import accepted_args, import_component, import_error_message, import_torchtune
from . import Finding
from ..registry import registry_recipe

# ----------------------------------------------------------------------------- what the recipes pass


@dataclass(frozen=True)
class Passed:
    """What a recipe hands ``config.instantiate`` for one key, besides the node's own arguments."""

    positional: tuple[str, ...] = ()
    """What each positional argument is, in words ("the optimizer")."""
    keywords: tuple[str, ...] = ()
    """Keyword arguments by name; they override the node's values (OmegaConf.merge)."""
    example: str = ""
    """A component that takes them, for the message."""

    def describe(self) -> str:
        return _and(list(self.positional) + list(self.keywords))


NOTHING = Passed()
OPTIMIZER = Passed(("the model's parameters",), (), "torch.optim.AdamW")
LR_SCHEDULER = Passed(("the optimizer",), ("num_training_steps", "last_epoch"),
                      "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup")
SFT_DATASET = Passed(("the tokenizer",), (), "torchtune.datasets.alpaca_dataset")
PREFERENCE_DATASET = Passed((), ("tokenizer",), "torchtune.datasets.stack_exchange_paired_dataset")
CHECKPOINTER = Passed((), ("should_load_recipe_state",), "torchtune.training.FullModelHFCheckpointer")

#: Keys every recipe instantiates with nothing added (``config.instantiate(cfg.model)``).
_PLAIN = {k: NOTHING for k in ("model", "tokenizer", "loss", "metric_logger", "profiler", "tensor_parallel_plan")}
#: ``recipes/full_finetune_single_device.py``: optimizer 496, lr_scheduler 536, dataset 571, checkpointer 200.
_FINETUNE = {**_PLAIN, "optimizer": OPTIMIZER, "lr_scheduler": LR_SCHEDULER, "dataset": SFT_DATASET,
             "checkpointer": CHECKPOINTER}
#: ``recipes/lora_dpo_single_device.py:387``: the dataset gets ``tokenizer=`` by keyword.
_DPO = {**_FINETUNE, "dataset": PREFERENCE_DATASET}
#: ``recipes/knowledge_distillation_single_device.py``: kd_loss 274, teacher checkpointer 171, teacher model 478.
_KD = {**_FINETUNE, "kd_loss": NOTHING, "teacher_model": NOTHING, "teacher_checkpointer": NOTHING}
#: ``recipes/qat_distributed.py:477`` instantiates the quantizer alone.
_QAT = {**_FINETUNE, "quantizer": NOTHING}
#: ``recipes/ppo_full_finetune_single_device.py``: four checkpointers 473-491, optimizer 634, dataset 652.
_PPO = {**_PLAIN, "optimizer": OPTIMIZER, "dataset": PREFERENCE_DATASET, "policy_model": NOTHING,
        "reward_and_value_model": NOTHING, "checkpointer": CHECKPOINTER, "ref_policy_checkpointer": CHECKPOINTER,
        "value_checkpointer": CHECKPOINTER, "reward_checkpointer": CHECKPOINTER}
#: ``recipes/generate.py``, ``eleuther_eval.py``, ``quantize.py``: everything by itself.
_INFERENCE = {**_PLAIN, "checkpointer": NOTHING, "quantizer": NOTHING}

RECIPE_ARGS: dict[str, dict[str, Passed]] = {
    "full_finetune_single_device": _FINETUNE,
    "full_finetune_distributed": _FINETUNE,
    "lora_finetune_single_device": _FINETUNE,
    "lora_finetune_distributed": _FINETUNE,
    "dev/lora_finetune_distributed_multi_dataset": _FINETUNE,
    "dev/early_exit_finetune_distributed": {k: v for k, v in _FINETUNE.items() if k != "lr_scheduler"},
    "lora_dpo_single_device": _DPO,
    "lora_dpo_distributed": _DPO,
    "full_dpo_distributed": {**_DPO, "ref_checkpointer": CHECKPOINTER},
    "knowledge_distillation_single_device": _KD,
    "knowledge_distillation_distributed": _KD,
    "qat_distributed": _QAT,
    "qat_lora_finetune_distributed": _QAT,
    "ppo_full_finetune_single_device": _PPO,
    "generate": _INFERENCE,
    "dev/generate_v2": _INFERENCE,
    "dev/generate_v2_distributed": _INFERENCE,
    "eleuther_eval": _INFERENCE,
    "quantize": _INFERENCE,
}


def passed_for(recipe: str, path: str) -> Passed | None:
    """What ``recipe`` passes to the node at ``path`` (``dataset[1]`` counts as ``dataset``); None: unknown."""
    table = RECIPE_ARGS.get(registry_recipe(recipe))
    if table is None or "." in path:
        return None
    return table.get(path.split("[")[0])


# ----------------------------------------------------------------------------- checking


def check_components(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Bind every component node of ``cfg`` (top-level and nested)."""
    for path, node in component_nodes(cfg):
        names = tuple(sorted(str(k) for k in node if k != "_component_"))
        passed = passed_for(recipe, path)
        if passed is not None:
            mode = "recipe"
        else:
            mode = "nested" if "." in path else "top"
        spec = (path.split("[")[0], passed.positional, passed.keywords, passed.example) if passed else ()
        for msg in _check_component(node["_component_"], names, mode, spec):
            yield Finding(path, msg)


def component_nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """``(dotted path, node)`` of every mapping holding a ``_component_``, outermost first."""
    if isinstance(node, dict):
        if prefix and "_component_" in node:
            yield prefix, node
        for k, v in node.items():
            yield from component_nodes(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from component_nodes(v, f"{prefix}[{i}]")


@lru_cache(maxsize=None)
def _check_component(component: Any, arg_names: tuple[str, ...], mode: str, spec: tuple) -> tuple[str, ...]:
    """Problems of one component node (cached: 1,000 runs share a handful of nodes, and runs share installs).

    ``mode``: "recipe" (bind fully with what the recipe passes, ``spec``), "top"
    (torchtune's ``config.validate``), "nested" (a partial bind).
    """
    if isinstance(component, str) and sigcache.cacheable(component):
        key = (component, list(arg_names), mode, _jsonable(spec))
        return tuple(sigcache.cached("component", key, lambda: list(_check_now(component, arg_names, mode, spec))))
    return _check_now(component, arg_names, mode, spec)


def _jsonable(spec: tuple) -> list:
    return [list(x) if isinstance(x, tuple) else x for x in spec]


def _check_now(component: Any, arg_names: tuple[str, ...], mode: str, spec: tuple) -> tuple[str, ...]:
    """Problems of one component node, by torchtune's own rules and the recipe's call (imports torchtune)."""
    if not isinstance(component, str) or not component:
        return (f"_component_ must be a dotted import path, got {component!r}",)
    import_torchtune()
    target = import_component(component)
    if target is None:
        return (import_error_message(component),)
    signature = _signature(target)
    if signature is None:
        return ()  # a builtin without a signature: nothing to bind against
    if mode == "recipe":
        key, positional, keywords, example = spec
        problems = _bind_as_recipe(component, signature, arg_names, key, Passed(positional, keywords, example))
    else:
        problems = _bind_as_torchtune(component, signature, arg_names, partial=mode == "nested")
    if problems:
        return problems
    return _unknown_dataset_kwargs(component, arg_names)


def _signature(target: Any) -> Any:
    import inspect

    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _bind_as_torchtune(component: str, signature: Any, arg_names: tuple[str, ...], partial: bool) -> tuple[str, ...]:
    """torchtune's ``config.validate``: a full bind, forgiving missing arguments (the recipe may add them)."""
    kwargs = {n: None for n in arg_names}
    try:
        signature.bind_partial(**kwargs) if partial else signature.bind(**kwargs)
    except TypeError as e:
        if "missing a required argument" not in str(e):
            return (explain_type_error(str(e), component),)
        try:
            signature.bind_partial(**kwargs)
        except TypeError as e2:
            return (explain_type_error(str(e2), component),)
    return ()


def _bind_as_recipe(component: str, signature: Any, arg_names: tuple[str, ...], key: str,
                    passed: Passed) -> tuple[str, ...]:
    """A full bind of the node's arguments plus what the recipe passes, as the recipe's call would bind."""
    refused = _refused_by(signature, passed)
    if refused:
        return (_cannot_take(component, key, passed, refused),)
    # the recipe's keywords override the node's (OmegaConf.merge), so the union is bound once
    kwargs = {n: None for n in (*arg_names, *passed.keywords)}
    try:
        signature.bind(*(None for _ in passed.positional), **kwargs)
    except TypeError as e:
        missing = re.search(r"missing a required argument: '([^']+)'", str(e))
        if missing:
            return (f"{component} needs argument '{missing.group(1)}', which the config does not set "
                    f"(add {key}.{missing.group(1)})",)
        twice = re.search(r"multiple values for argument '([^']+)'", str(e))
        if twice:
            return (_twice(component, key, passed, twice.group(1)),)
        return (explain_type_error(str(e), component),)
    return ()


def _refused_by(signature: Any, passed: Passed) -> list[str]:
    """What the recipe passes that the component cannot take (keyword names, or the positional arguments)."""
    params = list(signature.parameters.values())
    kinds = {p.kind for p in params}
    refused = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < len(passed.positional) and inspect_kind("VAR_POSITIONAL") not in kinds:
        refused.append(f"{_and(list(passed.positional))} as a positional argument")
    if inspect_kind("VAR_KEYWORD") not in kinds:
        takes = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        refused.extend(k for k in passed.keywords if k not in takes)
    return refused


def inspect_kind(name: str) -> Any:
    import inspect

    return getattr(inspect.Parameter, name)


def _cannot_take(component: str, key: str, passed: Passed, refused: list[str]) -> str:
    fix = f" Use a component that does, e.g. {passed.example}." if passed.example else ""
    return (f"the recipe passes {passed.describe()} to {key} itself, and {component} does not take "
            f"{_and(refused)}.{fix}")


def _twice(component: str, key: str, passed: Passed, name: str) -> str:
    return (f"{component}: the recipe passes {passed.describe()} itself, so '{name}' is given twice; "
            f"remove {key}.{name}")


def _unknown_dataset_kwargs(component: str, arg_names: tuple[str, ...]) -> tuple[str, ...]:
    # torchtune binds **kwargs without complaint; a dataset builder's end up in datasets.load_dataset
    accepted = accepted_args(component)
    if accepted is None:
        return ()
    return tuple(explain_type_error(f"unexpected keyword argument '{n}'", component)
                 for n in arg_names if n not in accepted)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def explain_type_error(text: str, component: str) -> str:
    """A signature-binding error in words, with the closest accepted argument."""
    bad = re.search(r"unexpected keyword argument '([^']+)'", text)
    if bad:
        fix = did_you_mean(bad.group(1), accepted_args(component) or (), n=1)
        return f"{component} does not accept argument '{bad.group(1)}'.{fix}"
    return f"{component}: {text.strip()}"
