"""Target-only baseline for the scarce-label setting: the k labeled target images per class alone."""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.source_only import SourceOnly


@ADAPTERS.register("target_only")
class TargetOnly(SourceOnly):
    """Supervised training on the labeled target images only (needs data.target_labels_per_class >= 1)."""

    needs_target_labels = True

    def fit(self, classifier, source, target, ctx):
        labeled = target.labeled()
        return super().fit(classifier, labeled, labeled.without_labels(), ctx)
