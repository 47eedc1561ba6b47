"""The training recipe (learning-rate schedule, gradient clipping, learning curve, last epoch validated) and the
history-exclusion evaluation option, on exact small cases."""

import math

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_specgr.config import Config
from recbole_specgr.data.dataset import InductiveSequentialDataset
from recbole_specgr.evaluation import EXCLUDED_ITEMS
from recbole_specgr.quick_start import objective_function
from recbole_specgr.trainer import InductiveTrainer
from recbole_specgr.trainer.schedule import attach_lr_scheduler, lr_multiplier, read_schedule


# ---------------------------------------------------------------- the schedule, step by step
@pytest.mark.parametrize("schedule, step, expected", [
    ("cosine", 0, 0.0), ("cosine", 5, 0.5), ("cosine", 10, 1.0),  # linear warmup over W = 10 steps
    ("cosine", 60, 0.5), ("cosine", 35, 0.5 * (1 + math.cos(math.pi / 4))), ("cosine", 110, 0.0),
    ("cosine", 500, 0.0),  # past T: stays at the floor
    ("linear", 35, 0.75), ("linear", 110, 0.0), ("constant", 5, 0.5), ("constant", 90, 1.0),
])
def test_lr_multiplier_at_given_steps(schedule, step, expected):
    assert lr_multiplier(step, 10, 110, schedule) == pytest.approx(expected, abs=1e-12)


def test_lr_multiplier_decays_to_the_floor():
    assert lr_multiplier(110, 10, 110, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_multiplier(60, 10, 110, "linear", min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_multiplier(3, 0, 10, "linear") == pytest.approx(0.7)  # no warmup


def test_scheduler_advances_once_per_optimizer_step():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.4)
    _, handle = attach_lr_scheduler(optimizer, "cosine", warmup_steps=2, total_steps=20)
    seen = []
    for _ in range(7):
        seen.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(2)
        optimizer.step()
    assert seen == pytest.approx([0.4 * lr_multiplier(s, 2, 20, "cosine") for s in range(7)])
    assert seen[:3] == pytest.approx([0.0, 0.2, 0.4])
    after_seven = optimizer.param_groups[0]["lr"]
    assert after_seven == pytest.approx(0.4 * lr_multiplier(7, 2, 20, "cosine"))
    # mid-decay, the next step would move the rate (step 8's multiplier differs from step 7's) ...
    assert abs(lr_multiplier(8, 2, 20, "cosine") - lr_multiplier(7, 2, 20, "cosine")) > 0.01
    handle.remove()
    optimizer.step()
    assert optimizer.param_groups[0]["lr"] == after_seven  # ... but a detached scheduler no longer steps


@pytest.mark.parametrize("key, value, message", [
    ("lr_scheduler", "step", "lr_scheduler: expected one of"),
    ("warmup_steps", -1, "warmup_steps: expected an int >= 0"),
    ("warmup_steps", 2.5, "warmup_steps: expected an int >= 0"),
    ("lr_min_ratio", 1.5, r"lr_min_ratio: expected a number in \[0, 1\]"),
    ("scheduler_total_steps", 5, "scheduler_total_steps: expected an int > warmup_steps"),
])
def test_bad_schedule_settings_are_named(key, value, message):
    config = {"lr_scheduler": "cosine", "warmup_steps": 10, "lr_min_ratio": 0.0, "scheduler_total_steps": None}
    config[key] = value
    with pytest.raises(ValueError, match=message):
        read_schedule(config)


# ---------------------------------------------------------------- the recipe inside a real run
def test_sasrec_run_follows_the_schedule_clips_and_keeps_its_curve(small_config, monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    norms_after_clip = []
    real_clip = recbole_trainer.clip_grad_norm_

    def recording_clip(parameters, **kwargs):
        parameters = list(parameters)
        total = real_clip(parameters, **kwargs)
        norms_after_clip.append((float(total), float(torch.norm(torch.stack(
            [p.grad.norm() for p in parameters if p.grad is not None]))), kwargs["max_norm"]))
        return total

    monkeypatch.setattr(recbole_trainer, "clip_grad_norm_", recording_clip)
    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "epochs": 3, "eval_step": 2,
              "stopping_step": 10, "train_batch_size": 2048, "learning_rate": 0.01, "lr_scheduler": "linear",
              "warmup_steps": 3, "lr_min_ratio": 0.1, "clip_grad_norm": {"max_norm": 0.05},
              "n_layers": 1, "hidden_size": 16, "inner_size": 16}
    result = objective_function(config)
    curve = result["learning_curve"]
    steps_per_epoch = curve[0]["step"]
    total = 3 * steps_per_epoch
    assert [c["epoch"] for c in curve] == [0, 1, 2]
    assert [c["step"] for c in curve] == [steps_per_epoch, 2 * steps_per_epoch, total]
    for c in curve:  # the lr after the epoch's last step
        assert c["lr"] == pytest.approx(0.01 * lr_multiplier(c["step"], 3, total, "linear", 0.1))
    assert len(norms_after_clip) == total
    assert all(after <= max_norm * (1 + 1e-4) for _, after, max_norm in norms_after_clip)
    assert any(before > max_norm for before, _, max_norm in norms_after_clip)  # clipping did something
    # eval_step 2 validates epoch 1 only; the last epoch (2) is validated too
    assert "valid" not in curve[0] and "valid" in curve[1] and "valid" in curve[2]
    assert set(curve[2]["valid"]) >= {"overall", "in_sample", "unseen"}
    assert curve[2]["valid_metric"] == "recall@50"


# ---------------------------------------------------------------- history exclusion
def test_history_mask_holds_every_earlier_item_of_the_user(tiny_config):
    """tests/test_dataset.py's hand-made split: the full history, not only the w = 2 items of the input, and u1's
    i5@3, which the cold-start rule drops from the rows (u1 did rate it: it cannot be u1's later target)."""
    ds = InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    train, valid, test = ds.build()
    expected = {"train": {"u1": {"i1"}, "u2": {"i2"}},  # u1's row i2@2 comes before i5@3
                "valid": {"u1": {"i1", "i2", "i5"}, "u2": {"i2", "i3"}, "u3": {"i4"}},
                "test": {"u1": {"i1", "i2", "i3", "i5"}, "u2": {"i2", "i3", "i5"}, "u3": {"i4", "i6"}}}
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        mask = ds.history_mask(part.inter_feat)
        users = ds.id2token("user_id", part.inter_feat["user_id"].numpy())
        got = {u: set(ds.id2token("item_id", torch.nonzero(row).flatten().numpy())) for u, row in zip(users, mask)}
        assert got == expected[name]


class FixedScores(torch.nn.Module):
    """A stand-in model: item i scores ``sign``·i for every row (sign 1: the best items are the highest ids)."""

    def __init__(self, n_items, sign=1):
        super().__init__()
        self.n_items, self.sign = n_items, sign
        self.weight = torch.nn.Parameter(torch.zeros(1))  # something for the trainer's optimizer
        self.got_exclusions = []

    def full_sort_predict(self, interaction):
        self.got_exclusions.append(EXCLUDED_ITEMS in interaction)
        return self.sign * torch.arange(self.n_items, dtype=torch.float).expand(len(interaction), -1).clone()


class Loader(list):
    """The part of RecBole's FullSortEvalDataLoader that InductiveTrainer.evaluate reads."""

    def __init__(self, part):
        super().__init__([(part.inter_feat, None, None, None)])
        self._dataset = part


@pytest.mark.parametrize("sign", [1, -1], ids=["highest-ids-first", "lowest-ids-first"])
@pytest.mark.parametrize("exclude", [True, False])
def test_evaluation_ranks_only_items_outside_the_history(tiny_config, exclude, sign):
    """Both orders: with the lowest ids first, u1's i5 (dropped from the rows by the cold-start rule, but rated by
    u1) ranks above u1's target i4 unless it is excluded."""
    config = Config(model="SASRec", dataset="tiny", config_dict={**tiny_config, "topk": [1, 3], "valid_metric": "Recall@3",
                                                                 "eval_exclude_history": exclude})
    ds = InductiveSequentialDataset(config)
    test = ds.build()[2]
    model = FixedScores(ds.item_num, sign)
    result = InductiveTrainer(config, model).evaluate(Loader(test), load_best_model=False)
    assert model.got_exclusions == [exclude]
    history = {"u1": {"i1", "i2", "i3", "i5"}, "u2": {"i2", "i3", "i5"}, "u3": {"i4", "i6"}}  # by hand, see above
    assert ds.token2id("item_id", "i5") < ds.token2id("item_id", "i4")  # so at sign -1 i5 ranks above i4
    ranks = []
    for user, target in (("u1", "i4"), ("u2", "i1"), ("u3", "i2")):
        skip = history[user] if exclude else set()
        ranking = sorted((t for t in ds.field2token_id["item_id"] if t != "[PAD]" and t not in skip),
                         key=lambda t: -sign * ds.token2id("item_id", t))
        ranks.append(ranking.index(target))
    assert result["recall@3"] == pytest.approx(sum(r < 3 for r in ranks) / 3)
    assert result["ndcg@3"] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks if r < 3) / 3)
