"""
recbole_specgr.model.sequential_recommender.specgrpp
####################################################
SpecGR++: TIGER whose own encoder is the drafter (self-speculative generative recommendation).

The T5 encoder embeds a history ``[bos, ID_1 … ID_w, eos]`` and a single item ``[bos, ID_i, eos]`` into one space
(mean pooling over real tokens, a linear projection head, L2 normalisation), so items never seen in training (and
items added after training) are drafted from their semantic IDs alone. Training has two stages (driven by
:class:`~recbole_specgr.trainer.SpecGRPPTrainer`):

1. pretraining, ``L = λ1·L_CL + L_Gen``: L_CL is the in-batch item–sequence contrastive loss with temperature τ;
2. fine-tuning, ``L' = λ2·L_CE + L_Gen``: L_CE is the cross-entropy of the sequence vector against the vectors of all
   seen items (or a sampled subset), computed once at the start of the stage by a frozen snapshot of the stage-1
   encoder (the *item tower*). That snapshot keeps embedding items afterwards, for drafting at inference and for new
   items, so sequences and items stay in the space the sequence encoder was fine-tuned against.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939,
    Section 3.3.2.
"""

import dataclasses
import math
from typing import Optional

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)

import torch
import torch.nn.functional as F
from torch import nn

from recbole_specgr.compat import load_checkpoint
from recbole_specgr.inference.interfaces import EncoderState
from recbole_specgr.model.sequential_recommender.tiger import TIGER
from recbole_specgr.model.speculative import BUILD_LOCK, SpeculativeEvalMixin
from recbole_specgr.model.t5 import T5
from recbole_specgr.tokenizer.semantic_id import load_or_fit_tokenizer

ITEM_CHUNK = 4096  # items embedded per encoder call in item_vectors()


def in_batch_contrastive_loss(seq_vec, item_vec, targets, temperature, extra_vec=None, extra_ids=None):
    """L_CL: row b's positive is its own target item; the other rows' targets (and the optional extra items) are its
    negatives, except copies of its own target (same item id), which are masked out, and each negative item counts
    once (an in-batch target that is also an extra item is kept as the extra column only). With every seen item among
    the extras this is the full softmax over the seen items.

    Args:
        seq_vec (torch.Tensor): ``[B, P]`` sequence vectors.
        item_vec (torch.Tensor): ``[B, P]`` vectors of the target items, row b = target of row b.
        targets (torch.Tensor): ``[B]`` target item ids.
        temperature (float): τ.
        extra_vec (torch.Tensor, optional): ``[E, P]`` vectors of extra negative items (e.g. sampled seen items).
        extra_ids (torch.Tensor, optional): ``[E]`` their item ids.

    Returns:
        torch.Tensor: the mean cross-entropy over rows.
    """
    columns, column_ids = item_vec, targets
    if extra_vec is not None:
        columns, column_ids = torch.cat([item_vec, extra_vec]), torch.cat([targets, extra_ids])
    logits = seq_vec @ columns.t() / temperature  # [B, B + E]
    duplicate = targets[:, None] == column_ids[None, :]  # [B, B + E]
    if extra_ids is not None:  # in-batch targets that are extra items too are negatives there already
        duplicate[:, : len(targets)] |= torch.isin(targets, extra_ids)[None, :]
    duplicate.fill_diagonal_(False)  # the diagonal of the first B columns: each row's own positive
    labels = torch.arange(len(targets), device=targets.device)
    return F.cross_entropy(logits.masked_fill(duplicate, -math.inf), labels)


def mean_pool(hidden, mask):
    """``[B, S, D]`` states, ``[B, S]`` bool mask -> ``[B, D]`` mean over the real tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, S, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class SpecGRPP(SpeculativeEvalMixin, TIGER):
    r"""TIGER plus an embedding head on its encoder; implements both the Verifier and the Drafter protocol, and
    ``full_sort_predict`` is speculative inference with itself in both roles.

    Config keys (besides TIGER's): ``specgrpp_lambda_cl`` (λ1), ``specgrpp_lambda_ce`` (λ2),
    ``specgrpp_temperature`` (τ), ``specgrpp_projection_size``, ``specgrpp_finetune_epochs`` (0: no item tower),
    ``specgrpp_num_candidates``, ``specgrpp_cl_negatives`` (extra sampled negatives of L_CL beyond the batch),
    and the ``specgr_*`` inference keys of
    :meth:`~recbole_specgr.inference.specgr.SpeculativeRecommender.from_config`.

    Checkpoints carry, in ``other_parameter``, the raw item tokens (``item_tokens``, index = item id) and the fitted
    semantic-ID tokenizer (``tokenizer_state``), so that :mod:`recbole_specgr.new_items` can add items without the
    dataset, and the text prior's centre c̄ (``text_prior_center``, computed from the training rows).

    Args:
        config: RecBole config.
        dataset: the training dataset (``seen_item_mask``, ``item_text_emb`` for the tokenizer, ``field2id_token``).
        item2codes: [n, l] semantic IDs; default: fitted (or loaded from the cache) on ``dataset``.
        codebook_size: C, given together with ``item2codes``.
    """

    other_parameter_name = ["item_tokens", "tokenizer_state", "text_prior_center"]

    def __init__(self, config, dataset, item2codes: Optional[torch.Tensor] = None, codebook_size: Optional[int] = None):
        tokenizer = None
        if item2codes is None:
            tokenizer = load_or_fit_tokenizer(config, dataset)
            item2codes, codebook_size = tokenizer.semantic_ids.codes, tokenizer.codebook_size
        super().__init__(config, dataset, item2codes=item2codes, codebook_size=codebook_size)

        # load parameters info
        self.lambda_cl = float(config["specgrpp_lambda_cl"])  # λ1
        self.lambda_ce = float(config["specgrpp_lambda_ce"])  # λ2
        self.temperature = float(config["specgrpp_temperature"])  # τ
        self.projection_size = int(config["specgrpp_projection_size"] or self.hidden_size)
        self.finetune_epochs = int(config["specgrpp_finetune_epochs"] or 0)
        self.num_candidates = int(config["specgrpp_num_candidates"] or 0)  # 0: all seen items
        self.cl_negatives = int(config["specgrpp_cl_negatives"] or 0)  # extra L_CL negatives per batch
        self.eval_role = "speculative"  # or "drafter": full_sort_predict ranks all items by the drafter alone
        self._drafter_cache = None  # (weights version, [n, P] item vectors) for eval_role "drafter"
        if self.temperature <= 0 or self.lambda_cl < 0 or self.lambda_ce < 0:
            raise ValueError(
                f"specgrpp_temperature must be > 0 and specgrpp_lambda_cl / specgrpp_lambda_ce >= 0, got "
                f"{self.temperature} / {self.lambda_cl} / {self.lambda_ce}"
            )
        if self.num_candidates < 0:
            raise ValueError(
                f"specgrpp_num_candidates: expected an int >= 0 (0 = all seen items), got {self.num_candidates}"
            )
        if self.cl_negatives < 0:
            raise ValueError(f"specgrpp_cl_negatives: expected an int >= 0, got {self.cl_negatives}")
        item_field_tokens = getattr(dataset, "field2id_token", {}).get(self.ITEM_ID)
        self.item_tokens = None if item_field_tokens is None else [str(t) for t in item_field_tokens]
        self.tokenizer_state = None if tokenizer is None else tokenizer.state_dict()

        # define layers and loss
        self.projection = nn.Linear(self.hidden_size, self.projection_size)
        self.item_tower = None  # frozen stage-1 encoder + projection, filled by start_finetune()
        if self.finetune_epochs > 0:
            tower = T5(dataclasses.replace(self.t5.config, n_layers_dec=0))
            tower.lm_head = None  # encode() never reaches the output head
            projection = nn.Linear(self.hidden_size, self.projection_size)
            self.item_tower = nn.ModuleDict({"encoder": tower, "projection": projection})
            if self.text_adapter is not None:
                self.item_tower["text_adapter"] = nn.Linear(self.text_adapter.in_features, self.hidden_size, bias=False)
            self.item_tower.requires_grad_(False)
        self.register_buffer("item_tower_active", torch.zeros((), dtype=torch.bool))  # True from stage 2 on
        self.finetuning = False  # Python mirror of item_tower_active
        self._candidate_vectors = None  # stage 2: (seen ids [S], frozen vectors [S, P]), computed on first use

        # parameters initialization: T5 initialises itself; the projection head like T5's layers
        nn.init.normal_(self.projection.weight, std=self.initializer_range)
        nn.init.zeros_(self.projection.bias)
        self._init_speculative(config, dataset)

    def load_init_checkpoint(self, path, checkpoint=None):
        """``init_checkpoint`` (see :class:`~recbole_specgr.trainer.InductiveTrainer`): start from a trained TIGER,
        copying its whole T5 (same backbone sizes) after checking that it was trained on the same semantic IDs (its
        split is the trainer's check) — the SpecGR++ head stays as initialised, so stage 1 trains it from there — or
        from a trained SpecGR++, copying every weight, head included (e.g. stage 2 of a model trained with
        ``specgrpp_finetune_epochs: 0``: ``specgrpp_pretrain_epochs: 0`` here; its item tower, which such a model
        lacks, is filled when stage 2 starts). Stage 2 always fills the item tower from the encoder it starts with,
        so a stage-2 model trained further gets a tower of its fine-tuned encoder, not of its stage-1 one.
        ``checkpoint``: the file's contents when the caller has read them (the trainer has), else read here."""
        if checkpoint is None:
            checkpoint = load_checkpoint(path, map_location="cpu")
        state = checkpoint["state_dict"]
        model_name = checkpoint["config"]["model"] if "config" in checkpoint else None
        if model_name not in (None, "TIGER", "SpecGRPP"):
            raise ValueError(f"init_checkpoint: {path} holds a {model_name}, expected a TIGER or SpecGRPP checkpoint")
        if "item2codes" not in state or not torch.equal(state["item2codes"].cpu(), self.item2codes.cpu()):
            raise ValueError(f"init_checkpoint: {path} was trained on other semantic IDs (item2codes differs); train "
                             f"its {model_name or 'TIGER'} on this dataset with the same rqvae_* keys")
        if model_name == "SpecGRPP":
            self._load_specgrpp_state(path, state)
        else:
            t5_state = {k[len("t5."):]: v for k, v in state.items() if k.startswith("t5.")}
            try:
                self.t5.load_state_dict(t5_state)
            except RuntimeError as err:
                raise ValueError(f"init_checkpoint: {path} has another T5 backbone than this model's n_layers_* / "
                                 f"hidden_size / n_heads / d_kv / inner_size ({str(err).splitlines()[0]})") from None
        self.weights_changed()
        self.logger.info(f"SpecGRPP: {'all' if model_name == 'SpecGRPP' else 'T5'} weights loaded from the "
                         f"{model_name or 'TIGER'} checkpoint {path}")

    def _load_specgrpp_state(self, path, state):
        """Every weight of a SpecGR++ ``state``; only the item tower may be missing on one side (a model trained or
        built without stage 2)."""
        def tower(key):
            return key.startswith("item_tower.")

        mine = self.state_dict()
        wrong = [k for k in state if not tower(k) and (k not in mine or mine[k].shape != state[k].shape)]
        missing = [k for k in mine if not tower(k) and k not in state]
        if wrong or missing:
            raise ValueError(f"init_checkpoint: {path} is a SpecGRPP of other sizes or inputs than this model "
                             f"(hidden_size / layers / specgrpp_projection_size / item_text_input; keys "
                             f"{(wrong + missing)[:3]} differ)")
        if bool(state.get("item_tower_active", False)) and self.item_tower is None:
            raise ValueError(f"init_checkpoint: {path} is a SpecGRPP after stage 2, which ranks by its item tower; "
                             f"this model has none (set specgrpp_finetune_epochs > 0)")
        self.load_state_dict({k: v for k, v in state.items() if not tower(k) or k in mine}, strict=False)

    # ---------------------------------------------------------------- embeddings (Drafter protocol)
    def pool(self, enc: EncoderState, projection: Optional[nn.Module] = None) -> torch.Tensor:
        """Encoder states -> L2-normalised vectors: ``[B, S, D]`` -> ``[B, P]``."""
        projection = self.projection if projection is None else projection
        return F.normalize(projection(mean_pool(enc.hidden, enc.mask)), dim=-1)

    def sequence_vectors(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                         enc: Optional[EncoderState] = None) -> torch.Tensor:
        """``[B, T], [B] -> [B, P]``: the pooled encoding of ``[bos, ID_1 … ID_w, eos]``; ``enc``, this model's own
        :meth:`encode` of the same batch when the caller has it (speculative inference), is pooled as it is."""
        return self.pool(self.encode(item_seq, item_seq_len) if enc is None else enc)

    def _embed_items(self, item_ids: torch.Tensor, frozen: bool) -> torch.Tensor:
        """``[N]`` ids -> ``[N, P]`` vectors of ``[bos, ID_i, eos]`` from the live encoder or the item tower; padding
        rows are zero."""
        single = (item_ids[:, None], torch.ones_like(item_ids))
        if frozen:
            tokens, mask, extra = self._encoder_inputs(*single, text_adapter=self.item_tower["text_adapter"]
                                                       if self.text_adapter is not None else None)
            hidden = self.item_tower["encoder"].encode(tokens, mask, extra)
            vectors = self.pool(EncoderState(hidden, mask), self.item_tower["projection"])
        else:
            tokens, mask, extra = self._encoder_inputs(*single)
            vectors = self.pool(EncoderState(self.t5.encode(tokens, mask, extra), mask))
        return vectors.masked_fill((item_ids == 0)[:, None], 0.0)

    def item_vectors(self, item_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[N]`` ids (default: all n items, unseen and added ones included) -> ``[N, P]`` vectors, in chunks of
        ``ITEM_CHUNK`` items; from the item tower once stage 2 has started. Row 0 (padding) is zero."""
        if item_ids is None:
            item_ids = torch.arange(self.n_items, device=self.item2codes.device)
        parts = [self._embed_items(chunk, self.finetuning) for chunk in item_ids.split(ITEM_CHUNK)]
        return torch.cat(parts) if parts else self.projection.weight.new_zeros(0, self.projection_size)

    # ---------------------------------------------------------------- training
    def start_finetune(self):
        """Stage 2: copy the encoder and projection into the frozen item tower and drop the cached candidates."""
        if self.item_tower is None:
            raise ValueError("specgrpp_finetune_epochs: fine-tuning needs a model built with a value > 0")
        result = self.item_tower["encoder"].load_state_dict(self.t5.state_dict(), strict=False)
        if result.missing_keys:
            raise RuntimeError(f"SpecGRPP: item tower keys not found in the encoder: {result.missing_keys}")
        self.item_tower["projection"].load_state_dict(self.projection.state_dict())
        if self.text_adapter is not None:
            self.item_tower["text_adapter"].load_state_dict(self.text_adapter.state_dict())
        self.item_tower_active.fill_(True)
        self.finetuning = True
        self._candidate_vectors = None
        self.weights_changed()

    def load_state_dict(self, state_dict, strict=True, **kwargs):
        result = super().load_state_dict(state_dict, strict=strict, **kwargs)
        self.finetuning = bool(self.item_tower_active)
        self._candidate_vectors = None
        return result

    @torch.no_grad()
    def _frozen_candidates(self):
        """Seen item ids ``[S]`` (sorted) and their item-tower vectors ``[S, P]`` without dropout, computed once per
        stage."""
        if self._candidate_vectors is None:
            seen_ids = torch.nonzero(self.seen_item_mask).squeeze(1)
            was_training = self.item_tower.training
            self.item_tower.eval()
            self._candidate_vectors = (seen_ids, self.item_vectors(seen_ids))
            self.item_tower.train(was_training)
        return self._candidate_vectors

    def candidate_ce_loss(self, seq_vec: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_CE: cross-entropy of ``seq_vec`` [B, P] against the frozen vectors of all seen items, or of
        ``specgrpp_num_candidates`` uniformly sampled seen items plus the batch's targets. Targets must be seen."""
        seen_ids, vectors = self._frozen_candidates()  # [S], [S, P]
        columns = torch.searchsorted(seen_ids, targets)  # [B] column of each target among the seen items
        if 0 < self.num_candidates < len(seen_ids):
            sampled = torch.randint(len(seen_ids), (self.num_candidates,), device=targets.device)
            keep, columns = torch.unique(torch.cat([columns, sampled]), return_inverse=True)
            columns, vectors = columns[: len(targets)], vectors[keep]
        logits = seq_vec @ vectors.t() / self.temperature  # [B, S'] (S' = S or at most num_candidates + B)
        return F.cross_entropy(logits, columns)

    def calculate_loss(self, interaction):
        """``(λ·L_emb, L_Gen)``: λ1·L_CL in stage 1, λ2·L_CE in stage 2; the encoder runs once for both terms."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]  # [B]
        enc = self.encode(item_seq, item_seq_len)
        dec_in, labels = self._decoder_tokens(target[:, None])  # [B, 1, l]
        logits = self.t5.decode(dec_in, enc.hidden, enc.mask)  # [B, 1, l, V]
        gen = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        if self.finetuning:
            weight = self.lambda_ce
            emb = self.candidate_ce_loss(self.pool(enc), target) if weight > 0 else gen.new_zeros(())
        else:
            weight = self.lambda_cl
            emb = gen.new_zeros(())
            if weight > 0:
                item_vec = self._embed_items(target, frozen=False)  # [B, P], with gradients
                extra_ids = self._sample_seen(self.cl_negatives) if self.cl_negatives else None
                extra_vec = None if extra_ids is None else self._embed_items(extra_ids, frozen=False)
                emb = in_batch_contrastive_loss(self.pool(enc), item_vec, target, self.temperature, extra_vec,
                                                extra_ids)
        return weight * emb, gen

    def _sample_seen(self, n):
        """``[n]`` distinct seen item ids drawn uniformly (each negative counts once in L_CL); all seen items when n
        covers them (a small catalog then gets the full softmax over seen items)."""
        seen_ids = torch.nonzero(self.seen_item_mask).squeeze(1)
        if n >= len(seen_ids):
            return seen_ids
        return seen_ids[torch.randperm(len(seen_ids), device=seen_ids.device)[:n]]

    def full_sort_predict(self, interaction):
        """Speculative inference (``eval_role = "speculative"``), or with ``eval_role = "drafter"`` the drafter's own
        full ranking, ``[B, n]`` inner products of sequence and item vectors (how stage 1 is validated)."""
        if self.eval_role == "drafter":
            with BUILD_LOCK:  # once per weights, by one of the evaluation workers
                if self._drafter_cache is None or self._drafter_cache[0] != self._weights_version:
                    self._drafter_cache = (self._weights_version, self.item_vectors())  # [n, P]
                item_vectors = self._drafter_cache[1]
            item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
            return self.sequence_vectors(item_seq, item_seq_len) @ item_vectors.t()
        return super().full_sort_predict(interaction)

    # ---------------------------------------------------------------- inference
    def speculative_parts(self):
        return self, self, self.seen_item_mask

    def item_text_embeddings(self):
        """The item texts the model reads (``item_text_input``; items added later included), else None."""
        return self.item_text_emb if self.text_input else None

    def add_items(self, codes: torch.Tensor, text_emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Append m items after training as unseen items with semantic IDs ``codes`` [m, l] (e.g. from
        :meth:`~recbole_specgr.tokenizer.semantic_id.SemanticIDTokenizer.add_items`) and, with
        ``item_text_input``, their text embeddings ``text_emb`` [m, d_text].

        Returns:
            torch.Tensor: their item ids ``[m]`` (n … n + m − 1).
        """
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.item2codes.device)
        if codes.dim() != 2 or codes.shape[1] != self.n_digits:
            raise ValueError(f"codes: expected [m, {self.n_digits}], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes: expected values in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]")
        first = self.n_items
        item2codes = torch.cat([self.item2codes, codes])
        seen = torch.cat([self.seen_item_mask, self.seen_item_mask.new_zeros(len(codes))])
        text = None
        if self.text_input:
            text_emb = None if text_emb is None else torch.as_tensor(text_emb)
            if text_emb is None or tuple(text_emb.shape) != (len(codes), self.item_text_emb.shape[1]):
                got = None if text_emb is None else tuple(text_emb.shape)
                raise ValueError(f"text_emb: item_text_input needs [{len(codes)}, {self.item_text_emb.shape[1]}] "
                                 f"text embeddings of the new items, got {got}")
            text = torch.cat([self.item_text_emb, torch.as_tensor(text_emb).to(self.item_text_emb)])
        self.set_items(item2codes, seen, text)
        self._candidate_vectors = None
        self.weights_changed()
        return torch.arange(first, first + len(codes), device=codes.device)
