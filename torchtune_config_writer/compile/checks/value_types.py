"""Values against the types the code that receives them expects.

Two sources say what a value must be:

- a component argument (any mapping holding ``_component_``, nested ones and
  list items too) must fit the callee's annotation. Annotations are reduced
  to a small JSON description (``describe``) once per component, kept
  between runs by ``sigcache`` for installed packages, so a warm process
  imports nothing;
- a top-level key a recipe reads must fit what the recipe does with it
  (``TOP_LEVEL``, derived by reading torchtune's recipes: ``compile`` is
  passed on as a bool, ``batch_size`` to the DataLoader...).

Only what torchtune itself would trip over is refused: an int where a float
goes is fine, Any / unannotated / ``**kwargs`` take anything, a value whose
interpolation cannot be resolved is left to the interpolation check, and the
keys ``ranges.py`` checks fully (``LEFT_TO_RANGES``) are not checked twice.

    >>> [f.key for f in check_types({"compile": "max-autotune"}, "lora_finetune_single_device")]
    ['compile']
    >>> fits(8, "int"), fits(True, "int"), fits(8, "float"), fits(["q_proj"], {"list": {"literal": ["q_proj"]}})
    (True, False, True, True)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Union

from ...errors import did_you_mean
from .. import sigcache
from ..tree import MISSING, lookup
from . import Finding
from .binding import component_nodes

#: A type description, JSON-able so sigcache can keep it: "any", "int", "float", "bool", "str",
#: "none", "object" (a class no YAML scalar can be, e.g. a Tensor), or one of
#: {"union": [T...]}, {"list": T}, {"tuple": [T...]}, {"dict": T}, {"literal": [v...]},
#: {"enum": name, "values": [...], "names": [...]}.
Desc = Union[str, dict]

#: Keys ranges.py checks in full (type and range, one message each): skipped here so that no
#: key is reported twice. Top-level keys, and component arguments by name.
LEFT_TO_RANGES_TOP = frozenset(
    {"epochs", "batch_size", "gradient_accumulation_steps", "log_every_n_steps", "max_steps_per_epoch", "seed", "dtype", "device"}
)
LEFT_TO_RANGES_ARGS = frozenset({"lr"})

_INT, _FLOAT, _BOOL, _STR, _NONE = "int", "float", "bool", "str", "none"

#: Top-level keys the recipes read, and the type their use implies (read from recipes/*.py:
#: ``cfg.compile`` goes to ``compile_model=``, ``cfg.get("clip_grad_norm")`` through ``float()``...).
TOP_LEVEL: dict[str, Desc] = {
    # passed on as flags
    **{k: _BOOL for k in (
        "compile", "enable_activation_checkpointing", "enable_activation_offloading", "optimizer_in_bwd",
        "log_peak_memory_stats", "resume_from_checkpoint", "save_adapter_weights_only", "shuffle",
        "low_cpu_ram", "fsdp_cpu_offload", "fsdp_reshard_after_forward", "enable_kv_cache",
        "enable_async_checkpointing", "whiten_rewards", "penalise_no_eos",
    )},
    # counts, sizes and indices used in arithmetic, range() and tensor shapes
    **{k: _INT for k in (
        "num_steps", "ppo_epochs", "ppo_batch_size", "forward_batch_size", "min_response_length",
        "max_new_tokens", "tensor_parallel_dim", "max_seq_length",
    )},
    **{k: {"union": [_INT, _NONE]} for k in ("top_k", "fake_quant_after_n_steps", "ac_option")},
    # coefficients used in float arithmetic
    **{k: _FLOAT for k in ("kd_ratio", "temperature", "kl_coeff", "gamma", "lmbda", "reward_penalty")},
    # float(cfg.clip_grad_norm): the recipes document 'inf' to only log the norm
    "clip_grad_norm": {"union": [_FLOAT, _NONE, "float_text"]},
    # lm_eval's limit: a number of examples or a fraction of them
    "limit": {"union": [_FLOAT, _NONE]},
    "ac_mode": {"union": [_STR, _NONE]},
    "log_level": {"union": [_STR, _NONE]},
    # training.set_seed(debug_mode=...): Optional[Union[str, int]]
    "cudnn_deterministic_mode": {"union": [_STR, _INT, _NONE]},
}

_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Module names people bring from Hugging Face / PEFT, and what torchtune calls them.
_MODULE_ALIASES = {"o_proj": "output_proj", "out_proj": "output_proj", "dense": "output_proj",
                   "query": "q_proj", "key": "k_proj", "value": "v_proj"}
#: Better examples than the type's own for arguments people often get wrong.
_EXAMPLES = {"lr": "2e-5", "clip_grad_norm": "1.0", "lora_alpha": "16", "lora_rank": "8", "num_warmup_steps": "100"}
#: MLP layer names: torchtune gives them LoRA through apply_lora_to_mlp, never through lora_attn_modules.
_MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "w1", "w2", "w3", "mlp")


# ----------------------------------------------------------------------------- the check


def check_types(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    """Every component argument and read top-level key of ``cfg`` whose value does not fit its type."""
    for path, node in component_nodes(cfg):
        component = node.get("_component_")
        params = param_types(component) if isinstance(component, str) else None
        if not params:
            continue  # cannot be imported (binding says so) or takes anything
        for arg, raw in node.items():
            if arg == "_component_" or arg in LEFT_TO_RANGES_ARGS or str(arg) not in params:
                continue
            yield from _check_value(cfg, f"{path}.{arg}", str(arg), raw, params[str(arg)], component)
    read = _recipe_reads(recipe)
    for key, desc in TOP_LEVEL.items():
        if key in cfg and (read is None or key in read):
            yield from _check_value(cfg, key, key, cfg[key], desc, "")


def _check_value(cfg: dict, key: str, arg: str, raw: Any, desc: Desc, component: str) -> Iterator[Finding]:
    value = resolve_value(cfg, key, raw)
    if value is UNRESOLVED or fits(value, desc):
        return
    yield Finding(key, explain(arg, raw, value, desc, component))


# ----------------------------------------------------------------------------- interpolations


class _Unresolved:
    def __repr__(self) -> str:
        return "UNRESOLVED"


#: A value holding an interpolation that cannot be resolved (the interpolation check reports it).
UNRESOLVED: Any = _Unresolved()
_REF = re.compile(r"\$\{([^${}]*)\}")


def resolve_value(cfg: dict, path: str, value: Any, depth: int = 0) -> Any:
    """``value`` (found at ``path``) as OmegaConf resolves it, or ``UNRESOLVED``.

    Plain ``${a.b}`` references are looked up directly (OmegaConf costs milliseconds a
    config); resolvers, relative references and escapes go to OmegaConf itself.
    """
    if isinstance(value, dict):
        return value  # component nodes and mappings: their own values are checked where they are
    if isinstance(value, list):
        items = [resolve_value(cfg, f"{path}[{i}]", v, depth) for i, v in enumerate(value)]
        return UNRESOLVED if any(v is UNRESOLVED for v in items) else items
    if not isinstance(value, str) or "${" not in value:
        return UNRESOLVED if value == "???" else value
    refs = _REF.findall(value)
    if depth > 20 or not refs or "\\${" in value or any(":" in r or r.strip().startswith(".") or not r.strip() for r in refs):
        return _resolve_with_omegaconf(cfg, path)
    whole = _REF.fullmatch(value)
    if whole:
        target = lookup(cfg, whole.group(1).strip(), index_lists=True)
        return UNRESOLVED if target is MISSING else resolve_value(cfg, whole.group(1).strip(), target, depth + 1)
    pieces = {r: resolve_value(cfg, r.strip(), lookup(cfg, r.strip(), index_lists=True), depth + 1) for r in refs}
    if any(v is UNRESOLVED or v is MISSING or isinstance(v, (dict, list)) for v in pieces.values()):
        return _resolve_with_omegaconf(cfg, path)  # a container inside a string: let OmegaConf say what it makes
    # a reference inside a longer string makes a string, each piece as str() writes it
    return _REF.sub(lambda m: str(pieces[m.group(1)]), value)


def _resolve_with_omegaconf(cfg: dict, path: str) -> Any:
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.select(OmegaConf.create(cfg), path, throw_on_missing=True)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception:  # noqa: BLE001 - a custom resolver may raise anything; the interpolation check reports it
        return UNRESOLVED


# ----------------------------------------------------------------------------- fitting a value to a type


def fits(value: Any, desc: Desc) -> bool:
    """Whether ``value`` (plain YAML data) fits the type ``desc``, as the callee would use it."""
    if isinstance(value, dict) and "_component_" in value:
        return True  # built into an object first (by torchtune or the recipe); binding checks it
    if isinstance(desc, str):
        return _fits_simple(value, desc)
    if "union" in desc:
        return any(fits(value, d) for d in desc["union"])
    if "list" in desc:
        return isinstance(value, (list, tuple)) and all(fits(v, desc["list"]) for v in value)
    if "tuple" in desc:
        return (isinstance(value, (list, tuple)) and len(value) == len(desc["tuple"])
                and all(fits(v, d) for v, d in zip(value, desc["tuple"])))
    if "dict" in desc:
        return isinstance(value, dict) and all(fits(v, desc["dict"]) for v in value.values())
    if "literal" in desc:
        return any(type(value) is type(v) and value == v for v in desc["literal"])
    if "enum" in desc:
        return value in desc["values"] or value in desc["names"]
    return True


def _fits_simple(value: Any, desc: str) -> bool:
    if desc == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if desc == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)  # Python takes an int for a float
    if desc == _BOOL:
        # null is falsy, and flags are only ever tested for truth (`if cfg.compile:`): it runs as false
        return isinstance(value, bool) or value is None
    if desc == _STR:
        return isinstance(value, str)
    if desc == _NONE:
        return value is None
    if desc == "float_text":
        return isinstance(value, str) and _parses_as_float(value)
    if desc == "object":
        return isinstance(value, (dict, list))  # no YAML scalar can be a Tensor or a Module
    return True  # "any"


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class _Miss:
    """The innermost part of a value that does not fit: where inside it, the part, its type."""

    where: str
    value: Any
    desc: Desc


def explain(arg: str, raw: Any, value: Any, desc: Desc, component: str = "") -> str:
    """What is wrong with ``value`` (``raw`` before interpolation), the type in words, and how to fix it."""
    miss = _innermost(value, desc, "")
    inside = f"{miss.where} " if miss.where else ""
    head = f"{inside}must be {words(miss.desc)}, got {show(miss.value)}."
    fix = fix_for(arg, raw, miss.value, miss.desc, component, nested=bool(miss.where))
    return f"{head} {fix}" if fix else head


def _innermost(value: Any, desc: Desc, where: str) -> _Miss:
    """Descend into lists and mappings while the container itself fits, to name the item that does not."""
    if isinstance(desc, dict) and "union" in desc:
        same = [d for d in desc["union"] if _container_kind(d) == _value_kind(value) and _value_kind(value)]
        if len(same) == 1:
            return _innermost(value, same[0], where)
    inner: tuple[Any, Desc, str] | None = None
    if isinstance(desc, dict) and "list" in desc and isinstance(value, (list, tuple)):
        inner = next(((v, desc["list"], f"item {i}") for i, v in enumerate(value) if not fits(v, desc["list"])), None)
    elif isinstance(desc, dict) and "tuple" in desc and isinstance(value, (list, tuple)) and len(value) == len(desc["tuple"]):
        pairs = enumerate(zip(value, desc["tuple"]))
        inner = next(((v, d, f"item {i}") for i, (v, d) in pairs if not fits(v, d)), None)
    elif isinstance(desc, dict) and "dict" in desc and isinstance(value, dict):
        inner = next(((v, desc["dict"], f"entry '{k}'") for k, v in value.items() if not fits(v, desc["dict"])), None)
    if inner is None:
        return _Miss(where, value, desc)
    return _innermost(inner[0], inner[1], f"{where} {inner[2]}".strip())


def _container_kind(desc: Desc) -> str:
    if isinstance(desc, dict):
        return "list" if ("list" in desc or "tuple" in desc) else "dict" if "dict" in desc else ""
    return ""


def _value_kind(value: Any) -> str:
    return "list" if isinstance(value, (list, tuple)) else "dict" if isinstance(value, dict) else ""


def words(desc: Desc) -> str:
    """A type description in words: ``an integer``, ``a list of one of 'q_proj', 'k_proj'``..."""
    if isinstance(desc, str):
        return {
            _INT: "an integer", _FLOAT: "a number", _BOOL: "true or false", _STR: "a string", _NONE: "null",
            "float_text": "a number written as text ('inf')", "object": "a _component_ mapping", "any": "anything",
        }[desc]
    if "union" in desc:
        parts = [d for d in desc["union"] if d not in ("object", "float_text")] or desc["union"]
        return " or ".join(dict.fromkeys(words(d) for d in parts))
    if "list" in desc:
        return "a list" + ("" if desc["list"] == "any" else f" whose items are each {words(desc['list'])}")
    if "tuple" in desc:
        return f"a list of {len(desc['tuple'])} items: " + ", ".join(words(d) for d in desc["tuple"])
    if "dict" in desc:
        return "a mapping" + ("" if desc["dict"] == "any" else f" whose values are each {words(desc['dict'])}")
    if "literal" in desc:
        return "one of " + ", ".join(_yaml_repr(v) for v in desc["literal"])
    if "enum" in desc:
        return f"one of {desc['enum']}'s values: " + ", ".join(_yaml_repr(v) for v in desc["values"])
    return "anything"


def _yaml_repr(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _yaml(value)


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, with what kind of thing it is (numbers speak for themselves)."""
    kind = {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    if value is None:
        return "null"
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return f"{shown} ({kind})" if not isinstance(value, (int, float)) or isinstance(value, bool) else shown


def fix_for(arg: str, raw: Any, value: Any, want: Desc, component: str = "", nested: bool = False) -> str:
    """How to write ``value`` instead so it is ``want``: the first rule that applies ("" when none does)."""
    rules = (_fix_compile, _fix_interpolation, _fix_list_for_scalar, _fix_quoted, _fix_literal, _fix_number)
    for rule in (_fix_literal,) if nested else rules:  # inside a list, "write arg: x" would mislead
        text = rule(arg, raw, value, want, component)
        if text:
            return text
    return ""


def _fix_compile(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    if component or arg != "compile" or not isinstance(value, str):
        return ""
    if value in _COMPILE_MODES:
        return (f"torchtune's compile key is a bool: true compiles the model and loss with torch.compile's "
                f"default mode; a mode such as '{value}' cannot be chosen from the config. Write compile: true.")
    return "torchtune's compile key is a bool: write compile: true or compile: false."


def _fix_interpolation(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    # "2*${model.lora_rank}" resolves to the string "2*8": OmegaConf does no arithmetic
    if not (isinstance(raw, str) and "${" in raw and isinstance(value, str) and not _REF.fullmatch(raw)):
        return ""
    expr = _REF.sub(lambda m: m.group(1).strip().rsplit(".", 1)[-1], raw)
    expr = re.sub(r"\s*(\*\*|//|[*/+%-])\s*", r" \1 ", expr).strip()
    return (f"OmegaConf only substitutes interpolations into the text ({raw!r} becomes {value!r}), it does no "
            f"arithmetic. Compute it per run instead, in the experiment's derived: section: "
            f"{arg}: \"{{{{ {expr} }}}}\".")


def _fix_list_for_scalar(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    if not isinstance(value, (list, tuple)) or _accepts_container(want, "list"):
        return ""
    if len(value) == 1 and fits(value[0], want):
        return (f"One value goes here, not a list: write {arg}: {_yaml(value[0])}. "
                f"To try several values, list them under variables: in the experiment.")
    return "One value goes here, not a list. To try several values, list them under variables: in the experiment."


def _fix_quoted(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    if not isinstance(value, str):
        return ""
    parsed = _yaml_scalar(value)
    if parsed is not value and fits(parsed, want):
        return f"Write it without quotes, so YAML reads {words(want)}: {arg}: {value.strip()}."
    return ""


def _fix_literal(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    if not isinstance(want, dict) or not ("literal" in want or "enum" in want) or not isinstance(value, str):
        return ""
    options = [str(v) for v in want.get("literal", want.get("values", []))]
    alias = _MODULE_ALIASES.get(value)
    hint = f" Did you mean '{alias}'?" if alias in options else did_you_mean(value, options, n=1)
    if arg == "lora_attn_modules":
        ignored = "torchtune ignores names it does not know, so this module would silently get no LoRA adapter."
        if value in _MLP_NAMES:
            return ignored + " For the MLP layers set apply_lora_to_mlp: true instead."
        return ignored + hint
    return hint.strip()


def _fix_number(arg: str, raw: Any, value: Any, want: Desc, component: str) -> str:
    wants_int = _accepts_scalar(want, _INT) and not _accepts_scalar(want, _FLOAT)
    if isinstance(value, bool):
        if _accepts_scalar(want, _BOOL) or not _example(want):
            return ""
        return f"true/false is not a number here: write {arg}: {_example(want)}."
    if wants_int and isinstance(value, float) and math.isfinite(value):
        if value.is_integer():
            return f"Write it as a whole number: {arg}: {int(value)}."
        if 0 < value < 1 and arg.endswith("steps"):
            return (f"{arg} counts steps; it is not a fraction of training. Compute the steps from the ratio, "
                    f"e.g. in the experiment's derived: section: {arg}: "
                    f"\"{{{{ ({value} * max_steps_per_epoch * epochs) | int }}}}\" (with max_steps_per_epoch set), "
                    f"or write a number of steps such as {arg}: 100.")
        return f"Round it to a whole number: {arg}: {int(value)} or {int(value) + 1}."
    if want == _BOOL:
        return f"Write {arg}: true or {arg}: false."
    if isinstance(value, bool) or not _example(want):
        return ""
    return f"For example {arg}: {_EXAMPLES.get(arg, _example(want))}."


def _accepts_scalar(desc: Desc, simple: str) -> bool:
    if isinstance(desc, dict) and "union" in desc:
        return any(_accepts_scalar(d, simple) for d in desc["union"])
    return desc == simple


def _accepts_container(desc: Desc, kind: str) -> bool:
    if isinstance(desc, dict) and "union" in desc:
        return any(_accepts_container(d, kind) for d in desc["union"])
    return desc in ("any", "object") or _container_kind(desc) == kind


def _example(desc: Desc) -> str:
    for simple, text in ((_INT, "8"), (_FLOAT, "0.1"), (_BOOL, "true"), (_STR, "text")):
        if _accepts_scalar(desc, simple):
            return text
    if isinstance(desc, dict) and "literal" in desc and desc["literal"]:
        return _yaml(desc["literal"][0])
    return ""


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _yaml_scalar(text: str) -> Any:
    """What YAML would read from ``text`` unquoted (as OmegaConf's loader does), or ``text`` itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if re.fullmatch(r"[-+]?\d+", low):
        return int(low)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", low):
        return float(low)
    return text


# ----------------------------------------------------------------------------- what each callee takes


def param_types(component: str) -> dict[str, Desc] | None:
    """Each named argument of ``component`` → its type description (None: takes anything or cannot be imported)."""
    return _param_types(component)


#: The cache entry's kind names the description format: a new format never reads an old entry.
_CACHE_KIND = "param_types/1"


@lru_cache(maxsize=None)
def _param_types(component: str) -> dict[str, Desc] | None:
    if sigcache.cacheable(component):
        return sigcache.cached(_CACHE_KIND, (component,), lambda: _param_types_now(component))
    return _param_types_now(component)


def _param_types_now(component: str) -> dict[str, Desc] | None:
    """Import the component and describe its annotations (the only part that imports torch)."""
    from ..components import import_component, parameters

    try:
        params = parameters(component)
        target = import_component(component) if params else None
    except Exception:  # noqa: BLE001 - a module that fails on import: binding reports it, nothing to type here
        return None
    if not params:
        return None
    hints = _type_hints(target, params)
    out: dict[str, Desc] = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        desc = describe(hints.get(name, p.annotation))
        if p.default is None and desc != "any":
            desc = _union([desc, _NONE])  # `x: int = None`: None is meant to be passed
        out[name] = desc
    return out


def _type_hints(target: Any, params: dict) -> dict[str, Any]:
    """Annotations with strings (``from __future__ import annotations``) resolved; unresolvable ones stay as they are."""
    import inspect
    import typing

    owner = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(owner)
    except Exception:  # noqa: BLE001 - one bad forward reference; resolve the others one by one
        pass
    scope = dict(getattr(inspect.unwrap(owner), "__globals__", {}))
    hints: dict[str, Any] = {}
    for name, p in params.items():
        if isinstance(p.annotation, str):
            try:
                hints[name] = eval(p.annotation, scope)  # noqa: S307 - the package's own annotation text
            except Exception:  # noqa: BLE001
                hints[name] = typing.Any
    return hints


def describe(ann: Any) -> Desc:
    """An annotation reduced to a JSON-able type description (see ``Desc``); what cannot be read is "any"."""
    import enum
    import inspect
    import os
    import typing

    if ann is inspect.Parameter.empty or ann is typing.Any or isinstance(ann, (str, typing.TypeVar)):
        return "any"
    if ann is None or ann is type(None):
        return _NONE
    if ann in (bool, int, float, str):
        return ann.__name__
    if ann in (list, tuple, set, frozenset):  # bare containers: any items
        return {"list": "any"}
    if ann is dict:
        return {"dict": "any"}
    if inspect.isclass(ann) and issubclass(ann, (os.PathLike, Path)):
        return _STR  # a path is written as a string and converted by the callee
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is not None:
        return _describe_generic(ann, origin, args)
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return {"enum": ann.__name__, "values": [_jsonable(m.value) for m in ann], "names": [m.name for m in ann]}
    if inspect.isclass(ann) and _built_only(ann):
        return "object"
    return "any"


def _describe_generic(ann: Any, origin: Any, args: tuple) -> Desc:
    import collections.abc as cabc
    import types
    import typing

    if origin in (typing.Union, types.UnionType):
        return _union([describe(a) for a in args])
    if origin is typing.Literal:
        return {"literal": list(args)} if all(isinstance(a, (str, int, float, bool)) or a is None for a in args) else "any"
    if origin is typing.Annotated:
        return describe(args[0])
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return {"list": describe(args[0]) if args else "any"}
        return {"tuple": [describe(a) for a in args]}
    if origin in (list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet):
        return {"list": describe(args[0]) if args else "any"}
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        return {"dict": describe(args[1]) if len(args) == 2 else "any"}
    return "any"  # Callable, Iterable, Generator...: nothing a YAML value can be checked against


def _union(members: list[Desc]) -> Desc:
    if "any" in members:
        return "any"
    flat: list[Desc] = []
    for m in members:
        for d in (m["union"] if isinstance(m, dict) and "union" in m else [m]):
            if d not in flat:
                flat.append(d)
    return flat[0] if len(flat) == 1 else {"union": flat}


def _built_only(cls: type) -> bool:
    """Classes no YAML scalar can stand for: tensors, modules, optimizers, datasets."""
    import torch

    return issubclass(cls, (torch.Tensor, torch.nn.Module, torch.optim.Optimizer, torch.utils.data.Dataset))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


# ----------------------------------------------------------------------------- what a recipe reads


@lru_cache(maxsize=None)
def _recipe_reads(recipe: str) -> frozenset[str] | None:
    """The TOP_LEVEL keys the recipe's source reads (None: source unknown, check them all)."""
    source = recipe_source(recipe)
    if source is None:
        return None
    return frozenset(k for k in TOP_LEVEL if re.search(rf"cfg\.{k}\b|[\"']{k}[\"']", source))


@lru_cache(maxsize=None)
def recipe_source(recipe: str) -> str | None:
    """The text of the recipe's .py file: a registry name under torchtune's recipes/, or a path."""
    if not recipe:
        return None
    if recipe.endswith(".py"):
        path = Path(recipe)
    else:
        from ..registry import configs_dir

        try:
            path = configs_dir().parent / f"{recipe}.py"
        except Exception:  # noqa: BLE001 - torchtune not installed: nothing to read
            return None
    try:
        return path.read_text()
    except OSError:
        return None
