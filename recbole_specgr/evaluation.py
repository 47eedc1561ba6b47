"""
recbole_specgr.evaluation
#########################
Full-ranking Recall@K / NDCG@K with the in-sample / unseen breakdown of SpecGR's Table 3.

Each evaluation row has one target, so Recall@K is the hit rate and NDCG@K is ``1 / log2(rank + 2)`` for a hit at
0-based ``rank < K``. A row is *in-sample* when its target is a seen item (present in training rows), *unseen*
otherwise. Items with a score of −inf are not recommended: a model may return fewer than K items.

With ``eval_exclude_history: True`` the trainer puts the items each row's user interacted with before the target
into the interaction under :data:`EXCLUDED_ITEMS`; models that generate a top-K (TIGER, SpecGR) skip them while
generating, and every model's scores at those items are set to −inf before ranking.
"""

import math
from collections import OrderedDict

import torch

SUBSETS = ("overall", "in_sample", "unseen")
METRICS = ("recall", "ndcg")  # what SplitMetrics can compute, at every K of topk
EXCLUDED_ITEMS = "excluded_items"  # interaction key: [B, n_items] bool, items a model must not recommend to the row


def requested_metrics(metrics=METRICS):
    """The names of ``metrics`` (a config's, e.g. ``[Recall, NDCG]`` or ``NDCG``) in :data:`METRICS` order, lower
    case; None (a checkpoint's config without the key) = all. The config refuses any other name."""
    if metrics is None:
        return METRICS
    names = {str(m).lower() for m in (metrics if isinstance(metrics, (list, tuple)) else [metrics])}
    return tuple(m for m in METRICS if m in names)


def result_keys(metrics, topk):
    """Every key a result of ``metrics`` at the cut-offs ``topk`` holds: ``recall@10``, ``in_sample/…``,
    ``unseen/…`` — what ``valid_metric`` and the γ selection keys may name."""
    return [f"{prefix}{name}@{k}" for prefix in ("", "in_sample/", "unseen/") for name in requested_metrics(metrics)
            for k in topk]


def check_metrics(named, metrics, topk):
    """Raise a one-line error unless every ``(setting, value, where)`` of ``named`` has a value that is a key of the
    results the evaluation computes for ``metrics`` (e.g. ``[Recall, NDCG]``) and ``topk`` (e.g. ``Recall@50``,
    ``unseen/ndcg@10``; None: not set). The line names every setting that is not (a new ``topk`` can leave several
    defaults naming a cut-off no longer computed), each followed by its ``where`` (e.g. `` from --valid_metric``)."""
    allowed = result_keys(metrics, topk)
    wrong = [f"{key} {value!r}{where}" for key, value, where in named
             if value is not None and str(value).lower() not in allowed]
    if wrong:
        overall = [key for key in allowed if "/" not in key]
        raise ValueError(f"{'; '.join(wrong)}: not computed with metrics {list(requested_metrics(metrics))} and "
                         f"topk {list(topk)}; expected one of {overall} (optionally prefixed in_sample/ or unseen/)")


def ranked_scores(n_items, items, scores, valid):
    """The ``[B, n_items]`` score matrix of ranked lists, −inf off the lists: what ``full_sort_predict`` returns for a
    model that outputs a list (TIGER, SpecGR) rather than a score per item.

    Each score is kept, except that one not below the previous entry's is lowered to the next float below it, so
    ``torch.topk`` of the matrix (the evaluator) returns every list in its own order: ``topk``'s order among equal
    scores is unspecified, and equal scores occur (unseen items sharing their first l−1 digits have equal V).

    Args:
        items: ``[B, M]`` item ids in list order.
        scores: ``[B, M]`` their scores, non-increasing for a list ranked by score.
        valid: ``[B, M]`` bool, False = no item (padding, anywhere in the list).
    """
    valid = valid & ~scores.isnan()  # a NaN score lists nothing (and would not carry into later entries)
    order = (~valid).long().argsort(dim=1, stable=True)  # the items first, in list order
    items, valid = items.gather(1, order), valid.gather(1, order)
    strict = scores.float().gather(1, order).masked_fill(~valid, float("-inf"))
    not_below = (strict[:, 1:] >= strict[:, :-1]) & valid[:, 1:]  # [B, M − 1] entries to lower (ties, mostly)
    if bool(not_below.any()):  # rare outside the paper's ranking: only those rows, from the first such column
        rows = torch.nonzero(not_below.any(dim=1)).squeeze(1)
        strict[rows] = _strictly_decreasing(strict[rows], int(not_below.any(dim=0).nonzero()[0]) + 1)
    out = torch.full((items.size(0), n_items), float("-inf"), device=items.device)
    out.scatter_(1, items.masked_fill(~valid, 0), strict)
    out[:, 0] = float("-inf")
    return out


def _strictly_decreasing(scores, first_col):
    """``scores`` [R, M] with each entry from ``first_col`` on lowered, where needed, to the next float below the
    entry before it (−inf stays −inf)."""
    below = torch.tensor(float("-inf"), device=scores.device)
    tiny = torch.finfo(torch.float32).tiny  # the step below 0.0 where denormals are flushed (the trainer's setting)
    for col in range(first_col, scores.size(1)):  # M ≤ a few K: a short loop over columns
        prev = scores[:, col - 1]
        step = torch.nextafter(prev, below)
        scores[:, col] = torch.minimum(scores[:, col], torch.where(step < prev, step, prev - tiny))
    return scores


def list_ranks(items, scores, valid, targets, max_k):
    """0-based rank of each target in its ranked list (``max_k`` where it is absent or ranked ``max_k`` or below): what
    :func:`topk_hits` with ``distinct`` gives on :func:`ranked_scores` of the same list, without its ``[B, n_items]``
    matrix (a grid ranks hundreds of lists per batch), for lists as SpecGR makes them: distinct items, finite
    scores where listed (a repeated item or a listed ±inf score is ranked by its first entry here).

    Args:
        items, scores, valid: ``[B, M]`` the lists, as :func:`ranked_scores` takes them.
        targets: ``[B]`` target item ids.
    """
    if items.size(1) == 0:  # empty lists: every target missed
        return torch.full_like(targets, max_k)
    valid = valid & ~scores.isnan() & (items != 0)  # what ranked_scores lists
    position = valid.long().cumsum(dim=1) - 1  # [B, M] each entry's place among the listed ones
    at_target = valid & (items == targets[:, None])
    return torch.where(at_target, position, max_k).amin(dim=1).clamp(max=max_k)


def topk_hits(scores, targets, max_k, distinct=False):
    """0-based rank of each target inside the top ``max_k`` (``max_k`` where it is absent or scored −inf).

    Args:
        scores: ``[B, n_items]`` scores, −inf = not recommended (so is NaN, in both ways of ranking).
        targets: ``[B]`` target item ids.
        distinct: the finite scores of a row are all different (a :func:`ranked_scores` matrix): the rank is the
            number of scores above the target's, one comparison instead of a top-k (a γ grid ranks hundreds of them).
    Returns:
        ``[B]`` long tensor of ranks.
    """
    if distinct:  # NaN compares False and is not finite: neither above the target nor a hit
        target = scores.gather(1, targets[:, None])  # [B, 1]
        rank = (scores > target).sum(dim=1)
        return torch.where(torch.isfinite(target[:, 0]) & (rank < max_k), rank, torch.full_like(targets, max_k))
    nan = torch.isnan(scores)
    if nan.any():  # topk would put NaN above every score
        scores = scores.masked_fill(nan, -math.inf)
    top_scores, top_items = torch.topk(scores, max_k, dim=1)  # [B, K]
    hit = (top_items == targets[:, None]) & torch.isfinite(top_scores)
    rank = torch.where(hit.any(dim=1), hit.float().argmax(dim=1), torch.full_like(targets, max_k))
    return rank


class SplitMetrics:
    """Accumulates per-row ranks and seen flags over batches; :meth:`result` gives the flat metric dict of
    ``metrics`` (Recall and/or NDCG) at every K of ``topk``."""

    def __init__(self, topk, seen_item_mask, metrics=METRICS):
        self.topk = sorted(topk)
        self.metrics = requested_metrics(metrics)
        self.seen_item_mask = seen_item_mask.cpu()
        self.ranks, self.seen = [], []

    def add(self, scores, targets, distinct=False):
        """One batch: ``scores`` [B, n] and ``targets`` [B]; ``distinct``: see :func:`topk_hits`."""
        self.add_ranks(topk_hits(scores, targets.to(scores.device), self.max_k, distinct), targets)

    def add_ranks(self, ranks, targets):
        """One batch of known ranks: ``ranks`` [B] (0-based, ``max_k`` = a miss, see :func:`list_ranks`) of the
        ``targets`` [B]."""
        self.ranks.append(ranks.clamp(max=self.max_k).cpu())
        self.seen.append(self.seen_item_mask[targets.cpu()])

    @property
    def max_k(self):
        """The largest K: ranks at it or beyond are misses."""
        return self.topk[-1]

    def row_values(self, key):
        """``[rows]`` float per-row contributions to the metric ``key`` (e.g. ``recall@50``, ``unseen/ndcg@10``): hit
        (0/1) or 1 / log2(rank + 2) for a hit, over the rows of the key's subset. Their mean is :meth:`result`'s."""
        ranks, seen = torch.cat(self.ranks).double(), torch.cat(self.seen)
        subset, _, metric = key.rpartition("/")
        rows = {"": torch.ones_like(seen), "in_sample": seen, "unseen": ~seen}[subset]
        name, k = metric.split("@")
        return _hit_values(name, ranks[rows], int(k))

    def result(self):
        """``{"recall@10": …, "in_sample/recall@10": …, "unseen/n_cases": …}`` (overall keys unprefixed), the
        requested metrics only."""
        ranks, seen = torch.cat(self.ranks), torch.cat(self.seen)
        out = OrderedDict()
        for subset, rows in zip(SUBSETS, (torch.ones_like(seen), seen, ~seen)):
            prefix = "" if subset == "overall" else subset + "/"
            r = ranks[rows].double()
            for k in self.topk:
                for name in self.metrics:
                    mean = _hit_values(name, r, k).mean().item() if len(r) else float("nan")
                    out[f"{prefix}{name}@{k}"] = round(mean, 6)
            out[f"{prefix}n_cases"] = int(rows.sum())
        return out


def _hit_values(name, ranks, k):
    """Per-row ``recall@k`` (hit: 0/1) or ``ndcg@k`` (1 / log2(rank + 2) for a hit) of ``ranks`` (0-based, double)."""
    hit = ranks < k
    return hit.double() if name == "recall" else torch.where(hit, 1.0 / torch.log2(ranks + 2.0), 0.0)


def nest_result(flat):
    """Flat metric dict → ``{"overall": {...}, "in_sample": {...}, "unseen": {...}, <other keys>: ...}``."""
    nested = {subset: {} for subset in SUBSETS}
    for key, value in flat.items():
        subset, _, metric = key.rpartition("/")
        if not subset:
            subset = "overall" if ("@" in key or key == "n_cases") else None
        if subset in nested:
            nested[subset][metric] = value
        else:
            nested.setdefault("extra", {})[key] = value
    return nested


def format_breakdown(nested, title):
    """A small text table of one nested result, for the log."""
    subsets = [s for s in SUBSETS if nested.get(s)]
    metrics = [m for m in nested["overall"] if m != "n_cases"]
    lines = [title, f"{'subset':<10} {'cases':>7} " + " ".join(f"{m:>10}" for m in metrics)]
    for s in subsets:
        row = nested[s]
        lines.append(f"{s:<10} {row.get('n_cases', 0):>7} " + " ".join(f"{row.get(m, float('nan')):>10.4f}" for m in metrics))
    return "\n".join(lines)
