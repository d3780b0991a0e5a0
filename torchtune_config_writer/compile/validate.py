"""Validate generated configs in one process: torchtune's own check and more.

torchtune's ``config.validate`` imports each top-level ``_component_`` and
binds its arguments to the signature. We run exactly that, once per distinct
(node, argument names) — the values don't matter to a signature bind — and add
what it misses: interpolations that point nowhere, nested components, and the
types of the settings every recipe reads.

    >>> problems = validate_configs([("run_000", {"epochs": "two"})])   # doctest: +SKIP
    >>> str(problems[0])                                                  # doctest: +SKIP
    "run_000: epochs: must be an integer >= 1, got 'two'"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from functools import lru_cache
from typing import Any, Iterator, Sequence

from ..errors import did_you_mean
from . import sigcache
from .components import accepted_args, import_component, import_error_message, import_torchtune
from .tree import MISSING, all_paths, lookup, walk_paths


@dataclass(frozen=True)
class Problem:
    run_id: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.run_id}: {self.key}: {self.message}"


def validate_configs(configs: Sequence[tuple[str, dict]]) -> list[Problem]:
    """Check every ``(run_id, config)``; return all problems (empty when all pass).

    Imports torchtune once, on the first call.
    """
    problems: list[Problem] = []
    for run_id, cfg in configs:
        problems.extend(Problem(run_id, key, msg) for key, msg in check_config(cfg))
    return problems


def check_config(cfg: dict) -> list[tuple[str, str]]:
    """``(key, problem)`` pairs for one config."""
    found = list(_check_interpolations(cfg))
    for path, node in _component_nodes(cfg):
        names = tuple(sorted(str(k) for k in node if k != "_component_"))
        found.extend((path, msg) for msg in _check_component(node["_component_"], names, top=path.count(".") == 0))
    found.extend(_check_fields(cfg))
    return found


# ----------------------------------------------------------------------------- components


def _component_nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        if prefix and "_component_" in node:
            yield prefix, node
        for k, v in node.items():
            yield from _component_nodes(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _component_nodes(v, f"{prefix}[{i}]")


@lru_cache(maxsize=None)
def _check_component(component: Any, arg_names: tuple[str, ...], top: bool) -> tuple[str, ...]:
    """Problems of one component node (cached: 1,000 runs share a handful of nodes, and runs share installs)."""
    if isinstance(component, str) and sigcache.cacheable(component):
        key = (component, list(arg_names), top)
        return tuple(sigcache.cached("component", key, lambda: list(_check_component_now(component, arg_names, top))))
    return _check_component_now(component, arg_names, top)


def _check_component_now(component: Any, arg_names: tuple[str, ...], top: bool) -> tuple[str, ...]:
    """Problems of one component node, by torchtune's own rules (imports torchtune)."""
    import inspect

    from omegaconf import OmegaConf

    tt_config = import_torchtune().config
    from torchtune.config._errors import ConfigError, InstantiationError

    if not isinstance(component, str) or not component:
        return (f"_component_ must be a dotted import path, got {component!r}",)
    node = OmegaConf.create({"node": {"_component_": component, **{n: None for n in arg_names}}})
    try:
        if top:
            tt_config.validate(node)
        else:
            # torchtune validates top-level nodes only; check nested ones the same way
            target = import_component(component)
            if target is None:
                return (import_error_message(component),)
            inspect.signature(target).bind_partial(**{n: None for n in arg_names})
    except ConfigError as e:
        return tuple(_explain_type_error(str(err), component) for err in e.errors)
    except InstantiationError:
        return (import_error_message(component),)
    except (TypeError, ValueError) as e:
        return (_explain_type_error(str(e), component),)
    # torchtune binds **kwargs without complaint; a dataset builder's end up in datasets.load_dataset
    accepted = accepted_args(component)
    if accepted is not None:
        return tuple(_explain_type_error(f"unexpected keyword argument '{n}'", component) for n in arg_names if n not in accepted)
    return ()


def _explain_type_error(text: str, component: str) -> str:
    bad = re.search(r"unexpected keyword argument '([^']+)'", text)
    if bad:
        fix = did_you_mean(bad.group(1), accepted_args(component) or (), n=1)
        return f"{component} does not accept argument '{bad.group(1)}'.{fix}"
    return f"{component}: {text.strip()}"


# ----------------------------------------------------------------------------- interpolations

_INTERP = re.compile(r"\$\{([^${}]*)\}")


def _check_interpolations(cfg: dict) -> Iterator[tuple[str, str]]:
    for parts, value in walk_paths(cfg):
        if not isinstance(value, str) or "${" not in value:
            continue
        path = ".".join(parts)
        for ref in _INTERP.findall(value):
            ref = ref.strip()
            if ":" in ref or ref.startswith("."):
                yield from _resolve_with_omegaconf(cfg, path)  # resolvers and relative refs: ask OmegaConf
                break
            if lookup(cfg, ref, index_lists=True) is MISSING:
                hint = did_you_mean(ref, all_paths(cfg), n=1, show=lambda m: f"${{{m}}}")
                yield path, f"interpolation '${{{ref}}}' points to a key the config does not have.{hint}"


def _resolve_with_omegaconf(cfg: dict, path: str) -> Iterator[tuple[str, str]]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.select(OmegaConf.create(cfg), path, throw_on_missing=True)
    except OmegaConfBaseException as e:
        yield path, f"cannot resolve interpolation: {str(e).splitlines()[0]}"
    except Exception as e:  # a custom resolver may raise anything
        yield path, f"cannot resolve interpolation: {e}"


# ----------------------------------------------------------------------------- paths (warnings)

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
                out.append(Problem(run_id, key, f"'{path}' does not exist on this machine"))
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


# ----------------------------------------------------------------------------- fields recipes read

_DTYPES = ("fp32", "bf16", "fp16", "fp64")
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|npu|hpu|meta)(:\d+)?$")


def _check_fields(cfg: dict) -> Iterator[tuple[str, str]]:
    for key in ("epochs", "batch_size", "gradient_accumulation_steps", "log_every_n_steps"):
        if key in cfg and not _positive_int(cfg[key]):
            yield key, f"must be an integer >= 1, got {cfg[key]!r}"
    if cfg.get("max_steps_per_epoch") is not None and not _positive_int(cfg["max_steps_per_epoch"]):
        yield "max_steps_per_epoch", f"must be an integer >= 1 or null, got {cfg['max_steps_per_epoch']!r}"
    if cfg.get("seed") is not None and not (isinstance(cfg["seed"], int) and not isinstance(cfg["seed"], bool)):
        yield "seed", f"must be an integer or null, got {cfg['seed']!r}"
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, dict) and "lr" in optimizer:
        lr = optimizer["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            if not (isinstance(lr, str) and "${" in lr):
                yield "optimizer.lr", f"must be a positive number, got {lr!r}"
    if "dtype" in cfg and cfg["dtype"] is not None and cfg["dtype"] not in _DTYPES:
        yield "dtype", f"must be one of {', '.join(_DTYPES)}, got {cfg['dtype']!r}." + did_you_mean(str(cfg["dtype"]), _DTYPES, n=1)
    if "device" in cfg and not (isinstance(cfg["device"], str) and _DEVICE.match(cfg["device"])):
        yield "device", f"must be a device such as cpu, cuda or cuda:0, got {cfg['device']!r}"
    checkpointer = cfg.get("checkpointer")
    if isinstance(checkpointer, dict) and "model_type" in checkpointer:
        known = _model_types()
        if known and checkpointer["model_type"] not in known:
            yield "checkpointer.model_type", f"unknown model_type {checkpointer['model_type']!r}." + (
                did_you_mean(str(checkpointer["model_type"]), known, n=1) or f" Known: {', '.join(known)}"
            )


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@lru_cache(maxsize=1)
def _model_types() -> tuple[str, ...]:
    return tuple(sigcache.cached("model_types", (), lambda: list(_model_types_now())))


def _model_types_now() -> tuple[str, ...]:
    import_torchtune()
    try:
        from torchtune.training.checkpointing._utils import ModelType
    except ImportError:
        return ()
    return tuple(m.name for m in ModelType)
