"""
recbole_specgr.model.sequential_recommender.tiger
#################################################
TIGER: a T5 encoder–decoder that reads the semantic IDs of a user's history and generates the next item's ID.

Reference:
    Shashank Rajput et al. "Recommender Systems with Generative Retrieval." NeurIPS 2023.
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv 2410.02939.
"""

from typing import Iterator, NamedTuple, Optional

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)

import torch
import torch.nn.functional as F
from torch import nn
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import KEYS_ADDED_LATER, SavedConfig, check_overrides
from recbole_specgr.data.catalog import ItemCatalog
from recbole_specgr.evaluation import EXCLUDED_ITEMS, ranked_scores
from recbole_specgr.inference.beam_search import constrained_beam_search, user_groups
from recbole_specgr.inference.drafting import padded_topk
from recbole_specgr.inference.interfaces import BeamStep, EncoderState
from recbole_specgr.inference.prefix_index import PrefixIndex
from recbole_specgr.inference.specgr import verification_scores
from recbole_specgr.model.t5 import T5, KVCache, T5Config
from recbole_specgr.tokenizer.semantic_id import get_semantic_ids


class SharedDecoding(NamedTuple):
    """What :meth:`TIGER.share_decoding` decodes once per user for every candidate of that user."""

    first: torch.Tensor  # [B, V] log P(digit 1 token) at the start position
    after_first: Optional[torch.Tensor]  # [B, C, V] log P(digit 2 token | first digit code c), None: not fanned out
    first_digits: Optional[torch.Tensor]  # [C] the first-digit tokens fanned out (None: not fanned out)
    cache: KVCache  # cross-attention per user; self-attention rows: one per user, or C per user (user-major)

    def select(self, users) -> "SharedDecoding":
        """The rows of some users only: ``users`` a slice or [B'] indices."""
        if isinstance(users, slice):
            users = torch.arange(self.first.shape[0], device=self.first.device)[users]
        fan = 1 if self.first_digits is None else self.first_digits.numel()
        rows = (users[:, None] * fan + torch.arange(fan, device=users.device)).flatten()
        return SharedDecoding(self.first[users], None if self.after_first is None else self.after_first[users],
                              self.first_digits, T5.reorder_cache(self.cache, rows, users))


class _FromShared(NamedTuple):
    """Beam-search state over the positions a :class:`SharedDecoding` holds (the start position and, when fanned out,
    the C first-digit positions): their log-probs and cache rows are read, not decoded again."""

    shared: SharedDecoding
    users: Optional[torch.Tensor]  # [B'] the users still searched (indices into the shared users), None = all
    row_users: torch.Tensor  # [R] the user of each beam row


def _untrimmed() -> bool:
    """Whether :meth:`TIGER._encoder_tokens` keeps the all-padding tail of a batch: under ``torch.compile``."""
    return torch.compiler.is_compiling()


def unseen_slots(share: float, length):
    """TIGER_C's number of unseen items in a list of ``length`` items (an int or a tensor of ints):
    floor(share·length + ½)."""
    return torch.floor(torch.as_tensor(length, dtype=torch.float64) * share + 0.5).long()


class TIGER(SequentialRecommender):
    r"""Generative retrieval over semantic IDs, implementing the :class:`~recbole_specgr.inference.interfaces.Verifier`
    protocol.

    Token layout (vocabulary V = 3 + l·C, C the codebook size, l = ``n_digits``):
    ``0`` = pad, ``1`` = bos, ``2`` = eos, then the digit tokens: code c of digit j (0-based) is token ``3 + j·C + c``,
    so each digit position owns its own C tokens.

    - Encoder input: ``[bos, ID_1 … ID_w, eos]``, ID_i the l tokens of the i-th history item and w ≤
      ``MAX_ITEM_LIST_LENGTH`` the most recent items (RecBole already keeps the most recent ones), right-padded.
    - Decoder input ``[bos, c_1 … c_{l−1}]``, targets ``[c_1 … c_l]``: IDs have a fixed length, so no eos is
      decoded.
    - Loss: token cross-entropy over the full vocabulary; log-probabilities at inference use the same normalisation.

    With ``item_text_input: True`` every token of item i's ID also receives ``W·e_i``, e_i the item's frozen text
    embedding (``dataset.item_text_emb``) and W a learned ``[d_text → d_model]`` map that starts at zero, so the model
    starts as plain TIGER (e.g. from a TIGER checkpoint) and learns how much of the text the quantised ID lost is
    worth using: the semantic IDs plus the continuous feature they were quantised from, as in LIGER (Yang et al.,
    "Unifying Generative and Dense Retrieval for Sequential Recommendation", 2024). Off by default (the paper's
    TIGER); items added later need their text embedding.

    Inference: :meth:`full_sort_predict` runs constrained beam search of width β = ``num_beams`` that can only spell
    items allowed by the default item mask (``tiger_allow_unseen: False``: items seen in training, the usual TIGER;
    True: all items) and scores the K = max(``topk``) best distinct items by length-normalised log-likelihood.

    TIGER_C (the TIGER paper's cold-start heuristic) is ``--model=TIGER --tiger_c_unseen_share=0.1``: unseen items
    whose first l−1 digits match a beam of B_{l−1}, ranked by that beam's length-normalised score, take a share of
    every top-k — floor(0.1·k + ½) of its slots (the 5th, 15th, … of the list), so R@10 and R@50 each see their own
    share; the other slots keep TIGER's seen items in order (more of them if too few unseen items match). The list
    is returned as scores −rank (its order is not by one score).

    Args:
        config: RecBole config.
        dataset: the training dataset; ``dataset.seen_item_mask`` [n] marks the items of the training rows (all real
            items count as seen when the dataset has no such attribute).
        item2codes: [n, l] semantic IDs (row 0 = −1); default: :func:`get_semantic_ids` ``(config, dataset).codes``.
        codebook_size: C, given together with ``item2codes``.
    """

    input_type = InputType.POINTWISE
    PAD, BOS, EOS, N_SPECIAL = 0, 1, 2, 3

    def __init__(self, config, dataset, item2codes: Optional[torch.Tensor] = None, codebook_size: Optional[int] = None):
        super().__init__(config, dataset)

        # load parameters info
        self.n_layers_enc = config["n_layers_enc"]
        self.n_layers_dec = config["n_layers_dec"]
        self.hidden_size = config["hidden_size"]
        self.n_heads = config["n_heads"]
        self.d_kv = config["d_kv"]
        self.inner_size = config["inner_size"]
        self.dropout_prob = config["dropout_prob"]
        self.rel_pos_buckets = config["rel_pos_buckets"]
        self.rel_pos_max_distance = config["rel_pos_max_distance"]
        _check_position_buckets(self.rel_pos_buckets // 4, self.rel_pos_max_distance, "the encoder's")
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.num_beams = config["num_beams"]
        self.allow_unseen = config["tiger_allow_unseen"]
        self.c_unseen_share = config["tiger_c_unseen_share"]
        self.text_input = bool(config["item_text_input"])
        topk = config["topk"]
        self.max_topk = max(topk) if isinstance(topk, (list, tuple)) else int(topk)
        if item2codes is None:
            semantic_ids = get_semantic_ids(config, dataset)
            item2codes, codebook_size = semantic_ids.codes, semantic_ids.codebook_size
        elif codebook_size is None:
            raise ValueError("codebook_size: required when item2codes is given")
        seen = getattr(dataset, "seen_item_mask", None)
        if seen is None:
            self.logger.warning("TIGER: dataset has no seen_item_mask; every real item counts as seen")
            seen = torch.ones(self.n_items, dtype=torch.bool)
            seen[0] = False
        self._check_args(item2codes, seen)
        self.n_digits = item2codes.shape[1]  # l
        if self.n_digits - 1 >= self.rel_pos_buckets // 2:  # the decoder's l positions reach its log-spaced buckets
            _check_position_buckets(self.rel_pos_buckets // 2, self.rel_pos_max_distance, "the decoder's")
        self.codebook_size = codebook_size  # C
        self.n_unseen_slots = int(unseen_slots(self.c_unseen_share, self.max_topk))
        text_emb = None
        if self.text_input:
            text_emb = getattr(dataset, "item_text_emb", None)
            if text_emb is None:
                raise ValueError("item_text_input: the dataset has no item text embeddings (set text_fields)")

        # define layers and loss
        offsets = self.N_SPECIAL + torch.arange(self.n_digits) * codebook_size
        self.register_buffer("digit_offsets", offsets, persistent=False)  # [l] first token of each digit
        self.set_items(item2codes, seen, text_emb)
        self.register_load_state_dict_post_hook(TIGER._follow_loaded_items)
        self.t5 = T5(
            T5Config(
                vocab_size=self.N_SPECIAL + self.n_digits * codebook_size,
                n_layers_enc=self.n_layers_enc,
                n_layers_dec=self.n_layers_dec,
                d_model=self.hidden_size,
                n_heads=self.n_heads,
                d_kv=self.d_kv,
                d_ff=self.inner_size,
                dropout=self.dropout_prob,
                rel_buckets=self.rel_pos_buckets,
                rel_max_distance=self.rel_pos_max_distance,
                eps=self.layer_norm_eps,
                init_std=self.initializer_range,
            )
        )

        self.text_adapter = None
        if self.text_input:
            self.text_adapter = nn.Linear(self.item_text_emb.shape[1], self.hidden_size, bias=False)  # W

        # parameters initialization: T5 initialises itself (normal(0, initializer_range)); W starts at zero
        if self.text_adapter is not None:
            nn.init.zeros_(self.text_adapter.weight)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", **overrides):
        """The trained model of a checkpoint written by this package's trainers, rebuilt from the file alone (no
        dataset), in eval mode on ``device``. ``overrides`` change config keys for inference (e.g.
        ``specgr_threshold``); the resulting settings are ``model.config``.

        Raises:
            ValueError: the file holds another model, or cannot be loaded safely (see :func:`compat.load_checkpoint`).
        """
        from recbole_specgr.utils import get_model

        checkpoint = load_checkpoint(path, map_location="cpu")
        config = SavedConfig({**KEYS_ADDED_LATER, **checkpoint["config"], **overrides, "device": torch.device(device)})
        model_class = get_model(config["model"])
        if not (isinstance(model_class, type) and issubclass(model_class, cls)):
            raise ValueError(f"{path}: holds a {config['model']} model, expected a {cls.__name__}")
        check_overrides(checkpoint["config"], overrides, "from_checkpoint's overrides")
        state, other = checkpoint["state_dict"], checkpoint.get("other_parameter") or {}
        catalog = ItemCatalog(state["seen_item_mask"], state.get("item_text_emb"))
        model = model_class(config, catalog, item2codes=state["item2codes"],
                            codebook_size=int(config["rqvae_codebook_size"]))
        model.load_state_dict(state)
        model.load_other_parameter(other)
        model.config = config
        return model.to(device).eval()

    def _check_args(self, item2codes: torch.Tensor, seen: torch.Tensor):
        if item2codes.dim() != 2 or item2codes.shape[0] != self.n_items:
            raise ValueError(f"item2codes: expected [{self.n_items}, l], got {tuple(item2codes.shape)}")
        if item2codes.shape[1] < 2:
            raise ValueError("item2codes: TIGER needs l >= 2 digits (the last one is the identification digit)")
        if seen.shape != (self.n_items,):
            raise ValueError(f"seen_item_mask: expected [{self.n_items}], got {tuple(seen.shape)}")
        if self.num_beams < self.max_topk:
            raise ValueError(f"num_beams: β = {self.num_beams} must be >= max(topk) = {self.max_topk}")
        if not 0.0 <= self.c_unseen_share < 1.0:
            raise ValueError(f"tiger_c_unseen_share: expected a share in [0, 1), got {self.c_unseen_share}")
        if self.c_unseen_share > 0 and self.allow_unseen:
            raise ValueError("tiger_c_unseen_share > 0 (TIGER_C) requires tiger_allow_unseen: False")

    def set_items(self, item2codes: torch.Tensor, seen_item_mask: torch.Tensor,
                  item_text_emb: Optional[torch.Tensor] = None):
        """(Re)build everything derived from the item table, on the model's device: the ``item2codes``,
        ``seen_item_mask`` (and with ``item_text_input`` the ``item_text_emb``) buffers, the unseen item ids, the
        prefix index and the default beam-search tables. Called by ``__init__``; call it again to add items without
        retraining (their IDs must keep l digits in [0, C)).

        Args:
            item2codes: [n, l] codes, row 0 = −1.
            seen_item_mask: [n] bool.
            item_text_emb: [n, d_text] text embeddings (row 0 zeros); required with ``item_text_input``.
        """
        device = self.digit_offsets.device
        n = item2codes.shape[0]
        if item2codes.dim() != 2 or item2codes.shape[1] != self.n_digits:
            raise ValueError(f"item2codes: expected [n, {self.n_digits}], got {tuple(item2codes.shape)}")
        if seen_item_mask.shape != (n,):
            raise ValueError(f"seen_item_mask: expected [{n}], got {tuple(seen_item_mask.shape)}")
        if self.text_input:
            width = self.item_text_emb.shape[1] if hasattr(self, "item_text_emb") else None
            if item_text_emb is None or item_text_emb.dim() != 2 or item_text_emb.shape[0] != n \
                    or (width is not None and item_text_emb.shape[1] != width):
                got = None if item_text_emb is None else tuple(item_text_emb.shape)
                raise ValueError(f"item_text_emb: item_text_input needs [{n}, {width or 'd'}] text embeddings, "
                                 f"got {got}")
        item2codes, seen = item2codes.long().to(device), seen_item_mask.bool().to(device)
        index = PrefixIndex(item2codes, self.codebook_size)  # validates the codes before anything changes
        if self.text_input:
            self.register_buffer("item_text_emb", item_text_emb.float().to(device).clone())  # [n, d_text]
        self.n_items = item2codes.shape[0]
        self.register_buffer("item2codes", item2codes.clone())  # [n, l]
        self.register_buffer("seen_item_mask", seen.clone())  # [n]
        unseen_ids = torch.nonzero(~seen[1:]).squeeze(1) + 1
        self.register_buffer("unseen_item_ids", unseen_ids, persistent=False)  # [U]
        self.prefix_index = index
        self._indexed_items = (item2codes.clone(), seen.clone())  # what the index and tables below were built from
        default_mask = torch.ones_like(seen) if self.allow_unseen else seen
        self.register_buffer("generable_item_mask", default_mask, persistent=False)  # [n] items beams may spell
        for j, table in enumerate(index.restrict(default_mask)):
            self.register_buffer(f"default_table_{j}", table, persistent=False)  # [P_j, C]

    @staticmethod
    def _follow_loaded_items(module: "TIGER", incompatible_keys) -> None:
        """After ``load_state_dict`` (also as a submodule): a checkpoint's ``item2codes`` / ``seen_item_mask`` are the
        ones its weights were trained with; when they differ from those this model was built with (e.g. a semantic-ID
        cache computed on another machine, whose text embeddings differ in the last bits and led the RQ-VAE to other
        codes), everything derived from them is rebuilt, so beam search spells the loaded IDs. Another
        ``seen_item_mask`` is another split, a ValueError (the loaders name the file first:
        :func:`~recbole_specgr.config.check_same_split`)."""
        codes, seen = (x.to(module.item2codes.device) for x in module._indexed_items)  # the model may have moved
        if not torch.equal(module.seen_item_mask, seen):
            raise ValueError("TIGER: the loaded seen_item_mask differs from the dataset's: these weights were trained "
                             "on another split (other split_* / cold_start_items settings or data)")
        if torch.equal(module.item2codes, codes):
            return
        n_changed = int((module.item2codes != codes).any(dim=1).sum())
        module.logger.warning(f"TIGER: the loaded item2codes differ from the dataset's semantic IDs for {n_changed} of "
                              f"{module.n_items} items; using the loaded ones (prefix index and beam tables rebuilt)")
        module.set_items(module.item2codes.clone(), module.seen_item_mask.clone(),
                         module.item_text_emb.clone() if module.text_input else None)

    # ---------------------------------------------------------------- tokens
    def _encoder_tokens(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
        """``[bos, ID_1 … ID_w, eos]``: [B, T] left-aligned item ids, [B] lengths -> tokens [B, S], mask [B, S].

        Eager, S stops at the batch's longest history (its all-padding tail dropped); under ``torch.compile`` S is
        always T·l + 2 (:func:`_untrimmed`): reading the longest length (a data-dependent int) splits the compiled
        graph into several and recompiles them for a new length until torch marks it dynamic. Padding is masked
        either way: the same states."""
        B, T = item_seq.shape
        l = self.n_digits
        ids = (self.item2codes[item_seq] + self.digit_offsets).masked_fill(item_seq[:, :, None] == 0, self.PAD)
        tokens = torch.full((B, T * l + 2), self.PAD, dtype=torch.long, device=item_seq.device)
        tokens[:, 0] = self.BOS
        tokens[:, 1:-1] = ids.view(B, T * l)
        eos_pos = 1 + item_seq_len.long() * l  # [B]
        tokens.scatter_(1, eos_pos[:, None], self.EOS)
        S = T * l + 2 if _untrimmed() else 2 + int(item_seq_len.max()) * l
        mask = torch.arange(S, device=item_seq.device)[None, :] <= eos_pos[:, None]  # [B, S]
        return tokens[:, :S], mask

    def _encoder_inputs(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                        text_adapter: Optional[nn.Module] = None):
        """:meth:`_encoder_tokens` plus, with ``item_text_input``, the text features added to the token embeddings:
        ``W·e_i`` on each of item i's l tokens, zero on bos/eos/padding ([B, S, D], else None). ``text_adapter``:
        another W (SpecGR++'s frozen item tower); default this model's."""
        tokens, mask = self._encoder_tokens(item_seq, item_seq_len)
        if not self.text_input:
            return tokens, mask, None
        adapter = self.text_adapter if text_adapter is None else text_adapter
        features = adapter(self.item_text_emb[item_seq]).repeat_interleave(self.n_digits, dim=1)  # [B, T·l, D]
        features = F.pad(features, (0, 0, 1, 1))[:, : tokens.shape[1]]  # bos first, eos/padding after: [B, S, D]
        return tokens, mask, features.masked_fill(tokens[..., None] <= self.EOS, 0.0)

    def _decoder_tokens(self, items: torch.Tensor):
        """[B, N] items -> decoder inputs ``[bos, c_1 … c_{l−1}]`` and targets ``[c_1 … c_l]``, tokens [B, N, l].

        Padding items (id 0, codes −1) give in-range but meaningless tokens; callers mask them.
        """
        targets = self.item2codes[items] + self.digit_offsets  # [B, N, l]
        bos = torch.full_like(targets[..., :1], self.BOS)
        return torch.cat([bos, targets[..., :-1]], dim=-1), targets

    # ---------------------------------------------------------------- Verifier protocol
    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> EncoderState:
        """Run the encoder once on ``[bos, ID_1 … ID_w, eos]``: [B, T], [B] -> hidden [B, S, D], mask [B, S]."""
        tokens, mask, extra = self._encoder_inputs(item_seq, item_seq_len)
        return EncoderState(self.t5.encode(tokens, mask, extra), mask)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of the semantic IDs of ``items`` [B, N] after each history: [B, N, l, V]."""
        enc = self.encode(item_seq, item_seq_len)
        dec_in, _ = self._decoder_tokens(items)
        return self.t5.decode(dec_in, enc.hidden, enc.mask)

    def share_decoding(self, enc: EncoderState, n_candidates: int) -> EncoderState:
        """``enc`` with the decoder positions that every candidate of a user shares decoded once
        (:class:`SharedDecoding`): the start position and, when C < ``n_candidates`` (and l ≥ 3), the position after
        each of the C first-digit codes — for a caller that scores candidates of the same users in several
        :meth:`digit_log_probs` calls (SpecGR's draft-verify rounds), which then decode only the later positions."""
        return enc if enc.shared is not None else enc._replace(shared=self._shared_decoding(enc, n_candidates))

    def _fans_out(self, n_candidates: int) -> bool:
        """Whether :meth:`share_decoding` for ``n_candidates`` per user also decodes the C first-digit positions."""
        return self.codebook_size < n_candidates and self.n_digits >= 3

    def _shared_decoding(self, enc: EncoderState, n_candidates: int) -> "SharedDecoding":
        B, device = enc.hidden.shape[0], enc.hidden.device
        second = None
        if self._fans_out(n_candidates):
            second = self.digit_offsets[0] + torch.arange(self.codebook_size, device=device)  # the C first digits
        start = torch.full((B,), self.BOS, dtype=torch.long, device=device)
        first, after_first, cache = self.t5.decode_fan_out(start, self.t5.start_cache(enc.hidden, enc.mask), second)
        first = first.float().log_softmax(dim=-1)  # [B, V]
        if after_first is not None:  # [B, C, V] as rest − logsumexp(rest) below: the same numbers as per candidate
            after_first = after_first.float()
            after_first = after_first - after_first.logsumexp(dim=-1, keepdim=True)
        return SharedDecoding(first, after_first, second, cache)

    def digit_log_probs(self, enc: EncoderState, cand_items: torch.Tensor,
                        digits: Optional[int] = None) -> torch.Tensor:
        """Teacher-forced log P(c_i | c_<i, X) of every digit of every candidate, all candidates of all users in one
        decoder call (on a CPU, of a few users at a time, counted by their real candidates:
        :func:`~recbole_specgr.inference.beam_search.user_groups`).
        The positions a user's candidates share are decoded once (:meth:`share_decoding`, reused from ``enc`` when
        it holds them).

        Args:
            enc: encoder output for B users.
            cand_items: [B, N] item ids (0 = padding: gets −inf and is not decoded, so users may have uneven counts).
            digits: only the first ``digits`` digits are wanted (Eq. 2 of an unseen item reads l − 1): the positions
                after them are not decoded and their entries are NaN; None = all l.
        Returns:
            [B, N, l] log-probabilities.
        """
        digits = self.n_digits if digits is None else int(digits)
        if not 1 <= digits <= self.n_digits:
            raise ValueError(f"digits: expected 1 … {self.n_digits} (n_digits), got {digits}")
        if cand_items.size(1) == 0:
            return enc.hidden.new_zeros(cand_items.size(0), 0, self.n_digits)
        fanned = enc.shared.after_first is not None if enc.shared is not None else self._fans_out(cand_items.size(1))
        positions = max(1, digits - (2 if fanned else 1))  # decoded per candidate after the shared positions
        groups = user_groups(cand_items.size(0), (cand_items != 0).sum(dim=1) * positions, cand_items.device)
        if len(groups) > 1:  # a CPU call of few users at a time keeps the [rows, V] logits in the cache
            return torch.cat([self.digit_log_probs(enc.select(slice(start, end)), cand_items[start:end], digits)
                              for start, end in groups])
        shared = enc.shared if enc.shared is not None else self._shared_decoding(enc, cand_items.size(1))
        dec_in, targets = self._decoder_tokens(cand_items)  # [B, N, l] each, dec_in[..., 0] = bos
        known = [shared.first.gather(1, targets[..., 0]).unsqueeze(-1)]  # digit 1: [B, N, 1]
        rows = None  # continue from the user's start position
        if shared.after_first is not None:  # digit 2 read from the fanned-out first digits
            rows = T5.fan_out_rows(dec_in[..., 1], shared.first_digits)  # [B, N]
            after_first = shared.after_first.flatten(0, 1)  # [B·C, V]
            known.append(after_first[rows, targets[..., 1]].unsqueeze(-1))  # [B, N, 1]
        if digits > len(known):  # the positions of the digits wanted after the shared ones, of real candidates only
            real = cand_items != 0  # [B, N]
            rows = torch.arange(real.size(0), device=real.device)[:, None].expand_as(real) if rows is None else rows
            wanted = slice(len(known), digits)
            rest = torch.full((*real.shape, digits - len(known)), float("-inf"), device=real.device)  # [B, N, d]
            users = real.nonzero()[:, 0]  # [R], row-major: non-decreasing (none: decode_rows decodes nothing)
            logits = self.t5.decode_rows(dec_in[..., wanted][real], shared.cache, rows[real], users).float()
            rest[real] = logits.gather(-1, targets[..., wanted][real][..., None]).squeeze(-1) - logits.logsumexp(-1)
            known.append(rest)
        out = torch.cat(known, dim=-1)[..., :digits]
        if digits < self.n_digits:  # the digits not wanted: NaN
            out = torch.cat([out, out.new_full((*out.shape[:2], self.n_digits - digits), float("nan"))], dim=-1)
        return out.masked_fill(cand_items[..., None] == 0, float("-inf"))

    def beam_search(
        self,
        enc: EncoderState,
        beam_size: int,
        item_mask: Optional[torch.Tensor] = None,
        exclude: Optional[torch.Tensor] = None,
        keep_log_probs: bool = False,
    ) -> Iterator[BeamStep]:
        """Constrained beam search of width β = ``beam_size`` yielding B_1 … B_l (see
        :func:`~recbole_specgr.inference.beam_search.constrained_beam_search`).

        Args:
            enc: encoder output for B users.
            beam_size: β.
            item_mask: [n] bool, the items the beams may spell; default: seen items (all items when
                ``tiger_allow_unseen``). A non-default mask costs one pass over the prefix tables.
            exclude: [B, n] bool, items each user's beams must not spell (e.g. the history), so that no beam is spent
                on them; costs one pass over the items per digit.
            keep_log_probs: each step also holds the log-probabilities it decoded (:attr:`BeamStep.log_probs`).
        """
        if item_mask is None:
            tables = [getattr(self, f"default_table_{j}") for j in range(self.n_digits)]
            item_mask = self.generable_item_mask
        else:
            tables = self.prefix_index.restrict(item_mask)
        alive = None
        if exclude is not None:
            alive = self.prefix_index.alive_nodes(item_mask.to(exclude.device) & ~exclude)
        return constrained_beam_search(self, enc, beam_size, tables, alive, keep_log_probs=keep_log_probs)

    # ---------------------------------------------------------------- StepDecoder protocol (beam search driver)
    def start_decoding(self, enc: EncoderState):
        """A fresh cache, or, when ``enc`` holds the positions every candidate shares (:meth:`share_decoding`, as
        speculative inference does), a state that reads them (the search's first one or two digits)."""
        if isinstance(enc.shared, SharedDecoding):
            users = torch.arange(enc.hidden.shape[0], device=enc.hidden.device)
            return _FromShared(enc.shared, None, users)
        return self.t5.start_cache(enc.hidden, enc.mask)

    def decode_step(self, state, codes: Optional[torch.Tensor]):
        """Previous digit's codes [B·G] (None first) -> log P(next digit's code) [B·G, C] over the full vocabulary."""
        if isinstance(state, _FromShared):
            shared, rows = state.shared, state.row_users
            if codes is None:  # digit 1: the start position
                return shared.first[rows, self.N_SPECIAL : self.N_SPECIAL + self.codebook_size], state
            if shared.after_first is None:  # only the start position is shared: decode digit 2 from its cache
                state = T5.reorder_cache(shared.cache, rows, state.users)
            else:  # digit 2: the fanned-out position of each beam's first digit (all C first digits were decoded)
                rows = rows * shared.first_digits.numel() + codes
                start = self.N_SPECIAL + self.codebook_size
                log_probs = shared.after_first.flatten(0, 1)[rows, start : start + self.codebook_size]
                return log_probs, T5.reorder_cache(shared.cache, rows, state.users)
        j = state.length  # digits decoded so far
        if codes is None:
            mask = state.cross_mask  # [B, 1, 1, S]
            tokens = torch.full((mask.shape[0],), self.BOS, dtype=torch.long, device=mask.device)
        else:
            tokens = codes + self.digit_offsets[j - 1]
        logits, state = self.t5.decode_step(tokens, state)  # [B·G, V]
        start = self.N_SPECIAL + j * self.codebook_size
        log_probs = logits.float().log_softmax(dim=-1)[:, start : start + self.codebook_size]  # [B·G, C]
        return log_probs, state

    def reorder_decoding(self, state, rows: torch.Tensor, users: Optional[torch.Tensor] = None):
        if isinstance(state, _FromShared):
            kept = state.users if users is None else (users if state.users is None else state.users[users])
            return state._replace(users=kept, row_users=state.row_users[rows])
        return T5.reorder_cache(state, rows, users)

    # ---------------------------------------------------------------- RecBole contract
    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]  # [B]
        logits = self.forward(item_seq, item_seq_len, target[:, None])  # [B, 1, l, V]
        _, labels = self._decoder_tokens(target[:, None])  # [B, 1, l]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def verification_scores(self, log_probs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Eq. 2 of SpecGR (:func:`~recbole_specgr.inference.specgr.verification_scores`) for ``items`` [B, N] with
        digit log-probabilities [B, N, l] -> [B, N]."""
        return verification_scores(log_probs, ~self.seen_item_mask[items])

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.ITEM_ID][:, None]  # [B, 1]
        log_probs = self.digit_log_probs(self.encode(item_seq, item_seq_len), target)  # [B, 1, l]
        return self.verification_scores(log_probs, target).squeeze(1)  # [B]

    def full_sort_predict(self, interaction):
        """[B, n] scores: the K = max(topk) best distinct items get their length-normalised log-likelihood, −inf
        elsewhere (TIGER_C: see the class docstring). Items under ``interaction[EXCLUDED_ITEMS]`` ([B, n] bool, when
        present) take no beams, so K beams keep K items after excluding a user's history."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        excluded = interaction[EXCLUDED_ITEMS] if EXCLUDED_ITEMS in interaction else None
        steps = list(self.beam_search(self.encode(item_seq, item_seq_len), self.num_beams, exclude=excluded))
        final, K = steps[-1], self.max_topk
        items, scores = final.items, final.scores / self.n_digits  # [B, β] beams come sorted
        valid = final.valid
        if self.n_unseen_slots > 0 and self.unseen_item_ids.numel() > 0:
            unseen_items, unseen_scores = self._tiger_c_unseen(steps[-2], excluded)  # [B, K_u] each
            items, valid = self._tiger_c_list(items, valid, unseen_items, unseen_scores > float("-inf"))
            scores = -torch.arange(K, device=items.device, dtype=torch.float).expand(items.shape)  # list order
        keep = valid & (valid.long().cumsum(dim=1) <= K)  # the K best
        return ranked_scores(self.n_items, items, scores, keep)

    def _tiger_c_list(self, seen_items, seen_valid, unseen_items, unseen_valid):
        """TIGER_C's list of K: the unseen items take the slots where floor(share·k + ½) grows with the length k, so
        every top-k holds that many unseen items (e.g. share 0.1: the 5th, 15th, … slots); the seen beams (and
        unseen slots left without an unseen item) the rest, in order. Returns items, valid [B, K]."""
        K, device = self.max_topk, seen_items.device
        slot_is_unseen = torch.diff(unseen_slots(self.c_unseen_share, torch.arange(K + 1, device=device))) > 0
        unseen_rank = slot_is_unseen.long().cumsum(dim=0) - 1  # [K] which unseen item such a slot would take
        take_unseen = slot_is_unseen & (unseen_rank < unseen_valid.sum(dim=1, keepdim=True))  # [B, K]
        seen_rank = (~take_unseen).long().cumsum(dim=1) - 1  # [B, K]
        n_seen, n_unseen = seen_items.size(1), unseen_items.size(1)
        seen_pick = seen_rank.clamp(0, n_seen - 1)
        items = torch.where(take_unseen, unseen_items.gather(1, unseen_rank.clamp(0, n_unseen - 1).expand_as(seen_pick)),
                            seen_items.gather(1, seen_pick))
        valid = take_unseen | ((seen_rank < n_seen) & seen_valid.gather(1, seen_pick))
        return items, valid

    def _tiger_c_unseen(self, prefix_step: BeamStep, excluded: Optional[torch.Tensor] = None):
        """TIGER_C: the best unseen items whose (l−1)-digit prefix is a beam of B_{l−1}, scored by that beam's
        length-normalised score, skipping ``excluded`` [B, n] items. Returns item ids and scores [B, round(share·K)]
        (−inf where too few match)."""
        depth = self.n_digits - 1
        nodes = self.prefix_index.lookup(prefix_step.prefixes)  # [B, β] depth-(l−1) node ids, -1 for no beam
        n_nodes = self.prefix_index.n_nodes(depth)
        B = nodes.shape[0]
        table = torch.full((B, n_nodes + 1), float("-inf"), device=nodes.device)  # column n_nodes: sink for no-beams
        ok = prefix_step.valid & (nodes >= 0)
        table.scatter_(1, torch.where(ok, nodes, n_nodes), torch.where(ok, prefix_step.scores / depth, float("-inf")))
        unseen_nodes = self.prefix_index.item_nodes(depth)[self.unseen_item_ids]  # [U]
        candidate = table[:, unseen_nodes]  # [B, U]
        if excluded is not None:
            candidate = candidate.masked_fill(excluded[:, self.unseen_item_ids], float("-inf"))
        top, idx, _ = padded_topk(candidate, self.n_unseen_slots, stable=True)  # equal scores: by item id
        return self.unseen_item_ids[idx], top


def _check_position_buckets(n_exact: int, max_distance: int, whose: str) -> None:
    """Distances from ``n_exact`` up to ``rel_pos_max_distance`` share log-spaced buckets, so it must exceed
    ``n_exact`` (the buckets of the distances counted exactly: rel_pos_buckets // 4 in the bidirectional encoder,
    // 2 in the causal decoder); at or below it the far distances fell back into the near buckets, or out of range."""
    if max_distance <= n_exact:
        raise ValueError(f"rel_pos_max_distance: expected more than {n_exact}, {whose} exact distances for "
                         f"rel_pos_buckets, got {max_distance}")
