"""
recbole_specgr.model.t5
#######################
A compact T5-style encoder–decoder in plain torch, read top to bottom, leaves first:
RelativePositionBias → Attention → FeedForward → EncoderBlock → DecoderBlock → T5Config → T5.

Pre-norm blocks with RMSNorm, T5 relative position buckets (encoder: bidirectional, decoder: causal; none in
cross-attention), ReLU feed-forward, ``F.scaled_dot_product_attention`` everywhere.

Decoding one token at a time is cheap: cross-attention keys/values are computed once per encoder output
(:meth:`T5.start_cache`) and the decoder self-attention keys/values are cached (:class:`KVCache`). Decoder rows come in
*groups*: ``B·G`` rows where the ``G`` rows of one user (beams, or candidate items) share that user's encoder output.
Cross-attention never copies the encoder states ``G`` times: the ``G·T`` queries of a user attend to its ``S`` keys in
one ``[B, H, G·T, d_kv]`` call.

Shapes: B users, G rows per user, T decoder length, S encoder length, D = d_model, H heads, V vocabulary.

Reference:
    Colin Raffel et al. "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer." JMLR 2020.
"""

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

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


class Attention(nn.Module):
    """Multi-head attention with separate key/value projection, so keys/values can be cached or precomputed."""

    def __init__(self, config: "T5Config"):
        super().__init__()
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

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries from ``x`` [B, T, D] attend to ``k``/``v`` [B, H, S, d_kv]; ``mask`` is additive (float) or
        boolean (True = attend), broadcastable to [B, H, T, S]. Returns [B, T, D]."""
        B, T, _ = x.shape
        q = self._heads(self.q(x))  # [B, H, T, d_kv]
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # e.g. fp32 position bias under bf16 autocast
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [B, H, T, d_kv]
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_kv))  # [B, T, D]


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
        self.norm_attn = nn.RMSNorm(config.d_model, eps=config.eps)
        self.attn = Attention(config)
        self.norm_ff = nn.RMSNorm(config.d_model, eps=config.eps)
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
        self.norm_self = nn.RMSNorm(config.d_model, eps=config.eps)
        self.self_attn = Attention(config)
        self.norm_cross = nn.RMSNorm(config.d_model, eps=config.eps)
        self.cross_attn = Attention(config)
        self.norm_ff = nn.RMSNorm(config.d_model, eps=config.eps)
        self.ff = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, self_kv, self_mask, cross_kv, cross_mask):
        """Args:
            x: [B·G, T, D] decoder states.
            self_kv: cached (k, v) [B·G, H, t, d_kv] of earlier positions, or None.
            self_mask: additive mask [1, H, T, t + T] (relative bias, causal -inf).
            cross_kv: (k, v) [B, H, S, d_kv] of the encoder output, shared by the G rows of a user.
            cross_mask: [B, 1, 1, S] bool, True = real encoder token.
        Returns:
            x [B·G, T, D] and the self-attention (k, v) [B·G, H, t + T, d_kv] to cache.
        """
        BG, T, D = x.shape
        h = self.norm_self(x)
        k, v = self.self_attn.project_kv(h)  # [B·G, H, T, d_kv]
        if self_kv is not None:
            k, v = torch.cat([self_kv[0], k], dim=2), torch.cat([self_kv[1], v], dim=2)
        x = x + self.dropout(self.self_attn(h, k, v, self_mask))
        B = cross_kv[0].shape[0]
        h = self.norm_cross(x).reshape(B, BG // B * T, D)  # [B, G·T, D]: a user's rows share its encoder output
        x = x + self.dropout(self.cross_attn(h, *cross_kv, cross_mask).reshape(BG, T, D))
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return x, (k, v)


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
        self.enc_norm = nn.RMSNorm(config.d_model, eps=config.eps)
        self.dec_pos = RelativePositionBias(config.n_heads, config.rel_buckets, config.rel_max_distance, False)
        self.dec_blocks = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_layers_dec)])
        self.dec_norm = nn.RMSNorm(config.d_model, eps=config.eps)
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
        """Project the encoder output [B, S, D] to every decoder layer's cross-attention keys/values, once."""
        cross_kv = [block.cross_attn.project_kv(enc_hidden) for block in self.dec_blocks]
        return KVCache(cross_kv, enc_mask[:, None, None, :], None, 0)

    def _decode(self, tokens: torch.Tensor, cache: KVCache) -> Tuple[torch.Tensor, KVCache]:
        """Decoder over ``tokens`` [B·G, T] placed after ``cache.length`` cached positions -> logits [B·G, T, V]."""
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
            x, kv = block(x, past, self_mask, cache.cross_kv[i], cache.cross_mask)
            new_kv.append(kv)
        logits = self.lm_head(self.dropout(self.dec_norm(x)))  # [B·G, T, V]
        return logits, cache._replace(self_kv=new_kv, length=t + T)

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

    def decode_shared_start(self, tokens: torch.Tensor, enc_hidden: torch.Tensor, enc_mask: torch.Tensor):
        """:meth:`decode` for G sequences per user that all begin with the same start token: that position is
        decoded once per user and its keys/values shared by the G rows (a 1/T saving, e.g. SpecGR's verification).

        Args:
            tokens: [B, G, T] decoder input ids, T >= 2, ``tokens[:, :, 0]`` the same start token everywhere.
            enc_hidden: [B, S, D]; enc_mask: [B, S] bool.
        Returns:
            logits of the start position [B, V] and of the others [B, G, T − 1, V].
        """
        B, G, T = tokens.shape
        first, cache = self._decode(tokens[:, 0, :1], self.start_cache(enc_hidden, enc_mask))  # [B, 1, V]
        shared = [(k.repeat_interleave(G, dim=0), v.repeat_interleave(G, dim=0)) for k, v in cache.self_kv]
        rest, _ = self._decode(tokens[:, :, 1:].reshape(B * G, T - 1), cache._replace(self_kv=shared))
        return first[:, 0], rest.view(B, G, T - 1, -1)

    def decode_shared_prefix(self, tokens: torch.Tensor, enc_hidden: torch.Tensor, enc_mask: torch.Tensor,
                             second: torch.Tensor):
        """:meth:`decode_shared_start` for sequences whose second token is one of a small set ``second`` [C]
        (SpecGR's drafts: the first semantic-ID digit, C codes): the start position is decoded once per user, the
        second once per user and value of ``second`` (C rows instead of G), and only the positions after it once per
        sequence. Worth it when C < G.

        Args:
            tokens: [B, G, T] decoder input ids, T >= 3, ``tokens[:, :, 0]`` the same start token everywhere and
                ``tokens[:, :, 1]`` in ``second`` (a row whose second token is not is decoded as ``second[0]``: for
                padding rows whose output the caller discards).
            enc_hidden: [B, S, D]; enc_mask: [B, S] bool.
            second: [C] distinct token ids.
        Returns:
            logits of the start position [B, V] and of the others [B, G, T − 1, V], as :meth:`decode_shared_start`.
        """
        B, G, T = tokens.shape
        C = second.numel()
        first, cache = self._decode(tokens[:, 0, :1], self.start_cache(enc_hidden, enc_mask))  # [B, 1, V]
        fanned = [(k.repeat_interleave(C, dim=0), v.repeat_interleave(C, dim=0)) for k, v in cache.self_kv]
        after_second, cache = self._decode(second.repeat(B)[:, None], cache._replace(self_kv=fanned))  # [B·C, 1, V]
        match = tokens[:, :, 1, None] == second  # [B, G, C]
        rows = (match.float().argmax(dim=-1) + C * torch.arange(B, device=tokens.device)[:, None]).view(-1)  # [B·G]
        prefix = [(k[rows], v[rows]) for k, v in cache.self_kv]  # [B·G, H, 2, d_kv]
        rest, _ = self._decode(tokens[:, :, 2:].reshape(B * G, T - 2), cache._replace(self_kv=prefix))
        rest = torch.cat([after_second[rows], rest], dim=1)  # [B·G, T − 1, V]
        return first[:, 0], rest.view(B, G, T - 1, -1)

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
