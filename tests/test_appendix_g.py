"""Appendix G (what validate checks) stays true when the checks change.

Every rule of ``recipe_rules.RULES`` must have a row in the appendix's table
holding its key and every one of its cited ``file:line``s, the table must have
no rows for rules that are gone, and every check function in
``validate.CHECKS`` must be named in the appendix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchtune_config_writer.compile import validate
from torchtune_config_writer.compile.checks.recipe_rules import RULES

APPENDIX = Path(__file__).resolve().parent.parent / "appendices" / "G_validation_checks.md"
TEXT = APPENDIX.read_text()
#: Rows of the recipe-rule table: "| 3 | `key` | recipes | cites | fix |".
ROWS = [line for line in TEXT.splitlines() if re.match(r"^\| \d+ \| `[^`]+` \|", line)]


@pytest.mark.parametrize("rule", RULES, ids=[f"{i}-{r.key}" for i, r in enumerate(RULES, 1)])
def test_every_recipe_rule_has_a_row_with_its_key_and_citations(rule):
    cites = [f"`{c}`" for c in rule.cites]
    rows = [row for row in ROWS if f"| `{rule.key}` |" in row and all(c in row for c in cites)]
    assert rows, (f"Appendix G has no table row for rule {rule.key!r} citing {', '.join(map(str, rule.cites))}; "
                  "regenerate the table with the script in G.5")
    for cite in rule.cites:
        assert str(cite) in TEXT


def test_the_rule_table_has_one_row_per_rule():
    assert len(ROWS) == len(RULES), "regenerate the recipe-rule table of Appendix G (script in G.5)"


@pytest.mark.parametrize("check", validate.CHECKS, ids=[c.__name__ for c in validate.CHECKS])
def test_every_check_function_is_named(check):
    assert f"`{check.__name__}`" in TEXT, f"Appendix G does not describe {check.__name__}"
