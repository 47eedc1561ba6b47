"""
recbole_specgr.inference.specgr
################################
Speculative generative recommendation: an inductive *drafter* proposes items (unseen ones included), a generative
*verifier* accepts or rejects them, the verifier's beam prefixes guide later drafts, and the loop exits per user
once K items are accepted (paper section 3.2). Both models are reached only through
:mod:`recbole_specgr.inference.interfaces`; the whole batch is processed at once with per-user masks.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939.
"""

import inspect
import logging
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Iterator, List, NamedTuple, Optional

import torch

from recbole_specgr.evaluation import list_ranks, ranked_scores
from recbole_specgr.inference.drafting import (DraftIndex, DraftMask, DraftSession, check_backend, packed_keys,
                                               padded_packed_topk, padded_topk)
from recbole_specgr.inference.interfaces import BeamStep, Drafter, EncoderState, Verifier
from recbole_specgr.inference.prefix_index import PrefixIndex
from recbole_specgr.inference.text_prior import TextPrior, recent_positions


def verification_scores(log_probs: torch.Tensor, unseen: torch.Tensor, adjust: bool = True) -> torch.Tensor:
    """Eq. 2: mean digit log-probability, over all l digits for seen items and over the first l−1 for unseen ones
    (their collision digit carries no semantics).

    Args:
        log_probs (torch.Tensor): ``[B, N, l]`` log P(c_i | c_<i, X) per digit.
        unseen (torch.Tensor): ``[B, N]`` bool, True for items not seen in training.
        adjust (bool): False = ablation (1.2), every item is scored over all l digits.

    Returns:
        torch.Tensor: ``[B, N]`` verification scores V.
    """
    full = log_probs.mean(dim=-1)  # [B, N]
    if not adjust:
        return full
    return torch.where(unseen, log_probs[..., :-1].mean(dim=-1), full)


GUIDED_LIST_SHARE = 4  # guided rounds list the items under the beam prefixes while they are ≤ 1/4 of the catalog


def beam_nodes(prefix_index: PrefixIndex, step: BeamStep) -> torch.Tensor:
    """``[B, β]`` the j-prefix node of each of the user's beams in B_j, −1 for no beam."""
    node = prefix_index.lookup(step.prefixes)  # [B, β], -1 = no item has it
    return node.masked_fill(~step.valid, -1)


class CompleteBeams(NamedTuple):
    """The verifier's complete beam search, decoded before the draft-verify rounds (joint ranking), with which beam
    holds each prefix, looked up once per batch for every round's :func:`beam_log_probs`."""

    steps: List[BeamStep]  # B_1 … B_l, each with its ``log_probs``
    beam_at: List[torch.Tensor]  # [B, P_d + 1] for d = 1 … l−1: the beam of B_d at each d-digit node, −1 for none
    # (the last column: "no node", e.g. the padding item's)

    @classmethod
    def of(cls, prefix_index: PrefixIndex, steps: List[BeamStep]) -> "CompleteBeams":
        beam_at = []
        for depth, step in enumerate(steps[:-1], start=1):
            held = beam_nodes(prefix_index, step)  # [B, β]
            n_nodes = prefix_index.n_nodes(depth)
            table = held.new_full((held.size(0), n_nodes + 1), -1)
            beams = torch.arange(held.size(1), device=held.device).expand_as(held)
            table.scatter_(1, held.masked_fill(held < 0, n_nodes), beams)  # a user's beams hold distinct prefixes
            table[:, n_nodes] = -1  # what the non-beams wrote
            beam_at.append(table)
        return cls(steps, beam_at)


def beam_log_probs(prefix_index: PrefixIndex, item2codes: torch.Tensor, beams: CompleteBeams, items: torch.Tensor):
    """The digit log-probabilities of ``items`` [B, N] that the beam search already decoded: beam step j computed
    log P(digit j | prefix) after every beam of B_{j−1} (:attr:`BeamStep.log_probs`), so an item whose (j−1)-digit
    prefix is a beam of B_{j−1}, for every j ≤ d, needs no decoding of its first d digits (d = l: of any; an unseen
    item's Eq. 2 reads d = l − 1).

    Args:
        beams: B_1 … B_l with their ``log_probs`` and the beam at each prefix (:meth:`CompleteBeams.of`).
    Returns:
        log-probs [B, N, l] and known [B, N] long: how many leading digits were found, 0 … l (the digits after them
        are arbitrary).
    """
    codes = item2codes[items].clamp(min=0)  # [B, N, l]
    found = items != 0  # [B, N] every digit so far found
    known = torch.zeros_like(items)
    digits = []
    for depth, step in enumerate(beams.steps):  # step B_{depth+1} holds digit depth+1's log-probs after B_depth
        n_users, n_parents, n_codes = step.log_probs.shape
        parent = torch.zeros_like(items)  # B_0: the one empty prefix
        if depth > 0:
            table = beams.beam_at[depth - 1]  # [B, P_depth + 1]
            mine = prefix_index.item_nodes(depth)[items]  # [B, N] each item's node of that depth
            parent = table.gather(1, mine.masked_fill(mine < 0, table.size(1) - 1))  # [B, N] its beam of B_depth
            found &= parent >= 0
            parent = parent.clamp(min=0)
        known += found.long()
        flat = step.log_probs.reshape(n_users, n_parents * n_codes)
        digits.append(flat.gather(1, parent * n_codes + codes[..., depth]))
    return torch.stack(digits, dim=-1), known


@dataclass
class SpecGRStats:
    """Counts over one or more user batches (add them up); :meth:`summary` turns them into rates."""

    n_users: int = 0
    n_drafted: int = 0
    n_accepted: int = 0  # accepted drafts (joint ranking: accepted seen drafts plus every unseen draft, all candidates)
    n_rounds: int = 0  # draft-verify rounds summed over users
    n_beam_steps: int = 0  # beam-search decoding steps summed over batches
    n_output: int = 0
    n_output_unseen: int = 0

    def __add__(self, other: "SpecGRStats") -> "SpecGRStats":
        return SpecGRStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def summary(self, elapsed_s: Optional[float] = None) -> dict:
        """acceptance_rate, mean_rounds, unseen_share and, when the caller timed the batches, users_per_s."""
        out = {
            "acceptance_rate": self.n_accepted / max(self.n_drafted, 1),
            "mean_rounds": self.n_rounds / max(self.n_users, 1),
            "unseen_share": self.n_output_unseen / max(self.n_output, 1),
        }
        if elapsed_s is not None:
            out["users_per_s"] = self.n_users / max(elapsed_s, 1e-12)
        return out


class Thresholds(NamedTuple):
    """One inference setting. Acceptance: a draft of a seen item is accepted if V > ``seen`` (γ), one of an item not
    seen in training if V > ``unseen`` (γ_u). The paper uses one γ for both; a lower γ_u admits new items, whose
    semantic prefixes the verifier never generated in training and so scores low (measured on ml-100k: V ≈ −4 … −6).

    Ranking: with ``draft_weight`` α = 0 (the paper) the list is the accepted drafts (the K best by V), completed to K
    by the beam fill, and ranked by their scores together: V for drafts, the length-normalised score for beams.
    With α > 0 (joint ranking, not in the paper) accepted drafts and the complete beams B_l are ranked together by
    ``l·V + α·s_d``: the verifier's log-likelihood of the item plus α times the drafter's logit s_d (inner product /
    τ), a product of the two models' distributions. An unseen item's V is replaced by ``unseen_score`` v_u (per digit, like
    V and γ): Eq. 2 cannot rank codes the verifier never generated, so the drafter ranks unseen items and v_u sets how
    they interleave with seen ones. For the same reason the verifier neither accepts nor rejects unseen drafts there
    (γ_u plays no part): each is a candidate, and the adaptive exit counts accepted seen drafts. ``text_weight`` β
    adds β·s_t to an unseen item's key, s_t the text prior's logit
    (:class:`~recbole_specgr.inference.text_prior.TextPrior`: the cosine between the item's text and the user's last
    items' texts, minus that of a typical next item, over the drafter's τ): evidence for unseen items from an encoder
    never fitted to the seen ones (measured on ml-100k: more unseen and more overall recall; on seen items it hurts,
    so they do not get it). ``novelty_weight`` η adds η·ρ_u to every unseen item's key, ρ_u the share of the user's
    last n history items that were not seen in training (:func:`recent_unseen_share`): how many of the list's places
    go to new items then follows the user's own recent taste for new items, where v_u alone gives every user the
    same (not in the paper either)."""

    seen: float
    unseen: float
    draft_weight: float = 0.0
    unseen_score: float = -1.75
    text_weight: float = 0.0
    novelty_weight: float = 0.0

    @classmethod
    def of(cls, value) -> "Thresholds":
        """``value`` as a setting: a :class:`Thresholds` as it is, a number γ as (γ, γ) with the paper's ranking."""
        return value if isinstance(value, cls) else cls(float(value), float(value))

    @property
    def joint(self) -> bool:
        """True for the joint ranking (α > 0)."""
        return self.draft_weight > 0

    def per_item(self, seen: torch.Tensor) -> torch.Tensor:
        """``[n]`` threshold of each item from the ``[n]`` bool seen mask."""
        return torch.where(seen, self.seen, self.unseen)

    @property
    def text_ratio(self) -> float:
        """β/α: the text prior's weight relative to the drafter's logit, which orders a user's unseen items."""
        return self.text_weight / self.draft_weight if self.joint else 0.0


def recent_unseen_share(item_seq: torch.Tensor, item_seq_len: torch.Tensor, seen: torch.Tensor,
                        last_n: int) -> torch.Tensor:
    """``[B]`` ρ_u: the share of the last ``last_n`` items of each (left-aligned) history ``item_seq`` [B, T] that
    were not seen in training (``seen`` [n] bool; padding is not counted)."""
    recent = recent_positions(item_seq, item_seq_len, last_n) & (item_seq != 0)  # [B, T]
    new = recent & ~seen[item_seq]
    return new.sum(dim=1).float() / recent.sum(dim=1).clamp(min=1).float()


@dataclass
class _Rounds:
    """What the draft-verify rounds of one batch produced, shared by every threshold setting."""

    cand: torch.Tensor  # [B, R, δ] drafted items (0 = none)
    cand_scores: torch.Tensor  # [B, R, δ] their verification scores V
    cand_logits: torch.Tensor  # [B, R, δ] their drafter logits s_d (-inf = none)
    cand_text: Optional[torch.Tensor]  # [B, R, δ] the text-prior logits s_t of unseen drafts (seen drafts: those of
    # item 0; None: no setting uses them)
    beam_logits: Optional[torch.Tensor]  # [B, β] s_d of the complete beams' items (None: no setting ranks jointly)
    ran: torch.Tensor  # [B, R] bool, rounds each user drafted in
    beam_steps: Iterator[BeamStep]  # the verifier's beam search, advanced on demand
    beams: Optional[BeamStep]  # the deepest beams B_j consumed so far
    seen: torch.Tensor  # [n] bool, items seen in training
    short: torch.Tensor  # [B] bool, users whose complete beams some setting needs (short of K at the strictest
    # thresholds; every user when a setting ranks jointly)
    session: DraftSession  # the batch's drafting session (the drafter's queries)
    novelty: Optional[torch.Tensor] = None  # [B] ρ_u, each user's recent share of unseen items (None: no setting
    # uses it)
    unseen_pool: Optional[dict] = None  # rank_all_unseen: β/α -> (items [B, K], logits [B, K]), each user's K best
    # allowed unseen items by s_d + (β/α)·s_t (0 = none); None: unseen items come from the drafts
    joint_gamma: Optional["_JointGamma"] = None  # what the joint settings of the last γ ranked share


class _Cut(NamedTuple):
    """What one γ (and γ_u, for the paper's ranking) makes of the rounds; a joint ranking's serves the joint
    settings of that γ that follow it in a grid."""

    used: torch.Tensor  # [B, R] bool, rounds run at this γ
    cand: torch.Tensor  # [B, R, δ] their drafts (0 = none)
    scores: torch.Tensor  # [B, R, δ] their V (-inf = none)
    accepted: torch.Tensor  # [B, R, δ] bool: candidates of the list
    fill: Optional[BeamStep]  # complete beams B_l, when some user may be short or the ranking is joint
    stats: "SpecGRStats"  # n_users, n_drafted, n_accepted, n_rounds


class _JointGamma(NamedTuple):
    """What the joint settings of one γ share: its cut, per β/α the columns and per α the seen items' top-K."""

    gamma: float
    cut: _Cut
    columns: dict  # β/α -> _JointColumns
    seen_tops: dict  # α -> [B, ≤K] packed keys of the top-K among the seen items' columns (_joint_seen_top)


class _JointColumns(NamedTuple):
    """The joint ranking's columns at one γ and β/α: drafts (R·δ), beams (β), pool (P), and what no other weight
    changes."""

    items: torch.Tensor  # [B, C] the item of each column (0 = none)
    first: torch.Tensor  # [B, C] the first column holding the same item
    seen_cand: torch.Tensor  # [B, R, δ] bool, the draft is of a seen item
    cand_logits: torch.Tensor  # [B, R, δ] s_d (+ (β/α)·s_t for unseen drafts), -inf off the γ's rounds
    beam_scores: torch.Tensor  # [B, β] l·V of each beam's item
    beam_ok: torch.Tensor  # [B, β] bool, a real, allowed beam
    beam_seen: torch.Tensor  # [B, β] bool, the beam's item was seen in training
    unseen_beams: bool  # some real, allowed beam spells an unseen item (tiger_allow_unseen)
    pool_logits: Optional[torch.Tensor]  # [B, P] the pool's s_d + (β/α)·s_t (None: no pool)
    pool_ok: Optional[torch.Tensor]  # [B, P] bool, a real pool item


@dataclass
class SpecGROutput:
    """Result of :meth:`SpeculativeRecommender.recommend` for B users over R rounds: each user's list of up to K
    items, and what the rounds drafted. In a grid (:meth:`SpeculativeRecommender.recommend_thresholds`) the joint
    settings of one γ share ``drafts``, ``draft_scores`` and ``accepted``, which the settings after them read:
    treat them as read-only (clone before changing them)."""

    n_items: int
    items: torch.Tensor  # [B, K] the list, in order (entries not ``listed`` are arbitrary)
    item_scores: torch.Tensor  # [B, K] their ranking keys, non-increasing over the listed entries
    listed: torch.Tensor  # [B, K] bool, the entry is an item (a user may get fewer than K)
    drafts: torch.Tensor  # [B, R, δ] items drafted in each round (0 = none)
    draft_scores: torch.Tensor  # [B, R, δ] verification scores V (-inf = none; NaN = an unseen draft not verified,
    # when every setting ranks jointly and so none reads its V)
    accepted: torch.Tensor  # [B, R, δ] bool, V > γ
    stats: "SpecGRStats"

    @cached_property
    def scores(self) -> torch.Tensor:
        """``[B, n]``, finite exactly at the listed items, in list order (:func:`~recbole_specgr.evaluation.ranked_scores`),
        -inf elsewhere: what ``full_sort_predict`` returns."""
        return ranked_scores(self.n_items, self.items, self.item_scores, self.listed)

    def target_ranks(self, targets: torch.Tensor, max_k: int) -> torch.Tensor:
        """``[B]`` 0-based rank of each user's target in its list, ``max_k`` where it is absent or at ``max_k`` or
        below: ``topk_hits(self.scores, targets, max_k, distinct=True)`` without the ``[B, n]`` matrix."""
        return list_ranks(self.items, self.item_scores, self.listed, targets, max_k)


class SpeculativeRecommender:
    """Draft-then-verify top-K recommendation (SpecGR) with any :class:`Verifier` and :class:`Drafter`.

    Args:
        verifier (Verifier): the generative recommender (TIGER / SpecGR++).
        drafter (Drafter): the inductive retrieval model (UniSRec / SpecGR++'s encoder).
        seen_item_mask (torch.Tensor): ``[n]`` bool, True for items seen in training (eq. 2 normalisation).
        draft_size (int): δ, items drafted per user and round.
        num_beams (int): β, beam size of the verifier's beam search (guides re-drafting, fills short lists).
        threshold (float): γ, accept a draft if V > γ.
        unseen_threshold (float, optional): γ_u, accept a draft of an item not seen in training if V > γ_u; None =
            γ (the paper).
        draft_weight (float): α ≥ 0; 0 = the paper's ranking, > 0 = joint ranking by l·V + α·s_d (see
            :class:`Thresholds`).
        unseen_score (float): v_u, the per-digit score an unseen item takes in place of V in the joint ranking.
        text_weight (float): β ≥ 0, the weight of the text prior's logit in an unseen item's joint key (needs
            ``text_prior`` and α > 0).
        novelty_weight (float): η ≥ 0, the weight of the user's recent share of unseen items ρ_u in an unseen
            item's joint key (needs α > 0).
        novelty_last_n (int): n, the history items ρ_u counts.
        rank_all_unseen (bool): in the joint ranking, every allowed unseen item is a candidate, ranked by the same
            key (the K best of each user by s_d + (β/α)·s_t, found by one product over the unseen items); False:
            only the unseen items drafted (as in the paper, where they reach the list through drafting alone).
        text_prior (TextPrior, optional): the item texts' similarity prior (:mod:`recbole_specgr.inference.text_prior`).
        topk (int): K, items recommended per user.
        drafting_backend (str): ``dense`` or ``faiss`` (see :mod:`recbole_specgr.inference.drafting`).
        faiss_index (str): ``flat`` (exact), ``hnsw`` or ``ivf`` (approximate) for the faiss backend.
        no_inductive_drafting (bool): ablation (1.1), draft only among seen items.
        no_likelihood_adjustment (bool): ablation (1.2), score unseen items over all l digits.
        no_guided_redrafting (bool): ablation (1.3), re-drafts are the next-best undrafted items.
        no_reranking (bool): ablation (1.4), keep draft (then beam) order instead of score order.
        no_adaptive_exit (bool): ablation (1.5), run all l rounds, then keep the top-K accepted by score.
    """

    def __init__(
        self,
        verifier: Verifier,
        drafter: Drafter,
        seen_item_mask: torch.Tensor,
        draft_size: int = 50,
        num_beams: int = 50,
        threshold: float = -1.6,
        unseen_threshold: Optional[float] = None,
        draft_weight: float = 0.0,
        unseen_score: float = -1.75,
        text_weight: float = 0.0,
        text_prior: Optional[TextPrior] = None,
        novelty_weight: float = 0.0,
        novelty_last_n: int = 3,
        rank_all_unseen: bool = True,
        topk: int = 10,
        drafting_backend: str = "dense",
        faiss_index: str = "flat",
        no_inductive_drafting: bool = False,
        no_likelihood_adjustment: bool = False,
        no_guided_redrafting: bool = False,
        no_reranking: bool = False,
        no_adaptive_exit: bool = False,
    ):
        # load parameters info
        self.verifier = verifier
        self.drafter = drafter
        self.draft_size = int(draft_size)
        self.num_beams = int(num_beams)
        self.threshold = float(threshold)
        if unseen_threshold is not None and (isinstance(unseen_threshold, bool)
                                             or not isinstance(unseen_threshold, (int, float))):
            raise ValueError(f"specgr_unseen_threshold: expected a number or ~, got {unseen_threshold!r}")
        self.unseen_threshold = None if unseen_threshold is None else float(unseen_threshold)
        for key, value in (("specgr_draft_weight", draft_weight), ("specgr_unseen_score", unseen_score),
                           ("specgr_text_weight", text_weight), ("specgr_novelty_weight", novelty_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {value!r}")
        if draft_weight < 0:
            raise ValueError(f"specgr_draft_weight: expected a number >= 0 (0 = the paper's ranking), got {draft_weight}")
        self.draft_weight = float(draft_weight)
        self.unseen_score = float(unseen_score)
        self.text_prior = text_prior
        self.text_weight = float(text_weight)
        self.novelty_weight = float(novelty_weight)
        _check_unseen_weights(self.thresholds, text_prior)
        if isinstance(novelty_last_n, bool) or not isinstance(novelty_last_n, int) or novelty_last_n < 1:
            raise ValueError(f"specgr_novelty_last_n: expected an int >= 1, got {novelty_last_n!r}")
        self.novelty_last_n = novelty_last_n
        if not isinstance(rank_all_unseen, bool):
            raise ValueError(f"specgr_rank_all_unseen: expected True or False, got {rank_all_unseen!r}")
        self.rank_all_unseen = rank_all_unseen
        self.topk = int(topk)
        check_backend(drafting_backend, faiss_index)  # here, not when the index is first built after training
        self.drafting_backend = drafting_backend
        self.faiss_index = faiss_index
        self.no_inductive_drafting = bool(no_inductive_drafting)
        self.no_likelihood_adjustment = bool(no_likelihood_adjustment)
        self.no_guided_redrafting = bool(no_guided_redrafting)
        self.no_reranking = bool(no_reranking)
        self.no_adaptive_exit = bool(no_adaptive_exit)
        self.n_digits = int(verifier.n_digits)
        self.n_items = verifier.item2codes.size(0)
        if self.draft_size < 0:
            raise ValueError(f"specgr_draft_size: expected an int >= 0, got {draft_size}")
        if self.num_beams < 1 or self.topk < 1:
            raise ValueError(f"num_beams / topk: expected ints >= 1, got {num_beams} / {topk}")
        if self.n_digits < 2:
            raise ValueError(f"verifier.n_digits: expected >= 2 (semantic + collision digits), got {self.n_digits}")
        if seen_item_mask is None or tuple(seen_item_mask.shape) != (self.n_items,):
            got = None if seen_item_mask is None else tuple(seen_item_mask.shape)
            raise ValueError(f"seen_item_mask: expected a bool tensor [{self.n_items}] (= item2codes rows), got {got}")
        self.seen_item_mask = seen_item_mask.bool()  # [n]
        # define derived structures
        self.prefix_index = verifier.prefix_index  # the verifier's own prefix tree (C from its codebook)
        self.drafter_temperature = float(getattr(drafter, "temperature", None) or 1.0)  # τ: s_d = inner product / τ
        if self.drafter_temperature <= 0:
            raise ValueError(f"drafter.temperature: expected a number > 0, got {self.drafter_temperature}")
        self.draft_index: Optional[DraftIndex] = None  # built from the drafter's item vectors on first use

    @classmethod
    def from_config(cls, config, verifier: Verifier, drafter: Drafter, seen_item_mask: torch.Tensor,
                    text_prior: Optional[TextPrior] = None):
        """Build from a RecBole config: ``specgr_draft_size``, ``num_beams``, ``specgr_threshold``,
        ``specgr_unseen_threshold``, ``specgr_draft_weight``, ``specgr_unseen_score``, ``specgr_text_weight``,
        ``specgr_novelty_weight``, ``specgr_novelty_last_n``, ``specgr_rank_all_unseen``, ``topk`` (K = its largest
        value), ``specgr_drafting_backend``, ``specgr_faiss_index`` and the ablation switches
        ``specgr_no_inductive_drafting``, ``specgr_no_likelihood_adjustment``, ``specgr_no_guided_redrafting``,
        ``specgr_no_reranking``, ``specgr_no_adaptive_exit``. Missing keys take the constructor defaults."""
        keys = {
            "draft_size": "specgr_draft_size",
            "num_beams": "num_beams",
            "threshold": "specgr_threshold",
            "unseen_threshold": "specgr_unseen_threshold",
            "draft_weight": "specgr_draft_weight",
            "unseen_score": "specgr_unseen_score",
            "text_weight": "specgr_text_weight",
            "novelty_weight": "specgr_novelty_weight",
            "novelty_last_n": "specgr_novelty_last_n",
            "rank_all_unseen": "specgr_rank_all_unseen",
            "drafting_backend": "specgr_drafting_backend",
            "faiss_index": "specgr_faiss_index",
            "no_inductive_drafting": "specgr_no_inductive_drafting",
            "no_likelihood_adjustment": "specgr_no_likelihood_adjustment",
            "no_guided_redrafting": "specgr_no_guided_redrafting",
            "no_reranking": "specgr_no_reranking",
            "no_adaptive_exit": "specgr_no_adaptive_exit",
        }
        kwargs = {arg: config[key] for arg, key in keys.items() if config[key] is not None}
        topk = config["topk"]
        if topk is not None:
            kwargs["topk"] = max(topk) if isinstance(topk, (list, tuple)) else topk
        return cls(verifier, drafter, seen_item_mask, text_prior=text_prior, **kwargs)

    def refresh(self) -> None:
        """(Re)build the drafting index from the drafter's current item vectors; call after the drafter changes."""
        with torch.no_grad():
            vectors = self.drafter.item_vectors()  # [n, D]
        if vectors.size(0) != self.n_items:
            raise ValueError(f"drafter.item_vectors(): expected {self.n_items} rows, got {vectors.size(0)}")
        self.draft_index = DraftIndex(vectors, backend=self.drafting_backend, faiss_index=self.faiss_index)
        logging.getLogger().debug(f"[SPECGR] drafting index ({self.drafting_backend}) over {self.n_items} items")

    @torch.no_grad()
    def recommend(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        allowed_items: Optional[torch.Tensor] = None,
        subset_ranking: bool = False,
    ) -> SpecGROutput:
        """Top-K recommendation for a batch of users at :attr:`thresholds`.

        Args:
            item_seq (torch.Tensor): ``[B, T]`` histories (0-padded).
            item_seq_len (torch.Tensor): ``[B]`` history lengths.
            allowed_items (torch.Tensor, optional): ``[n]`` or ``[B, n]`` bool, the items that may be recommended
                (default: every real item, unseen ones included). Drafts and beam fill both respect it.
            subset_ranking (bool): rank only ``allowed_items`` (paper 4.4.1): short lists are filled with the best
                rejected drafts instead of beam items, so every result lies in the subset.

        Returns:
            SpecGROutput: ``scores`` [B, n] finite at exactly min(K, available) items per user, plus the drafts.
        """
        return next(self.recommend_thresholds(item_seq, item_seq_len, [self.thresholds], allowed_items, subset_ranking))

    @property
    def thresholds(self) -> Thresholds:
        """The setting in use: (γ, γ_u, α, v_u, β, η) from ``threshold``, ``unseen_threshold`` (γ when that is
        None), ``draft_weight``, ``unseen_score``, ``text_weight`` and ``novelty_weight``."""
        unseen = self.threshold if self.unseen_threshold is None else self.unseen_threshold
        return Thresholds(self.threshold, unseen, self.draft_weight, self.unseen_score, self.text_weight,
                          self.novelty_weight)

    @torch.no_grad()
    def recommend_thresholds(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        thresholds,
        allowed_items: Optional[torch.Tensor] = None,
        subset_ranking: bool = False,
    ) -> Iterator[SpecGROutput]:
        """:meth:`recommend` at several thresholds for the cost of one pass: one output per entry of ``thresholds``
        (a γ, meaning the same γ for every item, or a :class:`Thresholds` pair), each equal to :meth:`recommend` with
        those thresholds (to float rounding for a setting of the paper's ranking in a grid that also ranks jointly:
        its drafts' V is then read from the complete beams where they hold it, ~1e-6 from decoding). The drafting
        and verification run (and the settings are checked) in this call; each output is ranked when the iterator
        reaches it (reusing what it shares with the joint settings of its γ just before it) and holds its ``[B, K]``
        list: the ``[B, n]`` :attr:`SpecGROutput.scores` is built only when read (364 of them were
        364 × ``[1024, 3,884]`` floats, 5.8 GB, for SpecGR_Aux's grid on ML-1M).

        Neither the drafts of a round (they depend on earlier drafts and on the beams B_j) nor their scores V depend
        on γ; only the adaptive exit does. So a user keeps drafting until even the strictest thresholds have K
        accepted items, and each entry then keeps the rounds it would have run.
        """
        if subset_ranking and allowed_items is None:
            raise ValueError("allowed_items: subset_ranking needs the subset as an [n] or [B, n] bool mask")
        settings = [Thresholds.of(t) for t in thresholds]
        if subset_ranking and any(t.joint for t in settings):
            raise ValueError("specgr_draft_weight: the joint ranking (α > 0) ranks drafts together with the complete "
                             "beams, which subset ranking does not use; rank a subset with α = 0")
        for setting in settings:
            _check_unseen_weights(setting, self.text_prior)
        unseen_counted = max(math.inf if t.joint else t.unseen for t in settings)  # joint: unseen drafts never count
        strictest = Thresholds(max(t.seen for t in settings), unseen_counted)
        allowed = None if allowed_items is None else allowed_items.to(device=item_seq.device, dtype=torch.bool)
        all_beams = any(t.joint for t in settings)
        verify_unseen = not all(t.joint for t in settings)
        text = any(t.text_weight > 0 for t in settings)
        rounds = self._draft_rounds(item_seq, item_seq_len, strictest, allowed, all_beams, text, subset_ranking,
                                    verify_unseen)
        if any(t.novelty_weight > 0 for t in settings):
            rounds.novelty = recent_unseen_share(item_seq, item_seq_len, rounds.seen, self.novelty_last_n)
        if self.rank_all_unseen and all_beams and not self.no_inductive_drafting:
            ratios = sorted({t.text_ratio for t in settings if t.joint})
            rounds.unseen_pool = self._unseen_pool(item_seq, item_seq_len, rounds, ratios, allowed)
        return (self._output(rounds, setting, allowed, subset_ranking) for setting in settings)

    def draft_queries(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, enc: EncoderState) -> torch.Tensor:
        """``[B, D]`` drafter query vectors; a drafter that is the verifier (SpecGR++) pools ``enc``, the verifier's
        encoder output for the batch, instead of encoding again."""
        if self.drafter is self.verifier:
            return self.drafter.sequence_vectors(item_seq, item_seq_len, enc)
        return self.drafter.sequence_vectors(item_seq, item_seq_len)

    def _draft_rounds(self, item_seq, item_seq_len, strictest: "Thresholds", allowed,
                      all_beams: bool = False, text: bool = False, subset_ranking: bool = False,
                      verify_unseen: bool = True) -> "_Rounds":
        """Draft-verify rounds j = 0 … l−1 (round 0: inductive drafting; round j ≥ 1: guided by B_j); a user stops
        once K of its drafts pass ``strictest``. ``all_beams``: every user's complete beams are needed (the joint
        ranking ranks them all), so they are decoded first, and a draft whose every digit the beam search already
        decoded reads its log-probabilities there (:func:`beam_log_probs`) instead of being decoded again.
        ``verify_unseen`` False: no setting uses the V of unseen drafts (joint rankings only: v_u replaces it), so
        they are not verified (V = NaN). ``text``: the drafts' text-prior logits s_t too.
        The beams spell only ``allowed`` items (a user's history takes no beam, so the fill keeps β items), except in
        ``subset_ranking``: there they only guide the drafts and search the whole catalog, as in the paper (A.2)."""
        if self.draft_index is None:
            self.refresh()
        n_users, device = item_seq.size(0), item_seq.device
        seen = self.seen_item_mask.to(device)  # [n]
        strict = strictest.per_item(seen)  # [n] the strictest γ of each item
        draft_allowed = allowed
        if self.no_inductive_drafting:
            draft_allowed = seen if allowed is None else allowed & seen

        enc = self.verifier.encode(item_seq, item_seq_len)  # run once, shared by verifying and beam search
        share_decoding = getattr(self.verifier, "share_decoding", None)
        if share_decoding is not None:  # positions every draft of a user shares: decoded once for all rounds
            enc = share_decoding(enc, self.draft_size)
        session = self.draft_index.session(self.draft_queries(item_seq, item_seq_len, enc))
        exclude = None if allowed is None or subset_ranking else ~allowed.expand(n_users, -1)  # [B, n]
        keep = {"keep_log_probs": True} if all_beams else {}  # (a verifier written before it needs no such key)
        beam_steps = self.verifier.beam_search(enc, self.num_beams, exclude=exclude, **keep)
        complete, beam_logits = None, None  # B_1 … B_l with their log-probs, when decoded first
        if all_beams:
            steps = list(beam_steps)
            if len(steps) != self.n_digits:
                raise ValueError(f"verifier.beam_search: yielded {len(steps)} beam sets, expected "
                                 f"n_digits = {self.n_digits}")
            beam_steps = iter(steps)
            if all(step.log_probs is not None for step in steps):  # a verifier that keeps none: decode every draft
                complete = CompleteBeams.of(self.prefix_index, steps)
            beam_items = steps[-1].items.masked_fill(~steps[-1].valid, 0)  # the joint rankings' s_d of B_l, once
            beam_logits = session.item_scores(beam_items).float() / self.drafter_temperature
        beams: Optional[BeamStep] = None
        drafted = torch.zeros(n_users, self.n_items, dtype=torch.bool, device=device)  # [B, n]
        n_strict = torch.zeros(n_users, dtype=torch.long, device=device)  # [B] accepted at the strictest γ
        active = torch.ones(n_users, dtype=torch.bool, device=device)  # [B] users still drafting
        drafts, draft_scores, draft_logits, ran = [], [], [], []
        beam_users = None if all_beams else active
        for j in range(self.n_digits):
            mask = DraftMask(draft_allowed, drafted)
            if j > 0 and not self.no_guided_redrafting:  # eq. 3: only the items under a beam prefix of B_j
                beams = self._advance(beam_steps, beams, j, beam_users)
                mask = self._guided(mask, j, beam_nodes(self.prefix_index, beams))
            items, logits = session.topk(self.draft_size, mask)  # [B, δ], 0 = none
            items = items.masked_fill(~active.unsqueeze(1), 0)
            draft_logits.append(logits.float().masked_fill(items == 0, -math.inf) / self.drafter_temperature)
            ran.append(active.clone())
            drafted.scatter_(1, items, True)  # column 0 (padding) is never draftable anyway
            unverified = None if verify_unseen else ~seen[items]
            scores = self._verify(enc, items, seen, active, complete, unverified)  # [B, δ]
            drafts.append(items)
            draft_scores.append(scores)
            n_strict += ((items != 0) & (scores > strict[items])).sum(dim=1)
            if not self.no_adaptive_exit:
                active &= n_strict < self.topk
                if not bool(active.any()):  # adaptive exit: the one host sync per round
                    break
        short = torch.ones_like(active) if all_beams else active
        cand = torch.stack(drafts, dim=1)  # [B, R, δ]
        cand_text = None
        if text:  # s_t = (cos − c̄) / τ, on the drafter's scale, of the unseen drafts (the only ones weighed by it)
            unseen_cand = cand.masked_fill(seen[cand], 0).flatten(1)
            cand_text = self.text_prior.cosines(item_seq, item_seq_len, unseen_cand).view(cand.shape)
            cand_text = cand_text.float() / self.drafter_temperature
        return _Rounds(cand, torch.stack(draft_scores, dim=1), torch.stack(draft_logits, dim=1), cand_text,
                       beam_logits, torch.stack(ran, dim=1), beam_steps, beams, seen, short, session)

    def _unseen_pool(self, item_seq, item_seq_len, rounds: "_Rounds", ratios: List[float], allowed) -> dict:
        """``rank_all_unseen``: for each β/α of ``ratios``, each user's K best allowed unseen items by
        s_d + (β/α)·s_t, and those logits. A user's unseen items all share v_u and η·ρ_u in the joint key, so these
        K hold every unseen item the user's list can take at any setting with that ratio."""
        unseen = torch.nonzero(~rounds.seen).squeeze(1)
        unseen = unseen[unseen != 0]  # [m] the unseen items (0 is padding)
        n_users = item_seq.size(0)
        logits = rounds.session.catalog_scores(unseen).float() / self.drafter_temperature  # [B, m] s_d
        texts = None
        if any(r > 0 for r in ratios):
            texts = self.text_prior.cosines(item_seq, item_seq_len, unseen.expand(n_users, -1)).float()
            texts = texts / self.drafter_temperature  # [B, m] s_t
        ok = None if allowed is None else (allowed[unseen] if allowed.dim() == 1 else allowed[:, unseen])
        pool, k = {}, min(self.topk, unseen.numel())
        for ratio in ratios:
            key = logits if ratio == 0 else logits + ratio * texts
            if ok is not None:
                key = key.masked_fill(~ok, -math.inf)
            top = key.topk(k, dim=1)  # [B, K]
            pool[ratio] = (unseen[top.indices].masked_fill(top.values == -math.inf, 0), top.values)
        return pool

    def _guided(self, mask: DraftMask, depth: int, nodes: torch.Tensor) -> DraftMask:
        """``mask`` restricted to the items under the beam prefixes ``nodes`` [B, β] of B_depth: their list
        (:attr:`DraftMask.candidates`, scored alone) while every user's share of the catalog is at most
        1/``GUIDED_LIST_SHARE``, else a ``[B, n]`` mask (few codes per digit: B_1 covers most of the catalog)."""
        if int(self.prefix_index.count_under(depth, nodes).max()) * GUIDED_LIST_SHARE <= self.n_items:
            return mask._replace(candidates=self.prefix_index.items_under(depth, nodes))
        under = self.prefix_index.under_mask(depth, nodes)
        return mask._replace(allowed=under if mask.allowed is None else under & mask.allowed)

    def _output(self, rounds: "_Rounds", setting: "Thresholds", allowed, subset_ranking: bool) -> SpecGROutput:
        """The top-K of ``rounds`` at thresholds ``setting``: the rounds it would have run, its accepted drafts,
        the fill (:meth:`_cut`) and, for a joint ranking, the columns it ranks (:meth:`_joint_columns`): both are
        reused by the joint settings of the same γ (and β/α) that follow in a grid, which then only rank."""
        cut = self._cut(rounds, setting, subset_ranking)
        seen = rounds.seen
        if setting.joint:  # the list: its top-K, already in order
            items, item_scores, listed = self._rank_joint(rounds, cut, setting, allowed)  # [B, K] each
        else:
            items, item_scores, ok = self._rank(cut.cand, cut.scores, cut.accepted, cut.fill, allowed)  # [B, 2K] each
            _, cols, listed = padded_topk(item_scores.masked_fill(~ok, -math.inf), self.topk, stable=True)  # the list
            items, item_scores = items.gather(1, cols), item_scores.gather(1, cols)
        stats = replace(cut.stats, n_beam_steps=0 if rounds.beams is None else rounds.beams.depth,
                        n_output=int(listed.sum()), n_output_unseen=int((listed & ~seen[items]).sum()))
        return SpecGROutput(self.n_items, items, item_scores, listed, cut.cand, cut.scores, cut.accepted, stats)

    def _cut(self, rounds: "_Rounds", setting: "Thresholds", subset_ranking: bool) -> "_Cut":
        """The rounds a user runs at ``setting``'s γ (γ_u too for the paper's ranking), its accepted drafts and the
        fill. A joint ranking's is kept for the joint settings with the same γ that follow (``rounds.joint_gamma``,
        one γ at a time: a grid runs γ outermost, so each is computed once; any other order only computes again)."""
        if setting.joint and rounds.joint_gamma is not None and rounds.joint_gamma.gamma == setting.seen:
            return rounds.joint_gamma.cut
        cand, seen = rounds.cand, rounds.seen  # [B, R, δ], [n]
        n_users, device = cand.size(0), cand.device
        gamma = setting.per_item(seen)[cand]  # [B, R, δ] γ of each draft's item
        accepted = (cand != 0) & (rounds.cand_scores > gamma)  # [B, R, δ]
        counted = accepted  # [B, R, δ] what the adaptive exit counts
        if setting.joint:  # unseen drafts are all candidates and never counted (see Thresholds)
            unseen_draft = (cand != 0) & ~seen[cand]
            counted = accepted & ~unseen_draft
            accepted = counted | unseen_draft
        used = torch.ones(cand.shape[:2], dtype=torch.bool, device=device)  # [B, R] rounds run at this γ
        if not self.no_adaptive_exit:
            used[:, 1:] = counted.sum(dim=2).cumsum(dim=1)[:, :-1] < self.topk
        gamma_cand = cand.masked_fill(~used.unsqueeze(2), 0)
        gamma_scores = rounds.cand_scores.masked_fill(~used.unsqueeze(2), -math.inf)
        accepted &= used.unsqueeze(2)
        fill = None
        if not subset_ranking and (setting.joint or bool((accepted.sum(dim=(1, 2)) < self.topk).any())):
            # complete beams B_l, decoded only for the users that may be short (a user with K accepted drafts at the
            # strictest thresholds has K at every looser setting too) or, for a joint ranking, for every user
            rounds.beams = fill = self._advance(rounds.beam_steps, rounds.beams, self.n_digits, rounds.short)
        if setting.joint and rounds.unseen_pool is not None:  # every unseen item ranks: drafted ones give way to it
            accepted = accepted & seen[cand]
        stats = SpecGRStats(n_users, int((gamma_cand != 0).sum()), int(accepted.sum()), int((used & rounds.ran).sum()))
        cut = _Cut(used, gamma_cand, gamma_scores, accepted, fill, stats)
        if setting.joint:  # another γ's cut and columns are dropped
            rounds.joint_gamma = _JointGamma(setting.seen, cut, {}, {})
        return cut

    def _advance(self, beam_steps: Iterator[BeamStep], beams: Optional[BeamStep], depth: int,
                 users: Optional[torch.Tensor] = None) -> BeamStep:
        """Consume the verifier's beam search up to B_depth; ``users`` [B] bool: only these users' beams are needed
        from now on, the others' stop being decoded (sent to the search when it takes it, see
        :func:`~recbole_specgr.inference.beam_search.constrained_beam_search`)."""
        send = getattr(beam_steps, "send", None)
        while beams is None or beams.depth < depth:
            try:  # a generator starts with next(); after that, send() narrows it
                beams = next(beam_steps) if beams is None or users is None or send is None else send(users)
            except StopIteration:
                raise ValueError(f"verifier.beam_search: stopped before depth {depth} (n_digits = {self.n_digits})")
        return beams

    def _verify(self, enc: EncoderState, items: torch.Tensor, seen: torch.Tensor,
                active: Optional[torch.Tensor] = None, beams: Optional[CompleteBeams] = None,
                unverified: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Eq. 2 scores of drafts ``items`` [B, δ] (0 = none -> -inf). Only the drafts that need it are decoded
        (:meth:`_decode`): those of the users still drafting (``active`` [B], the others' rows are all -inf), not
        ``unverified`` ([B, δ] bool, V = NaN: a score nobody reads) and not found in the complete beams ``beams``
        (B_1 … B_l with their log-probs, see :func:`beam_log_probs`). Only the digits Eq. 2 reads are looked up or
        decoded: l for a seen item, l − 1 for an unseen one (all l in ablation 1.2)."""
        real = items != 0
        if active is not None:
            real &= active.unsqueeze(1)
        todo = real if unverified is None else real & ~unverified  # [B, δ]
        adjust = not self.no_likelihood_adjustment
        short = ~seen[items] & todo if adjust else torch.zeros_like(todo)  # [B, δ] unseen: l − 1 digits read
        log_probs = torch.full((*items.shape, self.n_digits), math.nan, device=items.device)  # [B, δ, l]
        if beams is not None:
            table, known = beam_log_probs(self.prefix_index, self.verifier.item2codes, beams, items)
            found = todo & (known >= self.n_digits - short.long())
            log_probs[found] = table[found]
            todo = todo & ~found
        if bool(todo.any()):
            self._decode(enc, items, todo & ~short, log_probs)
            self._decode(enc, items, todo & short, log_probs, self.n_digits - 1)
        scores = verification_scores(log_probs, ~seen[items], adjust=adjust)
        return scores.masked_fill(~real, -math.inf)

    def _decode(self, enc: EncoderState, items: torch.Tensor, todo: torch.Tensor, log_probs: torch.Tensor,
                digits: Optional[int] = None) -> None:
        """Write the verifier's digit log-probs of the drafts ``todo`` ([B, δ] bool) of ``items`` [B, δ] into
        ``log_probs`` [B, δ, l]; ``digits``: only the first ``digits`` are read (the verifier is asked for those
        alone when it takes ``digits``). Each user's drafts to decode are packed to the front of its row, the rest
        0 (padding, which the verifier does not decode), and users are ordered by that count: a verifier that
        decodes a few users at a time (:meth:`~recbole_specgr.model.sequential_recommender.tiger.TIGER.digit_log_probs`
        on a CPU) then calls users of similar counts together, whose cross-attention blocks waste little
        (:class:`~recbole_specgr.model.t5.RowLayout`)."""
        rows = torch.nonzero(todo.any(dim=1)).squeeze(1)  # [B'] users with drafts to decode
        if rows.numel() == 0:
            return
        count = todo[rows].sum(dim=1)  # [B']
        by_count = count.argsort(descending=True, stable=True)
        rows, count = rows[by_count], count[by_count]
        decode = self.verifier.digit_log_probs  # one written without ``digits`` decodes every digit
        asked = {"digits": digits} if digits is not None and "digits" in inspect.signature(decode).parameters else {}
        mine = todo[rows]  # [B', δ]
        n = int(count[0])
        order = (~mine).to(torch.uint8).argsort(dim=1, stable=True)[:, :n]  # [B', n] the user's drafts first
        listed = torch.arange(n, device=items.device) < count.unsqueeze(1)  # [B', n]
        packed = items[rows].gather(1, order).masked_fill(~listed, 0)  # 0: padding, not decoded
        every = rows.numel() == items.size(0) and bool((rows == torch.arange(rows.numel(), device=rows.device)).all())
        part = log_probs[rows]  # [B', δ, l]
        part[mine] = decode(enc if every else enc.select(rows), packed, **asked).float()[listed]  # row-major order
        log_probs[rows] = part

    def _rank(self, cand, cand_scores, cand_accepted, beams: Optional[BeamStep], allowed: Optional[torch.Tensor]):
        """The final top-K: accepted drafts, then (if short) beam items or, in subset ranking, rejected drafts.

        Returns items [B, 2K], their output scores [B, 2K] and validity [B, 2K] (at most K valid per user). Output
        scores are V for drafts and the length-normalised beam score for beam items; without re-ranking they are
        ``-rank`` instead.
        """
        n_users, device = cand.size(0), cand.device
        cand, cand_scores, cand_accepted = cand.flatten(1), cand_scores.flatten(1), cand_accepted.flatten(1)  # [B, M]
        order = -torch.arange(cand.size(1), device=device, dtype=torch.float).expand_as(cand_scores)  # draft order
        key = order if self.no_reranking else cand_scores
        top_items, top_scores, top_ok = _top(cand, cand_scores, key.masked_fill(~cand_accepted, -math.inf), self.topk)
        if beams is not None:  # fill from complete beams B_l, skipping accepted and disallowed items
            fill_items = beams.items.masked_fill(~beams.valid, 0)  # [B, β]
            taken = torch.zeros(n_users, self.n_items, dtype=torch.bool, device=device)
            taken.scatter_(1, cand.masked_fill(~cand_accepted, 0), True)
            fill_ok = (fill_items != 0) & ~taken.gather(1, fill_items)
            if allowed is not None:
                fill_ok &= _allowed_at(allowed, fill_items)
            fill_scores = beams.scores.float() / beams.depth  # [B, β]
            beam_order = -torch.arange(fill_items.size(1), device=device, dtype=torch.float).expand_as(fill_scores)
            fill_key = (beam_order if self.no_reranking else fill_scores).masked_fill(~fill_ok, -math.inf)
        else:  # subset ranking: fill from rejected drafts
            fill_items, fill_scores = cand, cand_scores
            fill_key = key.masked_fill(cand_accepted | (cand == 0), -math.inf)
        fill_items, fill_scores, fill_ok = _top(fill_items, fill_scores, fill_key, self.topk)
        fill_ok &= torch.arange(self.topk, device=device) < (self.topk - top_ok.sum(dim=1, keepdim=True))
        items, scores, ok = (torch.cat(pair, dim=1) for pair in ((top_items, fill_items), (top_scores, fill_scores),
                                                                 (top_ok, fill_ok)))  # [B, 2K]
        if self.no_reranking:  # accepted drafts first, in draft order, then the fill
            scores = -(ok.long().cumsum(dim=1) - 1).float()
        return items, scores, ok


    def _rank_joint(self, rounds: "_Rounds", cut: "_Cut", setting: Thresholds, allowed: Optional[torch.Tensor]):
        """The joint top-K (α > 0, see :class:`Thresholds`): accepted drafts, complete beams B_l and the unseen pool
        together, by ``l·V + α·s_d`` with V = v_u for items not seen in training, which also get η·ρ_u. A seen item
        that is both drafted and a beam has the same l·V either way (its teacher-forced log-likelihood), so it is
        counted once, with its largest key, at its first column (:meth:`_joint_columns`).

        Keys split by item: a seen item's key depends on γ and α alone, so the top-K among the seen items' columns is
        found once per γ and α (:meth:`_joint_seen_top`); only the unseen items' keys, which every v_u, β and η moves,
        are made per setting (:meth:`_joint_unseen_keys`) and ranked together with those K (packed keys: equal keys
        in column order, as one stable ranking of all the columns orders them).

        Returns:
            items [B, K], their keys [B, K] and validity [B, K]: the list in the order of a stable descending sort
            of the keys (a NaN key, which finite weights do not make, would come first and not be valid).
        """
        columns = self._joint_columns(rounds, cut, setting, allowed)
        unseen_keys, unseen_cols = self._joint_unseen_keys(rounds, cut, columns, setting)  # [B, U] each
        packed = torch.cat([self._joint_seen_top(rounds, cut, columns, setting.draft_weight),
                            packed_keys(unseen_keys, unseen_cols)], dim=1)
        top_keys, top_cols, ok = padded_packed_topk(packed, self.topk)  # [B, K] each
        return columns.items.gather(1, top_cols), top_keys, ok

    def _joint_seen_top(self, rounds: "_Rounds", cut: "_Cut", columns: "_JointColumns", alpha: float) -> torch.Tensor:
        """[B, min(K, R·δ + β)] packed keys (:func:`~recbole_specgr.inference.drafting.packed_keys`) of the K best
        columns of seen items at ``cut``'s γ and draft weight α: accepted drafts and beams, keyed l·V + α·s_d, an
        item drafted and a beam once (its largest key, at its first column). No v_u, β or η changes them: kept for
        the settings of the same γ and α that follow."""
        kept = rounds.joint_gamma.seen_tops
        if alpha in kept:
            return kept[alpha]
        draft_keys = self.n_digits * cut.scores + alpha * rounds.cand_logits  # [B, R, δ] s_d, no β on seen drafts
        # (an accepted draft is in a round γ runs: the mask below leaves the other rounds' drafts out)
        beam_keys = columns.beam_scores + alpha * rounds.beam_logits  # [B, β]
        keys = torch.cat([draft_keys.masked_fill(~(cut.accepted & columns.seen_cand), -math.inf).flatten(1),
                          beam_keys.masked_fill(~(columns.beam_ok & columns.beam_seen), -math.inf)], dim=1)  # [B, F]
        n_cols = keys.size(1)  # a seen item's first column is among these F; only first columns receive a key
        best = torch.full_like(keys, -math.inf).scatter_reduce_(1, columns.first[:, :n_cols], keys, reduce="amax")
        kept[alpha] = top = packed_keys(best).topk(min(self.topk, n_cols), dim=1).values
        return top

    def _joint_unseen_keys(self, rounds: "_Rounds", cut: "_Cut", columns: "_JointColumns", setting: Thresholds):
        """The joint keys of the unseen items' columns at ``setting``: l·v_u + α·s_d (s_d + (β/α)·s_t in the columns)
        + η·ρ_u for drafts and the pool, l·V + α·s_d for a beam; −inf off the candidates (and on seen items).

        Returns:
            keys [B, U] with at most one finite key per item, and the column each ranks at, [B, U] (its item's
            first) or [U] (every column, when beams spell unseen items).
        """
        alpha, n_drafts = setting.draft_weight, cut.cand.shape[1] * cut.cand.shape[2]
        offset = setting.novelty_weight * rounds.novelty if setting.novelty_weight > 0 else None  # [B] η·ρ_u
        pool = columns.pool_logits is not None
        keys, spans = [], []
        if not pool or columns.unseen_beams:  # with the pool, no unseen draft is a candidate (see _cut)
            draft_keys = self.n_digits * torch.full_like(cut.scores, setting.unseen_score) + alpha * columns.cand_logits
            if offset is not None:
                draft_keys = draft_keys + offset[:, None, None]
            keys.append(draft_keys.masked_fill(~cut.accepted | columns.seen_cand, -math.inf).flatten(1))
            spans.append(slice(0, n_drafts))
        if columns.unseen_beams:
            beam_keys = columns.beam_scores + alpha * rounds.beam_logits  # [B, β]
            keys.append(beam_keys.masked_fill(~columns.beam_ok | columns.beam_seen, -math.inf))
            spans.append(slice(n_drafts, n_drafts + beam_keys.size(1)))
        if pool:
            pool_keys = self.n_digits * setting.unseen_score + alpha * columns.pool_logits  # [B, P]
            if offset is not None:
                pool_keys = pool_keys + offset[:, None]
            keys.append(pool_keys.masked_fill(~columns.pool_ok, -math.inf))
            spans.append(slice(columns.items.size(1) - pool_keys.size(1), None))
        keys = torch.cat(keys, dim=1)
        if columns.unseen_beams:  # an unseen item may hold a draft, a beam and a pool column: all C columns, deduplicated
            best = torch.full_like(keys, -math.inf).scatter_reduce_(1, columns.first, keys, reduce="amax")
            return best, torch.arange(keys.size(1), device=keys.device)
        # else each unseen item has one candidate column at most (drafts are distinct, the pool holds undrafted
        # items or, when it holds a drafted one, that draft is no candidate): it ranks at its item's first column
        return keys, torch.cat([columns.first[:, span] for span in spans], dim=1)

    def _joint_columns(self, rounds: "_Rounds", cut: "_Cut", setting: Thresholds,
                       allowed: Optional[torch.Tensor]) -> "_JointColumns":
        """The joint ranking's columns at ``setting``'s γ and β/α (kept with γ's ``cut`` for the settings that
        follow): the drafts of ``cut``, the beams of B_l, the pool of unseen items; and for each column the first
        column holding its item (an item may be drafted and a beam, or drafted and in the pool)."""
        text_ratio = setting.text_ratio
        kept = rounds.joint_gamma.columns  # the cut's γ is setting's (_cut ran first)
        if text_ratio in kept:
            return kept[text_ratio]
        cand, seen, beams = cut.cand, rounds.seen, cut.fill  # [B, R, δ], [n], B_l
        seen_cand = seen[cand]
        logits = rounds.cand_logits.masked_fill(~cut.used.unsqueeze(2), -math.inf)  # s_d
        if text_ratio > 0:  # + (β/α)·s_t on unseen drafts (see Thresholds)
            logits = logits + text_ratio * rounds.cand_text.masked_fill(seen[rounds.cand], 0.0)
        beam_items = beams.items.masked_fill(~beams.valid, 0)  # [B, β]
        beam_ok = beam_items != 0
        if allowed is not None:
            beam_ok &= _allowed_at(allowed, beam_items)
        beam_scores = beams.scores.float() * (self.n_digits / beams.depth)  # l·V of each beam's item
        items = [cand.flatten(1), beam_items]
        pool_items = pool_logits = pool_ok = None
        if rounds.unseen_pool is not None:
            pool_items, pool_logits = rounds.unseen_pool[text_ratio]  # [B, P]
            pool_ok = pool_items != 0
            items.append(pool_items)
        items = torch.cat(items, dim=1)  # [B, C]
        n_users, n_cols = items.shape
        cols = torch.arange(n_cols, device=items.device).expand(n_users, -1)
        first = torch.full((n_users, self.n_items), n_cols, device=items.device, dtype=torch.long)  # [B, n]
        first = first.scatter_reduce_(1, items, cols, reduce="amin").gather(1, items)  # [B, C]
        beam_seen = seen[beam_items]
        unseen_beams = bool((beam_ok & ~beam_seen).any())
        columns = _JointColumns(items, first, seen_cand, logits, beam_scores, beam_ok, beam_seen, unseen_beams,
                                pool_logits, pool_ok)
        kept[text_ratio] = columns
        return columns


def _check_unseen_weights(setting: Thresholds, text_prior: Optional[TextPrior]) -> None:
    """β and η of ``setting``: finite numbers ≥ 0, used by the joint ranking only; β also needs the text prior."""
    for key, value in (("specgr_text_weight", setting.text_weight), ("specgr_novelty_weight", setting.novelty_weight)):
        if not math.isfinite(value):
            raise ValueError(f"{key}: expected a finite number, got {value}")
    if setting.novelty_weight < 0:
        raise ValueError(f"specgr_novelty_weight: expected a number >= 0, got {setting.novelty_weight}")
    if setting.novelty_weight > 0 and not setting.joint:
        raise ValueError("specgr_novelty_weight: the novelty prior weighs unseen items in the joint ranking only; set "
                         "specgr_draft_weight > 0 (or specgr_novelty_weight: 0)")
    if setting.text_weight < 0:
        raise ValueError(f"specgr_text_weight: expected a number >= 0, got {setting.text_weight}")
    if setting.text_weight > 0 and not setting.joint:
        raise ValueError("specgr_text_weight: the text prior weighs unseen items in the joint ranking only; set "
                         "specgr_draft_weight > 0 (or specgr_text_weight: 0)")
    if setting.text_weight > 0 and text_prior is None:
        raise ValueError("specgr_text_weight: needs the item texts' prior, and this model has no item text "
                         "embeddings (dataset.item_text_emb)")
    if setting.text_ratio > torch.finfo(torch.float32).max:  # β/α weighs float32 logits
        raise ValueError(f"specgr_text_weight: β/α = {setting.text_weight:g}/{setting.draft_weight:g} overflows "
                         f"float32; expected a smaller specgr_text_weight or a larger specgr_draft_weight")


def _allowed_at(allowed: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``allowed`` (``[n]`` or ``[B, n]`` bool) at each user's ``items`` [B, M]: [B, M] bool."""
    return allowed[items] if allowed.dim() == 1 else allowed.gather(1, items)


def _top(items: torch.Tensor, scores: torch.Tensor, key: torch.Tensor, k: int):
    """The k entries of largest ``key`` per row (-inf = not eligible): items, scores, valid, each [B, k]. Equal keys
    (unseen items sharing their first l−1 digits have equal V) keep their column order, so the pick does not depend
    on how many columns a call has (a threshold grid's output equals a run at that threshold alone)."""
    if items.size(1) == 0:  # nothing to pick from: one "none" column for the padding to point at
        items, scores = items.new_zeros(items.size(0), 1), scores.new_full((scores.size(0), 1), -math.inf)
        key = scores
    _, cols, valid = padded_topk(key, k, stable=True)  # a few hundred candidates per row: a sort is cheap
    return items.gather(1, cols), scores.gather(1, cols), valid
