"""
recbole_specgr.data.catalog
###########################
:class:`ItemCatalog`: the item side of a dataset, which is all that a model over semantic IDs reads from it.
"""

from typing import Optional

import torch


class ItemCatalog:
    """What the models read from a dataset when their interactions are not at hand: the number of items (RecBole's
    ``dataset.num(ITEM_ID_FIELD)``), which items were seen in training and, for text-aware models, the item text
    embeddings. Used to rebuild a trained model from its checkpoint (``from_checkpoint``) and to build models over
    synthetic items (benchmarks, tests).

    Args:
        seen_item_mask: ``[n]`` bool, row 0 (padding) False.
        item_text_emb: ``[n, d]`` text embeddings (row 0 zeros), or None.
    """

    def __init__(self, seen_item_mask: torch.Tensor, item_text_emb: Optional[torch.Tensor] = None):
        self.seen_item_mask = seen_item_mask.bool()
        self.item_text_emb = item_text_emb

    def num(self, field):
        """The number of item ids, padding included (the only field a sequential recommender asks about)."""
        return len(self.seen_item_mask)
