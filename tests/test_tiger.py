"""TIGER and its T5 on tiny random models (CPU): caching, batched scoring, beam search vs brute force, TIGER_C."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_specgr.config import model_defaults
from recbole_specgr.evaluation import EXCLUDED_ITEMS
from recbole_specgr.model.sequential_recommender import tiger as tiger_module
from recbole_specgr.model.sequential_recommender.tiger import TIGER
from recbole_specgr.model.t5 import T5, T5Config, few_keys_attention

NEG_INF = float("-inf")
N_ITEMS, L, C, K = 30, 3, 4, 5  # items 1..30, 3 digits of 4 codes: 30 of 64 codes exist


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyDataset:
    def __init__(self, seen):
        self.seen_item_mask = seen

    def num(self, field):
        return len(self.seen_item_mask)


def catalog(seed=0, n_unseen=8):
    """Random distinct codes [N_ITEMS + 1, L] (row 0 = −1) and a seen mask with the last ``n_unseen`` items unseen."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(C**L, generator=g)[:N_ITEMS]
    codes = (flat[:, None] // C ** torch.arange(L - 1, -1, -1)) % C
    seen = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    seen[0] = False
    seen[N_ITEMS + 1 - n_unseen :] = False
    return torch.cat([torch.full((1, L), -1), codes]).long(), seen


def make_config(**overrides):
    config = model_defaults("TIGER")
    config.update(
        USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list", ITEM_LIST_LENGTH_FIELD="item_length",
        NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=6, device="cpu", topk=[2, K],
        n_layers_enc=2, n_layers_dec=2, hidden_size=16, n_heads=2, d_kv=8, inner_size=32, dropout_prob=0.0,
        initializer_range=0.3, num_beams=K,
    )
    config.update(overrides)
    return config


def make_tiger(seed=0, item2codes=None, seen=None, **overrides):
    if item2codes is None:
        item2codes, seen = catalog(seed)
    torch.manual_seed(seed)
    model = TIGER(make_config(**overrides), TinyDataset(seen), item2codes=item2codes, codebook_size=C)
    return model.eval()


def histories(B=4, T=6, seed=0):
    """Left-aligned, 0-padded histories of different lengths and next items."""
    g = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, N_ITEMS + 1, (B, T), generator=g)
    lengths = torch.tensor([T, 1, 3, 5, 2, 4, 6, 1][:B])
    item_seq = item_seq.masked_fill(torch.arange(T)[None, :] >= lengths[:, None], 0)
    target = torch.randint(1, N_ITEMS - 8, (B,), generator=g)  # seen items
    return Interaction({"item_id_list": item_seq, "item_length": lengths, "item_id": target})


def brute_force_log_likelihood(model, inter):
    """[B, n] sequence log-likelihood of every item, one user and one item at a time, full uncached forward."""
    item_seq, lengths = inter["item_id_list"], inter["item_length"]
    out = torch.full((len(lengths), model.n_items), NEG_INF)
    with torch.no_grad():
        for b in range(len(lengths)):
            w = int(lengths[b])
            tokens = [1] + [3 + j * C + int(model.item2codes[i, j]) for i in item_seq[b, :w] for j in range(L)] + [2]
            tokens = torch.tensor([tokens])
            hidden = model.t5.encode(tokens, torch.ones_like(tokens, dtype=torch.bool))
            for item in range(1, model.n_items):
                target = [3 + j * C + int(model.item2codes[item, j]) for j in range(L)]
                dec_in = torch.tensor([[[1] + target[:-1]]])
                logp = model.t5.decode(dec_in, hidden, torch.ones_like(tokens, dtype=torch.bool)).log_softmax(-1)
                out[b, item] = sum(float(logp[0, 0, j, target[j]]) for j in range(L))
    return out


# ---------------------------------------------------------------- T5
def test_kv_cached_decoding_equals_full_decoding():
    torch.manual_seed(0)
    t5 = T5(T5Config(vocab_size=20, n_layers_enc=2, n_layers_dec=2, d_model=16, n_heads=2, d_kv=8, d_ff=32,
                     dropout=0.0, init_std=0.3)).eval()
    B, G, S, T = 3, 4, 7, 5
    enc_tokens = torch.randint(3, 20, (B, S))
    enc_mask = torch.arange(S)[None, :] < torch.tensor([[7], [3], [5]])
    dec = torch.randint(3, 20, (B, G, T))
    dec[:, :, 0] = 1  # the G rows of a user share their start token
    with torch.no_grad():
        hidden = t5.encode(enc_tokens, enc_mask)
        full = t5.decode(dec, hidden, enc_mask)  # [B, G, T, V]
        cache = t5.start_cache(hidden, enc_mask)
        # start with one row per user, then fan out to G rows (as beam search does after its first step)
        logits, cache = t5.decode_step(dec[:, 0, 0], cache)
        assert torch.allclose(logits, full[:, 0, 0], atol=1e-5)
        cache = T5.reorder_cache(cache, torch.arange(B).repeat_interleave(G))
        for t in range(1, T):
            logits, cache = t5.decode_step(dec[:, :, t].reshape(-1), cache)  # [B·G, V]
            assert torch.allclose(logits.view(B, G, -1), full[:, :, t], atol=1e-5)
        # reordering rows = decoding the permuted sequences
        perm = torch.tensor([[2, 0, 3, 1], [1, 1, 0, 2], [3, 2, 1, 0]])
        cache2 = t5.start_cache(hidden, enc_mask)
        _, cache2 = t5.decode_step(dec[:, 0, 0], cache2)
        cache2 = T5.reorder_cache(cache2, torch.arange(B).repeat_interleave(G))
        _, cache2 = t5.decode_step(dec[:, :, 1].reshape(-1), cache2)
        cache2 = T5.reorder_cache(cache2, (perm + G * torch.arange(B)[:, None]).view(-1))
        logits, _ = t5.decode_step(dec.gather(1, perm[:, :, None].expand(-1, -1, T))[:, :, 2].reshape(-1), cache2)
        expected = t5.decode(dec.gather(1, perm[:, :, None].expand(-1, -1, T)), hidden, enc_mask)[:, :, 2]
        assert torch.allclose(logits.view(B, G, -1), expected, atol=1e-5)
        # the shared start position decoded once per user, the rows continuing from it = decoding every row in full
        first, _, shared = t5.decode_fan_out(dec[:, 0, 0], t5.start_cache(hidden, enc_mask))
        users = torch.arange(B).repeat_interleave(G)
        rest = t5.decode_rows(dec[:, :, 1:].reshape(B * G, T - 1), shared, users, users).view(B, G, T - 1, -1)
        assert torch.allclose(first, full[:, 0, 0], atol=1e-5) and torch.allclose(rest, full[:, :, 1:], atol=1e-5)
        # ... any number of rows per user, none included: each row as in the full decoding of its user's sequence
        for kept in ([[0, 2], [], [1, 2, 3]], [[3], [0, 1, 2, 3], [2]], [[], [], [0]]):
            users = torch.tensor([b for b in range(B) for _ in kept[b]])
            cols = torch.tensor([g for b in range(B) for g in kept[b]])
            rest = t5.decode_rows(dec[users, cols, 1:], shared, users, users)  # [R, T - 1, V]
            assert rest.shape == (len(users), T - 1, 20)
            assert torch.allclose(rest, full[users, cols, 1:], atol=1e-5)
        assert t5.decode_rows(dec[:0, 0, 1:], shared, users[:0], users[:0]).shape == (0, T - 1, 20)
        with pytest.raises(ValueError, match="decode_rows: users must be non-decreasing"):
            t5.decode_rows(dec[[1, 0], 0, 1:], shared, torch.tensor([1, 0]), torch.tensor([1, 0]))
        # ... and its second position decoded once per user and value of a small set (2 of 3 values, G = 4 rows)
        dec[:, :, 1] = torch.tensor([[5, 3, 5, 5], [4, 4, 4, 4], [3, 5, 4, 3]])
        full = t5.decode(dec, hidden, enc_mask)
        second = torch.tensor([3, 4, 5])
        first, after_second, shared = t5.decode_fan_out(dec[:, 0, 0], t5.start_cache(hidden, enc_mask), second)
        rows = T5.fan_out_rows(dec[:, :, 1], second)  # [B, G]
        assert rows.tolist() == [[2, 0, 2, 2], [4, 4, 4, 4], [6, 8, 7, 6]]
        users = torch.arange(B).repeat_interleave(G)
        rest = t5.decode_rows(dec[:, :, 2:].reshape(B * G, T - 2), shared, rows.flatten(), users)
        assert torch.allclose(first, full[:, 0, 0], atol=1e-5)
        assert torch.allclose(after_second.flatten(0, 1)[rows], full[:, :, 1], atol=1e-5)
        assert torch.allclose(rest.view(B, G, T - 2, -1), full[:, :, 2:], atol=1e-5)


@pytest.mark.parametrize("n_keys", [1, 2, 5])
def test_few_keys_attention_equals_the_fused_kernel(n_keys):
    """The decoder self-attention's inference path (a handful of keys) against ``scaled_dot_product_attention``,
    with no mask, an additive mask holding −inf (causal) and a boolean one; and a whole decoder in eval mode (few
    keys path) against train mode without dropout (the fused kernel)."""
    g = torch.Generator().manual_seed(n_keys)
    q, k, v = (torch.randn(3, 2, shape, 8, generator=g) for shape in (4, n_keys, n_keys))
    causal = torch.randn(1, 2, 4, n_keys, generator=g).masked_fill(
        torch.arange(n_keys)[None, :] > torch.arange(4)[:, None], NEG_INF)  # every query keeps key 0
    boolean = torch.rand(3, 1, 1, n_keys, generator=g) < 0.5
    boolean[..., 0] = True
    for mask in (None, causal, boolean):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.allclose(few_keys_attention(q, (k,), (v,), mask), expected, atol=1e-6)
        cut = n_keys // 2  # in two chunks along the keys (cached positions, new ones); a chunk may be empty
        chunks = [(x[..., :cut, :], x[..., cut:, :]) for x in (k, v)]
        assert torch.allclose(few_keys_attention(q, *chunks, mask), expected, atol=1e-6)
    torch.manual_seed(n_keys)
    t5 = T5(T5Config(vocab_size=20, n_layers_enc=1, n_layers_dec=2, d_model=16, n_heads=2, d_kv=8, d_ff=32,
                     dropout=0.0, init_std=0.3))
    enc_tokens = torch.randint(3, 20, (2, 6), generator=g)
    dec = torch.randint(3, 20, (2, 3, n_keys), generator=g)
    with torch.no_grad():
        hidden = t5.encode(enc_tokens, torch.ones(2, 6, dtype=torch.bool))
        fused = t5.train().decode(dec, hidden, torch.ones(2, 6, dtype=torch.bool))
        few = t5.eval().decode(dec, hidden, torch.ones(2, 6, dtype=torch.bool))
    assert torch.allclose(few, fused, atol=1e-5)


@pytest.mark.parametrize("size", [16, 64, 100])
def test_rms_norm_inference_path_equals_the_built_in(size):
    from recbole_specgr.model.t5 import RMSNorm

    g = torch.Generator().manual_seed(size)
    norm = RMSNorm(size, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(size, generator=g))
    x = torch.randn(300, 2, size, generator=g) * 3
    expected = torch.nn.functional.rms_norm(x, (size,), norm.weight, 1e-6)
    with torch.no_grad():
        fast = norm(x)
    assert torch.allclose(fast, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(norm(x), expected)  # with gradients on: the built-in itself


def test_cross_attention_keys_padded_for_the_cpu_kernel_give_the_same_decoding(monkeypatch):
    from recbole_specgr.model import t5 as t5_module

    torch.manual_seed(2)
    t5 = T5(T5Config(vocab_size=20, n_layers_enc=1, n_layers_dec=2, d_model=16, n_heads=2, d_kv=8, d_ff=32,
                     dropout=0.0, init_std=0.3)).eval()
    enc_mask = torch.arange(7)[None, :] < torch.tensor([[7], [3]])
    dec = torch.randint(3, 20, (2, 3, 4))
    with torch.no_grad():
        hidden = t5.encode(torch.randint(3, 20, (2, 7)), enc_mask)
        padded = t5.start_cache(hidden, enc_mask)
        assert padded.cross_kv[0][0].shape[2] == 16 and padded.cross_mask.shape[-1] == 16
        assert torch.equal(padded.cross_mask[:, 0, 0, :7], enc_mask) and not padded.cross_mask[..., 7:].any()
        expected = t5.decode(dec, hidden, enc_mask)
        with torch.enable_grad():  # a training step: no padding (its backward would zero-fill their gradients)
            assert t5.start_cache(hidden, enc_mask).cross_kv[0][0].shape[2] == 7
        monkeypatch.setattr(t5_module, "CROSS_KEYS_MULTIPLE", 1)
        assert t5.start_cache(hidden, enc_mask).cross_kv[0][0].shape[2] == 7
        assert torch.allclose(t5.decode(dec, hidden, enc_mask), expected, atol=1e-5)


def test_encoder_ignores_padding():
    torch.manual_seed(1)
    t5 = T5(T5Config(vocab_size=20, n_layers_enc=2, d_model=16, n_heads=2, d_kv=8, d_ff=32, dropout=0.0)).eval()
    tokens = torch.randint(3, 20, (1, 5))
    padded = torch.cat([tokens, torch.randint(3, 20, (1, 4))], dim=1)
    with torch.no_grad():
        short = t5.encode(tokens, torch.ones(1, 5, dtype=torch.bool))
        long = t5.encode(padded, torch.arange(9)[None, :] < 5)
    assert torch.allclose(short, long[:, :5], atol=1e-5)


# ---------------------------------------------------------------- TIGER
def test_yaml_and_bad_arguments():
    config = model_defaults("TIGER")
    for key in ("n_layers_enc", "n_layers_dec", "hidden_size", "n_heads", "d_kv", "inner_size", "dropout_prob",
                "num_beams", "tiger_allow_unseen", "tiger_c_unseen_share", "learning_rate", "weight_decay",
                "epochs"):
        assert key in config, key
    with pytest.raises(ValueError, match="num_beams"):
        make_tiger(num_beams=K - 1)
    with pytest.raises(ValueError, match="requires tiger_allow_unseen"):
        make_tiger(tiger_c_unseen_share=0.2, tiger_allow_unseen=True)
    item2codes, seen = catalog()
    with pytest.raises(ValueError, match="item2codes"):
        make_tiger(item2codes=item2codes[:-1], seen=seen)


def test_encoder_tokens_layout():
    model = make_tiger()
    item_seq = torch.tensor([[5, 7, 0], [2, 0, 0]])
    tokens, mask = model._encoder_tokens(item_seq, torch.tensor([2, 1]))
    digits = lambda i: [3 + j * C + int(model.item2codes[i, j]) for j in range(L)]  # noqa: E731
    assert tokens[0].tolist() == [1] + digits(5) + digits(7) + [2]
    assert tokens[1].tolist() == [1] + digits(2) + [2] + [0] * L
    assert mask.sum(dim=1).tolist() == [2 + 2 * L, 2 + L]


@pytest.mark.filterwarnings("ignore:Guards may run slower on Python 3.13.0")  # the interpreter's, not ours
def test_training_loss_traces_into_one_graph_and_keeps_the_eager_loss_without_trimming(monkeypatch):
    """Under torch.compile the encoder keeps all T·l + 2 positions (no graph break, no recompile per batch length);
    the padded tail is masked, so the loss is the eager (trimmed) one."""
    model = make_tiger().train()
    inter = histories(B=4, T=6)
    inter.interaction["item_id_list"] = F.pad(inter["item_id_list"], (0, 2))  # T = 8, longest history 6
    try:
        explained = torch._dynamo.explain(model.calculate_loss)(inter)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    eager = model.calculate_loss(inter)
    assert model._encoder_tokens(inter["item_id_list"], inter["item_length"])[0].shape[1] == 2 + 6 * L
    monkeypatch.setattr(tiger_module, "_untrimmed", lambda: True)  # what torch.compile sees
    assert model._encoder_tokens(inter["item_id_list"], inter["item_length"])[0].shape[1] == 2 + 8 * L
    assert model.calculate_loss(inter).item() == pytest.approx(eager.item(), rel=1e-6)


def test_batched_digit_log_probs_equal_one_by_one():
    model = make_tiger(seed=1)
    inter = histories(B=4)
    cands = torch.tensor([[1, 5, 30, 0], [2, 2, 9, 17], [29, 3, 4, 5], [8, 7, 6, 0]])
    with torch.no_grad():
        lp = model.digit_log_probs(model.encode(inter["item_id_list"], inter["item_length"]), cands)  # [B, N, l]
    brute = brute_force_log_likelihood(model, inter)
    assert torch.isinf(lp[cands == 0]).all()
    real = cands > 0
    assert torch.allclose(lp.sum(-1)[real], brute.gather(1, cands)[real], atol=1e-4)
    # per digit, for one candidate, against a hand-rolled forward
    with torch.no_grad():
        logits = model(inter["item_id_list"][:1], inter["item_length"][:1], cands[:1, 1:2])[0, 0].log_softmax(-1)
    tokens = [3 + j * C + int(model.item2codes[5, j]) for j in range(L)]
    assert torch.allclose(lp[0, 1], torch.stack([logits[j, tokens[j]] for j in range(L)]), atol=1e-5)
    # more candidates than first-digit codes (N = 31 > C = 4): the C first digits are decoded once per user
    many = torch.cat([torch.arange(1, N_ITEMS + 1), torch.zeros(1, dtype=torch.long)]).expand(4, -1)
    many = many.gather(1, torch.argsort(torch.rand(4, N_ITEMS + 1, generator=torch.Generator().manual_seed(3)), 1))
    with torch.no_grad():
        lp = model.digit_log_probs(model.encode(inter["item_id_list"], inter["item_length"]), many)
    assert torch.isinf(lp[many == 0]).all()
    assert torch.allclose(lp.sum(-1)[many > 0], brute.gather(1, many)[many > 0], atol=1e-4)


@pytest.mark.parametrize("allow_unseen", [False, True])
def test_wide_beam_full_sort_predict_is_brute_force_top_k(allow_unseen):
    model = make_tiger(seed=2, num_beams=N_ITEMS, tiger_allow_unseen=allow_unseen)
    inter = histories(B=4, seed=2)
    with torch.no_grad():
        scores = model.full_sort_predict(inter)  # [B, n]
        steps = list(model.beam_search(model.encode(inter["item_id_list"], inter["item_length"]), N_ITEMS))
    brute = brute_force_log_likelihood(model, inter)
    if not allow_unseen:
        brute = brute.masked_fill(~model.seen_item_mask, NEG_INF)
    top, idx = brute.topk(K, dim=1)
    assert (torch.isfinite(scores).sum(dim=1) == K).all()
    assert torch.equal(torch.isfinite(scores), torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True))
    assert torch.allclose(scores.gather(1, idx), top / L, atol=1e-4)
    n_allowed = int((model.seen_item_mask if not allow_unseen else torch.arange(N_ITEMS + 1) > 0).sum())
    final = steps[-1]
    assert final.valid.sum(dim=1).tolist() == [n_allowed] * 4
    assert torch.allclose(final.scores[:, :n_allowed], brute.topk(n_allowed, dim=1).values, atol=1e-4)


def test_narrow_beam_only_real_items():
    item2codes, seen = catalog(seed=3, n_unseen=0)
    model = make_tiger(seed=3, item2codes=item2codes, seen=seen, num_beams=K)
    inter = histories(B=4, seed=3)
    with torch.no_grad():
        final = list(model.beam_search(model.encode(inter["item_id_list"], inter["item_length"]), K))[-1]
        scores = model.full_sort_predict(inter)
    assert final.valid.all() and (final.items > 0).all()
    assert torch.equal(final.prefixes, model.item2codes[final.items])
    assert (torch.isfinite(scores).sum(dim=1) == K).all()
    brute = brute_force_log_likelihood(model, inter)
    assert torch.allclose(final.scores, brute.gather(1, final.items), atol=1e-4)


def test_beam_search_sent_a_user_mask_keeps_those_users_exact():
    """T5's KV cache (cross-attention per user, self-attention per beam) narrowed to users 0 and 2 after digit 2,
    with history exclusion on: their complete beams equal the full search's; users 1 and 3 get none."""
    model = make_tiger(seed=7, num_beams=K)
    inter = histories(B=4, seed=7)
    excluded = torch.rand(4, N_ITEMS + 1, generator=torch.Generator().manual_seed(7)) < 0.3
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        full = list(model.beam_search(enc, K, exclude=excluded))[-1]
        steps = model.beam_search(enc, K, exclude=excluded)
        next(steps), next(steps)
        narrowed = steps.send(torch.tensor([True, False, True, False]))
        narrowed = next(steps) if narrowed.depth < L else narrowed
    assert narrowed.depth == L
    assert torch.equal(narrowed.items[[0, 2]], full.items[[0, 2]])
    assert torch.allclose(narrowed.scores[[0, 2]], full.scores[[0, 2]], atol=1e-5)
    assert not narrowed.valid[[1, 3]].any() and (narrowed.items[[1, 3]] == 0).all()


def test_item_mask_restricts_beam_search():
    model = make_tiger(seed=4, num_beams=N_ITEMS)
    inter = histories(B=3, seed=4)
    mask = torch.zeros(N_ITEMS + 1, dtype=torch.bool)
    mask[torch.tensor([2, 11, 12, 25, 28])] = True  # 28 is unseen: an explicit mask may allow it
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        final = list(model.beam_search(enc, 8, item_mask=mask))[-1]
    assert final.valid.sum(dim=1).tolist() == [5, 5, 5]
    assert (final.items[~final.valid] == 0).all()
    brute = brute_force_log_likelihood(model, inter).masked_fill(~mask, NEG_INF)
    top, idx = brute.topk(5, dim=1)
    assert torch.equal(final.items[:, :5], idx) and torch.allclose(final.scores[:, :5], top, atol=1e-4)


def test_excluded_items_take_no_beams():
    """A user's excluded items (history) are pruned inside the search: a wide beam gives exactly the brute-force
    ranking of the non-excluded seen items, and β = K still ends in K real, non-excluded items for every user."""
    model = make_tiger(seed=6, num_beams=K)
    inter = histories(B=4, seed=6)
    g = torch.Generator().manual_seed(6)
    excluded = torch.rand(4, N_ITEMS + 1, generator=g) < 0.4  # [B, n], a different set per user
    brute = brute_force_log_likelihood(model, inter)
    allowed = model.seen_item_mask & ~excluded
    n_allowed = allowed.sum(dim=1)
    inter.update(Interaction({EXCLUDED_ITEMS: excluded}))
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        wide = list(model.beam_search(enc, N_ITEMS, exclude=excluded))[-1]
        narrow = list(model.beam_search(enc, K, exclude=excluded))[-1]
        scores = model.full_sort_predict(inter)
    assert wide.valid.sum(dim=1).tolist() == n_allowed.tolist()
    for user in range(4):
        top, idx = brute[user].masked_fill(~allowed[user], NEG_INF).topk(int(n_allowed[user]))
        assert torch.equal(wide.items[user, : len(idx)], idx)
        assert torch.allclose(wide.scores[user, : len(idx)], top, atol=1e-4)
    assert narrow.valid.all() and allowed.gather(1, narrow.items).all()
    assert torch.allclose(narrow.scores, brute.gather(1, narrow.items), atol=1e-4)
    assert (torch.isfinite(scores).sum(dim=1) == K).all() and not torch.isfinite(scores[excluded]).any()
    assert torch.allclose(scores.gather(1, narrow.items), narrow.scores / L, atol=1e-4)
    with pytest.raises(ValueError, match=r"item_mask: expected a bool tensor of shape \[B, 31\]"):
        model.prefix_index.alive_nodes(excluded[0])


def tiger_c_case():
    """A TIGER_C model (share 0.4, k = 5) on 12 seen and 8 unseen items where every unseen item shares its first l-1
    digits with a seen one, so unseen candidates always exist; pairs of unseen items share their prefix (equal
    scores): items 13 + i and 17 + i under seen item 1 + i's prefix (i < 4). Returns model, histories, seen mask."""
    seen_codes = torch.tensor([[a, b, 0] for a in range(C) for b in range(C)][:12])
    unseen_codes = torch.cat([seen_codes[:4].clone(), seen_codes[:4].clone()])
    unseen_codes[:4, 2], unseen_codes[4:, 2] = 1, 2
    item2codes = torch.cat([torch.full((1, L), -1), seen_codes, unseen_codes]).long()
    seen = torch.zeros(21, dtype=torch.bool)
    seen[1:13] = True
    model = make_tiger(seed=5, item2codes=item2codes, seen=seen, num_beams=20, tiger_c_unseen_share=0.4)
    inter = histories(B=4, seed=5)
    inter["item_id_list"] = inter["item_id_list"].clamp(max=20)
    return model, inter, seen


def tiger_c_expected_rankings(model, inter, seen):
    """By brute force: [B, n] full log-likelihood of the seen items (−inf elsewhere) and prefix log-likelihood of the
    unseen ones (one score per prefix, −inf elsewhere)."""
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        lp = model.digit_log_probs(enc, torch.arange(21).expand(len(inter["item_length"]), -1))  # [B, n, l]
    full = lp.sum(-1).masked_fill(~seen, NEG_INF)
    prefix = lp[..., :-1].sum(-1).masked_fill(seen, NEG_INF)
    prefix[:, 17:] = prefix[:, 13:17]  # one score per prefix
    return full, prefix


def test_tiger_c_gives_exact_unseen_share_in_every_top_k():
    model, inter, seen = tiger_c_case()
    k = 5  # floor(0.4·k + ½) unseen items in the top k = 0, 1, 1, 2, 2 for k = 1 … 5
    with torch.no_grad():
        scores = model.full_sort_predict(inter)
    listed = scores.topk(k, dim=1).indices  # the evaluator's reading of the list
    assert torch.isfinite(scores).sum(dim=1).tolist() == [k] * 4
    assert (~seen[listed]).long().cumsum(dim=1).tolist() == [[0, 1, 1, 2, 2]] * 4
    # the seen slots: TIGER's top-3 in order; the unseen slots: by prefix log-likelihood, equal ones by item id
    full, prefix = tiger_c_expected_rankings(model, inter, seen)
    for b in range(4):
        best_seen = sorted(range(21), key=lambda i: -float(full[b, i]))[:3]
        best_unseen = sorted(range(21), key=lambda i: (-float(prefix[b, i]), i))[:2]
        assert listed[b].tolist() == [best_seen[0], best_unseen[0], best_seen[1], best_unseen[1], best_seen[2]]
        assert best_unseen[1] == best_unseen[0] + 4  # the two share their prefix: a tie, broken by item id


def test_tiger_c_never_lists_excluded_items_and_keeps_the_exact_unseen_share():
    """History exclusion (``interaction[EXCLUDED_ITEMS]``, what the trainer's ``eval_exclude_history`` adds) under
    TIGER_C: a user's excluded unseen items take no unseen slot (the next unseen items by prefix score take them),
    excluded seen items no seen slot, and every top-k still holds exactly floor(0.4·k + ½) unseen items."""
    model, inter, seen = tiger_c_case()
    k = 5
    full, prefix = tiger_c_expected_rankings(model, inter, seen)
    by_prefix = [sorted((i for i in range(21) if not seen[i] and i > 0), key=lambda i: (-float(prefix[b, i]), i))
                 for b in range(4)]
    excluded = torch.zeros(4, 21, dtype=torch.bool)
    excluded[0, by_prefix[0][:2]] = True  # the best prefix's two unseen items
    excluded[1, by_prefix[1][0]] = True  # the best unseen item only: its twin (same prefix) stays listable
    excluded[2, by_prefix[2][:3]] = True
    # seen items whose prefixes no unseen item shares (5 … 12): user 0's best such one, user 3's best two
    by_score = [sorted(range(5, 13), key=lambda i: -float(full[b, i])) for b in range(4)]
    excluded[0, by_score[0][0]] = excluded[3, by_score[3][0]] = excluded[3, by_score[3][1]] = True
    with torch.no_grad():
        plain = model.full_sort_predict(inter)
        inter.update(Interaction({EXCLUDED_ITEMS: excluded}))
        scores = model.full_sort_predict(inter)
    for b in range(3):  # without exclusion these users' best unseen item is listed
        assert torch.isfinite(plain[b, by_prefix[b][0]])
    assert torch.isfinite(plain[3, by_score[3][0]]) and torch.isfinite(plain[3, by_score[3][1]])  # ... and seen ones
    listed = scores.topk(k, dim=1).indices
    assert torch.isfinite(scores).sum(dim=1).tolist() == [k] * 4
    assert not excluded.gather(1, listed).any() and not torch.isfinite(scores[excluded]).any()
    assert (~seen[listed]).long().cumsum(dim=1).tolist() == [[0, 1, 1, 2, 2]] * 4
    for b in range(4):
        best_seen = sorted((i for i in range(21) if not excluded[b, i]), key=lambda i: -float(full[b, i]))[:3]
        best_unseen = [i for i in by_prefix[b] if not excluded[b, i]][:2]
        assert listed[b].tolist() == [best_seen[0], best_unseen[0], best_seen[1], best_unseen[1], best_seen[2]]


def test_predict_is_eq2_score():
    model = make_tiger(seed=6)
    inter = histories(B=4, seed=6)
    inter["item_id"] = torch.tensor([1, 29, 4, 30])  # 29, 30 unseen
    with torch.no_grad():
        score = model.predict(inter)
        lp = model.digit_log_probs(model.encode(inter["item_id_list"], inter["item_length"]), inter["item_id"][:, None])
    lp = lp[:, 0]
    expected = torch.stack([lp[0].mean(), lp[1, :-1].mean(), lp[2].mean(), lp[3, :-1].mean()])
    assert torch.allclose(score, expected, atol=1e-6)


def test_loss_falls():
    model = make_tiger(seed=7).train()
    inter = histories(B=8, seed=7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = model.calculate_loss(inter)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_set_items_adds_items_and_rejects_duplicates():
    model = make_tiger(seed=8, num_beams=N_ITEMS + 1, tiger_allow_unseen=True)
    taken = {tuple(r) for r in model.item2codes[1:].tolist()}
    free = next(c for c in ([a, b, d] for a in range(C) for b in range(C) for d in range(C)) if tuple(c) not in taken)
    with pytest.raises(ValueError, match="share their full code"):
        model.set_items(torch.cat([model.item2codes, model.item2codes[1:2]]), torch.cat([model.seen_item_mask,
                                                                                          torch.tensor([False])]))
    assert model.n_items == N_ITEMS + 1  # unchanged after the failed call
    model.set_items(torch.cat([model.item2codes, torch.tensor([free])]),
                    torch.cat([model.seen_item_mask, torch.tensor([False])]))
    inter = histories(B=2, seed=8)
    with torch.no_grad():
        final = list(model.beam_search(model.encode(inter["item_id_list"], inter["item_length"]), N_ITEMS + 1))[-1]
        assert model.full_sort_predict(inter).shape == (2, N_ITEMS + 2)
    assert final.valid.all() and (final.items == N_ITEMS + 1).any(dim=1).all()


# ---------------------------------------------------------------- item_text_input
class TextDataset(TinyDataset):
    def __init__(self, seen, text_size=5):
        super().__init__(seen)
        self.item_text_emb = torch.randn(len(seen), text_size, generator=torch.Generator().manual_seed(3))
        self.item_text_emb[0] = 0.0


def test_text_input_starts_as_plain_tiger_and_places_text_on_each_item_token():
    item2codes, seen = catalog()
    torch.manual_seed(0)
    plain = TIGER(make_config(), TinyDataset(seen), item2codes=item2codes, codebook_size=C).eval()
    torch.manual_seed(0)
    texty = TIGER(make_config(item_text_input=True), TextDataset(seen), item2codes=item2codes, codebook_size=C).eval()
    inter = histories(B=4)
    with torch.no_grad():  # W = 0 at initialisation: the same encoder output as TIGER with the same T5 weights
        texty.t5.load_state_dict(plain.t5.state_dict())
        same = texty.encode(inter["item_id_list"], inter["item_length"]).hidden
        assert torch.equal(same, plain.encode(inter["item_id_list"], inter["item_length"]).hidden)
        texty.text_adapter.weight.copy_(torch.eye(16, 5))  # W·e = e padded with zeros to d_model
    item_seq, lengths = torch.tensor([[5, 7, 0], [2, 0, 0]]), torch.tensor([2, 1])
    tokens, mask, extra = texty._encoder_inputs(item_seq, lengths)
    text = TextDataset(seen).item_text_emb
    expected = torch.zeros(2, tokens.shape[1], 16)
    expected[0, 1 : 1 + L, :5] = text[5]  # [bos, ID_5, ID_7, eos]
    expected[0, 1 + L : 1 + 2 * L, :5] = text[7]
    expected[1, 1 : 1 + L, :5] = text[2]  # [bos, ID_2, eos, pad …]
    assert torch.equal(extra, expected)


def test_text_input_needs_text_embeddings():
    item2codes, seen = catalog()
    with pytest.raises(ValueError, match="item_text_input: the dataset has no item text embeddings"):
        TIGER(make_config(item_text_input=True), TinyDataset(seen), item2codes=item2codes, codebook_size=C)
    model = TIGER(make_config(item_text_input=True), TextDataset(seen), item2codes=item2codes, codebook_size=C)
    free = next(c for c in range(C**L) if c not in {int((row * C ** torch.arange(L - 1, -1, -1)).sum())
                                                    for row in item2codes[1:]})
    new_codes = torch.cat([item2codes, torch.tensor([[(free // C**(L - 1 - j)) % C for j in range(L)]])])
    new_seen = torch.cat([seen, torch.tensor([False])])
    with pytest.raises(ValueError, match=r"item_text_emb: item_text_input needs \[32, 5\] text embeddings, got None"):
        model.set_items(new_codes, new_seen)
    with pytest.raises(ValueError, match=r"item_text_emb: .* got \(32, 4\)"):
        model.set_items(new_codes, new_seen, torch.zeros(32, 4))
    model.set_items(new_codes, new_seen, torch.cat([model.item_text_emb, torch.ones(1, 5)]))
    assert model.item_text_emb.shape == (32, 5) and torch.equal(model.item_text_emb[31], torch.ones(5))


def test_from_checkpoint_rebuilds_the_trained_model_without_its_dataset(tmp_path):
    model = make_tiger(seed=4)
    config = {**make_config(), "model": "TIGER", "dataset": "ml-100k", "rqvae_codebook_size": C}  # as trainers save
    config.pop("device")
    path = tmp_path / "tiger.pth"
    torch.save({"config": config, "state_dict": model.state_dict(), "other_parameter": {}}, path)
    rebuilt = TIGER.from_checkpoint(str(path), num_beams=K + 1)
    inter = histories(B=4, seed=4)
    with torch.no_grad():
        expected = model.digit_log_probs(model.encode(inter["item_id_list"], inter["item_length"]), inter["item_id"][:, None])
        got = rebuilt.digit_log_probs(rebuilt.encode(inter["item_id_list"], inter["item_length"]), inter["item_id"][:, None])
    assert torch.equal(got, expected) and not rebuilt.training
    assert rebuilt.num_beams == K + 1 and rebuilt.config["num_beams"] == K + 1  # overrides reach the model
    assert torch.equal(rebuilt.seen_item_mask, model.seen_item_mask)
    # a misspelt override was ignored without a word; text for a number failed in float() without naming the key
    with pytest.raises(ValueError, match=r"^num_beam: no model or dataset has this setting \(from from_checkpoint's "
                                         r"overrides\); did you mean 'num_beams'"):
        TIGER.from_checkpoint(str(path), num_beam=K + 1)
    with pytest.raises(ValueError, match=r"^num_beams: expected int \(like its default 50\), got 'many' from "
                                         r"from_checkpoint's overrides$"):
        TIGER.from_checkpoint(str(path), num_beams="many")
    with pytest.MonkeyPatch.context() as mp:  # the caller's own command line is not this package's settings
        mp.setattr(sys, "argv", ["caller.py", "--epochs=abc"])
        assert TIGER.from_checkpoint(str(path), num_beams=K + 1).num_beams == K + 1
    config["model"] = "SASRec"
    torch.save({"config": config, "state_dict": model.state_dict()}, path)
    with pytest.raises(ValueError, match=r"holds a SASRec model, expected a TIGER"):
        TIGER.from_checkpoint(str(path))


@pytest.mark.parametrize("share", [0.0, 0.4])
def test_users_searched_in_groups_give_the_same_ranking_and_scores(monkeypatch, share):
    """On a CPU the beam search decodes groups of CPU_MAX_ROWS // β users (here 1 or 2 of 5): full_sort_predict
    (TIGER, and TIGER_C's unseen part) with history exclusion recommends the same items with the same scores as one
    search over all users (to float rounding: a one-user batch takes other kernel paths, as any batch shape can)."""
    from recbole_specgr.inference import beam_search

    model = make_tiger(seed=9, num_beams=8, tiger_allow_unseen=share == 0.0, tiger_c_unseen_share=share)
    inter = histories(B=5, seed=9)
    inter.update(Interaction({EXCLUDED_ITEMS: torch.rand(5, N_ITEMS + 1,
                                                         generator=torch.Generator().manual_seed(9)) < 0.2}))
    with torch.no_grad():
        monkeypatch.setattr(beam_search, "CPU_MAX_ROWS", 10 ** 6)
        whole = model.full_sort_predict(inter)
        for max_rows in (8, 16):
            monkeypatch.setattr(beam_search, "CPU_MAX_ROWS", max_rows)
            grouped = model.full_sort_predict(inter)
            assert torch.equal(torch.isfinite(grouped), torch.isfinite(whole))
            assert torch.allclose(grouped[torch.isfinite(whole)], whole[torch.isfinite(whole)], rtol=1e-6, atol=0)
            assert torch.equal(grouped.topk(K).indices, whole.topk(K).indices)  # the same items in the same order
    assert (torch.isfinite(whole).sum(dim=1) == K).all()


@pytest.mark.parametrize("n_cands", [4, N_ITEMS + 1])  # fewer / more candidates than first-digit codes
def test_digit_log_probs_of_users_scored_in_groups_equal_one_call(monkeypatch, n_cands):
    """On a CPU, candidates are scored CPU_MAX_ROWS // (N·(l − 1)) users at a time (here one or two of 5 users):
    the same log-probabilities as one call, padding candidates included (−inf)."""
    from recbole_specgr.inference import beam_search

    model = make_tiger(seed=4)
    inter = histories(B=5, seed=4)
    g = torch.Generator().manual_seed(4)
    cands = torch.randint(0, N_ITEMS + 1, (5, n_cands), generator=g)
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        monkeypatch.setattr(beam_search, "CPU_MAX_ROWS", 10 ** 6)
        whole = model.digit_log_probs(enc, cands)
        for users_per_group in (1, 2):
            monkeypatch.setattr(beam_search, "CPU_MAX_ROWS", users_per_group * n_cands * (L - 1))
            grouped = model.digit_log_probs(enc, cands)
            assert torch.equal(torch.isinf(grouped), cands[..., None].expand(-1, -1, L) == 0)
            assert torch.allclose(grouped, whole, rtol=1e-6, atol=0)


@pytest.mark.parametrize("n_cands", [3, N_ITEMS + 1])  # N ≤ C: the start position shared; N > C: first digits too
def test_shared_decoding_is_decoded_once_and_gives_the_same_log_probs(monkeypatch, n_cands):
    """:meth:`TIGER.share_decoding` decodes a user's shared positions once; every later :meth:`digit_log_probs`
    call (later rounds, a subset of users, users in groups) reads them and gives the log-probs of a call without
    them."""
    from recbole_specgr.inference import beam_search

    model = make_tiger(seed=5)
    inter = histories(B=5, seed=5)
    cands = torch.randint(0, N_ITEMS + 1, (5, n_cands), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        expected = model.digit_log_probs(enc, cands)
        shared = model.share_decoding(enc, n_cands)
        assert (shared.shared.after_first is None) == (n_cands <= C)
        fan_outs = []
        decode_fan_out = model.t5.decode_fan_out
        monkeypatch.setattr(model.t5, "decode_fan_out", lambda *a, **k: fan_outs.append(1) or decode_fan_out(*a, **k))
        for _ in range(2):  # two rounds
            got = model.digit_log_probs(shared, cands)
            assert torch.equal(torch.isinf(got), torch.isinf(expected))
            assert torch.allclose(got, expected, rtol=1e-6, atol=0)
        users = torch.tensor([4, 1, 2])
        assert torch.allclose(model.digit_log_probs(shared.select(users), cands[users]), expected[users],
                              rtol=1e-6, atol=0)
        monkeypatch.setattr(beam_search, "CPU_MAX_ROWS", 2 * n_cands * (L - 1))  # two users per call
        assert torch.allclose(model.digit_log_probs(shared, cands), expected, rtol=1e-6, atol=0)
        assert fan_outs == []  # nothing shared decoded again
        assert model.share_decoding(shared, n_cands) is shared


def test_loading_weights_trained_with_other_semantic_ids_rebuilds_the_beam_tables(caplog):
    """A checkpoint carries the item2codes its weights were trained with; a model built from a dataset whose
    semantic-ID cache gave other codes (another machine's RQ-VAE run) must search the loaded codes after loading —
    the same recommendations as the trained model — and say that it switched."""
    codes, seen = catalog(seed=0)
    other_codes, _ = catalog(seed=7)
    trained = make_tiger(seed=3, item2codes=codes, seen=seen)
    model = make_tiger(seed=4, item2codes=other_codes, seen=seen)
    inter = histories(B=4, seed=2)
    with caplog.at_level("WARNING"):
        model.load_state_dict(trained.state_dict())
    assert "loaded item2codes differ from the dataset's semantic IDs" in caplog.text
    assert torch.equal(model.item2codes, codes)
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(inter), trained.full_sort_predict(inter))
    caplog.clear()
    with caplog.at_level("WARNING"):
        model.load_state_dict(trained.state_dict())  # the same IDs again: nothing to rebuild
    assert "differ" not in caplog.text


def test_loading_weights_trained_on_another_split_is_refused():
    """Other seen items = other training rows: the weights saw this split's valid / test period (it warned and went
    on with the loaded mask)."""
    codes, seen = catalog(seed=0)
    trained = make_tiger(seed=3, item2codes=codes, seen=seen)
    other_seen = seen.clone()
    other_seen[-1] = True  # an unseen item of this split was a training item of the checkpoint's
    model = make_tiger(seed=4, item2codes=codes, seen=other_seen)
    with pytest.raises(ValueError, match=r"TIGER: the loaded seen_item_mask differs .* another split"):
        model.load_state_dict(trained.state_dict())


def test_joint_speculative_inference_reads_the_beams_log_probs_as_decoding_gives_them():
    """TIGER's beam search keeps each step's log-probs; every item found there has the digit log-probs that
    teacher-forced decoding gives (to float rounding), and a joint ranking that reads them recommends what one that
    decodes every draft does."""
    from fakes import FixedDrafter, NoBeamTables

    from recbole_specgr.inference.specgr import CompleteBeams, SpeculativeRecommender, beam_log_probs

    model = make_tiger(seed=2)
    inter = histories(B=4, seed=2)
    item_seq, lengths = inter["item_id_list"], inter["item_length"]
    with torch.no_grad():
        enc = model.encode(item_seq, lengths)
        steps = list(model.beam_search(enc, K, keep_log_probs=True))
        items = torch.arange(N_ITEMS + 1).expand(4, -1)
        table, known = beam_log_probs(model.prefix_index, model.item2codes, CompleteBeams.of(model.prefix_index, steps),
                                      items)
        decoded = model.digit_log_probs(enc, items)
    full, l = known == model.n_digits, model.n_digits
    assert full.sum() > 4 * K and not full[:, 1:].all()
    for d in range(1, l + 1):  # the first d digits of the items with at least d found
        assert torch.allclose(table[known >= d][:, :d], decoded[known >= d][:, :d], atol=1e-5)
    assert (known[:, 1:] == l - 1).any()
    first = model.digit_log_probs(enc, items, digits=l - 1)  # only the digits an unseen item's Eq. 2 reads
    assert torch.allclose(first[..., :-1], decoded[..., :-1], atol=1e-5) and first[:, 1:, -1].isnan().all()
    g = torch.Generator().manual_seed(2)
    drafter = FixedDrafter(torch.randn(N_ITEMS + 1, 8, generator=g), torch.randn(N_ITEMS + 1, 8, generator=g))
    kwargs = dict(draft_size=8, num_beams=K, threshold=-2.0, topk=K, draft_weight=1.0, unseen_score=-1.5)
    out = SpeculativeRecommender(model, drafter, model.seen_item_mask, **kwargs).recommend(item_seq, lengths)
    ref = SpeculativeRecommender(NoBeamTables(model), drafter, model.seen_item_mask, **kwargs).recommend(item_seq,
                                                                                                        lengths)
    assert torch.equal(out.scores > NEG_INF, ref.scores > NEG_INF) and torch.equal(out.drafts, ref.drafts)
    listed = out.scores > NEG_INF
    assert torch.allclose(out.scores[listed], ref.scores[listed], atol=1e-4)


@pytest.mark.parametrize("n_cands, max_rows", [(2, None), (8, None), (8, 10)])
def test_beam_search_reads_the_positions_the_shared_decoding_holds(monkeypatch, n_cands, max_rows):
    """Given ``share_decoding``'s output (speculative inference's), the beam search reads the start position (and,
    fanned out when C < candidates, the C first-digit positions) instead of decoding them again: the same beams,
    scores and log-probs to float rounding, users narrowed by ``send`` and CPU groups (``max_rows``) included."""
    from recbole_specgr.inference import beam_search as beam_module

    if max_rows is not None:
        monkeypatch.setattr(beam_module, "CPU_MAX_ROWS", max_rows)  # groups of 2 users at β = K = 5
    model = make_tiger(seed=3)
    inter = histories(B=4, seed=3)
    positions = []
    decode = model.t5._decode
    monkeypatch.setattr(model.t5, "_decode", lambda tokens, *a, **k: positions.append(tokens.numel()) or decode(
        tokens, *a, **k))

    def search(enc):
        positions.clear()
        steps = model.beam_search(enc, K, keep_log_probs=True)
        out = [next(steps), steps.send(torch.tensor([True, False, True, True])), next(steps)]
        return out, sum(positions)

    with torch.no_grad():
        enc = model.encode(inter["item_id_list"], inter["item_length"])
        plain, plain_positions = search(enc)
        shared = model.share_decoding(enc, n_cands)
        reading, read_positions = search(shared)
    # plain: the start position of 4 users, then a row per beam of the users still searched (user 1 left before
    # digit 2): B_1 holds the C = 4 first digits, B_2 all K = 5 beams
    assert plain[0].valid.sum(dim=1).tolist() == [C] * 4 and plain[1].valid[[0, 2, 3]].all()
    assert plain_positions == 4 + 3 * C + 3 * K
    assert read_positions == (3 * K if n_cands > C else 3 * C + 3 * K)
    for a, b in zip(plain, reading):
        assert torch.equal(a.prefixes, b.prefixes) and torch.equal(a.valid, b.valid)
        assert torch.allclose(a.scores[a.valid], b.scores[b.valid], atol=1e-5)
        assert torch.allclose(a.log_probs, b.log_probs, atol=1e-5)  # −inf rows (user 1) alike
    assert torch.equal(plain[-1].items, reading[-1].items) and not reading[-1].valid[1].any()


@pytest.mark.parametrize("buckets, max_distance, refused", [
    (32, 16, None), (32, 12, None), (64, 32, None), (32, 9, None), (32, 8, "encoder"), (4, 3, None),
    (4, 2, "decoder"), (4, 1, "encoder")])
def test_position_buckets_are_refused_only_where_far_distances_would_fold_back(buckets, max_distance, refused):
    """rel_pos_max_distance must exceed the distances counted exactly (buckets // 4 in the encoder; the decoder's
    buckets // 2 only once its l positions reach them: l = 3 digits here reach them for 4 buckets, never for 32).
    Where it is accepted, every distance of the encoder's and the decoder's gets an in-range bucket, larger distances
    no nearer buckets than smaller ones (a 4 for 32 buckets folded distances 9-40 back into buckets 23...6)."""
    if refused:
        with pytest.raises(ValueError, match=rf"rel_pos_max_distance: expected more than \d+, the {refused}'s exact"):
            make_tiger(rel_pos_buckets=buckets, rel_pos_max_distance=max_distance)
        return
    model = make_tiger(rel_pos_buckets=buckets, rel_pos_max_distance=max_distance)
    for bias, rel in ((model.t5.enc_pos, torch.arange(-60, 61)), (model.t5.dec_pos, -torch.arange(0, model.n_digits))):
        got = bias._bucket(rel)
        assert int(got.min()) >= 0 and int(got.max()) < buckets
        for side in ((rel >= 0), (rel <= 0)):  # each direction: buckets never decrease with the distance
            ordered = got[side][rel[side].abs().argsort()]
            assert bool((ordered[1:] >= ordered[:-1]).all()), (bias.bidirectional, ordered.tolist())


def t5_relative_position_bucket(relative_position, num_buckets, max_distance, bidirectional):
    """The published T5 bucketing (Raffel et al. 2020; ``T5Attention._relative_position_bucket`` of Hugging Face's
    transformers), for one distance key − query, in plain Python."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if relative_position > 0:
            bucket += num_buckets
        n = abs(relative_position)
    else:
        n = max(-relative_position, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


DISTANCES = [*range(0, 13), 15, 16, 17, 20, 24, 31, 32, 33, 45, 50, 63, 64, 100, 127, 128, 129, 500]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets, max_distance", [(32, 128), (16, 20), (8, 6)])
def test_position_buckets_are_t5s(buckets, max_distance, bidirectional):
    """Every distance (keys after and before the query) gets the bucket of T5's formula, worked out apart from the
    code; for 32 buckets and distance 128 (T5's own setting) a few of them by hand."""
    from recbole_specgr.model.t5 import RelativePositionBias

    rel = sorted(set(DISTANCES) | {-d for d in DISTANCES})
    expected = [t5_relative_position_bucket(r, buckets, max_distance, bidirectional) for r in rel]
    got = RelativePositionBias(1, buckets, max_distance, bidirectional)._bucket(torch.tensor(rel))
    assert got.tolist() == expected
    if (buckets, max_distance) == (32, 128):
        by_hand = ({0: 0, -1: 1, -7: 7, -8: 8, -16: 10, -50: 13, -127: 15, -500: 15, 1: 17, 7: 23, 8: 24, 16: 26,
                    50: 29, 127: 31, 500: 31} if bidirectional else
                   {0: 0, 5: 0, 500: 0, -1: 1, -8: 8, -15: 15, -16: 16, -50: 24, -127: 31, -500: 31})
        assert {r: expected[rel.index(r)] for r in by_hand} == by_hand


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets, max_distance", [(32, 128), (16, 20), (8, 6)])
def test_position_buckets_are_hf_t5s(buckets, max_distance, bidirectional):
    """The same buckets as HF's T5 (transformers comes with sentence-transformers, a dependency)."""
    from recbole_specgr.model.t5 import RelativePositionBias

    modeling_t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.tensor(sorted(set(DISTANCES) | {-d for d in DISTANCES}))
    hf = modeling_t5.T5Attention._relative_position_bucket(rel, bidirectional, buckets, max_distance)
    assert RelativePositionBias(1, buckets, max_distance, bidirectional)._bucket(rel).tolist() == hf.tolist()
