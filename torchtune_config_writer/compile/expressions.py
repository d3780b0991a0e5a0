"""``{{ … }}`` expressions in experiment.yaml: compiled once, evaluated per run in a sandbox.

An expression is jinja2 run in ``ImmutableSandboxedEnvironment`` (no attribute
tricks, no mutation of what it is given) with ``StrictUndefined`` (an unknown
name is an error, never an empty string). A value that is exactly one
``{{ … }}`` keeps the type it computes (``{{ 2 * lora_rank }}`` is the int 16);
text around it makes the value a string. torchtune's ``${…}`` interpolations
are plain text here and pass through untouched.

    >>> e = compile_expression("{{ 2 * lora_rank }}", "derived.lora_alpha")
    >>> e.evaluate({"lora_rank": 8}), sorted(e.names)
    (16, ['lora_rank'])
    >>> compile_expression("r{{ lora_rank }}-${output_dir}", "run_name").evaluate({"lora_rank": 8})
    'r8-${output_dir}'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

from ..errors import ExperimentSchemaError, ExpressionError, did_you_mean

_SINGLE = re.compile(r"\A\s*\{\{(?P<body>.*?)\}\}\s*\Z", re.DOTALL)


def is_template(value: Any) -> bool:
    """True for a string holding a ``{{ … }}`` or ``{% … %}`` block."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def has_template(value: Any) -> bool:
    """True when ``value`` or anything nested in it is a template string."""
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_template(v) for v in value)
    return is_template(value)


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class Expression:
    """One compiled template string; ``where`` names it in messages (``experiment.yaml:9 (derived.lora_alpha)``)."""

    source: str
    where: str
    names: frozenset[str]
    """Top-level names it reads (``model`` for ``model.lora_rank``)."""
    native: bool
    """Exactly one ``{{ … }}``: the value keeps its type."""
    _call: Callable[[Mapping[str, Any]], Any]

    def evaluate(self, context: Mapping[str, Any], run: str = "") -> Any:
        """The value for one run; any failure is an ``ExpressionError`` naming the run and the expression."""
        import jinja2

        try:
            # only the names it reads: jinja copies its whole context for every call
            value = self._call({n: context[n] for n in self.names if n in context})
            if isinstance(value, jinja2.Undefined):  # a bare undefined attribute is returned, not raised
                value._fail_with_undefined_error()
            return value
        except jinja2.UndefinedError as e:
            raise ExpressionError(f"{self.where}{_for(run)}: {e.message} in {self.source!r}") from None
        except jinja2.exceptions.SecurityError as e:
            raise ExpressionError(f"{self.where}{_for(run)}: not allowed in an expression ({e}): {self.source!r}") from None
        except Exception as e:  # 1 // 0, a bad filter argument...: the user's expression, not this program
            raise ExpressionError(f"{self.where}{_for(run)}: {self.source!r} failed: {type(e).__name__}: {e}") from None


def _for(run: str) -> str:
    return f" (for {run})" if run else ""


def compile_expression(source: str, where: str) -> Expression:
    """Compile ``source`` once; a syntax error is an ``ExperimentSchemaError`` naming ``where``."""
    import jinja2
    from jinja2 import meta

    env = _environment()
    try:
        names = frozenset(meta.find_undeclared_variables(env.parse(source)))
        single = _SINGLE.match(source)
        if single and "}}" not in single.group("body") and "{{" not in single.group("body"):
            compiled = env.compile_expression(single.group("body"), undefined_to_none=False)
            return Expression(source, where, names, True, lambda ctx: compiled(**ctx))
        template = env.from_string(source)
        return Expression(source, where, names, False, template.render)
    except jinja2.TemplateSyntaxError as e:
        raise ExperimentSchemaError(
            f"{where}: {source!r} is not a valid expression: {(e.message or '').rstrip('.')}. Write e.g. "
            "\"{{ 2 * lora_rank }}\"; a literal '{{' is written {{ '{{' }}"
        ) from None


def check_names(expr: Expression, known: Iterable[str], later: Mapping[str, str] | None = None) -> None:
    """Refuse names that are not known where ``expr`` is evaluated, with a did-you-mean.

    ``later`` maps names that exist only at a later stage to why (e.g.
    ``run_id``: "runs are numbered after exclusion").
    """
    known = set(known)
    for name in sorted(expr.names - known):
        if later and name in later:
            raise ExperimentSchemaError(f"{expr.where}: '{name}' is not known here: {later[name]}")
        hint = did_you_mean(name, sorted(known)) or f" Known names: {', '.join(sorted(known)[:30])}."
        raise ExperimentSchemaError(f"{expr.where}: unknown name '{name}' in {expr.source!r}.{hint}")


def compile_tree(value: Any, where: str) -> Any:
    """``value`` with every template string inside it replaced by its ``Expression``."""
    if isinstance(value, dict):
        return {k: compile_tree(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [compile_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return compile_expression(value, where) if is_template(value) else value


def tree_names(value: Any) -> frozenset[str]:
    """Every name the expressions inside a compiled tree read."""
    if isinstance(value, Expression):
        return value.names
    if isinstance(value, dict):
        return frozenset().union(*(tree_names(v) for v in value.values()))
    if isinstance(value, list):
        return frozenset().union(*(tree_names(v) for v in value))
    return frozenset()


def tree_expressions(value: Any) -> list[Expression]:
    if isinstance(value, Expression):
        return [value]
    if isinstance(value, dict):
        return [e for v in value.values() for e in tree_expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in tree_expressions(v)]
    return []


def evaluate_tree(value: Any, context: Mapping[str, Any], run: str = "") -> Any:
    """A compiled tree with every expression evaluated for one run."""
    if isinstance(value, Expression):
        return value.evaluate(context, run)
    if isinstance(value, dict):
        return {k: evaluate_tree(v, context, run) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate_tree(v, context, run) for v in value]
    return value
