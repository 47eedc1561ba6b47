"""SpecGR++ and SpecGR_Aux (CPU, tiny models): L_CL by hand, the frozen stage-2 item tower, the two-stage trainer's
checkpoint logic, end-to-end runs through quick_start, and items added to a trained checkpoint."""

import copy
import logging
import math
import os
import pickle
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from conftest import load_benchmark_script
from recbole_specgr import compat
from recbole_specgr import new_items
from recbole_specgr.config import Config, model_defaults
from recbole_specgr.evaluation import EXCLUDED_ITEMS, requested_metrics
from recbole_specgr.model.sequential_recommender.specgrpp import SpecGRPP, in_batch_contrastive_loss
from recbole_specgr.model.sequential_recommender.tiger import TIGER
from recbole_specgr.quick_start import objective_function
from recbole_specgr.threads import map_in_threads
from recbole_specgr.inference.specgr import SpecGRStats, Thresholds
from recbole_specgr.model.speculative import EvalLog
from recbole_specgr.trainer import SpecGRPPTrainer
from recbole_specgr.trainer.schedule import lr_multiplier
from recbole_specgr.trainer.threshold_tuning import setting_keys, sweep_with_row_values

N_ITEMS, L, C = 30, 3, 4  # items 1..30, 3 digits of 4 codes
TINY_T5 = dict(n_layers_enc=1, n_layers_dec=1, hidden_size=16, n_heads=2, d_kv=8, inner_size=32)
FAST_TOKENIZER = dict(rqvae_method="faiss_rq", rqvae_codebook_size=32)  # k-means only: no RQ-VAE training
FAST_RUN = dict(MAX_ITEM_LIST_LENGTH=5, topk=[5, 10], num_beams=10, specgr_draft_size=10,  # K = δ = 10
                valid_metric="Recall@10", specgrpp_pretrain_valid_metric="recall@10")
NO_GRID = dict(specgr_threshold_grid=None, specgr_draft_weight_grid=None, specgr_unseen_score_grid=None,
               specgr_text_weight_grid=None, specgr_novelty_weight_grid=None)  # the configured setting only
# (SpecGRPP.yaml's defaults tune α, v_u, β, η)


@pytest.fixture(autouse=True)
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- a tiny SpecGR++ without a dataset
class TinyDataset:
    def __init__(self, seen, text_size=6):
        self.seen_item_mask = seen
        self.item_text_emb = F.normalize(torch.randn(len(seen), text_size, generator=torch.Generator().manual_seed(7)),
                                         dim=-1).index_fill(0, torch.tensor([0]), 0.0)  # row 0: padding

    def num(self, field):
        return len(self.seen_item_mask)


def make_model(seed=0, **overrides):
    """Random distinct codes for 30 items (the last 8 unseen) and a tiny SpecGR++ in eval mode."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(C**L, generator=g)[:N_ITEMS]
    codes = torch.cat([torch.full((1, L), -1), (flat[:, None] // C ** torch.arange(L - 1, -1, -1)) % C]).long()
    seen = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    seen[0] = False
    seen[N_ITEMS - 7:] = False
    config = model_defaults("SpecGRPP")
    config.update(USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list",
                  ITEM_LIST_LENGTH_FIELD="item_length", NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=4, device="cpu",
                  topk=[2, 5], num_beams=5, dropout_prob=0.0, initializer_range=0.3, specgrpp_temperature=0.5,
                  specgrpp_finetune_epochs=1, **TINY_T5)
    config.update(overrides)
    torch.manual_seed(seed)
    return SpecGRPP(config, TinyDataset(seen), item2codes=codes, codebook_size=C).eval()


def batch(seed=0):
    """Four histories with a repeated target (rows 0 and 2), all targets seen."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([4, 1, 3, 2])
    item_seq = torch.randint(1, N_ITEMS - 7, (4, 4), generator=g).masked_fill(torch.arange(4) >= lengths[:, None], 0)
    return Interaction({"item_id_list": item_seq, "item_length": lengths, "item_id": torch.tensor([5, 7, 5, 9])})


def test_in_batch_contrastive_loss_by_hand():
    seq = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    targets = torch.tensor([5, 7, 5])  # rows 0 and 2 share their target: not each other's negative
    tau = 0.5
    # logits / τ: row 0 [2, 0, (1.6 masked)], row 1 [0, 2, 1.2], row 2 [(1.2 masked), 1.6, 1.92]
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    row1 = -math.log(math.exp(2) / (math.exp(0) + math.exp(2) + math.exp(1.2)))
    row2 = -math.log(math.exp(1.92) / (math.exp(1.6) + math.exp(1.92)))
    loss = in_batch_contrastive_loss(seq, items, targets, tau)
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3, abs=1e-6)
    unmasked = F.cross_entropy(seq @ items.t() / tau, torch.arange(3))
    assert unmasked.item() > loss.item() + 0.1  # the duplicate would otherwise count as a negative


def test_stage1_loss_is_weighted_contrastive_plus_tiger_loss():
    model = make_model(specgrpp_cl_negatives=0)  # in-batch negatives only
    inter = batch()
    with torch.no_grad():
        cl, gen = model.calculate_loss(inter)
        seq_vec = model.sequence_vectors(inter["item_id_list"], inter["item_length"])
        item_vec = model.item_vectors(inter["item_id"])
        expected = model.lambda_cl * in_batch_contrastive_loss(seq_vec, item_vec, inter["item_id"], 0.5)
        assert cl.item() == pytest.approx(expected.item(), rel=1e-5)
        assert gen.item() == pytest.approx(TIGER.calculate_loss(model, inter).item(), rel=1e-5)
    assert torch.allclose(item_vec.norm(dim=1), torch.ones(4), atol=1e-5)
    assert model.item_vectors()[0].abs().sum() == 0  # padding row


def test_cl_negatives_covering_the_seen_items_give_the_full_softmax_over_them():
    """specgrpp_cl_negatives >= #seen items: every seen item is an extra negative exactly once (no sampling), so L_CL
    is the cross-entropy over all seen items (copies of a row's own target masked)."""
    model = make_model(specgrpp_cl_negatives=1000)
    seen_ids = torch.nonzero(model.seen_item_mask).squeeze(1)
    assert torch.equal(model._sample_seen(1000), seen_ids)
    n_seen = len(seen_ids)
    for n in (5, n_seen - 1):  # fewer than the seen items: distinct seen items (a duplicate would count twice)
        torch.manual_seed(n)
        sampled = model._sample_seen(n)
        assert len(sampled) == n == len(sampled.unique()) and model.seen_item_mask[sampled].all()
    inter = batch()
    with torch.no_grad():
        cl, _ = model.calculate_loss(inter)
        seq_vec = model.sequence_vectors(inter["item_id_list"], inter["item_length"])  # [4, P]
        logits = seq_vec @ model.item_vectors(seen_ids).t() / 0.5  # [4, S]: the batch's targets are seen items
        expected = F.cross_entropy(logits, torch.searchsorted(seen_ids, inter["item_id"]))
    assert cl.item() == pytest.approx(model.lambda_cl * expected.item(), rel=1e-5)


def test_stage2_item_vectors_frozen():
    model = make_model(seed=1)
    inter = batch(seed=1)
    live_before = model.item_vectors()
    model.start_finetune()
    frozen_before = model.item_vectors()
    assert torch.allclose(frozen_before, live_before, atol=1e-6)  # the tower is a copy of the stage-1 encoder
    model.train()
    ce, gen = model.calculate_loss(inter)
    seq_vec = model.sequence_vectors(inter["item_id_list"], inter["item_length"])
    seen_ids = torch.nonzero(model.seen_item_mask).squeeze(1)
    logits = seq_vec @ frozen_before[seen_ids].t() / 0.5
    expected = model.lambda_ce * F.cross_entropy(logits, torch.searchsorted(seen_ids, inter["item_id"]))
    assert ce.item() == pytest.approx(expected.item(), rel=1e-5)
    (ce + gen).backward()
    assert all(p.grad is None for p in model.item_tower.parameters())
    assert not model._candidate_vectors[1].requires_grad
    assert model.t5.embedding.weight.grad is not None and model.projection.weight.grad is not None
    torch.optim.SGD([p for p in model.parameters() if p.grad is not None], lr=1.0).step()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.item_vectors(), frozen_before)
        assert not torch.allclose(model.sequence_vectors(inter["item_id_list"], inter["item_length"]), seq_vec)


def test_stage2_sampled_candidates_loss_by_hand():
    """specgrpp_num_candidates = n < #seen: L_CE is the softmax over the seen items drawn by
    ``torch.randint(#seen, (n,))`` (positions in the sorted seen ids) together with the batch's targets, each once."""
    model = make_model(seed=5, specgrpp_num_candidates=4)
    inter = batch(seed=5)
    model.start_finetune()  # eval mode: no dropout, so the only draw of the RNG is the candidates'
    seen_ids = torch.nonzero(model.seen_item_mask).squeeze(1).tolist()
    targets = inter["item_id"].tolist()
    seed = 9
    with torch.no_grad():
        torch.manual_seed(seed)
        drawn = [seen_ids[i] for i in torch.randint(len(seen_ids), (4,)).tolist()]
        candidates = sorted(set(targets) | set(drawn))
        assert set(drawn) & set(targets)  # a drawn item that is a target too counts once (as does target 5)
        assert len(set(targets)) < len(candidates) < len(seen_ids)  # some items sampled, far from all of them
        seq_vec = model.sequence_vectors(inter["item_id_list"], inter["item_length"])  # [4, P]
        item_vec = {i: model.item_vectors(torch.tensor([i]))[0] for i in candidates}  # frozen tower's vectors
        rows = []
        for b, target in enumerate(targets):
            logits = torch.stack([seq_vec[b] @ item_vec[i] for i in candidates]) / 0.5
            rows.append(logits.logsumexp(0) - seq_vec[b] @ item_vec[target] / 0.5)
        expected = model.lambda_ce * torch.stack(rows).mean()
        full = model.lambda_ce * F.cross_entropy(seq_vec @ model.item_vectors(torch.tensor(seen_ids)).t() / 0.5,
                                                 torch.tensor([seen_ids.index(t) for t in targets]))
        torch.manual_seed(seed)
        ce, _ = model.calculate_loss(inter)
    torch.testing.assert_close(ce, expected)
    assert ce.item() < full.item() - 0.1  # fewer negatives than the full softmax over the seen items


def test_sequence_vector_pools_over_real_tokens_only():
    """A history's vector is the projected mean of the encoder states of its real tokens ([bos, IDs, eos]), so the
    same alone as in a batch padded to a longer history."""
    model = make_model(seed=6)
    inter = batch(seed=6)  # lengths 4, 1, 3, 2: rows 1 to 3 padded
    item_seq, lengths = inter["item_id_list"], inter["item_length"]
    with torch.no_grad():
        together = model.sequence_vectors(item_seq, lengths)
        enc = model.encode(item_seq, lengths)
        for b in range(4):
            real = 2 + L * int(lengths[b])  # bos, l tokens per item, eos
            assert enc.mask[b].sum() == real and enc.mask[b, :real].all()
            by_hand = F.normalize(model.projection(enc.hidden[b, :real].mean(dim=0)), dim=-1)
            torch.testing.assert_close(together[b], by_hand)
            alone = model.sequence_vectors(item_seq[b:b + 1, : int(lengths[b])], lengths[b:b + 1])  # no padding
            torch.testing.assert_close(together[b], alone[0])


def test_item_tower_is_saved_and_restored():
    model = make_model(seed=2)
    with torch.no_grad():
        model.t5.embedding.weight.mul_(2.0)  # "stage 1 training"
        model.start_finetune()
        model.t5.embedding.weight.add_(1.0)  # the live encoder moves on, the tower must not
        fresh = make_model(seed=2)
        untrained = fresh.item_vectors()
        assert not fresh.finetuning
        fresh.load_state_dict(model.state_dict())
        assert fresh.finetuning and bool(fresh.item_tower_active)
        assert torch.equal(fresh.item_vectors(), model.item_vectors())
        assert not torch.allclose(fresh.item_vectors(), untrained, atol=1e-3)


def test_drafting_index_follows_weight_changes():
    model = make_model(seed=4)
    inter = batch(seed=4)
    with torch.no_grad():
        model.full_sort_predict(inter)
        index = model.speculative_recommender().draft_index.item_vectors.clone()
        model.train()  # a training epoch may have changed the weights
        model.projection.weight.mul_(-1.0)
        model.eval()
        model.full_sort_predict(inter)
    assert torch.allclose(model.speculative_recommender().draft_index.item_vectors, -index, atol=1e-6)
    stats = model.pop_eval_stats()
    assert set(stats) == {"acceptance_rate", "mean_rounds", "unseen_share", "users_per_s"}
    assert model.pop_eval_stats() == {}


def test_a_model_that_predicted_can_be_copied_and_pickled():
    """No lock is held by the model (BUILD_LOCK is shared; EvalLog's is recreated): RecBole's get_flops deep-copies
    the model, and torch.save(model) pickles it."""
    model = make_model(seed=5)
    inter = batch(seed=5)
    with torch.no_grad():
        expected = model.full_sort_predict(inter)
        for copy_of in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert torch.equal(copy_of.full_sort_predict(inter), expected)
            assert copy_of.pop_eval_stats().keys() >= {"acceptance_rate", "users_per_s"}
            with copy_of._eval_log.predicting():  # a working lock of its own
                pass


def test_evaluation_workers_build_the_drafters_item_vectors_once(monkeypatch):
    """eval_role "drafter": two workers predicting at once compute the catalog's vectors once, not once each."""
    model = make_model(seed=6)
    model.eval_role = "drafter"
    built, item_vectors = [], model.item_vectors

    def slow_item_vectors(*args):
        if not args:  # the whole catalog
            built.append(threading.current_thread())
            time.sleep(0.2)  # long enough for the other worker to arrive
        return item_vectors(*args)

    monkeypatch.setattr(model, "item_vectors", slow_item_vectors)
    with torch.no_grad():
        scores = list(map_in_threads(model.full_sort_predict, [batch(seed=s) for s in range(4)], workers=2))
    assert len(built) == 1 and built[0] is not threading.current_thread()
    with torch.no_grad():
        assert torch.equal(scores[3], model.full_sort_predict(batch(seed=3)))


def test_eval_log_counts_overlapping_predictions_once():
    """Two evaluation workers predicting at once: users/s is over the time any prediction ran, not the sum."""
    ticks = iter([0.0, 3.0, 10.0, 11.0])  # read when the first of overlapping predictions starts and the last ends
    log = EvalLog(clock=lambda: next(ticks))
    first, second = log.predicting(), log.predicting()
    first.__enter__()  # t = 0
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)  # t = 3
    with log.predicting():  # 10 … 11
        log.add(SpecGRStats(n_users=4))
    log.add(SpecGRStats(n_users=2))
    stats, seconds = log.pop()
    assert (stats.n_users, seconds) == (6, 4.0)
    assert log.pop() == (SpecGRStats(), 0.0)


# ---------------------------------------------------------------- warm start from a trained TIGER
def tiger_checkpoint(tmp_path, seed=7, codes_seed=0, **overrides):
    """A TIGER over make_model's items (codes of ``codes_seed``), saved like a trainer checkpoint."""
    twin = make_model(seed=codes_seed)
    config = model_defaults("SpecGRPP")
    config.update(USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list",
                  ITEM_LIST_LENGTH_FIELD="item_length", NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=4, device="cpu",
                  topk=[2, 5], num_beams=5, dropout_prob=0.0, initializer_range=0.3, **{**TINY_T5, **overrides})
    torch.manual_seed(seed)
    tiger = TIGER(config, TinyDataset(twin.seen_item_mask), item2codes=twin.item2codes, codebook_size=C)
    path = tmp_path / "tiger.pth"
    torch.save({"config": {"model": "TIGER"}, "state_dict": tiger.state_dict()}, path)
    return tiger, str(path)


def test_warm_start_loads_exactly_the_tiger_weights(tmp_path):
    tiger, path = tiger_checkpoint(tmp_path)
    model = make_model(seed=0)
    projection = model.projection.weight.clone()
    assert not torch.equal(model.t5.embedding.weight, tiger.t5.embedding.weight)  # different initialisations
    model.load_init_checkpoint(path)
    tiger_state = tiger.t5.state_dict()
    assert set(model.t5.state_dict()) == set(tiger_state)
    assert all(torch.equal(value, tiger_state[name]) for name, value in model.t5.state_dict().items())
    assert torch.equal(model.projection.weight, projection)  # the SpecGR++ head is not TIGER's


def test_warm_start_refuses_other_ids_or_another_backbone(tmp_path):
    _, other_codes = tiger_checkpoint(tmp_path, codes_seed=3)
    with pytest.raises(ValueError, match="init_checkpoint: .* other semantic IDs"):
        make_model(seed=0).load_init_checkpoint(other_codes)
    _, other_size = tiger_checkpoint(tmp_path, inner_size=48)
    with pytest.raises(ValueError, match="init_checkpoint: .* another T5 backbone"):
        make_model(seed=0).load_init_checkpoint(other_size)
    torch.save({"config": {"model": "SASRec"}, "state_dict": {}}, tmp_path / "sasrec.pth")
    with pytest.raises(ValueError, match="init_checkpoint: .* holds a SASRec, expected a TIGER or SpecGRPP checkpoint"):
        make_model(seed=0).load_init_checkpoint(str(tmp_path / "sasrec.pth"))


def test_start_from_a_specgrpp_loads_every_weight_and_fills_the_tower_at_stage_2(tmp_path):
    source = make_model(seed=0, specgrpp_finetune_epochs=0)  # stage 1 only: no item tower
    assert source.item_tower is None
    with torch.no_grad():  # "trained": every weight differs from a fresh model's
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "specgrpp.pth"
    torch.save({"config": {"model": "SpecGRPP"}, "state_dict": source.state_dict()}, path)
    model = make_model(seed=0)  # built for stage 2
    tower_before = model.item_tower["projection"].weight.clone()
    model.load_init_checkpoint(str(path))
    mine = model.state_dict()
    assert all(torch.equal(mine[name], value) for name, value in source.state_dict().items())  # head included
    assert torch.equal(model.item_tower["projection"].weight, tower_before) and not model.finetuning
    inter = batch(seed=1)
    assert torch.equal(model.full_sort_predict(inter), source.full_sort_predict(inter))
    model.start_finetune()
    assert torch.equal(model.item_tower["projection"].weight, source.projection.weight)
    with pytest.raises(ValueError, match=r"init_checkpoint: .* a SpecGRPP of other sizes or inputs .*projection"):
        make_model(seed=0, specgrpp_projection_size=8).load_init_checkpoint(str(path))
    finetuned = tmp_path / "finetuned.pth"  # after stage 2 it ranks by its tower, which a stage-1 model lacks
    torch.save({"config": {"model": "SpecGRPP"}, "state_dict": model.state_dict()}, finetuned)
    with pytest.raises(ValueError, match=r"init_checkpoint: .* after stage 2.* specgrpp_finetune_epochs > 0"):
        make_model(seed=0, specgrpp_finetune_epochs=0).load_init_checkpoint(str(finetuned))


# ---------------------------------------------------------------- the two-stage trainer
class Killed(Exception):
    """Stands for the process being killed."""


def scripted_fit(tmp_path, drafter_scores, speculative_scores, epochs=2, finetune_epochs=2, eval_step=1,
                 progress_file=None, kill_epoch=None, grid_best=None, valid_seconds=0.0, **model_settings):
    """Run SpecGRPPTrainer.fit with stubbed epochs and evaluations: epoch e sets projection.bias to e; a validation
    scores the current weights (bias b) by ``drafter_scores[b]`` in the drafter role and ``speculative_scores[b]``
    otherwise. ``kill_epoch``: raise :class:`Killed` when that epoch starts (after the trainer has recorded its
    progress). ``grid_best`` ({b: γ}): speculative validations sweep γ over [-1.5, -3.0] instead, the weights of bias
    b scoring ``speculative_scores[b]`` at ``grid_best[b]`` and 0.1 less at the other γ. ``valid_seconds``: each
    validation takes at least that long (a sleep), for the training clock. Returns the trainer, the
    trained epochs, the validations, the best and the checkpoint."""
    config = Config(model="SpecGRPP", dataset="ml-100k", config_dict={
        "checkpoint_dir": str(tmp_path / "saved"), "epochs": epochs, "specgrpp_finetune_epochs": finetune_epochs,
        "eval_step": eval_step, "stopping_step": 5, "specgrpp_finetune_learning_rate": 0.123, "state": "ERROR",
        **NO_GRID, "progress_file": progress_file, **({"specgr_threshold_grid": [-1.5, -3.0]} if grid_best else {})})
    model = make_model(seed=5, **model_settings)
    trainer = SpecGRPPTrainer(config, model)
    trained, validations = [], []

    def train_epoch(train_data, epoch_idx, loss_func=None, show_progress=False):
        trainer._epoch_starts(epoch_idx)  # what InductiveTrainer._train_epoch does first
        if epoch_idx == kill_epoch:
            raise Killed
        trained.append((epoch_idx, model.finetuning, model.projection.bias[0].item()))
        with torch.no_grad():
            model.projection.bias.fill_(epoch_idx)
        trainer.learning_curve.append({"epoch": epoch_idx, "stage": trainer.stage})
        return 0.0

    def evaluate(valid_data, load_best_model=True, model_file=None, show_progress=False):
        bias = int(model.projection.bias[0].item())
        validations.append((model.eval_role, bias))
        time.sleep(valid_seconds)
        if model.eval_role == "drafter":  # stage 2's drafter passes only feed the curve: any score
            score = drafter_scores.get(bias, 0.0) if trainer.stage == "finetune" else drafter_scores[bias]
        else:
            score = speculative_scores[bias]
        return {"recall@50": score}

    def sweep_validation(valid_data):
        bias = int(model.projection.bias[0].item())
        validations.append(("sweep", bias))
        score = speculative_scores[bias]
        rows = [sweep_row(setting, score if setting.seen == grid_best[bias] else score - 0.1)
                for setting in trainer.threshold_grid]
        return score, {"recall@50": score}, rows

    trainer._train_epoch = train_epoch
    trainer.evaluate = evaluate
    trainer.sweep_validation = sweep_validation
    trainer.eval_collector.data_collect = lambda data: None
    best = trainer.fit([1], [1])
    checkpoint = compat.load_checkpoint(trainer.saved_model_file)
    return trainer, trained, validations, best, checkpoint


def sweep_row(setting, recall):
    """A validation sweep's row of ``setting`` (γ, …) with ``recall`` as its recall@50."""
    return {**setting_keys(setting), "recall@50": recall, "in_sample/recall@50": recall, "unseen/recall@50": 0.0,
            "acceptance_rate": 0.0, "mean_rounds": 1.0}


def model_role(trainer):
    return trainer.model.eval_role


def test_specgrpp_speculative_inference_encodes_each_batch_once_with_the_same_result(monkeypatch):
    model = make_model(seed=3, specgr_threshold=-2.0, specgr_draft_size=4)
    inter = batch(seed=3)
    calls = []
    encode = model.t5.encode
    monkeypatch.setattr(model.t5, "encode", lambda *a, **k: calls.append(a[0].shape) or encode(*a, **k))
    model.speculative_recommender()  # builds the drafting index (item vectors: their own encoder calls)
    calls.clear()
    shared = model.full_sort_predict(inter)
    assert calls == [torch.Size([4, 4 * L + 2])]  # one encoder pass over the 4 histories, for both roles
    recommender = model.speculative_recommender()
    monkeypatch.setattr(recommender, "drafter", _SeparateDrafter(model))  # the drafter encodes on its own
    separate = model.full_sort_predict(inter)
    assert len(calls) == 3 and torch.equal(shared, separate)


def test_speculative_inference_decodes_each_users_shared_positions_once_per_batch(monkeypatch):
    """The verifier's shared positions (start, first digits: δ = 10 > C = 4) are decoded once per batch and every
    round reads them; the recommendation equals that of a verifier that decodes them in every round."""
    model = make_model(seed=4, specgr_threshold=-2.5, specgr_draft_size=10, topk=[2, 10], num_beams=10)
    inter = batch(seed=4)
    recommender = model.speculative_recommender()
    fan_outs = []
    decode_fan_out = model.t5.decode_fan_out
    monkeypatch.setattr(model.t5, "decode_fan_out", lambda *a, **k: fan_outs.append(1) or decode_fan_out(*a, **k))
    with torch.no_grad():
        out = recommender.recommend(inter["item_id_list"], inter["item_length"])
        rounds = int(out.stats.n_rounds)
        assert rounds > len(inter) and fan_outs == [1]  # some user drafted twice, one fan-out
        monkeypatch.setattr(model, "share_decoding", lambda enc, n_candidates: enc)  # a verifier that shares nothing
        every_round = recommender.recommend(inter["item_id_list"], inter["item_length"])
    assert len(fan_outs) > 2
    assert torch.equal(torch.isfinite(out.scores), torch.isfinite(every_round.scores))
    assert torch.allclose(out.scores[torch.isfinite(out.scores)], every_round.scores[torch.isfinite(out.scores)],
                          rtol=1e-6, atol=0)


def test_excluded_history_takes_no_beams_so_speculative_inference_still_returns_k_items():
    """With each user's history excluded (``EXCLUDED_ITEMS``) and β = K, the beam fill keeps K recommendable items:
    with nothing accepted (γ = +inf) the list is exactly TIGER's own recommendation under the same exclusion."""
    model = make_model(seed=5, specgr_threshold=math.inf, specgr_draft_size=4, topk=[2, 10], num_beams=10)
    inter = batch(seed=5)
    excluded = torch.rand(4, N_ITEMS + 1, generator=torch.Generator().manual_seed(5)) < 0.4
    excluded[:, 0] = False
    assert ((model.seen_item_mask & ~excluded).sum(dim=1) >= 10).all()  # K generable items left for everyone
    inter.update(Interaction({EXCLUDED_ITEMS: excluded}))
    with torch.no_grad():
        scores = model.full_sort_predict(inter)
        tiger = TIGER.full_sort_predict(model, inter)  # the verifier's constrained beam search alone
    assert (torch.isfinite(scores).sum(dim=1) == 10).all() and not torch.isfinite(scores[excluded]).any()
    assert torch.equal(torch.isfinite(scores), torch.isfinite(tiger))
    assert torch.allclose(scores[torch.isfinite(scores)], tiger[torch.isfinite(tiger)], atol=1e-5)


def test_speculative_recommender_follows_item_ids_loaded_from_a_checkpoint():
    """After loading weights trained with other semantic IDs, speculative inference (already built once) uses the
    loaded IDs' prefix index: the trained model's recommendations."""
    trained, model = make_model(seed=3, specgr_threshold=-2.0), make_model(seed=5, specgr_threshold=-2.0)
    assert not torch.equal(trained.item2codes, model.item2codes)
    inter = batch(seed=3)
    with torch.no_grad():
        model.full_sort_predict(inter)  # builds its recommender on the dataset's IDs
        model.load_state_dict(trained.state_dict())
        assert model.speculative_recommender().prefix_index is model.prefix_index
        assert torch.equal(model.full_sort_predict(inter), trained.full_sort_predict(inter))


class _SeparateDrafter:
    """A wrapper that makes SpecGR++'s drafter a different object from its verifier."""

    def __init__(self, model):
        self.model = model

    def sequence_vectors(self, item_seq, item_seq_len):
        return self.model.sequence_vectors(item_seq, item_seq_len)

    def item_vectors(self, item_ids=None):
        return self.model.item_vectors(item_ids)


def test_trainer_selects_stage1_by_the_drafter_then_stage2_by_speculative_inference(run_dir):
    trainer, trained, validations, best, checkpoint = scripted_fit(
        run_dir, drafter_scores={0: 0.3, 1: 0.1}, speculative_scores={0: 0.2, 1: 0.9, 2: 0.25, 3: 0.4})
    assert [(e, f) for e, f, _ in trained] == [(0, False), (1, False), (2, True), (3, True)]
    assert trained[2][2] == 0.0  # stage 2 started from the best stage-1 epoch by the drafter (0), not the last (1)
    # stage 1 in the drafter role; the reloaded stage-1 best, then each stage-2 epoch, by speculative inference
    # (stage-2 validations also rank with the drafter alone, for the learning curve only)
    assert validations == [("drafter", 0), ("drafter", 1), ("speculative", 0), ("speculative", 2), ("drafter", 2),
                           ("speculative", 3), ("drafter", 3)]
    assert [c.get("valid_drafter") is not None for c in trainer.learning_curve] == [False, False, True, True]
    assert model_role(trainer) == "speculative"  # the drafter pass leaves the model in its inference role
    assert trainer.optimizer.defaults["lr"] == 0.123 and trainer.lr_scheduler.base_lrs == [0.123]  # stage 2 schedule
    assert best == (0.4, {"recall@50": 0.4}) and trainer.valid_metric == "recall@50"
    assert checkpoint["epoch"] == 3 and bool(checkpoint["state_dict"]["item_tower_active"])
    assert float(checkpoint["state_dict"]["projection.bias"][0]) == 3.0
    assert [c.get("valid_score") for c in trainer.learning_curve] == [0.3, 0.1, 0.25, 0.4]
    assert trainer.learning_curve[1]["valid_speculative_score"] == 0.2  # the stage-1 model, speculatively


@pytest.mark.parametrize("finetune_epochs, saved_epoch, gamma", [(2, 1, -3.0), (0, 0, -1.5)])
def test_the_final_gamma_comes_from_the_sweep_of_the_saved_weights(run_dir, finetune_epochs, saved_epoch, gamma):
    """Stage-2 epoch 1 ties the stage-1 model (0.4): RecBole's early stopping keeps the later of equals, so its
    weights and its own best γ (−3.0) are kept, not the γ of the stage-1 model's sweep (−1.5); without stage 2 the
    stage-1 model's sweep decides. No sweep beyond the validations'."""
    trainer, _, validations, best, checkpoint = scripted_fit(
        run_dir, drafter_scores={0: 0.3}, speculative_scores={0: 0.4, 1: 0.4, 2: 0.3}, epochs=1,
        finetune_epochs=finetune_epochs, grid_best={0: -1.5, 1: -3.0, 2: -1.5})
    assert checkpoint["epoch"] == saved_epoch and float(checkpoint["state_dict"]["projection.bias"][0]) == saved_epoch
    assert trainer.model.specgr_threshold == gamma and checkpoint["config"]["specgr_threshold"] == gamma
    assert [v for v in validations if v[0] == "sweep"] == [("sweep", b) for b in range(finetune_epochs + 1)]
    assert best[0] == 0.4 and best[1]["recall@50"] == 0.4  # the result of the kept γ's row


def stage_learning_rates(tmp_path, steps_per_epoch, **settings):
    """The learning rate of each optimizer step of a SpecGR++ fit, by stage: 1 + 2 epochs of ``steps_per_epoch``
    stubbed steps (stage 1 at 0.01, stage 2 at 0.001), stubbed validations."""
    config = Config(model="SpecGRPP", dataset="ml-100k", config_dict={
        "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1, "specgrpp_finetune_epochs": 2, "state": "ERROR",
        "learning_rate": 0.01, "specgrpp_finetune_learning_rate": 0.001, **NO_GRID, **settings})
    trainer = SpecGRPPTrainer(config, make_model(seed=5))
    rates = {"pretrain": [], "finetune": []}

    def train_epoch(train_data, epoch_idx, loss_func=None, show_progress=False):
        for _ in range(steps_per_epoch):
            rates[trainer.stage].append(trainer.optimizer.param_groups[0]["lr"])
            trainer.optimizer.step()
        trainer.learning_curve.append({"epoch": epoch_idx, "stage": trainer.stage})
        return 0.0

    trainer._train_epoch = train_epoch
    trainer.evaluate = lambda *args, **kwargs: {"recall@50": 0.1}
    trainer.eval_collector.data_collect = lambda data: None
    trainer.fit([1] * steps_per_epoch, [1])
    return rates


@pytest.mark.parametrize("finetune_total, decay_end", [(None, 8), (12, 12)])
def test_each_stage_warms_up_and_decays_over_its_own_steps(run_dir, caplog, finetune_total, decay_end):
    """Stage 1 follows warmup_steps / scheduler_total_steps (3 / 20); stage 2 restarts with its own warmup (2 steps)
    and decays over its own 2 × 4 steps, or over specgrpp_finetune_total_steps when set."""
    caplog.set_level(logging.INFO)
    rates = stage_learning_rates(run_dir, 4, warmup_steps=3, scheduler_total_steps=20,
                                 specgrpp_finetune_warmup_steps=2, specgrpp_finetune_total_steps=finetune_total)
    assert rates["pretrain"] == pytest.approx([0.01 * lr_multiplier(s, 3, 20) for s in range(4)], abs=1e-15)
    assert rates["finetune"] == pytest.approx([0.001 * lr_multiplier(s, 2, decay_end) for s in range(8)], abs=1e-15)
    assert rates["finetune"][:3] == pytest.approx([0.0, 0.0005, 0.001])  # the stage's peak after its 2 warmup steps
    assert (f"[TRAIN] learning rate: cosine schedule, 2 warmup steps, decay over {decay_end} steps to 0 × 0.001"
            in caplog.messages)


def test_a_warmup_longer_than_its_stage_is_reported(run_dir, caplog):
    """Stage 2's 2 × 4 steps end inside its 10 warmup steps (a profile's warmup on a small dataset): one warning."""
    rates = stage_learning_rates(run_dir, 4, warmup_steps=3, scheduler_total_steps=20,
                                 specgrpp_finetune_warmup_steps=10)
    assert max(rates["finetune"]) < 0.001
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "warmup" in r.getMessage()]
    assert warned == ["[TRAIN] 10 warmup steps >= the 8 steps of this schedule: the learning rate never reaches 0.001; "
                      "lower warmup_steps (SpecGR++'s stage 2: specgrpp_finetune_warmup_steps) or train more steps"]


def test_trainer_keeps_stage1_when_finetuning_does_not_help(run_dir):
    _, _, _, best, checkpoint = scripted_fit(
        run_dir, drafter_scores={0: 0.1, 1: 0.3}, speculative_scores={1: 0.5, 2: 0.25, 3: 0.4})
    assert best[0] == 0.5 and checkpoint["epoch"] == 1
    assert float(checkpoint["state_dict"]["projection.bias"][0]) == 1.0


def test_without_l_cl_stage1_is_selected_by_speculative_inference(run_dir):
    """λ1 = 0 (ablations 2.1 / 2.2): the drafter is untrained, so its ranking (here best at epoch 0) must not pick the
    stage-1 model; speculative inference does (epoch 1)."""
    _, trained, validations, best, checkpoint = scripted_fit(
        run_dir, drafter_scores={0: 0.9, 1: 0.1}, speculative_scores={0: 0.2, 1: 0.5, 2: 0.3}, epochs=2,
        finetune_epochs=1, specgrpp_lambda_cl=0.0)
    assert validations[:2] == [("speculative", 0), ("speculative", 1)]  # stage 1, every epoch
    assert trained[-1] == (2, True, 1.0)  # stage 2 from the stage-1 model of epoch 1
    assert best[0] == 0.5 and checkpoint["epoch"] == 1


@pytest.mark.parametrize("eval_step", [1, 2])
def test_a_tie_keeps_the_later_epoch_whichever_validation_scores_it(run_dir, eval_step):
    """Stage-2 epoch 2 ties the stage-1 model (0.4): RecBole's loop (eval_step 1) and the forced validation of a
    stage's last epoch (eval_step 2) keep it alike, so the tested model does not depend on eval_step."""
    _, _, _, best, checkpoint = scripted_fit(
        run_dir, drafter_scores={0: 0.3}, speculative_scores={0: 0.4, 1: 0.3, 2: 0.4}, epochs=1, finetune_epochs=2,
        eval_step=eval_step)
    assert best[0] == 0.4 and checkpoint["epoch"] == 2
    assert float(checkpoint["state_dict"]["projection.bias"][0]) == 2.0


def test_stage2_without_stage1_starts_its_curve_with_the_loaded_weights(run_dir):
    """No stage-1 epoch (the weights of init_checkpoint): their speculative validation opens the learning curve."""
    trainer, trained, validations, best, _ = scripted_fit(
        run_dir, drafter_scores={}, speculative_scores={0: 0.2, 1: 0.3}, epochs=0, finetune_epochs=2)
    assert [e for e, _, _ in trained] == [0, 1] and validations[0] == ("speculative", 0)
    start = trainer.learning_curve[0]
    assert (start["epoch"], start["stage"], start["valid_speculative_score"]) == (-1, "init_checkpoint", 0.2)
    assert [c.get("valid_score") for c in trainer.learning_curve] == [None, 0.2, 0.3] and best[0] == 0.3


def test_every_stage_is_validated_at_its_last_epoch(run_dir):
    """eval_step 2: RecBole validates epochs whose (index + 1) is even; each stage's last epoch is validated too."""
    _, trained, validations, _, _ = scripted_fit(
        run_dir, drafter_scores={1: 0.1, 2: 0.2}, speculative_scores={2: 0.1, 3: 0.2, 4: 0.3},
        epochs=3, finetune_epochs=2, eval_step=2)
    assert [e for e, _, _ in trained] == [0, 1, 2, 3, 4]
    assert validations == [("drafter", 1), ("drafter", 2), ("speculative", 2), ("speculative", 3), ("drafter", 3),
                           ("speculative", 4), ("drafter", 4)]


@pytest.mark.parametrize("kill_epoch, expected_epochs, expected_validations", [
    (1, [1, 2, 3], [("drafter", 1), ("speculative", 0), ("speculative", 2), ("drafter", 2), ("speculative", 3),
                    ("drafter", 3)]),  # in stage 1: its rest, the stage-1 baseline, stage 2
    (2, [2, 3], [("speculative", 2), ("drafter", 2), ("speculative", 3), ("drafter", 3)]),
    # at stage 2's first epoch (the file holds stage 2's start, the baseline validated): stage 2
    (3, [3], [("speculative", 3), ("drafter", 3)]),  # in stage 2: stage 1 and the baseline are not repeated
])
def test_a_killed_run_resumes_in_its_stage(run_dir, kill_epoch, expected_epochs, expected_validations, monkeypatch):
    scores = dict(drafter_scores={0: 0.3, 1: 0.1}, speculative_scores={0: 0.2, 1: 0.9, 2: 0.25, 3: 0.4})
    progress = str(run_dir / "run.progress.pth")
    with pytest.raises(Killed):
        scripted_fit(run_dir, **scores, progress_file=progress, kill_epoch=kill_epoch)
    reads = []  # (mtime) of every load of the progress file by the resumed run

    def counted_load(path, *args, **kwargs):
        if str(path) == progress:
            reads.append(os.stat(path).st_mtime_ns)
        return compat.load_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr("recbole_specgr.trainer.inductive_trainer.load_checkpoint", counted_load)
    trainer, trained, validations, best, checkpoint = scripted_fit(run_dir, **scores, progress_file=progress)
    # the stage check and the resume share one read of each version of the file
    assert reads and len(reads) == len(set(reads))
    assert [e for e, _, _ in trained] == expected_epochs and validations == expected_validations
    assert trained[-1][1] and trained[-1][2] == 2.0  # the last epoch fine-tunes, from the weights of epoch 2
    # the selection of the uninterrupted run (test above): stage 2's epoch 3, at the stage-2 learning rate
    assert best == (0.4, {"recall@50": 0.4}) and checkpoint["epoch"] == 3
    assert float(checkpoint["state_dict"]["projection.bias"][0]) == 3.0
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 0.123
    # stage 2's own schedule from its first step: never the state of stage 1's finished schedule (peak rate 1e-3,
    # past its last step: a rate of 0 for all of stage 2)
    assert trainer.lr_scheduler.base_lrs == [0.123] and trainer.lr_scheduler.last_epoch == 0
    assert [c["epoch"] for c in trainer.learning_curve] == [0, 1, 2, 3]
    assert [c.get("valid_score") for c in trainer.learning_curve] == [0.3, 0.1, 0.25, 0.4]


def test_a_run_killed_after_stage2_saved_its_first_epoch_resumes_from_the_stage1_model(run_dir, monkeypatch):
    """Stage 2's epoch 1 beats the baseline and overwrites the checkpoint file; the run dies before epoch 2 records
    its progress. The resumed run continues stage 2 from the stage-1 model (bias 0), as the uninterrupted run did,
    and never takes the fine-tuned file for the stage-1 best."""
    scores = dict(drafter_scores={0: 0.3}, speculative_scores={0: 0.2, 1: 0.5, 2: 0.4})
    _, uninterrupted, _, best, _ = scripted_fit(run_dir / "whole", **scores, epochs=1, finetune_epochs=2)
    progress = str(run_dir / "run.progress.pth")
    save = SpecGRPPTrainer._save_checkpoint

    def save_then_die(self, epoch, verbose=True, **kwargs):
        save(self, epoch, verbose=verbose, **kwargs)
        if self.stage == "finetune" and epoch == 1:
            raise Killed

    monkeypatch.setattr(SpecGRPPTrainer, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        scripted_fit(run_dir / "run", **scores, epochs=1, finetune_epochs=2, progress_file=progress)
    monkeypatch.setattr(SpecGRPPTrainer, "_save_checkpoint", save)
    trainer, trained, validations, resumed_best, checkpoint = scripted_fit(
        run_dir / "run", **scores, epochs=1, finetune_epochs=2, progress_file=progress)
    assert uninterrupted == [(0, False, 0.0), (1, True, 0.0), (2, True, 1.0)]
    assert trained == uninterrupted[1:]  # stage 2 again from the stage-1 weights
    assert validations[0] == ("speculative", 1) and resumed_best == best == (0.5, {"recall@50": 0.5})
    assert checkpoint["epoch"] == 1 and float(checkpoint["state_dict"]["projection.bias"][0]) == 1.0
    baseline = [c for c in trainer.learning_curve if "valid_speculative_score" in c]
    assert [c["valid_speculative_score"] for c in baseline] == [0.2]  # the stage-1 model's, not epoch 1's (0.5)


def test_stage2_alone_with_a_progress_file_records_its_training_time(run_dir, monkeypatch):
    """No stage-1 epoch (init_checkpoint, specgrpp_pretrain_epochs: 0) with a progress file: stage 2 starts by writing
    its progress, whose train_time_s must count from fit()'s start, the stage-1 model's validation included (it once
    met an unstarted clock and crashed); reading back its own progress is no resume (the time before stage 2 was
    once counted twice); a run killed in stage 2 resumes to the uninterrupted result."""
    scores = dict(drafter_scores={}, speculative_scores={0: 0.2, 1: 0.5, 2: 0.4}, valid_seconds=0.2)
    whole, uninterrupted, _, best, _ = scripted_fit(run_dir / "whole", **scores, epochs=0, finetune_epochs=2,
                                                    progress_file=str(run_dir / "whole.progress.pth"))
    assert whole.resumed_train_time_s == 0.0  # one process: nothing of earlier processes to add
    progress = str(run_dir / "run.progress.pth")
    written = []
    write = SpecGRPPTrainer._write_progress

    def recorded_write(self, epoch, train_data, done=False):
        write(self, epoch, train_data, done=done)
        written.append(compat.load_checkpoint(progress)["progress"]["train_time_s"])

    monkeypatch.setattr(SpecGRPPTrainer, "_write_progress", recorded_write)
    with pytest.raises(Killed):
        scripted_fit(run_dir / "run", **scores, epochs=0, finetune_epochs=2, progress_file=progress, kill_epoch=1)
    assert written and all(isinstance(t, float) and 0.2 <= t < 60.0 for t in written)  # after one validation
    before_kill = written[-1]
    trainer, trained, _, resumed_best, _ = scripted_fit(run_dir / "run", **scores, epochs=0, finetune_epochs=2,
                                                        progress_file=progress)
    assert [e for e, _, _ in uninterrupted] == [0, 1] and [e for e, _, _ in trained] == [1]
    assert resumed_best == best == (0.5, {"recall@50": 0.5})
    assert trainer.resumed_train_time_s == before_kill  # the killed process's time, carried on


# ---------------------------------------------------------------- end to end on the ml-100k slice
@pytest.fixture(scope="module")
def specgrpp_run(tmp_path_factory, ml100k_slice, session_cache):
    """One SpecGR++ run (1 + 1 epochs) whose γ accepts every draft: the result and the checkpoint."""
    folder = tmp_path_factory.mktemp("specgrpp_run")
    config = {"model": "SpecGRPP", "dataset": "ml-100k", "data_path": ml100k_slice, "cache_dir": session_cache,
              "checkpoint_dir": str(folder / "saved"), "epochs": 1, "specgrpp_finetune_epochs": 1, "state": "ERROR",
              "show_progress": False, "train_batch_size": 512, "eval_batch_size": 512, "seed": 2020,
              "specgr_threshold": -100.0, **NO_GRID, **TINY_T5, **FAST_TOKENIZER, **FAST_RUN}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr("sys.argv", ["pytest"])
        result = objective_function(config)
    checkpoint, = (folder / "saved").glob("SpecGRPP-*.pth")
    return result, str(checkpoint)


def test_specgrpp_selects_and_reports_by_ndcg_alone(small_config, tmp_path, monkeypatch):
    """``metrics: [NDCG]``: stage 1 (the drafter), γ's grid and the test are validated and reported by NDCG alone (the
    grid's log once read recall@K from every row)."""
    config = {**small_config, "model": "SpecGRPP", "dataset": "ml-100k", "specgrpp_finetune_epochs": 0,
              **TINY_T5, **FAST_TOKENIZER, **NO_GRID, **FAST_RUN, "metrics": ["NDCG"], "valid_metric": "NDCG@10",
              "specgrpp_pretrain_valid_metric": None, "specgr_threshold_grid": [-100.0, -1.0]}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])
    result = objective_function(config)
    assert sorted(result["test"]["overall"]) == ["n_cases", "ndcg@10", "ndcg@5"]
    assert [row["specgr_threshold"] for row in result["threshold_sweep"]] == [-100.0, -1.0]
    assert not [key for row in result["threshold_sweep"] for key in row if "recall" in key]
    assert result["learning_curve"][0]["valid_metric"] == "ndcg@10"  # stage 1: the drafter's, by valid_metric


def test_specgrpp_end_to_end(specgrpp_run):
    result, checkpoint_path = specgrpp_run
    for split in ("valid", "test"):
        assert result[split]["overall"]["n_cases"] > 0
        assert result[split]["in_sample"]["n_cases"] > 0 and result[split]["unseen"]["n_cases"] > 0
        assert result[split]["overall"]["n_cases"] == (result[split]["in_sample"]["n_cases"]
                                                       + result[split]["unseen"]["n_cases"])
        stats = result[split]["extra"]
        # γ = −100 accepts every draft: K = 10 accepted after the first round of δ = 10 drafts
        assert stats["acceptance_rate"] == 1.0 and stats["mean_rounds"] == 1.0
        assert 0.0 < stats["unseen_share"] < 1.0 and stats["users_per_s"] > 0
    checkpoint = compat.load_checkpoint(checkpoint_path)
    assert checkpoint["epoch"] in (0, 1)  # stage 1 or stage 2, whichever validated best
    # stage 2 ran: its baseline (stage 1's best weights, epoch 0) is saved with the item tower on, as is every epoch
    # that beats it, so the checkpoint holds the item tower either way
    state = checkpoint["state_dict"]
    assert bool(state["item_tower_active"])
    # the tower is the stage-1 encoder: the same weights as the saved encoder's for the baseline, others after an
    # epoch of stage 2
    pairs = [(f"item_tower.encoder.{key[len('t5.'):]}", key) for key in state
             if key.startswith("t5.enc") or key == "t5.embedding.weight"]
    pairs += [(f"item_tower.{key}", key) for key in state if key.startswith("projection.")]
    assert len(pairs) > 10
    tower_is_encoder = all(torch.equal(state[tower], state[own]) for tower, own in pairs)
    assert tower_is_encoder == (checkpoint["epoch"] == 0)
    other = checkpoint["other_parameter"]
    assert other["item_tokens"][0] == "[PAD]"
    assert len(other["item_tokens"]) == len(checkpoint["state_dict"]["item2codes"])
    assert torch.equal(other["tokenizer_state"]["codes"], checkpoint["state_dict"]["item2codes"])
    # n_params counts the trainable weights as RecBole does; n_params_all adds exactly the frozen item tower
    tower = sum(value.numel() for key, value in state.items() if key.startswith("item_tower."))
    assert tower > 0 and result["n_params_all"] - result["n_params"] == tower


def test_evaluation_workers_give_the_results_of_one_batch_at_a_time(specgrpp_run, run_dir):
    """``eval_workers: 2`` (each worker on the one torch thread of these tests): the batches run in worker threads,
    and the test result and a γ grid's per-row values are exactly those of one batch at a time in the caller."""
    _, checkpoint_path = specgrpp_run
    _, trainer, valid_data, test_data = load_benchmark_script("bench_gamma_sweep").load_trained(
        checkpoint_path, {"eval_batch_size": 16, "show_progress": False, "state": "ERROR"})
    assert len(test_data) >= 4 and len(valid_data) >= 4
    model, ran_in = trainer.model, []
    predict, recommend_thresholds = model.full_sort_predict, model.recommend_thresholds
    model.full_sort_predict = lambda interaction: ran_in.append(threading.current_thread()) or predict(interaction)
    model.recommend_thresholds = lambda *args: ran_in.append(threading.current_thread()) or recommend_thresholds(*args)
    grid = [Thresholds(-100.0, -100.0), Thresholds(-2.0, -2.0), Thresholds(-2.0, -2.0, 1.0, -4.0)]
    results, rows, values = {}, {}, {}
    for workers in (1, 2):
        trainer.eval_workers = workers
        ran_in.clear()
        results[workers] = trainer.evaluate(test_data, load_best_model=False)
        rows[workers], values[workers] = sweep_with_row_values(trainer, valid_data, grid, "recall@10")
        workers_used = {thread for thread in ran_in if thread is not threading.current_thread()}
        assert len(workers_used) == (0 if workers == 1 else 4)  # two for each of the two passes
    speed = "users_per_s"
    assert {k: v for k, v in results[2].items() if k != speed} == {k: v for k, v in results[1].items() if k != speed}
    assert results[2]["n_cases"] == results[1]["n_cases"] > 0
    assert [{k: v for k, v in row.items() if k != speed} for row in rows[2]] == \
        [{k: v for k, v in row.items() if k != speed} for row in rows[1]]
    assert torch.equal(values[2], values[1]) and values[1].shape[1] == rows[1][0]["n_cases"]


def test_stage2_continues_a_trained_specgrpp_from_exactly_its_weights(specgrpp_run, tmp_path, ml100k_slice,
                                                                      session_cache, monkeypatch):
    """init_checkpoint = a SpecGR++ run's checkpoint, no stage-1 epoch, one more stage-2 epoch (the ML-1M
    SpecGRPP_floor recipe): the run's curve opens with exactly the source's validation result."""
    source, checkpoint_path = specgrpp_run
    config = {"model": "SpecGRPP", "dataset": "ml-100k", "data_path": ml100k_slice, "cache_dir": session_cache,
              "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1, "specgrpp_pretrain_epochs": 0,
              "specgrpp_finetune_epochs": 1, "init_checkpoint": checkpoint_path, "state": "ERROR",
              "show_progress": False, "train_batch_size": 512, "eval_batch_size": 512, "seed": 2020,
              "specgr_threshold": -100.0, **NO_GRID, **TINY_T5, **FAST_TOKENIZER, **FAST_RUN}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])
    read = []  # the files read by the trainer and the model: the init checkpoint once

    def counted(path, *args, **kwargs):
        read.append(str(path))
        return compat.load_checkpoint(path, *args, **kwargs)

    for module in ("recbole_specgr.trainer.inductive_trainer", "recbole_specgr.model.sequential_recommender.specgrpp"):
        monkeypatch.setattr(f"{module}.load_checkpoint", counted)
    result = objective_function(config)
    assert read.count(checkpoint_path) == 1
    start, *finetune = result["learning_curve"]
    assert start["stage"] == "init_checkpoint" and [c["stage"] for c in finetune] == ["finetune"]
    for subset in ("overall", "in_sample", "unseen"):  # the source's selected weights, every one of them
        assert start["valid_speculative"][subset] == source["valid"][subset]
    assert result["valid"]["overall"]["recall@10"] >= source["valid"]["overall"]["recall@10"]  # kept only if better


def test_specgraux_end_to_end_trains_its_components(small_config):
    tiny_unisrec = {"n_layers": 1, "n_heads": 2, "hidden_size": 16, "inner_size": 32, "n_exps": 2}
    config = {**small_config, "model": "SpecGRAux", "dataset": "ml-100k", "specgr_threshold": -100.0,
              "specgr_aux_verifier_config": {**TINY_T5, "num_beams": 10}, "specgr_aux_drafter_config": tiny_unisrec,
              **FAST_TOKENIZER, **FAST_RUN}
    result = objective_function(config)
    for split in ("valid", "test"):
        assert result[split]["in_sample"]["n_cases"] > 0 and result[split]["unseen"]["n_cases"] > 0
        assert result[split]["extra"]["acceptance_rate"] == 1.0 and result[split]["extra"]["unseen_share"] > 0
    saved = sorted(p.name.split("-")[0] for p in Path(small_config["checkpoint_dir"]).glob("*.pth"))
    assert saved == ["SpecGRAux", "TIGER", "UniSRec"]
    checkpoint = compat.load_checkpoint(next(Path(small_config["checkpoint_dir"]).glob("SpecGRAux-*.pth")))
    keys = checkpoint["state_dict"].keys()
    assert any(k.startswith("verifier.t5.") for k in keys) and any(k.startswith("drafter.moe_adaptor.") for k in keys)


def test_specgraux_component_gets_the_users_shared_keys_and_nothing_of_the_composition(tmp_path):
    from recbole_specgr.model.sequential_recommender.specgraux import component_config

    user = {"data_path": str(tmp_path), "epochs": 3, "learning_rate": 0.01, "rqvae_codebook_size": 8,
            "cold_start_items": "release_year > 1990", "init_checkpoint": "saved/TIGER-x.pth",
            "specgr_threshold": -3.0}
    composition = Config(model="SpecGRAux", dataset="ml-100k", config_dict=user)
    drafter = component_config(composition, "UniSRec", {"n_layers": 1})
    assert (drafter["epochs"], drafter["learning_rate"], drafter["rqvae_codebook_size"]) == (3, 0.01, 8)
    assert drafter["cold_start_items"] == "release_year > 1990" and drafter["n_layers"] == 1
    assert drafter["init_checkpoint"] is None  # names the composition's weights, not the drafter's
    assert drafter["specgr_threshold"] is None


def test_specgraux_component_overrides_are_not_outranked_by_the_command_line(tmp_path, monkeypatch):
    """The component's Config does not read sys.argv again: the run's command line reached the component through
    the composition's shared keys only, and ``specgr_aux_<role>_config`` is what sets its model keys."""
    from recbole_specgr.model.sequential_recommender.specgraux import component_config

    monkeypatch.setattr("sys.argv", ["run_recbole_specgr.py", "--epochs=2"])
    composition = Config(model="SpecGRAux", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    # (the composition refuses --n_layers itself: test_specgraux_refuses_a_components_model_key_set_on_the_composition)
    monkeypatch.setattr("sys.argv", ["run_recbole_specgr.py", "--n_layers=3", "--epochs=2"])
    drafter = component_config(composition, "UniSRec", {"n_layers": 1})
    assert drafter["n_layers"] == 1  # the override, not the command line's 3
    assert drafter["epochs"] == 2  # a shared key of the command line, passed on


@pytest.mark.parametrize("key, value, roles", [("hidden_size", 48, ["verifier", "drafter"]),
                                               ("n_layers_enc", 1, ["verifier"]), ("n_exps", 2, ["drafter"])])
def test_specgraux_refuses_a_components_model_key_set_on_the_composition(tmp_path, key, value, roles):
    """Such a key would reach no component (they take their model keys from specgr_aux_<role>_config only); it is
    refused when the Config is built, before any dataset or earlier model of a comparison."""
    with pytest.raises(ValueError) as err:
        Config(model="SpecGRAux", dataset="ml-100k", config_dict={"data_path": str(tmp_path), key: value})
    message = str(err.value)
    assert message.startswith(f"{key}: ")
    assert [role for role in ("verifier", "drafter") if f"specgr_aux_{role}_config" in message] == roles
    Config(model="SpecGRAux", dataset="ml-100k",  # shared and own keys pass, and a component's key in its override
           config_dict={"data_path": str(tmp_path), "epochs": 2, "num_beams": 60,
                        "specgr_aux_verifier_config": {"n_layers_enc": 1}})


def test_specgraux_loads_component_checkpoints(small_config, specgrpp_run, monkeypatch):
    """A SpecGR++ checkpoint can serve as the verifier (and as the drafter) of SpecGR_Aux: both components hold
    exactly its weights, and nothing is trained."""
    from recbole_specgr.model.sequential_recommender.specgraux import SpecGRAux

    _, checkpoint_path = specgrpp_run
    built = []  # the composition(s) the run builds
    init = SpecGRAux.__init__

    def recorded(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(SpecGRAux, "__init__", recorded)
    config = {**small_config, "model": "SpecGRAux", "dataset": "ml-100k", **FAST_TOKENIZER, **FAST_RUN,
              "specgr_aux_verifier_checkpoint": checkpoint_path, "specgr_aux_drafter_checkpoint": checkpoint_path}
    result = objective_function(config)
    assert result["test"]["overall"]["n_cases"] > 0 and "acceptance_rate" in result["test"]["extra"]
    assert not list(Path(small_config["checkpoint_dir"]).glob("TIGER-*.pth"))  # nothing trained
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    composition, = built
    for component in (composition.verifier, composition.drafter):
        state = component.state_dict()
        assert set(state) == set(saved)
        assert all(torch.equal(value.cpu(), saved[name]) for name, value in state.items()), \
            [name for name, value in state.items() if not torch.equal(value.cpu(), saved[name])][:3]


# ---------------------------------------------------------------- items added after training
TOY_STORY = "Toy Story. 1995. Animation Children's Comedy"  # ml-100k item 1's text (title. year. genres)


def test_new_item_is_drafted_scored_and_recommended(specgrpp_run, monkeypatch):
    _, checkpoint_path = specgrpp_run
    model = new_items.load_model(checkpoint_path, specgr_threshold=-math.inf, specgr_draft_size=5000)
    n = model.n_items
    twin = model.item_tokens.index("1")
    new_id, = new_items.add_new_items(model, ["toy-story-2"], [TOY_STORY]).tolist()
    assert new_id == n and model.n_items == n + 1 and not model.seen_item_mask[new_id]
    assert model.item_tokens[new_id] == "toy-story-2"
    # same text -> same quantiser prefix, a collision digit of its own
    assert torch.equal(model.item2codes[new_id, :-1], model.item2codes[twin, :-1])
    assert model.item2codes[new_id, -1] != model.item2codes[twin, -1]

    history = ["1", "2", "3"]
    seq = torch.tensor([[model.item_tokens.index(h) for h in history]])
    recommender = model.speculative_recommender()
    with torch.no_grad():
        new_vector = model.item_vectors(torch.tensor([new_id]))[0]
        # unit vectors, the index's encoded among all items in chunks: equal to float rounding
        assert torch.allclose(recommender.draft_index.item_vectors[new_id], new_vector, rtol=0, atol=1e-6)
        out = recommender.recommend(seq, torch.tensor([3]))
        drafted = out.drafts[0, 0] == new_id  # δ covers the catalog: every item is drafted in round 0
        assert drafted.sum() == 1
        log_probs = model.digit_log_probs(model.encode(seq, torch.tensor([3])), torch.tensor([[new_id]]))[0, 0]
        assert out.draft_scores[0, 0][drafted].item() == pytest.approx(log_probs[:-1].mean().item(), abs=1e-5)

    # when the verifier is sure of the new item, it comes first
    original = model.digit_log_probs

    def sure_of_new_item(enc, cand_items):
        return original(enc, cand_items).masked_fill(cand_items[..., None] == new_id, 0.0)

    monkeypatch.setattr(model, "digit_log_probs", sure_of_new_item)
    top = new_items.recommend(model, history, topk=5)
    assert top[0] == ("toy-story-2", 0.0, new_id) and len(top) == 5
    assert [s for _, s, _ in top] == sorted((s for _, s, _ in top), reverse=True)
    listed = max(model.config["topk"])  # K: speculative inference lists no more
    assert len(new_items.recommend(model, history, topk=listed)) == listed
    with pytest.raises(ValueError, match=rf"^--topk: expected at most {listed}, the K items this model's speculative "
                                         rf"inference lists \(max of its config's topk\), got {listed + 1}$"):
        new_items.recommend(model, history, topk=listed + 1)


def test_new_items_cli(specgrpp_run, tmp_path, capsys, exits_with_error):
    _, checkpoint_path = specgrpp_run
    items = tmp_path / "new.tsv"
    items.write_text(f"item_id\ttext\nnew-1\t{TOY_STORY}\nnew-2\tA brand new film. 1999. Drama\n")
    new_items.main(["--checkpoint", checkpoint_path, "--items", str(items), "--history", "1 new-1 50", "--topk", "7"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "rank\titem_id\tscore\tnew" and len(lines) == 8
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 8))
    assert all(r[3] == ("new" if r[1] in ("new-1", "new-2") else "") for r in rows)

    new_items.main(["--checkpoint", checkpoint_path, "--history", "1 50", "--topk", "3"])  # no new items: optional
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and not [line for line in lines[1:] if line.endswith("new")]

    cli = ["--checkpoint", checkpoint_path, "--items", str(items), "--history"]
    items.write_text("item_id\ttext\nnew-1\tfine\nno tab here\n")
    exits_with_error(f"{items}:3: expected 'item_id<TAB>text'", new_items.main, [*cli, "1"])
    items.write_text("id\ttext\nnew-1\tfine\n")
    exits_with_error(f"{items}:1: expected the header", new_items.main, [*cli, "1"])
    items.write_text("item_id\ttext\n1\talready there\n")
    exits_with_error("already in the model", new_items.main, [*cli, "1"])
    items.write_text("item_id\ttext\nnew-1\tfine\n")
    exits_with_error("unknown", new_items.main, [*cli, "1 nope"])


# ---------------------------------------------------------------- γ chosen on validation
class ScriptedTrainer:
    """The trainer side ThresholdTuningMixin relies on."""

    def __init__(self, config, model):
        self.model, self.valid_metric, self.logger = model, config["valid_metric"].lower(), logging.getLogger()
        self.topk, self.loaded, self.saved_model_file = config["topk"], 0, "best.pth"
        self.metrics = requested_metrics(config.get("metrics"))

    def load_model(self, path):
        assert path == "best.pth"
        self.loaded += 1


def scripted_tuner(grid, metric=None, results=None, monkeypatch=None, unseen_grid=None, **extra):
    """A tuner whose validation pass returns ``results[γ]`` (or ``results[(γ, γ_u)]`` with an ``unseen_grid``, or
    ``results[(γ, γ_u, α, v_u)]`` with ``specgr_draft_weight_grid`` in ``extra``, ``results[(γ, γ_u, α, v_u, β)]``
    with ``specgr_text_weight_grid`` too) for each entry of the grid."""
    from recbole_specgr.trainer import threshold_tuning

    class Tuner(threshold_tuning.ThresholdTuningMixin, ScriptedTrainer):
        pass

    if monkeypatch is not None:
        def sweep(trainer, valid_data, thresholds):
            joint = "specgr_draft_weight_grid" in extra
            width = 6 if "specgr_novelty_weight_grid" in extra else 5 if "specgr_text_weight_grid" in extra else 4
            return [{**setting_keys(t), "acceptance_rate": 0.5, "mean_rounds": 1.0, "recall@50": 0.0,
                     "in_sample/recall@50": 0.0,
                     **results[tuple(t[:width]) if joint else t.seen if unseen_grid is None else tuple(t[:2])]}
                    for t in thresholds]

        monkeypatch.setattr(threshold_tuning, "sweep_with_row_values",
                            lambda trainer, data, thresholds, row_metric=None: (sweep(trainer, data, thresholds), None))
    config = {"specgr_threshold_grid": grid, "specgr_unseen_threshold_grid": unseen_grid, "specgr_threshold": -1.5,
              "specgr_draft_weight_grid": None, "specgr_unseen_score_grid": None, "specgr_draft_weight": None,
              "specgr_unseen_score": None, "specgr_text_weight_grid": None, "specgr_text_weight": None,
              "specgr_novelty_weight_grid": None, "specgr_novelty_weight": None,
              "specgr_threshold_tiebreak": None, "specgr_threshold_floors": None, "specgr_threshold_metric": metric,
              "valid_metric": "NDCG@10",
              "topk": [10, 50], **extra}
    return Tuner(config, make_model(seed=1))


def test_threshold_tuning_keeps_the_best_gamma_and_its_validation_result(monkeypatch):
    results = {-1.0: {"ndcg@10": 0.3, "unseen/recall@50": 0.0}, -2.0: {"ndcg@10": 0.2, "unseen/recall@50": 0.1},
               -3.0: {"ndcg@10": 0.1, "unseen/recall@50": 0.1}}
    tuner = scripted_tuner([-1.0, -2.0, -3.0], "unseen/recall@50", results, monkeypatch)
    best = tuner.tune_threshold(valid_data=[1], load_best_model=True)
    assert tuner.model.specgr_threshold == -2.0  # the first of the two best by unseen/recall@50
    assert best["ndcg@10"] == 0.2 and tuner.best_valid_score == 0.2 and tuner.loaded == 1
    assert "specgr_threshold" not in best
    assert [row["specgr_threshold"] for row in tuner.threshold_sweep] == [-1.0, -2.0, -3.0]
    by_default_metric = scripted_tuner([-1.0, -2.0], None, results, monkeypatch)
    by_default_metric.tune_threshold(valid_data=[1])
    assert by_default_metric.model.specgr_threshold == -1.0  # valid_metric ndcg@10
    assert by_default_metric.model.specgr_unseen_threshold == -1.0  # no γ_u grid: γ_u = γ (the paper)
    no_grid = scripted_tuner(None)
    assert no_grid.tune_threshold(valid_data=[1]) is None
    assert no_grid.model.specgr_threshold == model_defaults("SpecGRPP")["specgr_threshold"]


def test_threshold_tuning_tries_every_gamma_with_every_unseen_gamma(monkeypatch):
    results = {(g, u): {"ndcg@10": 0.0, "unseen/recall@50": 0.0} for g in (-1.0, -2.0) for u in (-1.0, -6.0)}
    results[(-2.0, -6.0)]["unseen/recall@50"] = 0.2
    tuner = scripted_tuner([-1.0, -2.0], "unseen/recall@50", results, monkeypatch, unseen_grid=[-1.0, -6.0])
    best = tuner.tune_threshold(valid_data=[1])
    assert [(row["specgr_threshold"], row["specgr_unseen_threshold"]) for row in tuner.threshold_sweep] == [
        (-1.0, -1.0), (-1.0, -6.0), (-2.0, -1.0), (-2.0, -6.0)]
    assert (tuner.model.specgr_threshold, tuner.model.specgr_unseen_threshold) == (-2.0, -6.0)
    assert "specgr_unseen_threshold" not in best and best["unseen/recall@50"] == 0.2
    only_unseen = scripted_tuner(None, "unseen/recall@50", {(-1.5, -6.0): {"ndcg@10": 0.0, "unseen/recall@50": 0.1}},
                                 monkeypatch, unseen_grid=[-6.0])
    only_unseen.tune_threshold(valid_data=[1])  # no γ grid: γ stays specgr_threshold
    assert (only_unseen.model.specgr_threshold, only_unseen.model.specgr_unseen_threshold) == (-1.5, -6.0)


def test_threshold_tuning_tries_every_draft_weight_with_every_unseen_score(monkeypatch):
    grid = [(g, g, a, v) for g in (-1.0, -2.0) for a, v in ((0.0, -1.75), (2.0, -2.0), (2.0, -1.5))]
    results = {setting: {"ndcg@10": 0.0, "unseen/recall@50": 0.0} for setting in grid}
    results[(-2.0, -2.0, 2.0, -1.5)]["ndcg@10"] = 0.4
    tuner = scripted_tuner([-1.0, -2.0], None, results, monkeypatch, specgr_draft_weight_grid=[0, 2],
                           specgr_unseen_score_grid=[-2.0, -1.5])
    best = tuner.tune_threshold(valid_data=[1])
    # α = 0 (the paper's ranking) once per γ, v_u only with α > 0
    assert [tuple(row[k] for k in ("specgr_threshold", "specgr_unseen_threshold", "specgr_draft_weight",
                                   "specgr_unseen_score")) for row in tuner.threshold_sweep] == grid
    assert tuner.model.specgr_setting == (-2.0, -2.0, 2.0, -1.5, 0.0, 0.0)
    assert "specgr_draft_weight" not in best and best["ndcg@10"] == 0.4
    with pytest.raises(ValueError, match=r"specgr_draft_weight_grid: expected finite numbers >= 0"):
        scripted_tuner([-1.0], specgr_draft_weight_grid=[-1.0])


def test_threshold_tuning_tries_every_text_weight_with_every_joint_setting(monkeypatch):
    grid = [(-1.0, -1.0, 0.0, -1.75, 0.0)] + [(-1.0, -1.0, 2.0, v, b) for v in (-2.0, -1.5) for b in (0.0, 1.5)]
    results = {setting: {"ndcg@10": 0.0, "unseen/recall@50": 0.0} for setting in grid}
    results[(-1.0, -1.0, 2.0, -2.0, 1.5)]["ndcg@10"] = 0.4
    tuner = scripted_tuner([-1.0], None, results, monkeypatch, specgr_draft_weight_grid=[0, 2],
                           specgr_unseen_score_grid=[-2.0, -1.5], specgr_text_weight_grid=[0, 1.5])
    tuner.tune_threshold(valid_data=[1])
    # β only with α > 0 (the paper's ranking has no text prior), with every v_u
    assert [tuple(row[k] for k in setting_keys(Thresholds(0, 0)))[:5] for row in tuner.threshold_sweep] == grid
    assert tuner.model.specgr_setting == (-1.0, -1.0, 2.0, -2.0, 1.5, 0.0)
    with pytest.raises(ValueError, match=r"specgr_text_weight_grid: expected finite numbers >= 0"):
        scripted_tuner([-1.0], specgr_text_weight_grid=[-1.0])


def test_threshold_tuning_tries_every_novelty_weight_with_every_joint_setting(monkeypatch):
    grid = [(-1.0, -1.0, 0.0, -1.75, 0.0, 0.0)] + [(-1.0, -1.0, 2.0, -2.0, b, e) for b in (0.0, 1.5)
                                                  for e in (0.0, 16.0)]
    results = {setting: {"ndcg@10": 0.0, "unseen/recall@50": 0.0} for setting in grid}
    results[(-1.0, -1.0, 2.0, -2.0, 0.0, 16.0)]["ndcg@10"] = 0.4
    tuner = scripted_tuner([-1.0], None, results, monkeypatch, specgr_draft_weight_grid=[0, 2],
                           specgr_unseen_score_grid=[-2.0], specgr_text_weight_grid=[0, 1.5],
                           specgr_novelty_weight_grid=[0, 16])
    tuner.tune_threshold(valid_data=[1])
    # η only with α > 0, with every β
    assert [tuple(row[k] for k in setting_keys(Thresholds(0, 0))) for row in tuner.threshold_sweep] == grid
    assert tuner.model.specgr_setting == (-1.0, -1.0, 2.0, -2.0, 0.0, 16.0)
    with pytest.raises(ValueError, match=r"specgr_novelty_weight_grid: expected finite numbers >= 0"):
        scripted_tuner([-1.0], specgr_novelty_weight_grid=[-1.0])
    with pytest.raises(ValueError, match=r"specgr_novelty_weight_grid: expected finite numbers >= 0, got \[0, inf\]"):
        scripted_tuner([-1.0], specgr_novelty_weight_grid=[0, float("inf")])


def test_threshold_tuning_rejects_bad_settings():
    with pytest.raises(ValueError, match="specgr_threshold_grid"):
        scripted_tuner([])
    with pytest.raises(ValueError, match="specgr_threshold_grid"):
        scripted_tuner(["high"])
    with pytest.raises(ValueError, match=r"specgr_threshold_metric 'unseen/recall@20': not computed with metrics \['recall', 'ndcg'\] "
                                         r"and topk \[10, 50\]; expected one of \['recall@10', 'recall@50', 'ndcg@10'"):
        scripted_tuner([-1.0], metric="unseen/recall@20")
    with pytest.raises(ValueError, match="specgr_unseen_threshold_grid: expected a non-empty list of numbers"):
        scripted_tuner([-1.0], unseen_grid=[True])
    with pytest.raises(ValueError, match=r"^specgr_threshold_tiebreak 'mrr@10': not computed"):
        scripted_tuner([-1.0], specgr_threshold_tiebreak="mrr@10")


def test_one_standard_error_rule_by_hand():
    from recbole_specgr.trainer.threshold_tuning import select_setting

    # per-row hits of the selection metric (recall@50) over 4 validation rows, for 3 settings
    values = torch.tensor([[1.0, 1.0, 1.0, 0.0],   # 0.75
                           [1.0, 1.0, 0.0, 0.0],   # 0.50: differs from the best on one row of 4
                           [0.0, 0.0, 0.0, 1.0]])  # 0.25
    rows = [{"recall@50": 0.75, "ndcg@10": 0.1}, {"recall@50": 0.5, "ndcg@10": 0.3}, {"recall@50": 0.25, "ndcg@10": 0.9}]
    assert select_setting(rows, "recall@50") == 0
    # setting 1 vs 0: differences (0, 0, 1, 0): mean 0.25, sample std 0.5, standard error 0.25 -> tied, better ndcg@10
    # setting 2 vs 0: differences (1, 1, 1, -1): mean 0.5, std 1.0, standard error 0.5 -> tied as well, best ndcg@10
    assert select_setting(rows, "recall@50", "ndcg@10", values) == 2
    values[2] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # now 0 vs 2: (1, 1, 1, 0): mean 0.75 > standard error 0.25
    rows[2]["recall@50"] = 0.0
    assert select_setting(rows, "recall@50", "ndcg@10", values) == 1
    assert select_setting(rows, "recall@50", None, values) == 0  # no tie-break metric: the best alone


def test_floors_leave_out_settings_below_a_minimum():
    from recbole_specgr.trainer.threshold_tuning import select_setting

    rows = [{"recall@50": 0.52, "unseen/recall@50": 0.02, "ndcg@10": 0.1},
            {"recall@50": 0.51, "unseen/recall@50": 0.06, "ndcg@10": 0.1},
            {"recall@50": 0.50, "unseen/recall@50": 0.07, "ndcg@10": 0.3},
            {"recall@50": 0.40, "unseen/recall@50": 0.20, "ndcg@10": 0.1}]
    assert select_setting(rows, "recall@50") == 0
    assert select_setting(rows, "recall@50", floors={"unseen/recall@50": 0.055}) == 1  # the best of rows 1-3
    assert select_setting(rows, "recall@50", floors={"unseen/recall@50": 0.07}) == 2  # a minimum is reached at equality
    assert select_setting(rows, "recall@50", floors={"unseen/recall@50": 0.5}) == 0  # none reaches it: all compete
    # per-row hits of recall@50 over 2 validation rows; the best candidate is row 1. Differences to it: row 2 (1, −1),
    # mean 0 <= standard error 1.0; row 3 (1, 0), mean 0.5 <= 0.5: both tied, row 2 wins by ndcg@10. Row 0 (0, −1)
    # would be tied too and wins by ndcg@10 without the floor: below it, it stays out
    values = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    rows[0]["ndcg@10"] = 0.9
    assert select_setting(rows, "recall@50", "ndcg@10", values, floors={"unseen/recall@50": 0.055}) == 2


def test_threshold_tuning_applies_its_floors_and_warns_when_none_reaches_them(monkeypatch, caplog):
    results = {-1.0: {"ndcg@10": 0.3, "recall@50": 0.5, "unseen/recall@50": 0.0},
               -2.0: {"ndcg@10": 0.2, "recall@50": 0.4, "unseen/recall@50": 0.1}}

    def tuned(floors):
        tuner = scripted_tuner([-1.0, -2.0], "ndcg@10", results, monkeypatch, specgr_threshold_floors=floors)
        tuner.tune_threshold(valid_data=[1])
        return tuner

    assert tuned(None).model.specgr_threshold == -1.0
    floored = tuned({"Unseen/Recall@50": 0.05})
    assert floored.model.specgr_threshold == -2.0 and floored.best_valid_score == 0.2
    assert [row.get("selected", False) for row in floored.threshold_sweep] == [False, True]
    with caplog.at_level(logging.WARNING):
        assert tuned({"unseen/recall@50": 0.5}).model.specgr_threshold == -1.0
    assert "no setting of the grid reaches specgr_threshold_floors" in caplog.text
    # a checkpoint's validation score: its best setting's, minus 1 when its grid reaches no floor (ranks below any
    # checkpoint that reaches them)
    reached = scripted_tuner([-1.0, -2.0], "ndcg@10", results, monkeypatch,
                             specgr_threshold_floors={"unseen/recall@50": 0.05}).sweep_validation([1])
    missed = scripted_tuner([-1.0, -2.0], "ndcg@10", results, monkeypatch,
                            specgr_threshold_floors={"unseen/recall@50": 0.5}).sweep_validation([1])
    assert reached[0] == pytest.approx(0.2) and missed[0] == pytest.approx(0.3 - 1.0)
    assert missed[1]["ndcg@10"] == 0.3  # the result itself is the chosen setting's
    for bad, message in (([0.05], "expected a mapping of metric keys"), ({"unseen/mrr@10": 0.1}, "expected keys among"),
                         ({"unseen/recall@50": "high"}, "expected a number for 'unseen/recall@50'"),
                         ({"unseen/recall@50": 0.1, "Unseen/Recall@50": 0.2}, "'Unseen/Recall@50' is given twice")):
        with pytest.raises(ValueError, match=rf"specgr_threshold_floors: {message}"):
            scripted_tuner([-1.0], specgr_threshold_floors=bad)


def test_threshold_chosen_on_validation_is_used_on_test(small_config, specgrpp_run):
    _, checkpoint_path = specgrpp_run
    config = {**small_config, "model": "SpecGRAux", "dataset": "ml-100k", **FAST_TOKENIZER, **FAST_RUN,
              "specgr_aux_verifier_checkpoint": checkpoint_path, "specgr_aux_drafter_checkpoint": checkpoint_path,
              "specgr_threshold_grid": [0.0, -100.0], "specgr_threshold_metric": "recall@10"}
    result = objective_function(config)
    sweep = {row["specgr_threshold"]: row for row in result["threshold_sweep"]}
    assert list(sweep) == [0.0, -100.0]
    # V = mean log-probability <= 0: γ = 0 accepts nothing (beam fill only, so no unseen item), γ = −100 everything
    assert sweep[0.0]["acceptance_rate"] == 0.0 and sweep[0.0]["unseen_share"] == 0.0
    assert sweep[-100.0]["acceptance_rate"] == 1.0
    chosen = result["specgr_threshold"]
    assert sweep[chosen]["recall@10"] == max(row["recall@10"] for row in sweep.values())
    assert result["valid"]["overall"]["recall@10"] == sweep[chosen]["recall@10"]
    assert result["test"]["extra"]["acceptance_rate"] == sweep[chosen]["acceptance_rate"]  # test ran at that γ


def test_checkpoint_keeps_the_text_prior_centre_for_a_model_rebuilt_without_its_dataset(specgrpp_run):
    _, checkpoint_path = specgrpp_run
    center = compat.load_checkpoint(checkpoint_path)["other_parameter"]["text_prior_center"]
    assert isinstance(center, float) and center != 0.0  # c̄ from the training rows
    rebuilt = new_items.load_model(checkpoint_path)  # no dataset: c̄ would otherwise be 0
    assert rebuilt.text_prior_center == center
    assert rebuilt.speculative_recommender().text_prior.center == center


def test_the_setting_chosen_on_validation_is_written_into_the_checkpoint(specgrpp_run, monkeypatch, tmp_path):
    _, trained = specgrpp_run
    results = {-1.0: {"ndcg@10": 0.1, "unseen/recall@50": 0.0}, -2.5: {"ndcg@10": 0.3, "unseen/recall@50": 0.1}}
    tuner = scripted_tuner([-1.0, -2.5], results=results, monkeypatch=monkeypatch)
    tuner.saved_model_file = str(tmp_path / "run.pth")
    Path(tuner.saved_model_file).write_bytes(Path(trained).read_bytes())
    tuner.save_chosen_setting()  # nothing chosen yet: the file stays as it was
    assert Path(tuner.saved_model_file).read_bytes() == Path(trained).read_bytes()
    assert new_items.load_model(tuner.saved_model_file).specgr_threshold == -100.0  # the run's configured γ

    tuner.tune_threshold(valid_data=[object()])
    tuner.save_chosen_setting()
    before, after = compat.load_checkpoint(trained), compat.load_checkpoint(tuner.saved_model_file)
    assert tuner.model.specgr_threshold == -2.5
    assert after["config"] == {**before["config"], **setting_keys(tuner.model.specgr_setting),
                               "specgr_rank_all_unseen": True, "specgr_novelty_last_n": 3}
    assert after["state_dict"].keys() == before["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert after["other_parameter"]["text_prior_center"] == before["other_parameter"]["text_prior_center"]
    assert new_items.load_model(tuner.saved_model_file).specgr_setting == tuner.model.specgr_setting
    copy = str(tmp_path / "retuned.pth")  # benchmarks/retune_specgr.py: the setting into a copy, the run's file kept
    Path(tuner.saved_model_file).write_bytes(Path(trained).read_bytes())
    tuner.save_chosen_setting(copy)
    assert Path(tuner.saved_model_file).read_bytes() == Path(trained).read_bytes()
    assert new_items.load_model(copy).specgr_setting == tuner.model.specgr_setting
    # a checkpoint saved before specgr_rank_all_unseen existed: rebuilt as it was run, until a setting chosen with
    # the key on is written into it
    older = compat.load_checkpoint(trained)
    del older["config"]["specgr_rank_all_unseen"]
    torch.save(older, tuner.saved_model_file)
    assert new_items.load_model(tuner.saved_model_file).speculative_recommender().rank_all_unseen is False
    tuner.save_chosen_setting(copy)
    assert new_items.load_model(copy).speculative_recommender().rank_all_unseen is True


def test_added_items_need_their_text_and_are_drafted_from_it():
    model = make_model(seed=0)
    with torch.no_grad():
        model.text_adapter.weight.normal_()  # trained W ≠ 0
    used = {tuple(row) for row in model.item2codes[1:].tolist()}
    free = next(code for code in ((a, b, c) for a in range(C) for b in range(C) for c in range(C)) if code not in used)
    codes = torch.tensor([free])
    with pytest.raises(ValueError, match=r"text_emb: item_text_input needs \[1, 6\] text embeddings .* got None"):
        model.add_items(codes)
    assert model.n_items == N_ITEMS + 1  # nothing changed
    new = model.add_items(codes, text_emb=torch.ones(1, 6))
    assert new.tolist() == [N_ITEMS + 1] and not model.seen_item_mask[new].any()
    with torch.no_grad():
        vector = model.item_vectors(new)
        model.item_text_emb[new] = -1.0  # same semantic ID, other text: another drafter vector
        assert not torch.allclose(model.item_vectors(new), vector)


class _RunsOnUnpickle:
    """A crafted checkpoint payload: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_crafted_pickle_is_refused_without_running_it(tmp_path, exits_with_error):
    marker, crafted = tmp_path / "ran", tmp_path / "crafted.pth"
    torch.save({"config": {"model": "SpecGRPP"}, "state_dict": {}, "payload": _RunsOnUnpickle(marker)}, crafted)
    items = tmp_path / "new.tsv"
    items.write_text("item_id\ttext\nx1\tA new film. 1999. Drama\n")
    line = exits_with_error("refused to load, it holds pickled objects", new_items.main,
                            ["--checkpoint", str(crafted), "--items", str(items), "--history", "1"])
    assert line.startswith(f"error: {crafted}: refused to load")
    assert not marker.exists()


def test_validations_go_to_tensorboard_by_subset(run_dir):
    config = Config(model="SpecGRPP", dataset="ml-100k", config_dict={
        "checkpoint_dir": str(run_dir / "saved"), "state": "ERROR", **NO_GRID})
    trainer = SpecGRPPTrainer(config, make_model())
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

    trainer.tensorboard = Writer()
    trainer.learning_curve = [{"epoch": 0, "step": 7}]
    trainer._record_validation(0.5, {"recall@50": 0.5, "n_cases": 10, "in_sample/recall@50": 0.625,
                                     "unseen/recall@50": float("nan"), "acceptance_rate": 0.9})
    assert written == [("valid/overall/recall@50", 0.5, 7), ("valid/in_sample/recall@50", 0.625, 7)]
    assert trainer.learning_curve[0]["valid"]["extra"] == {"acceptance_rate": 0.9}
