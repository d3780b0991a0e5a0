"""What installed components are: import a ``_component_`` path, ask which arguments it accepts.

This is the one place torchtune (and so torch) gets imported, on first need:
``import torchtune`` takes seconds, and commands that don't need it never call
anything here. Answers about components of torch, torchtune, torchao and
datasets are also kept between runs (``sigcache.py``), so a second
``generate`` of the same kind of config imports nothing.

    >>> sorted(accepted_args("torch.optim.SGD"))[:3]          # doctest: +SKIP
    ['dampening', 'differentiable', 'foreach']
    >>> import_error_message("torch.optim.AdamWW")              # doctest: +SKIP
    "cannot import component 'torch.optim.AdamWW': 'AdamWW' not found in 'torch.optim'. Did you mean 'torch.optim.AdamW'?"
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

from ..errors import did_you_mean
from . import sigcache


@lru_cache(maxsize=1)
def import_torchtune() -> ModuleType:
    """``import torchtune`` (once), with torchao's import-time warning silenced."""
    # torchao warns on every import that its C++ extensions don't match this torch build;
    # the pure-Python parts torchtune uses work, and the warning only alarms users.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torchtune
    import torchtune.config  # noqa: F401

    return torchtune


def import_component(path: str) -> Any | None:
    """The object a dotted path names (``torch.optim.AdamW``), or None when it cannot be imported.

    The longest importable module prefix is imported, the rest are attributes,
    as torchtune's own instantiation resolves a ``_component_``.
    """
    return _resolve(path)[0]


@dataclass(frozen=True)
class ImportFailure:
    """Why a module of a component path did not import: a package is missing, or its code failed."""

    module: str
    """The module whose import failed (``torchtune.models.llama3_2_vision``)."""
    missing: str | None
    """The top-level package not installed (``torchvision``), when that is the reason."""
    error: str
    """The import error in words, for any other failure."""


def _resolve(path: str) -> tuple[Any | None, ImportFailure | None]:
    """The object ``path`` names, or None and, when a module failed to import, why."""
    import_torchtune()  # components import torchtune anyway; this keeps its import quiet
    parts = path.split(".")
    failure = None
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ImportError as e:
            failure = _import_failure(module, e) or failure  # the shortest failing module is the one to name
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None, failure
        return obj, None
    return None, failure


def _import_failure(module: str, error: ImportError) -> ImportFailure | None:
    """None when ``module`` simply does not exist (the path names an attribute, or is a typo).

    Otherwise the failure is about this environment (a package not installed yet),
    so no answer computed from it may be kept in the component cache.
    """
    missing = error.name if isinstance(error, ModuleNotFoundError) else None
    top = missing.split(".")[0] if missing else None
    installed = bool(top) and importlib.util.find_spec(top) is not None
    if installed and (module + ".").startswith(f"{missing}."):
        return None  # ``module`` itself (or a parent of it inside an installed package) does not exist
    sigcache.dont_store()
    # an installed package lacking a module is a version mismatch: said by the error, not "pip install"
    return ImportFailure(module, None if installed else top, f"{type(error).__name__}: {error}")


#: Import names whose pip package is called otherwise.
_PIP_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn", "cv2": "opencv-python", "yaml": "pyyaml",
              "google": "protobuf", "bnb": "bitsandbytes"}


def import_error_message(component: str) -> str:
    """Why ``component`` cannot be imported, and what to write instead."""
    _, failure = _resolve(component)
    if failure is not None and failure.missing:
        install = f"pip install {_PIP_NAMES.get(failure.missing, failure.missing)}"
        if failure.missing == failure.module.split(".")[0]:
            return (f"cannot import component '{component}': module '{failure.missing}' is not installed "
                    f"here ({install}, or choose another component)")
        return (f"cannot import component '{component}': '{failure.module}' needs the package "
                f"'{failure.missing}', which is not installed here ({install}, or choose another component)")
    if failure is not None:
        return f"cannot import component '{component}': importing '{failure.module}' failed ({failure.error})"
    module, attr, parent = _first_missing(component)
    hint = did_you_mean(attr, dir(parent), n=1, show=lambda m: f"{module}.{m}") if parent is not None else ""
    return f"cannot import component '{component}': '{attr}' not found in '{module}'.{hint}"


def _first_missing(component: str) -> tuple[str, str, Any | None]:
    """``(longest importable prefix, the name missing in it, the prefix's object)``; the object is None
    when not even the first name imports."""
    parts = component.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = import_component(".".join(parts[:i]))
        if parent is not None:
            return ".".join(parts[:i]), parts[i], parent
    module, _, attr = component.rpartition(".")
    return module, attr, None


@lru_cache(maxsize=None)
def accepted_args(component: str) -> frozenset[str] | None:
    """Argument names a component accepts, or None when it takes any (``**kwargs``).

    torchtune's dataset builders pass ``**kwargs`` on to ``datasets.load_dataset``,
    so for them the answer is their own arguments plus load_dataset's and the
    packaged builders' config fields: a typo there is caught. The ``**kwargs`` of
    the components in ``KWARGS_CALLEES`` are checked against their callee when
    it is installed. A component that cannot be imported accepts nothing.
    """
    if sigcache.cacheable(component):
        names = sigcache.cached("accepted_args", (component,), lambda: _sorted_or_none(_accepted_args(component)))
        return None if names is None else frozenset(names)
    return _accepted_args(component)


def parameters(component: str) -> dict[str, inspect.Parameter] | None:
    """The signature's parameters ({} when it cannot be imported, None when it has no signature)."""
    target = import_component(component)
    if target is None:
        return {}
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Forward:
    """Where a component's ``**kwargs`` go, and which names change on the way."""

    callee: str
    """Dotted path of the callee (imported only when its package is installed)."""
    passed: frozenset[str] = frozenset()
    """Names the component passes to the callee itself: one more from ``**kwargs`` is a clash."""
    consumed: frozenset[str] = frozenset()
    """Names the component takes out of ``**kwargs`` before forwarding them."""


#: Components (by defining module and name) whose ``**kwargs`` reach a known callee.
#: TensorBoardLogger and DiskLogger drop theirs and MLFlowLogger has none, so they are not here.
KWARGS_CALLEES: dict[str, _Forward] = {
    # torchtune/training/metric_logging.py: wandb.init(project=, entity=, group=, dir=kwargs.pop("dir", log_dir), **kwargs)
    "torchtune.training.metric_logging.WandBLogger": _Forward(
        "wandb.init", frozenset({"project", "entity", "group", "dir"}), frozenset({"dir"})),
    # comet_ml.start(experiment_config=comet_ml.ExperimentConfig(log_code=, tags=, name=, **kwargs)), log_dir dropped
    "torchtune.training.metric_logging.CometLogger": _Forward(
        "comet_ml.ExperimentConfig", frozenset({"log_code", "tags", "name"}), frozenset({"log_dir"})),
}


def _accepted_args(component: str) -> frozenset[str] | None:
    params = parameters(component)
    if params is None:
        return None
    names = _named(params)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return frozenset(names)
    if component.startswith("torchtune.datasets"):
        # torchtune's builders pass **kwargs to datasets.load_dataset, which passes what it does not
        # take itself to the builder's config (JSON's field, CSV's delimiter, ...)
        return frozenset(names | _named(parameters("datasets.load_dataset") or {}) | dataset_config_fields())
    forwarded = _forwarded_args(component)
    return None if forwarded is None else frozenset(names | forwarded)


def _forwarded_args(component: str) -> frozenset[str] | None:
    """Names the ``**kwargs`` of ``component`` may hold, or None when unknown (any name is accepted)."""
    target = import_component(component)
    forward = KWARGS_CALLEES.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    if forward is None or importlib.util.find_spec(forward.callee.split(".")[0]) is None:
        return None  # no known callee, or not installed here: the run may have it
    params = parameters(forward.callee)
    if not params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset((_named(params) - forward.passed) | forward.consumed)


@lru_cache(maxsize=1)
def dataset_config_fields() -> frozenset[str]:
    """Fields of every packaged ``datasets`` builder's config: what ``load_dataset(**config_kwargs)`` accepts.

    The union over all packaged builders (json, csv, parquet, text, ...): the
    source is a value, not known when a key is resolved, and a field of another
    format is a rare mistake while refusing a valid one blocks the user.
    """
    import dataclasses

    import datasets
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    fields: set[str] = set()
    for module_name, _ in _PACKAGED_DATASETS_MODULES.values():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # a builder needing an optional package
        for obj in vars(module).values():
            config = getattr(obj, "BUILDER_CONFIG_CLASS", None) if isinstance(obj, type) and issubclass(obj, datasets.DatasetBuilder) else None
            if config is not None and dataclasses.is_dataclass(config):
                fields |= {f.name for f in dataclasses.fields(config) if not f.name.startswith("_")}
    return frozenset(fields)


def _named(params: dict[str, inspect.Parameter]) -> set[str]:
    return {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _sorted_or_none(names: frozenset[str] | None) -> list[str] | None:
    return None if names is None else sorted(names)
