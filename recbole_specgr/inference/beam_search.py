"""
recbole_specgr.inference.beam_search
####################################
Prefix-constrained beam search over semantic IDs, in the style of fairseq's search strategies: a strategy object's
``step`` turns per-beam next-digit log-probabilities into ``(scores, tokens, beam_idx)``; a small driver owns the loop,
the decoder state and the prefix bookkeeping.

- The encoder has already run (:class:`~recbole_specgr.inference.interfaces.EncoderState`); the decoder starts with
  one row per user and grows to β rows after the first step (fairseq's step-0 "first beam only" trick, for free);
  beams that no user of the batch has (B_1 holds only C beams when C < β) are not decoded.
- The users of a batch are decoded together (on a CPU in groups of about 4,096 beam rows, advanced in lockstep);
  beams are flattened to ``B·β`` decoder rows.
- One ``topk`` over the flattened ``beam × code`` scores per step; beam and code come back by ``//`` and ``%``.
- The constraint is the dense prefix tables of :class:`~recbole_specgr.inference.prefix_index.PrefixIndex`:
  disallowed continuations get −inf. No per-hypothesis Python, no trie callbacks.
- The decoder's KV cache is reordered by the surviving beams' row indices.
- A caller that needs only some users' later digits sends their ``[B]`` mask instead of calling ``next``: the
  others' rows leave the decoder (and its per-user encoder state) for good, so e.g. users that speculative inference
  has finished with cost nothing from then on.

The driver is generic over the decoder: anything with the three methods of :class:`StepDecoder` (TIGER, SpecGR++).
Scores are the model's own log-probabilities (not renormalised over the allowed codes), so with β at least the number
of allowed items the search returns exactly the top items by sequence log-likelihood.
"""

from typing import Any, Generator, Iterator, List, Optional, Protocol, Sequence, Tuple

import torch

from recbole_specgr.inference.interfaces import BeamStep, EncoderState

CPU_MAX_ROWS = 4096
"""Decoder positions decoded in one call on a CPU by default (beam search at β = 50: 81 users a step; teacher-forced
scoring: each user's real candidates × the positions each needs after the shared ones, e.g. 2 at l = 4 with the
fan-out): the tensors of a larger call outgrow the cache, a much smaller one pays Python's per-call overhead more
often. Measured at one thread (``benchmarks/reports/speed_cpu.md``, section 4):
2,000 items, V = 1,026, d_model 64, 256 users: the beam search in groups of 64 users ran 1.2× the users/s of all 256
at once, scoring 50 candidates per user in groups of 16–32 users 1.6–2.0×; the ml-100k main job's test pass took
19.2–20.1 s at 4,096 positions a call, 21.6–22.5 s at 2,048, 25.7–26.1 s in one call; counted by real positions,
verification's calls were checked again at 2,048–8,192 in session 28 (section 17): none clearly better."""


def user_groups(n_users: int, rows_per_user, device, max_rows: Optional[int] = -1) -> List[Tuple[int, int]]:
    """[start, end) of consecutive groups of users, each group at most ``max_rows`` decoder rows (at least one user).

    Args:
        rows_per_user: decoder rows (positions) one user needs in a call: an int, the same for every user, or a
            ``[n_users]`` tensor of each user's own.
        max_rows: None: one group; −1 (default): :data:`CPU_MAX_ROWS` on a CPU, one group elsewhere.
    """
    if max_rows == -1:
        max_rows = CPU_MAX_ROWS if torch.device(device).type == "cpu" else None
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows: expected None, -1 or >= 1, got {max_rows}")
    if max_rows is None or n_users == 0:
        return [(0, n_users)] if n_users else []
    if not isinstance(rows_per_user, torch.Tensor):
        size = max(1, max_rows // max(1, rows_per_user))
        return [(start, min(start + size, n_users)) for start in range(0, n_users, size)]
    bounds, start, total = [], 0, 0
    for user, rows in enumerate(rows_per_user.tolist()):
        if user > start and total + rows > max_rows:
            bounds.append((start, user))
            start, total = user, 0
        total += rows
    return bounds + [(start, n_users)]


class StepDecoder(Protocol):
    """What the driver needs from a generative model (rows: ``B·G``, the G rows of a user contiguous)."""

    def start_decoding(self, enc: EncoderState) -> Any:
        """Decoder state for one row per user (G = 1), before any digit."""

    def decode_step(self, state: Any, codes: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Any]:
        """Feed the previous digit's codes [B·G] (None at the first step) -> log P(next digit) [B·G, C], new state."""

    def reorder_decoding(self, state: Any, rows: torch.Tensor, users: Optional[torch.Tensor] = None) -> Any:
        """Keep decoder rows ``rows`` [B'·G'] (indices into the current B·G rows), in that order; with ``users`` [B']
        (indices into the current B users, ascending) the state's per-user parts keep only those users, whose rows
        ``rows`` then are (called only when users leave the search)."""


class ConstrainedBeamSearch:
    """Search strategy: one step of beam search where disallowed continuations are masked with −inf.

    Args:
        beam_size: β.
    """

    def __init__(self, beam_size: int):
        if beam_size < 1:
            raise ValueError(f"beam_size: expected >= 1, got {beam_size}")
        self.beam_size = beam_size

    def step(
        self, step: int, lprobs: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            step: 0-based digit index.
            lprobs: [B, β_in, C] log P(code | prefix of the beam).
            scores: [B, β_in] summed log-probabilities of the beams so far (−inf = no beam).
            allowed: [B, β_in, C] bool, True where prefix + code is a prefix of an allowed item.
        Returns:
            scores [B, β] (sorted, −inf = no beam), tokens [B, β] codes, beam_idx [B, β] the beam each extends.
        """
        cand = (scores[:, :, None] + lprobs).masked_fill(~allowed, float("-inf"))  # [B, β_in, C]
        if step == 0:  # every beam holds the same empty prefix: expand only the first
            cand = cand[:, :1]
        B, beams_in, C = cand.shape
        k = min(self.beam_size, beams_in * C)
        top, idx = cand.reshape(B, beams_in * C).topk(k, dim=1)  # [B, k], sorted
        if k < self.beam_size:  # fewer candidates than beams: pad with non-beams
            pad = self.beam_size - k
            top = torch.cat([top, top.new_full((B, pad), float("-inf"))], dim=1)
            idx = torch.cat([idx, idx.new_zeros(B, pad)], dim=1)
        return top, idx % C, idx // C


def constrained_beam_search(
    decoder: StepDecoder,
    enc: EncoderState,
    beam_size: int,
    tables: Sequence[torch.Tensor],
    alive: Optional[Sequence[torch.Tensor]] = None,
    max_rows: Optional[int] = -1,
    keep_log_probs: bool = False,
) -> Iterator[BeamStep]:
    """Beam search for all users of ``enc``, yielding the beam sets B_1 … B_l.

    Args:
        decoder: the model (see :class:`StepDecoder`).
        enc: encoder output for B users.
        beam_size: β.
        tables: l prefix tables ``[P_j, C]`` (:meth:`PrefixIndex.restrict`): the next node of every allowed
            continuation, −1 elsewhere; the last table holds item ids.
        alive: optional per-user restriction on top of ``tables`` (:meth:`PrefixIndex.alive_nodes`): l tensors
            ``[B, P_j]``, True where the user may still reach an item through that node. With it, a user's excluded
            items (e.g. the history) take no beams, so β beams end in β items that user may be recommended.
        max_rows: decode at most this many beam rows at once (:func:`user_groups`; default: :data:`CPU_MAX_ROWS`
            on a CPU, all users elsewhere): the groups are searched in lockstep and their steps joined, giving the
            beams of one search (each user's search is independent; scores to float rounding, as with any other
            batch composition).
        keep_log_probs: each step also holds the log-probabilities it decoded (:attr:`BeamStep.log_probs`).
    Yields:
        :class:`BeamStep` for j = 1 … l. Decoding of digit j+1 starts only when the next step is asked for, so a
        caller that stops early (speculative inference's adaptive exit) pays for no more digits than it used.
        ``send(users)`` ([B] bool) instead of ``next`` asks for the next step of those users only: the others are
        decoded no more and their beams are invalid (``valid`` False, score −inf, prefix −1, item 0) in every
        later step; the beams of the users kept are exactly those of the full search.
    """
    bounds = user_groups(enc.hidden.shape[0], beam_size, enc.hidden.device, max_rows)
    if len(bounds) <= 1:
        return _search(decoder, enc, beam_size, tables, alive, keep_log_probs)
    return _in_lockstep([
        _search(decoder, enc.select(slice(start, end)), beam_size, tables,
                None if alive is None else [nodes[start:end] for nodes in alive], keep_log_probs)
        for start, end in bounds
    ], bounds)


def _in_lockstep(searches: Sequence[Generator[BeamStep, Optional[torch.Tensor], None]],
                 bounds: Sequence[Tuple[int, int]]) -> Iterator[BeamStep]:
    """The searches of consecutive user groups (``bounds``: [start, end) of each) advanced together, each step's
    beam sets joined along the users; a ``send(users)`` mask is split among the groups."""
    need = None
    while True:
        try:
            steps = [search.send(None if need is None else need[start:end])
                     for search, (start, end) in zip(searches, bounds)]
        except StopIteration:
            return
        joined = {field: None if getattr(steps[0], field) is None else torch.cat([getattr(s, field) for s in steps])
                  for field in ("prefixes", "scores", "valid", "items", "log_probs")}
        need = yield BeamStep(steps[0].depth, **joined)


def _search(decoder, enc, beam_size, tables, alive, keep_log_probs=False):
    """:func:`constrained_beam_search` of all users of ``enc`` at once."""
    search = ConstrainedBeamSearch(beam_size)
    B, device = enc.hidden.shape[0], enc.hidden.device
    n_digits = len(tables)
    neg_inf = float("-inf")
    kept = torch.arange(B, device=device)  # [B'] the users still decoded (all at first)
    scores = torch.zeros(B, 1, device=device)  # [B', G], G = 1 before the first digit
    nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # [B', G] node of each beam's prefix (root)
    prefixes = torch.zeros(B, 1, 0, dtype=torch.long, device=device)  # [B', G, j]
    state = decoder.start_decoding(enc)
    codes = None
    for j in range(n_digits):
        if kept.numel() == 0:  # every user was dropped: nothing to decode, no beams for anyone
            none = torch.zeros(0, beam_size, dtype=torch.long, device=device)
            log_probs = torch.zeros(0, 1 if j == 0 else beam_size, tables[j].shape[1], device=device)
            yield _all_users(BeamStep(j + 1, none[:, :, None].expand(-1, -1, j + 1), none.float(), none.bool(),
                                      none if j == n_digits - 1 else None, log_probs if keep_log_probs else None),
                             kept, B)
            continue
        lprobs, state = decoder.decode_step(state, codes)  # [B'·G, C]
        (n_kept, G), C = scores.shape, lprobs.shape[-1]
        child = tables[j][nodes]  # [B', G, C] next node per continuation, -1 = disallowed
        allowed = child >= 0
        if alive is not None:
            user_alive = alive[j] if n_kept == B else alive[j][kept]  # [B', P_j]
            allowed &= user_alive.gather(1, child.view(n_kept, G * C).long().clamp(min=0)).view(n_kept, G, C)
        lprobs = lprobs.float().view(n_kept, G, C)
        scores, codes, beam_idx = search.step(j, lprobs, scores, allowed)  # [B', β] each
        valid = scores > neg_inf
        nodes = child.view(n_kept, G * C).gather(1, beam_idx * C + codes).long().clamp(min=0)  # [B', β]
        prev = prefixes.gather(1, beam_idx[:, :, None].expand(-1, -1, j))  # [B', β, j]
        prefixes = torch.cat([prev, codes[:, :, None]], dim=2).masked_fill(~valid[:, :, None], -1)  # [B', β, j+1]
        items = nodes.masked_fill(~valid, 0) if j == n_digits - 1 else None
        kept_log_probs = None
        if keep_log_probs:  # [B', β_j, C] with β_0 = 1: rows of beams that were not decoded are −inf
            width = 1 if j == 0 else beam_size
            kept_log_probs = lprobs
            if G < width:
                kept_log_probs = torch.cat([lprobs, lprobs.new_full((n_kept, width - G, C), neg_inf)], dim=1)
        step = BeamStep(j + 1, prefixes, scores, valid, items, kept_log_probs)
        need = yield step if n_kept == B else _all_users(step, kept, B)
        if j == n_digits - 1:
            break
        width = max(1, int(valid.sum(dim=1).max()))  # beams no user has (sorted last) are not decoded
        if width < beam_size:  # e.g. C < β first digits: B_1 holds C beams
            trimmed = (t[:, :width] for t in (scores, codes, beam_idx, nodes, prefixes))
            scores, codes, beam_idx, nodes, prefixes = trimmed
        rows = beam_idx + torch.arange(n_kept, device=device)[:, None] * G  # [B', β'] rows each beam extends
        users = None
        if need is not None and not bool(need.to(device)[kept].all()):
            users = torch.nonzero(need.to(device)[kept]).squeeze(1)  # [B''] positions among the kept users
            kept, scores, nodes, prefixes, codes, rows = (t[users] for t in (kept, scores, nodes, prefixes, codes, rows))
        if users is None:
            state = decoder.reorder_decoding(state, rows.reshape(-1))
        else:  # only now: decoders that are never sent a mask need not take ``users``
            state = decoder.reorder_decoding(state, rows.reshape(-1), users)
        codes = codes.reshape(-1)  # [B'·β']


def _all_users(step: BeamStep, kept: torch.Tensor, n_users: int) -> BeamStep:
    """``step`` of the users ``kept`` [B'] spread to all ``n_users``; the others get no beams."""

    def spread(t, fill):
        out = t.new_full((n_users, *t.shape[1:]), fill)
        out[kept] = t
        return out

    return BeamStep(step.depth, spread(step.prefixes, -1), spread(step.scores, float("-inf")),
                    spread(step.valid, False), None if step.items is None else spread(step.items, 0),
                    None if step.log_probs is None else spread(step.log_probs, float("-inf")))
