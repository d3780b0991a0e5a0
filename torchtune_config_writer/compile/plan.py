"""The run plan: what each run is, from the experiment's axes, exclusions, names and expressions.

``build_plan`` is the experiment language's semantics in one place. For every
combination of the axes (``sweep``) it decides whether the combination is a
run (``exclude``), numbers the runs that remain densely, then evaluates per run,
in this order, the ``{{ … }}`` expressions that may read what came before:

    stage        evaluates                               may read
    combination  template values in axes, exclude        experiment_name, timestamp, date; axis keys, seed,
                                                         controls by the name written, the config
    numbered     run_name                                + run_id, run_index
    named        output.runs_dir                         + run_name
    run          derived and {{ }} controls (by need)    + output_dir, derived keys (the config as it is so far)
    resources    slurm values                            everything above

Every name an expression reads is checked before the first run is built, so a
typo is one error with a did-you-mean, not 10,000.

    >>> plan = build_plan(exp, template, Path("outputs/rank"))              # doctest: +SKIP
    >>> plan.runs[0].name, plan.counts.summary()                            # doctest: +SKIP
    ('r8-s1', '4 combinations × 3 seeds = 12 runs')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConflictingKeyError, did_you_mean, ExperimentSchemaError, ExpressionError, SlurmSettingsError, SweepError
from .expressions import (
    Expression, check_names, compile_expression, compile_tree, evaluate_tree, has_template, tree_expressions, tree_names,
)
from .keys import Key, check_nested, resolve_key
from .merge import check_values
from .schema import Experiment, SlurmSettings
from .sweep import Axis, canonical, combinations, matches, run_id, sample_axis, same_value, seed_axis, variable_axis, zip_axis
from .tree import MISSING
from ..expdir import format_parameters, short_names

_EXPERIMENT_NAMES = ("experiment_name", "timestamp", "date")
_LATER = {
    "run_id": "runs are numbered after exclusion (and run_name before output_dir and derived)",
    "run_index": "runs are numbered after exclusion",
    "run_name": "run_name is computed after exclusion and numbering, before output_dir and derived",
    "output_dir": "output_dir is known after run_name, for derived, controls and slurm",
}


@dataclass(frozen=True)
class AxisKey:
    """An axis key as written (``lora_rank``) and where it points (``model.lora_rank``)."""

    label: str
    key: Key
    kind: str


@dataclass(frozen=True)
class Computed:
    """A key set per run by expressions: a ``derived`` entry or a control holding ``{{ }}``."""

    label: str
    key: Key
    value: Any
    """The value with each template string compiled to an ``Expression``."""
    names: frozenset[str]
    section: str


@dataclass
class PlannedRun:
    index: int
    run_id: str
    labels: dict[str, Any]
    """Axis key as written → value (variables, zip, sample, then ``seed``)."""
    parameters: dict[str, Any]
    """The same by dotted path."""
    overrides: list[tuple[Key, Any]]
    """What to set on the template, in order: axes, then computed keys."""
    output_dir: Path
    name: str | None = None
    derived: dict[str, Any] = field(default_factory=dict)
    """Dotted path → value, for every computed key."""
    seed: Any = None
    configuration: int = 0
    slurm: SlurmSettings | None = None
    """This run's ``slurm:`` settings with its expressions evaluated (None: the experiment's as written)."""


@dataclass(frozen=True)
class Counts:
    combinations: int
    """Combinations of every axis but seeds."""
    seeds: int
    """Seeds per combination (1 without ``seeds:``)."""
    excluded: int
    """Runs removed by ``exclude``."""
    runs: int
    configurations: int
    """Distinct combinations left (runs that differ only in their seed are one)."""

    def summary(self) -> str:
        """``24 combinations, 4 excluded, 20 runs × 3 seeds = 60 runs`` (as fits the experiment).

        >>> Counts(24, 3, 12, 60, 20).summary()
        '24 combinations, 4 excluded, 20 runs × 3 seeds = 60 runs'
        >>> Counts(4, 2, 1, 7, 4).summary()
        '4 combinations × 2 seeds = 8, 1 excluded = 7 runs (4 configurations)'
        """
        n = lambda k, word: f"{k} {word}{'s' if k != 1 else ''}"  # noqa: E731
        combos = n(self.combinations, "combination")
        if self.seeds == 1:
            return f"{combos}{f', {self.excluded} excluded' if self.excluded else ''} = {n(self.runs, 'run')}"
        if not self.excluded:
            return f"{combos} × {self.seeds} seeds = {n(self.runs, 'run')}"
        if self.runs == self.configurations * self.seeds:  # exclusion removed whole configurations
            return (f"{combos}, {self.combinations - self.configurations} excluded, "
                    f"{n(self.configurations, 'run')} × {self.seeds} seeds = {n(self.runs, 'run')}")
        return (f"{combos} × {self.seeds} seeds = {self.combinations * self.seeds}, {self.excluded} excluded"
                f" = {n(self.runs, 'run')} ({n(self.configurations, 'configuration')})")


@dataclass
class Plan:
    axes: list[AxisKey]
    computed: list[Computed]
    runs: list[PlannedRun]
    counts: Counts
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- keys


def resolve_axes(exp: Experiment, template: dict) -> tuple[list[Axis], list[AxisKey]]:
    """The axes in the order written (seeds last), each key resolved against the template."""
    axes: list[Axis] = []
    for section in exp.axis_order:
        if section == "variables":
            axes += [variable_axis(k, v) for k, v in exp.variables.items()]
        elif section == "zip":
            axes += [zip_axis(g) for g in exp.zip]
        elif section == "sample" and exp.sample:
            axes.append(sample_axis(exp.sample.space, exp.sample.n, exp.sample.seed))
    if exp.seeds is not None:
        axes.append(seed_axis(exp.seeds))
    keys = []
    for axis in axes:
        for i, label in enumerate(axis.keys):
            where = _axis_where(exp, axis, label)
            if axis.kind == "seeds" and "seed" not in template:
                key = Key("seed", ("seed",), "add")  # recipes read cfg.seed; seeds sets it even when the base has none
            else:
                key = resolve_key(label, template, where)
            refuse_output_dir(key, where)
            if key.op == "delete":
                raise ExperimentSchemaError(f"{where}: '{label}' deletes a key; deleting belongs in controls ('{label}: null')")
            for point in axis.points:
                check_nested(key, point[i], template, where)
            check_values(key, [point[i] for point in axis.points], template, where)
            keys.append(AxisKey(label, key, axis.kind))
    _no_duplicate_points(exp, axes)
    return axes, keys


def refuse_output_dir(key: Key, where: str) -> None:
    """``output_dir`` is each run's own; no section of the experiment may set it."""
    if key.path == ("output_dir",):
        raise ConflictingKeyError(
            f"{where}: output_dir is set for you: each run gets its own (<experiment dir>/runs/run_NNN) "
            "so runs never overwrite each other's checkpoints. To put run outputs elsewhere (e.g. scratch), "
            "set output.runs_dir instead."
        )


def _axis_where(exp: Experiment, axis: Axis, label: str) -> str:
    if axis.kind == "seeds":
        return exp.where("seeds")
    if axis.kind == "sample":
        return exp.where("sample.space", label)
    if axis.kind == "zip":
        i = next(n for n, g in enumerate(exp.zip) if label in g)
        return exp.where(f"zip.{i}", label)
    return exp.where("variables", label)


def _no_duplicate_points(exp: Experiment, axes: list[Axis]) -> None:
    """A value listed twice on one axis would make two identical runs: refuse it where it is written."""
    for axis in axes:
        if axis.kind == "seeds":
            continue  # the schema refuses repeated seeds
        seen: dict[str, int] = {}
        for i, point in enumerate(axis.points):
            # 0 and 0.0, 1e-4 and 0.0001 are one value to torchtune (json keeps true apart from 1)
            digest = json.dumps(canonical(point), default=str)
            if digest in seen:
                raise SweepError(_repeated_point(exp, axis, seen[digest], i))
            seen[digest] = i


def _repeated_point(exp: Experiment, axis: Axis, first: int, again: int) -> str:
    values = dict(zip(axis.keys, axis.points[again]))
    written = [f"{a} and {b}" for a, b in zip(axis.points[first], axis.points[again]) if str(a) != str(b)]
    numbers = any(isinstance(v, float) for v in values.values())
    # YAML has already turned 1e-4 and 0.0001 into one float, so only 0 and 0.0 can be shown as written
    note = (f" ({'; '.join(written)} are the same number)" if written
            else " (if written differently: 1e-4 and 0.0001 are the same number)" if numbers else "")
    if axis.kind == "sample":
        return (f"{exp.where('sample')}: sample point {again} repeats point {first} ({values}); a space of only "
                "choice values has few distinct points: lower sample.n, or use variables for an exhaustive grid")
    if axis.kind == "zip":
        group = next(i for i, g in enumerate(exp.zip) if tuple(g) == axis.keys)
        return (f"{exp.where('zip', group)}: zip group {group} repeats its point {first} at position {again} "
                f"({format_parameters(values)}), which would make identical runs; remove one{note}")
    key = axis.keys[0]
    return (f"{exp.where('variables', key)}: {key} lists {values[key]!r} twice (items {first} and {again}), which would "
            f"make identical runs; remove one{note}")


def resolve_computed(exp: Experiment, template: dict, expression_controls: list[tuple[str, Key, Any]]) -> list[Computed]:
    """``derived`` entries and controls holding ``{{ }}``, compiled, in the order they must be evaluated."""
    entries = []
    for label, value in exp.derived.items():
        where = exp.where("derived", label)
        key = resolve_key(label, template, where)
        refuse_output_dir(key, where)
        check_nested(key, value, template, where)
        compiled = compile_tree(value, where)
        entries.append(Computed(label, key, compiled, tree_names(compiled), "derived"))
    for label, key, value in expression_controls:
        compiled = compile_tree(value, exp.where("controls", label))
        entries.append(Computed(label, key, compiled, tree_names(compiled), "controls"))
    return _dependency_order(exp, entries)


def _dependency_order(exp: Experiment, entries: list[Computed]) -> list[Computed]:
    """Entries ordered so that each comes after the ones it reads; a cycle is an error naming it."""
    by_label = {e.label: e for e in entries}

    def reads(entry: Computed) -> list[Computed]:
        out = [by_label[n] for n in entry.names if n in by_label and by_label[n] is not entry]
        # ``model.lora_alpha`` reads the tree under ``model``: every entry that writes there comes first
        out += [e for e in entries if e is not entry and e.key.path[0] in entry.names and e not in out]
        return out

    ordered: list[Computed] = []
    state: dict[str, int] = {}

    def visit(entry: Computed, chain: list[str]) -> None:
        if state.get(entry.label) == 2:
            return
        if state.get(entry.label) == 1:
            cycle = chain[chain.index(entry.label):] + [entry.label]
            raise ExperimentSchemaError(
                f"{exp.where(entry.section, entry.label)}: these values depend on each other in a cycle: "
                f"{' -> '.join(cycle)}; compute one of them from axes or controls only"
            )
        state[entry.label] = 1
        for dep in reads(entry):
            visit(dep, chain + [entry.label])
        state[entry.label] = 2
        ordered.append(entry)

    for entry in entries:
        visit(entry, [])
    return ordered


# ----------------------------------------------------------------------------- the plan


def build_plan(exp: Experiment, template: dict, plain: dict, experiment_dir: Path, runs_root: Path,
               axes: list[Axis], axis_keys: list[AxisKey], computed: list[Computed]) -> Plan:
    """Every run of the experiment (see the module docstring for the stages).

    ``template`` is the base with the fixed controls applied and ``plain`` the
    same as plain data; ``runs_root`` is where run directories go unless
    ``output.runs_dir`` is an expression.
    """
    base_ctx: dict[str, Any] = exp.experiment_names()
    labels = [a.label for a in axis_keys]
    # controls by the names written (``lr``), as axes are; a dotted one is reachable through the config tree
    # (top-level keys and mappings come from the config itself, where they are merged)
    base_ctx.update({k: v for k, v in exp.controls.items() if k.isidentifier() and k not in base_ctx
                     and k not in plain and not isinstance(v, dict) and not has_template(v)})
    tree_keys = [str(k) for k in plain if k != "output_dir"]  # a run's output_dir is known only later
    combo_names = set(base_ctx) | set(labels) | {"seed"} | set(tree_keys)
    numbered_names = combo_names | {"run_id", "run_index"}
    named_names = numbered_names | {"run_name"}
    run_names = named_names | {"output_dir"} | {c.label for c in computed}

    later = dict(_LATER) | {c.label: f"'{c.label}' is computed per run after exclusion, numbering, run_name "
                                     "and output.runs_dir (it may read all of those)" for c in computed}
    axes = _evaluate_axis_templates(exp, axes, base_ctx)
    excludes = _compile_excludes(exp, axis_keys, combo_names, later)
    name_expr = _compile_optional(exp.run_name, exp.where("run_name"), numbered_names, later)
    runs_dir_expr = _compile_optional(exp.output.runs_dir, exp.where("output", "runs_dir"), named_names, later)
    for entry in computed:
        for expr in tree_expressions(entry.value):
            check_names(expr, run_names, later)
    slurm_exprs = {k: compile_expression(v, exp.where("slurm", k)) for k, v in exp.slurm_expressions.items()}
    for expr in slurm_exprs.values():
        check_names(expr, run_names, _LATER)

    tree_only = set(tree_keys) - set(labels) - set(base_ctx) - {"seed"}
    read = [e for e in [*excludes, name_expr, runs_dir_expr, *slurm_exprs.values()] if isinstance(e, Expression)]
    needs_tree = bool(tree_only & set().union(*(e.names for e in read), *(c.names for c in computed)))
    by_label = {a.label: a for a in axis_keys}

    # 1. combinations, exclusion
    kept: list[tuple[dict[str, Any], dict | None]] = []  # with the context exclusion built, if it built one
    total = 0
    for values in combinations(axes):
        total += 1
        ctx = None
        excluded = False
        for rule in excludes:
            if isinstance(rule, Expression):
                if ctx is None:
                    ctx = _context(base_ctx, plain, values, by_label, needs_tree)
                verdict = rule.evaluate(ctx, _describe(values))
                if not isinstance(verdict, bool):
                    raise ExpressionError(f"{rule.where}: must be true or false, got {verdict!r} for {_describe(values)}")
            else:
                verdict = matches(rule, values)
            if verdict:
                excluded = True
                break
        if not excluded:
            kept.append((values, ctx))
    # runs that differ only in their seed are one configuration, numbered densely in run order
    configurations: dict[str, int] = {}
    configuration_of = [
        configurations.setdefault(json.dumps([v for k, v in values.items() if k != "seed"], default=str), len(configurations))
        for values, _ in kept
    ]
    seeds = len(exp.seeds) if exp.seeds is not None else 1
    counts = Counts(total // seeds, seeds, total - len(kept), len(kept), len(configurations))
    if not kept:
        raise SweepError(f"{exp.where('exclude')}: exclude removes all {total} combinations, so there is nothing to "
                         "run; loosen or remove a rule")
    notes = _unused_excludes(exp, excludes, axes)

    # 2. per run
    slurm_cache: dict[str, SlurmSettings] = {}
    runs = []
    n_runs = len(kept)
    for index, (values, ctx) in enumerate(kept):
        rid = run_id(index, n_runs)
        overrides = [(by_label[k].key, v) for k, v in values.items()]
        if ctx is None:
            ctx = _context(base_ctx, plain, values, by_label, needs_tree)
        ctx.update(run_id=rid, run_index=index)
        name = exp.run_name
        if name_expr is not None:
            name = _as_name(name_expr.evaluate(ctx, rid), name_expr, rid)
        ctx["run_name"] = name if name is not None else rid
        if runs_dir_expr is not None:
            output_dir = (exp.base_dir / Path(str(runs_dir_expr.evaluate(ctx, rid))).expanduser()).resolve()
        else:
            output_dir = runs_root / rid
        ctx["output_dir"] = str(output_dir)
        derived = {}
        for entry in computed:
            value = evaluate_tree(entry.value, ctx, rid)
            ctx[entry.label] = value
            if needs_tree:
                ctx[entry.key.path[0]] = _set_in(ctx.get(entry.key.path[0], MISSING), entry.key.path[1:], value)
            overrides.append((entry.key, value))
            derived[entry.key.dotted] = value
        slurm = _evaluate_slurm(exp, slurm_exprs, ctx, rid, slurm_cache) if slurm_exprs else None
        runs.append(PlannedRun(
            index=index, run_id=rid, labels=values,
            parameters={by_label[k].key.dotted: v for k, v in values.items()},
            overrides=overrides, output_dir=output_dir, name=name, derived=derived,
            seed=values.get("seed") if exp.seeds is not None else None,
            configuration=configuration_of[index], slurm=slurm,
        ))
    _unique(runs, lambda r: r.name, exp.where("run_name"), "run_name",
            "make it unique, e.g. add the values that differ: \"r{{ lora_rank }}-s{{ seed }}\"")
    if runs_dir_expr is not None:
        _unique(runs, lambda r: str(r.output_dir), exp.where("output", "runs_dir"), "output.runs_dir",
                "include {{ run_id }} or {{ run_name }} in it")
    return Plan(axis_keys, computed, runs, counts, notes)


def _context(base: dict, plain: dict, values: dict[str, Any], by_label: dict[str, AxisKey], needs_tree: bool) -> dict:
    """The names an expression sees for one combination: the config's top-level keys, then the axis keys."""
    ctx: dict[str, Any] = {}
    if needs_tree:
        ctx.update(plain)
        for label, value in values.items():
            path = by_label[label].key.path
            ctx[path[0]] = _set_in(ctx.get(path[0], MISSING), path[1:], value)
    ctx.update(base)
    ctx.update(values)
    if "seed" not in values:
        ctx["seed"] = plain.get("seed")
    return ctx


def _set_in(node: Any, path: tuple[str, ...], value: Any) -> Any:
    """``node`` with ``value`` at ``path``, copying only the mappings on the way (for expression contexts)."""
    if not path:
        if isinstance(value, dict) and isinstance(node, dict) and value.get("_component_", node.get("_component_")) == node.get("_component_"):
            merged = dict(node)
            for k, v in value.items():
                merged[k] = _set_in(merged.get(k, MISSING), (), v)
            return merged
        return value
    out = dict(node) if isinstance(node, dict) else {}
    out[path[0]] = _set_in(out.get(path[0], MISSING), path[1:], value)
    return out


_AXIS_VALUE_NAMES = ("a value in an axis may read only experiment_name, timestamp and date; "
                     "compute values that depend on other keys in derived")


def _evaluate_axis_templates(exp: Experiment, axes: list[Axis], base_ctx: dict) -> list[Axis]:
    """Axis values written as expressions, evaluated once (they may read experiment_name, timestamp, date)."""
    out = []
    all_labels = {k for axis in axes for k in axis.keys} | {"seed"}
    for axis in axes:
        if not any(has_template(v) for point in axis.points for v in point):
            out.append(axis)
            continue
        points = []
        for point in axis.points:
            new = []
            for label, value in zip(axis.keys, point):
                compiled = compile_tree(value, _axis_where(exp, axis, label))
                for expr in tree_expressions(compiled):
                    check_names(expr, _EXPERIMENT_NAMES, {n: _AXIS_VALUE_NAMES for n in all_labels | set(_LATER)})
                new.append(evaluate_tree(compiled, base_ctx))
            points.append(tuple(new))
        out.append(Axis(axis.keys, tuple(points), axis.kind))
    return out


def _compile_excludes(exp: Experiment, axis_keys: list[AxisKey], names: set[str], later: dict[str, str]) -> list[Any]:
    """Each rule as an ``Expression`` or as ``label → value(s)`` (keys as written, as dotted paths, or short names)."""
    short = short_names(a.key.dotted for a in axis_keys)
    by_name = {short[a.key.dotted]: a.label for a in axis_keys} | {a.key.dotted: a.label for a in axis_keys} \
        | {a.label: a.label for a in axis_keys}
    rules = []
    for i, rule in enumerate(exp.exclude):
        where = exp.where("exclude", i)
        if isinstance(rule, str):
            expr = compile_expression(rule, where)
            check_names(expr, names, later)
            rules.append(expr)
            continue
        converted = {}
        for key, value in rule.items():
            if key not in by_name:
                hint = did_you_mean(str(key), list(by_name)) or f" The axes are: {', '.join(a.label for a in axis_keys) or 'none'}."
                raise ExperimentSchemaError(f"{where}: exclude names '{key}', which is not an axis (a variable, zip, "
                                            f"sample key or seed).{hint}")
            converted[by_name[key]] = value
        rules.append(converted)
    return rules


def _unused_excludes(exp: Experiment, rules: list[Any], axes: list[Axis]) -> list[str]:
    """A mapping rule that matches no value of its axes is most likely a typo in a value."""
    values: dict[str, list[Any]] = {}
    for axis in axes:
        for i, key in enumerate(axis.keys):
            values[key] = [p[i] for p in axis.points]
    notes = []
    for i, rule in enumerate(rules):
        if isinstance(rule, dict):
            for key, wanted in rule.items():
                options = wanted if isinstance(wanted, list) else [wanted]
                if not any(same_value(v, w) for v in values[key] for w in options + [wanted]):
                    notes.append(f"{exp.where('exclude', i)}: {key}={wanted!r} is none of its values "
                                 f"({values[key][:6]}), so this rule excludes nothing")
    return notes


def _compile_optional(source: str | None, where: str, names: set[str], later: dict[str, str]) -> Expression | None:
    if source is None or "{{" not in source and "{%" not in source:
        return None
    expr = compile_expression(source, where)
    check_names(expr, names, later)
    return expr


def _evaluate_slurm(exp: Experiment, exprs: dict[str, Expression], ctx: dict, rid: str,
                    cache: dict[str, SlurmSettings]) -> SlurmSettings:
    """The run's settings; runs with the same values share one (validated once) object."""
    import pydantic

    values = {k: e.evaluate(ctx, rid) for k, e in exprs.items()}
    key = json.dumps(values, sort_keys=True, default=str)
    if key in cache:
        return cache[key]
    try:
        settings = SlurmSettings.model_validate({**exp.slurm.model_dump(exclude_unset=True), **values})
    except pydantic.ValidationError as e:
        item = e.errors()[0]
        name = ".".join(str(p) for p in item["loc"])
        raise SlurmSettingsError(f"{exp.where('slurm', name)}: slurm.{name} is {item.get('input')!r} for {rid}: "
                                 f"{item['msg'].removeprefix('Value error, ')}") from None
    cache[key] = settings
    return settings


def _as_name(value: Any, expr: Expression, rid: str) -> str:
    name = str(value)
    if not name or any(not c.isprintable() for c in name):
        raise ExpressionError(f"{expr.where}: run_name is {name!r} for {rid}; a name must be non-empty, on one line")
    return name


def _unique(runs: list[PlannedRun], get: Any, where: str, what: str, fix: str) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        value = get(run)
        if value is None:
            continue
        if value in seen:
            raise SweepError(f"{where}: {what} '{value}' is the same for {seen[value]} and {run.run_id}; {fix}")
        seen[value] = run.run_id


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "the only combination"
