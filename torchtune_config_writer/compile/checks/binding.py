"""Every ``_component_`` binds to what it names, by torchtune's own rules.

torchtune's ``config.validate`` imports each top-level ``_component_`` and
binds its arguments to the signature. We run exactly that, once per distinct
(component, argument names) — the values don't matter to a signature bind —
for nested components too.

    >>> list(check_components({"optimizer": {"_component_": "torch.optim.AdamW", "lrr": 1}}))  # doctest: +SKIP
    [Finding(key='optimizer', message="torch.optim.AdamW does not accept argument 'lrr'. Did you mean 'lr'?", ...)]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterator

from ...errors import did_you_mean
from .. import sigcache
from ..components import accepted_args, import_component, import_error_message, import_torchtune
from . import Finding


def check_components(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Bind every component node of ``cfg`` (top-level and nested)."""
    for path, node in component_nodes(cfg):
        names = tuple(sorted(str(k) for k in node if k != "_component_"))
        for msg in _check_component(node["_component_"], names, top=path.count(".") == 0):
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
def _check_component(component: Any, arg_names: tuple[str, ...], top: bool) -> tuple[str, ...]:
    """Problems of one component node (cached: 1,000 runs share a handful of nodes, and runs share installs)."""
    if isinstance(component, str) and sigcache.cacheable(component):
        key = (component, list(arg_names), top)
        return tuple(sigcache.cached("component", key, lambda: list(_check_component_now(component, arg_names, top))))
    return _check_component_now(component, arg_names, top)


def _check_component_now(component: Any, arg_names: tuple[str, ...], top: bool) -> tuple[str, ...]:
    """Problems of one component node, by torchtune's own rules (imports torchtune)."""
    import inspect

    from omegaconf import OmegaConf

    tt_config = import_torchtune().config
    from torchtune.config._errors import ConfigError, InstantiationError

    if not isinstance(component, str) or not component:
        return (f"_component_ must be a dotted import path, got {component!r}",)
    node = OmegaConf.create({"node": {"_component_": component, **{n: None for n in arg_names}}})
    try:
        if top:
            tt_config.validate(node)
        else:
            # torchtune validates top-level nodes only; check nested ones the same way
            target = import_component(component)
            if target is None:
                return (import_error_message(component),)
            inspect.signature(target).bind_partial(**{n: None for n in arg_names})
    except ConfigError as e:
        return tuple(explain_type_error(str(err), component) for err in e.errors)
    except InstantiationError:
        return (import_error_message(component),)
    except (TypeError, ValueError) as e:
        return (explain_type_error(str(e), component),)
    # torchtune binds **kwargs without complaint; a dataset builder's end up in datasets.load_dataset
    accepted = accepted_args(component)
    if accepted is not None:
        return tuple(explain_type_error(f"unexpected keyword argument '{n}'", component) for n in arg_names if n not in accepted)
    return ()


def explain_type_error(text: str, component: str) -> str:
    """A signature-binding error in words, with the closest accepted argument."""
    bad = re.search(r"unexpected keyword argument '([^']+)'", text)
    if bad:
        fix = did_you_mean(bad.group(1), accepted_args(component) or (), n=1)
        return f"{component} does not accept argument '{bad.group(1)}'.{fix}"
    return f"{component}: {text.strip()}"
