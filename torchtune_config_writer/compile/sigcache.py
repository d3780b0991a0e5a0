"""Remember what validation learned about installed components, between runs.

Checking a config means importing its components (and so torch: seconds),
although the answers — which arguments ``torchtune.models.llama3_2.lora_llama3_2_1b``
accepts, whether ``torch.optim.AdamWW`` exists — only change when the
installed packages do. So answers about components from torch, torchtune,
torchao and datasets are kept in a small JSON file whose name carries the
versions of those packages and of this tool; a new version means a new, empty
cache. Components from anywhere else (your own code changes between runs) are
never cached. ``TORCHTUNE_CONFIG_WRITER_CACHE=off`` turns the cache off; set to
a directory, it moves it.

An answer that depends on something that may change without a version change
— a component that failed to import because an optional package (torchvision,
bitsandbytes) is missing, and may be installed in a minute — is never stored:
the computation calls ``dont_store()`` and ``cached`` returns it unsaved.

    >>> cached("accepted_args", ("torch.optim.AdamW",), lambda: ["lr", "betas"])   # doctest: +SKIP
    ['lr', 'betas']
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .. import __version__

ENV = "TORCHTUNE_CONFIG_WRITER_CACHE"
#: Packages whose components' answers are cached: installed, versioned, not edited by users.
CACHED_PACKAGES = ("torch", "torchtune", "torchao", "datasets")
#: Packages some cached answers read (the callees torchtune's metric loggers pass ``**kwargs`` to):
#: their versions name the cache too, so installing or upgrading one starts a fresh cache.
CALLEE_PACKAGES = ("wandb", "comet_ml", "mlflow", "tensorboard")
_FORMAT = 2  # bump when what is stored changes (2: dataset builders' config fields, loggers' callees)

_MISSING = object()


def cacheable(component: str) -> bool:
    """True for a dotted path inside one of ``CACHED_PACKAGES``."""
    return component.split(".")[0] in CACHED_PACKAGES


#: One flag per ``cached`` computation in progress (innermost last): True once it must not be stored.
_in_progress: list[bool] = []


def cached(kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-able result, from the cache when an earlier run stored it.

    The result is not stored when ``compute`` (or anything it called) said ``dont_store()``.
    """
    store = _store()
    name = json.dumps([kind, *key])
    if store is not None:
        value = store.data.get(name, _MISSING)
        if value is not _MISSING:
            return value
    _in_progress.append(False)
    try:
        value = compute()
    finally:
        spoiled = _in_progress.pop()
    if store is not None and not spoiled:
        store.data[name] = value
        store.dirty = True
    return value


def dont_store() -> None:
    """Keep every computation now in progress out of the cache (an outer answer includes the inner one)."""
    _in_progress[:] = [True] * len(_in_progress)


class _Store:
    def __init__(self, path: Path):
        self.path = path
        self.dirty = False
        try:
            self.data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}  # missing or damaged: start empty

    def save(self) -> None:
        if not self.dirty:
            return
        from ..atomic import atomic_write_text

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.data, sort_keys=True))
        except OSError:
            pass  # a cache that cannot be written only costs time


@lru_cache(maxsize=1)
def _store() -> _Store | None:
    setting = os.environ.get(ENV, "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    root = Path(setting) if setting else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchtune_config_writer"
    store = _Store(root / f"components-{_versions_digest()}.json")
    atexit.register(store.save)
    return store


def _versions_digest() -> str:
    parts = [f"format={_FORMAT}", f"tool={__version__}", f"python={sys.version_info[:2]}", sys.prefix]
    for package in CACHED_PACKAGES + CALLEE_PACKAGES:
        try:
            parts.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package}=none")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
