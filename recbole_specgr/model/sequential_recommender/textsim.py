"""
recbole_specgr.model.sequential_recommender.textsim
###################################################
TextSim, the floor a user would try first for new items: no training, the mean text embedding of the last
``textsim_last_n`` history items, ranked against every item's text embedding by cosine similarity.

Items seen or unseen in training are treated alike (only their texts matter), so this row shows how much of an
inductive model's unseen recall the item texts give away for free.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_specgr.inference.text_prior import recent_text_query


class TextSim(SequentialRecommender):
    r"""``score(i) = cos(mean_{t > T - n} x_{s_t}, x_i)`` with ``x`` the frozen item text embeddings
    (``dataset.item_text_emb``) scaled to unit length (as all-MiniLM-L6-v2's already are) and n = ``textsim_last_n``.

    It has nothing to learn: ``calculate_loss`` returns a constant zero with a gradient (RecBole's Trainer needs one),
    so one epoch is only a pass over the data.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.last_n = int(config["textsim_last_n"])
        if self.last_n < 1:
            raise ValueError(f"textsim_last_n: expected an int >= 1, got {self.last_n}")

        # define layers and loss
        self.register_buffer("item_vectors", F.normalize(dataset.item_text_emb.float(), dim=-1))  # [n, d]
        self.fake_loss = nn.Parameter(torch.zeros(1))  # RecBole's Trainer needs a parameter to optimise

    def sequence_vectors(self, item_seq, item_seq_len):
        """``[B, T], [B] -> [B, d]``: the mean text embedding of the last n items of each (left-aligned) history."""
        return recent_text_query(self.item_vectors, item_seq, item_seq_len, self.last_n)

    def calculate_loss(self, interaction):
        return self.fake_loss.sum() * 0.0

    def predict(self, interaction):
        seq = self.sequence_vectors(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq * self.item_vectors[interaction[self.ITEM_ID]]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        """``[B, n]`` cosine similarities to every item (the padding item scores −inf)."""
        seq = self.sequence_vectors(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        scores = seq @ self.item_vectors.t()
        scores[:, 0] = -torch.inf
        return scores
