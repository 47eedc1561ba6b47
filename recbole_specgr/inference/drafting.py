"""
recbole_specgr.inference.drafting
##################################
Top-δ inner-product retrieval of draft items for a batch of query vectors, under per-user masks.

A user may be drafted item i only if ``i != 0`` (padding), ``i`` is allowed (``[n]`` or ``[B, n]``), ``i`` was not
drafted before (``[B, n]``) and, during guided re-drafting, ``i`` is one of that user's candidates (``[B, M]``: the
items under its beam prefixes B_j). :class:`DraftMask` holds these parts and evaluates them either densely
(``[B, n]``) or only at given items (``[B, M]``).

Two backends, both exact by default:

* ``dense``: one ``[B, n]`` matmul per user batch (cached across re-drafting rounds) and a masked ``topk``; runs on
  the device of the item vectors.
* ``faiss``: ``IndexFlatIP`` (exact), or ``IndexHNSWFlat`` / ``IndexIVFFlat`` (approximate) for large catalogs.
  A global ``[n]`` allowed mask goes into the search as an ID selector; per-user masks are applied by over-fetching
  ``overfetch × δ`` neighbours and filtering them; users left with fewer than δ survivors fall back to dense scoring.
"""

import logging
import math
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

BACKENDS = ("dense", "faiss")
ITEM_SCORE_CHUNK = 1 << 24  # gathered vector entries per chunk of DraftSession.item_scores (64 MB in fp32)
# faiss: candidates are scored directly while a user has at most 1/64 of the catalog (a gathered inner product costs
# ~100x a matmul's per entry on CPU, bench_drafting.py); more, and they filter the over-fetched neighbours instead
DIRECT_SCORING_SHARE = 64
FAISS_INDEXES = ("flat", "hnsw", "ivf")


class DraftMask(NamedTuple):
    """Which items each of B users may be drafted (every part optional; padding item 0 is always excluded)."""

    allowed: Optional[torch.Tensor] = None  # [n] or [B, n] bool, True = may be drafted
    drafted: Optional[torch.Tensor] = None  # [B, n] bool, True = drafted before, excluded
    candidates: Optional[torch.Tensor] = None  # [B, M] long, the only items that may be drafted (ascending; 0 = pad)

    def dense(self, n_rows: int, n_items: int, rows: Optional[torch.Tensor] = None, device=None) -> torch.Tensor:
        """The mask of every item for ``rows`` (default all B users): ``[R, n]`` bool."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        n_rows = n_rows if rows is None else rows.numel()
        ok = torch.ones(n_rows, n_items, dtype=torch.bool, device=device)
        ok[:, 0] = False
        if self.allowed is not None:
            ok &= self.allowed if self.allowed.dim() == 1 else pick(self.allowed)
        if self.drafted is not None:
            ok &= ~pick(self.drafted)
        if self.candidates is not None:
            ok &= _members(pick(self.candidates), n_items)
        return ok

    def gather(self, items: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mask at candidate ``items`` ``[R, M]`` (0 = no candidate) of ``rows``: ``[R, M]`` bool."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        ok = items != 0
        if self.allowed is not None:
            ok &= self.allowed[items] if self.allowed.dim() == 1 else pick(self.allowed).gather(1, items)
        if self.drafted is not None:
            ok &= ~pick(self.drafted).gather(1, items)
        if self.candidates is not None and self.candidates.size(1) > 0:
            cands = pick(self.candidates)  # [R, M] ascending
            at = torch.searchsorted(cands, items).clamp(max=cands.size(1) - 1)
            ok &= cands.gather(1, at) == items
        elif self.candidates is not None:
            ok &= False
        return ok


def _members(candidates: torch.Tensor, n_items: int) -> torch.Tensor:
    """``[R, n]`` bool: True at each row's ``candidates`` [R, M] (padding 0 included; the caller excludes it)."""
    table = torch.zeros(candidates.size(0), n_items, dtype=torch.bool, device=candidates.device)
    return table.scatter_(1, candidates, True)


def padded_topk(key: torch.Tensor, k: int, stable: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of ``key`` [R, M] (-inf = not eligible), padded with "none" when M < k;
    ``stable``: equal entries in column order (a full sort; ``topk``'s order among ties depends on M).

    Returns:
        values [R, k], columns [R, k] (0 in padding) and valid [R, k] (False for -inf and padding).
    """
    if stable:
        values, cols = _stable_topk(key, min(k, key.size(1)))
    else:
        values, cols = key.topk(min(k, key.size(1)), dim=1)  # [R, k'], sorted
    return _padded(values, cols, k)


def padded_packed_topk(packed: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`padded_topk` (stable) of :func:`packed_keys` ``packed`` [R, M] (blocks packed with their own columns):
    values [R, k], the columns the keys were packed with [R, k] (0 in padding) and valid [R, k]."""
    values, cols = unpacked(packed.topk(min(k, packed.size(1)), dim=1).values)  # distinct keys: sorted, no ties
    return _padded(values, cols, k)


def _padded(values: torch.Tensor, cols: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted ``values``, ``cols`` [R, k'] padded to k entries with "none" (−inf, column 0), and their validity."""
    if cols.size(1) < k:
        pad = k - cols.size(1)
        values = torch.cat([values, values.new_full((values.size(0), pad), -math.inf)], dim=1)
        cols = torch.cat([cols, cols.new_zeros(cols.size(0), pad)], dim=1)
    return values, cols, values > -math.inf


PACKED_TOPK_MAX_COLS = 512  # up to this many columns one integer topk is cheaper than a float one plus tie repair


def _stable_topk(key: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """What a stable descending sort's first k entries are (NaN first, as ``sort`` puts it; −0.0 equal to 0.0),
    without sorting all M columns (TIGER_C ranks every unseen item; drafting, the catalog). Rows of at most
    :data:`PACKED_TOPK_MAX_COLS` columns, or holding NaN: :func:`_packed_topk`. Wider rows: ``topk``, whose pick among
    entries equal to the k-th value is redone in column order in the rows where such entries are left out, then the
    k sorted, equal ones in column order (measured, one thread, 256 rows: 1.75 vs 2.10 ms at 310 columns, 5.6 vs
    10.8 ms at 1,683)."""
    if k == 0:
        return key[:, :0], torch.zeros_like(key[:, :0], dtype=torch.long)
    if key.dtype != torch.float32:  # the integer keys are float32's; other floats: the sort itself
        values, cols = key.sort(dim=1, descending=True, stable=True)
        return values[:, :k], cols[:, :k]
    if key.size(1) <= PACKED_TOPK_MAX_COLS or bool(key.isnan().any()):
        return _packed_topk(key, k)
    values, cols = key.topk(k, dim=1)
    kth = values[:, -1:]  # [R, 1]
    cut = torch.nonzero((key == kth).sum(dim=1) > (values == kth).sum(dim=1)).squeeze(1)  # rows with ties left out
    if cut.numel() > 0:
        rows, rows_kth = key[cut], kth[cut]
        above, at = rows > rows_kth, rows == rows_kth
        take = above | (at & (at.long().cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))  # k per row
        cols[cut] = take.nonzero()[:, 1].view(cut.numel(), k)
    cols = cols.sort(dim=1).values  # column order, then a stable sort by value
    values, order = key.gather(1, cols).sort(dim=1, descending=True, stable=True)
    return values, cols.gather(1, order)


def _packed_topk(key: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`_stable_topk` of float32 ``key`` as one ``topk`` over :func:`packed_keys` (distinct, so no ties)."""
    _, cols = packed_keys(key).topk(k, dim=1)  # [R, k]
    return key.gather(1, cols), cols


LOW_BITS = 0x7FFFFFFF  # the largest column a packed key holds; the column is stored reversed, as LOW_BITS − column


def packed_keys(key: torch.Tensor, cols: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float32 ``key`` [R, M] as int64 keys, one per entry, ordered as a stable descending sort orders the entries:
    each float's order-preserving integer in the high 32 bits (NaN above everything, −0.0 equal to 0.0), its reversed
    column in the low ones (``cols`` [R, M] or [M], default 0 … M−1), so that among equal floats the earlier column
    is the larger key. Keys of several blocks, packed with their own columns, rank together in one integer ``topk``;
    :func:`unpacked` reads a key back."""
    if cols is None:
        cols = torch.arange(key.size(1), device=key.device)
    canonical = torch.where(key.isnan(), math.nan, key + 0.0)  # one NaN, and −0.0 + 0.0 = +0.0
    bits = canonical.view(torch.int32).long()  # a float's bits as an integer: ordered for x ≥ 0, reversed for x < 0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # [R, M], ordered as the floats
    return (ordered << 32) | (LOW_BITS - cols)


def unpacked(packed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The float32 values (canonical: one NaN, no −0.0) and columns of :func:`packed_keys` ``packed``."""
    ordered = packed >> 32
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return bits.view(torch.float32), LOW_BITS - (packed & 0xFFFFFFFF)


def masked_topk(
    scores: torch.Tensor, ok: torch.Tensor, k: int, ids: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of ``scores`` [R, M] among ``ok`` [R, M], equal scores in column order: over the catalog's
    columns or over ascending candidate ids alike, ties go to the smaller item id (a grid's settings may draft the
    same round either way, see ``SpeculativeRecommender._guided``).

    Returns:
        items [R, k] (the column, or ``ids[r, column]`` when ``ids`` [R, M] is given; 0 = none) and scores [R, k]
        (-inf = none).
    """
    top_scores, cols, valid = padded_topk(scores.masked_fill(~ok, -math.inf), k, stable=True)
    top_items = cols if ids is None or ids.size(1) == 0 else ids.gather(1, cols)  # M = 0: padding only
    return top_items.masked_fill(~valid, 0), top_scores


def check_backend(backend: str, faiss_index: str) -> None:
    """ValueError unless ``backend`` is one of :data:`BACKENDS` and ``faiss_index`` one of :data:`FAISS_INDEXES`."""
    if backend not in BACKENDS:
        raise ValueError(f"specgr_drafting_backend: expected one of {BACKENDS}, got {backend!r}")
    if faiss_index not in FAISS_INDEXES:
        raise ValueError(f"specgr_faiss_index: expected one of {FAISS_INDEXES}, got {faiss_index!r}")


def _build_faiss_index(vectors: np.ndarray, kind: str, hnsw_m: int, ivf_nlist: Optional[int]):
    """An inner-product faiss index over ``vectors`` [N, D] (float32, C-contiguous)."""
    import faiss

    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:  # ivf
        nlist = ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    index.add(vectors)
    return index


class DraftIndex:
    """Top-δ drafting over a fixed set of item vectors.

    Args:
        item_vectors (torch.Tensor): ``[n, D]`` vectors of all items (row 0 = padding, never drafted).
        backend (str): ``dense`` or ``faiss``.
        faiss_index (str): ``flat`` (exact inner product), ``hnsw`` or ``ivf`` (approximate).
        overfetch (int): with per-user masks, faiss fetches ``overfetch × δ`` neighbours before filtering.
        hnsw_m (int): HNSW graph degree.
        ef_search (int): HNSW search depth (raised to the fetch size when smaller).
        ivf_nlist (int, optional): IVF lists (default ``4·sqrt(n)``, at most ``n / 39``).
        nprobe (int): IVF lists visited per query.
    """

    def __init__(
        self,
        item_vectors: torch.Tensor,
        backend: str = "dense",
        faiss_index: str = "flat",
        overfetch: int = 4,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ivf_nlist: Optional[int] = None,
        nprobe: int = 16,
    ):
        check_backend(backend, faiss_index)
        if item_vectors.dim() != 2 or item_vectors.size(0) < 2:
            raise ValueError(f"item_vectors: expected [n >= 2, D], got {tuple(item_vectors.shape)}")
        if overfetch < 1:
            raise ValueError(f"overfetch: expected an int >= 1, got {overfetch}")
        self.item_vectors = item_vectors  # [n, D]
        self.n_items = item_vectors.size(0)
        self.backend = backend
        self.faiss_index = faiss_index
        self.overfetch = overfetch
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.index = None
        if backend == "faiss":  # faiss ids are item ids - 1 (the padding row is left out)
            vectors = np.ascontiguousarray(item_vectors[1:].detach().float().cpu().numpy())
            self.index = _build_faiss_index(vectors, faiss_index, hnsw_m, ivf_nlist)
            logging.getLogger().debug(f"[DRAFTING] faiss {faiss_index} index over {vectors.shape[0]} items")

    def session(self, queries: torch.Tensor) -> "DraftSession":
        """Start drafting for one user batch ``queries`` [B, D]; work shared across rounds is cached there."""
        return DraftSession(self, queries)

    def search(self, queries: torch.Tensor, k: int, mask: Optional[DraftMask] = None):
        """Top-``k`` items for ``queries`` [B, D] under ``mask``: items [B, k] (0 = none), scores [B, k]."""
        return self.session(queries).topk(k, mask)

    # faiss helpers -----------------------------------------------------------------------------------------------
    def _search_params(self, fetch: int, allowed: Optional[torch.Tensor]):
        import faiss

        kwargs = {}
        if allowed is not None:  # global [n] mask -> selector over faiss ids (item id - 1)
            ids = (torch.nonzero(allowed[1:].cpu()).squeeze(1)).numpy().astype("int64")
            kwargs["sel"] = faiss.IDSelectorBatch(ids)
        if self.faiss_index == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch), **kwargs)
        if self.faiss_index == "ivf":
            return faiss.SearchParametersIVF(nprobe=self.nprobe, **kwargs)
        return faiss.SearchParameters(**kwargs) if kwargs else None

    def _faiss_fetch(self, queries: torch.Tensor, fetch: int, allowed: Optional[torch.Tensor]):
        """Raw faiss neighbours: items [B, fetch] (0 = none) and scores [B, fetch] on the queries' device."""
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        params = self._search_params(fetch, allowed)
        dist, labels = self.index.search(q, fetch, params=params) if params else self.index.search(q, fetch)
        labels = torch.from_numpy(labels).to(queries.device)
        dist = torch.from_numpy(dist).to(queries.device)
        items = (labels + 1).clamp(min=0)  # faiss -1 (not found) -> 0
        scores = dist.masked_fill(items == 0, -math.inf)
        return items, scores


class DraftSession:
    """Drafting state of one user batch: the dense ``[B, n]`` scores, or faiss' over-fetched neighbour lists."""

    def __init__(self, index: DraftIndex, queries: torch.Tensor):
        self.index = index
        self.queries = queries  # [B, D]
        self._dense_scores = None  # [B, n]
        self._fetched = None  # (items [B, F], scores [B, F], allowed it was fetched under)

    def dense_scores(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Inner products of (a subset of) the queries with every item: [R, n]."""
        vectors = self.index.item_vectors
        if rows is not None:
            return self.queries[rows].to(vectors.dtype) @ vectors.T
        if self._dense_scores is None:
            self._dense_scores = self.queries.to(vectors.dtype) @ vectors.T  # [B, n]
        return self._dense_scores

    def catalog_scores(self, items: torch.Tensor) -> torch.Tensor:
        """Inner products of every query with the same ``items`` [m]: [B, m] (the dense scores' columns once
        computed, else one product)."""
        if self._dense_scores is not None:
            return self._dense_scores[:, items]
        vectors = self.index.item_vectors
        return self.queries.to(vectors.dtype) @ vectors[items].T

    def item_scores(self, items: torch.Tensor) -> torch.Tensor:
        """Inner products of each user's query with its own ``items`` [B, M] (any ids, 0 included): [B, M], computed
        for these entries only, a chunk of users at a time (at most ``ITEM_SCORE_CHUNK`` gathered vector entries)."""
        vectors = self.index.item_vectors
        queries = self.queries.to(vectors.dtype)
        step = max(1, ITEM_SCORE_CHUNK // max(1, items.size(1) * vectors.size(1)))  # users per chunk
        chunks = [torch.einsum("bd,bmd->bm", queries[s : s + step], vectors[items[s : s + step]])
                  for s in range(0, items.size(0), step)]
        return torch.cat(chunks) if chunks else items.new_zeros(items.shape, dtype=vectors.dtype)

    def topk(self, k: int, mask: Optional[DraftMask] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` allowed items per user: items [B, k] (0 = none), scores [B, k] (-inf = none).

        With ``mask.candidates`` (e.g. the items under the beam prefixes,
        :meth:`~recbole_specgr.inference.prefix_index.PrefixIndex.items_under`) the dense backend gathers their
        round-0 scores instead of masking the catalog; faiss scores them directly (exactly) when the widest row holds
        at most 1/``DIRECT_SCORING_SHARE`` of the catalog, else keeps its over-fetched neighbours that are
        candidates. Rows must be ascending and distinct apart from padding 0 (as ``items_under`` returns them)."""
        mask = mask or DraftMask()
        n_rows, n_items = self.queries.size(0), self.index.n_items
        if k <= 0:
            return self.queries.new_zeros(n_rows, 0, dtype=torch.long), self.queries.new_zeros(n_rows, 0)
        cands = mask.candidates
        if cands is not None and (self.index.backend == "dense" or cands.size(1) * DIRECT_SCORING_SHARE <= n_items):
            if self.index.backend == "dense":  # round 0 scored every item already: gather
                scores = self.dense_scores().gather(1, cands)
            else:  # few candidates: score exactly those (also under faiss' approximate indexes)
                scores = self.item_scores(cands)
            return masked_topk(scores, mask._replace(candidates=None).gather(cands), k, ids=cands)
        if self.index.backend == "dense":
            scores = self.dense_scores()
            return masked_topk(scores, mask.dense(n_rows, n_items, device=scores.device), k)
        return self._faiss_topk(k, mask)

    def _faiss_topk(self, k: int, mask: DraftMask) -> Tuple[torch.Tensor, torch.Tensor]:
        """Filter over-fetched neighbours; users left short are re-fetched 4× deeper while that stays under a
        quarter of the catalog, then scored densely."""
        index, n_rows, n_items = self.index, self.queries.size(0), self.index.n_items
        global_allowed = mask.allowed if mask.allowed is not None and mask.allowed.dim() == 1 else None
        per_user = mask.drafted is not None or mask.candidates is not None or global_allowed is not mask.allowed
        fetch = min(n_items - 1, k * index.overfetch if per_user else k)
        stale = self._fetched is None or self._fetched[2] is not global_allowed or self._fetched[0].size(1) < fetch
        if stale:
            self._fetched = (*index._faiss_fetch(self.queries, fetch, global_allowed), global_allowed)
        items, scores, _ = self._fetched  # [B, F]
        top_items, top_scores = masked_topk(scores, mask.gather(items), k, ids=items)
        fetch = items.size(1)
        n_allowed = n_items - 1 if global_allowed is None else int(global_allowed[1:].sum())
        short = torch.nonzero((top_items != 0).sum(1) < min(k, n_allowed)).squeeze(1)  # [R] users to redo
        while short.numel() > 0 and fetch < n_items - 1 and 4 * fetch <= n_items // 4:
            fetch = 4 * fetch
            items, scores = index._faiss_fetch(self.queries[short], fetch, global_allowed)  # [R, 4F]
            top_items[short], top_scores[short] = masked_topk(scores, mask.gather(items, rows=short), k, ids=items)
            short = short[(top_items[short] != 0).sum(1) < min(k, n_allowed)]
        if short.numel() > 0 and not (index.faiss_index == "flat" and fetch >= n_items - 1):
            rows_scores = self.dense_scores(short)  # [R, n]
            ok_rows = mask.dense(n_rows, n_items, rows=short, device=rows_scores.device)
            top_items[short], top_scores[short] = masked_topk(rows_scores, ok_rows, k)
        return top_items, top_scores
