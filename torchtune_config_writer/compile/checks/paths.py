"""Input paths a run will read: where they resolve, whether they exist, whether they are of the right kind.

    >>> [p.message for p in path_warnings([("run_000", {"tokenizer": {"path": "nowhere.model"}})], Path("."))]
    ["'nowhere.model' does not exist on this machine"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from ..validate import Problem

#: ``source`` values whose ``data_files`` are local paths (datasets' packaged builders); for a Hub
#: dataset they name files inside the Hub repository and are left alone.
_DATA_SOURCES = ("json", "csv", "parquet", "text", "arrow", "pandas", "xml", "webdataset",
                 "imagefolder", "audiofolder")
#: File extensions to suggest when a directory is given as ``data_files``.
_EXTENSIONS = {"json": "json", "csv": "csv", "parquet": "parquet", "text": "txt", "arrow": "arrow"}
#: Tokenizer builder arguments that name files (torchtune/models/*/_model_builders.py, _tokenizer.py).
_TOKENIZER_FILES = ("path", "merges_file", "merges_path", "vocab_path", "special_tokens_path",
                    "tokenizer_json_path", "tokenizer_config_json_path", "generation_config_path")

Kind = Literal["file", "dir"]


@dataclass(frozen=True)
class _Slot:
    """One input path in a config: where it is (to rewrite it), what it is called, what it must be."""

    holder: Any
    """The mapping or list holding the value."""
    index: Any
    label: str
    """The key in messages: ``tokenizer.path``, ``dataset[1].data_files``."""
    kind: Kind
    source: str | None = None
    """The dataset's ``source`` (for data files)."""

    @property
    def value(self) -> str:
        return self.holder[self.index]


def path_warnings(configs: Sequence[tuple[str, dict]], run_dir: Path) -> list[Problem]:
    """Input paths a run will read that are missing (warnings) or of the wrong kind (errors).

    Configs are often generated on a login node for compute nodes that see the
    same files, so a missing checkpoint or data file is worth saying before the
    queue — but the runs may still be fine where they will run. A path that is
    here but is a directory where torchtune opens a file (or the other way
    round) fails wherever it runs. Relative paths are taken from ``run_dir``,
    the directory runs start in (the experiment directory).
    """
    seen: dict[tuple[str, str, str], tuple[str, bool] | None] = {}
    out = []
    for run_id, cfg in configs:
        for label, text, kind, source in _checked_paths(cfg):
            target = Path(text).expanduser()
            target = target if target.is_absolute() else run_dir / target
            key = (label, str(target), kind)
            if key not in seen:
                seen[key] = _problem(label, text, target, kind, source)
            if seen[key] is not None:
                message, warning = seen[key]
                out.append(Problem(run_id, label, message, warning=warning))
    return out


def _checked_paths(cfg: dict) -> Iterator[tuple[str, str, Kind | Literal["checkpoint_file"], str | None]]:
    """``(key, path, kind, dataset source)`` of every input path; checkpoint files joined to their directory."""
    for slot in _slots(cfg):
        yield slot.label, slot.value, slot.kind, slot.source
    for name, node in cfg.items():
        if _is_checkpointer(name, node, strict=True):
            directory, files = node.get("checkpoint_dir"), node.get("checkpoint_files")
            if _checkable(directory) and isinstance(files, list):
                for f in files:
                    if _checkable(f):
                        yield f"{name}.checkpoint_files", str(Path(directory) / str(f)), "checkpoint_file", None


def _problem(label: str, text: str, target: Path, kind: str, source: str | None) -> tuple[str, bool] | None:
    """``(message, is_warning)`` for one path, or None when it is fine."""
    if not target.exists():
        if kind == "checkpoint_file" and not target.parent.is_dir():
            return None  # a missing (or wrong-kind) checkpoint_dir is reported once, not again for every file in it
        return f"'{text}' does not exist on this machine", True
    if kind == "dir" and not target.is_dir():
        return (f"'{text}' is a file, but {label} must be the directory holding the checkpoint files "
                f"(e.g. '{Path(text).parent}')"), False
    if kind != "dir" and target.is_dir():
        return _directory_for_file(label, text, target, source), False
    return None


def _directory_for_file(label: str, text: str, target: Path, source: str | None) -> str:
    if label.endswith("data_files") or ".data_files" in label:
        # datasets.load_dataset resolves data_files to files only: a directory is "Unable to find"
        pattern = f"{text.rstrip('/')}/*.{_EXTENSIONS.get(source or '', '*')}"
        return (f"'{text}' is a directory, but datasets.load_dataset needs files in data_files: "
                f"give a pattern (e.g. '{pattern}') or list the files")
    if label.endswith("checkpoint_files"):
        return f"'{text}' is a directory, but {label} must name files inside checkpoint_dir"
    inside = sorted(p.name for p in target.iterdir() if p.is_file() and p.name.startswith("tokenizer"))[:3]
    hint = f" (e.g. {', '.join(repr(str(Path(text) / n)) for n in inside)})" if inside else ""
    return f"'{text}' is a directory, but {label} must name the tokenizer file itself{hint}"


# ----------------------------------------------------------------------------- where input paths are


def _slots(cfg: dict, partial: bool = False) -> Iterator[_Slot]:
    """Every input path in a config; with ``partial``, in the part of one that a swept value sets
    (its dataset's ``source`` may be in the base config, not here)."""
    for name, node in cfg.items():
        if name == "tokenizer":
            yield from _tokenizer_slots((name,), node)
        elif name == "dataset":
            yield from _dataset_slots((name,), node, partial)
        elif _is_checkpointer(name, node, strict=False):
            yield from _checkpointer_slots((name,), node)


def _tokenizer_slots(path: tuple, node: Any) -> Iterator[_Slot]:
    if isinstance(node, dict):
        for arg in _TOKENIZER_FILES:
            if _checkable(node.get(arg)):
                yield _Slot(node, arg, f"{_dotted(path)}.{arg}", "file")


def _dataset_slots(path: tuple, node: Any, partial: bool) -> Iterator[_Slot]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _dataset_slots(path + (i,), item, partial)
        return
    if not isinstance(node, dict) or "data_files" not in node:
        return
    source = node.get("source")
    if source not in _DATA_SOURCES and not (partial and source is None):
        return  # a Hub dataset's data_files (a builder's default source is one) are inside its repository
    label = f"{_dotted(path)}.data_files"
    files = node["data_files"]
    if isinstance(files, dict):  # {split: file or [files]}
        for split, value in files.items():
            yield from _file_items(files, split, value, f"{label}.{split}", source)
    else:
        yield from _file_items(node, "data_files", files, label, source)


def _file_items(holder: Any, index: Any, value: Any, label: str, source: str | None) -> Iterator[_Slot]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            if _checkable(item):
                yield _Slot(value, i, label, "file", source)
    elif _checkable(value):
        yield _Slot(holder, index, label, "file", source)


def _checkpointer_slots(path: tuple, node: dict) -> Iterator[_Slot]:
    if _checkable(node.get("checkpoint_dir")):
        yield _Slot(node, "checkpoint_dir", f"{_dotted(path)}.checkpoint_dir", "dir")


def _is_checkpointer(name: Any, node: Any, strict: bool) -> bool:
    """A checkpointer node; unless ``strict``, a node named like one without a ``_component_`` counts too
    (a swept ``checkpointer: {checkpoint_dir: ...}`` that merges into the base's)."""
    if not isinstance(node, dict):
        return False
    component = node.get("_component_")
    if isinstance(component, str):
        return component.endswith("Checkpointer")
    return not strict and str(name).endswith("checkpointer")


def _dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _checkable(value: Any) -> bool:
    """A path on this machine's disk: not an interpolation, a glob or a remote URL."""
    return (isinstance(value, str) and bool(value) and "${" not in value and "://" not in value
            and not any(c in value for c in "*?["))


# ----------------------------------------------------------------------------- anchoring relative inputs


def anchor_inputs(tree: Any, base_dir: Path, run_dir: Path, partial: bool = False) -> list[str]:
    """Rewrite, in place, relative input paths that exist next to the experiment file (``base_dir``)
    but not where runs start (``run_dir``) to absolute paths; return one note per rewrite.

    ``tree`` may be a ruamel round-trip mapping: values are replaced in their
    place, so comments stay where they were.
    """
    notes: list[str] = []
    for slot in _slots(tree, partial):
        note = _anchor(slot, base_dir, run_dir)
        if note and note not in notes:
            notes.append(note)
    return notes


def anchor_value(path: tuple[str, ...], value: Any, base_dir: Path, run_dir: Path) -> tuple[Any, str | None]:
    """``value`` set at ``path`` (a swept or derived value), anchored as ``anchor_inputs`` does; and its note.

    A mapping or list is copied first: the same value object may be shared by other runs.
    """
    import copy

    if not path:
        return value, None
    tree: dict = {}
    holder = tree
    for part in path[:-1]:  # the value in a config of its own, so the slots are found the same way
        holder = holder.setdefault(part, {})
    holder[path[-1]] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    notes = anchor_inputs(tree, base_dir, run_dir, partial=True)
    return holder[path[-1]], "; ".join(notes) or None


def _anchor(slot: _Slot, base_dir: Path, run_dir: Path) -> str | None:
    """Make ``slot``'s path absolute when only the experiment file's directory has it; the note, if so."""
    text = slot.value
    relative = Path(text).expanduser()
    if relative.is_absolute() or (run_dir / relative).exists():
        return None
    found = Path(os.path.abspath(base_dir / relative))  # abspath: drop "..", keep the user's symlinks
    if not found.exists() or Path(os.path.abspath(run_dir)) == Path(os.path.abspath(base_dir)):
        return None
    slot.holder[slot.index] = str(found)
    return (f"{slot.label}: '{text}' is read from {found} (relative to the experiment file; "
            "runs start in the experiment directory)")
