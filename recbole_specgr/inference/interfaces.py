"""
recbole_specgr.inference.interfaces
####################################
The two small contracts that speculative inference (:mod:`recbole_specgr.inference.specgr`) relies on.

Speculative inference never imports a concrete model: any object with these methods can be the *verifier*
(a generative recommender over semantic IDs, e.g. TIGER or SpecGR++) or the *drafter* (any model that embeds
sequences and items into one space, e.g. UniSRec or SpecGR++'s own encoder).

Shapes: B users, T history length, S encoder length, D hidden size, N candidates per user,
n the number of items (RecBole ids, 0 = padding), l the semantic ID length (``n_digits``), β beam size.
"""

from typing import Any, Iterator, NamedTuple, Optional, Protocol

import torch

from recbole_specgr.inference.prefix_index import PrefixIndex


class EncoderState(NamedTuple):
    """Encoder output, computed once per user batch and reused by every decoding / scoring call."""

    hidden: torch.Tensor  # [B, S, D]
    mask: torch.Tensor  # [B, S] bool, True = real token
    shared: Optional[Any] = None  # the verifier's own per-user decoder states that every candidate of a user shares
    # (:meth:`Verifier.share_decoding`), anything with a ``select(users)`` method; None = none decoded yet

    def select(self, users) -> "EncoderState":
        """The state of some users only: ``users`` a slice or [B'] indices."""
        shared = None if self.shared is None else self.shared.select(users)
        return EncoderState(self.hidden[users], self.mask[users], shared)


class BeamStep(NamedTuple):
    """The beam set B_j after decoding digit j (1-based) for every user.

    ``prefixes[b, k]`` is the j-digit code prefix of beam k of user b, ``scores`` its summed log-probability,
    ``valid`` False for beams that do not exist (fewer than β real prefixes). At j == l, ``items`` holds the
    RecBole item id that each complete beam spells (0 where invalid); before that it is None. ``log_probs``, when the
    search was asked to keep them, holds what this step decoded: log P(digit j = c | prefix) for every code c after
    each beam of B_{j−1} (one row, the empty prefix, at j = 1), −inf for users no longer decoded; the rows of beams a
    user does not have (B_{j−1}'s ``valid`` False) mean nothing.
    """

    depth: int  # j
    prefixes: torch.Tensor  # [B, β, j] raw codes
    scores: torch.Tensor  # [B, β]
    valid: torch.Tensor  # [B, β] bool
    items: Optional[torch.Tensor]  # [B, β] item ids at j == l, else None
    log_probs: Optional[torch.Tensor] = None  # [B, β_{j−1}, C] (β_0 = 1), kept on request only


class Verifier(Protocol):
    """A generative recommender over semantic IDs (TIGER / SpecGR++)."""

    item2codes: torch.Tensor  # [n, l] raw codes per digit, row 0 (padding item) = -1
    n_digits: int  # l, the last digit being the collision (identification) digit
    codebook_size: int  # C, codes per digit
    prefix_index: PrefixIndex  # the prefix tree of item2codes

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> EncoderState:
        """Run the encoder once on ``[bos, ID_1 … ID_w, eos]``."""

    def digit_log_probs(self, enc: EncoderState, cand_items: torch.Tensor,
                        digits: Optional[int] = None) -> torch.Tensor:
        """Teacher-forced log P(c_i | c_<i, X) for every digit of every candidate: [B, N] -> [B, N, l]; item 0 is
        padding (−inf, need not be decoded: callers pad users with fewer candidates with it). ``digits``: only the
        first ``digits`` are read (the rest may be anything, e.g. NaN); a verifier may then decode less."""

    # Optional: ``share_decoding(enc, n_candidates) -> EncoderState``, ``enc`` with the decoder positions that every
    # candidate of a user shares decoded once (:attr:`EncoderState.shared`), for a caller that will score about
    # ``n_candidates`` candidates per user in several :meth:`digit_log_probs` calls (SpecGR's rounds).

    def beam_search(
        self,
        enc: EncoderState,
        beam_size: int,
        item_mask: Optional[torch.Tensor] = None,
        exclude: Optional[torch.Tensor] = None,
        keep_log_probs: bool = False,
    ) -> Iterator[BeamStep]:
        """Constrained beam search yielding B_1 … B_l; only prefixes of items allowed by ``item_mask`` [n]
        (default: all real items the model was built to generate) and not in ``exclude`` [B, n] (per user) are
        ever produced. A generator may also take ``send(users)`` ([B] bool) for its next step: only those users'
        beams are needed from then on (the others' may come back invalid); a plain iterator is advanced with
        ``next`` and decodes every user. ``keep_log_probs``: each step also holds the next-digit log-probabilities
        it decoded (:attr:`BeamStep.log_probs`, the same numbers as :meth:`digit_log_probs` gives a candidate with
        that prefix, to float rounding)."""


class Drafter(Protocol):
    """An inductive retrieval model: sequences and items in one vector space, scored by inner product. An optional
    ``temperature`` attribute τ makes inner product / τ its logit (the joint ranking's s_d; default τ = 1)."""

    def sequence_vectors(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """[B, T], [B] -> [B, D] query vectors. A drafter that is also the verifier (SpecGR++) is called with a third
        argument ``enc``, the :class:`EncoderState` the verifier just computed for the batch, so it can skip encoding
        again."""

    def item_vectors(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[N] item ids (default: all n items, unseen included) -> [N, D] item vectors."""
