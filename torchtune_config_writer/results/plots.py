"""Dependency-free SVG plots: training loss against step (one line per run, labelled by its name), and
the primary metric against each variable (one panel per variable).

SVG opens in any browser and renders in markdown viewers, and writing it by
hand keeps matplotlib out of the dependencies.

    >>> svg = loss_plot_svg({"run_000 lora_rank=8": [(1, 6.4), (2, 6.1)]}, "Training loss")
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

from ..expdir import RunEntry, format_parameters
from .metrics import Primary

# Colour-blind-safe palette (Okabe-Ito), cycled for more runs.
_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_W, _H = 720, 420
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 220, 40, 50
_LEGEND_MAX = 20  # lines of legend that fit beside the plot


def curve_label(run: RunEntry) -> str:
    """A run's legend entry: the name the experiment gave it, else its id and parameters.

    >>> curve_label(RunEntry("run_000", 0, "c", "0", "o", {"model.lora_rank": 8}, "passed", None))
    'run_000 lora_rank=8'
    >>> curve_label(RunEntry("run_000", 0, "c", "0", "o", {"model.lora_rank": 8}, "passed", None, name="r8"))
    'r8'
    """
    return run.name or " ".join([run.run_id, format_parameters(run.parameters, short=True, sep=" ")]).strip()


def loss_plot_svg(curves: dict[str, list[tuple[int, float]]], title: str) -> str:
    """SVG text plotting each ``label -> [(step, loss), ...]`` curve; empty curves are left out."""
    curves = {k: v for k, v in curves.items() if v}
    steps = [s for c in curves.values() for s, _ in c] or [0, 1]
    losses = [y for c in curves.values() for _, y in c] or [0.0, 1.0]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    if x0 == x1:
        x1 = x0 + 1
    if y0 == y1:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return _TOP + (y1 - y) / (y1 - y0) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>',
    ]
    for i in range(5):  # gridlines with their values
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        x = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{x:.0f}</text>')
    parts.append(f'<text x="{_LEFT + plot_w / 2}" y="{_H - 12}" text-anchor="middle">step</text>')
    parts.append(f'<text x="16" y="{_TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 16 {_TOP + plot_h / 2})">loss</text>')
    for n, (label, points) in enumerate(curves.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if n >= _LEGEND_MAX:
            continue
        ly = _TOP + 12 + n * 16
        parts.append(f'<line x1="{_W - _RIGHT + 12}" x2="{_W - _RIGHT + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{_W - _RIGHT + 38}" y="{ly}">{escape(label)}</text>')
    if len(curves) > _LEGEND_MAX:
        parts.append(f'<text x="{_W - _RIGHT + 12}" y="{_TOP + 12 + _LEGEND_MAX * 16}">... {len(curves) - _LEGEND_MAX} more runs</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the primary metric by variable

_PANEL_W, _PANEL_H = 320, 262
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 64, 16, 16, 76  # room below for slanted value labels
_HEADER = 56
_PANELS_PER_ROW = 3
_POINT, _MEAN = "#0072B2", "#D55E00"
_LABEL_MAX = 14  # characters of a category shown under its tick


@dataclass(frozen=True)
class XAxis:
    """How a panel places a variable's values: ``where(value)`` in 0..1 of its width, ticks, and its kind."""

    kind: str
    """``categorical``, ``linear`` or ``log``."""
    where: Callable[[Any], float]
    ticks: list[tuple[float, str]]
    """(position in 0..1, label)."""


def as_number(value: Any) -> float | None:
    """A numeric value (``"1e-3"`` as YAML 1.1 leaves it counts), else None; booleans are categories.

    >>> as_number(3), as_number("1e-3"), as_number(True), as_number("adamw")
    (3.0, 0.001, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def value_label(value: Any) -> str:
    """How a category is written under its tick (``0.001``, ``adamw``, a mapping as compact JSON)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def x_axis(values: list[Any]) -> XAxis:
    """The axis for a variable's values: categories in order of appearance when any is not a number
    (or all are one number), a log scale when positive numbers span two decades or more (learning
    rates), else linear.

    >>> x_axis([1e-4, 3e-4, 1e-2]).kind, x_axis([8, 16, 32]).kind, x_axis(["adamw", "sgd"]).kind
    ('log', 'linear', 'categorical')
    """
    numbers = [as_number(v) for v in values]
    distinct = sorted(set(numbers)) if None not in numbers else []
    if len(distinct) < 2:
        return _categorical_axis(values)
    log = distinct[0] > 0 and distinct[-1] / distinct[0] >= 100
    scale = math.log10 if log else (lambda x: x)
    lo, hi = scale(distinct[0]), scale(distinct[-1])

    def where(value: Any) -> float:
        return 0.06 + 0.88 * (scale(as_number(value)) - lo) / (hi - lo)

    if len(distinct) <= 8:  # few values: label each one, as the sweep listed them
        ticks = [(where(v), f"{v:g}") for v in distinct]
    elif log:
        ticks = [(where(10.0 ** k), f"{10.0 ** k:g}") for k in range(math.ceil(lo), math.floor(hi) + 1)]
    else:
        ticks = [(where(t), f"{t:g}") for t in nice_ticks(lo, hi) if lo <= t <= hi]
    return XAxis("log" if log else "linear", where, ticks)


def _categorical_axis(values: list[Any]) -> XAxis:
    labels = list(dict.fromkeys(value_label(v) for v in values))
    slot = {label: (i + 0.5) / len(labels) for i, label in enumerate(labels)}
    short = [label if len(label) <= _LABEL_MAX else label[:_LABEL_MAX - 1] + "…" for label in labels]
    return XAxis("categorical", lambda v: slot[value_label(v)], [(slot[lb], s) for lb, s in zip(labels, short)])


def metric_plot_svg(panels: dict[str, list[tuple[Any, float, str]]], primary: Primary, experiment: str,
                    swept: dict[str, list[Any]] | None = None) -> str:
    """SVG text: for each ``variable -> [(value, metric, run label), ...]`` a panel with every run as a
    point and the mean per value as a line; all panels share the metric's scale, so they compare.
    ``swept``: every value of each variable (all runs'), so an axis spans the whole sweep, values
    without a result included; by default the points' values.

    >>> svg = metric_plot_svg({"lr": [(0.1, 0.5, "run_000"), (0.2, 0.7, "run_001")]},
    ...                       Primary("acc", "max", ""), "sweep")
    >>> svg.count('class="run"'), "acc ↑ (higher is better)" in svg
    (2, True)
    """
    ys = [y for points in panels.values() for _, y, _ in points] or [0.0, 1.0]
    margin = (max(ys) - min(ys)) * 0.04  # no point sits on the frame
    y_ticks = nice_ticks(min(ys) - margin, max(ys) + margin)
    per_row = min(_PANELS_PER_ROW, max(1, len(panels)))
    title = f"{primary.label} ({primary.better_word} is better) by variable: {experiment}"
    width = max(per_row * _PANEL_W, 8 * len(title) + 40)  # a single panel is narrower than its title
    height = _HEADER + math.ceil(max(1, len(panels)) / per_row) * _PANEL_H
    indent = (width - per_row * _PANEL_W) / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<circle cx="{width / 2 - 120}" cy="40" r="3.5" fill="{_POINT}" fill-opacity="0.6"/>',
        f'<text x="{width / 2 - 112}" y="44">one completed run</text>',
        f'<line x1="{width / 2 + 10}" x2="{width / 2 + 30}" y1="40" y2="40" stroke="{_MEAN}" stroke-width="2"/>',
        f'<text x="{width / 2 + 36}" y="44">mean per value</text>',
    ]
    for n, (variable, points) in enumerate(panels.items()):
        left, top = indent + (n % per_row) * _PANEL_W, _HEADER + (n // per_row) * _PANEL_H
        values = (swept or {}).get(variable) or [x for x, _, _ in points]
        parts += _panel(variable, points, values, primary.metric, y_ticks, left, top)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten) from below ``lo`` to above ``hi``.

    >>> nice_ticks(0.376, 0.724)
    [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    >>> nice_ticks(2.0, 2.0)
    [1.5, 1.75, 2.0, 2.25, 2.5]
    """
    if hi - lo < 1e-12 * max(1.0, abs(hi)):  # every run scored the same: a little room around it
        lo, hi = lo - (abs(lo) * 0.25 or 0.5), hi + (abs(hi) * 0.25 or 0.5)
    raw = (hi - lo) / (count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _panel(variable: str, points: list[tuple[Any, float, str]], values: list[Any], metric: str,
           y_ticks: list[float], left: float, top: float) -> list[str]:
    """One variable's panel, its top-left corner at (left, top): frame, axes, points and means."""
    x_left, y_top = left + _PAD_LEFT, top + _PAD_TOP
    plot_w, plot_h = _PANEL_W - _PAD_LEFT - _PAD_RIGHT, _PANEL_H - _PAD_TOP - _PAD_BOTTOM
    y0, y1 = y_ticks[0], y_ticks[-1]

    def sy(y: float) -> float:
        return y_top + (y1 - y) / (y1 - y0) * plot_h

    parts = [f'<g class="panel" data-variable="{escape(variable)}">']
    for y in y_ticks:  # the metric's gridlines and values
        parts.append(f'<line x1="{x_left}" x2="{x_left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x_left - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.4g}</text>')
    # the frame over the gridlines, which would otherwise paint over its top and bottom
    parts.append(f'<rect x="{x_left}" y="{y_top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    mid_y = y_top + plot_h / 2
    parts.append(f'<text x="{left + 14}" y="{mid_y}" text-anchor="middle" '
                 f'transform="rotate(-90 {left + 14} {mid_y})">{escape(metric)}</text>')
    axis = x_axis(values) if points else None
    scale = f" ({axis.kind} scale)" if axis and axis.kind == "log" else ""
    parts.append(f'<text x="{x_left + plot_w / 2}" y="{top + _PANEL_H - 8}" text-anchor="middle" '
                 f'font-weight="bold">{escape(variable + scale)}</text>')
    if axis is None:
        parts.append(f'<text x="{x_left + plot_w / 2}" y="{mid_y}" text-anchor="middle" fill="#888">'
                     "no completed run with a value</text>")
        return parts + ["</g>"]

    def sx(x: Any) -> float:
        return x_left + axis.where(x) * plot_w

    parts += _x_ticks(axis, x_left, plot_w, y_top + plot_h)
    for x, y, label in points:
        parts.append(f'<circle class="run" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{_POINT}" '
                     f'fill-opacity="0.6"><title>{escape(label)}: {y:.4g}</title></circle>')
    means = _means(points, axis)
    parts.append(f'<polyline class="mean" points="{" ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m in means)}" '
                 f'fill="none" stroke="{_MEAN}" stroke-width="2"/>')
    for x, m in means:  # a dash at each mean, visible even where the line has one point
        parts.append(f'<line x1="{sx(x) - 7:.1f}" x2="{sx(x) + 7:.1f}" y1="{sy(m):.1f}" y2="{sy(m):.1f}" '
                     f'stroke="{_MEAN}" stroke-width="2"><title>mean {m:.4g}</title></line>')
    return parts + ["</g>"]


def _x_ticks(axis: XAxis, x_left: float, plot_w: float, bottom: float) -> list[str]:
    """Tick marks and labels; labels slant when many or long, so neighbours do not overlap."""
    slant = len(axis.ticks) > 4 or any(len(label) > 6 for _, label in axis.ticks)
    parts = []
    for where, label in axis.ticks:
        x = x_left + where * plot_w
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#888"/>')
        if slant:
            parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="end" '
                         f'transform="rotate(-30 {x:.1f} {bottom + 14})">{escape(label)}</text>')
        else:
            parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    return parts


def _means(points: list[tuple[Any, float, str]], axis: XAxis) -> list[tuple[Any, float]]:
    """(a value, the mean metric of its runs) per distinct value, left to right."""
    groups: dict[float, tuple[Any, list[float]]] = {}
    for x, y, _ in points:
        groups.setdefault(axis.where(x), (x, []))[1].append(y)
    return [(x, statistics.fmean(ys)) for _, (x, ys) in sorted(groups.items(), key=lambda kv: kv[0])]
