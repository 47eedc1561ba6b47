"""TextSim, the untrained text-similarity floor, on the ml-100k slice: its scores worked out by hand from the item
text embeddings, the padding item, a bad ``textsim_last_n``, and its constant (zero) loss."""

import zlib

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

import recbole_specgr.data.text_embedding as te
from recbole_specgr.config import Config
from recbole_specgr.data.dataset import InductiveSequentialDataset
from recbole_specgr.model.sequential_recommender.textsim import TextSim

DIM = 8

pytestmark = pytest.mark.usefixtures("single_thread")


def fake_encode(texts, encoder, batch_size=64, device="cpu", show_progress=False):
    """A deterministic stand-in for the sentence encoder: a unit vector per text (as all-MiniLM-L6-v2 gives), drawn
    from the text's CRC, so that no model is loaded."""
    rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts]
    emb = np.asarray(rows, dtype=np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.fixture
def textsim_config(small_config, run_dir, monkeypatch):
    """small_config with the fake encoder and a cache of this test's own (the session cache keeps the real
    encoder's vectors for the other tests)."""
    monkeypatch.setattr(te, "encode_texts", fake_encode)
    return {**small_config, "cache_dir": str(run_dir / "cache"), "MAX_ITEM_LIST_LENGTH": 10}


def build(config_dict):
    config = Config(model="TextSim", dataset="ml-100k", config_dict=config_dict)
    dataset = InductiveSequentialDataset(config)
    return config, dataset, dataset.build()


def rows(part, n=64):
    """The first n rows of a split, as the evaluator hands them to the model."""
    inter = part.inter_feat
    return Interaction({key: inter[key][:n] for key in ("item_id_list", "item_length", "item_id")})


def by_hand(text_emb, item_seq, item_seq_len, last_n):
    """[B, n] cosine between the mean text embedding of each row's last ``last_n`` history items and every item's,
    one row at a time (item 0, the all-zero padding row, left NaN)."""
    emb = text_emb.double()
    out = torch.empty(len(item_seq_len), emb.shape[0], dtype=torch.float64)
    for b, length in enumerate(item_seq_len.tolist()):
        recent = item_seq[b, max(0, length - last_n):length].tolist()
        query = sum(emb[i] for i in recent) / len(recent)
        out[b] = emb @ query / (emb.norm(dim=1) * query.norm())
    return out


@pytest.mark.parametrize("last_n", [1, 3])
def test_scores_are_the_cosine_to_the_mean_of_the_last_n_history_texts(textsim_config, last_n):
    config, dataset, (train, valid, test) = build({**textsim_config, "textsim_last_n": last_n})
    model = TextSim(config, train).eval()
    inter = rows(test)
    item_seq, lengths = inter["item_id_list"], inter["item_length"]
    assert (lengths > last_n).any() and (lengths < 10).any()  # histories longer than n, and shorter than the window
    text_emb = dataset.item_text_emb
    assert text_emb.shape == (dataset.item_num, DIM) and not text_emb[0].any()
    expected = by_hand(text_emb, item_seq, lengths, last_n)
    with torch.no_grad():
        scores = model.full_sort_predict(inter)  # [B, n]
        single = model.predict(inter)  # [B]: the row's target only
    assert scores.shape == (len(lengths), dataset.item_num)
    assert torch.isneginf(scores[:, 0]).all()  # the padding item is never recommended
    assert torch.allclose(scores[:, 1:].double(), expected[:, 1:], atol=1e-5)
    assert torch.allclose(single.double(), expected.gather(1, inter["item_id"][:, None]).squeeze(1), atol=1e-5)


def test_only_the_last_n_items_count():
    """A hand-made table: the query of history [1, 2, 3] with n = 2 is the mean of items 2 and 3, so item 4 (their
    sum's direction) scores 1 and item 1 (orthogonal to both) scores 0; with n = 3 item 1 counts as well."""
    from types import SimpleNamespace

    emb = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 3, 3]])  # row 0: padding
    dataset = SimpleNamespace(num=lambda field: 5, item_text_emb=emb)
    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
              "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": 4,
              "device": torch.device("cpu")}
    inter = Interaction({"item_id_list": torch.tensor([[1, 2, 3, 0], [2, 0, 0, 0]]),
                         "item_length": torch.tensor([3, 1])})
    with torch.no_grad():
        two = TextSim({**config, "textsim_last_n": 2}, dataset).full_sort_predict(inter)
        three = TextSim({**config, "textsim_last_n": 3}, dataset).full_sort_predict(inter)
    s = 0.5 ** 0.5
    assert torch.allclose(two[0, 1:], torch.tensor([0.0, s, s, 1.0]), atol=1e-6)
    assert torch.allclose(three[0, 1:], torch.tensor([3 ** -0.5] * 3 + [(2 / 3) ** 0.5]), atol=1e-6)
    assert torch.allclose(two[1, 1:], torch.tensor([0.0, 1.0, 0.0, s]), atol=1e-6)  # one item: n = 2 takes it alone
    assert torch.isneginf(two[:, 0]).all() and torch.isneginf(three[:, 0]).all()


@pytest.mark.parametrize("last_n", [0, -2])
def test_a_last_n_below_one_is_refused(textsim_config, last_n):
    config, _, (train, _, _) = build(textsim_config)
    with pytest.raises(ValueError, match=rf"textsim_last_n: expected an int >= 1, got {last_n}"):
        TextSim(Config(model="TextSim", dataset="ml-100k", config_dict={**textsim_config, "textsim_last_n": last_n}),
                train)


def test_loss_is_a_constant_zero_that_changes_nothing(textsim_config):
    """Nothing to learn: the loss is 0 with a gradient (RecBole's Trainer calls backward on it), the gradient is
    zero, and an optimizer step leaves the scores as they were."""
    config, _, (train, _, test) = build(textsim_config)
    model = TextSim(config, train)
    assert [name for name, _ in model.named_parameters()] == ["fake_loss"]
    batch = train.inter_feat[:32]
    inter = rows(test)
    with torch.no_grad():
        before = model.full_sort_predict(inter)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(2):
        loss = model.calculate_loss(batch)
        assert loss.requires_grad and loss.item() == 0.0
        optimizer.zero_grad()
        loss.backward()
        assert torch.equal(model.fake_loss.grad, torch.zeros(1))
        optimizer.step()
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(inter), before)
