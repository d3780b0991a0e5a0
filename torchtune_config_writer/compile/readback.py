"""Read every written config back the way torchtune will, and compare it with the config that was meant.

Validation checks the plain dict of each run; torchtune reads the bytes of its
file. If the two ever differ (a swept string with a line break pasted into a
header comment, whose tail becomes live YAML), the run would train something
nobody validated. So the writer reads each config's text back with OmegaConf's
YAML loader (what ``OmegaConf.load`` in torchtune uses) before the experiment
directory appears; a difference is a bug of this tool, reported as one.

    >>> check_written("run_000", "# lr=0.1\\nlr: 0.1\\n", {"lr": 0.1})
    >>> check_written("run_001", "# tag=a\\nepochs: 9\\nlr: 0.1\\n", {"lr": 0.1})
    Traceback (most recent call last):
    ...
    torchtune_config_writer.compile.readback.WrittenConfigError: internal error (a bug of torchtune_config_writer, please report it): run_001: torchtune would read 'epochs' = 9 from the config written, but the config meant has no 'epochs'; nothing was written
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import yaml

from .yamlio import omegaconf_loader

_ABSENT = object()


class WrittenConfigError(RuntimeError):
    """A written config reads back as something else than the config that was validated: a bug of this tool.

    Not a ``ConfigWriterError``: nothing in the experiment is wrong, so there is nothing for its author to fix.
    """


def check_written(run_id: str, text: str, intended: dict) -> None:
    """Raise ``WrittenConfigError`` unless ``text`` reads back, as torchtune reads it, as ``intended``."""
    read = _read_by_parts(text)
    if read is not None and _same(intended, read):
        return
    try:  # confirm with the very loader OmegaConf uses, on the whole text, and report what it reads
        read = yaml.load(text, Loader=omegaconf_loader())
    except yaml.YAMLError as e:
        raise WrittenConfigError(
            f"{_INTERNAL}: {run_id}: the config written cannot be read back as YAML "
            f"({' '.join(str(e).split())}); nothing was written"
        ) from None
    difference = _first_difference(intended, read)
    if difference is not None:
        path, meant, got = difference
        raise WrittenConfigError(f"{_INTERNAL}: {run_id}: {_describe(path, meant, got)}; nothing was written")


_INTERNAL = "internal error (a bug of torchtune_config_writer, please report it)"


# ----------------------------------------------------------------------------- reading fast
#
# Why not simply yaml.load(text, OmegaConf's loader) per run: that loader is pure Python, 3.4 ms for
# a 3 KB config, 34 s for 10,000 runs. libyaml (PyYAML's C parser) under the same loader class
# (OmegaConf's resolvers, constructors and duplicate-key check; only the parser is C) takes 0.37 ms:
# still 3.7 s. But the runs of a sweep share almost all of their text: only the header, the
# output_dir and the swept values differ. So the text is cut before each line that starts with a
# top-level key (a letter, digit or '_' at column 0), each distinct piece is read once, and a run
# costs about 0.06 ms: 0.6 s for 10,000 runs (CPU time, a 100 x 100 sweep of lora_rank and lr on
# llama3_2/1B_lora_single_device, on the 2-core machine; tests/test_written.py bounds it).
#
# Reading the pieces apart gives the whole text's reading, or a sign that it might not:
# - a piece ends where a line at column 0 starts a key; whatever ends there in the whole text (a
#   plain or block scalar: they need indentation to go on) ends there alone too, and whatever
#   would go on past it (an open quote or bracket) makes the piece alone a YAML error;
# - a piece alone must read as a mapping (the first piece holds the header comments and the first
#   key, so it cannot be comments only), and no key may appear in two pieces;
# - an alias to an anchor in another piece makes a piece an error; a document marker ('---', '...')
#   or a directive ('%') at the start of a line is not read piece by piece at all.
# Any of these sends the run to the whole-text reading with OmegaConf's own loader, which also
# confirms every difference before it is reported. libyaml and PyYAML read our dumper's output
# alike (line breaks U+0085/U+2028/U+2029 included; the exceptions are below); tests/test_written.py
# checks it on every shipped config and on fuzzed values and headers.

_PIECE_END = re.compile(r"\n(?=[A-Za-z0-9_])")  # finditer on this: 4x faster than re.split on a lookbehind


def _pieces(text: str) -> list[str]:
    """``text`` cut before each line that starts with a top-level key; the first piece keeps two of them."""
    # the header comments alone would read as nothing, which could hide a piece that reads as nothing either
    starts = [m.end() for m in _PIECE_END.finditer(text)][1:]
    return [text[i:j] for i, j in zip([0, *starts], [*starts, len(text)])]


def _read_by_parts(text: str) -> dict | None:
    """The mapping ``text`` reads as, assembled from its top-level pieces; None when that may not be exact."""
    out: dict = {}
    for piece in _pieces(text):
        try:
            part = _read_piece(piece)
        except (yaml.YAMLError, ValueError):  # ValueError: a lone surrogate cannot go to libyaml as UTF-8
            return None
        if type(part) is not dict or not out.keys().isdisjoint(part):
            return None
        out.update(part)
    return out


# Where libyaml and PyYAML read differently (found by fuzzing both): a tab outside quotes and comments
# (PyYAML refuses it), a U+FEFF starting a line after the first, an empty '!' tag, a block scalar's
# '|' or '>' with a comment right after it (PyYAML wants a space). Our dumper writes none of them
# outside comments, but a piece holding one is read by OmegaConf's loader itself.
_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")
# A document marker or directive at the start of a line ends the document for the pieces after it too.
_DOCUMENT_MARK = re.compile("(?:\\A|(?<=[\n\r\x85\u2028\u2029]))(?:---|\\.\\.\\.|%)")
_NOT_ALONE = object()


@lru_cache(maxsize=4096)
def _read_piece(piece: str) -> Any:
    # shared by every run with the same piece: read it, never change it
    if _ends_document(piece):
        return _NOT_ALONE
    return yaml.load(piece, Loader=omegaconf_loader() if _libyaml_differs(piece) else _fast_loader())


# Each piece new to the cache (one a run at least) passes these two: plain `in` tests first, because
# a regex over the whole piece costs 20-30 us where `in` costs 1.


def _ends_document(piece: str) -> bool:
    return ("---" in piece or "..." in piece or "%" in piece) and _DOCUMENT_MARK.search(piece) is not None


def _libyaml_differs(piece: str) -> bool:
    return ("\t" in piece or "!" in piece or "\ufeff" in piece
            or ("|" in piece or ">" in piece) and _BLOCK_HEADER_COMMENT.search(piece) is not None)


@lru_cache(maxsize=1)
def _fast_loader() -> type:
    """OmegaConf's loader class with libyaml's parser (PyYAML's pure-Python one where libyaml is missing)."""
    loader = omegaconf_loader()
    try:
        from yaml.cyaml import CParser
    except ImportError:
        return loader

    class _CLoader(CParser, loader):
        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return _CLoader


# ----------------------------------------------------------------------------- comparing


def _same(meant: Any, read: Any) -> bool:
    """Equal and of the same kind: 1, 1.0 and True are equal in Python but not to torchtune."""
    kind = meant.__class__
    if kind is read.__class__:  # exact classes first, explicit loops: this runs for every value of every run
        if kind is dict:
            if meant.keys() != read.keys():
                return False
            for key, value in meant.items():
                if not _same(value, read[key]):
                    return False
            return True
        if kind is list:
            return len(meant) == len(read) and all(map(_same, meant, read))
        return meant == read or (kind is float and math.isnan(meant) and math.isnan(read))
    if isinstance(meant, dict) and isinstance(read, dict):
        return _same(dict(meant), read)
    if isinstance(meant, (list, tuple)) and isinstance(read, list):
        return _same(list(meant), read)
    return _kind(meant) == _kind(read) and meant == read


def _kind(value: Any) -> str:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__name__
    return type(value).__name__


def _first_difference(meant: Any, read: Any, path: tuple = ()) -> tuple[tuple, Any, Any] | None:
    """(key path, meant value, read value) of the first place the two differ; None when they do not."""
    if isinstance(meant, dict) and isinstance(read, dict):
        for key in list(meant) + [k for k in read if k not in meant]:
            found = _first_difference(meant.get(key, _ABSENT), read.get(key, _ABSENT), path + (key,))
            if found is not None:
                return found
        return None
    if isinstance(meant, (list, tuple)) and isinstance(read, list) and len(meant) == len(read):
        for i, (m, r) in enumerate(zip(meant, read)):
            found = _first_difference(m, r, path + (i,))
            if found is not None:
                return found
        return None
    return None if _same(meant, read) else (path, meant, read)


def _describe(path: tuple, meant: Any, read: Any) -> str:
    where = ".".join(map(str, path)) or "the whole config"
    if meant is _ABSENT:
        return f"torchtune would read '{where}' = {read!r} from the config written, but the config meant has no '{where}'"
    if read is _ABSENT:
        return f"the config meant has '{where}' = {meant!r}, but torchtune would not find '{where}' in the config written"
    return f"the config meant has '{where}' = {meant!r}, but torchtune would read {read!r} from the config written"
