"""
recbole_specgr.inference.text_prior
###################################
The untrained text-similarity prior: how close an item's text is to the texts of the user's last n items.

``cos(q_u, x_i)`` with ``q_u`` the mean text embedding of the last n history items and ``x_i`` item i's (frozen
sentence-encoder embeddings, ``dataset.item_text_emb``). Ranked alone it is the TextSim baseline
(:class:`~recbole_specgr.model.sequential_recommender.textsim.TextSim`); in speculative inference it is one more
piece of evidence for items not seen in training (see :class:`~recbole_specgr.inference.specgr.Thresholds`): the
trained drafter learns its item space from seen items only, while the sentence encoder was never fitted to them.
"""

from typing import Optional

import torch
import torch.nn.functional as F


def recent_positions(item_seq: torch.Tensor, item_seq_len: torch.Tensor, last_n: int) -> torch.Tensor:
    """``[B, T]`` bool: the positions of the last ``last_n`` items of each (left-aligned) history."""
    positions = torch.arange(item_seq.size(1), device=item_seq.device)[None, :]  # [1, T]
    return (positions < item_seq_len[:, None]) & (positions >= item_seq_len[:, None] - last_n)


def recent_text_query(item_vectors: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                      last_n: int) -> torch.Tensor:
    """``[B, T], [B] -> [B, d]``: the normalised mean of ``item_vectors`` ``[n, d]`` over the last ``last_n`` items
    of each (left-aligned) history."""
    recent = recent_positions(item_seq, item_seq_len, last_n)  # [B, T]
    weights = recent.to(item_vectors.dtype) / recent.sum(dim=1, keepdim=True).clamp(min=1)
    return F.normalize(torch.einsum("bt,btd->bd", weights, item_vectors[item_seq]), dim=-1)


DISTINCT_ITEMS_PER_COLUMN = 16
""":meth:`TextPrior.cosines` takes the matrix product over a batch's distinct items while they number at most this
many per candidate column."""


class TextPrior:
    """Text-similarity logits of candidate items, centred on a typical positive pair.

    Args:
        item_text_emb (torch.Tensor): ``[n, d]`` item text embeddings (row 0: padding).
        last_n (int): n, the most recent history items averaged into the query.
        center (float): c̄, subtracted from every cosine: the mean cosine of the training split's (history, next item)
            pairs (:meth:`typical_cosine`), so that 0 means "as close as a typical next item".
    """

    def __init__(self, item_text_emb: torch.Tensor, last_n: int = 3, center: float = 0.0):
        if isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < 1:
            raise ValueError(f"specgr_text_last_n: expected an int >= 1, got {last_n!r}")
        self.item_vectors = F.normalize(item_text_emb.float(), dim=-1)  # [n, d]
        self.last_n = last_n
        self.center = float(center)

    def cosines(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` centred cosines ``cos(q_u, x_i) − c̄`` of ``items`` ``[B, M]``.

        When the batch names few distinct items (at most :data:`DISTINCT_ITEMS_PER_COLUMN` × M), every query meets
        every one of them in one matrix product and each row picks its own: gathering a ``[B, M, d]`` copy of the
        item vectors costs more (measured at one thread, B = 256, M = 200, d = 384: 25 ms gathered against 3.6 ms
        for the product over 1,683 items, ~60× more per entry). The two ways round differently (~3e-7 at d = 384),
        so the same pair can differ in the last bits between batches that take different ways."""
        query = recent_text_query(self.item_vectors, item_seq, item_seq_len, self.last_n)  # [B, d]
        items = items.to(self.item_vectors.device)
        present = torch.zeros(self.item_vectors.size(0), dtype=torch.bool, device=items.device)
        present[items] = True
        listed = torch.nonzero(present).squeeze(1)  # [U] the distinct items, ascending
        if listed.numel() > DISTINCT_ITEMS_PER_COLUMN * max(items.size(1), 1):
            return torch.einsum("bd,bmd->bm", query, self.item_vectors[items]) - self.center
        column = torch.cumsum(present, dim=0) - 1  # [n] each listed item's column in the product
        return (query @ self.item_vectors[listed].T).gather(1, column[items]) - self.center

    @classmethod
    def typical_cosine(cls, item_text_emb: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                       targets: torch.Tensor, last_n: int = 3, max_rows: int = 20000) -> float:
        """The mean ``cos(q_u, x_target)`` over (history, next item) rows, at most ``max_rows`` of them evenly spaced
        (the training split's rows: no validation or test data)."""
        prior = cls(item_text_emb, last_n)
        rows = torch.linspace(0, len(targets) - 1, min(max_rows, len(targets))).round().long().unique()
        cos = prior.cosines(item_seq[rows], item_seq_len[rows], targets[rows, None]).squeeze(1)
        return float(cos.mean()) if len(rows) else 0.0


def text_prior_of(config, dataset, item_text_emb: Optional[torch.Tensor]) -> Optional[TextPrior]:
    """The :class:`TextPrior` of a speculative model: item texts ``item_text_emb`` (None: no prior) and its centre
    from ``dataset``'s training rows when the dataset has them (``specgr_text_last_n`` from ``config``)."""
    if item_text_emb is None:
        return None
    last_n = config["specgr_text_last_n"] if config["specgr_text_last_n"] is not None else 3
    center = 0.0
    inter = getattr(dataset, "inter_feat", None)
    seq_field, len_field, item_field = (config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"],
                                        config["ITEM_ID_FIELD"])
    if inter is not None and all(f in inter for f in (seq_field, len_field, item_field)) and len(inter) > 0:
        center = TextPrior.typical_cosine(item_text_emb, inter[seq_field], inter[len_field], inter[item_field], last_n)
    return TextPrior(item_text_emb, last_n, center)
