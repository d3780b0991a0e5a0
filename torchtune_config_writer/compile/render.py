"""Render one run's config from the shared template, fast.

Every run of a sweep is the same template (base + controls) with a few values
changed. Serializing a whole round-trip tree costs ~10 ms, so for the common
case — variables whose old and new values are single-line scalars — we dump
the template once and rewrite just those values in its text. Anything else
(a mapping, a list, a new key) takes the slow, general path: copy the tree,
merge, dump. Both paths give the same text; tests/test_render.py checks that.

    >>> r = Renderer(load("a: 1  # kept\\nb: x\\n"))
    >>> r.render([(Key("a", ("a",)), 2)])[0]
    'a: 2  # kept\\nb: x\\n'
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .keys import Key
from .merge import apply
from .schema import to_plain
from .yamlio import dump, load

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class _Slot:
    line: int
    col: int
    text: str


class Renderer:
    """Renders ``template + overrides`` to YAML text and the equivalent plain dict."""

    def __init__(self, template: Any):
        self.template = template
        self.text = dump(template)
        self.lines = self.text.splitlines(keepends=True)
        self.plain = to_plain(template)
        self._positions = load(self.text)  # a reparse knows where each value sits in self.text
        self._slots: dict[tuple[str, ...], _Slot | None] = {}
        self._texts: dict[tuple[type, str], str | None] = {}

    def render(self, overrides: list[tuple[Key, Any]]) -> tuple[str, dict]:
        """YAML text and plain dict of the template with ``overrides`` applied in order."""
        patches = []
        for key, value in overrides:
            slot = self._slot(key)
            new = self._text_of(value) if isinstance(value, _SCALARS) else None
            if slot is None or new is None:
                return self._render_slow(overrides)
            patches.append((slot, new))
        lines = list(self.lines)
        for slot, new in patches:
            line = lines[slot.line]
            rest = line[slot.col + len(slot.text):]
            comment = rest.lstrip(" ")
            if comment.startswith("#"):
                # like the dumper: the comment stays in its column, at least one space after the value
                comment_col = len(line) - len(comment)
                rest = " " * max(comment_col - (slot.col + len(new)), 1) + comment
            lines[slot.line] = line[: slot.col] + new + rest
        return "".join(lines), _with_values(self.plain, overrides)

    def _text_of(self, value: Any) -> str | None:
        # 1, 1.0 and True are equal dict keys; type and repr tell them apart
        cache_key = (type(value), repr(value))
        if cache_key not in self._texts:
            self._texts[cache_key] = _scalar_text(value)
        return self._texts[cache_key]

    def _render_slow(self, overrides: list[tuple[Key, Any]]) -> tuple[str, dict]:
        tree = copy.deepcopy(self.template)
        for key, value in overrides:
            apply(tree, key, value)
        return dump(tree), to_plain(tree)

    def _slot(self, key: Key) -> _Slot | None:
        """Where the template's value for ``key`` sits, when it can be rewritten in place."""
        if key.path not in self._slots:
            self._slots[key.path] = self._find_slot(key)
        return self._slots[key.path]

    def _find_slot(self, key: Key) -> _Slot | None:
        if key.op != "set":
            return None
        parent = self._positions
        for part in key.path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        last = key.path[-1]
        if not isinstance(parent, dict) or last not in parent or not isinstance(parent[last], _SCALARS):
            return None
        if parent.fa.flow_style():
            return None  # flow mappings quote differently
        line, col = parent.lc.value(last)
        old = _scalar_text(parent[last])
        rest = self.lines[line][col + len(old):] if old is not None else ""
        if old is None or self.lines[line][col: col + len(old)] != old or rest.strip() and not rest.lstrip().startswith("#"):
            return None
        return _Slot(line, col, old)


def _scalar_text(value: Any) -> str | None:
    """How the dumper writes ``value`` as a block-mapping value, or None if it needs more than one line."""
    text = dump({"k": value})
    if text.count("\n") != 1:
        return None
    return text[len("k: "): -1] if text.startswith("k: ") else ("" if text == "k:\n" else None)


def _with_values(plain: dict, overrides: list[tuple[Key, Any]]) -> dict:
    """Copy of ``plain`` with scalar overrides set, copying only the mappings on their paths."""
    out = dict(plain)
    for key, value in overrides:
        node = out
        for part in key.path[:-1]:
            node[part] = dict(node[part])
            node = node[part]
        node[key.path[-1]] = value
    return out
