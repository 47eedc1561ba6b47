"""Prefix tables and constrained beam search against hand-made cases and brute-force enumeration.

The decoder here is a lookup table: log P(c_j | prefix, user) = ``log_probs[user, j, radix(prefix), :]``, so every
item's sequence log-likelihood can be enumerated exactly.
"""

import itertools

import pytest
import torch

from recbole_specgr.inference import beam_search as beam_search_module
from recbole_specgr.inference.beam_search import ConstrainedBeamSearch, constrained_beam_search, user_groups
from recbole_specgr.inference.interfaces import EncoderState
from recbole_specgr.inference.prefix_index import PrefixIndex

NEG_INF = float("-inf")


pytestmark = pytest.mark.usefixtures("single_thread")


def random_catalog(n_items, n_digits, codebook_size, seed=0):
    """Distinct random codes for items 1..n_items (few of the C^l possible codes exist): [n_items + 1, l]."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(codebook_size**n_digits, generator=g)[:n_items]
    powers = codebook_size ** torch.arange(n_digits - 1, -1, -1)
    codes = (flat[:, None] // powers) % codebook_size
    return torch.cat([torch.full((1, n_digits), -1), codes]).long()


class TableDecoder:
    """StepDecoder whose rows carry (user, prefix radix); counts its steps."""

    def __init__(self, n_users, n_digits, codebook_size, seed=0):
        g = torch.Generator().manual_seed(seed)
        logits = 3 * torch.randn(n_users, n_digits, codebook_size ** (n_digits - 1), codebook_size, generator=g)
        self.log_probs = logits.log_softmax(dim=-1)  # [U, l, C^(l-1), C]
        self.C = codebook_size
        self.n_steps = 0
        self.n_rows = 0  # decoder rows over all steps
        self.call_users = []  # per decode_step call: the users its rows belong to

    def start_decoding(self, enc):
        users = enc.hidden[:, 0, 0].long()  # [B]
        return users, torch.zeros_like(users), 0  # per row: user, radix of the prefix; depth

    def decode_step(self, state, codes):
        users, radix, depth = state
        if codes is not None:
            radix = radix * self.C + codes
        self.n_steps += 1
        self.n_rows += users.numel()
        self.call_users.append(set(users.tolist()))
        return self.log_probs[users, depth, radix], (users, radix, depth + 1)

    def reorder_decoding(self, state, rows, users=None):  # every row carries its user: nothing per user to keep
        users, radix, depth = state
        return users[rows], radix[rows], depth

    def sequence_log_probs(self, users, item2codes):
        """Brute force: [B] users -> [B, n] summed log-probs of every item's full code (−inf for padding)."""
        n, l = item2codes.shape
        out = torch.full((len(users), n), NEG_INF)
        for b, u in enumerate(users.tolist()):
            for i in range(1, n):
                codes, radix, total = item2codes[i].tolist(), 0, 0.0
                for j, c in enumerate(codes):
                    total += float(self.log_probs[u, j, radix, c])
                    radix = radix * self.C + c
                out[b, i] = total
        return out


def encoder_state(users):
    users = torch.as_tensor(users)
    return EncoderState(users.float()[:, None, None], torch.ones(len(users), 1, dtype=torch.bool))


def run(decoder, users, beam_size, tables):
    return list(constrained_beam_search(decoder, encoder_state(users), beam_size, tables))


# ---------------------------------------------------------------- prefix index
def test_prefix_index_exact_tables():
    item2codes = torch.tensor([[-1, -1], [0, 1], [0, 2], [1, 0]])
    index = PrefixIndex(item2codes, codebook_size=3)
    assert index.child_table(0).tolist() == [[0, 1, -1]]  # prefixes (0) -> node 0, (1) -> node 1
    assert index.child_table(1).tolist() == [[-1, 1, 2], [3, -1, -1]]  # leaves are item ids
    assert index.item_nodes(1).tolist() == [-1, 0, 0, 1]
    assert index.lookup(torch.tensor([[0], [1], [2], [-1]])).tolist() == [0, 1, -1, -1]
    assert index.lookup(torch.tensor([[0, 2], [1, 0], [1, 1]])).tolist() == [2, 3, -1]
    tables = index.restrict(torch.tensor([False, True, False, False]))  # only item 1
    assert tables[0].tolist() == [[0, -1, -1]]
    assert tables[1].tolist() == [[-1, 1, -1], [-1, -1, -1]]


def test_prefix_index_rejects_bad_codes():
    with pytest.raises(ValueError, match="share their full code"):
        PrefixIndex(torch.tensor([[-1, -1], [0, 1], [0, 1]]), codebook_size=2)
    with pytest.raises(ValueError, match=r"codes in \[0, 2\)"):
        PrefixIndex(torch.tensor([[-1, -1], [0, 2]]), codebook_size=2)
    with pytest.raises(ValueError, match="item_mask"):
        PrefixIndex(torch.tensor([[-1, -1], [0, 1]]), codebook_size=2).restrict(torch.ones(3, dtype=torch.bool))


def test_prefix_lookup_matches_enumeration():
    item2codes = random_catalog(40, 3, 5, seed=3)
    index = PrefixIndex(item2codes, 5)
    for j in (1, 2):
        real = {tuple(r) for r in item2codes[1:, :j].tolist()}
        every = torch.tensor(list(itertools.product(range(5), repeat=j)))
        nodes = index.lookup(every)
        assert ((nodes >= 0).tolist()) == [tuple(p) in real for p in every.tolist()]
        assert torch.equal(index.lookup(item2codes[1:, :j]), index.item_nodes(j)[1:])
    assert torch.equal(index.lookup(item2codes[1:]), torch.arange(1, 41))


# ---------------------------------------------------------------- strategy
def test_strategy_step_exact():
    search = ConstrainedBeamSearch(beam_size=3)
    lprobs = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]]))  # [B=1, β_in=2, C=3]
    scores = torch.tensor([[-1.0, -2.0]])
    allowed = torch.tensor([[[True, False, True], [True, True, True]]])
    top, tokens, beam_idx = search.step(1, lprobs, scores, allowed)
    # candidates: (b0,c0) -1+log.5, (b0,c2) -1+log.2, (b1,c0) -2+log.1, (b1,c1) -2+log.1, (b1,c2) -2+log.8
    assert beam_idx.tolist() == [[0, 1, 0]] and tokens.tolist() == [[0, 2, 2]]
    assert torch.allclose(top, torch.tensor([[-1.0, -2.0, -1.0]]) + torch.tensor([[0.5, 0.8, 0.2]]).log())
    # step 0: only the first beam expands; more beams than candidates are padded with -inf
    top, tokens, beam_idx = ConstrainedBeamSearch(5).step(0, lprobs, torch.zeros(1, 2), allowed)
    assert beam_idx[0].tolist()[:2] == [0, 0] and tokens[0].tolist()[:2] == [0, 2]
    assert top[0, 2:].tolist() == [NEG_INF] * 3


# ---------------------------------------------------------------- driver vs brute force
@pytest.mark.parametrize("n_items,n_digits,C", [(25, 3, 4), (60, 4, 3)])
def test_wide_beam_is_exact_top_k(n_items, n_digits, C):
    item2codes = random_catalog(n_items, n_digits, C, seed=n_items)
    index = PrefixIndex(item2codes, C)
    decoder = TableDecoder(4, n_digits, C, seed=1)
    users = torch.tensor([0, 1, 2, 3])
    mask = torch.ones(n_items + 1, dtype=torch.bool)
    steps = run(decoder, users, n_items, index.restrict(mask))
    assert [s.depth for s in steps] == list(range(1, n_digits + 1))
    brute = decoder.sequence_log_probs(users, item2codes)  # [B, n]
    expected_scores, expected_items = brute.topk(n_items, dim=1)
    final = steps[-1]
    assert final.valid.all()
    assert torch.equal(final.items, expected_items)
    assert torch.allclose(final.scores, expected_scores, atol=1e-5)
    assert torch.equal(final.prefixes, item2codes[final.items])


def test_narrow_beam_yields_only_real_prefixes_with_true_scores():
    n_items, l, C, beam = 30, 3, 6, 7  # 30 of 216 codes exist: most prefixes lead nowhere
    item2codes = random_catalog(n_items, l, C, seed=5)
    index = PrefixIndex(item2codes, C)
    decoder = TableDecoder(3, l, C, seed=2)
    users = torch.tensor([0, 1, 2])
    brute = decoder.sequence_log_probs(users, item2codes)
    for step in run(decoder, users, beam, index.restrict(torch.ones(n_items + 1, dtype=torch.bool))):
        real = {tuple(r) for r in item2codes[1:, : step.depth].tolist()}
        for b in range(3):
            prefixes = [tuple(p) for p, v in zip(step.prefixes[b].tolist(), step.valid[b].tolist()) if v]
            assert set(prefixes) <= real and len(set(prefixes)) == len(prefixes)
    items = step.items
    assert (items > 0).all() and items.unique(dim=1).shape[1] == beam
    assert torch.allclose(step.scores, brute.gather(1, items), atol=1e-5)


def test_intermediate_beams_hold_all_prefixes_when_wide():
    item2codes = random_catalog(20, 3, 4, seed=7)
    index = PrefixIndex(item2codes, 4)
    decoder = TableDecoder(2, 3, 4, seed=3)
    steps = run(decoder, torch.tensor([0, 1]), 20, index.restrict(torch.ones(21, dtype=torch.bool)))
    for step in steps:
        real = {tuple(r) for r in item2codes[1:, : step.depth].tolist()}
        got = {tuple(p) for p, v in zip(step.prefixes[0].tolist(), step.valid[0].tolist()) if v}
        assert got == real
        assert (step.prefixes[~step.valid] == -1).all()


def test_item_mask_restricts_and_stays_exact():
    item2codes = random_catalog(40, 3, 4, seed=11)
    index = PrefixIndex(item2codes, 4)
    mask = torch.zeros(41, dtype=torch.bool)
    mask[torch.tensor([3, 7, 8, 15, 22, 39])] = True
    decoder = TableDecoder(2, 3, 4, seed=4)
    users = torch.tensor([0, 1])
    final = run(decoder, users, 10, index.restrict(mask))[-1]
    assert final.valid.sum(dim=1).tolist() == [6, 6]
    assert set(final.items[final.valid].tolist()) == {3, 7, 8, 15, 22, 39}
    assert (final.items[~final.valid] == 0).all()
    brute = decoder.sequence_log_probs(users, item2codes).masked_fill(~mask, NEG_INF)
    top, idx = brute.topk(6, dim=1)
    assert torch.equal(final.items[:, :6], idx) and torch.allclose(final.scores[:, :6], top, atol=1e-5)


def test_generator_is_lazy():
    item2codes = random_catalog(20, 3, 4)
    decoder = TableDecoder(1, 3, 4)
    tables = PrefixIndex(item2codes, 4).restrict(torch.ones(21, dtype=torch.bool))
    steps = constrained_beam_search(decoder, encoder_state([0]), 5, tables)
    first = next(steps)
    assert first.depth == 1 and first.items is None and decoder.n_steps == 1


def test_send_narrows_later_digits_to_the_users_asked_for():
    """After ``send(mask)`` the kept users' beams are exactly the full search's, the others have none, and the
    dropped users' rows are no longer decoded (users 1 and 3 dropped after digit 1, user 0 after digit 2)."""
    item2codes = random_catalog(40, 3, 4, seed=3)
    tables = PrefixIndex(item2codes, 4).restrict(torch.ones(41, dtype=torch.bool))
    users = [0, 1, 2, 3]
    full = run(TableDecoder(4, 3, 4, seed=5), users, 6, tables)
    decoder = TableDecoder(4, 3, 4, seed=5)
    steps = constrained_beam_search(decoder, encoder_state(users), 6, tables)
    narrowed = [next(steps), steps.send(torch.tensor([True, False, True, False])),
                steps.send(torch.tensor([False, True, True, False]))]  # user 1 stays dropped once dropped
    kept_by_step = [[0, 1, 2, 3], [0, 2], [2]]
    for got, expect, kept in zip(narrowed, full, kept_by_step):
        assert got.depth == expect.depth
        for field in ("prefixes", "scores", "valid") + (("items",) if expect.items is not None else ()):
            assert torch.equal(getattr(got, field)[kept], getattr(expect, field)[kept]), (got.depth, field)
        gone = [u for u in users if u not in kept]
        assert not got.valid[gone].any() and (got.scores[gone] == NEG_INF).all() and (got.prefixes[gone] == -1).all()
    assert (narrowed[-1].items[[0, 1, 3]] == 0).all()
    # digit 1: one row per user; digit 2: a row per beam of B_1 (the C = 4 first digits: β = 6 rows would hold 2
    # beams that no user has); digit 3: β rows per kept user
    assert [int(s.valid.sum(dim=1).max()) for s in full[:2]] == [4, 6]
    assert decoder.n_rows == 4 + 2 * 4 + 1 * 6


def test_send_without_users_decodes_nothing_more():
    item2codes = random_catalog(30, 3, 4, seed=4)
    tables = PrefixIndex(item2codes, 4).restrict(torch.ones(31, dtype=torch.bool))
    decoder = TableDecoder(2, 3, 4, seed=4)
    steps = constrained_beam_search(decoder, encoder_state([0, 1]), 5, tables)
    next(steps)
    rows = decoder.n_rows
    rest = [steps.send(torch.tensor([False, False])), next(steps)]
    assert [s.depth for s in rest] == [2, 3] and decoder.n_rows == rows
    assert all(not s.valid.any() and (s.prefixes == -1).all() for s in rest) and (rest[-1].items == 0).all()
    assert rest[-1].prefixes.shape == (2, 5, 3)


@pytest.mark.parametrize("max_rows", [1, 6, 13, 18])  # one user per group, and groups of 1, 2, 3 users (β = 6)
def test_users_searched_in_groups_give_exactly_the_beams_of_one_search(max_rows):
    """``max_rows``: groups of ``max_rows // β`` users advanced in lockstep, a ``send`` mask split among them
    (user 3 dropped after digit 1, users 0 and 4 after digit 2: some groups lose every user), history exclusion per
    user: every step equals the search of all users at once."""
    item2codes = random_catalog(60, 3, 4, seed=7)
    index = PrefixIndex(item2codes, 4)
    tables = index.restrict(torch.ones(61, dtype=torch.bool))
    excluded = torch.zeros(5, 61, dtype=torch.bool)
    excluded[torch.arange(5), item2codes.new_tensor([3, 9, 27, 41, 58])] = True
    alive = index.alive_nodes(~excluded & (torch.arange(61) > 0))
    users = [0, 1, 2, 3, 4]
    masks = [torch.tensor([True, True, True, False, True]), torch.tensor([False, True, True, False, False])]

    def steps_of(max_rows):
        decoder = TableDecoder(5, 3, 4, seed=8)
        steps = constrained_beam_search(decoder, encoder_state(users), 6, tables, alive, max_rows=max_rows)
        return [next(steps)] + [steps.send(mask) for mask in masks], decoder

    (whole, whole_decoder), (grouped, grouped_decoder) = steps_of(None), steps_of(max_rows)
    assert len(grouped) == 3 and grouped_decoder.n_rows == whole_decoder.n_rows == 5 + 4 * 4 + 2 * 6  # B_1: C = 4
    # the grouped path was taken: every call decodes the users of one group, and the first step visits each group
    per_group = max(1, max_rows // 6)
    groups = [set(range(start, min(start + per_group, 5))) for start in range(0, 5, per_group)]
    assert all(any(called <= group for group in groups) for called in grouped_decoder.call_users)
    assert grouped_decoder.call_users[:len(groups)] == groups
    assert whole_decoder.call_users[0] == set(users)
    for got, expect in zip(grouped, whole):
        assert got.depth == expect.depth
        for field in ("prefixes", "scores", "valid") + (("items",) if expect.items is not None else ()):
            assert torch.equal(getattr(got, field), getattr(expect, field)), (got.depth, field)
    assert not (grouped[-1].items[:, :, None] == torch.tensor([3, 9, 27, 41, 58])[:, None, None]).any()


@pytest.mark.parametrize("n_users, rows_per_user, max_rows, expected", [
    (5, 6, 13, [(0, 2), (2, 4), (4, 5)]),  # 13 // 6 = 2 users per group
    (5, 6, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),  # fewer rows than one user needs: one user per group
    (5, 6, None, [(0, 5)]),
    (4, 0, 3, [(0, 3), (3, 4)]),  # a user with no rows counts as one
    (0, 6, 13, []),
])
def test_user_groups_split_users_into_consecutive_groups_of_at_most_max_rows(n_users, rows_per_user, max_rows, expected):
    assert user_groups(n_users, rows_per_user, "cpu", max_rows) == expected


@pytest.mark.parametrize("rows_per_user, max_rows, expected", [
    ([3, 5, 2, 4, 1], 8, [(0, 2), (2, 5)]),  # 3 + 5 = 8 fits, + 2 would not
    ([9, 1, 0, 7], 8, [(0, 1), (1, 4)]),  # a user above max_rows alone; users with no rows cost none
    ([2, 2], None, [(0, 2)]),
    ([], 8, []),
])
def test_user_groups_of_uneven_users_sum_their_own_rows(rows_per_user, max_rows, expected):
    rows = torch.tensor(rows_per_user, dtype=torch.long)
    assert user_groups(len(rows_per_user), rows, "cpu", max_rows) == expected


def test_user_groups_use_the_cpu_cap_only_on_a_cpu(monkeypatch):
    monkeypatch.setattr(beam_search_module, "CPU_MAX_ROWS", 12)
    assert user_groups(5, 6, "cpu") == [(0, 2), (2, 4), (4, 5)]
    assert user_groups(5, 6, "meta") == [(0, 5)]


def test_max_rows_must_be_positive():
    tables = PrefixIndex(random_catalog(10, 2, 4), 4).restrict(torch.ones(11, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_rows: expected None, -1 or >= 1, got 0"):
        constrained_beam_search(TableDecoder(1, 2, 4), encoder_state([0]), 3, tables, max_rows=0)


@pytest.mark.parametrize("max_rows", [None, 6, 13])
def test_kept_log_probs_are_the_decoders_rows_after_each_beam_of_the_step_before(max_rows):
    """``keep_log_probs``: step j holds, for every beam of B_{j−1} (the empty prefix at j = 1), the decoder's
    log P(digit j | that prefix) over all C codes, exactly; users dropped by ``send`` get −inf rows; groups joined."""
    item2codes = random_catalog(60, 3, 4, seed=9)
    tables = PrefixIndex(item2codes, 4).restrict(torch.ones(61, dtype=torch.bool))
    users = [0, 1, 2, 3]
    decoder = TableDecoder(4, 3, 4, seed=10)
    steps = constrained_beam_search(decoder, encoder_state(users), 6, tables, max_rows=max_rows, keep_log_probs=True)
    got = [next(steps), steps.send(torch.tensor([True, True, False, True])), next(steps)]
    assert [tuple(s.log_probs.shape) for s in got] == [(4, 1, 4), (4, 6, 4), (4, 6, 4)]
    for j, step in enumerate(got):
        parents = [[()]] * 4 if j == 0 else [[tuple(got[j - 1].prefixes[b, k].tolist()) if got[j - 1].valid[b, k]
                                               else None for k in range(6)] for b in users]
        for b in users:
            for k, prefix in enumerate(parents[b]):
                if prefix is None or (j > 0 and b == 2):  # no beam there, or user 2 dropped before digit 2
                    continue
                radix = 0
                for c in prefix:
                    radix = radix * 4 + c
                assert torch.equal(step.log_probs[b, k], decoder.log_probs[b, j, radix]), (j, b, k)
    assert (got[1].log_probs[2] == NEG_INF).all() and (got[2].log_probs[2] == NEG_INF).all()
    plain = constrained_beam_search(TableDecoder(4, 3, 4, seed=10), encoder_state(users), 6, tables)
    assert all(step.log_probs is None for step in plain)
