"""Held-out loss: the run's own loss, over a held-out dataset, token-weighted.

The tokens are counted exactly as the single-device recipes count them when
they train: the run's dataset component tokenizes each record, torchtune's
``padded_collate_sft`` pads a batch (labels padded with the loss's
``ignore_index``), the labels are shifted one to the left with an ignored
column appended, and the run's loss component scores the logits. The loss
components average over the tokens they score, so each batch's loss is
weighted by its scored-token count and the sum divided by all scored tokens:
the result does not depend on ``batch_size``.

    >>> evaluate_heldout(cfg, loaded)                                    # doctest: +SKIP
    Outcome(metrics={'heldout_loss': 5.83}, details={'tokens': 4711, 'records': 60, ...}, ...)
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .loading import Loaded, import_torchtune
from .outcome import Outcome


def evaluate_heldout(cfg: DictConfig, loaded: Loaded) -> Outcome:
    """The token-weighted mean loss of ``loaded.model`` over the config's ``dataset`` (at most ``limit`` records)."""
    import_torchtune()
    import torch
    from torchtune import config
    from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, padded_collate_sft

    loss_fn = config.instantiate(cfg.loss)
    ignore_index = getattr(loss_fn, "ignore_index", CROSS_ENTROPY_IGNORE_IDX)
    dataset = _dataset(cfg.dataset, loaded.tokenizer)
    limit = cfg.get("limit")
    records = len(dataset) if limit is None else min(int(limit), len(dataset))
    batch_size = int(cfg.get("batch_size", 8))
    model = loaded.model
    # The chunked loss takes the logits as a list of chunks, as the recipes arrange it.
    chunks = int(getattr(loss_fn, "num_output_chunks", 0) or 0)
    total_loss, total_tokens = 0.0, 0
    try:
        if chunks:
            model.set_num_output_chunks(chunks)
        with torch.inference_mode():
            for start in range(0, records, batch_size):
                batch = padded_collate_sft([dataset[i] for i in range(start, min(records, start + batch_size))],
                                           padding_idx=loaded.tokenizer.pad_id, ignore_idx=ignore_index)
                loss, tokens = _batch_loss(model, loss_fn, batch, ignore_index, loaded.device)
                total_loss += loss * tokens
                total_tokens += tokens
    finally:
        # The model may be shared with the next config (lm-eval wants whole logits).
        if chunks:
            model.set_num_output_chunks(0)
    if total_tokens == 0:
        raise ValueError(f"the held-out set has no tokens to score ({records} records read)")
    details: dict[str, Any] = {
        "tokens": total_tokens,
        "records": records,
        "dataset_records": len(dataset),
        "loss": OmegaConf.select(cfg, "loss._component_"),
        "data_files": _plain_or_none(OmegaConf.select(cfg, "dataset.data_files")),
    }
    return Outcome({"heldout_loss": total_loss / total_tokens}, details, loaded.checkpoint_dir)


def _batch_loss(model: Any, loss_fn: Any, batch: dict[str, Any], ignore_index: int, device: Any) -> tuple[float, int]:
    """The loss component's mean over one batch's scored tokens, and how many tokens it scored."""
    import torch

    tokens = batch["tokens"].to(device)
    labels = batch["labels"].to(device)
    # As the recipes do: labels[..., 1:] plus an ignored last column, instead of slicing the logits.
    ignored = torch.full((labels.shape[0], 1), ignore_index, dtype=labels.dtype, device=device)
    labels = torch.hstack((labels[..., 1:], ignored))
    scored = int((labels != ignore_index).sum())
    if scored == 0:  # a batch of prompts only (train_on_input false, empty outputs): nothing to add
        return 0.0, 0
    logits = model(tokens)
    if not isinstance(logits, list):
        labels = labels.reshape(-1)
        logits = logits.reshape(-1, logits.size(-1))
    return float(loss_fn(logits, labels)), scored


def _dataset(node: Any, tokenizer: Any) -> Any:
    """The config's dataset component (a list of them is concatenated, as the recipes do)."""
    from torchtune import config
    from torchtune.datasets import ConcatDataset

    nodes = list(node) if OmegaConf.is_list(node) else [node]
    for n in nodes:
        if n.get("packed", False):
            # Packed samples carry their own masks and positions, which a held-out pass does not want.
            raise ValueError(f"the held-out dataset {n.get('_component_')} has packed: true; set packed: false")
    datasets = [config.instantiate(n, tokenizer) for n in nodes]
    return datasets[0] if len(datasets) == 1 else ConcatDataset(datasets=datasets)


def _plain_or_none(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
