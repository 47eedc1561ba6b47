"""Speculative inference (recbole_specgr.inference.specgr / drafting) on tiny hand-made verifier and drafter."""

import itertools
import math

import pytest
import torch

from recbole_specgr.inference.drafting import DraftIndex, DraftMask
from recbole_specgr.inference.interfaces import BeamStep
from recbole_specgr.inference.prefix_index import PrefixIndex
from recbole_specgr.inference.specgr import (CompleteBeams, SpeculativeRecommender, Thresholds, beam_log_probs,
                                            beam_nodes, recent_unseen_share, verification_scores)
from recbole_specgr.inference import text_prior as text_prior_module
from recbole_specgr.inference.text_prior import TextPrior
from fakes import FixedDrafter, NoBeamTables, TableVerifier, make_catalog, user_seq

N_ITEMS, N_UNSEEN, N_USERS, DIM = 20, 6, 5, 8


def build(seed=0, n_items=N_ITEMS, n_unseen=N_UNSEEN, n_users=N_USERS, n_digits=3, codebook_size=3):
    item2codes, seen = make_catalog(n_items, n_digits, codebook_size, n_unseen, seed=seed)
    verifier = TableVerifier(item2codes, n_users, generable=seen, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    drafter = FixedDrafter(torch.randn(n_users, DIM, generator=g), torch.randn(n_items + 1, DIM, generator=g))
    return verifier, drafter, seen


def text_prior(seed=0, n_items=N_ITEMS):
    """Random item texts (4-d) and a centre c̄ = 0.2; a fake user u's history is item u alone (``user_seq``)."""
    texts = torch.randn(n_items + 1, 4, generator=torch.Generator().manual_seed(seed + 200))
    return TextPrior(texts, last_n=3, center=0.2)


def text_logit(prior, user, item, tau=1.0):
    """β's logit s_t by hand: (cos(x_user, x_item) − c̄) / τ (the query is the one history item's text)."""
    x = prior.item_vectors
    return (float(x[user] @ x[item]) / float(x[user].norm() * x[item].norm()) - prior.center) / tau


def count_calls(monkeypatch, owner, name):
    """A list that grows by one at each call of ``owner.name`` (the call itself unchanged): tells which way a
    function that has two equal-valued paths went."""
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def ranked(scores_row):
    """(item, score) of the finite entries of a [n] score row, best first."""
    finite = torch.nonzero(scores_row > -math.inf).squeeze(1)
    order = scores_row[finite].argsort(descending=True, stable=True)
    return [(int(finite[o]), float(scores_row[finite[o]])) for o in order]


def assert_same_ranking(got, expect, seen):
    """Same scores in the same order, and the same items per score except where tied unseen items are cut (unseen
    items sharing their l−1 semantic digits have equal eq. 2 scores, and either may be kept: at the end of the list,
    or where the fill from rejected drafts stops)."""
    assert [s for _, s in got] == pytest.approx([s for _, s in expect], abs=1e-5), (got, expect)
    groups = lambda pairs: {round(s, 4): {i for i, t in pairs if round(t, 4) == round(s, 4)} for _, s in pairs}
    g, e = groups(got), groups(expect)
    lowest = min(e) if e else None
    for s in e:
        if s != lowest and g[s] != e[s]:
            assert len(g[s]) == len(e[s]) and not any(seen[i] for i in g[s] ^ e[s]), (got, expect)


def eq2(verifier, user, item, seen, adjust=True):
    lp = verifier.digit_table(user, verifier.item2codes[item].tolist())
    return sum(lp[:-1]) / (len(lp) - 1) if adjust and not seen[item] else sum(lp) / len(lp)


def beams_of(verifier, user, beam_size):
    """The fake's beam sets for one user: {depth: [(prefix tuple, score, item)]} in beam order."""
    out = {}
    for step in verifier.beam_search(verifier.encode(*user_seq([user])), beam_size):
        rows = []
        for k in range(beam_size):
            if step.valid[0, k]:
                item = int(step.items[0, k]) if step.items is not None else None
                rows.append((tuple(step.prefixes[0, k].tolist()), float(step.scores[0, k]), item))
        out[step.depth] = rows
    return out


def oracle_beams(verifier, user, beam_size, allowed=None):
    """Exact beam search for one user in plain Python, over the prefixes of the generable items it may get
    (``allowed`` [n], default all): {depth: [(prefix tuple, score, item)]}, best first."""
    l = verifier.n_digits
    codes = {tuple(verifier.item2codes[i].tolist()): i for i in range(1, verifier.item2codes.size(0))
             if verifier.generable[i] and (allowed is None or allowed[i])}
    beams, out = [((), 0.0)], {}
    for j in range(1, l + 1):
        grown = {c[:j]: s + verifier.digit_table(user, c[:j])[-1] for p, s in beams for c in codes if c[:j - 1] == p}
        beams = sorted(grown.items(), key=lambda t: -t[1])[:beam_size]
        out[j] = [(p, s, codes[p] if j == l else None) for p, s in beams]
    return out


def test_fake_beam_search_is_exact_and_skips_each_users_excluded_items():
    verifier, _, seen = build(seed=4)
    excluded = torch.rand(N_USERS, N_ITEMS + 1, generator=torch.Generator().manual_seed(4)) < 0.4
    steps = list(verifier.beam_search(verifier.encode(*user_seq(range(N_USERS))), 4, exclude=excluded))
    for user in range(N_USERS):
        for step in steps:
            expect = oracle_beams(verifier, user, 4, ~excluded[user])[step.depth]
            got = [(tuple(step.prefixes[user, k].tolist()), float(step.scores[user, k]),
                    None if step.items is None else int(step.items[user, k])) for k in range(4) if step.valid[user, k]]
            assert [(p, i) for p, _, i in got] == [(p, i) for p, _, i in expect]
            assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in expect], abs=1e-5)
        assert not excluded[user, steps[-1].items[user][steps[-1].valid[user]]].any()


def oracle_rounds(verifier, drafter, seen, user, delta, beta, gamma, K, allowed=None, no_inductive=False,
                  no_adjust=False, no_guided=False, no_exit=False, gamma_unseen=None, joint=False, subset=False):
    """The draft-verify rounds of paper section 3.2 for one user, in plain Python: ``(records, beams, dscore,
    drafting_rounds)``, records = (item, V, accepted) in draft order, drafting_rounds the rounds that drafted an item (drafts of unseen items are accepted above ``gamma_unseen`` when
    given; with ``joint`` every unseen draft is a candidate and the exit counts accepted seen drafts only). The beams
    spell only ``allowed`` items, except in ``subset`` ranking (paper A.2: there they search the whole catalog)."""
    n, l = verifier.item2codes.size(0), verifier.n_digits
    dscore = (drafter.items @ drafter.user_vectors[user]).tolist()
    pool = [i for i in range(1, n) if (allowed is None or allowed[i]) and (seen[i] or not no_inductive)]
    pool.sort(key=lambda i: -dscore[i])
    beams = oracle_beams(verifier, user, beta, None if subset else allowed)
    drafted, records, drafting_rounds = set(), [], []  # records: (item, V, accepted)
    for j in range(l):
        cands = [i for i in pool if i not in drafted]
        if j > 0 and not no_guided:
            prefixes = {p for p, _, _ in beams[j]}
            cands = [i for i in cands if tuple(verifier.item2codes[i, :j].tolist()) in prefixes]
        drafting_rounds += [j] if cands[:delta] else []
        for i in cands[:delta]:
            v = eq2(verifier, user, i, seen, adjust=not no_adjust)
            drafted.add(i)
            records.append((i, v, v > (gamma if seen[i] or gamma_unseen is None else gamma_unseen)
                            or (joint and not seen[i])))
        if not no_exit and sum(a and (seen[i] or not joint) for i, _, a in records) >= K:
            break
    return records, beams, dscore, drafting_rounds


def oracle(verifier, drafter, seen, user, delta, beta, gamma, K, allowed=None, subset=False, no_inductive=False,
           no_adjust=False, no_guided=False, no_rerank=False, no_exit=False, gamma_unseen=None):
    """Plain per-user Python version of paper section 3.2, written independently of the batched code."""
    l = verifier.n_digits
    records, beams, _, _ = oracle_rounds(verifier, drafter, seen, user, delta, beta, gamma, K, allowed, no_inductive,
                                      no_adjust, no_guided, no_exit, gamma_unseen, subset=subset)
    acc = [(i, v) for i, v, a in records if a]
    if not no_rerank:
        acc.sort(key=lambda t: -t[1])
    chosen = acc[:K]
    if subset:
        fill = [(i, v) for i, v, a in records if not a]
        if not no_rerank:
            fill.sort(key=lambda t: -t[1])
    else:
        taken = {i for i, _ in acc}
        fill = [(i, s / l) for _, s, i in beams[l] if i not in taken and (allowed is None or allowed[i])]
        if not no_rerank:
            fill.sort(key=lambda t: -t[1])
    chosen += fill[: K - len(chosen)]
    if not no_rerank:
        chosen.sort(key=lambda t: -t[1])
    return chosen


def run(verifier, drafter, seen, users, **kwargs):
    rec = SpeculativeRecommender(verifier, drafter, seen, **kwargs)
    return rec.recommend(*user_seq(users))


# ---------------------------------------------------------------------------------------------------------------
def test_eq2_by_hand_seen_vs_unseen_collision_digit_left_out():
    verifier, drafter, seen = build()
    seen_item, unseen_item = 1, N_ITEMS  # the last N_UNSEEN items are unseen
    assert seen[seen_item] and not seen[unseen_item]
    lp = torch.tensor([[[-0.5, -1.0, -3.0], [-0.2, -0.4, -9.0]]])  # [B=1, N=2, l=3]
    got = verification_scores(lp, torch.tensor([[False, True]]))
    assert torch.allclose(got, torch.tensor([[-1.5, -0.3]]))
    # end to end: accept everything, draft every item in round 0, output scores are eq. 2
    out = run(verifier, drafter, seen, [2], draft_size=N_ITEMS, threshold=-math.inf, topk=N_ITEMS, num_beams=2)
    for item in (seen_item, unseen_item):
        lps = verifier.digit_table(2, verifier.item2codes[item].tolist())
        hand = sum(lps) / 3 if seen[item] else (lps[0] + lps[1]) / 2
        assert out.scores[0, item].item() == pytest.approx(hand, abs=1e-6)
    # the unseen item's collision digit has no influence
    c = verifier.item2codes[unseen_item].tolist()
    verifier.log_probs[2, 2, int(verifier.radix(torch.tensor(c[:2]))), c[2]] = -50.0
    out2 = run(verifier, drafter, seen, [2], draft_size=N_ITEMS, threshold=-math.inf, topk=N_ITEMS, num_beams=2)
    assert out2.scores[0, unseen_item] == out.scores[0, unseen_item]


def test_no_drafts_gives_exactly_beam_search_topk():
    verifier, drafter, seen = build()
    K, beta = 4, 6
    out = run(verifier, drafter, seen, range(N_USERS), draft_size=0, num_beams=beta, topk=K, threshold=-2.0)
    for user in range(N_USERS):
        beams = beams_of(verifier, user, beta)[3][:K]
        assert [i for i, _ in ranked(out.scores[user])] == [item for _, _, item in beams]
        assert [s for _, s in ranked(out.scores[user])] == pytest.approx([s / 3 for _, s, _ in beams])
    assert out.stats.n_drafted == 0 and out.stats.n_rounds == 3 * N_USERS


def test_accept_all_gives_drafter_topk_reranked_by_verification():
    verifier, drafter, seen = build(seed=3)
    K = 5
    out = run(verifier, drafter, seen, range(N_USERS), draft_size=K, topk=K, threshold=-math.inf, num_beams=3,
              no_guided_redrafting=True)
    for user in range(N_USERS):
        dscore = drafter.items @ drafter.user_vectors[user]
        dscore[0] = -math.inf
        top = dscore.topk(K).indices.tolist()
        expect = sorted(((i, eq2(verifier, user, i, seen)) for i in top), key=lambda t: -t[1])
        assert [i for i, _ in ranked(out.scores[user])] == [i for i, _ in expect]
    assert out.drafts.size(1) == 1  # adaptive exit after round 0


@pytest.mark.parametrize("seed", range(4))
def test_batched_equals_per_user_loop(seed):
    verifier, drafter, seen = build(seed=seed)
    kwargs = dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6)
    allowed = allowed_mask("per_user", seed)  # each user's own exclusions, in the batch and alone
    rec = SpeculativeRecommender(verifier, drafter, seen, **kwargs)
    batched = rec.recommend(*user_seq(range(N_USERS)), allowed_items=allowed)
    for user in range(N_USERS):
        single = rec.recommend(*user_seq([user]), allowed_items=allowed[user:user + 1])
        assert torch.equal(batched.scores[user], single.scores[0])
        rounds = single.drafts.size(1)
        assert torch.equal(batched.drafts[user, :rounds], single.drafts[0])
        assert (batched.drafts[user, rounds:] == 0).all()  # a finished user drafts nothing more


ORACLE_CASES = [
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6),
    dict(draft_size=2, num_beams=2, threshold=-0.9, topk=5),
    dict(draft_size=4, num_beams=3, threshold=-1.5, topk=4, no_inductive_drafting=True),
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, no_likelihood_adjustment=True),
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, no_guided_redrafting=True),
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, no_reranking=True),
    dict(draft_size=3, num_beams=4, threshold=-1.4, topk=3, no_adaptive_exit=True),
    dict(draft_size=5, num_beams=5, threshold=-1.3, topk=4, no_reranking=True, no_adaptive_exit=True),
    dict(draft_size=3, num_beams=4, threshold=-1.0, topk=6, unseen_threshold=-2.0),
    dict(draft_size=3, num_beams=4, threshold=-1.6, topk=5, unseen_threshold=-0.8),
]
ORACLE_FLAGS = dict(no_inductive_drafting="no_inductive", no_likelihood_adjustment="no_adjust",
                    no_guided_redrafting="no_guided", no_reranking="no_rerank", no_adaptive_exit="no_exit",
                    unseen_threshold="gamma_unseen")


def allowed_mask(kind, seed):
    """None; an ``[n]`` subset shared by every user; or an ``[B, n]`` mask per user (e.g. its history excluded)."""
    g = torch.Generator().manual_seed(seed)
    return {"all": None, "shared": torch.rand(N_ITEMS + 1, generator=g) < 0.6,
            "per_user": torch.rand(N_USERS, N_ITEMS + 1, generator=g) < 0.7}[kind]


def user_row(allowed, user):
    return allowed[user] if allowed is not None and allowed.dim() == 2 else allowed


MASKS = [("all", False), ("shared", False), ("per_user", False), ("shared", True), ("per_user", True)]


@pytest.mark.parametrize("case, seed, allowed_kind, subset",
                         [(c, s, *m) for c, s, m in itertools.product(range(len(ORACLE_CASES)), range(2), MASKS)])
def test_matches_per_user_oracle(case, seed, allowed_kind, subset):
    verifier, drafter, seen = build(seed=seed)
    kwargs = ORACLE_CASES[case]
    allowed = allowed_mask(allowed_kind, seed)
    rec = SpeculativeRecommender(verifier, drafter, seen, **kwargs)
    out = rec.recommend(*user_seq(range(N_USERS)), allowed_items=allowed, subset_ranking=subset)
    oracle_kwargs = {ORACLE_FLAGS[k]: v for k, v in kwargs.items() if k in ORACLE_FLAGS}
    for user in range(N_USERS):
        expect = oracle(verifier, drafter, seen, user, kwargs["draft_size"], kwargs["num_beams"],
                        kwargs["threshold"], kwargs["topk"], allowed=user_row(allowed, user), subset=subset,
                        **oracle_kwargs)
        got = ranked(out.scores[user])
        if kwargs.get("no_reranking"):
            assert [i for i, _ in got] == [i for i, _ in expect], (user, got, expect)
        else:
            assert_same_ranking(got, expect, seen)


@pytest.mark.parametrize("case, allowed_kind, subset", [(c, *m) for c, m in itertools.product(
    range(len(ORACLE_CASES)), [("all", False), ("per_user", False), ("shared", True)])])
def test_one_pass_over_several_thresholds_equals_one_run_per_threshold(case, allowed_kind, subset):
    verifier, drafter, seen = build(seed=case)
    kwargs = {k: v for k, v in ORACLE_CASES[case].items() if k != "threshold"}
    allowed = allowed_mask(allowed_kind, case)
    grid = [-0.6, -1.0, -1.4, -2.5, -math.inf, Thresholds(-1.0, -2.5), Thresholds(-2.5, -0.6)]
    if not subset:  # joint settings (subset ranking refuses them), with and without the text prior
        grid += [Thresholds(-1.0, -2.5, 0.5, -1.0), Thresholds(-math.inf, -math.inf, 2.0, -0.3),
                 Thresholds(-1.0, -2.5, 0.5, -1.0, 1.5)]
    rec = SpeculativeRecommender(verifier, drafter, seen, text_prior=text_prior(case), **kwargs)
    swept = list(rec.recommend_thresholds(*user_seq(range(N_USERS)), grid, allowed_items=allowed,
                                          subset_ranking=subset))
    assert len(swept) == len(grid)
    rounds_seen = set()
    for gamma, got in zip(grid, swept):
        setting = gamma if isinstance(gamma, Thresholds) else Thresholds(gamma, gamma)
        use_setting(rec, setting)
        alone = rec.recommend(*user_seq(range(N_USERS)), allowed_items=allowed, subset_ranking=subset)
        assert torch.equal(got.scores, alone.scores), gamma
        rounds = alone.drafts.size(1)
        assert torch.equal(got.drafts[:, :rounds], alone.drafts) and (got.drafts[:, rounds:] == 0).all()
        assert torch.equal(got.accepted[:, :rounds], alone.accepted)
        for field in ("n_users", "n_drafted", "n_accepted", "n_rounds", "n_output", "n_output_unseen"):
            assert getattr(got.stats, field) == getattr(alone.stats, field), (gamma, field)
        rounds_seen.add(got.stats.n_rounds)
    if case == 0:
        assert len(rounds_seen) > 1  # the grid really changes where users exit


JOINT_CASES = [
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, draft_weight=0.5, unseen_score=-1.0),
    dict(draft_size=2, num_beams=3, threshold=-math.inf, topk=5, draft_weight=2.0, unseen_score=-0.2),
    dict(draft_size=4, num_beams=2, threshold=-0.9, topk=4, draft_weight=1.0, unseen_score=-3.0,
         unseen_threshold=-2.0),
    dict(draft_size=3, num_beams=4, threshold=-1.4, topk=3, draft_weight=0.3, unseen_score=-1.2,
         no_adaptive_exit=True),
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, draft_weight=0.5, unseen_score=-1.0, text_weight=2.0),
    dict(draft_size=2, num_beams=3, threshold=-math.inf, topk=5, draft_weight=2.0, unseen_score=-0.2,
         text_weight=0.7),
    # only the drafted unseen items (as before rank_all_unseen), with and without the text prior
    dict(draft_size=2, num_beams=3, threshold=-math.inf, topk=5, draft_weight=2.0, unseen_score=-0.2,
         rank_all_unseen=False),
    dict(draft_size=3, num_beams=4, threshold=-1.2, topk=6, draft_weight=0.5, unseen_score=-1.0, text_weight=2.0,
         rank_all_unseen=False),
    dict(draft_size=1, num_beams=2, threshold=-1.0, topk=4, draft_weight=1.0, unseen_score=0.5, text_weight=1.0,
         rank_all_unseen=False),
    dict(draft_size=1, num_beams=2, threshold=-1.0, topk=4, draft_weight=1.0, unseen_score=0.5, text_weight=1.0),
]


def joint_oracle(verifier, drafter, seen, user, kwargs, allowed=None, prior=None):
    """Joint ranking for one user in plain Python: accepted drafts of the rounds run and complete beams B_l
    (allowed ones), each item once, by l·V + α·s_d with V = v_u for unseen items, which also get β·s_t; with
    ``rank_all_unseen`` (the default) the unseen items are every allowed one, drafted or not."""
    l, alpha, beta = verifier.n_digits, kwargs["draft_weight"], kwargs.get("text_weight", 0.0)
    rank_all = kwargs.get("rank_all_unseen", True)
    records, beams, dscore, _ = oracle_rounds(
        verifier, drafter, seen, user, kwargs["draft_size"], kwargs["num_beams"], kwargs["threshold"],
        kwargs["topk"], allowed, no_exit=kwargs.get("no_adaptive_exit", False),
        gamma_unseen=kwargs.get("unseen_threshold"), joint=True)
    if rank_all:
        records = [r for r in records if seen[r[0]]]
        records += [(i, None, True) for i in range(1, len(seen)) if not seen[i] and (allowed is None or allowed[i])]
    keys = {}
    for i, v, accepted in records:
        if accepted:
            keys[i] = l * (v if seen[i] else kwargs["unseen_score"]) + alpha * dscore[i]
            if not seen[i] and beta > 0:
                keys[i] += beta * text_logit(prior, user, i)
    for _, s, i in beams[l]:
        if allowed is None or allowed[i]:
            keys[i] = max(keys.get(i, -math.inf), s + alpha * dscore[i])
    return sorted(keys.items(), key=lambda t: -t[1])[: kwargs["topk"]]


@pytest.mark.parametrize("case, seed, allowed_kind", itertools.product(range(len(JOINT_CASES)), range(2),
                                                                       ["all", "shared", "per_user"]))
def test_joint_ranking_matches_per_user_oracle(case, seed, allowed_kind):
    verifier, drafter, seen = build(seed=seed)
    kwargs = JOINT_CASES[case]
    allowed = allowed_mask(allowed_kind, seed)
    prior = text_prior(seed)
    out = SpeculativeRecommender(verifier, drafter, seen, text_prior=prior, **kwargs).recommend(
        *user_seq(range(N_USERS)), allowed_items=allowed)
    n_unseen_out = 0
    for user in range(N_USERS):
        expect = joint_oracle(verifier, drafter, seen, user, kwargs, user_row(allowed, user), prior)
        got = ranked(out.scores[user])
        assert [s for _, s in got] == pytest.approx([s for _, s in expect], abs=1e-4), (user, got, expect)
        assert_same_ranking(got, expect, seen)  # the items too, except tied unseen items cut at the end
        n_unseen_out += sum(not seen[i] for i, _ in got)
    if case in (1, 6):
        assert n_unseen_out > 0  # a high v_u brings unseen items in


def test_ranking_every_unseen_item_lists_unseen_items_that_were_never_drafted():
    """One draft per round: few unseen items are drafted, and rank_all_unseen lists others, by the same key."""
    verifier, drafter, seen = build(seed=1)
    kwargs = dict(draft_size=1, num_beams=2, threshold=-1.0, topk=4, draft_weight=1.0, unseen_score=5.0)
    drafted = SpeculativeRecommender(verifier, drafter, seen, rank_all_unseen=False, **kwargs).recommend(
        *user_seq(range(N_USERS)))
    every = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*user_seq(range(N_USERS)))
    listed = lambda out, u: {i for i, _ in ranked(out.scores[u])}
    never_drafted = 0
    for user in range(N_USERS):
        unseen_first = sorted((i for i in range(1, N_ITEMS + 1) if not seen[i]),
                              key=lambda i: -float(drafter.items[i] @ drafter.user_vectors[user]))
        assert [i for i, _ in ranked(every.scores[user])] == unseen_first[:4]  # v_u = 5 puts them first
        assert {i for i in listed(drafted, user) if not seen[i]} <= set(drafted.drafts[user].flatten().tolist())
        never_drafted += len(listed(every, user) - set(drafted.drafts[user].flatten().tolist()))
    assert never_drafted > 0


def test_no_inductive_drafting_lists_no_unseen_item_in_the_joint_ranking_either():
    """Ablation (1.1) drafts seen items only, and the pool of every unseen item is off with it."""
    verifier, drafter, seen = build(seed=2)
    kwargs = dict(draft_size=3, num_beams=4, threshold=-1.0, topk=6, draft_weight=1.0, unseen_score=50.0)
    ablated = SpeculativeRecommender(verifier, drafter, seen, no_inductive_drafting=True, **kwargs).recommend(
        *user_seq(range(N_USERS)))
    full = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*user_seq(range(N_USERS)))
    listed = lambda out: {i for user in range(N_USERS) for i, _ in ranked(out.scores[user])}
    assert not any(not seen[i] for i in listed(ablated))
    assert any(not seen[i] for i in listed(full))  # v_u = 50 would list them


def use_setting(rec, setting):
    """Make ``setting`` (γ, γ_u, α, v_u, β, η) the one ``rec.recommend`` runs at: a run alone, to hold a grid to."""
    (rec.threshold, rec.unseen_threshold, rec.draft_weight, rec.unseen_score, rec.text_weight,
     rec.novelty_weight) = setting


def history_seq(histories):
    """Sequences of the fake users from their histories: the first item names the user (see ``user_seq``)."""
    width = max(len(h) for h in histories)
    seq = torch.tensor([h + [0] * (width - len(h)) for h in histories])
    return seq, torch.tensor([len(h) for h in histories])


def test_a_grid_over_eta_and_beta_equals_one_run_per_setting():
    verifier, drafter, seen = build(seed=4)
    unseen = [i for i in range(1, N_ITEMS + 1) if not seen[i]]
    histories = [[0, unseen[0]], [1, 2, unseen[1]], [2], [3, unseen[2], unseen[3]], [4, 5]]
    grid = [Thresholds(-1.0, -1.0, 0.5, -1.0, 0.0, 0.0), Thresholds(-1.0, -1.0, 0.5, -1.0, 1.5, 2.0),
            Thresholds(-1.0, -1.0, 1.0, -0.5, 1.5, 6.0), Thresholds(-1.0, -1.0, 1.0, -0.5, 0.0, 6.0)]
    for rank_all_unseen in (False, True):
        rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, topk=5,
                                     text_prior=text_prior(4), rank_all_unseen=rank_all_unseen)
        swept = list(rec.recommend_thresholds(*history_seq(histories), grid))
        outputs = set()
        for setting, got in zip(grid, swept):
            use_setting(rec, setting)
            alone = rec.recommend(*history_seq(histories))
            assert torch.equal(got.scores, alone.scores), (rank_all_unseen, setting)
            outputs.add(tuple(torch.isfinite(alone.scores).flatten().tolist()))
        assert len(outputs) > 1  # the settings do list different items


@pytest.mark.parametrize("rank_all_unseen", [False, True])
def test_a_shuffled_grid_over_every_weight_equals_one_run_per_setting(rank_all_unseen):
    """γ × α × v_u × β × η, the paper's ranking among them, in shuffled order: the work a grid shares between the
    settings of one γ (and β/α) gives each setting exactly its run alone: list, scores, counts, and the ranks the
    grid's sweep reads off the list."""
    from recbole_specgr.evaluation import topk_hits

    verifier, drafter, seen = build(seed=5)
    unseen = [i for i in range(1, N_ITEMS + 1) if not seen[i]]
    histories = [[0, unseen[0]], [1, 2, unseen[1]], [2], [3, unseen[2], unseen[3]], [4, 5]]
    grid = [Thresholds(g, g) for g in (-0.5, -1.5, -3.0)] + [
        Thresholds(g, g, a, v, b, e) for g, a, v, b, e in itertools.product((-0.5, -1.5, -3.0), (0.5, 1.0),
                                                                             (-1.0, 0.5), (0.0, 1.5), (0.0, 3.0))]
    grid = [grid[i] for i in torch.randperm(len(grid), generator=torch.Generator().manual_seed(0)).tolist()]
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, topk=5,
                                 text_prior=text_prior(4), rank_all_unseen=rank_all_unseen)
    targets = torch.tensor([unseen[4], 3, 7, unseen[0], 1])
    swept = list(rec.recommend_thresholds(*history_seq(histories), grid))
    lists = set()
    for setting, got in zip(grid, swept):
        use_setting(rec, setting)
        alone = rec.recommend(*history_seq(histories))
        assert torch.equal(got.scores, alone.scores), setting
        assert got.stats == alone.stats, setting
        assert torch.equal(got.target_ranks(targets, 5), topk_hits(alone.scores, targets, 5, distinct=True))
        lists.add(tuple(got.items.masked_fill(~got.listed, 0).flatten().tolist()))
    assert len(lists) > 10  # the settings do list different items


def test_a_grid_ranks_each_gammas_shared_work_once_and_holds_one_gamma_at_a_time(monkeypatch):
    """A grid in its trainer's order (γ outermost; per γ the paper's ranking, then α × β): per γ one cut for the
    paper's ranking and one shared by its joint settings, and one set of joint columns per β/α (0, 3, 1.5 here);
    moving to the next γ drops the last γ's."""
    from recbole_specgr.inference import specgr as specgr_module

    made = {"cuts": 0, "columns": 0}

    def counted(cls, key):
        def make(*args):
            made[key] += 1
            return cls(*args)
        return make

    monkeypatch.setattr(specgr_module, "_Cut", counted(specgr_module._Cut, "cuts"))
    monkeypatch.setattr(specgr_module, "_JointColumns", counted(specgr_module._JointColumns, "columns"))
    verifier, drafter, seen = build(seed=5)
    grid = [Thresholds(g, g, a, -1.0, b if a else 0.0) for g in (-0.5, -1.5) for a in (0.0, 0.5, 1.0)
            for b in ((0.0, 1.5) if a else (0.0,))]
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, topk=5, text_prior=text_prior(4))
    assert len(list(rec.recommend_thresholds(*user_seq(range(N_USERS)), grid))) == len(grid) == 10
    assert made == {"cuts": 4, "columns": 6}
    made.update(cuts=0, columns=0)  # γ = −0.5's joint work again after γ = −1.5's: computed again, not kept
    list(rec.recommend_thresholds(*user_seq(range(N_USERS)), grid + [grid[1]]))
    assert made == {"cuts": 5, "columns": 7}


def test_a_papers_setting_in_a_joint_grid_drafts_as_alone_under_exact_drafter_ties():
    """Quantised drafter vectors: many exactly equal drafter scores. A joint grid decodes every user's beams, a run of
    the paper's ranking alone only the drafting users', so a guided round may score a candidate list in one and mask
    the catalog in the other (``_guided``); equal scores go to the smaller item id either way (found in review: two
    of these 120 outputs differed before)."""
    mismatches = 0
    for seed in range(40):
        item2codes, seen = make_catalog(120, 3, 6, 60, seed=seed)
        verifier = TableVerifier(item2codes, 6, generable=seen, seed=seed)
        g = torch.Generator().manual_seed(seed)
        items = torch.randn(121, DIM, generator=g).round()
        items[0] = 0
        drafter = FixedDrafter(torch.randn(6, DIM, generator=g).round(), items)
        grid = [Thresholds(-1.0, -1.0, 1.0, -1.0), Thresholds(-1.0, -1.0), Thresholds(-0.3, -0.3)]
        rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=10, num_beams=2, topk=5)
        for setting, got in zip(grid, rec.recommend_thresholds(*user_seq(range(6)), grid)):
            alone = next(rec.recommend_thresholds(*user_seq(range(6)), [setting]))
            mismatches += not (torch.equal(got.scores, alone.scores) and torch.equal(got.drafts, alone.drafts))
    assert mismatches == 0


def test_recent_unseen_share_counts_the_last_n_real_items():
    seen = torch.tensor([False, True, True, False, False, True])  # item 0 is padding
    seq, length = history_seq([[1, 3, 2], [1, 2, 3, 4], [3], [0], [2, 5, 1, 2]])
    assert recent_unseen_share(seq, length, seen, 3).tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 0.0, 0.0])
    assert recent_unseen_share(seq, length, seen, 1).tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("rank_all_unseen", [True, False])
def test_novelty_prior_adds_eta_times_the_recent_unseen_share_to_unseen_items_only(rank_all_unseen):
    verifier, drafter, seen = build(seed=3)
    unseen = [i for i in range(1, N_ITEMS + 1) if not seen[i]]
    histories = [[2, unseen[0], 1], [3, unseen[1], unseen[2], 4], [1, 2]]  # ρ_u = 1/3 (of the last 3), 2/3, 0
    kwargs = dict(draft_size=N_ITEMS, num_beams=4, threshold=-math.inf, topk=N_ITEMS, draft_weight=1.0,
                  unseen_score=-1.0, rank_all_unseen=rank_all_unseen)
    plain = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*history_seq(histories))
    novel = SpeculativeRecommender(verifier, drafter, seen, novelty_weight=3.0, **kwargs).recommend(
        *history_seq(histories))
    for row, share in enumerate([1 / 3, 2 / 3, 0.0]):
        for i in range(1, N_ITEMS + 1):
            if torch.isfinite(plain.scores[row, i]):
                shift = 0.0 if seen[i] else 3.0 * share
                assert novel.scores[row, i].item() == pytest.approx(plain.scores[row, i].item() + shift, abs=1e-4)
    assert torch.equal(torch.isfinite(novel.scores), torch.isfinite(plain.scores))


def test_joint_ranking_uses_the_drafter_temperature_and_v_u_moves_unseen_items():
    verifier, drafter, seen = build(seed=2)
    kwargs = dict(draft_size=N_ITEMS, num_beams=4, threshold=-math.inf, topk=N_ITEMS, draft_weight=1.0)
    low = SpeculativeRecommender(verifier, drafter, seen, unseen_score=-50.0, **kwargs).recommend(*user_seq([0]))
    high = SpeculativeRecommender(verifier, drafter, seen, unseen_score=50.0, **kwargs).recommend(*user_seq([0]))
    order = lambda out: [i for i, _ in ranked(out.scores[0])]
    assert all(seen[i] for i in order(low)[: int(seen[1:].sum())])  # every seen item before any unseen one
    assert not any(seen[i] for i in order(high)[:N_UNSEEN])  # every unseen item first
    drafter.temperature = 0.5  # s_d = inner product / τ: the keys of unseen items double
    hot = SpeculativeRecommender(verifier, drafter, seen, unseen_score=50.0, **kwargs).recommend(*user_seq([0]))
    dscore = drafter.items @ drafter.user_vectors[0]
    for i in range(1, N_ITEMS + 1):
        if not seen[i]:
            assert hot.scores[0, i].item() == pytest.approx(3 * 50.0 + dscore[i].item() / 0.5, abs=1e-4)


def test_text_prior_adds_beta_times_its_logit_to_unseen_items_only():
    verifier, drafter, seen = build(seed=3)
    drafter.temperature = 0.5  # s_t is on the drafter's scale: (cos − c̄) / τ
    prior = text_prior(3)
    kwargs = dict(draft_size=N_ITEMS, num_beams=4, threshold=-math.inf, topk=N_ITEMS, draft_weight=1.0,
                  unseen_score=-1.0, text_prior=prior)
    plain = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*user_seq([2]))
    text = SpeculativeRecommender(verifier, drafter, seen, text_weight=3.0, **kwargs).recommend(*user_seq([2]))
    for i in range(1, N_ITEMS + 1):
        shift = 0.0 if seen[i] else 3.0 * text_logit(prior, 2, i, tau=0.5)
        assert text.scores[0, i].item() == pytest.approx(plain.scores[0, i].item() + shift, abs=1e-4), i
    assert any(abs(text_logit(prior, 2, i)) > 0.1 for i in range(1, N_ITEMS + 1) if not seen[i])


@pytest.mark.parametrize("distinct_per_column", [0, 10 ** 6])  # always gathered / always one product
def test_text_prior_cosines_are_each_users_own_in_both_ways_of_computing_them(monkeypatch, distinct_per_column):
    monkeypatch.setattr(text_prior_module, "DISTINCT_ITEMS_PER_COLUMN", distinct_per_column)
    texts = torch.randn(31, 5, generator=torch.Generator().manual_seed(4))
    prior = TextPrior(texts, last_n=2, center=0.1)
    item_seq = torch.tensor([[3, 7, 9], [5, 0, 0], [11, 2, 0]])
    lengths = torch.tensor([3, 1, 2])
    items = torch.randint(0, 31, (3, 6), generator=torch.Generator().manual_seed(5))
    items[:, 0] = torch.tensor([0, 5, 30])  # padding, an item twice (history and candidate), the last item
    x = torch.nn.functional.normalize(texts, dim=-1)
    columns = count_calls(monkeypatch, torch, "cumsum")  # the product's columns: that way only
    got = prior.cosines(item_seq, lengths, items)
    assert len(columns) == (0 if distinct_per_column == 0 else 1)
    for user, recent in enumerate([[7, 9], [5], [11, 2]]):
        query = torch.nn.functional.normalize(x[recent].mean(dim=0), dim=0)
        assert got[user].tolist() == pytest.approx((x[items[user]] @ query - 0.1).tolist(), abs=1e-6)


def test_text_prior_centre_is_the_mean_cosine_of_history_and_next_item():
    texts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    item_seq = torch.tensor([[1, 2, 0], [3, 0, 0], [2, 3, 1]])
    lengths = torch.tensor([2, 1, 3])
    targets = torch.tensor([3, 1, 2])
    # queries: mean(x1, x2) ∝ (1, 1) · x3 → cos 1; x3 · x1 → cos 1/√2; last 2 of (2, 3, 1) = mean(x3, x1) · x2
    q3 = torch.nn.functional.normalize(torch.tensor([1 / 2 ** 0.5 + 1.0, 1 / 2 ** 0.5]), dim=0)
    expect = (1.0 + 1 / 2 ** 0.5 + float(q3[1])) / 3
    got = TextPrior.typical_cosine(texts, item_seq, lengths, targets, last_n=2)
    assert got == pytest.approx(expect, abs=1e-6)
    # at most max_rows rows, evenly spaced over the split: the first and the last here
    got = TextPrior.typical_cosine(texts, item_seq, lengths, targets, last_n=2, max_rows=2)
    assert got == pytest.approx((1.0 + float(q3[1])) / 2, abs=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("draft_weight", -0.5, "specgr_draft_weight: expected a number >= 0"),
    ("draft_weight", float("nan"), "specgr_draft_weight: expected a finite number"),
    ("unseen_score", "high", "specgr_unseen_score: expected a finite number"),
    ("text_weight", -1.0, "specgr_text_weight: expected a number >= 0"),
    ("text_weight", float("inf"), "specgr_text_weight: expected a finite number"),
    ("text_weight", 1.0, "specgr_text_weight: the text prior weighs unseen items in the joint ranking only"),
    ("novelty_weight", -2.0, "specgr_novelty_weight: expected a number >= 0"),
    ("novelty_weight", float("nan"), "specgr_novelty_weight: expected a finite number"),
    ("novelty_weight", 4.0, "specgr_novelty_weight: the novelty prior weighs unseen items in the joint ranking only"),
    ("novelty_weight", float("inf"), "specgr_novelty_weight: expected a finite number"),
    ("novelty_last_n", 0, "specgr_novelty_last_n: expected an int >= 1, got 0"),
    ("rank_all_unseen", "yes", "specgr_rank_all_unseen: expected True or False, got 'yes'"),
])
def test_bad_joint_ranking_settings_are_named(key, value, message):
    verifier, drafter, seen = build()
    with pytest.raises(ValueError, match=message):
        SpeculativeRecommender(verifier, drafter, seen, text_prior=text_prior(), **{key: value})


def test_a_text_weight_ratio_beyond_float32_is_refused():
    """β/α weighs float32 logits: a ratio past float32's largest (a tiny α) is refused, alone and in a grid, rather
    than turning the keys into inf and NaN (found by a review fuzz)."""
    verifier, drafter, seen = build()
    message = r"specgr_text_weight: β/α = 1e\+09/1e-30 overflows float32"
    with pytest.raises(ValueError, match=message):
        SpeculativeRecommender(verifier, drafter, seen, text_prior=text_prior(), draft_weight=1e-30, text_weight=1e9)
    rec = SpeculativeRecommender(verifier, drafter, seen, text_prior=text_prior(), draft_weight=1.0)
    with pytest.raises(ValueError, match=message):
        rec.recommend_thresholds(*user_seq([0]), [Thresholds(-1.0, -1.0, 1e-30, -1.0, 1e9)])
    next(rec.recommend_thresholds(*user_seq([0]), [Thresholds(-1.0, -1.0, 1e-30, -1.0, 1e-9)]))  # a small β is fine


def test_text_weight_without_item_texts_is_refused():
    verifier, drafter, seen = build()
    with pytest.raises(ValueError, match=r"specgr_text_weight: needs the item texts' prior, and this model has no "):
        SpeculativeRecommender(verifier, drafter, seen, draft_weight=1.0, text_weight=1.0)
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_weight=1.0)
    with pytest.raises(ValueError, match=r"specgr_text_weight: needs the item texts' prior"):
        rec.recommend_thresholds(*user_seq([0]), [Thresholds(-1.0, -1.0, 1.0, -1.0, 0.5)])


def test_a_threshold_grid_ranks_one_setting_at_a_time(monkeypatch):
    """The drafts are verified once, at the call; each setting's [B, n] output is built only when it is reached, so
    a long grid never holds all of them at once."""
    verifier, drafter, seen = build()
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=3, num_beams=4, topk=3)
    ranked, verified = [], []
    output, verify = rec._output, rec._verify
    monkeypatch.setattr(rec, "_output", lambda rounds, setting, *a: ranked.append(setting) or output(rounds, setting, *a))
    monkeypatch.setattr(rec, "_verify", lambda *a: verified.append(1) or verify(*a))
    grid = [Thresholds(-1.0, -1.0), Thresholds(-2.0, -2.0, 1.0, -1.0), Thresholds(-3.0, -3.0)]
    outputs = rec.recommend_thresholds(*user_seq(range(N_USERS)), grid)
    assert verified and ranked == []
    n_verified = len(verified)
    first = next(outputs)
    assert ranked == grid[:1] and torch.isfinite(first.scores).sum(dim=1).le(3).all()
    assert [o.scores.shape for o in outputs] == [first.scores.shape] * 2 and ranked == grid
    assert len(verified) == n_verified  # ranking a setting verifies nothing again


def test_joint_ranking_refuses_subset_ranking():
    verifier, drafter, seen = build()
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_weight=1.0)
    allowed = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="specgr_draft_weight: the joint ranking .* subset ranking"):
        rec.recommend(*user_seq([0]), allowed_items=allowed, subset_ranking=True)


def test_one_users_beams_never_restrict_another_users_drafts():
    verifier, drafter, seen = build(seed=1)
    drafter.user_vectors[1] = drafter.user_vectors[0]  # same drafter ranking for users 0 and 1
    for user, digit in ((0, 0), (1, 1)):  # user 0 wants first digit 0, user 1 first digit 1
        verifier.log_probs[user, 0, 0] = torch.tensor([0.0, -20.0, -20.0]) if digit == 0 else \
            torch.tensor([-20.0, 0.0, -20.0])
    out = run(verifier, drafter, seen, [0, 1], draft_size=3, num_beams=1, threshold=math.inf, topk=3)
    assert torch.equal(out.drafts[0, 0], out.drafts[1, 0])  # round 0 is unguided
    for user, digit in ((0, 0), (1, 1)):
        redrafts = out.drafts[user, 1][out.drafts[user, 1] > 0]
        assert redrafts.numel() > 0
        assert (verifier.item2codes[redrafts, 0] == digit).all()
    assert not torch.equal(out.drafts[0, 1], out.drafts[1, 1])


def test_subset_mode_returns_only_subset_items():
    verifier, drafter, seen = build(seed=2)
    subset = torch.zeros(N_ITEMS + 1, dtype=torch.bool)
    subset[[3, 4, 9, 15, 19, 20]] = True
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, threshold=-1.0, topk=4)
    out = rec.recommend(*user_seq(range(N_USERS)), allowed_items=subset, subset_ranking=True)
    chosen = out.scores > -math.inf
    assert not (chosen & ~subset).any()
    assert (chosen.sum(1) == 4).all()  # 6 subset items, 3 rounds of 2 drafts: enough to fill K = 4
    # per-user subsets ([B, n]) are respected too
    per_user = torch.rand(N_USERS, N_ITEMS + 1, generator=torch.Generator().manual_seed(0)) < 0.3
    out = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, threshold=-1.0,
                                 topk=4).recommend(*user_seq(range(N_USERS)), per_user, True)
    assert not ((out.scores > -math.inf) & ~per_user).any()
    with pytest.raises(ValueError, match="allowed_items"):
        SpeculativeRecommender(verifier, drafter, seen).recommend(*user_seq([0]), subset_ranking=True)


@pytest.mark.parametrize("threshold", [-math.inf, -1.0, math.inf])
def test_every_returned_item_is_real_and_exactly_k(threshold):
    verifier, drafter, seen = build(seed=4)
    out = run(verifier, drafter, seen, range(N_USERS), draft_size=4, num_beams=8, threshold=threshold, topk=7)
    assert (out.scores[:, 0] == -math.inf).all()
    assert ((out.scores > -math.inf).sum(1) == 7).all()


def test_threshold_plus_inf_accepts_nothing_and_returns_beam_fill():
    verifier, drafter, seen = build(seed=5)
    kwargs = dict(num_beams=6, topk=5)
    out = run(verifier, drafter, seen, range(N_USERS), draft_size=3, threshold=math.inf, **kwargs)
    plain = run(verifier, drafter, seen, range(N_USERS), draft_size=0, threshold=math.inf, **kwargs)
    assert not out.accepted.any() and out.stats.n_accepted == 0
    assert torch.equal(out.scores, plain.scores)
    assert out.stats.summary()["mean_rounds"] == 3 and out.stats.n_beam_steps == 3


def test_no_inductive_drafting_drafts_only_seen_items():
    verifier, drafter, seen = build(seed=6)
    drafter.items[~seen] += 5 * drafter.user_vectors.mean(0)  # the drafter loves unseen items
    kwargs = dict(draft_size=3, num_beams=3, threshold=-1.3, topk=5)
    base = run(verifier, drafter, seen, range(N_USERS), **kwargs)
    ablated = run(verifier, drafter, seen, range(N_USERS), no_inductive_drafting=True, **kwargs)
    assert (~seen[base.drafts[base.drafts > 0]]).any()
    assert seen[ablated.drafts[ablated.drafts > 0]].all()


def test_no_likelihood_adjustment_scores_unseen_items_over_all_digits():
    verifier, drafter, seen = build(seed=7)
    kwargs = dict(draft_size=N_ITEMS, num_beams=2, threshold=-math.inf, topk=N_ITEMS)
    base = run(verifier, drafter, seen, [1], **kwargs)
    ablated = run(verifier, drafter, seen, [1], no_likelihood_adjustment=True, **kwargs)
    for item in range(1, N_ITEMS + 1):
        full = sum(verifier.digit_table(1, verifier.item2codes[item].tolist())) / 3
        assert ablated.scores[0, item].item() == pytest.approx(full, abs=1e-6)
        if seen[item]:
            assert base.scores[0, item] == ablated.scores[0, item]
        else:
            assert base.scores[0, item].item() != pytest.approx(full, abs=1e-6)


def test_no_guided_redrafting_takes_next_best_undrafted_items():
    verifier, drafter, seen = build(seed=8)
    kwargs = dict(draft_size=3, num_beams=1, threshold=math.inf, topk=3)
    guided = run(verifier, drafter, seen, range(N_USERS), **kwargs)
    plain = run(verifier, drafter, seen, range(N_USERS), no_guided_redrafting=True, **kwargs)
    for user in range(N_USERS):
        dscore = drafter.items @ drafter.user_vectors[user]
        dscore[0] = -math.inf
        assert plain.drafts[user].flatten().tolist() == dscore.topk(9).indices.tolist()
        first = beams_of(verifier, user, 1)[1][0][0][0]  # the single beam's first digit
        redrafts = guided.drafts[user, 1:][guided.drafts[user, 1:] > 0]
        assert (verifier.item2codes[redrafts, 0] == first).all()
    assert not torch.equal(guided.drafts, plain.drafts)


def test_no_reranking_keeps_draft_order():
    verifier, drafter, seen = build(seed=9)
    kwargs = dict(draft_size=8, num_beams=2, threshold=-math.inf, topk=8)  # round 0 accepts exactly K drafts
    base = run(verifier, drafter, seen, range(N_USERS), **kwargs)
    ablated = run(verifier, drafter, seen, range(N_USERS), no_reranking=True, **kwargs)
    for user in range(N_USERS):
        order = [i for i, _ in ranked(ablated.scores[user])]
        assert order == ablated.drafts[user, 0, :8].tolist()  # drafter order
        by_score = [i for i, _ in ranked(base.scores[user])]
        assert sorted(order) == sorted(by_score)  # the same items...
    assert any(  # ...in a different order for some user
        [i for i, _ in ranked(ablated.scores[u])] != [i for i, _ in ranked(base.scores[u])] for u in range(N_USERS))


def test_no_adaptive_exit_runs_every_round_and_keeps_topk_accepted():
    verifier, drafter, seen = build(seed=10)
    kwargs = dict(draft_size=4, num_beams=3, threshold=-1.5, topk=2)
    base = run(verifier, drafter, seen, range(N_USERS), **kwargs)
    ablated = run(verifier, drafter, seen, range(N_USERS), no_adaptive_exit=True, **kwargs)
    assert base.stats.n_rounds < 3 * N_USERS
    assert ablated.stats.n_rounds == 3 * N_USERS and ablated.drafts.size(1) == 3
    for user in range(N_USERS):
        acc = ablated.accepted[user]
        best = sorted(ablated.draft_scores[user][acc].tolist(), reverse=True)[:2]
        assert [s for _, s in ranked(ablated.scores[user])][: len(best)] == pytest.approx(best)


def test_beams_are_decoded_only_for_users_that_still_need_them():
    """Guided round j asks the beam search for the users still drafting, the fill for the users still short of K;
    the output equals a run whose beam search ignores those requests (every user decoded to the end)."""
    n_users = 8
    verifier, drafter, seen = build(seed=1, n_users=n_users)
    kwargs = dict(draft_size=3, num_beams=4, threshold=-1.0, topk=2)
    rec = SpeculativeRecommender(verifier, drafter, seen, **kwargs)
    out = rec.recommend(*user_seq(range(n_users)))
    ran = out.drafts.ne(0).any(dim=2)  # [B, R] rounds each user drafted in
    short = out.accepted.sum(dim=(1, 2)) < kwargs["topk"]  # the users the fill is for
    expected_rounds, expected_short = [], []
    for user in range(n_users):  # the per-user oracle's rounds and acceptances
        records, _, _, rounds = oracle_rounds(verifier, drafter, seen, user, 3, 4, -1.0, 2)
        expected_rounds.append(rounds)
        expected_short.append(sum(accepted for _, _, accepted in records) < kwargs["topk"])
    assert [torch.nonzero(row).squeeze(1).tolist() for row in ran] == expected_rounds
    assert short.tolist() == expected_short
    assert {len(r) for r in expected_rounds} == {1, 2, 3} and any(expected_short) and not all(expected_short)
    # round 1 reads B_1 (decoded for all: one row per user); round 2 asks for B_2 of its users; the fill for B_3
    assert len(verifier.sent) == 2 and torch.equal(verifier.sent[0], ran[:, 2]) and torch.equal(verifier.sent[1], short)

    class IgnoresSend:  # the same verifier with a plain iterator: every user's beams to the end
        def __getattr__(self, name):
            return getattr(verifier, name)

        def beam_search(self, enc, beam_size, item_mask=None, exclude=None):  # the protocol before keep_log_probs
            return iter(list(verifier.beam_search(enc, beam_size, item_mask, exclude)))

    full = SpeculativeRecommender(IgnoresSend(), drafter, seen, **kwargs).recommend(*user_seq(range(n_users)))
    assert torch.equal(out.scores, full.scores) and torch.equal(out.drafts, full.drafts)


def test_encoder_runs_once_and_stats_are_consistent():
    verifier, drafter, seen = build(seed=11)
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=3, num_beams=4, threshold=-1.2, topk=6)
    out = rec.recommend(*user_seq(range(N_USERS)))
    assert verifier.n_encode_calls == 1
    s = out.stats
    assert s.n_drafted == int((out.drafts > 0).sum()) and s.n_accepted == int(out.accepted.sum())
    assert s.n_output == int((out.scores > -math.inf).sum())
    unseen_out = ((out.scores > -math.inf) & ~seen).sum().item()
    assert s.summary(elapsed_s=2.0) == pytest.approx(dict(
        acceptance_rate=s.n_accepted / s.n_drafted, mean_rounds=s.n_rounds / N_USERS,
        unseen_share=unseen_out / s.n_output, users_per_s=N_USERS / 2.0))
    assert (s + s).n_users == 2 * N_USERS


def test_from_config_reads_keys_and_bad_input_fails_clearly():
    verifier, drafter, seen = build()
    config = {"specgr_draft_size": 7, "num_beams": 9, "specgr_threshold": -1.7, "topk": [10, 50],
              "specgr_drafting_backend": "faiss", "specgr_no_reranking": True}
    rec = SpeculativeRecommender.from_config(_Cfg(config), verifier, drafter, seen)
    assert (rec.draft_size, rec.num_beams, rec.threshold, rec.topk) == (7, 9, -1.7, 50)
    assert rec.drafting_backend == "faiss" and rec.no_reranking and not rec.no_adaptive_exit
    with pytest.raises(ValueError, match="seen_item_mask"):
        SpeculativeRecommender(verifier, drafter, seen[:-1])
    with pytest.raises(ValueError, match="specgr_drafting_backend"):
        SpeculativeRecommender(verifier, drafter, seen, drafting_backend="annoy").recommend(*user_seq([0]))


class _Cfg(dict):
    """RecBole's Config answers None for missing keys."""

    def __getitem__(self, key):
        return self.get(key)


# drafting ------------------------------------------------------------------------------------------------------
def test_guided_candidates_are_exactly_the_items_under_each_users_valid_beams():
    item2codes, _ = make_catalog(20, seed=0)
    index = PrefixIndex(item2codes, codebook_size=3)
    prefixes = item2codes[[[1, 2], [3, 3]], :2]  # [B=2, β=2, 2]
    step = BeamStep(2, prefixes, torch.zeros(2, 2), torch.tensor([[True, True], [True, False]]), None)
    nodes = beam_nodes(index, step)  # [2, 2]
    assert nodes[1, 1] == -1 and nodes[0, 0] == index.item_nodes(2)[1] and nodes[1, 0] == index.item_nodes(2)[3]
    candidates = index.items_under(2, nodes)
    for b, users_items in enumerate(([1, 2], [3])):
        under = {tuple(item2codes[i, :2].tolist()) for i in users_items}
        expect = [i for i in range(1, 21) if tuple(item2codes[i, :2].tolist()) in under]  # brute force
        assert [i for i in candidates[b].tolist() if i] == expect


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_items_under_matches_brute_force(depth, monkeypatch):
    g = torch.Generator().manual_seed(depth)
    item2codes, _ = make_catalog(200, n_digits=4, codebook_size=6, seed=depth)
    index = PrefixIndex(item2codes, codebook_size=6)
    n_nodes = index.n_nodes(depth)
    nodes = torch.stack([torch.randperm(n_nodes, generator=g)[:4] for _ in range(5)])
    nodes[0, 1], nodes[2] = -1, -1  # no beam / a user without beams
    got = index.items_under(depth, nodes)
    assert torch.equal(got, got.sort(dim=1).values)  # ascending, padding 0 first
    assert torch.equal(index.count_under(depth, nodes), (got > 0).sum(dim=1))
    assert torch.equal(index.under_mask(depth, nodes), torch.zeros(5, 201, dtype=torch.bool).scatter_(
        1, got, True).index_fill_(1, torch.tensor([0]), False))
    repeated = torch.cat([nodes, nodes[:, :2]], dim=1)  # a node given twice counts once
    assert torch.equal(index.items_under(depth, repeated), got)
    monkeypatch.setattr("recbole_specgr.inference.prefix_index.ITEMS_UNDER_CHUNK", got.size(1) * 2)
    chunks = count_calls(monkeypatch, torch, "searchsorted")  # once per chunk
    assert torch.equal(index.items_under(depth, nodes), got)  # two users per chunk
    assert len(chunks) == 3
    for b in range(5):
        wanted = set(nodes[b][nodes[b] >= 0].tolist())
        expect = [i for i in range(1, 201) if int(index.item_nodes(depth)[i]) in wanted]
        assert [i for i in got[b].tolist() if i] == expect
    assert index.items_under(depth, torch.full((2, 3), -1)).shape == (2, 0)
    with pytest.raises(ValueError, match="depth"):
        index.items_under(index.n_digits, nodes)


def _masks(n_users, n_items, seed):
    g = torch.Generator().manual_seed(seed)
    candidates = torch.stack([torch.randperm(n_items, generator=g)[: n_items // 3] for _ in range(n_users)])
    candidates = candidates.masked_fill(torch.arange(n_items // 3) < 5, 0).sort(dim=1).values  # 5 padding, ascending
    return [
        DraftMask(),
        DraftMask(allowed=torch.rand(n_items, generator=g) < 0.5),
        DraftMask(allowed=torch.rand(n_users, n_items, generator=g) < 0.5),
        DraftMask(drafted=torch.rand(n_users, n_items, generator=g) < 0.3, candidates=candidates),
        DraftMask(allowed=torch.rand(n_items, generator=g) < 0.05),  # tiny subset: fewer than δ allowed
    ]


@pytest.fixture
def one_faiss_thread():
    """faiss' OpenMP threads spin badly on a busy 2-core machine (an HNSW build of 300 points takes seconds)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("faiss_index", ["flat", "hnsw", "ivf"])
def test_dense_and_faiss_drafting_agree_under_masks(faiss_index, one_faiss_thread):
    """flat: the dense top-δ exactly; hnsw / ivf (approximate): as many allowed items per user as dense, and at
    least 90% of dense's (all of them at this size with faiss 1.x)."""
    n_users, n_items, k = 6, 300, 10
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(n_items, 16, generator=g), torch.randn(n_users, 16, generator=g)
    dense = DraftIndex(vectors, "dense")
    faiss_idx = DraftIndex(vectors, "faiss", faiss_index=faiss_index, overfetch=2)
    for mask in _masks(n_users, n_items, seed=1):
        d_items, d_scores = dense.search(queries, k, mask)
        f_items, f_scores = faiss_idx.search(queries, k, mask)
        ok = mask.dense(n_users, n_items)
        for b in range(n_users):  # brute force
            s = (vectors @ queries[b]).masked_fill(~ok[b], -math.inf)
            expect = [i for i in s.argsort(descending=True)[:k].tolist() if s[i] > -math.inf]
            assert d_items[b, : len(expect)].tolist() == expect and (d_items[b, len(expect):] == 0).all()
        assert (d_items != 0).sum() > 0 and not (ok.gather(1, f_items) | (f_items == 0)).logical_not().any()
        if faiss_index == "flat":  # exact: same top-δ
            assert torch.equal(d_items, f_items)
            assert torch.allclose(d_scores, f_scores, atol=1e-4)
        else:
            assert torch.equal((f_items != 0).sum(dim=1), (d_items != 0).sum(dim=1))
            found = sum(len(set(d_items[b].tolist()) & set(f_items[b].tolist()) - {0}) for b in range(n_users))
            assert found >= 0.9 * int((d_items != 0).sum())


def test_item_scores_in_user_chunks_equal_one_product(monkeypatch):
    g = torch.Generator().manual_seed(3)
    vectors, queries = torch.randn(50, 4, generator=g), torch.randn(7, 4, generator=g)
    items = torch.randint(0, 50, (7, 6), generator=g)
    expect = torch.stack([vectors[items[b]] @ queries[b] for b in range(7)])
    monkeypatch.setattr("recbole_specgr.inference.drafting.ITEM_SCORE_CHUNK", 2 * 6 * 4)  # two users per chunk
    session = DraftIndex(vectors, "dense").session(queries)
    chunks = count_calls(monkeypatch, torch, "einsum")  # once per chunk
    assert torch.allclose(session.item_scores(items), expect, atol=1e-6)
    assert len(chunks) == 4  # users 0-1, 2-3, 4-5, 6
    assert session.item_scores(items[:0]).shape == (0, 6)


@pytest.mark.parametrize("backend, faiss_index, n_candidates", [
    ("dense", "flat", 40), ("faiss", "hnsw", 4), ("faiss", "flat", 40), ("faiss", "hnsw", 40)])
def test_drafting_with_candidates_equals_the_same_restriction_as_a_catalog_mask(backend, faiss_index, n_candidates,
                                                                                one_faiss_thread):
    """dense: round-0 scores gathered at the candidates; faiss: few candidates (≤ n/64) scored directly, exactly even
    under HNSW; more filter the over-fetched neighbours (exact with a flat index)."""
    g = torch.Generator().manual_seed(4)
    vectors, queries = torch.randn(300, 16, generator=g), torch.randn(6, 16, generator=g)
    candidates = torch.stack([torch.randperm(299, generator=g)[:n_candidates] + 1 for _ in range(6)]).sort(1).values
    drafted = torch.rand(6, 300, generator=g) < 0.3
    index = DraftIndex(vectors, backend, faiss_index=faiss_index)
    session = index.session(queries)
    session.topk(3)  # round 0
    if backend == "faiss" and n_candidates * 64 <= 300:
        index._faiss_fetch = lambda *args: pytest.fail("searched the whole catalog")
    mask = DraftMask(drafted=drafted, candidates=candidates)
    items, scores = session.topk(10, mask)
    whole = DraftMask(allowed=mask.dense(6, 300))  # the same restriction as a whole-catalog mask
    expect_items, expect_scores = DraftIndex(vectors, "dense").search(queries, 10, whole)
    if faiss_index == "hnsw" and n_candidates * 64 > 300:  # approximate: only candidates, not drafted, as many
        assert whole.gather(items).masked_fill(items == 0, True).all()  # as dense and ≥ 90% of them
        assert torch.equal((items != 0).sum(dim=1), (expect_items != 0).sum(dim=1))
        found = sum(len(set(items[b].tolist()) & set(expect_items[b].tolist()) - {0}) for b in range(6))
        assert found >= 0.9 * int((expect_items != 0).sum())
    else:
        assert torch.equal(items, expect_items) and torch.allclose(scores, expect_scores, atol=1e-5)


def test_faiss_session_over_fetch_falls_back_to_dense_when_too_few_survive(one_faiss_thread):
    g = torch.Generator().manual_seed(2)
    vectors, queries = torch.randn(200, 8, generator=g), torch.randn(3, 8, generator=g)
    dense = DraftIndex(vectors, "dense").session(queries)
    fai = DraftIndex(vectors, "faiss", overfetch=1).session(queries)
    drafted = torch.zeros(3, 200, dtype=torch.bool)
    for _ in range(4):  # every round excludes what was drafted: the cached fetch is exhausted quickly
        mask = DraftMask(drafted=drafted.clone())
        d_items, _ = dense.topk(5, mask)
        f_items, _ = fai.topk(5, mask)
        assert torch.equal(d_items, f_items)
        drafted.scatter_(1, d_items, True)
    with pytest.raises(ValueError, match="specgr_faiss_index"):
        DraftIndex(vectors, "faiss", faiss_index="lsh")
    with pytest.raises(ValueError, match=r"^overfetch: expected an int >= 1, got 0$"):  # an argument, not a config key
        DraftIndex(vectors, "faiss", overfetch=0)


@pytest.mark.parametrize("backend", ["dense", "faiss"])
def test_guided_rounds_give_the_same_drafts_listed_or_masked(backend, monkeypatch, one_faiss_thread):
    """Guided rounds list the items under the beam prefixes when few, else mask the catalog: the same drafts."""
    from recbole_specgr.inference.prefix_index import PrefixIndex

    verifier, drafter, seen = build(seed=2)
    calls = {"items_under": 0, "under_mask": 0}
    for name in calls:  # count which way each guided round went
        def counted(self, *args, _original=getattr(PrefixIndex, name), _name=name):
            calls[_name] += 1
            return _original(self, *args)
        monkeypatch.setattr(PrefixIndex, name, counted)
    out, ways = {}, {}
    for share in (1, 10**9):  # every round listed / every round masked
        monkeypatch.setattr("recbole_specgr.inference.specgr.GUIDED_LIST_SHARE", share)
        rec = SpeculativeRecommender(verifier, drafter, seen, drafting_backend=backend, **JOINT_CASES[0])
        out[share] = rec.recommend(*user_seq(range(N_USERS)))
        ways[share] = dict(calls)
        calls.update(items_under=0, under_mask=0)
    assert ways[1]["items_under"] > 0 and ways[1]["under_mask"] == 0
    assert ways[10**9]["under_mask"] > 0 and ways[10**9]["items_under"] == 0
    assert torch.equal(out[1].drafts, out[10**9].drafts) and torch.equal(out[1].scores, out[10**9].scores)


def test_drafting_with_padded_or_empty_candidates():
    g = torch.Generator().manual_seed(5)
    vectors, queries = torch.randn(30, 4, generator=g), torch.randn(2, 4, generator=g)
    session = DraftIndex(vectors, "dense").session(queries)
    items, scores = session.topk(3, DraftMask(candidates=torch.tensor([[0, 0, 4, 9], [0, 0, 0, 17]])))
    assert items[1].tolist() == [17, 0, 0] and scores[1, 1:].eq(-math.inf).all()
    assert sorted(items[0, :2].tolist()) == [4, 9] and items[0, 2] == 0
    items, _ = session.topk(3, DraftMask(candidates=torch.zeros(2, 0, dtype=torch.long)))
    assert items.eq(0).all()


def test_joint_ranking_is_the_same_with_the_faiss_backend(one_faiss_thread):
    verifier, drafter, seen = build(seed=1)
    kwargs = dict(JOINT_CASES[0])
    dense = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*user_seq(range(N_USERS)))
    fai = SpeculativeRecommender(verifier, drafter, seen, drafting_backend="faiss", **kwargs).recommend(
        *user_seq(range(N_USERS)))
    assert torch.equal(dense.drafts, fai.drafts)
    assert torch.allclose(dense.scores, fai.scores, atol=1e-4)  # the same items, keys equal up to float sums
    items = torch.tensor([[0, 3, 7], [5, 5, 1]])
    session = DraftIndex(drafter.items, "faiss").session(drafter.user_vectors[:2])
    assert torch.allclose(session.item_scores(items), (drafter.user_vectors[:2] @ drafter.items.T).gather(1, items))


def test_items_with_equal_v_reach_the_evaluator_in_speculative_inference_order():
    """Unseen items 5 and 6 share their prefix (0, 1), so their V is equal: SpecGR lists them in draft order (5, its
    drafter's first) and the evaluator, reading the [B, n] scores with topk, must see that order."""
    from recbole_specgr.evaluation import SplitMetrics

    codes = torch.tensor([[-1, -1, -1], [0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0], [0, 1, 1]])
    seen = torch.tensor([False, True, True, True, True, False, False])
    verifier = TableVerifier(codes, n_users=2, generable=seen, seed=1, codebook_size=3)
    item_vectors = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.1, 0.8], [0.2, 0.7], [0.3, 0.6], [1.0, 0.0], [0.9, 0.1]])
    drafter = FixedDrafter(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), item_vectors)
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=2, num_beams=3, threshold=-100.0, topk=2)
    out = rec.recommend(torch.tensor([[1, 0]]), torch.tensor([1]))
    assert out.drafts[0, 0].tolist() == [5, 6] and out.draft_scores[0, 0, 0] == out.draft_scores[0, 0, 1]
    assert out.scores[0].topk(2).indices.tolist() == [5, 6]
    metrics = SplitMetrics([1, 2], seen)
    metrics.add(out.scores, torch.tensor([5]))
    assert metrics.result()["recall@1"] == 1.0


@pytest.mark.parametrize("n_cols, nan", [(12, True), (600, False), (600, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0, 1, 5, 12, 20])
def test_stable_padded_topk_is_the_head_of_a_stable_sort(k, dtype, n_cols, nan):
    """Many exact ties, negative keys, ±inf, NaN of either sign and −0.0 next to 0.0 (equal): the k picks are a
    stable descending sort's first k (equal keys in column order, NaN first as the sort puts it), padded with "none"
    past 12 columns; narrow rows and wide ones (another way, see ``drafting._stable_topk``), with and without NaN."""
    from recbole_specgr.inference.drafting import PACKED_TOPK_MAX_COLS, padded_topk

    assert (n_cols > PACKED_TOPK_MAX_COLS) == (n_cols == 600)
    g = torch.Generator().manual_seed(k)
    key = (torch.randint(-3, 4, (6, n_cols), generator=g).float() / 2).to(dtype)
    key[:, n_cols // 2:] = torch.where(key[:, n_cols // 2:] > 0, -math.inf, key[:, n_cols // 2:])  # short rows too
    values = ((-math.inf, 0.2), (math.inf, 0.05), (-0.0, 0.1)) + (((math.nan, 0.05), (-math.nan, 0.05)) if nan else ())
    for value, share in values:
        key[torch.rand(6, n_cols, generator=g) < share] = value
    key[0, :] = -math.inf  # a row with nothing to pick
    values, cols, valid = padded_topk(key, k, stable=True)
    sorted_values, sorted_cols = key.sort(dim=1, descending=True, stable=True)
    n = min(k, n_cols)
    assert torch.equal(cols[:, :n], sorted_cols[:, :n])
    assert torch.allclose(values[:, :n], sorted_values[:, :n], equal_nan=True)
    assert values.shape == (6, k) and not valid[:, n:].any() and torch.equal(valid[:, :n], values[:, :n] > -math.inf)


def test_packed_keys_read_back_and_rank_blocks_together_as_one_stable_sort():
    """Two blocks packed with their own (interleaved) columns and ranked in one integer sort: the order of a stable
    descending sort of all the columns (NaN first, −0.0 equal to 0.0, denormals, ±FLT_MAX, ±inf); each key reads
    back as its float (−0.0 as 0.0, one NaN) and its column."""
    from recbole_specgr.inference.drafting import packed_keys, unpacked

    big, tiny = torch.finfo(torch.float32).max, 1e-45
    key = torch.tensor([[0.0, -0.0, math.inf, -math.inf, -math.nan, tiny, -tiny, big, -big, 1.5, 1.5, -2.0, 1.5, 0.0]])
    cols = torch.tensor([[7, 3, 0, 11, 5, 2, 9, 1, 4, 6, 8, 10, 13, 12]])
    blocks = [(key[:, :6], cols[:, :6]), (key[:, 6:], cols[:, 6:])]
    packed = torch.cat([packed_keys(k, c) for k, c in blocks], dim=1)
    by_column = torch.full((1, 14), math.nan).scatter_(1, cols, key)  # the same keys, each at its column
    assert torch.equal(unpacked(packed.sort(dim=1, descending=True).values)[1],
                       by_column.sort(dim=1, descending=True, stable=True).indices)
    values, back = unpacked(packed)
    assert torch.equal(back, cols) and values.isnan().tolist() == key.isnan().tolist()
    assert torch.equal(values[~key.isnan()], key[~key.isnan()]) and not values[0, 1].signbit()  # −0.0 read as 0.0


def test_beam_log_probs_are_known_exactly_where_every_prefix_is_a_beam():
    """An item's digit j is read from step j's rows when its (j−1)-digit prefix is a beam of B_{j−1}; its first d
    digits are known when that holds for every j ≤ d (brute force over all users and items: ``known`` is the largest
    such d), and their log-probs are the table's."""
    verifier, _, _ = build(seed=4)
    steps = list(verifier.beam_search(verifier.encode(*user_seq(range(N_USERS))), 3, keep_log_probs=True))
    items = torch.arange(N_ITEMS + 1).expand(N_USERS, -1)
    table, known = beam_log_probs(verifier.prefix_index, verifier.item2codes,
                                   CompleteBeams.of(verifier.prefix_index, steps), items)
    l = verifier.n_digits
    for user in range(N_USERS):
        beams = [{tuple(step.prefixes[user, k].tolist()) for k in range(3) if step.valid[user, k]} for step in steps]
        for item in range(1, N_ITEMS + 1):
            codes = verifier.item2codes[item].tolist()
            expect = max(d for d in range(l + 1) if all(tuple(codes[:j]) in beams[j - 1] for j in range(1, d)))
            assert int(known[user, item]) == expect, (user, item)
            assert table[user, item, :expect].tolist() == pytest.approx(verifier.digit_table(user, codes)[:expect],
                                                                        abs=1e-6)
    assert {l - 1, l} <= set(known[:, 1:].flatten().tolist()) and not known[:, 0].any()  # partly and fully known


def _recording(verifier):
    """``verifier`` whose ``digit_log_probs`` records the (user, item) pairs it decodes."""
    decoded, digit_log_probs = set(), verifier.digit_log_probs

    def record(enc, cand_items, digits=None):
        users = enc.hidden[:, 0, 0].long()
        decoded.update((int(u), int(i)) for u, row in zip(users, cand_items) for i in row if i != 0)  # 0: padding
        return digit_log_probs(enc, cand_items, digits)

    verifier.digit_log_probs = record
    return decoded


@pytest.mark.parametrize("case", [0, 2, 3])
def test_joint_ranking_decodes_only_the_seen_drafts_its_beams_did_not(case):
    """A joint ranking decodes every user's complete beams first: a draft whose every digit they decoded reads its
    log-probs there, and an unseen draft (v_u replaces its V) is not verified at all (V = NaN). The same list as
    when every draft is decoded."""
    verifier, drafter, seen = build(seed=5)
    kwargs = JOINT_CASES[case]
    rec = SpeculativeRecommender(verifier, drafter, seen, **kwargs)
    decoded = _recording(verifier)
    out = rec.recommend(*user_seq(range(N_USERS)))
    steps = list(verifier.beam_search(verifier.encode(*user_seq(range(N_USERS))), kwargs["num_beams"],
                                      keep_log_probs=True))
    drafts = out.drafts.flatten(1)
    _, known = beam_log_probs(verifier.prefix_index, verifier.item2codes,
                              CompleteBeams.of(verifier.prefix_index, steps), drafts)
    needed = {(u, int(i)) for u in range(N_USERS) for i, k in zip(drafts[u], known[u])
              if i and seen[i] and k < verifier.n_digits}
    assert needed and needed == decoded
    unseen = (out.drafts != 0) & ~seen[out.drafts]
    assert unseen.any() and out.draft_scores[unseen].isnan().all()
    everything = SpeculativeRecommender(NoBeamTables(verifier), drafter, seen, **kwargs).recommend(
        *user_seq(range(N_USERS)))
    assert torch.equal(out.scores, everything.scores) and torch.equal(out.drafts, everything.drafts)
    assert torch.equal(out.draft_scores[~unseen], everything.draft_scores[~unseen])


def test_unseen_drafts_are_decoded_only_up_to_the_digits_eq2_reads():
    """Eq. 2 reads l − 1 digits of an unseen item: its drafts are decoded for those alone (seen ones for all l), and
    in a grid with complete beams one whose first l − 1 digits the beams decoded is not decoded at all. A verifier
    whose ``digit_log_probs`` takes no ``digits`` gets every digit asked for, and the same V."""
    verifier, drafter, seen = build(seed=6)
    l, asked = verifier.n_digits, {}
    plain = verifier.digit_log_probs

    def record(enc, cand_items, digits=None):
        for u, row in zip(enc.hidden[:, 0, 0].long().tolist(), cand_items.tolist()):
            asked.update({(u, i): digits for i in row if i != 0})  # 0: padding
        return plain(enc, cand_items, digits)

    verifier.digit_log_probs = record
    grid = [Thresholds(-1.2, -1.2), Thresholds(-1.2, -1.2, 0.5, -1.0)]
    for settings in (grid[:1], grid):
        asked.clear()
        rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=3, num_beams=4, topk=6)
        out = next(rec.recommend_thresholds(*user_seq(range(N_USERS)), settings))
        verifier.digit_log_probs = lambda enc, cand_items: plain(enc, cand_items)  # written before ``digits``
        legacy = next(rec.recommend_thresholds(*user_seq(range(N_USERS)), settings))
        verifier.digit_log_probs = record
        assert torch.equal(out.draft_scores, legacy.draft_scores) and torch.equal(out.scores, legacy.scores)
        unseen = {(u, int(i)) for u in range(N_USERS) for i in out.drafts[u].flatten().tolist() if i and not seen[i]}
        assert unseen and not out.draft_scores.isnan().any()
        assert {asked[key] for key in unseen if key in asked} == ({l - 1} if unseen & set(asked) else set())
        assert len(settings) > 1 or unseen <= set(asked)  # alone, the paper's ranking decodes every draft
        assert {d for (u, i), d in asked.items() if seen[i]} == {None}
    steps = list(verifier.beam_search(verifier.encode(*user_seq(range(N_USERS))), 4, keep_log_probs=True))
    drafts = out.drafts.flatten(1)
    _, known = beam_log_probs(verifier.prefix_index, verifier.item2codes, CompleteBeams.of(verifier.prefix_index,
                                                                                            steps), drafts)
    read = {(u, int(i)) for u in range(N_USERS) for i, k in zip(drafts[u], known[u]) if i and not seen[i] and k == l - 1}
    assert read and not read & set(asked)  # in the grid: read off the beams, not decoded


def test_a_joint_grid_asks_the_drafter_for_the_beams_logits_once(monkeypatch):
    """Every joint setting of a pass ranks the same complete beams: their s_d is computed once per batch, not once per
    setting (the grid's lists are still each those of a run alone)."""
    from recbole_specgr.inference import drafting

    verifier, drafter, seen = build(seed=7)
    calls = []
    item_scores = drafting.DraftSession.item_scores
    monkeypatch.setattr(drafting.DraftSession, "item_scores",
                        lambda self, items: calls.append(items.shape) or item_scores(self, items))
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=3, num_beams=4, topk=6)
    grid = [Thresholds(-1.2, -1.2, 0.5, -1.0), Thresholds(-0.8, -0.8, 1.0, -2.0), Thresholds(-2.0, -2.0, 2.0, -0.5)]
    outputs = list(rec.recommend_thresholds(*user_seq(range(N_USERS)), grid))
    n_grid = len(calls)
    calls.clear()
    alone = [next(rec.recommend_thresholds(*user_seq(range(N_USERS)), [setting])) for setting in grid]
    assert n_grid == len(calls) // len(grid) >= 1
    for out, ref in zip(outputs, alone):
        assert torch.equal(out.scores, ref.scores)


def test_a_grid_with_the_papers_ranking_verifies_unseen_drafts():
    """With a setting of the paper's ranking in the grid, every draft's V is Eq. 2, unseen drafts' included."""
    verifier, drafter, seen = build(seed=6)
    grid = [Thresholds(-1.2, -1.2), Thresholds(-1.2, -1.2, 0.5, -1.0)]
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=3, num_beams=4, topk=6)
    n_unseen = 0
    for out in rec.recommend_thresholds(*user_seq(range(N_USERS)), grid):
        for user, r, k in torch.nonzero(out.drafts).tolist():
            item = int(out.drafts[user, r, k])
            n_unseen += not seen[item]
            assert float(out.draft_scores[user, r, k]) == pytest.approx(eq2(verifier, user, item, seen), abs=1e-6)
    assert n_unseen > 0


@pytest.mark.parametrize("rank_all_unseen", [False, True])
def test_a_joint_grid_keeps_equal_keys_in_the_order_of_a_run_alone(rank_all_unseen):
    """Unseen items with one drafter vector get equal joint keys; a grid runs extra (empty) rounds for its stricter
    settings, and the pick among the equal keys at the K-th place must not depend on that (found in review)."""
    n_items, n_unseen, n_users = 200, 100, 8
    mismatches, more_rounds = 0, 0
    for seed in range(4):
        item2codes, seen = make_catalog(n_items, 3, 6, n_unseen, seed=seed)
        verifier = TableVerifier(item2codes, n_users, generable=seen, seed=seed)
        g = torch.Generator().manual_seed(seed + 100)
        items = torch.randn(n_items + 1, DIM, generator=g)
        items[~seen] = items[~seen][0]  # every unseen item (and the padding row, zeroed below) one vector
        items[0] = 0
        drafter = FixedDrafter(torch.randn(n_users, DIM, generator=g), items)
        for unseen_score in (-0.5, -1.0, -1.5, -2.0, -3.0):
            grid = [Thresholds(-9.0, -9.0, 1.0, unseen_score), Thresholds(-0.3, -0.3, 1.0, unseen_score)]
            rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=40, num_beams=10, topk=10,
                                         rank_all_unseen=rank_all_unseen)
            swept = next(iter(rec.recommend_thresholds(*user_seq(range(n_users)), grid)))
            use_setting(rec, grid[0])
            alone = rec.recommend(*user_seq(range(n_users)))
            more_rounds += swept.drafts.size(1) > alone.drafts.size(1)
            mismatches += not torch.equal(swept.scores, alone.scores)
    assert more_rounds > 0 and mismatches == 0


def test_a_joint_ranking_refuses_a_beam_search_that_stops_early():
    verifier, drafter, seen = build(seed=7)
    search = verifier.beam_search

    class Short(NoBeamTables):
        def beam_search(self, enc, beam_size, item_mask=None, exclude=None, keep_log_probs=False):
            return iter(list(search(enc, beam_size, item_mask, exclude, keep_log_probs))[:-1])

    rec = SpeculativeRecommender(Short(verifier), drafter, seen, draft_size=3, num_beams=4, topk=3, draft_weight=1.0)
    with pytest.raises(ValueError, match="verifier.beam_search: yielded 2 beam sets, expected n_digits = 3"):
        rec.recommend(*user_seq(range(N_USERS)))


@pytest.mark.parametrize("kwargs", [ORACLE_CASES[0], JOINT_CASES[0], JOINT_CASES[1]])
@pytest.mark.parametrize("allowed_kind", ["shared", "per_user"])
def test_a_verifier_whose_beams_ignore_the_exclusion_still_yields_only_allowed_items(kwargs, allowed_kind):
    """The list is filtered by ``allowed_items`` itself: a verifier that spells excluded items in its beams (the
    protocol asks it not to) loses those beams, never the contract."""

    class IgnoresExclusion(TableVerifier):
        def beam_search(self, enc, beam_size, item_mask=None, exclude=None, keep_log_probs=False):
            return super().beam_search(enc, beam_size, item_mask, None, keep_log_probs)

    for seed in range(3):
        _, drafter, seen = build(seed=seed)
        plain = build(seed=seed)[0]
        verifier = IgnoresExclusion(plain.item2codes, N_USERS, generable=plain.generable, seed=seed,
                                    codebook_size=plain.codebook_size)
        verifier.log_probs = plain.log_probs
        allowed = allowed_mask(allowed_kind, seed)
        out = SpeculativeRecommender(verifier, drafter, seen, **kwargs).recommend(*user_seq(range(N_USERS)),
                                                                                 allowed_items=allowed)
        for user in range(N_USERS):
            listed = [i for i, _ in ranked(out.scores[user])]
            assert listed and all(user_row(allowed, user)[i] for i in listed), (seed, user, listed)


def plain_joint_ranking(rec, rounds, cut, setting, columns):
    """The joint ranking as its definition reads: every column (drafts, complete beams, pool) in one stable
    descending ranking, each item once, at its first column, with its largest key. (The code ranks the seen items'
    top-K once per γ and α, and per setting only the unseen items' columns next to it.)"""
    alpha = setting.draft_weight
    verified = cut.scores.masked_fill(~columns.seen_cand, setting.unseen_score)
    keys = rec.n_digits * verified + alpha * columns.cand_logits
    offset = setting.novelty_weight * rounds.novelty if setting.novelty_weight > 0 else None
    if offset is not None:
        keys = keys + offset[:, None, None].masked_fill(columns.seen_cand, 0.0)
    parts = [keys.masked_fill(~cut.accepted, -math.inf).flatten(1),
             (columns.beam_scores + alpha * rounds.beam_logits).masked_fill(~columns.beam_ok, -math.inf)]
    if columns.pool_logits is not None:
        pool_keys = rec.n_digits * setting.unseen_score + alpha * columns.pool_logits
        if offset is not None:
            pool_keys = pool_keys + offset[:, None]
        parts.append(pool_keys.masked_fill(~columns.pool_ok, -math.inf))
    keys = torch.cat(parts, dim=1)
    best = torch.full_like(keys, -math.inf).scatter_reduce_(1, columns.first, keys, reduce="amax")
    once = columns.first == torch.arange(keys.size(1))  # the column is its item's first
    best = best.masked_fill(~once | (columns.items == 0), -math.inf)
    order = best.sort(dim=1, descending=True, stable=True).indices[:, : rec.topk]
    top = best.gather(1, order)
    return columns.items.gather(1, order), top, top > -math.inf


@pytest.mark.parametrize("rank_all_unseen, unseen_beams", [(True, False), (False, False), (True, True), (False, True)])
def test_the_split_joint_ranking_is_one_stable_ranking_of_all_columns(monkeypatch, rank_all_unseen, unseen_beams):
    """Keys on a grid of halves and integers (so seen and unseen items tie often, at β = 0), the text prior (β),
    histories with and without unseen items (η·ρ_u), beams that spell only seen items or every item (an unseen item then holds a beam and a draft or a
    pool column): every setting's list equals the plain ranking of all columns, keys bitwise, ties in column order."""
    n_items, n_unseen, n_users = 60, 20, 61
    item2codes, seen = make_catalog(n_items, 3, 4, n_unseen, seed=3)
    verifier = TableVerifier(item2codes, n_users, generable=None if unseen_beams else seen, seed=3)
    g = torch.Generator().manual_seed(4)
    verifier.log_probs = -0.5 * torch.randint(0, 5, verifier.log_probs.shape, generator=g).float()
    drafter = FixedDrafter(torch.randint(-1, 2, (n_users, DIM), generator=g).float(),
                           torch.randint(-1, 2, (n_items + 1, DIM), generator=g).float())
    grid = [Thresholds(gamma, gamma, alpha, v_u, beta, eta) for gamma in (-9.0, -1.0) for alpha in (1.0, 2.0)
            for v_u in (-2.0, -1.0, 0.0) for beta in (0.0, 1.5) for eta in (0.0, 3.0)]
    rec = SpeculativeRecommender(verifier, drafter, seen, draft_size=6, num_beams=8, topk=10,
                                 rank_all_unseen=rank_all_unseen, text_prior=text_prior(3, n_items))
    split = SpeculativeRecommender._rank_joint
    compared, ties = [], 0

    def checked(self, rounds, cut, setting, allowed):
        items, keys, ok = split(self, rounds, cut, setting, allowed)
        want_items, want_keys, want_ok = plain_joint_ranking(
            self, rounds, cut, setting, self._joint_columns(rounds, cut, setting, allowed))
        assert torch.equal(ok, want_ok) and torch.equal(keys[ok], want_keys[want_ok]), setting
        assert torch.equal(items[ok], want_items[want_ok]), setting
        compared.append(setting)
        nonlocal ties  # equal keys of a seen and an unseen item next to each other in a list
        equal = (want_keys[:, 1:] == want_keys[:, :-1]) & want_ok[:, 1:]
        ties += int((equal & (seen[want_items[:, 1:]] != seen[want_items[:, :-1]])).sum())
        return items, keys, ok

    monkeypatch.setattr(SpeculativeRecommender, "_rank_joint", checked)
    users = [1, 45, 50, 3, 59, 7, 44, 12]  # items 41-60 are unseen: ρ_u is 1 for half of them
    allowed = torch.rand(len(users), n_items + 1, generator=g) < 0.8
    for out in rec.recommend_thresholds(*user_seq(users), grid, allowed_items=allowed):
        assert out.listed.any()
    assert len(compared) == len(grid) and ties > 0
