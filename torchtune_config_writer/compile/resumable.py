"""Whether a recipe resumes from its last saved epoch (``RunMapping.resumable``, Appendix J.4).

torchtune's training recipes read ``cfg.resume_from_checkpoint`` and then load the recipe state
saved with each epoch but the last; evaluation, generation and quantization recipes do not. A
requeued SLURM task (execute/requeue.py) resumes only with a recipe that reads it; any other
restarts from the beginning. The check reads the recipe's source (torchtune's copy for a registry
recipe, the user's file for a recipe given by path): it never imports it.

    >>> recipe_resumes("lora_finetune_single_device"), recipe_resumes("eleuther_eval")
    (True, False)
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..expdir import is_recipe_file
from . import registry

#: The config key a torchtune recipe resumes by.
RESUME_KEY = "resume_from_checkpoint"

#: Registry recipes that read the key but that a requeued task cannot resume, and why.
NOT_RESUMABLE = {
    "ppo_full_finetune_single_device": "torchtune resumes only its policy; its value model would start over",
}


def recipe_resumes(recipe: str) -> bool:
    """True when the recipe (registry name or path to a ``.py`` file) reads ``resume_from_checkpoint``
    from its config; False when it does not, or its source cannot be read."""
    if recipe in NOT_RESUMABLE:
        return False
    path = Path(recipe) if is_recipe_file(recipe) else registry.recipe_file(recipe)
    if path is None:
        return False
    try:
        return reads_resume_key(path.read_text())
    except (OSError, UnicodeDecodeError):
        return False


def reads_resume_key(source: str) -> bool:
    """True when Python ``source`` reads the key: ``cfg.resume_from_checkpoint``, ``cfg.get("resume_from_checkpoint")``
    or ``cfg["resume_from_checkpoint"]`` (a mention in a docstring or comment does not count).

    >>> reads_resume_key('self._resume = cfg.get("resume_from_checkpoint", False)')
    True
    >>> reads_resume_key("doc = 'resuming is controlled by resume_from_checkpoint'  # resume_from_checkpoint")
    False
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == RESUME_KEY:
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and _is_key(node.args[0]):
            return True
        if isinstance(node, ast.Subscript) and _is_key(node.slice):
            return True
    return False


def _is_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == RESUME_KEY
