"""
recbole_specgr.model.sequential_recommender.unisrec
###################################################
UniSRec, an inductive text-based sequential recommender, used as a baseline and as SpecGR_Aux's drafter.

Reference:
    Yupeng Hou et al. "Towards Universal Sequence Representation Learning for Recommender Systems." KDD 2022.
    arXiv:2206.05941.

    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation" (SpecGR).
    arXiv:2410.02939, Section 3.3.1 (an auxiliary model as drafter).

Items carry no ID embedding: an item is its frozen text embedding ``dataset.item_text_emb[i]`` passed through a
parametric-whitening mixture-of-experts adaptor. Items that never occur in training therefore get vectors from their
text alone, and items added after training can be scored through :meth:`UniSRec.text_item_vectors`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder

from recbole_specgr import compat


class PWLayer(nn.Module):
    """One parametric-whitening expert: ``(dropout(x) - b) W`` (UniSRec eq. 3).

    Args:
        input_size (int): text embedding size d (``plm_size``).
        output_size (int): hidden size D.
        dropout (float): dropout probability on the text embedding.
    """

    def __init__(self, input_size, output_size, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.bias = nn.Parameter(torch.zeros(input_size))  # b, the learned centre
        self.lin = nn.Linear(input_size, output_size, bias=False)  # W

    def forward(self, x):
        """[..., d] -> [..., D]"""
        return self.lin(self.dropout(x) - self.bias)


class MoEAdaptor(nn.Module):
    """Mixture of whitening experts: ``sum_k g_k(x) * (x - b_k) W_k`` with ``g = softmax(x W_gate)``.

    The gate is initialised to zero, so every expert starts with weight 1 / n_exps. Parameter names follow the original
    UniSRec release (``experts.<k>.bias``, ``experts.<k>.lin.weight``, ``w_gate``) so that its adaptor weights load.

    Args:
        n_exps (int): number of experts.
        input_size (int): text embedding size d.
        output_size (int): hidden size D.
        dropout (float): dropout probability inside each expert.
    """

    def __init__(self, n_exps, input_size, output_size, dropout=0.0):
        super().__init__()
        self.experts = nn.ModuleList([PWLayer(input_size, output_size, dropout) for _ in range(n_exps)])
        self.w_gate = nn.Parameter(torch.zeros(input_size, n_exps))

    def forward(self, x):
        """[..., d] -> [..., D]"""
        gates = F.softmax(x @ self.w_gate, dim=-1)  # [..., E]
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=-2)  # [..., E, D]
        return (gates.unsqueeze(-1) * expert_out).sum(dim=-2)  # [..., D]


class UniSRec(SequentialRecommender):
    r"""UniSRec trained inductively on the target dataset (the paper's ``inductive_ft`` setting).

    Pipeline: item text embedding ``t_i`` (frozen, ``[n, d]``) → MoE adaptor → ``e_i`` ``[D]``; the sequence
    ``e_{i_1} … e_{i_T}`` plus positional embeddings → SASRec transformer → last position's hidden state ``s``;
    score ``cos(s, e_i) / τ``.

    Training uses cross-entropy over the items seen in training only (``dataset.seen_item_mask``): unseen items are
    left out of the softmax, so nothing is learned about them from training labels, while
    :meth:`full_sort_predict` scores every item, unseen ones included, from its text.

    Implements :class:`recbole_specgr.inference.interfaces.Drafter` (``sequence_vectors`` / ``item_vectors``, both
    L2-normalised so that the inner product is the cosine). Row 0 of :meth:`item_vectors` is the padding item; callers
    that rank all items must mask it, as :meth:`full_sort_predict` does.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]  # D
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.n_exps = config["n_exps"]
        self.adaptor_dropout_prob = config["adaptor_dropout_prob"]
        self.adaptor_layers = list(config["adaptor_layers"] or [config["plm_size"], config["hidden_size"]])
        self.temperature = config["temperature"]  # τ
        self.plm_size = config["plm_size"]  # d
        self.pretrained_path = config["pretrained_path"]

        if self.loss_type != "CE":
            raise ValueError(f"UniSRec: loss_type must be 'CE', got {self.loss_type!r}")
        if self.adaptor_layers != [self.plm_size, self.hidden_size]:
            raise ValueError(
                f"UniSRec: adaptor_layers must be [plm_size, hidden_size] = [{self.plm_size}, {self.hidden_size}], "
                f"got {self.adaptor_layers}"
            )
        if not self.temperature or self.temperature <= 0:
            raise ValueError(f"UniSRec: temperature must be > 0, got {self.temperature!r}")

        # load dataset info
        text_emb = self._check_item_tensor(dataset, "item_text_emb", (self.n_items, self.plm_size))
        seen = self._check_item_tensor(dataset, "seen_item_mask", (self.n_items,)).bool()
        seen_items = seen.nonzero(as_tuple=True)[0]  # [S] ids of the items in the training softmax
        seen_column = torch.full((self.n_items,), -1, dtype=torch.long)  # item id -> column in the softmax, -1 unseen
        seen_column[seen_items] = torch.arange(len(seen_items))
        # Data, not weights: kept out of the state dict so a checkpoint stays valid when items are added.
        self.register_buffer("plm_embedding", text_emb.float(), persistent=False)  # [n, d], row i = item id i
        self.register_buffer("seen_items", seen_items, persistent=False)  # [S]
        self.register_buffer("seen_column", seen_column, persistent=False)  # [n]

        # define layers and loss
        self.moe_adaptor = MoEAdaptor(self.n_exps, self.plm_size, self.hidden_size, self.adaptor_dropout_prob)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.loss_fct = nn.CrossEntropyLoss()

        # parameters initialization
        self.apply(self._init_weights)
        if self.pretrained_path:
            self._load_pretrained(self.pretrained_path)

    @staticmethod
    def _check_item_tensor(dataset, name, shape):
        value = getattr(dataset, name, None)
        if value is None:
            raise ValueError(f"UniSRec: dataset.{name} is missing (use InductiveSequentialDataset)")
        value = torch.as_tensor(value)
        if tuple(value.shape) != shape:
            raise ValueError(f"UniSRec: dataset.{name} has shape {tuple(value.shape)}, expected {shape}")
        return value

    def _init_weights(self, module):
        """SASRec's initialisation; the adaptor's biases and gate stay at zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def _load_pretrained(self, path):
        """Load adaptor / encoder weights (e.g. from UniSRec pre-training); other keys are reported and skipped."""
        state = compat.load_checkpoint(path, map_location="cpu")
        state = state.get("state_dict", state)
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k in own}
        result = self.load_state_dict(kept, strict=False)
        self.logger.info(
            f"UniSRec: loaded {len(kept)} tensors from {path}; skipped {sorted(set(state) - set(kept))}; "
            f"left as initialised {sorted(result.missing_keys)}"
        )

    def forward(self, item_seq, item_seq_len):
        """Encode sequences.

        Args:
            item_seq (torch.LongTensor): ``[B, T]`` item ids, left-aligned, 0-padded.
            item_seq_len (torch.LongTensor): ``[B]`` number of real items.

        Returns:
            torch.Tensor: ``[B, D]`` hidden state at the last real position (not normalised).
        """
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        position_emb = self.position_embedding(position_ids).unsqueeze(0)  # [1, T, D]
        item_emb = self.moe_adaptor(self.plm_embedding[item_seq])  # [B, T, D]
        input_emb = self.dropout(self.LayerNorm(item_emb + position_emb))  # [B, T, D]
        attention_mask = self.get_attention_mask(item_seq)  # [B, 1, T, T]
        output = self.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=True)[-1]  # [B, T, D]
        return self.gather_indexes(output, item_seq_len - 1)  # [B, D]

    def sequence_vectors(self, item_seq, item_seq_len):
        """Drafter query vectors: ``[B, T], [B] -> [B, D]``, L2-normalised."""
        return F.normalize(self.forward(item_seq, item_seq_len), dim=-1)

    def item_vectors(self, item_ids=None):
        """Drafter item vectors from text: ``[N]`` ids (default: all n items, unseen included) -> ``[N, D]``,
        L2-normalised. Row ``i`` of the default output is item id ``i`` (row 0 = padding)."""
        text_emb = self.plm_embedding if item_ids is None else self.plm_embedding[item_ids]
        return F.normalize(self.moe_adaptor(text_emb), dim=-1)

    def text_item_vectors(self, text_emb):
        """Item vectors for items given only by their text embeddings (e.g. added after training).

        Args:
            text_emb (torch.Tensor): ``[M, d]`` text embeddings from the same encoder as ``dataset.item_text_emb``.

        Returns:
            torch.Tensor: ``[M, D]`` L2-normalised, comparable with :meth:`sequence_vectors`.
        """
        if text_emb.dim() != 2 or text_emb.size(-1) != self.plm_size:
            raise ValueError(f"UniSRec: text_emb must be [M, {self.plm_size}], got {tuple(text_emb.shape)}")
        text_emb = text_emb.to(device=self.plm_embedding.device, dtype=self.plm_embedding.dtype)
        return F.normalize(self.moe_adaptor(text_emb), dim=-1)

    def calculate_loss(self, interaction):
        """Temperature-scaled cross-entropy over the seen items only.

        A target outside the seen items (impossible for a training split) maps to column -1 and makes
        ``cross_entropy`` raise.
        """
        item_seq = interaction[self.ITEM_SEQ]  # [B, T]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        seq_vec = self.sequence_vectors(item_seq, item_seq_len)  # [B, D]
        seen_vec = self.item_vectors(self.seen_items)  # [S, D]
        logits = seq_vec @ seen_vec.t() / self.temperature  # [B, S]
        return self.loss_fct(logits, self.seen_column[pos_items])

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        test_item = interaction[self.ITEM_ID]  # [B]
        seq_vec = self.sequence_vectors(item_seq, item_seq_len)  # [B, D]
        return (seq_vec * self.item_vectors(test_item)).sum(dim=-1) / self.temperature  # [B]

    def full_sort_predict(self, interaction):
        """Scores of every item, unseen ones included: ``[B, n]``; the padding item 0 gets -inf."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_vec = self.sequence_vectors(item_seq, item_seq_len)  # [B, D]
        scores = seq_vec @ self.item_vectors().t() / self.temperature  # [B, n]
        scores[:, 0] = -torch.inf
        return scores
