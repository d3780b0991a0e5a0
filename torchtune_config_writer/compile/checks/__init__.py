"""Checks of one generated config, beyond what torchtune's ``config.validate`` does.

Each module answers one question about a config (plain dict, as torchtune
will read it) and yields ``Finding`` objects; ``validate.py`` runs them all
over every run, in one process, and attaches the run id.

- ``binding``     every ``_component_`` binds to its callee, with what the recipe passes itself
- ``value_types`` values against the annotations of the code that receives them
- ``ranges``      values against known ranges and sets (lr > 0, dropout in [0, 1), dtypes...)
- ``recipe_rules`` what each recipe refuses at start, as a table citing the recipe's lines
- ``consistency`` the model family against tokenizer and checkpointer; LoRA builders against the recipe
- ``paths``       input paths: where they resolve, of the right kind, present on this machine

    >>> Finding("optimizer.lr", "must be a positive number, got -1")
    Finding(key='optimizer.lr', message='must be a positive number, got -1', warning=False)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One problem in one config: the dotted key, what is wrong and how to fix it."""

    key: str
    message: str
    warning: bool = False
    """A likely mistake that may still be meant (an lr of 2 with AdamW): reported, never refused."""
