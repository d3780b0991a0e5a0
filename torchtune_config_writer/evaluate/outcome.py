"""What one evaluator returns to the program: metrics, extras, and the checkpoint it read.

The program adds the evaluator, epoch and wall time and writes it as an
``expdir.EvalResult``.

    >>> Outcome({"heldout_loss": 2.5}, {"tokens": 120}, "/exp/runs/run_000/epoch_0").metrics
    {'heldout_loss': 2.5}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """Metrics (name -> number) as results.csv will name them, evaluator-specific details, the checkpoint."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    seconds: float | None = None
    """The evaluation's own time when the evaluator measures it (one-time imports and indexes left out);
    None: the program's measure of the whole call."""


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, for the details (None when it is not installed).

    >>> package_version("no-such-distribution-here") is None
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
