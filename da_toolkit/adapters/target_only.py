"""Target-only baseline for the scarce-label setting: the k labeled target images per class alone."""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.source_only import SourceOnly
from da_toolkit.errors import UserError


@ADAPTERS.register("target_only")
class TargetOnly(SourceOnly):
    """Supervised training on the labeled target images only (needs data.target_labels_per_class >= 1)."""

    def fit(self, classifier, source, target, ctx):
        labeled = target.labeled()
        if len(labeled) == 0:
            raise UserError("feature.adapter: target_only trains on labeled target images; "
                            "set data.target_labels_per_class to 1 or more")
        return super().fit(classifier, labeled, labeled.without_labels(), ctx)
