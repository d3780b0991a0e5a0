"""What installed components are: import a ``_component_`` path, ask which arguments it accepts.

This is the one place torchtune (and so torch) gets imported, on first need:
``import torchtune`` takes seconds, and commands that don't need it never call
anything here. Answers about components of torch, torchtune, torchao and
datasets are also kept between runs (``sigcache.py``), so a second
``generate`` of the same kind of config imports nothing.

    >>> sorted(accepted_args("torch.optim.SGD"))[:3]          # doctest: +SKIP
    ['dampening', 'differentiable', 'foreach']
    >>> import_error_message("torch.optim.AdamWW")              # doctest: +SKIP
    "cannot import component 'torch.optim.AdamWW': 'AdamWW' not found in 'torch.optim'. Did you mean 'torch.optim.AdamW'?"
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from functools import lru_cache
from types import ModuleType
from typing import Any

from ..errors import did_you_mean
from . import sigcache


@lru_cache(maxsize=1)
def import_torchtune() -> ModuleType:
    """``import torchtune`` (once), with torchao's import-time warning silenced."""
    # torchao warns on every import that its C++ extensions don't match this torch build;
    # the pure-Python parts torchtune uses work, and the warning only alarms users.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torchtune
    import torchtune.config  # noqa: F401

    return torchtune


def import_component(path: str) -> Any | None:
    """The object a dotted path names (``torch.optim.AdamW``), or None when it cannot be imported.

    The longest importable module prefix is imported, the rest are attributes,
    as torchtune's own instantiation resolves a ``_component_``.
    """
    import_torchtune()  # components import torchtune anyway; this keeps its import quiet
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def import_error_message(component: str) -> str:
    """Why ``component`` cannot be imported, and what to write instead."""
    top = component.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return (f"cannot import component '{component}': module '{top}' is not installed here "
                f"(pip install {top}, or choose another component)")
    module, _, attr = component.rpartition(".")
    parent = import_component(module) if module else None
    hint = did_you_mean(attr, dir(parent), n=1, show=lambda m: f"{module}.{m}") if parent is not None else ""
    return f"cannot import component '{component}': '{attr}' not found in '{module}'.{hint}"


@lru_cache(maxsize=None)
def accepted_args(component: str) -> frozenset[str] | None:
    """Argument names a component accepts, or None when it takes any (``**kwargs``).

    torchtune's dataset builders pass ``**kwargs`` on to ``datasets.load_dataset``,
    so for them the answer is their own arguments plus load_dataset's: a typo
    there is caught. A component that cannot be imported accepts nothing.
    """
    if sigcache.cacheable(component):
        names = sigcache.cached("accepted_args", (component,), lambda: _sorted_or_none(_accepted_args(component)))
        return None if names is None else frozenset(names)
    return _accepted_args(component)


def parameters(component: str) -> dict[str, inspect.Parameter] | None:
    """The signature's parameters ({} when it cannot be imported, None when it has no signature)."""
    target = import_component(component)
    if target is None:
        return {}
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None


def _accepted_args(component: str) -> frozenset[str] | None:
    params = parameters(component)
    if params is None:
        return None
    names = _named(params)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        if not component.startswith("torchtune.datasets"):
            return None
        names |= _named(parameters("datasets.load_dataset") or {})
    return frozenset(names)


def _named(params: dict[str, inspect.Parameter]) -> set[str]:
    return {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _sorted_or_none(names: frozenset[str] | None) -> list[str] | None:
    return None if names is None else sorted(names)
