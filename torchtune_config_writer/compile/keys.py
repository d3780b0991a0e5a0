"""Resolve the keys researchers write into paths of the base config.

A key is a dotted path (``model.lora_rank``), a short name that is a unique
leaf (``lora_rank``), or an alias (``lr``). ``+key`` adds a key the base does
not have; ``~key`` deletes one. Every key is checked against the base config
once, before any run is built, so a typo fails fast with suggestions.

    >>> tree = {"model": {"lora_rank": 8}, "optimizer": {"lr": 0.1}, "epochs": 1}
    >>> resolve_key("lora_rank", tree).dotted
    'model.lora_rank'
    >>> resolve_key("learning_rate", tree).dotted
    'optimizer.lr'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from ..errors import AmbiguousKeyError, ConflictingKeyError, ExperimentSchemaError, UnknownKeyError, close_matches, suggestion
from .components import accepted_args
from .tree import MISSING, all_paths, lookup, walk_paths

#: Names researchers use for settings that live elsewhere in torchtune configs.
#: An alias is tried after top-level keys and before the unique-leaf search.
ALIASES: dict[str, str] = {
    "learning_rate": "optimizer.lr",
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "warmup_steps": "lr_scheduler.num_warmup_steps",
    "num_warmup_steps": "lr_scheduler.num_warmup_steps",
    "num_epochs": "epochs",
    "max_steps": "max_steps_per_epoch",
    "grad_accum": "gradient_accumulation_steps",
    "gradient_accumulation": "gradient_accumulation_steps",
    "rank": "model.lora_rank",
    "alpha": "model.lora_alpha",
    "data_files": "dataset.data_files",
    "tokenizer_path": "tokenizer.path",
    "max_seq_len": "tokenizer.max_seq_len",
    "checkpoint_dir": "checkpointer.checkpoint_dir",
}

Op = Literal["set", "add", "delete"]


@dataclass(frozen=True)
class Key:
    """A resolved key: where it points and what to do there."""

    raw: str
    path: tuple[str, ...]
    op: Op = "set"

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def split_op(raw: str) -> tuple[Op, str]:
    """``'+a.b'`` → ``('add', 'a.b')``; ``'~a'`` → ``('delete', 'a')``; else ``('set', raw)``."""
    if raw.startswith("+"):
        return "add", raw[1:]
    if raw.startswith("~"):
        return "delete", raw[1:]
    return "set", raw


def resolve_key(raw: str, tree: dict, section: str = "controls") -> Key:
    """Resolve one key written in ``section`` against ``tree`` (the base config)."""
    op, name = split_op(str(raw))
    if not name or any(not part for part in name.split(".")):
        raise ExperimentSchemaError(f"{section}: '{raw}' is not a valid key (empty part in the dotted path)")
    path = tuple(name.split("."))
    if op == "add":
        if lookup(tree, path) is not MISSING:
            raise ConflictingKeyError(
                f"{section}: '{raw}' adds '{name}', but the base config already has it; drop the '+' to change it"
            )
        parent = lookup(tree, path[:-1]) if len(path) > 1 else tree
        if parent is not MISSING and parent is not None and not isinstance(parent, dict):
            raise ExperimentSchemaError(f"{section}: '{raw}': '{'.'.join(path[:-1])}' is not a mapping, so nothing can be added under it")
        return Key(raw, path, op)
    if len(path) == 1 and name not in tree:
        path = _short_name(name, tree, section, raw, op)
    elif lookup(tree, path) is MISSING and (op == "delete" or not _component_accepts(tree, path)):
        raise UnknownKeyError(_unknown_message(name, tree, section, raw, op))
    return Key(raw, path, op)


def check_nested(key: Key, value: Any, tree: dict, section: str) -> None:
    """Check the keys inside a mapping value that will be deep-merged at ``key``.

    A mapping that brings its own, different ``_component_`` replaces the node
    whole, so its keys are not looked up in the base.
    """
    if key.op != "set" or not isinstance(value, dict):
        return
    node = lookup(tree, key.path)
    if not isinstance(node, dict):
        return  # replacing null or a missing node; merge reports real type clashes
    if "_component_" in value and value["_component_"] != node.get("_component_"):
        return
    deleted = {split_op(str(c))[1] for c in value if split_op(str(c))[0] == "delete"}
    for child, child_value in value.items():
        op, name = split_op(str(child))
        path = key.path + (name,)
        here = f"{key.dotted}.{child}"
        if op == "add":
            if name in node and name not in deleted:
                raise ConflictingKeyError(f"{section}: '{here}' adds '{name}', but the base already has it; drop the '+'")
            continue
        if name not in node and (op == "delete" or not _component_accepts(tree, path)):
            raise UnknownKeyError(_unknown_message(".".join(path), tree, section, here, op))
        if op == "set":
            check_nested(Key(here, path), child_value, tree, section)


@dataclass(frozen=True)
class Setting:
    """A resolved key as one section of the experiment sets it."""

    key: Key
    section: str
    """``controls``, ``variables``, ``zip``, ``sample``, ``seeds`` or ``derived``."""
    value: Any = None
    layer: int = 0
    """Which file set it (an included file is lower than the file including it)."""


def check_conflicts(controls: list[Setting], swept: list[Setting], locate: Callable[[str, str], str] | None = None) -> None:
    """Refuse a key set twice: twice by the axes and derived keys, twice by controls of one file, or as a
    control and an axis/derived key. A control from an included file yields to the including file's keys.

    ``locate(section, raw_key)`` names where a key was written (``'experiment.yaml:7 (controls)'``).
    """
    locate = locate or (lambda section, raw: section)
    _no_repeats(swept, locate, layered=False)
    _no_repeats(controls, locate, layered=True)
    leaves = [(c, leaf) for c in controls for leaf in _leaf_paths(c.key.path, c.value)]
    for other in swept:
        for control, leaf in leaves:
            n = min(len(leaf), len(other.key.path))
            if leaf[:n] == other.key.path[:n] and control.layer >= other.layer:
                what = "swept" if other.section != "derived" else "derived"
                raise ConflictingKeyError(
                    f"{locate(other.section, other.key.raw)}: '{other.key.dotted}' is both {'a variable' if what == 'swept' else 'derived'} "
                    f"('{other.key.raw}'{'' if other.section in ('variables', 'derived') else ' in ' + other.section}) and a control ('{control.key.raw}'); a key is either fixed or "
                    f"{what}: remove it from one of the two sections"
                )


def leaf_index(tree: dict) -> dict[str, list[tuple[str, ...]]]:
    """Map every leaf name below the top level to the paths that end in it."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for path, _ in walk_paths(tree):
        if len(path) > 1 and path[-1] != "_component_":
            index.setdefault(path[-1], []).append(path)
    return index


# ----------------------------------------------------------------------------- internals

def _short_name(name: str, tree: dict, section: str, raw: str, op: Op) -> tuple[str, ...]:
    matches = leaf_index(tree).get(name, [])
    alias = ALIASES.get(name)
    if alias:
        path = tuple(alias.split("."))
        if lookup(tree, path) is not MISSING or _component_accepts(tree, path):
            # an alias never hides a key that really has this name (profiler.warmup_steps, a teacher's checkpoint_dir)
            matches = [path] + [m for m in matches if m != path]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = "\n".join(f"    - {'.'.join(p)}" for p in matches)
        raise AmbiguousKeyError(f"{section}: '{raw}' matches {len(matches)} keys of the base config:\n{listed}\n  Write the full dotted path instead.")
    raise UnknownKeyError(_unknown_message(name, tree, section, raw, op))


def _unknown_message(name: str, tree: dict, section: str, raw: str, op: Op = "set") -> str:
    paths = [p for p in all_paths(tree) if not p.endswith("_component_")]
    leaves = leaf_index(tree)
    # a typo in the last part: the siblings, and the arguments a component takes, are the likeliest fix
    candidates = _sibling_candidates(name, tree) if "." in name else []
    if not candidates:
        candidates = close_matches(name, paths, n=3, cutoff=0.75)
    if not candidates and "." not in name:
        for leaf in close_matches(name, list(leaves) + list(tree) + list(ALIASES), n=3, cutoff=0.7):
            if leaf in tree:
                candidates.append(leaf)
            elif leaf in ALIASES:
                if ALIASES[leaf] in paths:
                    candidates.append(ALIASES[leaf])
            else:
                candidates.extend(".".join(p) for p in leaves[leaf])
    msg = f"{section}: unknown key '{raw}': the base config has no '{name}'." + suggestion(c for c in candidates if c != name)
    if op != "delete":
        msg += f" To add a new key on purpose, write '+{name}'."
    return msg


def _sibling_candidates(name: str, tree: dict) -> list[str]:
    """Close matches of ``name``'s last part among its parent's keys and, for a component, its arguments."""
    parent, _, last = name.rpartition(".")
    node = lookup(tree, tuple(parent.split(".")))
    if not isinstance(node, dict):
        return []
    matches = close_matches(last, [str(k) for k in node if k != "_component_"], cutoff=0.6)
    if not matches and isinstance(node.get("_component_"), str):
        # only now ask the component (which may import torch): the keys written there usually answer
        matches = close_matches(last, sorted(accepted_args(node["_component_"]) or ()), cutoff=0.6)
    return [f"{parent}.{m}" for m in matches]


def _component_accepts(tree: dict, path: tuple[str, ...]) -> bool:
    """True when ``path[:-1]`` is a ``_component_`` node whose signature takes ``path[-1]``."""
    if len(path) < 2:
        return False
    parent = lookup(tree, path[:-1])
    if not isinstance(parent, dict) or not isinstance(parent.get("_component_"), str):
        return False
    accepted = accepted_args(parent["_component_"])
    return accepted is None or path[-1] in accepted


def _no_repeats(settings: list[Setting], locate: Callable[[str, str], str], layered: bool) -> None:
    """With ``layered``, a key set again by a later file overrides instead (what ``include`` means for controls)."""
    seen: dict[tuple[str, ...], Setting] = {}
    for s in settings:
        earlier = seen.get(s.key.path)
        if earlier and (earlier.layer == s.layer or not layered) and not (earlier.key.op == "delete" and s.key.op == "add"):
            # (~k then +k replaces k on purpose)
            where = "" if earlier.section == s.section else f" ({earlier.section} and {s.section})"
            raise ConflictingKeyError(
                f"{locate(s.section, s.key.raw)}: '{earlier.key.raw}' and '{s.key.raw}'{where} both set "
                f"'{s.key.dotted}'; keep one of them"
            )
        seen[s.key.path] = s


def _leaf_paths(path: tuple[str, ...], value: Any) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _, name = split_op(str(k))
            yield from _leaf_paths(path + (name,), v)
    else:
        yield path
