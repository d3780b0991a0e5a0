"""The ``--report`` file: each evaluation's state, wall time and error, rewritten after every config.

The execute side reads it (while the program runs, too) to fill a run's
evaluation status record, so it is always written whole and atomically. Keys
are ``EvalEntry.name`` (``lm_eval@epoch_0``).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "report.json"
    >>> report = Report(path)
    >>> report.add("heldout@epoch_0", State.COMPLETED, 1.25)
    >>> json.loads(path.read_text())
    {'heldout@epoch_0': {'state': 'completed', 'seconds': 1.25, 'error': None}}
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

from ..atomic import atomic_write_text


class State(str, Enum):
    """What became of one config."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Its result file was already there (and no ``--force``)."""


class Report:
    """The report being built; ``path`` None keeps it in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = {}

    def add(self, name: str, state: State, seconds: float, error: str | None = None) -> None:
        """Record one config's outcome and rewrite the file."""
        self.entries[name] = {"state": state.value, "seconds": round(seconds, 3), "error": error}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.entries, indent=1) + "\n")

    @property
    def failed(self) -> bool:
        return any(e["state"] == State.FAILED.value for e in self.entries.values())
