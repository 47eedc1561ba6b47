"""UniSRec: inductive scoring from text, row alignment, seen-only training loss, Drafter consistency."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from recbole.data.interaction import Interaction

from recbole_specgr.model.sequential_recommender.unisrec import UniSRec

N_ITEMS, PLM, HID, T = 8, 12, 16, 5  # items 1..7 real, 0 = padding
UNSEEN = (6, 7)


def make_config(**overrides):
    config = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": T,
        "device": torch.device("cpu"),
        "n_layers": 1,
        "n_heads": 2,
        "hidden_size": HID,
        "inner_size": 32,
        "hidden_dropout_prob": 0.0,
        "attn_dropout_prob": 0.0,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "n_exps": 3,
        "adaptor_dropout_prob": 0.0,
        "adaptor_layers": None,
        "temperature": 0.07,
        "plm_size": PLM,
        "pretrained_path": None,
    }
    config.update(overrides)
    return config


def make_dataset(text_emb=None, seen=None):
    if text_emb is None:
        text_emb = torch.randn(N_ITEMS, PLM, generator=torch.Generator().manual_seed(0))
        text_emb[0] = 0
    if seen is None:
        seen = torch.ones(N_ITEMS, dtype=torch.bool)
        seen[0] = False
        seen[list(UNSEEN)] = False
    return SimpleNamespace(
        num=lambda field: N_ITEMS, item_num=N_ITEMS, item_text_emb=text_emb, seen_item_mask=seen
    )


def make_model(seed=0, dataset=None, **overrides):
    torch.manual_seed(seed)
    model = UniSRec(make_config(**overrides), dataset or make_dataset())
    return model.eval()


def batch(seqs, targets=None):
    item_seq = torch.zeros(len(seqs), T, dtype=torch.long)
    for row, seq in enumerate(seqs):
        item_seq[row, : len(seq)] = torch.tensor(seq)
    data = {"item_id_list": item_seq, "item_length": torch.tensor([len(s) for s in seqs])}
    if targets is not None:
        data["item_id"] = torch.tensor(targets)
    return Interaction(data)


SEQS, TARGETS = [[1, 2, 3], [4], [2, 5, 1, 3]], [4, 5, 2]


def test_unseen_item_scored_from_its_own_text_only():
    model = make_model()
    inter = batch(SEQS)
    before = model.full_sort_predict(inter)
    model.plm_embedding[7] += 1.0  # new text for the unseen item 7
    after = model.full_sort_predict(inter)
    assert torch.isfinite(before[:, 7]).all()
    assert not torch.allclose(before[:, 7], after[:, 7])
    others = [i for i in range(N_ITEMS) if i != 7]
    assert torch.equal(before[:, others], after[:, others])


def test_text_rows_aligned_with_item_ids():
    model = make_model()
    text = model.plm_embedding.clone()
    with torch.no_grad():
        # item side: item i's vector is the adaptor applied to text row i, not row i - 1 or i + 1
        for i in range(1, N_ITEMS):
            expected = model.text_item_vectors(text[i : i + 1])[0]
            assert torch.allclose(model.item_vectors()[i], expected, atol=1e-6)
            assert torch.allclose(model.item_vectors(torch.tensor([i]))[0], expected, atol=1e-6)
            assert not torch.allclose(model.item_vectors()[i], model.text_item_vectors(text[i - 1 : i])[0])
        # sequence side: the sequence [3] reads row 3 only
        seq, length = torch.tensor([[3, 0, 0, 0, 0]]), torch.tensor([1])
        base = model.sequence_vectors(seq, length)
        model.plm_embedding[4] += 1.0
        assert torch.equal(model.sequence_vectors(seq, length), base)
        model.plm_embedding[3] += 1.0
        assert not torch.allclose(model.sequence_vectors(seq, length), base)


def test_training_loss_ignores_unseen_items():
    model = make_model()
    inter = batch(SEQS, TARGETS)
    loss = model.calculate_loss(inter)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.plm_embedding[list(UNSEEN)] = torch.randn(len(UNSEEN), PLM) * 10
    loss2 = model.calculate_loss(inter)
    loss2.backward()
    assert torch.equal(loss, loss2)
    for name, param in model.named_parameters():
        assert torch.equal(param.grad, grads[name]), name


def test_loss_is_cross_entropy_over_seen_items():
    model = make_model()
    inter = batch(SEQS, TARGETS)
    seen = [1, 2, 3, 4, 5]
    scores = model.full_sort_predict(inter)[:, seen]  # [B, 5]
    expected = F.cross_entropy(scores, torch.tensor([seen.index(t) for t in TARGETS]))
    assert torch.allclose(model.calculate_loss(inter), expected, atol=1e-5)


def test_drafter_vectors_consistent_with_full_sort_predict():
    model = make_model()
    inter = batch(SEQS)
    seq_vec = model.sequence_vectors(inter["item_id_list"], inter["item_length"])
    item_vec = model.item_vectors()
    assert seq_vec.shape == (3, HID) and item_vec.shape == (N_ITEMS, HID)
    assert torch.allclose(seq_vec.norm(dim=-1), torch.ones(3))
    assert torch.allclose(item_vec[1:].norm(dim=-1), torch.ones(N_ITEMS - 1))
    scores = model.full_sort_predict(inter)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.allclose(scores[:, 1:], (seq_vec @ item_vec.t())[:, 1:] / 0.07, atol=1e-5)
    pred = model.predict(batch(SEQS, [6, 2, 7]))
    assert torch.allclose(pred, scores[torch.arange(3), torch.tensor([6, 2, 7])], atol=1e-5)


def test_new_item_text_matches_existing_item():
    model = make_model()
    from_text = model.text_item_vectors(model.plm_embedding[[2, 6]])
    assert torch.allclose(from_text, model.item_vectors(torch.tensor([2, 6])))
    with pytest.raises(ValueError, match="text_emb"):
        model.text_item_vectors(torch.zeros(2, PLM + 1))


def test_last_position_is_the_sequence_vector():
    model = make_model()
    long_seq = batch([[1, 2, 3, 4]])
    prefix = batch([[1, 2, 3]])
    # the causal mask means the state at position 3 of [1, 2, 3, 4] equals the last state of [1, 2, 3]
    full = model.sequence_vectors(long_seq["item_id_list"], torch.tensor([3]))
    assert torch.allclose(full, model.sequence_vectors(prefix["item_id_list"], prefix["item_length"]), atol=1e-5)


def test_loss_falls_on_tiny_problem():
    torch.manual_seed(0)
    model = make_model().train()
    # next item = (last item mod 5) + 1 over seen items 1..5
    seqs = [[a, (a % 5) + 1] for a in range(1, 6)] + [[a] for a in range(1, 6)]
    targets = [((s[-1]) % 5) + 1 for s in seqs]
    inter = batch(seqs, targets)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.calculate_loss(inter).item()
    for _ in range(40):
        optim.zero_grad()
        loss = model.calculate_loss(inter)
        loss.backward()
        optim.step()
    assert loss.item() < 0.2 * first
    model.eval()
    top = model.full_sort_predict(inter)[:, 1:6].argmax(dim=-1) + 1  # among the seen items 1..5
    assert top.tolist() == targets


def test_text_embedding_and_mask_not_trained_or_saved():
    model = make_model()
    assert "plm_embedding" not in dict(model.named_parameters())
    assert not any(k.startswith(("plm_embedding", "seen_")) for k in model.state_dict())
    # the adaptor keeps the original UniSRec parameter names, so its pre-trained weights load
    assert {"moe_adaptor.w_gate", "moe_adaptor.experts.0.bias", "moe_adaptor.experts.0.lin.weight"} <= set(
        model.state_dict()
    )


def test_pretrained_weights_load(tmp_path):
    source = make_model(seed=1)
    path = tmp_path / "pre.pth"
    state = {k: v for k, v in source.state_dict().items() if k.startswith(("moe_adaptor", "trm_encoder"))}
    state["unrelated.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, path)
    model = make_model(seed=2, pretrained_path=str(path))
    assert torch.equal(model.moe_adaptor.w_gate, source.moe_adaptor.w_gate)
    assert torch.equal(model.moe_adaptor.experts[1].lin.weight, source.moe_adaptor.experts[1].lin.weight)
    assert not torch.equal(model.position_embedding.weight, source.position_embedding.weight)


@pytest.mark.parametrize(
    "dataset_kw, config_kw, match",
    [
        ({"text_emb": torch.zeros(N_ITEMS - 1, PLM)}, {}, "item_text_emb"),
        ({"seen": torch.ones(N_ITEMS + 1, dtype=torch.bool)}, {}, "seen_item_mask"),
        ({}, {"adaptor_layers": [PLM, HID + 1]}, "adaptor_layers"),
        ({}, {"loss_type": "BPR"}, "loss_type"),
    ],
)
def test_bad_input_raises(dataset_kw, config_kw, match):
    with pytest.raises(ValueError, match=match):
        UniSRec(make_config(**config_kw), make_dataset(**dataset_kw))
