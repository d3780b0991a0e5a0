"""Apply overrides to a config tree (the rules are in appendices/A_merge_semantics.md).

Mappings deep-merge; scalars and lists replace; a mapping with a different
``_component_`` replaces the node whole; ``null`` in the base takes any value;
a mapping onto a scalar (or the reverse) is a ``TypeMismatchError``.
The tree is a ruamel round-trip mapping, so replacing a value keeps the
comment written beside it.

    >>> tree = {"optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.1, "fused": True}}
    >>> apply(tree, Key("lr", ("optimizer", "lr")), 0.01)
    >>> tree["optimizer"]["lr"]
    0.01
"""

from __future__ import annotations

import copy
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..errors import TypeMismatchError, UnknownKeyError
from .keys import Key, split_op


def apply(tree: dict, key: Key, value: Any) -> None:
    """Apply one resolved override to ``tree`` in place."""
    *parents, last = key.path
    node = tree
    for i, part in enumerate(parents):
        if part not in node or node[part] is None:
            if key.op != "add":
                raise UnknownKeyError(f"'{key.raw}': '{'.'.join(key.path[: i + 1])}' is not in the config")
            node[part] = CommentedMap()
        node = node[part]
        if not isinstance(node, dict):
            raise TypeMismatchError(
                f"'{key.raw}': '{'.'.join(key.path[: i + 1])}' is a {_kind(node)}, not a mapping, so it has no key '{last}'"
            )
    if key.op == "delete":
        if last not in node:
            raise UnknownKeyError(f"'{key.raw}': cannot delete '{key.dotted}', it is not in the config")
        del node[last]
    elif last in node:
        node[last] = merge_value(node[last], value, key.dotted)
    else:
        node[last] = to_yaml(value)


def merge_value(base: Any, override: Any, where: str) -> Any:
    """Merge ``override`` onto ``base`` and return the result (``base`` may be changed in place)."""
    if base is None:
        return to_yaml(override)
    if isinstance(override, dict):
        if not isinstance(base, dict):
            raise TypeMismatchError(
                f"'{where}': the base config has a {_kind(base)} ({_short(base)}) here, but the override is a mapping. "
                f"Set a value instead (e.g. {where}: ...), or use '~{where}' and '+{where}' to replace it on purpose."
            )
        if "_component_" in override and override["_component_"] != base.get("_component_"):
            return to_yaml(override)  # a different component: the old arguments don't belong to it
        for k, v in override.items():
            op, name = split_op(str(k))
            if op == "delete":
                base.pop(name, None)
            elif name in base:
                base[name] = merge_value(base[name], v, f"{where}.{name}")
            else:
                base[name] = to_yaml(v)
        return base
    if isinstance(base, dict):
        raise TypeMismatchError(
            f"'{where}': the base config has a mapping here ({_short(base)}), but the override is a {_kind(override)} "
            f"({_short(override)}). Set one of its keys (e.g. {where}.<key>: ...), give a mapping, or delete it with '~{where}'."
        )
    return to_yaml(override)


def to_yaml(value: Any) -> Any:
    """A fresh copy of ``value`` as round-trip nodes; short scalar lists print in flow style."""
    if isinstance(value, dict):
        out = CommentedMap()
        for k, v in value.items():
            out[split_op(str(k))[1] if isinstance(k, str) else k] = to_yaml(v)
        return out
    if isinstance(value, (list, tuple)):
        seq = CommentedSeq(to_yaml(v) for v in value)
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            seq.fa.set_flow_style()
        return seq
    return copy.copy(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return f"scalar {type(value).__name__}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(dict(value) if isinstance(value, dict) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
