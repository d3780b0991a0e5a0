"""Plain config trees (nested dicts and lists): look up a dotted path, walk every path.

``MISSING`` is the one sentinel for "no such key"; ``None`` is a real value
(YAML ``null``).

    >>> cfg = {"optimizer": {"lr": 0.1}, "data": [{"source": "json"}]}
    >>> lookup(cfg, "optimizer.lr"), lookup(cfg, "data.0.source", index_lists=True), lookup(cfg, ("nope",)) is MISSING
    (0.1, 'json', True)
"""

from __future__ import annotations

from typing import Any, Iterator


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(tree: Any, path: str | tuple[str, ...], *, index_lists: bool = False) -> Any:
    """The value at ``path`` (dotted string or tuple of parts), or ``MISSING``.

    With ``index_lists``, a digit part indexes a list, as in an OmegaConf interpolation
    (``${dataset.0.source}``); keys written in experiment.yaml never do.
    """
    node = tree
    for part in path.split(".") if isinstance(path, str) else path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif index_lists and isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def walk_paths(tree: dict, prefix: tuple[str, ...] = (), include_mappings: bool = False) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every ``(path, value)`` below ``tree``: the leaves, and with ``include_mappings`` the mappings too."""
    for k, v in tree.items():
        path = prefix + (str(k),)
        if isinstance(v, dict):
            if include_mappings:
                yield path, v
            yield from walk_paths(v, path, include_mappings)
        else:
            yield path, v


def all_paths(tree: dict) -> list[str]:
    """Every dotted path of ``tree`` (mappings and leaves)."""
    return [".".join(p) for p, _ in walk_paths(tree, include_mappings=True)]
