"""Tiny hand-made models that satisfy :mod:`recbole_specgr.inference.interfaces`, for tests.

* :class:`TableVerifier`: per-user, per-prefix digit log-probabilities from a fixed random table; its beam search
  enumerates the prefixes of the allowed items (exact beam search for tiny catalogs), a user's ``exclude`` items
  left out; like the real driver, users left out of a ``send(users)`` get no beams from then on.
* :class:`FixedDrafter`: fixed user and item vectors.
* :class:`NoBeamTables`: any verifier, its beam search keeping no log-probabilities (speculative inference then
  decodes every draft).

The user of a sequence is its first item id (``item_seq[:, 0]``), so tests pick users by building sequences.
"""

import math
from typing import Optional

import torch

from recbole_specgr.inference.interfaces import BeamStep, EncoderState
from recbole_specgr.inference.prefix_index import PrefixIndex


def make_catalog(n_items: int, n_digits: int = 3, codebook_size: int = 3, n_unseen: int = 0, seed: int = 0):
    """Random distinct codes for items 1..n_items: item2codes [n_items + 1, l] (row 0 = -1) and the seen mask."""
    if n_items > codebook_size**n_digits:
        raise ValueError(f"n_items: at most {codebook_size ** n_digits} distinct codes, got {n_items}")
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(codebook_size**n_digits, generator=g)[:n_items]  # distinct code numbers
    powers = codebook_size ** torch.arange(n_digits - 1, -1, -1)
    codes = (flat.unsqueeze(1) // powers) % codebook_size  # [n_items, l], most significant digit first
    item2codes = torch.cat([torch.full((1, n_digits), -1), codes]).long()
    seen = torch.ones(n_items + 1, dtype=torch.bool)
    seen[0] = False
    if n_unseen:
        seen[-n_unseen:] = False
    return item2codes, seen


def user_seq(users) -> tuple:
    """Sequences whose first item names the user: item_seq [B, 2], item_seq_len [B]."""
    users = torch.as_tensor(users, dtype=torch.long)
    return torch.stack([users, torch.zeros_like(users)], dim=1), torch.ones_like(users)


class TableVerifier:
    """``log P(c_d | c_<d, user)`` = ``log_probs[user, d, radix(c_<d), c_d]`` from a random (editable) table.

    Args:
        item2codes: [n, l] codes, row 0 = -1.
        n_users: users the table covers.
        generable: [n] bool, the items beam search may produce by default (default: every real item).
    """

    def __init__(self, item2codes: torch.Tensor, n_users: int, generable: Optional[torch.Tensor] = None,
                 seed: int = 0, codebook_size: Optional[int] = None):
        self.item2codes = item2codes
        self.n_digits = item2codes.size(1)
        self.codebook_size = codebook_size or int(item2codes.max()) + 1
        g = torch.Generator().manual_seed(seed)
        logits = 2 * torch.randn(n_users, self.n_digits, self.codebook_size ** (self.n_digits - 1),
                                 self.codebook_size, generator=g)
        self.log_probs = logits.log_softmax(dim=-1)  # [U, l, C^(l-1), C]
        self.generable = generable if generable is not None else torch.arange(item2codes.size(0)) > 0
        self.prefix_index = PrefixIndex(item2codes, self.codebook_size)
        self.n_encode_calls = 0
        self.sent = []  # the [B] masks that callers sent to beam_search, in order

    def radix(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Mixed-radix number of code prefixes [..., d] (0 for d = 0)."""
        powers = self.codebook_size ** torch.arange(prefixes.size(-1) - 1, -1, -1)
        return (prefixes * powers).sum(dim=-1)

    def digit_table(self, user: int, codes) -> list:
        """Per-digit log-probs of one code sequence for one user, read straight from the table."""
        codes = list(codes)
        return [float(self.log_probs[user, d, int(self.radix(torch.tensor(codes[:d]))), codes[d]])
                for d in range(len(codes))]

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> EncoderState:
        self.n_encode_calls += 1
        users = item_seq[:, 0].float()
        return EncoderState(users[:, None, None], torch.ones(item_seq.size(0), 1, dtype=torch.bool))

    def digit_log_probs(self, enc: EncoderState, cand_items: torch.Tensor,
                        digits: Optional[int] = None) -> torch.Tensor:
        users = enc.hidden[:, 0, 0].long()  # [B]
        codes = self.item2codes[cand_items]  # [B, N, l]
        if (codes[cand_items != 0] < 0).any():
            raise ValueError("digit_log_probs: an item without codes")
        codes = codes.clamp(min=0)
        out = [self.log_probs[users[:, None], d, self.radix(codes[..., :d]), codes[..., d]] for d in
               range(self.n_digits)]
        out = torch.stack(out, dim=-1).masked_fill(cand_items[..., None] == 0, float("-inf"))  # [B, N, l]
        if digits is not None:  # the digits not asked for: NaN, as a verifier that does not decode them may leave them
            out[..., digits:] = float("nan")
        return out

    def prefix_scores(self, users: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
        """Summed log-probs of prefixes [P, j] for users [B]: [B, P]."""
        total = torch.zeros(users.numel(), prefixes.size(0))
        for d in range(prefixes.size(1)):
            total += self.log_probs[users[:, None], d, self.radix(prefixes[:, :d])[None], prefixes[None, :, d]]
        return total

    def beam_search(self, enc: EncoderState, beam_size: int, item_mask: Optional[torch.Tensor] = None,
                    exclude: Optional[torch.Tensor] = None, keep_log_probs: bool = False):
        users = enc.hidden[:, 0, 0].long()  # [B]
        allowed = (self.generable if item_mask is None else item_mask).clone()
        allowed[0] = False
        items = torch.nonzero(allowed).squeeze(1)  # [m]
        codes = self.item2codes[items]  # [m, l]
        kept = None if exclude is None else ~exclude[:, items]  # [B, m] the items each user's beams may spell
        parent_inverse, beam_table = None, None
        parents = torch.zeros(users.numel(), 1, 0, dtype=torch.long)  # [B, G, j−1] prefixes of B_{j−1} (the root)
        parents_valid = torch.ones(users.numel(), 1, dtype=torch.bool)
        dropped = torch.zeros(users.numel(), dtype=torch.bool)  # [B] users whose beams are no longer needed
        for j in range(1, self.n_digits + 1):
            prefixes, inverse = torch.unique(codes[:, :j], dim=0, return_inverse=True)  # [P, j], [m]
            key = self.prefix_scores(users, prefixes)  # [B, P]
            if kept is not None:  # a prefix over excluded items only takes no beam
                alive = torch.zeros(users.numel(), prefixes.size(0)).index_add_(1, inverse, kept.float()) > 0
                key = key.masked_fill(~alive, -math.inf)
            if beam_table is not None:  # only extensions of the previous beams
                parent = torch.zeros(prefixes.size(0), dtype=torch.long).scatter_(0, inverse, parent_inverse)
                key = key.masked_fill(~beam_table[:, parent], -math.inf)
            top, idx = key.topk(min(beam_size, prefixes.size(0)), dim=1)  # [B, β']
            pad = beam_size - idx.size(1)
            top = torch.cat([top, torch.full((top.size(0), pad), -math.inf)], dim=1)
            idx = torch.cat([idx, torch.zeros(idx.size(0), pad, dtype=torch.long)], dim=1)
            valid = top > -math.inf
            beam_items = None
            if j == self.n_digits:
                item_of = torch.zeros(prefixes.size(0), dtype=torch.long).scatter_(0, inverse, items)
                beam_items = item_of[idx].masked_fill(~valid, 0)
            beam_table = torch.zeros(users.numel(), prefixes.size(0) + 1, dtype=torch.bool)
            beam_table = beam_table.scatter_(1, idx.masked_fill(~valid, prefixes.size(0)), True)[:, :-1]
            parent_inverse = inverse
            log_probs = None
            if keep_log_probs:  # the table's rows after each beam of B_{j−1}
                rows = self.log_probs[users[:, None], j - 1, self.radix(parents.clamp(min=0))]  # [B, G, C]
                log_probs = rows.masked_fill(~parents_valid[:, :, None] | dropped[:, None, None], -math.inf)
            step = BeamStep(j, prefixes[idx], top, valid, beam_items, log_probs)
            parents, parents_valid = step.prefixes, valid
            if dropped.any():  # users dropped by an earlier send() get no beams, as the real driver does
                step = BeamStep(j, step.prefixes.masked_fill(dropped[:, None, None], -1),
                                top.masked_fill(dropped[:, None], -math.inf), valid & ~dropped[:, None],
                                None if beam_items is None else beam_items.masked_fill(dropped[:, None], 0),
                                log_probs)
            need = yield step
            if need is not None:
                self.sent.append(need.clone())
                dropped |= ~need


class FixedDrafter:
    """Query vector = ``user_vectors[user]``; item vectors fixed."""

    def __init__(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor):
        self.user_vectors = user_vectors  # [U, D]
        self.items = item_vectors  # [n, D]

    def sequence_vectors(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        return self.user_vectors[item_seq[:, 0]]

    def item_vectors(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.items if item_ids is None else self.items[item_ids]


class NoBeamTables:
    """``verifier`` whose beam search keeps no log-probabilities (the protocol's ``keep_log_probs`` is a request)."""

    def __init__(self, verifier):
        self.verifier = verifier

    def __getattr__(self, name):
        return getattr(self.verifier, name)

    def beam_search(self, enc, beam_size, item_mask=None, exclude=None, keep_log_probs=False):
        return self.verifier.beam_search(enc, beam_size, item_mask, exclude)
