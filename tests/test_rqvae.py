"""RQ-VAE / residual k-means tokenizer: k-means init, ID assignment, inductive fitting, add_items, cache."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recbole_specgr.tokenizer.rqvae import RQVAE, ResidualQuantizer, kmeans, nearest_code
from recbole_specgr.tokenizer.codes import occurrence_rank
from recbole_specgr.tokenizer.semantic_id import METHODS, SemanticIDs, SemanticIDTokenizer, get_semantic_ids

N_ITEMS = 61  # item ids 0..60, 0 = padding
N_SEEN = 45  # every item id divisible by 4 is unseen (15 items), so seen-first order differs from id order


pytestmark = pytest.mark.usefixtures("single_thread")


def clustered_items(n=N_ITEMS, d=12, seed=0):
    """[n, d] embeddings with a coarse and a fine cluster structure; row 0 = padding zeros."""
    g = np.random.default_rng(seed)
    coarse, fine = 4.0 * g.normal(size=(4, d)), g.normal(size=(4, d))
    x = coarse[g.integers(0, 4, n)] + fine[g.integers(0, 4, n)] + 0.3 * g.normal(size=(n, d))
    x[0] = 0.0
    return x.astype(np.float32)


def seen_mask(n=N_ITEMS):
    mask = torch.arange(n) % 4 != 0
    mask[0] = False
    return mask


def make_config(tmp_path, **overrides):
    config = {
        "rqvae_method": "rqvae",
        "rqvae_num_levels": 2,
        "rqvae_codebook_size": 16,
        "rqvae_latent_dim": 6,
        "rqvae_hidden_sizes": [24, 12],
        "rqvae_epochs": 40,
        "rqvae_batch_size": 16,
        "rqvae_learning_rate": 3e-3,
        "rqvae_commitment_weight": 0.25,
        "rqvae_kmeans_init": True,
        "cache_dir": str(tmp_path / "cache"),
        "seed": 7,
        "device": "cpu",
    }
    config.update(overrides)
    return config


# ---------------------------------------------------------------- k-means and the quantiser
def test_kmeans_returns_cluster_means_as_rows():
    g = np.random.default_rng(1)
    centers = np.array([[10.0, 0, 0, 0, 0], [0, 10.0, 0, 0, 0], [0, 0, 10.0, 0, 0]])
    labels = np.repeat(np.arange(3), [5, 7, 9])
    x = torch.tensor(centers[labels] + 0.1 * g.normal(size=(21, 5)), dtype=torch.float32)
    centroids = kmeans(x, 3, seed=0)
    assert centroids.shape == (3, 5)
    means = torch.stack([x[torch.from_numpy(labels == k)].mean(0) for k in range(3)])  # brute force
    order = centroids.argmax(dim=1)  # centroid j sits at centers[order[j]]
    assert sorted(order.tolist()) == [0, 1, 2]
    torch.testing.assert_close(centroids, means[order], atol=1e-5, rtol=0)


def test_kmeans_init_equals_level_centroids():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    quantizer = ResidualQuantizer(dim=5, num_levels=2, codebook_size=3)
    quantizer.kmeans_init(x, seed=11)
    level0 = kmeans(x, 3, seed=11)  # [C, d]
    residual = x - level0[nearest_code(x, level0)]
    level1 = kmeans(residual, 3, seed=12)
    assert torch.equal(quantizer.codebooks[0].data, level0)
    assert torch.equal(quantizer.codebooks[1].data, level1)
    # independent of faiss: every used codeword is the mean of the points it quantises (Lloyd fixed point)
    codes = quantizer.quantize(x)
    for c in codes[:, 0].unique():
        torch.testing.assert_close(quantizer.codebooks[0, c].data, x[codes[:, 0] == c].mean(0), atol=1e-5, rtol=0)


def test_rqvae_kmeans_init_uses_encoded_residuals():
    torch.manual_seed(0)
    model = RQVAE(input_dim=8, hidden_sizes=[16], latent_dim=4, num_levels=2, codebook_size=5)
    x = torch.randn(30, 8)
    model.kmeans_init(x, seed=3)
    z = model.encode(x).detach()
    level0 = kmeans(z, 5, seed=3)
    assert model.quantizer.codebooks.shape == (2, 5, 4)
    assert torch.equal(model.quantizer.codebooks[0].data, level0)
    assert torch.equal(model.quantizer.codebooks[1].data, kmeans(z - level0[nearest_code(z, level0)], 5, seed=4))


def test_quantize_is_greedy_residual_nearest_codeword():
    quantizer = ResidualQuantizer(dim=2, num_levels=2, codebook_size=2)
    quantizer.codebooks.data = torch.tensor([[[0.0, 0.0], [4.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    x = torch.tensor([[5.0, 0.2], [0.1, 0.9], [3.9, 1.2]])
    # x0: 4 then residual (1, .2) -> (1, 0); x1: 0 then (.1, .9) -> (0, 1); x2: 4 then (-.1, 1.2) -> (0, 1)
    assert quantizer.quantize(x).tolist() == [[1, 0], [0, 1], [1, 1]]
    torch.testing.assert_close(quantizer.lookup(torch.tensor([[1, 0]])), torch.tensor([[5.0, 0.0]]))
    codes, x_q, _ = quantizer(x)
    assert codes.tolist() == [[1, 0], [0, 1], [1, 1]]
    torch.testing.assert_close(x_q, quantizer.lookup(codes))


def test_rqvae_loss_decreases(tmp_path):
    tokenizer = SemanticIDTokenizer(make_config(tmp_path))
    tokenizer.fit(clustered_items(), seen_mask())
    history = tokenizer.loss_history
    assert len(history) == 40
    assert np.mean(history[-5:]) < 0.5 * history[0]
    assert tokenizer.stats["recon_loss"] > 0


def test_rqvae_trains_on_one_cpu_thread_and_restores_the_thread_count(tmp_path, monkeypatch):
    tokenizer = SemanticIDTokenizer(make_config(tmp_path, rqvae_epochs=2))
    threads_seen = []
    train = tokenizer._train_rqvae
    monkeypatch.setattr(tokenizer, "_train_rqvae", lambda x: (threads_seen.append(torch.get_num_threads()), train(x)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tokenizer.fit(clustered_items(), seen_mask())
        assert threads_seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- ID assignment
def test_occurrence_rank_small_case():
    rows = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [2, 1]])
    assert occurrence_rank(rows).tolist() == [0, 0, 1, 2, 1, 0]
    assert occurrence_rank(np.zeros((0, 2), dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("method", ["rqvae", "faiss_rq"])
def test_codes_shape_unique_and_collision_numbering(tmp_path, method):
    config = make_config(tmp_path, rqvae_method=method)
    seen = seen_mask()
    ids = SemanticIDTokenizer(config).fit(clustered_items(), seen)
    assert isinstance(ids, SemanticIDs)
    assert ids.codes.shape == (N_ITEMS, 3) and ids.codes.dtype == torch.long
    assert ids.n_digits == 3 and ids.codebook_size == 16
    assert ids.codes[0].tolist() == [-1, -1, -1]
    real = ids.codes[1:]
    assert real.min() >= 0 and real.max() < 16
    assert len({tuple(r) for r in real.tolist()}) == N_ITEMS - 1  # unique IDs, unseen included
    # brute force: within a prefix, digits are 0, 1, ... over seen items (id order) then unseen items (id order)
    order = [i for i in range(1, N_ITEMS) if seen[i]] + [i for i in range(1, N_ITEMS) if not seen[i]]
    counts = {}
    for i in order:
        prefix = tuple(ids.codes[i, :2].tolist())
        assert ids.codes[i, 2].item() == counts.get(prefix, 0)
        counts[prefix] = counts.get(prefix, 0) + 1


def test_stats_reported(tmp_path):
    tokenizer = SemanticIDTokenizer(make_config(tmp_path, rqvae_method="faiss_rq"))
    ids = tokenizer.fit(clustered_items(), seen_mask())
    stats = tokenizer.stats
    real = ids.codes[1:]
    assert stats["n_items"] == N_ITEMS - 1 and stats["n_seen"] == N_SEEN
    assert stats["collision_share"] == pytest.approx((real[:, 2] > 0).float().mean().item())
    _, prefix_counts = np.unique(real[:, :2].numpy(), axis=0, return_counts=True)
    assert stats["max_collisions"] == prefix_counts.max()
    for level in range(2):
        counts = np.bincount(real[:, level].numpy(), minlength=16)
        p = counts[counts > 0] / counts.sum()
        assert stats[f"codebook_usage_{level + 1}"] == pytest.approx((counts > 0).mean())
        assert stats[f"perplexity_{level + 1}"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert {"recon_loss", "recon_loss_unseen"} <= set(stats)


@pytest.mark.parametrize("method", ["rqvae", "faiss_rq"])
def test_unseen_items_are_not_used_for_fitting(tmp_path, method):
    config = make_config(tmp_path, rqvae_method=method)
    emb = clustered_items()
    first = SemanticIDTokenizer(config)
    codes = first.fit(emb, seen_mask()).codes
    unseen = ~seen_mask()
    unseen[0] = False
    moved = emb.copy()
    moved[unseen.numpy()] = 50.0 * np.random.default_rng(5).normal(size=(N_ITEMS - N_SEEN - 1, emb.shape[1]))
    second = SemanticIDTokenizer(config)
    moved_codes = second.fit(moved, seen_mask()).codes
    assert not torch.equal(moved_codes, codes)  # the unseen items did move
    assert torch.equal(moved_codes[~unseen], codes[~unseen])
    for key, value in first.quantizer.state_dict().items():
        assert torch.equal(value, second.quantizer.state_dict()[key]), key


def test_add_items_keeps_existing_ids_and_continues_numbering(tmp_path):
    emb = clustered_items()
    tokenizer = SemanticIDTokenizer(make_config(tmp_path))
    old = tokenizer.fit(emb, seen_mask()).codes.clone()
    restored = SemanticIDTokenizer(make_config(tmp_path))
    restored.load_state_dict(tokenizer.state_dict())

    new_emb = np.stack([emb[3], emb[3], emb[52]])  # copies of a seen and an unseen item
    new = tokenizer.add_items(new_emb)
    assert new.shape == (3, 3)
    assert torch.equal(tokenizer.codes[:N_ITEMS], old)
    n_with = lambda prefix: int((old[1:, :2] == prefix).all(dim=1).sum())  # noqa: E731
    assert torch.equal(new[0, :2], old[3, :2]) and new[0, 2] == n_with(old[3, :2])
    assert torch.equal(new[1, :2], old[3, :2]) and new[1, 2] == n_with(old[3, :2]) + 1
    assert torch.equal(new[2, :2], old[52, :2]) and new[2, 2] == n_with(old[52, :2])
    assert len({tuple(r) for r in tokenizer.codes[1:].tolist()}) == N_ITEMS - 1 + 3

    assert torch.equal(restored.add_items(torch.from_numpy(new_emb)), new)  # state dict round trip
    more = tokenizer.add_items(emb[3:4])
    assert more[0, 2] == n_with(old[3, :2]) + 2
    with pytest.raises(ValueError, match=r"new_embeddings must be \[m, 12\]"):
        tokenizer.add_items(np.zeros((2, 5), dtype=np.float32))


def test_overfull_prefix_raises(tmp_path):
    x = np.zeros((11, 2), dtype=np.float32)
    x[1:8] = [0.0, 0.0]  # seven items at the origin
    x[8:] = [5.0, 5.0]  # three items far away
    config = make_config(tmp_path, rqvae_method="faiss_rq", rqvae_num_levels=1, rqvae_codebook_size=5)
    with pytest.raises(ValueError, match=r"^7 items share the semantic-ID prefix \(\d,\).*rqvae_codebook_size=5"):
        SemanticIDTokenizer(config).fit(x, torch.arange(11) > 0)

    tokenizer = SemanticIDTokenizer(make_config(tmp_path, rqvae_method="faiss_rq", rqvae_num_levels=1,
                                                rqvae_codebook_size=8))
    before = tokenizer.fit(x, torch.arange(11) > 0).codes.clone()
    with pytest.raises(ValueError, match="rqvae_codebook_size=8"):
        tokenizer.add_items(np.zeros((2, 2), dtype=np.float32))  # origin prefix would hold 9 items
    assert torch.equal(tokenizer.codes, before)  # nothing half-added


def test_a_codebook_larger_than_the_seen_items_is_named_in_a_warning(tmp_path, caplog):
    config = make_config(tmp_path, rqvae_method="faiss_rq", rqvae_codebook_size=N_SEEN + 1)
    with caplog.at_level("WARNING"):
        SemanticIDTokenizer(config).fit(clustered_items(), seen_mask())
    assert f"rqvae_codebook_size: C = {N_SEEN + 1} codewords per digit for {N_SEEN} seen items" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        SemanticIDTokenizer(make_config(tmp_path, rqvae_method="faiss_rq", rqvae_codebook_size=N_SEEN)).fit(
            clustered_items(), seen_mask())
    assert "rqvae_codebook_size" not in caplog.text


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="rqvae_method"):
        SemanticIDTokenizer(make_config(tmp_path, rqvae_method="pq"))
    tokenizer = SemanticIDTokenizer(make_config(tmp_path))
    with pytest.raises(ValueError, match="seen_item_mask must have shape"):
        tokenizer.fit(clustered_items(), seen_mask(10))
    with pytest.raises(ValueError, match="no item as seen"):
        tokenizer.fit(clustered_items(), torch.zeros(N_ITEMS, dtype=torch.bool))


# ---------------------------------------------------------------- cache and the public entry point
def test_cache_reused_and_rebuilt(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    emb, seen = clustered_items(), seen_mask()
    dataset = SimpleNamespace(item_text_emb=torch.from_numpy(emb), seen_item_mask=seen)
    ids = get_semantic_ids(config, dataset)
    cache = tmp_path / "cache"
    files = sorted(os.listdir(cache))
    assert len(files) == 1 and files[0].startswith("semantic_ids_rqvae_")

    fit = SemanticIDTokenizer.fit
    monkeypatch.setattr(SemanticIDTokenizer, "fit", lambda *a: pytest.fail("refit although the cache is valid"))
    reused = SemanticIDTokenizer(config)
    assert torch.equal(reused.load_or_fit(emb, seen).codes, ids.codes) and reused.loaded_from_cache
    assert torch.equal(reused.add_items(emb[5:6])[0, :2], ids.codes[5, :2])  # quantiser restored
    monkeypatch.setattr(SemanticIDTokenizer, "fit", fit)

    changed = emb.copy()
    changed[N_ITEMS - 1] += 1.0
    rebuilt = SemanticIDTokenizer(config)
    rebuilt.load_or_fit(changed, seen)
    assert not rebuilt.loaded_from_cache
    SemanticIDTokenizer(make_config(tmp_path, rqvae_latent_dim=5)).load_or_fit(emb, seen)
    other_mask = seen.clone()
    other_mask[5] = False
    rebuilt = SemanticIDTokenizer(config)
    rebuilt.load_or_fit(emb, other_mask)
    assert not rebuilt.loaded_from_cache
    assert len(os.listdir(cache)) == 4  # one file per distinct (embeddings, mask, settings); no temp files left


@pytest.mark.parametrize("method", METHODS)
def test_fitting_and_loading_leave_the_global_rng_alone(tmp_path, method):
    """The model built after the tokenizer must start the same whether its IDs were fitted or read from the cache:
    the quick start seeds once, then builds the model, whose weights draw from the global RNG."""
    config = make_config(tmp_path, rqvae_method=method, rqvae_epochs=3)
    emb, seen = clustered_items(), seen_mask()
    for expect_cached in (False, True):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        tokenizer = SemanticIDTokenizer(config)
        tokenizer.load_or_fit(emb, seen)
        assert tokenizer.loaded_from_cache == expect_cached
        assert torch.equal(torch.get_rng_state(), before), f"cached={expect_cached}: the global RNG moved"


def test_half_written_cache_is_refit(tmp_path):
    config = make_config(tmp_path, rqvae_method="faiss_rq")
    emb, seen = clustered_items(), seen_mask()
    tokenizer = SemanticIDTokenizer(config)
    path = tokenizer.cache_path(emb, seen)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    ids = tokenizer.load_or_fit(emb, seen)
    assert not tokenizer.loaded_from_cache
    assert torch.equal(SemanticIDTokenizer(config).load_or_fit(emb, seen).codes, ids.codes)


# ---------------------------------------------------------------- RecBole entry (--model=RQVAE)
def test_rqvae_recbole_model_and_trainer(tmp_path):
    from recbole_specgr.model.sequential_recommender.rqvae import RQVAE as RQVAEModel
    from recbole_specgr.trainer.rqvae_trainer import RQVAETrainer

    config = make_config(tmp_path)
    config.update({"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
                   "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": 20,
                   "single_spec": True})
    dataset = SimpleNamespace(item_text_emb=torch.from_numpy(clustered_items()), seen_item_mask=seen_mask(),
                              num=lambda field: N_ITEMS)
    model = RQVAEModel(config, dataset)
    with pytest.raises(NotImplementedError, match="RQVAETrainer"):
        model.calculate_loss(None)
    trainer = RQVAETrainer(config, model)
    score, stats = trainer.fit(None, None)
    assert score == -stats["recon_loss"]
    assert stats["n_items"] == N_ITEMS - 1 and stats["n_seen"] == N_SEEN
    assert trainer.evaluate(None) == stats
    assert sum(p.numel() for p in model.parameters()) > 0  # the fitted quantiser is a submodule
    cached = SemanticIDTokenizer(config)
    assert torch.equal(cached.load_or_fit(dataset.item_text_emb, dataset.seen_item_mask).codes, model.tokenizer.codes)
    assert cached.loaded_from_cache


def test_rqvae_through_the_runner_reports_its_cached_ids(small_config):
    from recbole_specgr.quick_start import objective_function

    result = objective_function({**small_config, "model": "RQVAE", "dataset": "ml-100k", "rqvae_method": "faiss_rq",
                                 "rqvae_codebook_size": 32})
    assert result["checkpoint"].endswith(".pt") and os.path.isabs(result["checkpoint"])
    cached = torch.load(result["checkpoint"], weights_only=True)
    assert cached["settings"]["codebook_size"] == 32 and cached["stats"]["n_items"] == result["test"]["extra"]["n_items"]


def test_the_cache_entry_depends_on_the_device_type_the_fit_runs_on(tmp_path):
    """A fit on a GPU gives other codes than on a CPU: their cache entries differ (the device's index does not)."""
    emb, seen = clustered_items(), seen_mask()
    paths = {device: SemanticIDTokenizer(make_config(tmp_path, device=device)).cache_path(emb, seen)
             for device in ("cpu", "cuda", "cuda:1")}
    assert paths["cpu"] != paths["cuda"] == paths["cuda:1"]
