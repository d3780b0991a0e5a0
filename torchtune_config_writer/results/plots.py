"""A dependency-free SVG line plot: training loss against step, one line per run, labelled by its name.

SVG opens in any browser and renders in markdown viewers, and writing it by
hand keeps matplotlib out of the dependencies.

    >>> svg = loss_plot_svg({"run_000 lora_rank=8": [(1, 6.4), (2, 6.1)]}, "Training loss")
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

from html import escape

from ..expdir import RunEntry, format_parameters

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
