"""Apply overrides to a config tree (the rules are in appendices/A_merge_semantics.md).

Mappings deep-merge; scalars and lists replace; a mapping with a different
``_component_`` replaces the node whole; ``null`` in the base takes any value;
a mapping onto a scalar or list (or the reverse), and a scalar onto a list, are
a ``TypeMismatchError``. The tree is a ruamel round-trip mapping; yamlio's
``replace_entry``, ``add_entry`` and ``delete_entry`` keep the comment beside a
replaced value and the comments after it where they were.

    >>> tree = {"optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.1, "fused": True}}
    >>> apply(tree, Key("lr", ("optimizer", "lr")), 0.01)
    >>> tree["optimizer"]["lr"]
    0.01
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..errors import TypeMismatchError, UnknownKeyError
from .keys import Key, split_op
from .tree import lookup
from .yamlio import add_entry, delete_entry, replace_entry


def apply(tree: dict, key: Key, value: Any) -> None:
    """Apply one resolved override to ``tree`` in place."""
    *parents, last = key.path
    node = tree
    for i, part in enumerate(parents):
        if part not in node or node[part] is None:
            if key.op != "add":
                raise UnknownKeyError(f"'{key.raw}': '{'.'.join(key.path[: i + 1])}' is not in the config")
            # the missing mappings are built whole, then placed once: the comments after the old
            # value (or after the mapping's last entry) move below all of it
            nested = to_yaml(_nest(key.path[i + 1:], value))
            (replace_entry if part in node else add_entry)(node, part, nested)
            return
        node = node[part]
        if not isinstance(node, dict):
            raise TypeMismatchError(
                f"'{key.raw}': '{'.'.join(key.path[: i + 1])}' is a {_kind(node)}, not a mapping, so it has no key '{last}'"
            )
    if key.op == "delete":
        if last not in node:
            raise UnknownKeyError(f"'{key.raw}': cannot delete '{key.dotted}', it is not in the config")
        delete_entry(node, last)
    elif last in node:
        replace_entry(node, last, merge_value(node[last], value, key.dotted))
    else:
        add_entry(node, last, to_yaml(value))


def _nest(path: tuple[str, ...], value: Any) -> dict:
    """``{"a": {"b": value}}`` for the path ``("a", "b")``."""
    for part in reversed(path):
        value = {part: value}
    return value


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
                if name in base:
                    delete_entry(base, name)
            elif name in base:
                replace_entry(base, name, merge_value(base[name], v, f"{where}.{name}"))
            else:
                add_entry(base, name, to_yaml(v))
        return base
    if isinstance(base, dict):
        raise TypeMismatchError(
            f"'{where}': the base config has a mapping here ({_short(base)}), but the override is a {_kind(override)} "
            f"({_short(override)}). Set one of its keys (e.g. {where}.<key>: ...), give a mapping, or delete it with '~{where}'."
        )
    if isinstance(base, (list, tuple)) and not isinstance(override, (list, tuple)) and override is not None:
        raise TypeMismatchError(_scalar_onto_list(base, override, where))
    return to_yaml(override)


def check_values(key: Key, values: list[Any], tree: dict, where: str) -> None:
    """Refuse a variable whose values are scalars where the base has a list, naming every value's fix.

    Each run would get one of the scalars (``tasks: [a, b]`` sweeps ``tasks: a`` and ``tasks: b``);
    merging each run finds the mismatch too, but only here are all the values known to write the fix.

    >>> check_values(Key("tasks", ("tasks",)), ["a", "b"], {"tasks": ["x"]}, "variables")
    Traceback (most recent call last):
    ...
    torchtune_config_writer.errors.TypeMismatchError: variables: 'tasks': the base config has a list (['x']) here, but each value of the variable is a scalar, so every run would get one value where torchtune expects a list. To sweep lists, write one list per run: tasks: [[a], [b]]
    """
    base = lookup(tree, key.path) if key.op == "set" else None
    scalars = [v for v in values if v is not None and not isinstance(v, (list, tuple, dict))]
    if isinstance(base, (list, tuple)) and scalars:
        fix = _flow([v if isinstance(v, (list, tuple)) or v is None else [v] for v in values])
        raise TypeMismatchError(
            f"{where}: '{key.dotted}': the base config has a list ({_short(base)}) here, but "
            f"{'each value' if len(scalars) == len(values) else 'a value'} of the variable is a scalar, so "
            f"{'every run' if len(scalars) == len(values) else 'a run'} would get one value where torchtune expects a list. "
            f"To sweep lists, write one list per run: {key.dotted}: {fix}"
        )


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


def _scalar_onto_list(base: list, override: Any, where: str) -> str:
    # torchtune does not refuse a string where it expects a list: `list(cfg.tasks)` splits it into
    # letters, `"q_proj" in cfg.model.lora_attn_modules` becomes a substring test; the run does
    # something else than meant, or fails only once it has started
    return (
        f"'{where}': the base config has a list ({_short(base)}) here, but the override is a {_kind(override)} "
        f"({_short(override)}); torchtune expects a list (a string would be read letter by letter). "
        f"Write a list: {where}: {_flow([override])}. In variables each value is one run's value, "
        f"so write one list per run: {where}: [{_flow([override])}, ...]"
    )


def _flow(value: list) -> str:
    """``value`` as a one-line YAML flow list, quoted where YAML needs it (``[[a], [b]]``)."""
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    except yaml.YAMLError:  # a value PyYAML cannot write: Python's spelling still shows the shape
        return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return f"scalar {type(value).__name__}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(dict(value) if isinstance(value, dict) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
