"""Adaptation methods, one file each, registered in ADAPTERS by name."""
from da_toolkit.registry import Registry

ADAPTERS = Registry("adapter")

# each module registers its adapter in ADAPTERS
from da_toolkit.adapters import adda, afn, bnm, cdan, coral, cyclegan, dan, dann, jan, mcc, source_only, target_only  # noqa: E402,F401

__all__ = ["ADAPTERS"]
