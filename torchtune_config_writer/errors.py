"""The error hierarchy.

Every error a user can cause is a ``ConfigWriterError``; the CLI prints its
message (what is wrong, where, how to fix it) and exits 1, never a traceback.

    ConfigWriterError
    ├── ValidationError                 the experiment cannot be compiled
    │   ├── ExperimentSchemaError       experiment.yaml is malformed or breaks the schema
    │   ├── BaseConfigNotFoundError     base_config / base_config_file does not exist
    │   ├── EmptyVariableError          a variable has no values
    │   ├── UnknownKeyError             a key is not in the base config
    │   ├── AmbiguousKeyError           a short key matches several paths
    │   ├── ConflictingKeyError         a key is both a variable and a control
    │   └── SweepError                  the runs would collide (same config, same output_dir)
    ├── MergeError
    │   └── TypeMismatchError           a mapping merged onto a scalar, or the reverse
    ├── TorchtuneValidationError        generated configs failed validation
    ├── ExperimentDirError              an experiment directory is missing, foreign or would be overwritten
    ├── RunSelectionError               a --runs selection names no run, or cannot be read
    ├── RunNotRunnableError             a run may not run (validation failed, config edited, already completed)
    └── SlurmError                      SLURM is missing or refused a job
    (SlurmSettingsError, a slurm: setting the submit script cannot hold, is an ExperimentSchemaError;
    TrackingError, a tracking backend that cannot be used, lives in execute/tracking.py)

The helpers at the end build the "Did you mean ...?" part of every message, and
``one_line`` turns a caught exception into the one line a message quotes.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable


class ConfigWriterError(Exception):
    """Base class of every error the tool reports to its user."""


class ValidationError(ConfigWriterError):
    """The experiment definition cannot be compiled."""


class ExperimentSchemaError(ValidationError):
    """experiment.yaml cannot be parsed or does not follow the schema."""


class BaseConfigNotFoundError(ValidationError):
    """The base config named by the experiment does not exist."""


class EmptyVariableError(ValidationError):
    """A variable lists no values, so the sweep would have no runs."""


class UnknownKeyError(ValidationError):
    """An override names a key that the base config does not have."""


class AmbiguousKeyError(ValidationError):
    """A short key name matches more than one path of the base config."""


class ConflictingKeyError(ValidationError):
    """The same key is set twice (a variable and a control, or twice in one section)."""


class SlurmSettingsError(ExperimentSchemaError):
    """A ``slurm:`` setting cannot go into the submit script (e.g. a newline in a #SBATCH value)."""


class SweepError(ValidationError):
    """The planned runs would collide with one another."""


class ExpressionError(ValidationError):
    """A ``{{ … }}`` expression failed for a run (a name it reads is missing, a division by zero...)."""


class MergeError(ConfigWriterError):
    """An override cannot be merged into the base config."""


class TypeMismatchError(MergeError):
    """A mapping would be merged onto a scalar or list (or the other way round), or a scalar onto a list."""


class TorchtuneValidationError(ConfigWriterError):
    """One or more generated configs failed validation."""

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = problems or []


class ExperimentDirError(ConfigWriterError):
    """An experiment directory is missing, not ours, or would be overwritten."""


class RunSelectionError(ConfigWriterError):
    """A ``--runs`` selection names runs that do not exist or cannot be parsed."""


class RunNotRunnableError(ConfigWriterError):
    """A run may not be executed: its validation did not pass, its config was edited since, or it completed."""


class SlurmError(ConfigWriterError):
    """SLURM is missing, refused a job, or an experiment cannot be submitted as asked."""


class AttemptError(ConfigWriterError):
    """A run's next attempt (an out-of-memory retry) cannot be written: nothing left to halve, no attempts
    left, or its config would fail validation."""


# ----------------------------------------------------------------------------- did you mean


def did_you_mean(
    word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6, show: Callable[[str], str] = str
) -> str:
    """``" Did you mean 'x'?"`` (or ``'x' or 'y'``) for the candidates closest to ``word``; ``""`` when none is.

    ``show`` turns a matching candidate into what the user should write.

    >>> did_you_mean("epoch", ["epochs", "seed"])
    " Did you mean 'epochs'?"
    >>> did_you_mean("lr", ["lr_x"], show=lambda m: "${" + m + "}")
    " Did you mean '${lr_x}'?"
    """
    return suggestion(show(m) for m in close_matches(word, candidates, n=n, cutoff=cutoff))


def suggestion(names: Iterable[str]) -> str:
    """``" Did you mean 'a' or 'b'?"`` for these names (each once); ``""`` for none.

    >>> suggestion(["model.lora_rank"])
    " Did you mean 'model.lora_rank'?"
    """
    unique = list(dict.fromkeys(names))
    return " Did you mean " + " or ".join(f"'{x}'" for x in unique) + "?" if unique else ""


def close_matches(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The candidates closest to ``word``, best first (case-insensitive)."""
    pool = {c.lower(): c for c in candidates}
    return [pool[m] for m in difflib.get_close_matches(word.lower(), list(pool), n=n, cutoff=cutoff)]


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception as one line: its type and the first line of its message (cut to ``limit`` characters).

    >>> one_line(ValueError("bad value\\nmore detail"))
    'ValueError: bad value'
    >>> one_line(KeyError(), limit=8), one_line(OSError("x" * 20), limit=12)
    ('KeyError', 'OSError: ...')
    """
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
