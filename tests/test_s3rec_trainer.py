"""S3RecTrainer: pre-training then fine-tuning of RecBole's S3Rec in one fit, on a hand-built toy dataset."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.s3rec import S3Rec

from recbole_specgr.config import Config
from recbole_specgr.trainer.s3rec_trainer import S3RecTrainer

N_ITEMS, N_CLASSES, T = 7, 4, 20  # items 1..6; class tokens 1..3 (0 = padding)


def make_config(tmp_path, **overrides):
    config_dict = {
        "epochs": 2,
        "pretrain_epochs": 3,
        "hidden_size": 8,
        "inner_size": 16,
        "n_layers": 1,
        "checkpoint_dir": str(tmp_path),
        "device": "cpu",
        "use_gpu": False,
        "state": "ERROR",
    }
    config_dict.update(overrides)
    return Config(model="S3Rec", dataset="ml-100k", config_dict=config_dict)


def make_dataset():
    item_class = torch.tensor([[0, 0], [1, 0], [1, 2], [2, 0], [3, 0], [2, 3], [1, 3]])  # [n_items, 2] token_seq
    return SimpleNamespace(
        item_num=N_ITEMS,
        num=lambda field: {"item_id": N_ITEMS, "class": N_CLASSES}[field],
        get_item_feature=lambda: Interaction({"item_id": torch.arange(N_ITEMS), "class": item_class}),
    )


def make_batches():
    seqs = [[1, 2, 3], [2, 3, 4, 5], [4, 5], [1, 6, 2, 3], [5, 6]]
    item_seq = torch.zeros(len(seqs), T, dtype=torch.long)
    for row, seq in enumerate(seqs):
        item_seq[row, : len(seq)] = torch.tensor(seq)
    batch = Interaction(
        {
            "item_id_list": item_seq,
            "item_length": torch.tensor([len(s) for s in seqs]),
            "item_id": torch.tensor([4, 6, 6, 4, 1]),
        }
    )
    return [batch]


class Loader(list):
    """The two attributes of a RecBole dataloader that ``Trainer.fit`` reads, over a list of batches."""

    def __init__(self, batches, dataset):
        super().__init__(batches)
        self.dataset, self.shuffle = dataset, False


def build(run_dir, **overrides):
    config = make_config(run_dir, **overrides)
    torch.manual_seed(0)
    dataset = make_dataset()
    model = S3Rec(config, dataset)
    train_data = Loader(make_batches(), dataset)
    return config, model, train_data


def test_pretrain_then_finetune_in_one_fit(run_dir):
    config, model, train_data = build(run_dir)
    trainer = S3RecTrainer(config, model)
    pretrain_optimizer = trainer.optimizer
    feature_before = model.feature_embedding.weight.detach().clone()
    stages = []
    original = model.calculate_loss
    clocks = []  # the training clock at each step: pre-training counts as training time too
    model.calculate_loss = lambda inter: (stages.append(model.train_stage), clocks.append(trainer._clock),
                                          original(inter))[2]

    trainer.fit(train_data, valid_data=None, saved=False)

    assert stages == ["pretrain"] * 3 + ["finetune"] * 2  # one batch per epoch
    assert None not in clocks and len(set(clocks)) == 1  # started before pre-training, never restarted
    assert model.train_stage == "finetune"
    assert isinstance(model.loss_fct, nn.CrossEntropyLoss)
    assert trainer.optimizer is not pretrain_optimizer
    assert sorted(trainer.train_loss_dict) == [0, 1]  # the fine-tuning epochs
    # attribute embeddings are trained by the pre-training losses only
    assert not torch.equal(model.feature_embedding.weight, feature_before)


def test_finetune_only_without_pretrain_epochs(run_dir):
    config, model, train_data = build(run_dir, pretrain_epochs=0)
    trainer = S3RecTrainer(config, model)
    feature_before = model.feature_embedding.weight.detach().clone()
    trainer.fit(train_data, valid_data=None, saved=False)
    assert model.train_stage == "finetune"
    assert torch.equal(model.feature_embedding.weight, feature_before)
    scores = model.full_sort_predict(train_data[0])
    assert scores.shape == (5, N_ITEMS)  # the mask token is not an item


def test_bpr_finetune_loss_and_bad_stage(run_dir):
    from recbole.model.loss import BPRLoss

    config, model, train_data = build(run_dir, pretrain_epochs=0, epochs=0)
    config["loss_type"] = "BPR"
    trainer = S3RecTrainer(config, model)
    trainer.fit(train_data, valid_data=None, saved=False)
    assert isinstance(model.loss_fct, BPRLoss)
    assert trainer.tensorboard.all_writers is None  # closed by fit: no flushing thread outlives the run's folder
    model.train_stage = "warmup"
    with pytest.raises(ValueError, match="train_stage"):
        S3RecTrainer(config, model)


def test_a_trainer_that_fails_to_build_leaves_no_tensorboard_writer_open(run_dir, monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    opened = []

    def recording(logger):
        opened.append(real(logger))
        return opened[-1]

    real = recbole_trainer.get_tensorboard
    monkeypatch.setattr(recbole_trainer, "get_tensorboard", recording)
    config, model, _ = build(run_dir, pretrain_epochs=0, epochs=0)
    config["valid_metric"] = "MRR@3"  # not a metric the package evaluates: InductiveTrainer refuses it
    with pytest.raises(ValueError, match="valid_metric"):
        S3RecTrainer(config, model)
    assert len(opened) == 1 and opened[0].all_writers is None


def test_resume_checkpoint_continues_fine_tuning_with_its_restored_optimizer(run_dir):
    """RecBole's resume_checkpoint of a fine-tuning checkpoint: no pretraining, and the restored optimizer (Adam's
    moments, the schedule's position) is the one fine-tuning goes on with, not a new one."""
    config, model, train = build(run_dir, epochs=1, pretrain_epochs=1)
    first = S3RecTrainer(config, model)
    first.fit(train, None, saved=False)
    first._save_checkpoint(0, verbose=False)
    config, model, train = build(run_dir, epochs=2, pretrain_epochs=1)
    resumed = S3RecTrainer(config, model)
    resumed.resume_checkpoint(first.saved_model_file)
    restored = resumed.optimizer
    at_start = []
    train_epoch = resumed._train_epoch
    resumed._train_epoch = lambda *a, **k: at_start.append(resumed.optimizer) or train_epoch(*a, **k)
    resumed.fit(train, None, saved=False)
    assert at_start == [restored] and len(restored.state_dict()["state"]) > 0  # one fine-tuning epoch, no pretraining
