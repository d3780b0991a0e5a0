"""Load a checkpoint's model and tokenizer once, for every config that evaluates it.

The held-out loss and lm-eval read the same ``model``, ``checkpointer``,
``tokenizer``, ``device`` and ``dtype`` keys. Loading is the expensive part of a
small evaluation, so ``ModelCache`` keeps the last model it built and hands it
out again while the next config asks for the same checkpoint. Only one model is
kept at a time: the program orders its configs so that the ones sharing a
checkpoint come together (``checkpoint_key``), and a run's epochs are never all
in memory at once.

    >>> cache = ModelCache(echo=print)                                   # doctest: +SKIP
    >>> loaded, fresh = cache.get(cfg)                                   # doctest: +SKIP
    loading checkpoint /exp/runs/run_000/epoch_0 (torchtune.models.llama2.llama2)
    >>> fresh, cache.get(cfg)[1]                                         # doctest: +SKIP
    (True, False)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Keys of the checkpointer section that say where it writes, not what it reads.
_WRITE_ONLY_KEYS = ("output_dir",)


def import_torchtune() -> Any:
    """``import torchtune`` with torchao's import-time warning silenced; returns the module.

    torchao warns on every import that its C++ extensions do not match this torch
    build; torchtune only uses its pure-Python parts, so the warning is noise in
    an evaluation log.
    """
    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torchtune
    import torchtune.config

    return torchtune


def plain(node: Any) -> Any:
    """A config node as plain Python (interpolations resolved); scalars pass through.

    >>> plain(OmegaConf.create({"a": 1, "b": "${a}"}))
    {'a': 1, 'b': 1}
    """
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def checkpoint_key(cfg: DictConfig) -> str | None:
    """What identifies the loaded model: checkpointer (less its output_dir), model, device, dtype.

    None for a config that loads no torchtune model (inspect-ai loads its own).

    >>> cfg = OmegaConf.create({"model": {"_component_": "m"}, "device": "cpu", "dtype": "fp32",
    ...                         "checkpointer": {"checkpoint_dir": "/c", "output_dir": "/o1"}})
    >>> other = OmegaConf.merge(cfg, {"checkpointer": {"output_dir": "/o2"}})
    >>> checkpoint_key(cfg) == checkpoint_key(other)
    True
    """
    if "model" not in cfg or "checkpointer" not in cfg:
        return None
    checkpointer = {k: v for k, v in plain(cfg.checkpointer).items() if k not in _WRITE_ONLY_KEYS}
    key = {"checkpointer": checkpointer, "model": plain(cfg.model),
           "device": cfg.get("device", "cpu"), "dtype": cfg.get("dtype", "fp32")}
    return json.dumps(key, sort_keys=True, default=str)


@dataclass
class Loaded:
    """A model with its weights loaded, in eval mode, and what it was loaded with."""

    model: Any
    """The ``torchtune.modules.TransformerDecoder`` the config's ``model`` builds."""
    tokenizer: Any
    device: Any
    """``torch.device``."""
    dtype: Any
    """``torch.dtype``."""
    checkpoint_dir: str
    load_seconds: float


class ModelCache:
    """Builds the model a config asks for, or hands back the one already built for the same checkpoint."""

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        self._echo = echo
        self._key: str | None = None
        self._loaded: Loaded | None = None
        self._tokenizers: dict[str, Any] = {}

    def get(self, cfg: DictConfig) -> tuple[Loaded, bool]:
        """The loaded model for ``cfg`` and whether it was loaded just now (False: shared)."""
        key = checkpoint_key(cfg)
        if key is None:
            raise ValueError("the config has no model or checkpointer section to load a model from")
        tokenizer = self._tokenizer(cfg)
        if key == self._key and self._loaded is not None:
            self._loaded.tokenizer = tokenizer
            return self._loaded, False
        # Drop the previous model before building the next: only one is held at a time.
        self._key, self._loaded = None, None
        self._loaded = self._load(cfg, tokenizer)
        self._key = key
        return self._loaded, True

    def _tokenizer(self, cfg: DictConfig) -> Any:
        if "tokenizer" not in cfg:
            raise ValueError("the config has no tokenizer section")
        key = json.dumps(plain(cfg.tokenizer), sort_keys=True, default=str)
        if key not in self._tokenizers:
            import_torchtune()
            from torchtune import config

            self._tokenizers[key] = config.instantiate(cfg.tokenizer)
        return self._tokenizers[key]

    def _load(self, cfg: DictConfig, tokenizer: Any) -> Loaded:
        start = time.perf_counter()
        import_torchtune()
        from torchtune import config, training, utils

        device = utils.get_device(device=cfg.get("device", "cpu"))
        dtype = training.get_dtype(dtype=cfg.get("dtype", "fp32"), device=device)
        checkpoint_dir = str(cfg.checkpointer.get("checkpoint_dir"))
        self._echo(f"loading checkpoint {checkpoint_dir} ({cfg.model.get('_component_')})")
        checkpointer = config.instantiate(cfg.checkpointer)
        with training.set_default_dtype(dtype), device:
            model = config.instantiate(cfg.model)
        # Strict: a LoRA builder against merged weights, or a wrong size, fails here and says so.
        model.load_state_dict(checkpointer.load_checkpoint()[training.MODEL_KEY])
        model.eval()
        return Loaded(model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                      checkpoint_dir=checkpoint_dir, load_seconds=time.perf_counter() - start)
