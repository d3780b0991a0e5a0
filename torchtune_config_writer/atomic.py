"""Write a file atomically: a reader sees the old file or the new one, never half of one.

Used for the files that are rewritten while others may read them: the runs'
status records (``status.write_status``), ``slurm_jobs.yaml`` and ``submit.sbatch``.

    >>> atomic_write_text(Path("outputs/demo/slurm_jobs.yaml"), "jobs: []\\n")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` (permissions ``mode``) through a synced temporary file and a rename.

    The temporary file sits in the same directory, so that ``os.replace`` is an
    atomic rename; it is removed again if anything fails (even Ctrl-C).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
