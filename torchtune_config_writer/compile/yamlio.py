"""Write YAML the way torchtune will read it back.

ruamel.yaml keeps the base config's comments and key order; torchtune reads
configs with OmegaConf (PyYAML rules, YAML 1.1). Two representers close the
gap: ``None`` is written ``null`` (not an empty value), and a string that
OmegaConf would read as something else (``'yes'``, ``'1e-3'``, ``'null'``) is
quoted, so every value means the same to both.

    >>> dump({"a": None, "b": "yes", "c": 0.0003})
    "a: null\\nb: 'yes'\\nc: 0.0003\\n"

Comments stay where they belong when a value is replaced or deleted
(``replace_entry``, ``add_entry``, ``delete_entry``, used by merge.py), and
comments inside a flow list survive the dump (``dump``); text pasted into a
comment goes through ``comment_text``.
"""

from __future__ import annotations

import copy
import io
import re
from functools import lru_cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString, PlainScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken


class _Representer(RoundTripRepresenter):
    pass


def _represent_none(representer: RoundTripRepresenter, _: None):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


# Line breaks in YAML 1.1 (torchtune) but ordinary characters in YAML 1.2 (ruamel): ruamel writes them
# raw, and PyYAML then folds them, with the indentation ruamel wrote after them, into one space.
_YAML11_ONLY_BREAKS = re.compile("[\x85\u2028\u2029]")


def _represent_str(representer: RoundTripRepresenter, data: str):
    if _YAML11_ONLY_BREAKS.search(data):
        return _double_quoted(representer, data)
    if data and _omegaconf_retypes(data):
        return representer.represent_scalar("tag:yaml.org,2002:str", data, style="'")
    return representer.represent_str(data)


def _double_quoted(representer: RoundTripRepresenter, data: str):
    """Double quotes escape every line break (\\N, \\L, \\P), so the string reads back as it is."""
    return representer.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


def _keeping_breaks(represent: Any) -> Any:
    """ruamel's representer of a quoting style kept from the base, unless the string holds a YAML 1.1 break."""
    def representer(self: RoundTripRepresenter, data: str):
        return _double_quoted(self, data) if _YAML11_ONLY_BREAKS.search(data) else represent(self, data)
    return representer


_Representer.add_representer(type(None), _represent_none)
_Representer.add_representer(str, _represent_str)
for _kept in (SingleQuotedScalarString, PlainScalarString, LiteralScalarString, FoldedScalarString):
    _Representer.add_representer(_kept, _keeping_breaks(RoundTripRepresenter.yaml_representers[_kept]))


@lru_cache(maxsize=4096)
def _omegaconf_retypes(text: str) -> bool:
    """True when OmegaConf's YAML loader would read the plain scalar ``text`` as a non-string."""
    import yaml

    tag = _loader().resolve(yaml.ScalarNode, text, (True, False))
    return tag != "tag:yaml.org,2002:str"


@lru_cache(maxsize=1)
def _loader() -> Any:
    return omegaconf_loader()("")


@lru_cache(maxsize=1)
def omegaconf_loader() -> type:
    """The PyYAML loader class OmegaConf reads a config file with (``OmegaConf.load``), as torchtune does."""
    from omegaconf._utils import get_yaml_loader  # omegaconf 2.3 (pinned: what torchtune 0.6.1 was released with)

    return get_yaml_loader()


def make_yaml() -> YAML:
    """A round-trip YAML instance with the project's representers; lines are never wrapped."""
    yaml = YAML(typ="rt")
    yaml.Representer = _Representer
    yaml.width = 4096  # a wrapped scalar would make a run's diff harder to read
    yaml.preserve_quotes = True
    yaml.boolean_representation = ["False", "True"]  # torchtune's configs spell them so
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


_YAML = make_yaml()


def dump(data: Any) -> str:
    """Serialize ``data`` (round-trip nodes or plain Python) to text."""
    buf = io.StringIO()
    _YAML.dump(_with_flow_comments_kept(data), buf)
    return buf.getvalue()


def dump_plain(data: Any) -> str:
    """Serialize plain data (no comments to keep) quickly, with libyaml when available.

    PyYAML follows the same YAML 1.1 rules as OmegaConf, so its quoting is right for torchtune too.
    """
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def load(text: str) -> Any:
    """Round-trip parse (comments and positions kept)."""
    return _YAML.load(text)


# ----------------------------------------------------------------------------- text in a comment

# What must not reach a comment raw: YAML ends a comment at any line break (\n, \r, and in YAML 1.1,
# which torchtune reads, also U+0085, U+2028 and U+2029), so the rest of the line would be live YAML;
# control characters, lone surrogates and U+FFFE/U+FFFF make the file unreadable or unwritable;
# U+FEFF is invisible. Python's escapes show each of them.
_NOT_FOR_COMMENTS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def comment_text(text: str) -> str:
    """``text`` made safe for a one-line YAML comment: line breaks and control characters written as escapes.

    Backslashes are left alone, so a Windows path stays readable (a value's exact text is in run_mapping.yaml).

    >>> comment_text("name=a\\nepochs: 99\\u2028seed: 1")
    'name=a\\\\nepochs: 99\\\\u2028seed: 1'
    >>> comment_text("lr=0.001, path=C:\\\\data")
    'lr=0.001, path=C:\\\\data'
    """
    if not _NOT_FOR_COMMENTS.search(text):
        return text
    return _NOT_FOR_COMMENTS.sub(lambda m: repr(m.group())[1:-1], text)


# ----------------------------------------------------------------------------- comments around a value
#
# ruamel keeps the lines that follow a value (blank lines, the next section's "# Training") in one
# comment token on the value's last leaf: after ``loss: {_component_: X}`` they hang on
# ``_component_``. The token's first line is the comment beside that leaf (part of the value); the
# rest comes after the value and belongs to what follows it. So a value replaced, deleted or
# followed by a new key would take those lines with it, or leave them above the new key; the three
# functions below move them to whatever now ends there.


def replace_entry(parent: Any, key: Any, value: Any) -> None:
    """``parent[key] = value`` in place of the old value; the lines after the old value stay after the new one.

    The comment on the ``key:`` line stays; comment lines inside an old block mapping or list go with it.

    >>> tree = load("loss:\\n  _component_: a.Loss\\n\\n# Training\\nepochs: 1\\n")
    >>> replace_entry(tree, "loss", load("_component_: b.Loss\\nweight: 2\\n"))
    >>> dump(tree)
    'loss:\\n  _component_: b.Loss\\n  weight: 2\\n\\n# Training\\nepochs: 1\\n'
    """
    old = parent[key]
    if value is old or not (_is_block(old) or _is_block(value)):
        parent[key] = value  # both end on parent's own line for key, where the comments already are
        return
    after = _take_comments_after(parent, key)
    if _is_block(old):
        _drop_comments_inside(parent, key)
    parent[key] = value
    _put_comments_after(parent, key, after)


def add_entry(parent: Any, key: Any, value: Any) -> None:
    """``parent[key] = value`` for a new key, appended after the last entry and above the lines that followed it."""
    last = next(reversed(parent), None) if len(parent) else None
    after = _take_comments_after(parent, last) if last is not None else ""
    parent[key] = value
    _put_comments_after(parent, key, after)


def delete_entry(parent: Any, key: Any) -> None:
    """``del parent[key]``; the lines after it (and those ruamel filed as before it) go to its neighbours.

    They follow the previous entry, or precede the next one when the deleted entry was the first.
    """
    slots = _slots(parent, key)
    before = "".join(t.value for t in slots[1] or []) if slots is not None and len(slots) > 1 else ""
    lines = before + _take_comments_after(parent, key)
    keys = list(parent)
    at = keys.index(key)
    del parent[key]
    if isinstance(parent, CommentedMap):
        parent.ca.items.pop(key, None)
    if lines and at > 0:
        _put_comments_after(parent, keys[at - 1], lines)
    elif lines and at + 1 < len(keys) and isinstance(parent, CommentedMap):
        slots = parent.ca.items.setdefault(keys[at + 1], [None, None, None, None])
        slots[1] = [CommentToken(lines, CommentMark(0), None)] + list(slots[1] or [])


def _take_comments_after(parent: Any, key: Any) -> str:
    """Detach and return the lines that follow the value ``parent[key]`` ('' when none).

    The comment beside the value's last line stays, and so do comment lines right below it that are
    indented under ``key`` (before any blank line): they describe the value itself.
    """
    node, last = _end_of(parent, key)
    token = _comment_token(node, last)
    if token is None:
        return ""
    beside, _, following = token.value.partition("\n")
    inner, outer = _split_inner(following, _key_column(parent, key))
    _set_comment_token(node, last, beside + "\n" + inner if beside or inner else "", token)
    return outer


def _put_comments_after(parent: Any, key: Any, lines: str) -> None:
    """Put ``lines`` (as returned by ``_take_comments_after``) right after the value ``parent[key]``."""
    if not lines:
        return
    node, last = _end_of(parent, key)
    token = _comment_token(node, last)
    value = token.value if token is not None else "\n"
    _set_comment_token(node, last, (value if value.endswith("\n") else value + "\n") + lines, token)


def _drop_comments_inside(parent: Any, key: Any) -> None:
    """Forget the comment lines between ``key:`` and the first entry of its block value (not the one on its line)."""
    slots = _slots(parent, key)
    if slots is None:
        return
    if slots[2] is not None:
        beside = slots[2].value.partition("\n")[0]
        slots[2] = _token(beside + "\n", slots[2]) if beside else None
    if len(slots) > 3:
        slots[3] = None


def _split_inner(following: str, column: int | None) -> tuple[str, str]:
    """Split the lines after a value into those still indented under its key and the rest."""
    if column is None:
        return "", following
    lines = following.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].strip() and len(lines[n]) - len(lines[n].lstrip(" ")) > column:
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def _end_of(parent: Any, key: Any) -> tuple[Any, Any]:
    """The (container, key) whose comment slot holds the lines after ``parent[key]``: its deepest last entry."""
    value = parent[key]
    if _is_block(value):
        return _end_of(value, next(reversed(value)) if isinstance(value, dict) else len(value) - 1)
    return parent, key


def _is_block(value: Any) -> bool:
    """A non-empty mapping or list written over several lines (empty ones are written ``{}`` / ``[]``)."""
    return isinstance(value, (CommentedMap, CommentedSeq)) and len(value) > 0 and not value.fa.flow_style()


def _slots(node: Any, key: Any) -> list | None:
    """ruamel's comment slots of one entry: [?, comments before it, comment beside it + lines after, ...]."""
    if not isinstance(node, (CommentedMap, CommentedSeq)):
        return None
    return node.ca.items.get(key)


def _comment_token(node: Any, key: Any) -> CommentToken | None:
    # a mapping entry keeps the comment beside it in slot 2, a list item in slot 0
    slots = _slots(node, key)
    return slots[2 if isinstance(node, dict) else 0] if slots else None


def _set_comment_token(node: Any, key: Any, value: str, old: CommentToken | None) -> None:
    if not isinstance(node, (CommentedMap, CommentedSeq)):
        return
    slots = node.ca.items.setdefault(key, [None, None, None, None])
    says_something = value.strip("\n") or value.count("\n") > 1  # a comment, or a blank line after the value
    # a fresh token, never the old one changed: ruamel may hold it in a second place (a flow list keeps
    # the comment after its ']' too), which must not start saying something else
    slots[2 if isinstance(node, dict) else 0] = _token(value, old) if says_something else None


def _token(value: str, like: CommentToken | None) -> CommentToken:
    column = like.start_mark.column if like is not None and like.start_mark is not None else 0
    return CommentToken(value, CommentMark(column), None)


def _key_column(parent: Any, key: Any) -> int | None:
    """The column ``key`` was read at, when it came from a file."""
    try:
        return parent.lc.key(key)[1] if isinstance(parent, CommentedMap) else None
    except (KeyError, AttributeError, TypeError):
        return None


# ----------------------------------------------------------------------------- comments inside a flow list
#
# ruamel reads the comments inside a flow list (``[2,  # eos_id`` on several lines) but cannot write
# them: it writes a flow list on one line and drops them. Such a list is written as a block list
# instead, each comment beside the item it followed, or above the item it preceded.


def _with_flow_comments_kept(data: Any) -> Any:
    """``data`` itself, or a copy whose commented flow lists are block lists that carry the comments."""
    if not _has_commented_flow_list(data):
        return data
    data = copy.deepcopy(data)  # the caller's tree keeps its own style
    _unflow(data, 0)
    return data


def _has_commented_flow_list(node: Any) -> bool:
    if isinstance(node, CommentedSeq) and node.fa.flow_style() and (node.ca.items or node.ca.end):
        return True
    if isinstance(node, dict):
        return any(_has_commented_flow_list(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_commented_flow_list(v) for v in node)
    return False


def _unflow(node: Any, column: int) -> None:
    """Turn the commented flow lists below the block collection ``node`` into block lists.

    ``column`` is where ``node``'s keys (or dashes) are written; the dumper indents each level by 2.
    """
    if not isinstance(node, (CommentedMap, CommentedSeq)) or node.fa.flow_style():
        return  # a flow collection's children are written on its line
    for key in list(node) if isinstance(node, dict) else range(len(node)):
        value = node[key]
        if isinstance(value, CommentedSeq) and value.fa.flow_style() and (value.ca.items or value.ca.end):
            replace_entry(node, key, _block_list(value, column + 2))
        else:
            _unflow(value, column + 2)


def _block_list(seq: CommentedSeq, dash_column: int) -> CommentedSeq:
    """A block list of ``seq``'s items, with the comments written inside ``seq`` placed by their lines."""
    block = CommentedSeq(seq)
    block.fa.set_block_style()
    try:
        starts = [seq.lc.item(i)[0] for i in range(len(seq))]
    except (KeyError, AttributeError, TypeError):
        starts = []  # where the items were is unknown: the comments go below the last one
    beside: dict[int, tuple[str, int]] = {}
    above: dict[int, list[str]] = {}
    below: list[str] = []
    for line, column, text in _comment_lines(seq):
        on_line = [i for i, start in enumerate(starts) if start == line]
        if on_line and column > seq.lc.item(on_line[-1])[1]:
            beside[on_line[-1]] = (text, column)  # written after the item: it describes that item
            continue
        following = [i for i, start in enumerate(starts) if start > line]
        (above.setdefault(following[0], []) if following else below).append(" " * dash_column + text + "\n")
    for i in range(len(block)):
        text, column = beside.get(i, ("", 0))
        eol = text + "\n" + ("".join(below) if i == len(block) - 1 else "")
        before = [CommentToken("".join(above[i]), CommentMark(0), None)] if i in above else None
        if eol != "\n" or before:
            # the comment keeps its column (at least a space after the item), as beside a replaced value
            block.ca.items[i] = [CommentToken(eol, CommentMark(column), None) if eol != "\n" else None, before, None, None]
    return block


def _comment_lines(seq: CommentedSeq) -> list[tuple[int, int, str]]:
    """(line, column, text) of every comment line ruamel filed inside the flow list ``seq``."""
    tokens = [t for slots in seq.ca.items.values() for slot in slots[:2] for t in (slot if isinstance(slot, list) else [slot])]
    tokens += list(seq.ca.end or [])
    out = []
    for token in tokens:
        if token is None or token.start_mark is None:
            continue
        for n, text in enumerate(token.value.split("\n")):
            if text.strip():
                out.append((token.start_mark.line + n, token.start_mark.column if n == 0 else len(text) - len(text.lstrip()), text.strip()))
    return out
