"""GPUs by name, and how much memory each offers a training process.

The ``hardware:`` section of an experiment names a GPU (``gpu: A100-80GB``) or
gives its memory (``gpu_memory_gb: 80``); the memory estimate of every run is
then checked against it (Appendix H). Names are matched without regard to
case, spaces, ``_`` or ``-``, so ``a100_80gb`` is ``A100-80GB``. Nothing here
imports torch.

    >>> gpu_memory_gib("a100-80gb")
    80.0
    >>> canonical_gpu("h100 80gb")
    'H100-80GB'
"""

from __future__ import annotations

import re

from ..errors import did_you_mean

#: Total memory per GPU in GiB, as ``nvidia-smi`` reports it (MiB / 1024), for the cards a cluster
#: commonly has. This is the whole card; the CUDA context and the allocator's fragmentation are
#: part of each run's estimate (its ``overhead``), not taken off here.
GPU_MEMORY_GIB: dict[str, float] = {
    "B200": 179.1,        # 183,359 MiB
    "H200": 140.4,        # 143,771 MiB (141 GB HBM3e)
    "H100-94GB": 93.6,    # H100 NVL, 95,830 MiB
    "H100-80GB": 79.6,    # SXM and PCIe, 81,559 MiB
    "A100-80GB": 80.0,    # 81,920 MiB
    "A100-40GB": 40.0,    # 40,960 MiB
    "L40S": 45.0,         # 46,068 MiB
    "L40": 45.0,
    "A40": 45.0,
    "A6000": 48.0,        # RTX A6000, 49,140 MiB
    "RTX6000-ADA": 48.0,
    "RTX4090": 24.0,      # 24,564 MiB
    "RTX3090": 24.0,
    "A10G": 22.5,         # AWS g5, 23,028 MiB
    "A10": 22.5,
    "L4": 22.5,           # 23,034 MiB
    "V100-32GB": 32.0,
    "V100-16GB": 16.0,
    "T4": 15.0,           # 15,360 MiB
}


def _normal(name: str) -> str:
    """``a100_80gb`` and ``A100 80GB`` both become ``A10080GB``: spelling differences are not typos."""
    return re.sub(r"[\s_\-]", "", name).upper()


_BY_NORMAL = {_normal(k): k for k in GPU_MEMORY_GIB}


def canonical_gpu(name: str) -> str:
    """The table's spelling of ``name``; ``ValueError`` (with a suggestion and the list) for an unknown GPU."""
    found = _BY_NORMAL.get(_normal(name))
    if found is None:
        hint = did_you_mean(name, GPU_MEMORY_GIB) or did_you_mean(_normal(name), _BY_NORMAL, show=_BY_NORMAL.get)
        raise ValueError(f"unknown GPU '{name}'.{hint} Known: {', '.join(GPU_MEMORY_GIB)}; "
                         "or give gpu_memory_gb: N instead")
    return found


def gpu_memory_gib(name: str) -> float:
    """Memory of the GPU called ``name`` (any spelling ``canonical_gpu`` accepts)."""
    return GPU_MEMORY_GIB[canonical_gpu(name)]
