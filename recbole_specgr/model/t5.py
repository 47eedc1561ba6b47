"""
recbole_specgr.model.t5
#######################
A compact T5-style encoder–decoder in plain torch, read top to bottom, leaves first:
RelativePositionBias → Attention → FeedForward → EncoderBlock → DecoderBlock → T5Config → T5.

Pre-norm blocks with RMSNorm, T5 relative position buckets (encoder: bidirectional, decoder: causal; none in
cross-attention), ReLU feed-forward, ``F.scaled_dot_product_attention`` everywhere except the decoder's self-attention
at inference (:func:`few_keys_attention`).

Decoding one token at a time is cheap: cross-attention keys/values are computed once per encoder output
(:meth:`T5.start_cache`) and the decoder self-attention keys/values are cached (:class:`KVCache`). Decoder rows come in
*groups*: ``B·G`` rows where the ``G`` rows of one user (beams, or candidate items) share that user's encoder output.
Cross-attention never copies the encoder states ``G`` times: the ``G·T`` queries of a user attend to its ``S`` keys in
one ``[B, H, G·T, d_kv]`` call. Users with uneven numbers of rows (:class:`RowLayout`, :meth:`T5.decode_rows`) are
placed in such blocks for cross-attention alone; the rest of the decoder runs on their real rows.

Shapes: B users, G rows per user, T decoder length, S encoder length, D = d_model, H heads, V vocabulary.

Reference:
    Colin Raffel et al. "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer." JMLR 2020.
"""

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias: one learned scalar per (bucket, head), added to attention logits."""

    def __init__(self, n_heads: int, n_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.n_buckets = n_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.bias = nn.Embedding(n_buckets, n_heads)

    def _bucket(self, rel: torch.Tensor) -> torch.Tensor:
        """Relative distance key - query -> bucket id: exact for small distances, log-spaced up to ``max_distance``."""
        n_buckets, offset = self.n_buckets, torch.zeros_like(rel)
        if self.bidirectional:  # half of the buckets for keys after the query
            n_buckets //= 2
            offset = (rel > 0).long() * n_buckets
            dist = rel.abs()
        else:  # causal: only keys at or before the query
            dist = (-rel).clamp(min=0)
        n_exact = n_buckets // 2
        log_ratio = torch.log(dist.clamp(min=1).float() / n_exact) / math.log(self.max_distance / n_exact)
        far = (n_exact + (log_ratio * (n_buckets - n_exact)).long()).clamp(max=n_buckets - 1)
        return offset + torch.where(dist < n_exact, dist, far)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """[Tq], [Tk] positions -> [1, H, Tq, Tk] additive bias."""
        buckets = self._bucket(k_pos[None, :] - q_pos[:, None])  # [Tq, Tk]
        return self.bias(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, Tq, Tk]


FEW_KEYS = 8  # at most this many keys per query: :func:`few_keys_attention` (the fused kernel beyond)


def few_keys_attention(q: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
    """softmax(q·kᵀ/√d_kv + mask)·v, as ``scaled_dot_product_attention`` computes it, for a handful of keys S given
    in chunks along S (e.g. cached positions, then new ones; never concatenated): the scores by a batched matmul per
    chunk, then the softmax and the weighted sum of the S value rows by elementwise ops. On a CPU the fused kernel pays
    a fixed cost per (row, head) block, which dominates when each block is a few dot products (decoder self-attention
    of semantic IDs: S ≤ l + 1 keys): 2–3× faster here at S ≤ 4 (``benchmarks/reports/speed_cpu.md`` section 5).

    Args:
        q: [B, H, T, d_kv]; keys, values: chunks [B, H, S_i, d_kv]; mask: as :meth:`Attention.forward`, over all S.
    Returns:
        [B, H, T, d_kv].
    """
    scores = torch.cat([torch.matmul(q, k.transpose(-1, -2)) for k in keys], dim=-1)  # [B, H, T, S]
    scores = scores.mul_(q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    probs = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    probs = probs.div_(probs.sum(dim=-1, keepdim=True))
    rows = [v[..., None, j, :] for v in values for j in range(v.shape[-2])]  # S × [B, H, 1, d_kv]
    out = probs[..., :1] * rows[0]  # [B, H, T, d_kv]
    for j in range(1, len(rows)):
        out.addcmul_(probs[..., j : j + 1], rows[j])
    return out


class RowLayout(NamedTuple):
    """Decoder rows with any number per user (none included), placed for cross-attention: a user's queries attend to
    its encoder keys in one ``[B, width·T]`` block, as evenly grouped rows do, while every other part of the decoder
    (the projections, self-attention, feed-forward) runs on the real rows alone, no padding."""

    index: torch.Tensor  # [R] each row's place in the [B·width] block layout: user·width + its rank among the user's rows
    n_users: int  # B
    width: int  # the most rows any user has

    @classmethod
    def of(cls, users: torch.Tensor, n_users: int) -> "RowLayout":
        """``users`` [R]: each row's user, non-decreasing (a user's rows contiguous)."""
        counts = torch.bincount(users, minlength=n_users)  # [B]
        width = int(counts.max()) if users.numel() else 0
        rank = torch.arange(users.numel(), device=users.device) - (counts.cumsum(0) - counts)[users]
        return cls(users * width + rank, n_users, width)

    def blocks(self, rows: torch.Tensor) -> torch.Tensor:
        """[R, T, E] -> [B, width·T, E], zeros where a user has fewer rows."""
        R, T, E = rows.shape
        placed = rows.new_zeros(self.n_users * self.width, T, E).index_copy_(0, self.index, rows)
        return placed.view(self.n_users, self.width * T, E)

    def rows(self, blocks: torch.Tensor, T: int) -> torch.Tensor:
        """[B, width·T, E] -> [R, T, E], the inverse of :meth:`blocks`."""
        return blocks.reshape(self.n_users * self.width, T, blocks.shape[-1]).index_select(0, self.index)


class Attention(nn.Module):
    """Multi-head attention with separate key/value projection, so keys/values can be cached or precomputed.
    ``few_keys``: its queries attend to a handful of keys (the decoder's own positions), computed at inference by
    :func:`few_keys_attention`."""

    def __init__(self, config: "T5Config", few_keys: bool = False):
        super().__init__()
        self.few_keys = few_keys
        inner = config.n_heads * config.d_kv
        self.n_heads, self.d_kv = config.n_heads, config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_kv).transpose(1, 2)  # [B, H, T, d_kv]

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B, S, D] -> keys, values [B, H, S, d_kv]."""
        return self._heads(self.k(x)), self._heads(self.v(x))

    def forward(self, x: torch.Tensor, k, v, mask: Optional[torch.Tensor],
                layout: Optional[RowLayout] = None) -> torch.Tensor:
        """Queries from ``x`` [B, T, D] attend to ``k``/``v`` [B, H, S, d_kv] (or tuples of chunks along S, e.g. cached
        and new positions); ``mask`` is additive (float) or boolean (True = attend), broadcastable to [B, H, T, S].
        With ``layout``, ``x`` is [R, T, D]: rows of the layout's users, attending to their user's keys.
        Returns [B, T, D] ([R, T, D] with ``layout``)."""
        dropout = self.dropout if self.training else 0.0
        if layout is not None:
            R, T, _ = x.shape
            q = self._heads(layout.blocks(self.q(x)))  # [B, H, width·T, d_kv]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [B, H, width·T, d_kv]
            y = layout.rows(y.transpose(1, 2).reshape(layout.n_users, -1, self.n_heads * self.d_kv), T)
            return self.o(y)  # [R, T, D]
        B, T, _ = x.shape
        q = self._heads(self.q(x))  # [B, H, T, d_kv]
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # e.g. fp32 position bias under bf16 autocast
        keys, values = (k, v) if isinstance(k, tuple) else ((k,), (v,))
        if self.few_keys and not self.training and sum(chunk.shape[-2] for chunk in keys) <= FEW_KEYS:
            y = few_keys_attention(q, keys, values, mask)
        else:
            k, v = (torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0] for chunks in (keys, values))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [B, H, T, d_kv]
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_kv))  # [B, T, D]


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose inference path takes mean(x²) as sum(x·x)/D and scales in place: the same numbers
    (bitwise at the sizes measured), 13–28% less time on a CPU at thousands of rows, where the built-in runs ``pow``
    and ``mean`` as separate passes over the rows. With gradients on, the built-in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != self.weight.dtype:
            return super().forward(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        inv = (x * x).sum(dim=-1, keepdim=True).div_(x.shape[-1]).add_(eps).rsqrt_()  # [..., 1]
        return (x * inv).mul_(self.weight)


class FeedForward(nn.Module):
    def __init__(self, config: "T5Config"):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(F.relu(self.wi(x), inplace=True)))  # in place: one [rows, d_ff] buffer less


class EncoderBlock(nn.Module):
    def __init__(self, config: "T5Config"):
        super().__init__()
        self.norm_attn = RMSNorm(config.d_model, eps=config.eps)
        self.attn = Attention(config)
        self.norm_ff = RMSNorm(config.d_model, eps=config.eps)
        self.ff = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm_attn(x)  # [B, S, D]
        x = x + self.dropout(self.attn(h, *self.attn.project_kv(h), mask))
        return x + self.dropout(self.ff(self.norm_ff(x)))


class DecoderBlock(nn.Module):
    """Causal self-attention (cached keys/values), cross-attention over grouped rows, feed-forward."""

    def __init__(self, config: "T5Config"):
        super().__init__()
        self.norm_self = RMSNorm(config.d_model, eps=config.eps)
        self.self_attn = Attention(config, few_keys=True)  # at most l + 1 positions
        self.norm_cross = RMSNorm(config.d_model, eps=config.eps)
        self.cross_attn = Attention(config)
        self.norm_ff = RMSNorm(config.d_model, eps=config.eps)
        self.ff = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, self_kv, self_mask, cross_kv, cross_mask, keep_kv: bool = True,
                layout: Optional[RowLayout] = None):
        """Args:
            x: [B·G, T, D] decoder states ([R, T, D] with ``layout``: any number of rows per user).
            self_kv: cached (k, v) [B·G, H, t, d_kv] of earlier positions, or None.
            self_mask: additive mask [1, H, T, t + T] (relative bias, causal -inf).
            cross_kv: (k, v) [B, H, S, d_kv] of the encoder output, shared by the G rows of a user.
            cross_mask: [B, 1, 1, S] bool, True = real encoder token.
            keep_kv: False = the caller decodes no further positions (no self-attention keys/values returned).
            layout: the user of each row, when users have uneven numbers of rows (:class:`RowLayout`).
        Returns:
            x [B·G, T, D] and the self-attention (k, v) [B·G, H, t + T, d_kv] to cache (None without ``keep_kv``).
        """
        BG, T, D = x.shape
        h = self.norm_self(x)
        k, v = self.self_attn.project_kv(h)  # [B·G, H, T, d_kv]
        if self_kv is not None:  # concatenated for the cache, else attended in chunks (no copy)
            chunks = (self_kv[0], k), (self_kv[1], v)
            k, v = (torch.cat(c, dim=2) for c in chunks) if keep_kv else chunks
        x = x + self.dropout(self.self_attn(h, k, v, self_mask))
        if layout is not None:
            x = x + self.dropout(self.cross_attn(self.norm_cross(x), *cross_kv, cross_mask, layout))
        else:
            B = cross_kv[0].shape[0]
            h = self.norm_cross(x).reshape(B, BG // B * T, D)  # [B, G·T, D]: a user's rows share its encoder output
            x = x + self.dropout(self.cross_attn(h, *cross_kv, cross_mask).reshape(BG, T, D))
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return x, ((k, v) if keep_kv else None)


@dataclass
class T5Config:
    vocab_size: int
    n_layers_enc: int = 4
    n_layers_dec: int = 4
    d_model: int = 128
    n_heads: int = 6
    d_kv: int = 64  # per-head size; n_heads * d_kv need not equal d_model (T5 decouples them)
    d_ff: int = 1024
    dropout: float = 0.1
    rel_buckets: int = 32
    rel_max_distance: int = 128
    eps: float = 1e-6
    init_std: float = 0.02


CROSS_KEYS_MULTIPLE = 16
"""Cross-attention keys are padded to a multiple of this on a CPU: ``scaled_dot_product_attention``'s CPU kernel ran
key lengths such as 22, 26 or 42 (ml-100k's 2 + 10·4 encoder positions) 1.3–1.8× slower than the next multiple of 16
for 16–100 queries per user, and no padded length more than ~5% slower there (with one query per user, a beam
search's first step, up to a third slower; ``benchmarks/reports/speed_cpu.md`` section 5). Padding keys are masked:
the same attention. Only without gradients: a training step (l queries per user) ran 1–4% slower with them, its
backward zero-filling the padded keys' gradients (``benchmarks/reports/diagnostics/train_step_variants_*.md``)."""


class KVCache(NamedTuple):
    """Everything one incremental decoding step needs besides its input token."""

    cross_kv: List[Tuple[torch.Tensor, torch.Tensor]]  # per decoder layer, [B, H, S, d_kv], computed once
    cross_mask: torch.Tensor  # [B, 1, 1, S] bool
    self_kv: Optional[List[Tuple[torch.Tensor, torch.Tensor]]]  # per decoder layer, [B·G, H, t, d_kv]; None at t = 0
    length: int  # t, the number of decoded positions so far


class T5(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        assert config.rel_buckets >= 4, f"rel_buckets must be >= 4, got {config.rel_buckets}"
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)  # shared by encoder and decoder
        self.enc_pos = RelativePositionBias(config.n_heads, config.rel_buckets, config.rel_max_distance, True)
        self.enc_blocks = nn.ModuleList([EncoderBlock(config) for _ in range(config.n_layers_enc)])
        self.enc_norm = RMSNorm(config.d_model, eps=config.eps)
        self.dec_pos = RelativePositionBias(config.n_heads, config.rel_buckets, config.rel_max_distance, False)
        self.dec_blocks = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_layers_dec)])
        self.dec_norm = RMSNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, S] token ids, [B, S] bool (True = real) -> [B, S, D] final encoder states. ``extra`` [B, S, D], when
        given, is added to the token embeddings (e.g. side features of the item each token belongs to)."""
        S = tokens.shape[1]
        pos = torch.arange(S, device=tokens.device)
        attn_mask = self.enc_pos(pos, pos).masked_fill(~mask[:, None, None, :], float("-inf"))  # [B, H, S, S]
        x = self.embedding(tokens)  # [B, S, D]
        x = self.dropout(x if extra is None else x + extra)
        for block in self.enc_blocks:
            x = block(x, attn_mask)
        return self.dropout(self.enc_norm(x))

    def start_cache(self, enc_hidden: torch.Tensor, enc_mask: torch.Tensor) -> KVCache:
        """Project the encoder output [B, S, D] to every decoder layer's cross-attention keys/values, once. On a CPU
        the keys are padded (masked) to a multiple of :data:`CROSS_KEYS_MULTIPLE` at inference (no gradients)."""
        padded = enc_hidden.device.type == "cpu" and not torch.is_grad_enabled()
        pad = -enc_hidden.shape[1] % CROSS_KEYS_MULTIPLE if padded else 0
        cross_kv = [tuple(F.pad(x, (0, 0, 0, pad)) if pad else x for x in block.cross_attn.project_kv(enc_hidden))
                    for block in self.dec_blocks]
        cross_mask = F.pad(enc_mask, (0, pad), value=False) if pad else enc_mask
        return KVCache(cross_kv, cross_mask[:, None, None, :], None, 0)

    def _decode(self, tokens: torch.Tensor, cache: KVCache, keep_kv: bool = True,
                layout: Optional[RowLayout] = None) -> Tuple[torch.Tensor, KVCache]:
        """Decoder over ``tokens`` [B·G, T] placed after ``cache.length`` cached positions -> logits [B·G, T, V] and
        the cache grown by T positions (``keep_kv`` False: the last positions decoded, the cache is not grown).
        ``layout``: the rows' users, when they have uneven numbers of rows (then [R, T] tokens)."""
        T, t = tokens.shape[1], cache.length
        q_pos = torch.arange(t, t + T, device=tokens.device)
        k_pos = torch.arange(t + T, device=tokens.device)
        self_mask = self.dec_pos(q_pos, k_pos)  # [1, H, T, t + T]
        if T > 1:
            self_mask = self_mask.masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))
        x = self.dropout(self.embedding(tokens))  # [B·G, T, D]
        new_kv = []
        for i, block in enumerate(self.dec_blocks):
            past = cache.self_kv[i] if cache.self_kv is not None else None
            x, kv = block(x, past, self_mask, cache.cross_kv[i], cache.cross_mask, keep_kv, layout)
            new_kv.append(kv)
        logits = self.lm_head(self.dropout(self.dec_norm(x)))  # [B·G, T, V]
        return logits, (cache._replace(self_kv=new_kv, length=t + T) if keep_kv else cache)

    def decode(self, tokens: torch.Tensor, enc_hidden: torch.Tensor, enc_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoding of G sequences per user.

        Args:
            tokens: [B, G, T] decoder input ids (start token first).
            enc_hidden: [B, S, D]; enc_mask: [B, S] bool.
        Returns:
            logits [B, G, T, V].
        """
        B, G, T = tokens.shape
        logits, _ = self._decode(tokens.reshape(B * G, T), self.start_cache(enc_hidden, enc_mask))
        return logits.view(B, G, T, -1)

    def decode_fan_out(self, start: torch.Tensor, cache: KVCache, second: Optional[torch.Tensor] = None):
        """The positions every sequence of a user shares, decoded once: the start token ``start`` [B] and, with
        ``second`` [C], each of those C second tokens once per user.

        Returns:
            logits of the start position [B, V], of the second position [B, C, V] (None without ``second``), and the
            cache to continue from: one row per user, or C per user (user-major) with ``second``.
        """
        B = start.shape[0]
        first, cache = self.decode_step(start, cache)  # [B, V]
        if second is None:
            return first, None, cache
        C = second.numel()
        fanned = self.reorder_cache(cache, torch.arange(B, device=start.device).repeat_interleave(C))
        after_second, cache = self.decode_step(second.repeat(B), fanned)  # [B·C, V]
        return first, after_second.view(B, C, -1), cache

    @staticmethod
    def fan_out_rows(tokens: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The cache row of :meth:`decode_fan_out` (with ``second`` [C]) that each sequence continues from, by its
        second token ``tokens`` [B, G] (one not in ``second`` continues from ``second[0]``'s row): [B, G]."""
        match = tokens[..., None] == second  # [B, G, C]
        users = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
        return match.float().argmax(dim=-1) + second.numel() * users

    def decode_rows(self, tokens: torch.Tensor, cache: KVCache, rows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoding after the cached positions, any number of sequences per user (none included):
        sequence r, ``tokens[r]`` [T], continues cache row ``rows[r]`` and attends to the encoder output of user
        ``users[r]`` (non-decreasing). Only the R sequences are decoded: no padding rows, as a ``[B, G]`` layout needs
        when users have uneven counts.

        Returns:
            logits [R, T, V].
        """
        if tokens.shape[0] == 0:
            return self.lm_head.weight.new_zeros(0, tokens.shape[1], self.config.vocab_size)
        if bool((users[1:] < users[:-1]).any()):
            raise ValueError("decode_rows: users must be non-decreasing (each user's rows contiguous)")
        layout = RowLayout.of(users, cache.cross_mask.shape[0])
        logits, _ = self._decode(tokens, self.reorder_cache(cache, rows), keep_kv=False, layout=layout)
        return logits

    def decode_step(self, tokens: torch.Tensor, cache: KVCache) -> Tuple[torch.Tensor, KVCache]:
        """One incremental step: [B·G] next input ids -> logits [B·G, V] and the cache grown by one position."""
        logits, cache = self._decode(tokens[:, None], cache)
        return logits[:, 0], cache

    @staticmethod
    def reorder_cache(cache: KVCache, rows: torch.Tensor, users: Optional[torch.Tensor] = None) -> KVCache:
        """Keep decoder rows ``rows`` [B'·G'] (indices into the current B·G rows, e.g. surviving beams), in order;
        with ``users`` [B'] (ascending indices into the B users) the cross-attention side keeps only those users."""
        if users is not None:
            cross_kv = [(k.index_select(0, users), v.index_select(0, users)) for k, v in cache.cross_kv]
            cache = cache._replace(cross_kv=cross_kv, cross_mask=cache.cross_mask.index_select(0, users))
        if cache.self_kv is None:
            return cache
        self_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache.self_kv]
        return cache._replace(self_kv=self_kv)
