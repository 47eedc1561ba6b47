"""Recall@K / NDCG@K and the in-sample / unseen split, against values computed by hand.

Five evaluation rows over 8 items (id 0 = padding); items 1, 2, 3 are seen, 4…7 unseen; K = 3 and 5::

    row  target  scores (ids 0…7)                   ranking (best first)       0-based rank
    A    1 seen  0 9 8 7 6 5 4 3                     1 2 3 4 5 …                0
    B    2 seen  0 1 6 2 9 8 7 3                     4 5 6 2 7 3 …              3
    C    3 seen  same as B                           4 5 6 2 7 | 3 …            5 (not in the top 5)
    D    5 new   0 10 10 1 1 9 1 1                   {1 2} 5 …  (a tie above)   2
    E    6 new   −inf 5 4 −inf −inf −inf −inf −inf   1 2, nothing else          5 (scored −inf)

NDCG of a hit at rank r is 1 / log2(r + 2): 1 at rank 0, 1 / log2(4) = 0.5 at rank 2, 1 / log2(5) at rank 3.
"""

import math

import pytest
import torch

from recbole_specgr.evaluation import SplitMetrics, list_ranks, nest_result, ranked_scores, topk_hits

INF = float("inf")
ROWS = {  # name: (target, scores)
    "A": (1, [0, 9, 8, 7, 6, 5, 4, 3]),
    "B": (2, [0, 1, 6, 2, 9, 8, 7, 3]),
    "C": (3, [0, 1, 6, 2, 9, 8, 7, 3]),
    "D": (5, [0, 10, 10, 1, 1, 9, 1, 1]),
    "E": (6, [-INF, 5, 4, -INF, -INF, -INF, -INF, -INF]),
}
SEEN = torch.tensor([False, True, True, True, False, False, False, False])


def batch(*names):
    """``(scores [B, 8], targets [B])`` of the named rows."""
    targets = torch.tensor([ROWS[n][0] for n in names])
    scores = torch.tensor([ROWS[n][1] for n in names], dtype=torch.float)
    return scores, targets


def test_ranks_of_hits_misses_ties_and_minus_inf():
    scores, targets = batch("A", "B", "C", "D", "E")
    assert topk_hits(scores, targets, max_k=5).tolist() == [0, 3, 5, 2, 5]


def test_a_target_past_k_is_absent_even_when_it_would_rank_next():
    scores, targets = batch("C")  # C's target is 6th
    assert topk_hits(scores, targets, max_k=6).tolist() == [5]
    assert topk_hits(scores, targets, max_k=5).tolist() == [5]  # absent reads as max_k
    assert topk_hits(scores, targets, max_k=3).tolist() == [3]


@pytest.mark.parametrize("distinct", [False, True])
def test_a_nan_score_is_not_recommended_in_either_way_of_ranking(distinct):
    inf, nan = float("inf"), float("nan")
    scores = torch.tensor([[-inf, 1.0, nan, 0.5, 0.2], [-inf, nan, nan, 0.1, 0.3]])
    assert topk_hits(scores, torch.tensor([3, 2]), 2, distinct=distinct).tolist() == [1, 2]  # 2nd; NaN target: absent


def test_fewer_than_k_finite_scores():
    """A model may recommend fewer than K items: its −inf slots are never hits, its finite ones still are."""
    scores = torch.tensor([[-INF, 5.0, 4.0, -INF]] * 3)
    targets = torch.tensor([1, 2, 3])  # rank 0, rank 1, scored −inf (returned by topk among all 4 items)
    assert topk_hits(scores, targets, max_k=4).tolist() == [0, 1, 4]


def test_a_target_tied_with_another_item_takes_one_of_the_tied_ranks():
    scores = torch.tensor([[0.0, 3.0, 2.0, 2.0, 1.0]])
    assert topk_hits(scores, torch.tensor([2]), max_k=4).item() in (1, 2)
    assert topk_hits(scores, torch.tensor([4]), max_k=4).item() == 3  # ties above it do not move it


def test_split_metrics_by_hand():
    metrics = SplitMetrics([5, 3], SEEN)  # unsorted K on purpose
    metrics.add(*batch("A", "B", "C"))  # two batches are accumulated
    metrics.add(*batch("D", "E"))
    ndcg_rank3 = 1 / math.log2(5)
    expected = {
        # overall: hits A@0, D@2 within 3; plus B@3 within 5
        "recall@3": 2 / 5, "ndcg@3": (1 + 0.5) / 5,
        "recall@5": 3 / 5, "ndcg@5": (1 + ndcg_rank3 + 0.5) / 5,
        "n_cases": 5,
        # in-sample rows A, B, C
        "in_sample/recall@3": 1 / 3, "in_sample/ndcg@3": 1 / 3,
        "in_sample/recall@5": 2 / 3, "in_sample/ndcg@5": (1 + ndcg_rank3) / 3,
        "in_sample/n_cases": 3,
        # unseen rows D, E
        "unseen/recall@3": 1 / 2, "unseen/ndcg@3": 0.5 / 2,
        "unseen/recall@5": 1 / 2, "unseen/ndcg@5": 0.5 / 2,
        "unseen/n_cases": 2,
    }
    result = metrics.result()
    assert list(result) == list(expected)
    assert result == pytest.approx(expected, abs=1e-6)
    assert result["ndcg@5"] == pytest.approx(0.386135, abs=1e-6)  # the formula above, worked out


@pytest.mark.parametrize("names", [["NDCG"], ["recall"], "Recall", ["NDCG", "Recall"]])
def test_split_metrics_computes_only_the_requested_metrics_with_the_same_values(names):
    every, some = SplitMetrics([5, 3], SEEN), SplitMetrics([5, 3], SEEN, names)
    for metrics in (every, some):
        metrics.add(*batch("A", "B", "C", "D", "E"))
    wanted = {n.lower() for n in ([names] if isinstance(names, str) else names)}
    expected = {key: value for key, value in every.result().items()
                if key.endswith("n_cases") or key.rpartition("/")[2].split("@")[0] in wanted}
    assert list(some.result()) == list(expected) and some.result() == expected  # the same floats, in the same order


def test_empty_subset_is_nan_with_zero_cases():
    metrics = SplitMetrics([1], SEEN)
    metrics.add(*batch("A"))
    result = metrics.result()
    assert result["recall@1"] == 1.0 and result["ndcg@1"] == 1.0 and result["n_cases"] == 1
    assert math.isnan(result["unseen/recall@1"]) and math.isnan(result["unseen/ndcg@1"])
    assert result["unseen/n_cases"] == 0


def test_nest_result():
    flat = {
        "recall@10": 0.5, "n_cases": 4,
        "in_sample/recall@10": 0.75, "in_sample/n_cases": 3,
        "unseen/recall@10": 0.0, "unseen/n_cases": 1,
        "acceptance_rate": 0.9, "specgr/mean_rounds": 1.5,
    }
    assert nest_result(flat) == {
        "overall": {"recall@10": 0.5, "n_cases": 4},
        "in_sample": {"recall@10": 0.75, "n_cases": 3},
        "unseen": {"recall@10": 0.0, "n_cases": 1},
        "extra": {"acceptance_rate": 0.9, "specgr/mean_rounds": 1.5},
    }
    assert nest_result({}) == {"overall": {}, "in_sample": {}, "unseen": {}}


def test_row_values_average_to_the_result_on_every_subset():
    seen = torch.tensor([False, True, True, False, True])
    metrics = SplitMetrics([2, 3], seen)
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 9.0, 1.0, 2.0, 3.0]])
    metrics.add(scores, torch.tensor([2, 3, 1]))  # ranks 1 (seen), 1 (unseen), 0 (seen)
    result = metrics.result()
    for key in ("recall@2", "ndcg@3", "in_sample/recall@2", "unseen/ndcg@2", "in_sample/ndcg@3"):
        assert metrics.row_values(key).mean().item() == pytest.approx(result[key], abs=1e-6), key
    assert metrics.row_values("ndcg@2").tolist() == pytest.approx([1 / math.log2(3), 1 / math.log2(3), 1.0])
    assert metrics.row_values("unseen/recall@2").tolist() == [1.0]


def test_ranked_scores_make_topk_return_each_list_in_its_own_order():
    """Equal scores (unseen items sharing a prefix have equal V) and padding anywhere in a list: every top-k of the
    matrix is the list's first k items, and only tied scores move, by a few floats."""
    n_items = 12
    items = torch.tensor([[9, 4, 7, 0, 2, 5], [3, 11, 6, 8, 1, 10]])
    scores = torch.tensor([[-1.0, -2.0, -2.0, -3.0, -2.0, -5.0], [-0.5, -0.5, -0.5, -0.5, -0.5, -0.5]])
    valid = torch.tensor([[True, True, True, False, True, True], [True] * 6])
    out = ranked_scores(n_items, items, scores, valid)
    lists = [[9, 4, 7, 2, 5], [3, 11, 6, 8, 1, 10]]
    for row, expected in enumerate(lists):
        for k in range(1, len(expected) + 1):
            assert out[row].topk(k).indices.tolist() == expected[:k]
        assert torch.isinf(out[row]).sum() == n_items - len(expected)  # item 0 and everything off the list
    assert out[0, 9] == -1.0 and out[0, 4] == -2.0 and out[0, 5] == -5.0  # untied scores are kept
    assert -2.0 > out[0, 7] > out[0, 2] >= -2.0 - 1e-5
    assert torch.equal(out[1, [3, 11, 6, 8, 1, 10]].diff() < 0, torch.ones(5, dtype=torch.bool))


def test_ranked_scores_keep_the_list_order_at_zero_with_denormals_flushed_and_skip_nan():
    """The CPU trainer flushes denormals, so the float just below 0.0 reads as 0.0: ties at 0 still get an order. A
    NaN score lists nothing, and the items after it keep their places."""
    torch.set_flush_denormal(True)  # (where the CPU has no such mode this call is a no-op, and the case holds too)
    try:
        out = ranked_scores(7, torch.tensor([[1, 2, 3, 4, 5]]), torch.zeros(1, 5), torch.ones(1, 5, dtype=torch.bool))
        assert out[0].topk(5).indices.tolist() == [1, 2, 3, 4, 5]
    finally:
        torch.set_flush_denormal(False)
    out = ranked_scores(7, torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([[-1.0, math.nan, -2.0, -3.0, -4.0]]),
                        torch.ones(1, 5, dtype=torch.bool))
    assert out[0].topk(4).indices.tolist() == [1, 3, 4, 5] and out[0, 2] == -math.inf
    assert topk_hits(out, torch.tensor([3]), max_k=4).item() == 1


@pytest.mark.parametrize("seed", range(3))
def test_ranks_of_ranked_lists_by_counting_equal_those_of_a_top_k(seed):
    """``distinct=True`` (a :func:`ranked_scores` matrix, as the γ grid hands over) counts the scores above the target
    instead of a top-k: the same rank for targets in the list, after the K-th place, off the list and in short lists."""
    g = torch.Generator().manual_seed(seed)
    n, B, K = 40, 64, 10
    items = torch.stack([torch.randperm(n - 1, generator=g)[:K + 5] + 1 for _ in range(B)])  # lists of 15 > K
    scores = torch.randint(-6, 0, items.shape, generator=g).float().sort(dim=1, descending=True).values  # ties
    valid = torch.rand(items.shape, generator=g) > 0.2  # holes and short lists
    out = ranked_scores(n, items, scores, valid)
    targets = torch.where(torch.rand(B, generator=g) < 0.7, items[:, torch.randint(0, K + 5, (1,), generator=g)][:, 0],
                          torch.randint(1, n, (B,), generator=g))
    counted = topk_hits(out, targets, K, distinct=True)
    assert torch.equal(counted, topk_hits(out, targets, K))
    assert (counted < K).any() and (counted == K).any()


@pytest.mark.parametrize("seed", range(3))
def test_ranks_read_off_the_lists_equal_those_of_the_score_matrix(seed):
    """:func:`list_ranks` (the γ grid's way, no ``[B, n]`` matrix) gives each target the rank that
    :func:`topk_hits` gives on :func:`ranked_scores` of the same lists: holes, NaN scores (not listed), the padding
    item, targets after the K-th place and off the list."""
    g = torch.Generator().manual_seed(seed)
    n, B, K = 40, 64, 10
    items = torch.stack([torch.randperm(n - 1, generator=g)[:K + 5] + 1 for _ in range(B)])
    items[torch.rand(items.shape, generator=g) < 0.05] = 0  # the padding item in a list: never a hit
    scores = torch.randint(-6, 0, items.shape, generator=g).float().sort(dim=1, descending=True).values
    scores[torch.rand(items.shape, generator=g) < 0.1] = math.nan
    valid = torch.rand(items.shape, generator=g) > 0.2
    targets = torch.where(torch.rand(B, generator=g) < 0.7, items[:, torch.randint(0, K + 5, (1,), generator=g)][:, 0],
                          torch.randint(1, n, (B,), generator=g)).clamp(min=1)
    expected = topk_hits(ranked_scores(n, items, scores, valid), targets, K, distinct=True)
    got = list_ranks(items, scores, valid, targets, K)
    assert torch.equal(got, expected)
    assert (got < K).any() and (got == K).any() and (got > 0).any()
    empty = list_ranks(items[:, :0], scores[:, :0], valid[:, :0], targets, K)  # no list at all: every target missed
    assert torch.equal(empty, topk_hits(ranked_scores(n, items[:, :0], scores[:, :0], valid[:, :0]), targets, K,
                                        distinct=True)) and (empty == K).all()
    metrics, by_matrix = SplitMetrics([5, K], torch.rand(n) < 0.5), SplitMetrics([5, K], torch.rand(n) < 0.5)
    by_matrix.seen_item_mask = metrics.seen_item_mask
    metrics.add_ranks(got, targets)
    by_matrix.add(ranked_scores(n, items, scores, valid), targets, distinct=True)
    assert metrics.result() == by_matrix.result()



def test_a_run_reports_only_the_metrics_it_asks_for(small_config):
    """``metrics: [NDCG]`` computed Recall too and reported both (log, result JSON, learning curve)."""
    from recbole_specgr.quick_start import objective_function

    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "n_layers": 1, "hidden_size": 16,
              "inner_size": 16, "train_batch_size": 2048, "metrics": ["NDCG"], "valid_metric": "NDCG@50"}
    result = objective_function(config)
    for split in ("valid", "test"):
        for subset in ("overall", "in_sample", "unseen"):
            assert sorted(result[split][subset]) == ["n_cases", "ndcg@10", "ndcg@50"], (split, subset)
    validated = [epoch for epoch in result["learning_curve"] if "valid" in epoch]
    assert validated and all("recall@50" not in str(epoch) and "ndcg@50" in str(epoch) for epoch in validated)
