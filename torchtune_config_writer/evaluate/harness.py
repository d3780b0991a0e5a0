"""lm-evaluation-harness tasks on a loaded torchtune model, with lm-eval's own evaluator and metrics.

The model goes to the harness through torchtune's own adapter, ``_LLMEvalWrapper``
from the ``eleuther_eval`` recipe installed with torchtune (so requests are
tokenized, batched and generated exactly as ``tune run eleuther_eval`` does).
That class derives from lm-eval's ``HFLM``, and its ``__init__`` builds
``HFLM(pretrained="gpt2")`` only to throw it away, which downloads gpt2.
``TorchtuneLM`` replaces that ``__init__``: it sets the attributes HFLM's
request code reads (checked against lm-eval 0.4.9.1) and builds nothing.

One difference from the recipe, on by default (``add_bos: true``): requests
start with the tokenizer's BOS, as every sequence a torchtune dataset trains
on does. torchtune's wrapper leaves it out; a small model finetuned here then
scores markedly lower on prompts written exactly as it was trained
(the demo's count_mc: 0.84 without BOS, 1.0 with it, same checkpoint).
``add_bos: false`` gives the recipe's behaviour.

Metric names are ``<task>/<metric>``: lm-eval's ``"acc,none"`` of task
``count_mc`` is ``count_mc/acc``; another filter than ``none`` is appended
(``"exact_match,strict-match"`` -> ``exact_match_strict-match``). Standard
errors go to the details, next to the task versions and sample counts.

    >>> flatten_results({"results": {"count_mc": {"alias": "count_mc", "acc,none": 0.8,
    ...                                           "acc_stderr,none": 0.05}}})
    ({'count_mc/acc': 0.8}, {'count_mc/acc_stderr': 0.05})
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .loading import Loaded, import_torchtune
from .outcome import Outcome, package_version

#: Loaded from torchtune's installed recipes folder (it is not an importable package).
_RECIPE_FILE = "eleuther_eval.py"
#: HFLM's generation length when a task does not set one (the torchtune wrapper's too).
_DEFAULT_GEN_TOKENS = 256


def evaluate_lm_eval(cfg: DictConfig, loaded: Loaded) -> Outcome:
    """Run the config's ``tasks`` with ``lm_eval.evaluator.evaluate`` and flatten its numbers."""
    import torch
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import get_task_dict

    _quiet_harness()
    lm = make_lm(loaded, max_seq_length=int(cfg.get("max_seq_length", 4096)),
                 batch_size=int(cfg.get("batch_size", 8)), enable_kv_cache=bool(cfg.get("enable_kv_cache", True)),
                 add_bos=bool(cfg.get("add_bos", True)))
    include_path = cfg.get("include_path")
    tasks = [str(t) for t in OmegaConf.to_container(cfg.tasks, resolve=True)]
    manager = _task_manager(str(include_path) if include_path else None)  # once per process: not timed
    start = time.perf_counter()
    task_dict = get_task_dict(tasks, manager)
    with torch.inference_mode():
        output = evaluate(lm, task_dict, limit=cfg.get("limit"))
    seconds = time.perf_counter() - start
    if not output:
        raise RuntimeError(f"lm-eval returned no results for {tasks}")
    metrics, stderrs = flatten_results(output)
    if not metrics:
        raise RuntimeError(f"lm-eval reported no numeric metric for {tasks}")
    details: dict[str, Any] = {
        "tasks": tasks,
        "add_bos": lm.add_bos,
        "stderr": stderrs,
        "versions": _plain_json(output.get("versions", {})),
        "n_samples": _plain_json(output.get("n-samples", {})),
        "lm_eval_version": package_version("lm_eval"),
    }
    return Outcome(metrics, details, loaded.checkpoint_dir, seconds)


def flatten_results(output: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """``(metrics, stderrs)`` named ``<task>/<metric>[_<filter>]`` from lm-eval's results and groups.

    Non-numeric entries (aliases, "N/A" standard errors) are left out.
    """
    metrics: dict[str, float] = {}
    stderrs: dict[str, float] = {}
    for section in ("results", "groups"):  # groups repeat their results entry, if any; subtasks are in results
        for task, values in (output.get(section) or {}).items():
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or "," not in key:
                    continue
                metric, _, filt = key.partition(",")
                name = f"{task}/{metric}" if filt in ("", "none") else f"{task}/{metric}_{filt}"
                target = stderrs if "_stderr" in metric else metrics
                target.setdefault(name, float(value))
    return metrics, stderrs


def make_lm(loaded: Loaded, *, max_seq_length: int, batch_size: int, enable_kv_cache: bool = True,
            add_bos: bool = True) -> Any:
    """An lm-eval model over ``loaded`` (torchtune's wrapper, with no gpt2 built)."""
    lm = _lm_class()(loaded.model, loaded.tokenizer, device=loaded.device, max_seq_length=max_seq_length,
                     batch_size=batch_size, dtype=loaded.dtype, enable_kv_cache=enable_kv_cache)
    lm.add_bos = add_bos
    return lm


@lru_cache(maxsize=1)
def _lm_class() -> type:
    """``TorchtuneLM``: torchtune's ``_LLMEvalWrapper`` with an ``__init__`` that downloads nothing."""
    from lm_eval.api.model import TemplateLM

    wrapper = _recipe_module()._LLMEvalWrapper

    class TorchtuneLM(wrapper):  # type: ignore[misc, valid-type]
        """torchtune's lm-eval adapter; HFLM's request code runs, HFLM's model loading does not."""

        def __init__(self, model: Any, tokenizer: Any, *, device: Any, max_seq_length: int, batch_size: int,
                     dtype: Any, enable_kv_cache: bool) -> None:
            TemplateLM.__init__(self)  # the harness's base: sets cache_hook; HFLM's own __init__ is skipped
            # What torchtune's wrapper sets after its super().__init__:
            self._model = model
            self._tokenizer = tokenizer
            self._max_seq_length = max_seq_length
            self._batch_size = batch_size
            self._dtype = dtype
            self._enable_kv_cache = enable_kv_cache
            # What HFLM.__init__ would have set that its request code (loglikelihood, generate_until) reads:
            self._device = device
            self.backend = "causal"
            self.logits_cache = True  # one forward for one-token continuations sharing a context
            self.truncation = False
            self.softmax_dtype = None
            self.mixed_precision_dtype = None
            self.think_end_token = None
            self.add_bos_token = False
            self.custom_prefix_token_id = None
            self.batch_schedule = 1
            self.batch_sizes: dict[int, int] = {}
            self.max_batch_size = batch_size
            self.batch_size_per_gpu = batch_size
            self._rank = 0
            self._world_size = 1
            self._budget: int | None = None
            self.add_bos = True

        @property
        def prefix_token_id(self) -> int:
            # HFLM asks its HF tokenizer (which would be gpt2's); an empty context means "after BOS" here.
            return self._tokenizer.bos_id

        @property
        def max_gen_toks(self) -> int:
            return self._budget or _DEFAULT_GEN_TOKENS

        @property
        def tokenizer_name(self) -> str:
            return type(self._tokenizer).__name__

        # No progress bars: this runs in a child process whose output is a log file.
        def loglikelihood(self, requests: Any, disable_tqdm: bool = True) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = True) -> Any:
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests: Any, disable_tqdm: bool = True) -> Any:
            return super().generate_until(requests, disable_tqdm=True)

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            # The continuation is the tail of encode(context + continuation), so BOS goes on the context only.
            context_ids, continuation_ids = super()._encode_pair(context, continuation)
            return ([self._tokenizer.bos_id] if self.add_bos else []) + context_ids, continuation_ids

        def tok_batch_encode(self, text: list[str], left_truncate_len: int | None = None,
                             **kwargs: Any) -> tuple[Any, Any]:
            if not self.add_bos:
                return super().tok_batch_encode(text, left_truncate_len=left_truncate_len, **kwargs)
            import torch
            from torchtune.data import left_pad_sequence

            rows = [torch.tensor([self._tokenizer.bos_id] + self.tok_encode(t)) for t in text]
            ids = left_pad_sequence(rows, batch_first=True, padding_value=self._tokenizer.pad_id)
            if left_truncate_len is not None:
                ids = ids[:, -left_truncate_len:]
            return ids, torch.ones_like(ids)

        def _model_generate(self, context: Any, **generation_kwargs: Any) -> Any:
            # torchtune's wrapper always generates max_gen_toks (256) tokens into a cache of max_length;
            # lm-eval passes max_length = context + the task's max_gen_toks, so generate only that many.
            wanted = generation_kwargs.get("max_length")
            self._budget = max(1, int(wanted) - context.shape[1]) if wanted else None
            try:
                return super()._model_generate(context, **generation_kwargs)
            finally:
                self._budget = None

    return TorchtuneLM


@lru_cache(maxsize=1)
def _recipe_module() -> Any:
    """torchtune's ``recipes/eleuther_eval.py``, loaded by path (``import recipes`` raises on purpose)."""
    torchtune = import_torchtune()
    path = Path(torchtune.__file__).resolve().parent.parent / "recipes" / _RECIPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"torchtune's {_RECIPE_FILE} recipe is not at {path}; reinstall torchtune")
    spec = importlib.util.spec_from_file_location("_torchtune_eleuther_eval", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=8)
def _task_manager(include_path: str | None) -> Any:
    """lm-eval's task index (it reads every task YAML it ships: built once per include_path)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def _quiet_harness() -> None:
    # lm-eval logs every request batch and task build at INFO; the evaluation log wants outcomes.
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _plain_json(value: Any) -> Any:
    """Task versions and counts as JSON-safe values (lm-eval sometimes gives numpy numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(number) if number.is_integer() and not math.isinf(number) else number

