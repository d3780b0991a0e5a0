"""The one place torchtune (and so torch) gets imported, on first need.

``import torchtune`` takes seconds; commands that don't need it never call this.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from types import ModuleType


@lru_cache(maxsize=1)
def import_torchtune() -> ModuleType:
    # torchao warns on every import that its C++ extensions don't match this torch build;
    # the pure-Python parts torchtune uses work, and the warning only alarms users.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torchtune
    import torchtune.config  # noqa: F401

    return torchtune
