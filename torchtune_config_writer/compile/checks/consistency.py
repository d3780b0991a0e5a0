"""Consistency across one config: model family against tokenizer and checkpointer; LoRA/QLoRA builders against the recipe."""

from __future__ import annotations

from typing import Iterator

from . import Finding


def check_consistency(cfg: dict, recipe: str = "") -> Iterator[Finding]:
    return iter(())
