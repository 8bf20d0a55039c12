"""Adaptation methods, one file each, registered in ADAPTERS by name."""
from da_toolkit.registry import Registry

ADAPTERS = Registry("adapter")

# each module registers its adapter in ADAPTERS; a new method adds its line
from da_toolkit.adapters import (  # noqa: E402,F401
    adabn,
    adda,
    afn,
    bnm,
    cdan,
    coral,
    cyclegan,
    dan,
    dann,
    dirt_t,
    fixmatch,
    jan,
    mcc,
    mcd,
    mdd,
    mean_teacher,
    shot,
    source_only,
    stargan,
    target_only,
)

__all__ = ["ADAPTERS"]
